/*
 * The pgoutput decoder and the replication CopyBoth envelope.  Layouts
 * follow PostgreSQL's "Logical Replication Message Formats" and
 * src/backend/replication/logical/proto.c for protocol versions 1 to 4.
 * Every count and length from the wire is checked against the bytes that
 * are actually there before it is used, and the checks PostgreSQL's own
 * reader makes (flags that must be 0, LSNs that must be set) are made here
 * too, so a message the subscriber would refuse is refused before we apply
 * anything from it.
 */
#include "common/errbuf.h"
#include "replicator/pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/msgread.h"

/* Seconds from 1970-01-01 to 2000-01-01, in microseconds. */
#define PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* What an empty namespace name stands for in Relation and Type. */
static const char pg_catalog_name[] = "pg_catalog";

const char *
pgoutput_message_name(uint8_t type)
{
	switch (type) {
	case PGOUTPUT_BEGIN:
		return "Begin";
	case PGOUTPUT_COMMIT:
		return "Commit";
	case PGOUTPUT_ORIGIN:
		return "Origin";
	case PGOUTPUT_RELATION:
		return "Relation";
	case PGOUTPUT_TYPE:
		return "Type";
	case PGOUTPUT_INSERT:
		return "Insert";
	case PGOUTPUT_UPDATE:
		return "Update";
	case PGOUTPUT_DELETE:
		return "Delete";
	case PGOUTPUT_TRUNCATE:
		return "Truncate";
	case PGOUTPUT_MESSAGE:
		return "Message";
	case PGOUTPUT_STREAM_START:
		return "Stream Start";
	case PGOUTPUT_STREAM_STOP:
		return "Stream Stop";
	case PGOUTPUT_STREAM_COMMIT:
		return "Stream Commit";
	case PGOUTPUT_STREAM_ABORT:
		return "Stream Abort";
	case PGOUTPUT_BEGIN_PREPARE:
		return "Begin Prepare";
	case PGOUTPUT_PREPARE:
		return "Prepare";
	case PGOUTPUT_COMMIT_PREPARED:
		return "Commit Prepared";
	case PGOUTPUT_ROLLBACK_PREPARED:
		return "Rollback Prepared";
	case PGOUTPUT_STREAM_PREPARE:
		return "Stream Prepare";
	default:
		return "unknown";
	}
}

/* The protocol version that introduced a message type; 0 for unknown bytes. */
static int
min_proto_version(uint8_t type)
{
	switch (type) {
	case PGOUTPUT_BEGIN:
	case PGOUTPUT_COMMIT:
	case PGOUTPUT_ORIGIN:
	case PGOUTPUT_RELATION:
	case PGOUTPUT_TYPE:
	case PGOUTPUT_INSERT:
	case PGOUTPUT_UPDATE:
	case PGOUTPUT_DELETE:
	case PGOUTPUT_TRUNCATE:
	case PGOUTPUT_MESSAGE:
		return PGOUTPUT_PROTO_MIN;
	case PGOUTPUT_STREAM_START:
	case PGOUTPUT_STREAM_STOP:
	case PGOUTPUT_STREAM_COMMIT:
	case PGOUTPUT_STREAM_ABORT:
		return PGOUTPUT_PROTO_STREAMING;
	case PGOUTPUT_BEGIN_PREPARE:
	case PGOUTPUT_PREPARE:
	case PGOUTPUT_COMMIT_PREPARED:
	case PGOUTPUT_ROLLBACK_PREPARED:
	case PGOUTPUT_STREAM_PREPARE:
		return PGOUTPUT_PROTO_TWO_PHASE;
	default:
		return 0;
	}
}

/* The changes that carry the streamed transaction's xid inside a streamed block. */
static bool
has_stream_xid(uint8_t type)
{
	switch (type) {
	case PGOUTPUT_RELATION:
	case PGOUTPUT_TYPE:
	case PGOUTPUT_INSERT:
	case PGOUTPUT_UPDATE:
	case PGOUTPUT_DELETE:
	case PGOUTPUT_TRUNCATE:
	case PGOUTPUT_MESSAGE:
		return true;
	default:
		return false;
	}
}

