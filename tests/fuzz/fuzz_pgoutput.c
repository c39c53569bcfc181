/*
 * libFuzzer target: pgoutput messages and the replication envelope, as a
 * walsender (or something pretending to be one) could send them.  The first
 * input byte picks the protocol version (1 + its low two bits) and whether
 * the message is inside a streamed block (bit 2); the rest is the message,
 * and also goes to the XLogData and keepalive parsers (an XLogData's payload
 * is decoded in turn) and, as a string, to lsn_parse.  Accepted messages are
 * checked for pointers and counts inside the input, so AddressSanitizer is
 * not the only judge.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "replicator/pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* About 53 KB: static, not on the fuzzer's stack. */
static PgoutputMessage msg;

static const uint8_t *body_start;
static size_t body_len;

/* s is a NUL-terminated string inside the message, or the static "pg_catalog". */
static void
check_string(const char *s, bool may_be_catalog)
{
	const uint8_t *p = (const uint8_t *) s;

	if (may_be_catalog && s && strcmp(s, "pg_catalog") == 0)
		return;
	if (!s || p < body_start || p >= body_start + body_len ||
	    !memchr(p, '\0', (size_t) (body_start + body_len - p)))
		abort();
}

static void
check_range(const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (!p || p < body_start || n > (size_t) (body_start + body_len - p))
		abort();
}

static void
check_tuple(const PgoutputTuple *t)
{
	if (t->ncols < 0 || t->ncols > PGOUTPUT_MAX_COLUMNS)
		abort();
	for (int i = 0; i < t->ncols; i++) {
		const PgoutputColumn *c = &t->cols[i];

		switch (c->kind) {
		case PGOUTPUT_COLUMN_NULL:
		case PGOUTPUT_COLUMN_UNCHANGED:
			if (c->value || c->len != 0)
				abort();
			break;
		case PGOUTPUT_COLUMN_TEXT:
		case PGOUTPUT_COLUMN_BINARY:
			check_range(c->value, c->len);
			break;
		default:
			abort();
		}
	}
}

static void
check_message(const PgoutputMessage *m, bool in_stream)
{
	bool streamed_change = false;

	switch (m->type) {
	case PGOUTPUT_ORIGIN:
		check_string(m->origin.name, false);
		break;
	case PGOUTPUT_RELATION:
		streamed_change = true;
		check_string(m->relation.nspname, true);
		check_string(m->relation.relname, false);
		if (m->relation.natts < 0 || m->relation.natts > PGOUTPUT_MAX_COLUMNS)
			abort();
		for (int i = 0; i < m->relation.natts; i++) {
			check_string(m->relation.cols[i].name, false);
			if (m->relation.cols[i].flags & ~PGOUTPUT_RELATION_COLUMN_KEY)
				abort();
		}
		break;
	case PGOUTPUT_TYPE:
		streamed_change = true;
		check_string(m->typ.nspname, true);
		check_string(m->typ.typname, false);
		break;
	case PGOUTPUT_INSERT:
		streamed_change = true;
		check_tuple(&m->insert.newtuple);
		break;
	case PGOUTPUT_UPDATE:
		streamed_change = true;
		if (m->update.old_kind != 0 && m->update.old_kind != PGOUTPUT_TUPLE_KEY &&
		    m->update.old_kind != PGOUTPUT_TUPLE_OLD)
			abort();
		if (m->update.old_kind)
			check_tuple(&m->update.oldtuple);
		check_tuple(&m->update.newtuple);
		break;
	case PGOUTPUT_DELETE:
		streamed_change = true;
		if (m->delete.old_kind != PGOUTPUT_TUPLE_KEY && m->delete.old_kind != PGOUTPUT_TUPLE_OLD)
			abort();
		check_tuple(&m->delete.oldtuple);
		break;
	case PGOUTPUT_TRUNCATE:
		streamed_change = true;
		if (m->truncate.nrels < 0)
			abort();
		check_range(m->truncate.relids, (size_t) m->truncate.nrels * 4);
		for (int i = 0; i < m->truncate.nrels; i++)
			(void) pgoutput_truncate_relid(&m->truncate, i);
		break;
	case PGOUTPUT_MESSAGE:
		streamed_change = true;
		check_string(m->message.prefix, false);
		check_range(m->message.content, m->message.content_len);
		break;
	case PGOUTPUT_BEGIN_PREPARE:
	case PGOUTPUT_PREPARE:
	case PGOUTPUT_STREAM_PREPARE:
		check_string(m->prepare.gid, false);
		break;
	case PGOUTPUT_COMMIT_PREPARED:
		check_string(m->commit_prepared.gid, false);
		break;
	case PGOUTPUT_ROLLBACK_PREPARED:
		check_string(m->rollback_prepared.gid, false);
		break;
	case PGOUTPUT_BEGIN:
	case PGOUTPUT_COMMIT:
	case PGOUTPUT_STREAM_START:
	case PGOUTPUT_STREAM_STOP:
	case PGOUTPUT_STREAM_COMMIT:
	case PGOUTPUT_STREAM_ABORT:
		break;
	default:
		abort();
	}
	/* A streamed change has its xid, and nothing else has one. */
	if ((m->stream_xid != 0) != (in_stream && streamed_change))
		abort();
}

static void
fuzz_decode(const uint8_t *p, size_t n, int proto, bool in_stream)
{
	char err[256];

	body_start = p;
	body_len = n;
	if (pgoutput_decode(p, n, proto, in_stream, &msg, err, sizeof(err))) {
		check_message(&msg, in_stream);
	} else if (err[0] == '\0') {
		abort(); /* every rejection says why */
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int proto;
	bool in_stream;
	const uint8_t *rest;
	size_t rest_len;
	char err[256];
	XLogData x;
	XLogKeepalive k;

	if (size < 1)
		return 0;
	proto = 1 + (data[0] & 3);
	in_stream = (data[0] & 4) != 0;
	rest = data + 1;
	rest_len = size - 1;

	/* in_stream with protocol 1 must be refused, which is checked too. */
	fuzz_decode(rest, rest_len, proto, in_stream);

	if (pgoutput_parse_xlogdata(rest, rest_len, &x, err, sizeof(err))) {
		if (x.payload_len != rest_len - 25 || x.payload != rest + 25)
			abort();
		fuzz_decode(x.payload, x.payload_len, proto, in_stream);
	}
	if (pgoutput_parse_keepalive(rest, rest_len, &k, err, sizeof(err)) && rest_len != 18)
		abort();

	/* lsn_parse on the rest as a string: what parses formats back to itself. */
	if (rest_len < 64) {
		char s[64], again[LSN_FORMAT_LEN];
		uint64_t lsn, lsn2;

		memcpy(s, rest, rest_len);
		s[rest_len] = '\0';
		if (lsn_parse(s, &lsn)) {
			lsn_format(lsn, again, sizeof(again));
			if (!lsn_parse(again, &lsn2) || lsn2 != lsn)
				abort();
		}
	}

	/* The time helpers on whatever 8 bytes come first: no overflow, infinities kept. */
	if (rest_len >= 8) {
		int64_t t;

		memcpy(&t, rest, sizeof(t));
		if (pgtime_from_unix_us(pgtime_to_unix_us(t)) != t && t != INT64_MIN && t != INT64_MAX &&
		    pgtime_to_unix_us(t) != INT64_MAX)
			abort();
	}
	return 0;
}