/*
 * The state of one decode: the reader, what is being decoded (for error
 * messages), and where the reason goes.
 */
typedef struct Decoder {
	MsgReader r;
	const char *what;
	char *err;
	size_t errlen;
} Decoder;

static bool
truncated(Decoder *d)
{
	return errbuf_fail(d->err, d->errlen, "%s message is truncated", d->what);
}

/* The common ending: every read succeeded and nothing is left over. */
static bool
check_end(Decoder *d)
{
	if (d->r.failed)
		return truncated(d);
	if (!msgread_end(&d->r))
		return errbuf_fail(d->err, d->errlen, "%s message has %zu bytes after its end", d->what,
				   msgread_remaining(&d->r));
	return true;
}

/*
 * Small readers that leave failures to check_end: after a failed read the
 * reader stays failed and later reads return zeros, so a decoder can read a
 * fixed layout straight through and check once.  Anything whose value steers
 * further reading (counts, lengths, markers) is checked where it is read.
 */
static uint8_t
get_byte(Decoder *d)
{
	uint8_t v = 0;

	if (!msgread_byte(&d->r, &v))
		return 0;
	return v;
}

static uint32_t
get_uint32(Decoder *d)
{
	uint32_t v = 0;

	if (!msgread_uint32(&d->r, &v))
		return 0;
	return v;
}

static int32_t
get_int32(Decoder *d)
{
	int32_t v = 0;

	if (!msgread_int32(&d->r, &v))
		return 0;
	return v;
}

static int64_t
get_int64(Decoder *d)
{
	int64_t v = 0;

	if (!msgread_int64(&d->r, &v))
		return 0;
	return v;
}

/* LSNs are unsigned; msgread reads them as the same 64 bits, signed. */
static uint64_t
get_lsn(Decoder *d)
{
	return (uint64_t) get_int64(d);
}

/* A string, or NULL (with the reader failed) when there is no NUL. */
static const char *
get_string(Decoder *d)
{
	const char *s = NULL;

	if (!msgread_string(&d->r, &s, NULL))
		return NULL;
	return s;
}

/* Flags bytes that must be 0: Commit, Stream Commit and the two-phase messages. */
static bool
check_zero_flags(Decoder *d, uint8_t flags)
{
	if (d->r.failed)
		return truncated(d);
	if (flags != 0)
		return errbuf_fail(d->err, d->errlen, "%s message has unknown flags 0x%02x", d->what, flags);
	return true;
}

/* An LSN that PostgreSQL's reader requires to be set. */
static bool
check_lsn_set(Decoder *d, uint64_t lsn, const char *field)
{
	if (d->r.failed)
		return truncated(d);
	if (lsn == 0)
		return errbuf_fail(d->err, d->errlen, "%s message has no %s", d->what, field);
	return true;
}

/* Streaming keys everything by xid, so InvalidTransactionId (0) is an error there. */
static bool
check_xid_set(Decoder *d, uint32_t xid)
{
	if (d->r.failed)
		return truncated(d);
	if (xid == 0)
		return errbuf_fail(d->err, d->errlen, "%s message has an invalid transaction ID", d->what);
	return true;
}

/* Int16 ncols, then per column a marker and, for text and binary, Int32 len + bytes. */
static bool
read_tuple(Decoder *d, PgoutputTuple *t)
{
	int16_t ncols;

	if (!msgread_int16(&d->r, &ncols))
		return truncated(d);
	if (ncols < 0 || ncols > PGOUTPUT_MAX_COLUMNS)
		return errbuf_fail(d->err, d->errlen, "%s message has %d columns, not 0 to %d", d->what, ncols,
				   PGOUTPUT_MAX_COLUMNS);
	for (int i = 0; i < ncols; i++) {
		PgoutputColumn *c = &t->cols[i];
		int32_t len;

		if (!msgread_byte(&d->r, &c->kind))
			return truncated(d);
		c->len = 0;
		c->value = NULL;
		switch (c->kind) {
		case PGOUTPUT_COLUMN_NULL:
		case PGOUTPUT_COLUMN_UNCHANGED:
			break;
		case PGOUTPUT_COLUMN_TEXT:
		case PGOUTPUT_COLUMN_BINARY:
			if (!msgread_int32(&d->r, &len))
				return truncated(d);
			if (len < 0)
				return errbuf_fail(d->err, d->errlen, "%s message has a negative column length",
						   d->what);
			if (!msgread_bytes(&d->r, (size_t) len, &c->value))
				return truncated(d);
			c->len = (uint32_t) len;
			break;
		default:
			return errbuf_fail(d->err, d->errlen, "%s message has unknown column kind 0x%02x in column %d",
					   d->what, c->kind, i + 1);
		}
	}
	t->ncols = ncols;
	return true;
}

static bool
decode_begin(Decoder *d, PgoutputBegin *m)
{
	m->final_lsn = get_lsn(d);
	m->commit_time = get_int64(d);
	m->xid = get_uint32(d);
	return check_lsn_set(d, m->final_lsn, "final LSN") && check_end(d);
}

/* Commit, and Stream Commit, which starts with the xid. */
static bool
decode_commit(Decoder *d, bool streamed, PgoutputCommit *m)
{
	m->xid = streamed ? get_uint32(d) : 0;
	if (streamed && !check_xid_set(d, m->xid))
		return false;
	if (!check_zero_flags(d, get_byte(d)))
		return false;
	m->commit_lsn = get_lsn(d);
	m->end_lsn = get_lsn(d);
	m->commit_time = get_int64(d);
	return check_end(d);
}

static bool
decode_origin(Decoder *d, PgoutputOrigin *m)
{
	m->origin_lsn = get_lsn(d);
	m->name = get_string(d);
	return check_end(d);
}

/* An empty namespace name means pg_catalog, to save bytes on the wire. */
static const char *
get_namespace(Decoder *d)
{
	const char *s = get_string(d);

	return (s && s[0] == '\0') ? pg_catalog_name : s;
}

static bool
decode_relation(Decoder *d, PgoutputRelation *m)
{
	int16_t natts;

	m->relid = get_uint32(d);
	m->nspname = get_namespace(d);
	m->relname = get_string(d);
	m->replident = get_byte(d);
	if (!msgread_int16(&d->r, &natts))
		return truncated(d);
	switch (m->replident) {
	case PGOUTPUT_REPLIDENT_DEFAULT:
	case PGOUTPUT_REPLIDENT_NOTHING:
	case PGOUTPUT_REPLIDENT_FULL:
	case PGOUTPUT_REPLIDENT_INDEX:
		break;
	default:
		return errbuf_fail(d->err, d->errlen, "%s message has unknown replica identity 0x%02x", d->what,
				   m->replident);
	}
	if (natts < 0 || natts > PGOUTPUT_MAX_COLUMNS)
		return errbuf_fail(d->err, d->errlen, "%s message has %d columns, not 0 to %d", d->what, natts,
				   PGOUTPUT_MAX_COLUMNS);
	for (int i = 0; i < natts; i++) {
		PgoutputRelColumn *c = &m->cols[i];

		c->flags = get_byte(d);
		c->name = get_string(d);
		c->type_oid = get_uint32(d);
		c->typmod = get_int32(d);
		if (d->r.failed)
			return truncated(d);
		if (c->flags & ~PGOUTPUT_RELATION_COLUMN_KEY)
			return errbuf_fail(d->err, d->errlen, "%s message has unknown flags 0x%02x in column %d",
					   d->what, c->flags, i + 1);
	}
	m->natts = natts;
	return check_end(d);
}

static bool
decode_type(Decoder *d, PgoutputType *m)
{
	m->type_oid = get_uint32(d);
	m->nspname = get_namespace(d);
	m->typname = get_string(d);
	return check_end(d);
}

static bool
decode_insert(Decoder *d, PgoutputInsert *m)
{
	uint8_t marker;

	m->relid = get_uint32(d);
	marker = get_byte(d);
	if (d->r.failed)
		return truncated(d);
	if (marker != PGOUTPUT_TUPLE_NEW)
		return errbuf_fail(d->err, d->errlen, "%s message has tuple marker 0x%02x, not 'N'", d->what, marker);
	return read_tuple(d, &m->newtuple) && check_end(d);
}

/* An optional old key ('K') or old row ('O'), then the new row ('N'). */
static bool
decode_update(Decoder *d, PgoutputUpdate *m)
{
	uint8_t marker;

	m->relid = get_uint32(d);
	m->old_kind = 0;
	marker = get_byte(d);
	if (d->r.failed)
		return truncated(d);
	if (marker == PGOUTPUT_TUPLE_KEY || marker == PGOUTPUT_TUPLE_OLD) {
		m->old_kind = marker;
		if (!read_tuple(d, &m->oldtuple))
			return false;
		marker = get_byte(d);
		if (d->r.failed)
			return truncated(d);
	}
	if (marker != PGOUTPUT_TUPLE_NEW)
		return errbuf_fail(d->err, d->errlen, "%s message has tuple marker 0x%02x where 'N'%s was expected",
				   d->what, marker, m->old_kind ? "" : ", 'K' or 'O'");
	return read_tuple(d, &m->newtuple) && check_end(d);
}

static bool
decode_delete(Decoder *d, PgoutputDelete *m)
{
	m->relid = get_uint32(d);
	m->old_kind = get_byte(d);
	if (d->r.failed)
		return truncated(d);
	if (m->old_kind != PGOUTPUT_TUPLE_KEY && m->old_kind != PGOUTPUT_TUPLE_OLD)
		return errbuf_fail(d->err, d->errlen, "%s message has tuple marker 0x%02x, not 'K' or 'O'", d->what,
				   m->old_kind);
	return read_tuple(d, &m->oldtuple) && check_end(d);
}

static bool
decode_truncate(Decoder *d, PgoutputTruncate *m)
{
	int32_t nrels = get_int32(d);

	m->flags = get_byte(d);
	if (d->r.failed)
		return truncated(d);
	if (m->flags & ~(PGOUTPUT_TRUNCATE_CASCADE | PGOUTPUT_TRUNCATE_RESTART_IDENTITY))
		return errbuf_fail(d->err, d->errlen, "%s message has unknown flags 0x%02x", d->what, m->flags);
	/* Compare with what is there, so a huge count costs nothing. */
	if (nrels < 0 || (size_t) nrels != msgread_remaining(&d->r) / 4)
		return errbuf_fail(d->err, d->errlen, "%s message has %zu bytes for %" PRId32 " relations", d->what,
				   msgread_remaining(&d->r), nrels);
	m->nrels = nrels;
	m->relids = NULL;
	if (nrels > 0 && !msgread_bytes(&d->r, (size_t) nrels * 4, &m->relids))
		return truncated(d);
	return check_end(d);
}

uint32_t
pgoutput_truncate_relid(const PgoutputTruncate *t, int i)
{
	const uint8_t *p = t->relids + (size_t) i * 4;

	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

static bool
decode_message(Decoder *d, PgoutputLogicalMessage *m)
{
	int32_t len;

	m->flags = get_byte(d);
	m->lsn = get_lsn(d);
	m->prefix = get_string(d);
	len = get_int32(d);
	if (d->r.failed)
		return truncated(d);
	if (m->flags & ~PGOUTPUT_MESSAGE_TRANSACTIONAL)
		return errbuf_fail(d->err, d->errlen, "%s message has unknown flags 0x%02x", d->what, m->flags);
	if (len < 0)
		return errbuf_fail(d->err, d->errlen, "%s message has a negative content length", d->what);
	m->content_len = (uint32_t) len;
	m->content = NULL;
	if (len > 0 && !msgread_bytes(&d->r, (size_t) len, &m->content))
		return truncated(d);
	return check_end(d);
}

static bool
decode_stream_start(Decoder *d, PgoutputStreamStart *m)
{
	uint8_t first;

	m->xid = get_uint32(d);
	first = get_byte(d);
	if (!check_xid_set(d, m->xid))
		return false;
	if (first > 1)
		return errbuf_fail(d->err, d->errlen, "%s message has first-segment flag %u, not 0 or 1", d->what,
				   first);
	m->first_segment = first == 1;
	return check_end(d);
}

/*
 * xid and subxid, then, under protocol 4 with streaming = parallel only, the
 * abort LSN and time.  The options are not in the message, but the length
 * is: it is read to its end, so the two layouts cannot be confused.
 */
static bool
decode_stream_abort(Decoder *d, int proto_version, PgoutputStreamAbort *m)
{
	m->xid = get_uint32(d);
	m->subxid = get_uint32(d);
	if (!check_xid_set(d, m->xid) || !check_xid_set(d, m->subxid))
		return false;
	m->has_abort_info = false;
	m->abort_lsn = 0;
	m->abort_time = 0;
	if (proto_version >= PGOUTPUT_PROTO_PARALLEL && msgread_remaining(&d->r) > 0) {
		m->has_abort_info = true;
		m->abort_lsn = get_lsn(d);
		m->abort_time = get_int64(d);
	}
	return check_end(d);
}

/* Begin Prepare (no flags byte), Prepare and Stream Prepare (flags first). */
static bool
decode_prepare(Decoder *d, bool has_flags, PgoutputPrepare *m)
{
	if (has_flags && !check_zero_flags(d, get_byte(d)))
		return false;
	m->prepare_lsn = get_lsn(d);
	m->end_lsn = get_lsn(d);
	m->prepare_time = get_int64(d);
	m->xid = get_uint32(d);
	m->gid = get_string(d);
	if (!check_lsn_set(d, m->prepare_lsn, "prepare LSN") || !check_lsn_set(d, m->end_lsn, "end LSN"))
		return false;
	/* PostgreSQL 18 checks this for Prepare and Stream Prepare; no server sends 0. */
	if (!check_xid_set(d, m->xid))
		return false;
	return check_end(d);
}

static bool
decode_commit_prepared(Decoder *d, PgoutputCommitPrepared *m)
{
	if (!check_zero_flags(d, get_byte(d)))
		return false;
	m->commit_lsn = get_lsn(d);
	m->end_lsn = get_lsn(d);
	m->commit_time = get_int64(d);
	m->xid = get_uint32(d);
	m->gid = get_string(d);
	return check_lsn_set(d, m->commit_lsn, "commit LSN") && check_lsn_set(d, m->end_lsn, "end LSN") && check_end(d);
}

static bool
decode_rollback_prepared(Decoder *d, PgoutputRollbackPrepared *m)
{
	if (!check_zero_flags(d, get_byte(d)))
		return false;
	m->prepare_end_lsn = get_lsn(d);
	m->rollback_end_lsn = get_lsn(d);
	m->prepare_time = get_int64(d);
	m->rollback_time = get_int64(d);
	m->xid = get_uint32(d);
	m->gid = get_string(d);
	return check_lsn_set(d, m->prepare_end_lsn, "prepare end LSN") &&
		check_lsn_set(d, m->rollback_end_lsn, "rollback end LSN") && check_end(d);
}

bool
pgoutput_decode(const uint8_t *data, size_t len, int proto_version, bool in_stream, PgoutputMessage *out, char *err,
		size_t errlen)
{
	Decoder d;
	uint8_t type;
	int min_version;

	if (proto_version < PGOUTPUT_PROTO_MIN || proto_version > PGOUTPUT_PROTO_MAX)
		return errbuf_fail(err, errlen, "pgoutput protocol version %d is not supported", proto_version);
	if (in_stream && proto_version < PGOUTPUT_PROTO_STREAMING)
		return errbuf_fail(err, errlen, "pgoutput protocol version %d has no streamed transactions",
				   proto_version);
	msgread_init(&d.r, data, len);
	d.err = err;
	d.errlen = errlen;
	if (!msgread_byte(&d.r, &type))
		return errbuf_fail(err, errlen, "pgoutput message is empty");
	d.what = pgoutput_message_name(type);
	min_version = min_proto_version(type);
	if (min_version == 0)
		return errbuf_fail(err, errlen, "unknown pgoutput message type 0x%02x", type);
	if (proto_version < min_version)
		return errbuf_fail(err, errlen, "%s message needs protocol version %d, not %d", d.what, min_version,
				   proto_version);

	out->type = type;
	out->stream_xid = 0;
	if (in_stream && has_stream_xid(type)) {
		out->stream_xid = get_uint32(&d);
		if (!check_xid_set(&d, out->stream_xid))
			return false;
	}

	switch (type) {
	case PGOUTPUT_BEGIN:
		return decode_begin(&d, &out->begin);
	case PGOUTPUT_COMMIT:
		return decode_commit(&d, false, &out->commit);
	case PGOUTPUT_ORIGIN:
		return decode_origin(&d, &out->origin);
	case PGOUTPUT_RELATION:
		return decode_relation(&d, &out->relation);
	case PGOUTPUT_TYPE:
		return decode_type(&d, &out->typ);
	case PGOUTPUT_INSERT:
		return decode_insert(&d, &out->insert);
	case PGOUTPUT_UPDATE:
		return decode_update(&d, &out->update);
	case PGOUTPUT_DELETE:
		return decode_delete(&d, &out->delete);
	case PGOUTPUT_TRUNCATE:
		return decode_truncate(&d, &out->truncate);
	case PGOUTPUT_MESSAGE:
		return decode_message(&d, &out->message);
	case PGOUTPUT_STREAM_START:
		return decode_stream_start(&d, &out->stream_start);
	case PGOUTPUT_STREAM_STOP:
		return check_end(&d);
	case PGOUTPUT_STREAM_COMMIT:
		return decode_commit(&d, true, &out->commit);
	case PGOUTPUT_STREAM_ABORT:
		return decode_stream_abort(&d, proto_version, &out->stream_abort);
	case PGOUTPUT_BEGIN_PREPARE:
		return decode_prepare(&d, false, &out->prepare);
	case PGOUTPUT_PREPARE:
	case PGOUTPUT_STREAM_PREPARE:
		return decode_prepare(&d, true, &out->prepare);
	case PGOUTPUT_COMMIT_PREPARED:
		return decode_commit_prepared(&d, &out->commit_prepared);
	case PGOUTPUT_ROLLBACK_PREPARED:
		return decode_rollback_prepared(&d, &out->rollback_prepared);
	default:
		/* min_proto_version knows every type this switch does. */
		return errbuf_fail(err, errlen, "unknown pgoutput message type 0x%02x", type);
	}
}

/* The envelope */

bool
pgoutput_parse_xlogdata(const uint8_t *data, size_t len, XLogData *out, char *err, size_t errlen)
{
	Decoder d;
	uint8_t type = 0;

	msgread_init(&d.r, data, len);
	d.what = "XLogData";
	d.err = err;
	d.errlen = errlen;
	if (!msgread_byte(&d.r, &type) || type != PGOUTPUT_XLOGDATA)
		return errbuf_fail(err, errlen, "CopyData message is not XLogData");
	out->data_start = get_lsn(&d);
	out->wal_end = get_lsn(&d);
	out->send_time = get_int64(&d);
	if (d.r.failed)
		return truncated(&d);
	/* The rest is the payload, however long: claim it so the reader ends clean. */
	out->payload_len = msgread_remaining(&d.r);
	if (!msgread_bytes(&d.r, out->payload_len, &out->payload))
		return truncated(&d);
	return check_end(&d);
}

bool
pgoutput_parse_keepalive(const uint8_t *data, size_t len, XLogKeepalive *out, char *err, size_t errlen)
{
	Decoder d;
	uint8_t type = 0;
	uint8_t reply;

	msgread_init(&d.r, data, len);
	d.what = "Primary keepalive";
	d.err = err;
	d.errlen = errlen;
	if (!msgread_byte(&d.r, &type) || type != PGOUTPUT_KEEPALIVE)
		return errbuf_fail(err, errlen, "CopyData message is not a primary keepalive");
	out->wal_end = get_lsn(&d);
	out->send_time = get_int64(&d);
	reply = get_byte(&d);
	if (d.r.failed)
		return truncated(&d);
	if (reply > 1)
		return errbuf_fail(err, errlen, "Primary keepalive message has reply flag %u, not 0 or 1", reply);
	out->reply_requested = reply == 1;
	return check_end(&d);
}

static uint8_t *
put_uint64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
		*p++ = (uint8_t) (v >> (i * 8));
	return p;
}

size_t
pgoutput_build_status_update(uint8_t out[PGOUTPUT_STATUS_UPDATE_LEN], uint64_t written, uint64_t flushed,
			     uint64_t applied, int64_t now_us_since_2000, bool reply)
{
	uint8_t *p = out;

	*p++ = PGOUTPUT_STANDBY_STATUS_UPDATE;
	p = put_uint64(p, written);
	p = put_uint64(p, flushed);
	p = put_uint64(p, applied);
	p = put_uint64(p, (uint64_t) now_us_since_2000);
	*p++ = reply ? 1 : 0;
	return (size_t) (p - out);
}

/* LSNs and times */

void
lsn_format(uint64_t lsn, char *buf, size_t len)
{
	if (len == 0)
		return;
	snprintf(buf, len, "%" PRIX32 "/%" PRIX32, (uint32_t) (lsn >> 32), (uint32_t) lsn);
}

/* 1 to 8 hex digits at *s; advances *s past them. */
static bool
parse_hex32(const char **s, uint32_t *out)
{
	uint32_t v = 0;
	int n = 0;

	for (const char *p = *s;; p++, n++) {
		int digit;

		if (*p >= '0' && *p <= '9')
			digit = *p - '0';
		else if (*p >= 'a' && *p <= 'f')
			digit = *p - 'a' + 10;
		else if (*p >= 'A' && *p <= 'F')
			digit = *p - 'A' + 10;
		else {
			*s = p;
			break;
		}
		if (n == 8)
			return false;
		v = (v << 4) | (uint32_t) digit;
	}
	*out = v;
	return n > 0;
}

bool
lsn_parse(const char *s, uint64_t *out)
{
	uint32_t hi, lo;

	if (!s || !parse_hex32(&s, &hi) || *s++ != '/' || !parse_hex32(&s, &lo) || *s != '\0')
		return false;
	*out = ((uint64_t) hi << 32) | lo;
	return true;
}

int64_t
pgtime_to_unix_us(int64_t pg_us)
{
	if (pg_us == INT64_MIN)
		return INT64_MIN;
	if (pg_us > INT64_MAX - PG_EPOCH_OFFSET_US)
		return INT64_MAX;
	return pg_us + PG_EPOCH_OFFSET_US;
}

int64_t
pgtime_from_unix_us(int64_t unix_us)
{
	if (unix_us == INT64_MAX)
		return INT64_MAX;
	if (unix_us < INT64_MIN + PG_EPOCH_OFFSET_US)
		return INT64_MIN;
	return unix_us - PG_EPOCH_OFFSET_US;
}

int64_t
pgtime_now(void)
{
	struct timespec ts;

	/* CLOCK_REALTIME cannot fail with a valid pointer; 0 s is a harmless fallback. */
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		ts.tv_sec = ts.tv_nsec = 0;
	return pgtime_from_unix_us((int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
}
