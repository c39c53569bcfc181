/*
 * The pgoutput decoder and the replication envelope on byte arrays: every
 * message kind built by hand (with null, text, binary and unchanged-TOAST
 * columns, inside and outside streamed blocks, under each protocol version),
 * then bytes captured from a real PostgreSQL 15 walsender.  Every valid
 * message is also checked to be rejected, with a reason, when cut short at
 * any byte or followed by one more; those decodes run on heap copies of
 * exactly the tested size so AddressSanitizer sees any read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "replicator/pgoutput.h"

/* About 53 KB each, so not on the stack: one for results, one for scratch decodes. */
static PgoutputMessage msg;
static PgoutputMessage scratch;

/* A growable byte string with big-endian writers, for building messages. */
typedef struct Builder {
	uint8_t *data;
	size_t len;
	size_t cap;
} Builder;

static void
b_init(Builder *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

static void
b_free(Builder *b)
{
	free(b->data);
	b_init(b);
}

static void
b_raw(Builder *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;

		while (cap < b->len + n)
			cap *= 2;
		b->data = realloc(b->data, cap);
		assert_non_null(b->data);
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void
b_u8(Builder *b, uint8_t v)
{
	b_raw(b, &v, 1);
}

static void
b_u16(Builder *b, uint16_t v)
{
	b_u8(b, (uint8_t) (v >> 8));
	b_u8(b, (uint8_t) v);
}

static void
b_u32(Builder *b, uint32_t v)
{
	b_u16(b, (uint16_t) (v >> 16));
	b_u16(b, (uint16_t) v);
}

static void
b_u64(Builder *b, uint64_t v)
{
	b_u32(b, (uint32_t) (v >> 32));
	b_u32(b, (uint32_t) v);
}

static void
b_str(Builder *b, const char *s)
{
	b_raw(b, s, strlen(s) + 1);
}

static void
col_null(Builder *b)
{
	b_u8(b, PGOUTPUT_COLUMN_NULL);
}

static void
col_unchanged(Builder *b)
{
	b_u8(b, PGOUTPUT_COLUMN_UNCHANGED);
}

static void
col_text(Builder *b, const char *s)
{
	b_u8(b, PGOUTPUT_COLUMN_TEXT);
	b_u32(b, (uint32_t) strlen(s));
	b_raw(b, s, strlen(s));
}

static void
col_binary(Builder *b, const void *p, size_t n)
{
	b_u8(b, PGOUTPUT_COLUMN_BINARY);
	b_u32(b, (uint32_t) n);
	b_raw(b, p, n);
}

/* Hex to bytes into a fresh builder. */
static void
b_hex(Builder *b, const char *hex)
{
	size_t n = strlen(hex);

	assert_int_equal(n % 2, 0);
	for (size_t i = 0; i < n; i += 2) {
		unsigned v;

		assert_int_equal(sscanf(hex + i, "%2x", &v), 1);
		b_u8(b, (uint8_t) v);
	}
}

/* Decodes an exact-size heap copy of data[0..n) into scratch. */
static bool
try_decode(const uint8_t *data, size_t n, int proto, bool in_stream, char *err, size_t errlen)
{
	uint8_t *copy = malloc(n ? n : 1);
	bool ok;

	assert_non_null(copy);
	if (n > 0)
		memcpy(copy, data, n);
	err[0] = '\0';
	ok = pgoutput_decode(copy, n, proto, in_stream, &scratch, err, errlen);
	free(copy);
	return ok;
}

static void
assert_rejected_raw(const uint8_t *data, size_t n, int proto, bool in_stream)
{
	char err[256];

	if (try_decode(data, n, proto, in_stream, err, sizeof(err)))
		fail_msg("a %zu-byte message was accepted", n);
	assert_true(err[0] != '\0');
}

static void
assert_rejected(const Builder *b, int proto, bool in_stream)
{
	assert_rejected_raw(b->data, b->len, proto, in_stream);
}

/*
 * b decodes; each shorter prefix (other than valid_prefix, which may be 0
 * for none) and b plus one byte are rejected with a reason.  On return msg
 * holds b decoded in place, pointing into b.
 */
static void
assert_valid_except(const Builder *b, int proto, bool in_stream, size_t valid_prefix)
{
	char err[256];
	Builder longer;

	if (!try_decode(b->data, b->len, proto, in_stream, err, sizeof(err)))
		fail_msg("valid message rejected: %s", err);
	for (size_t n = 0; n < b->len; n++) {
		if (valid_prefix != 0 && n == valid_prefix)
			continue;
		if (try_decode(b->data, n, proto, in_stream, err, sizeof(err)))
			fail_msg("prefix of %zu of %zu bytes was accepted", n, b->len);
		assert_true(err[0] != '\0');
	}
	b_init(&longer);
	b_raw(&longer, b->data, b->len);
	b_u8(&longer, 0);
	assert_rejected(&longer, proto, in_stream);
	b_free(&longer);
	assert_true(pgoutput_decode(b->data, b->len, proto, in_stream, &msg, err, sizeof(err)));
}

static void
assert_valid(const Builder *b, int proto, bool in_stream)
{
	assert_valid_except(b, proto, in_stream, 0);
}

/* The reason for rejecting b contains want. */
static void
assert_reason(const Builder *b, int proto, bool in_stream, const char *want)
{
	char err[256];

	assert_false(try_decode(b->data, b->len, proto, in_stream, err, sizeof(err)));
	if (!strstr(err, want))
		fail_msg("reason \"%s\" does not mention \"%s\"", err, want);
}

static bool
points_into(const void *p, const Builder *b)
{
	const uint8_t *q = p;

	return q >= b->data && q < b->data + b->len;
}

static void
assert_text_col(const PgoutputColumn *c, const char *want)
{
	assert_int_equal(c->kind, PGOUTPUT_COLUMN_TEXT);
	assert_int_equal(c->len, strlen(want));
	assert_memory_equal(c->value, want, c->len);
}

static void
assert_kind_col(const PgoutputColumn *c, uint8_t kind)
{
	assert_int_equal(c->kind, kind);
	assert_int_equal(c->len, 0);
	assert_null(c->value);
}

/* Hand-built messages */

static void
test_begin_commit(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_BEGIN);
	b_u64(&b, UINT64_C(0x16B374D848));
	b_u64(&b, (uint64_t) INT64_C(757479845000000));
	b_u32(&b, 731);
	for (int proto = PGOUTPUT_PROTO_MIN; proto <= PGOUTPUT_PROTO_MAX; proto++) {
		assert_valid(&b, proto, false);
		assert_int_equal(msg.type, PGOUTPUT_BEGIN);
		assert_int_equal(msg.stream_xid, 0);
		assert_int_equal(msg.begin.final_lsn, UINT64_C(0x16B374D848));
		assert_int_equal(msg.begin.commit_time, 757479845000000);
		assert_int_equal(msg.begin.xid, 731);
	}
	/* PostgreSQL's reader refuses a Begin without a final LSN. */
	memset(b.data + 1, 0, 8);
	assert_reason(&b, 1, false, "final LSN");
	b_free(&b);

	b_u8(&b, PGOUTPUT_COMMIT);
	b_u8(&b, 0);
	b_u64(&b, UINT64_C(0xFFFFFFFF00000001));
	b_u64(&b, UINT64_C(0xFFFFFFFF00000030));
	b_u64(&b, (uint64_t) INT64_C(-5));
	assert_valid(&b, 1, false);
	assert_int_equal(msg.type, PGOUTPUT_COMMIT);
	assert_int_equal(msg.commit.xid, 0);
	assert_int_equal(msg.commit.commit_lsn, UINT64_C(0xFFFFFFFF00000001));
	assert_int_equal(msg.commit.end_lsn, UINT64_C(0xFFFFFFFF00000030));
	assert_true(msg.commit.commit_time == -5);
	b.data[1] = 1;
	assert_reason(&b, 1, false, "flags");
	b_free(&b);
}

static void
test_origin_type(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_ORIGIN);
	b_u64(&b, 0xABCDEF);
	b_str(&b, "src1");
	assert_valid(&b, 1, false);
	assert_int_equal(msg.origin.origin_lsn, 0xABCDEF);
	assert_string_equal(msg.origin.name, "src1");
	assert_true(points_into(msg.origin.name, &b));
	b_free(&b);

	b_u8(&b, PGOUTPUT_TYPE);
	b_u32(&b, 16385);
	b_str(&b, "public");
	b_str(&b, "mood");
	assert_valid(&b, 1, false);
	assert_int_equal(msg.typ.type_oid, 16385);
	assert_string_equal(msg.typ.nspname, "public");
	assert_string_equal(msg.typ.typname, "mood");
	b_free(&b);

	/* "" stands for pg_catalog. */
	b_u8(&b, PGOUTPUT_TYPE);
	b_u32(&b, 23);
	b_str(&b, "");
	b_str(&b, "int4");
	assert_valid(&b, 1, false);
	assert_string_equal(msg.typ.nspname, "pg_catalog");
	b_free(&b);
}

/* Relation with the given namespace, replica identity and columns a (key) and b. */
static void
build_relation(Builder *b, const char *nsp, uint8_t replident)
{
	b_u8(b, PGOUTPUT_RELATION);
	b_u32(b, 16391);
	b_str(b, nsp);
	b_str(b, "t1");
	b_u8(b, replident);
	b_u16(b, 2);
	b_u8(b, PGOUTPUT_RELATION_COLUMN_KEY);
	b_str(b, "id");
	b_u32(b, 23);
	b_u32(b, UINT32_MAX); /* typmod -1 */
	b_u8(b, 0);
	b_str(b, "n");
	b_u32(b, 1700);
	b_u32(b, 655366); /* numeric(10,2) */
}

static void
test_relation(void **state)
{
	static const uint8_t replidents[] = {
		PGOUTPUT_REPLIDENT_DEFAULT,
		PGOUTPUT_REPLIDENT_NOTHING,
		PGOUTPUT_REPLIDENT_FULL,
		PGOUTPUT_REPLIDENT_INDEX,
	};
	Builder b;

	(void) state;
	b_init(&b);
	for (size_t i = 0; i < sizeof(replidents); i++) {
		build_relation(&b, "public", replidents[i]);
		assert_valid(&b, 1, false);
		assert_int_equal(msg.type, PGOUTPUT_RELATION);
		assert_int_equal(msg.relation.relid, 16391);
		assert_string_equal(msg.relation.nspname, "public");
		assert_true(points_into(msg.relation.nspname, &b));
		assert_string_equal(msg.relation.relname, "t1");
		assert_int_equal(msg.relation.replident, replidents[i]);
		assert_int_equal(msg.relation.natts, 2);
		assert_int_equal(msg.relation.cols[0].flags, PGOUTPUT_RELATION_COLUMN_KEY);
		assert_string_equal(msg.relation.cols[0].name, "id");
		assert_int_equal(msg.relation.cols[0].type_oid, 23);
		assert_int_equal(msg.relation.cols[0].typmod, -1);
		assert_int_equal(msg.relation.cols[1].flags, 0);
		assert_string_equal(msg.relation.cols[1].name, "n");
		assert_int_equal(msg.relation.cols[1].type_oid, 1700);
		assert_int_equal(msg.relation.cols[1].typmod, 655366);
		b_free(&b);
	}

	build_relation(&b, "", PGOUTPUT_REPLIDENT_DEFAULT);
	assert_valid(&b, 1, false);
	assert_string_equal(msg.relation.nspname, "pg_catalog");
	b_free(&b);

	build_relation(&b, "public", 'x');
	assert_reason(&b, 1, false, "replica identity");
	b_free(&b);

	/* A flag bit we do not know, on the second column. */
	build_relation(&b, "public", PGOUTPUT_REPLIDENT_DEFAULT);
	b.data[b.len - 11] = 0x02;
	assert_reason(&b, 1, false, "flags");
	b_free(&b);

	/* Zero columns is a table too. */
	b_u8(&b, PGOUTPUT_RELATION);
	b_u32(&b, 5);
	b_str(&b, "s");
	b_str(&b, "empty");
	b_u8(&b, PGOUTPUT_REPLIDENT_NOTHING);
	b_u16(&b, 0);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.relation.natts, 0);
	/* A negative column count. */
	b.data[b.len - 2] = 0xff;
	b.data[b.len - 1] = 0xff;
	assert_reason(&b, 1, false, "columns");
	b_free(&b);
}

/* Relation and TupleData at PostgreSQL's column limit, and one past it. */
static void
test_max_columns(void **state)
{
	Builder b;
	char name[16];

	(void) state;
	for (int natts = PGOUTPUT_MAX_COLUMNS; natts <= PGOUTPUT_MAX_COLUMNS + 1; natts++) {
		b_init(&b);
		b_u8(&b, PGOUTPUT_RELATION);
		b_u32(&b, 7);
		b_str(&b, "public");
		b_str(&b, "wide");
		b_u8(&b, PGOUTPUT_REPLIDENT_FULL);
		b_u16(&b, (uint16_t) natts);
		for (int i = 0; i < natts; i++) {
			snprintf(name, sizeof(name), "c%d", i);
			b_u8(&b, PGOUTPUT_RELATION_COLUMN_KEY);
			b_str(&b, name);
			b_u32(&b, 23);
			b_u32(&b, UINT32_MAX);
		}
		if (natts == PGOUTPUT_MAX_COLUMNS) {
			char err[256];

			assert_true(pgoutput_decode(b.data, b.len, 1, false, &msg, err, sizeof(err)));
			assert_int_equal(msg.relation.natts, PGOUTPUT_MAX_COLUMNS);
			assert_string_equal(msg.relation.cols[PGOUTPUT_MAX_COLUMNS - 1].name, "c1663");
		} else {
			assert_reason(&b, 1, false, "columns");
		}
		b_free(&b);

		b_u8(&b, PGOUTPUT_INSERT);
		b_u32(&b, 7);
		b_u8(&b, PGOUTPUT_TUPLE_NEW);
		b_u16(&b, (uint16_t) natts);
		for (int i = 0; i < natts; i++)
			col_text(&b, "1");
		if (natts == PGOUTPUT_MAX_COLUMNS) {
			char err[256];

			assert_true(pgoutput_decode(b.data, b.len, 1, false, &msg, err, sizeof(err)));
			assert_int_equal(msg.insert.newtuple.ncols, PGOUTPUT_MAX_COLUMNS);
			assert_text_col(&msg.insert.newtuple.cols[PGOUTPUT_MAX_COLUMNS - 1], "1");
		} else {
			assert_reason(&b, 1, false, "columns");
		}
		b_free(&b);
	}
}

/* Five columns: text, null, binary (with a NUL in it), unchanged TOAST, empty text. */
static void
build_tuple(Builder *b)
{
	static const uint8_t bin[] = {0x00, 0x00, 0x00, 0x2a, 0x00, 0xff};

	b_u16(b, 5);
	col_text(b, "one");
	col_null(b);
	col_binary(b, bin, sizeof(bin));
	col_unchanged(b);
	col_text(b, "");
}

static void
assert_built_tuple(const PgoutputTuple *t, const Builder *b)
{
	static const uint8_t bin[] = {0x00, 0x00, 0x00, 0x2a, 0x00, 0xff};

	assert_int_equal(t->ncols, 5);
	assert_text_col(&t->cols[0], "one");
	assert_true(points_into(t->cols[0].value, b));
	assert_kind_col(&t->cols[1], PGOUTPUT_COLUMN_NULL);
	assert_int_equal(t->cols[2].kind, PGOUTPUT_COLUMN_BINARY);
	assert_int_equal(t->cols[2].len, sizeof(bin));
	assert_memory_equal(t->cols[2].value, bin, sizeof(bin));
	assert_kind_col(&t->cols[3], PGOUTPUT_COLUMN_UNCHANGED);
	assert_int_equal(t->cols[4].kind, PGOUTPUT_COLUMN_TEXT);
	assert_int_equal(t->cols[4].len, 0);
}

static void
test_insert(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 16391);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	build_tuple(&b);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.type, PGOUTPUT_INSERT);
	assert_int_equal(msg.insert.relid, 16391);
	assert_built_tuple(&msg.insert.newtuple, &b);

	/* An Insert carries only a new tuple. */
	b.data[5] = PGOUTPUT_TUPLE_KEY;
	assert_reason(&b, 1, false, "tuple marker");
	b_free(&b);

	/* Zero columns. */
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 1);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	b_u16(&b, 0);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.insert.newtuple.ncols, 0);
	b_free(&b);
}

/* Bad column kinds and lengths inside TupleData. */
static void
test_bad_columns(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 1);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	b_u16(&b, 2);
	col_null(&b);
	b_u8(&b, 'x');
	assert_reason(&b, 1, false, "column kind");
	b_free(&b);

	/* Negative length. */
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 1);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	b_u16(&b, 1);
	b_u8(&b, PGOUTPUT_COLUMN_TEXT);
	b_u32(&b, UINT32_MAX);
	assert_reason(&b, 1, false, "negative");
	b_free(&b);

	/* A length past the end of the message: never trusted. */
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 1);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	b_u16(&b, 1);
	b_u8(&b, PGOUTPUT_COLUMN_BINARY);
	b_u32(&b, 0x7fffffff);
	b_raw(&b, "abc", 3);
	assert_reason(&b, 1, false, "truncated");
	b_free(&b);

	/* More columns announced than present. */
	b_u8(&b, PGOUTPUT_INSERT);
	b_u32(&b, 1);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	b_u16(&b, 3);
	col_null(&b);
	col_null(&b);
	assert_reason(&b, 1, false, "truncated");
	b_free(&b);
}

static void
test_update(void **state)
{
	Builder b;

	(void) state;
	/* No old tuple: the key did not change and identity is not FULL. */
	b_init(&b);
	b_u8(&b, PGOUTPUT_UPDATE);
	b_u32(&b, 16391);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	build_tuple(&b);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.type, PGOUTPUT_UPDATE);
	assert_int_equal(msg.update.relid, 16391);
	assert_int_equal(msg.update.old_kind, 0);
	assert_built_tuple(&msg.update.newtuple, &b);
	b_free(&b);

	/* Old key, then old row. */
	for (int i = 0; i < 2; i++) {
		uint8_t old_kind = i == 0 ? PGOUTPUT_TUPLE_KEY : PGOUTPUT_TUPLE_OLD;

		b_u8(&b, PGOUTPUT_UPDATE);
		b_u32(&b, 16391);
		b_u8(&b, old_kind);
		b_u16(&b, 2);
		col_text(&b, "2");
		col_null(&b);
		b_u8(&b, PGOUTPUT_TUPLE_NEW);
		build_tuple(&b);
		assert_valid(&b, 1, false);
		assert_int_equal(msg.update.old_kind, old_kind);
		assert_int_equal(msg.update.oldtuple.ncols, 2);
		assert_text_col(&msg.update.oldtuple.cols[0], "2");
		assert_kind_col(&msg.update.oldtuple.cols[1], PGOUTPUT_COLUMN_NULL);
		assert_built_tuple(&msg.update.newtuple, &b);

		/* The old tuple must be followed by the new one, not another old one. */
		b.data[5 + 1 + 9] = old_kind;
		assert_reason(&b, 1, false, "tuple marker");
		b_free(&b);
	}

	/* A marker that is none of N, K, O. */
	b_u8(&b, PGOUTPUT_UPDATE);
	b_u32(&b, 16391);
	b_u8(&b, 'X');
	build_tuple(&b);
	assert_reason(&b, 1, false, "tuple marker");
	b_free(&b);
}

static void
test_delete(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	for (int i = 0; i < 2; i++) {
		uint8_t old_kind = i == 0 ? PGOUTPUT_TUPLE_KEY : PGOUTPUT_TUPLE_OLD;

		b_u8(&b, PGOUTPUT_DELETE);
		b_u32(&b, 16398);
		b_u8(&b, old_kind);
		build_tuple(&b);
		assert_valid(&b, 1, false);
		assert_int_equal(msg.type, PGOUTPUT_DELETE);
		assert_int_equal(msg.delete.relid, 16398);
		assert_int_equal(msg.delete.old_kind, old_kind);
		assert_built_tuple(&msg.delete.oldtuple, &b);
		b_free(&b);
	}
	/* A Delete has no new tuple. */
	b_u8(&b, PGOUTPUT_DELETE);
	b_u32(&b, 16398);
	b_u8(&b, PGOUTPUT_TUPLE_NEW);
	build_tuple(&b);
	assert_reason(&b, 1, false, "tuple marker");
	b_free(&b);
}

static void
test_truncate(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_TRUNCATE);
	b_u32(&b, 3);
	b_u8(&b, PGOUTPUT_TRUNCATE_CASCADE | PGOUTPUT_TRUNCATE_RESTART_IDENTITY);
	b_u32(&b, 16398);
	b_u32(&b, 16404);
	b_u32(&b, UINT32_MAX);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.type, PGOUTPUT_TRUNCATE);
	assert_int_equal(msg.truncate.nrels, 3);
	assert_int_equal(msg.truncate.flags, PGOUTPUT_TRUNCATE_CASCADE | PGOUTPUT_TRUNCATE_RESTART_IDENTITY);
	assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 0), 16398);
	assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 1), 16404);
	assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 2), UINT32_MAX);

	b.data[5] = 0x04;
	assert_reason(&b, 1, false, "flags");
	b.data[5] = 0;
	/* A count that disagrees with the bytes, either way, and a negative one. */
	b.data[4] = 4;
	assert_rejected(&b, 1, false);
	b.data[4] = 2;
	assert_rejected(&b, 1, false);
	memset(b.data + 1, 0xff, 4);
	assert_rejected(&b, 1, false);
	b_free(&b);

	b_u8(&b, PGOUTPUT_TRUNCATE);
	b_u32(&b, 0);
	b_u8(&b, 0);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.truncate.nrels, 0);
	b_free(&b);
}

static void
test_message(void **state)
{
	static const uint8_t content[] = {'h', 0, 'i', 0xff};
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_MESSAGE);
	b_u8(&b, PGOUTPUT_MESSAGE_TRANSACTIONAL);
	b_u64(&b, 0x1548DA0);
	b_str(&b, "pfx");
	b_u32(&b, sizeof(content));
	b_raw(&b, content, sizeof(content));
	assert_valid(&b, 1, false);
	assert_int_equal(msg.type, PGOUTPUT_MESSAGE);
	assert_int_equal(msg.message.flags, PGOUTPUT_MESSAGE_TRANSACTIONAL);
	assert_int_equal(msg.message.lsn, 0x1548DA0);
	assert_string_equal(msg.message.prefix, "pfx");
	assert_int_equal(msg.message.content_len, sizeof(content));
	assert_memory_equal(msg.message.content, content, sizeof(content));
	b.data[1] = 0x02;
	assert_reason(&b, 1, false, "flags");
	b_free(&b);

	/* Non-transactional, empty content. */
	b_u8(&b, PGOUTPUT_MESSAGE);
	b_u8(&b, 0);
	b_u64(&b, 1);
	b_str(&b, "");
	b_u32(&b, 0);
	assert_valid(&b, 1, false);
	assert_int_equal(msg.message.flags, 0);
	assert_string_equal(msg.message.prefix, "");
	assert_int_equal(msg.message.content_len, 0);
	assert_null(msg.message.content);
	/* Negative content length. */
	memset(b.data + b.len - 4, 0xff, 4);
	assert_reason(&b, 1, false, "negative");
	b_free(&b);
}

/*
 * The changes that carry a leading xid inside a streamed block, built with
 * and without it.  pgoutput writes the xid of the (sub)transaction the
 * change belongs to.
 */
static void
build_change(Builder *b, uint8_t type, uint32_t stream_xid)
{
	b_u8(b, type);
	if (stream_xid)
		b_u32(b, stream_xid);
	switch (type) {
	case PGOUTPUT_RELATION:
		b_u32(b, 16398);
		b_str(b, "public");
		b_str(b, "t2");
		b_u8(b, PGOUTPUT_REPLIDENT_FULL);
		b_u16(b, 1);
		b_u8(b, PGOUTPUT_RELATION_COLUMN_KEY);
		b_str(b, "a");
		b_u32(b, 23);
		b_u32(b, UINT32_MAX);
		break;
	case PGOUTPUT_TYPE:
		b_u32(b, 16398);
		b_str(b, "public");
		b_str(b, "mood");
		break;
	case PGOUTPUT_INSERT:
		b_u32(b, 16398);
		b_u8(b, PGOUTPUT_TUPLE_NEW);
		build_tuple(b);
		break;
	case PGOUTPUT_UPDATE:
		b_u32(b, 16398);
		b_u8(b, PGOUTPUT_TUPLE_OLD);
		build_tuple(b);
		b_u8(b, PGOUTPUT_TUPLE_NEW);
		build_tuple(b);
		break;
	case PGOUTPUT_DELETE:
		b_u32(b, 16398);
		b_u8(b, PGOUTPUT_TUPLE_KEY);
		build_tuple(b);
		break;
	case PGOUTPUT_TRUNCATE:
		b_u32(b, 1);
		b_u8(b, 0);
		b_u32(b, 16398);
		break;
	case PGOUTPUT_MESSAGE:
		b_u8(b, PGOUTPUT_MESSAGE_TRANSACTIONAL);
		b_u64(b, 99);
		b_str(b, "p");
		b_u32(b, 1);
		b_u8(b, 'x');
		break;
	default:
		fail();
	}
}

/* The one field every kind above has in common: 16398 somewhere. */
static void
assert_change_fields(uint8_t type, const Builder *b)
{
	assert_int_equal(msg.type, type);
	switch (type) {
	case PGOUTPUT_RELATION:
		assert_int_equal(msg.relation.relid, 16398);
		assert_string_equal(msg.relation.relname, "t2");
		break;
	case PGOUTPUT_TYPE:
		assert_string_equal(msg.typ.typname, "mood");
		break;
	case PGOUTPUT_INSERT:
		assert_int_equal(msg.insert.relid, 16398);
		assert_built_tuple(&msg.insert.newtuple, b);
		break;
	case PGOUTPUT_UPDATE:
		assert_int_equal(msg.update.relid, 16398);
		assert_int_equal(msg.update.old_kind, PGOUTPUT_TUPLE_OLD);
		assert_built_tuple(&msg.update.oldtuple, b);
		assert_built_tuple(&msg.update.newtuple, b);
		break;
	case PGOUTPUT_DELETE:
		assert_int_equal(msg.delete.relid, 16398);
		assert_built_tuple(&msg.delete.oldtuple, b);
		break;
	case PGOUTPUT_TRUNCATE:
		assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 0), 16398);
		break;
	case PGOUTPUT_MESSAGE:
		assert_string_equal(msg.message.prefix, "p");
		break;
	default:
		fail();
	}
}

static void
test_streamed_changes(void **state)
{
	static const uint8_t types[] = {
		PGOUTPUT_RELATION, PGOUTPUT_TYPE,     PGOUTPUT_INSERT,  PGOUTPUT_UPDATE,
		PGOUTPUT_DELETE,   PGOUTPUT_TRUNCATE, PGOUTPUT_MESSAGE,
	};
	Builder b;

	(void) state;
	b_init(&b);
	for (size_t i = 0; i < sizeof(types); i++) {
		for (int proto = PGOUTPUT_PROTO_STREAMING; proto <= PGOUTPUT_PROTO_MAX; proto++) {
			build_change(&b, types[i], 749);
			assert_valid(&b, proto, true);
			assert_int_equal(msg.stream_xid, 749);
			assert_change_fields(types[i], &b);
			/* Inside a stream, xid 0 (InvalidTransactionId) is an error. */
			memset(b.data + 1, 0, 4);
			assert_reason(&b, proto, true, "transaction ID");
			b_free(&b);

			/* The same change outside a stream: no xid. */
			build_change(&b, types[i], 0);
			assert_valid(&b, proto, false);
			assert_int_equal(msg.stream_xid, 0);
			assert_change_fields(types[i], &b);
			b_free(&b);
		}
		/* Protocol 1 has no streams. */
		build_change(&b, types[i], 749);
		assert_reason(&b, 1, true, "protocol version");
		b_free(&b);
	}
}

static void
test_stream_control(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_STREAM_START);
	b_u32(&b, 747);
	b_u8(&b, 1);
	/* Stream Start and Stop come between streamed changes or outside: the layout is the same. */
	for (int s = 0; s < 2; s++) {
		assert_valid(&b, 2, s == 1);
		assert_int_equal(msg.type, PGOUTPUT_STREAM_START);
		assert_int_equal(msg.stream_start.xid, 747);
		assert_true(msg.stream_start.first_segment);
		assert_int_equal(msg.stream_xid, 0);
	}
	b.data[5] = 0;
	assert_valid(&b, 2, false);
	assert_false(msg.stream_start.first_segment);
	b.data[5] = 2;
	assert_reason(&b, 2, false, "first-segment");
	b.data[5] = 1;
	memset(b.data + 1, 0, 4);
	assert_reason(&b, 2, false, "transaction ID");
	assert_reason(&b, 1, false, "protocol version");
	b_free(&b);

	b_u8(&b, PGOUTPUT_STREAM_STOP);
	assert_valid(&b, 2, true);
	assert_int_equal(msg.type, PGOUTPUT_STREAM_STOP);
	b_free(&b);

	b_u8(&b, PGOUTPUT_STREAM_COMMIT);
	b_u32(&b, 747);
	b_u8(&b, 0);
	b_u64(&b, 0x1597F50);
	b_u64(&b, 0x1597F88);
	b_u64(&b, 849066707602948);
	assert_valid(&b, 2, false);
	assert_int_equal(msg.type, PGOUTPUT_STREAM_COMMIT);
	assert_int_equal(msg.commit.xid, 747);
	assert_int_equal(msg.commit.commit_lsn, 0x1597F50);
	assert_int_equal(msg.commit.end_lsn, 0x1597F88);
	assert_int_equal(msg.commit.commit_time, 849066707602948);
	b.data[5] = 1;
	assert_reason(&b, 2, false, "flags");
	b_free(&b);
}

static void
test_stream_abort(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_STREAM_ABORT);
	b_u32(&b, 747);
	b_u32(&b, 748);
	for (int proto = PGOUTPUT_PROTO_STREAMING; proto <= PGOUTPUT_PROTO_MAX; proto++) {
		assert_valid(&b, proto, false);
		assert_int_equal(msg.type, PGOUTPUT_STREAM_ABORT);
		assert_int_equal(msg.stream_abort.xid, 747);
		assert_int_equal(msg.stream_abort.subxid, 748);
		assert_false(msg.stream_abort.has_abort_info);
	}
	assert_reason(&b, 1, false, "protocol version");
	memset(b.data + 5, 0, 4);
	assert_reason(&b, 2, false, "transaction ID");
	b.data[7] = 0x02;
	b.data[8] = 0xec;

	/* Protocol 4 with streaming = parallel adds the abort LSN and time. */
	b_u64(&b, 0x15E6668);
	b_u64(&b, 849066707615073);
	assert_valid_except(&b, PGOUTPUT_PROTO_PARALLEL, false, 9);
	assert_true(msg.stream_abort.has_abort_info);
	assert_int_equal(msg.stream_abort.abort_lsn, 0x15E6668);
	assert_int_equal(msg.stream_abort.abort_time, 849066707615073);
	/* ... which earlier versions never send. */
	assert_reason(&b, 3, false, "after its end");
	assert_reason(&b, 2, false, "after its end");
	b_free(&b);
}

static void
test_two_phase(void **state)
{
	Builder b;

	(void) state;
	b_init(&b);
	b_u8(&b, PGOUTPUT_BEGIN_PREPARE);
	b_u64(&b, 0x1548EE8);
	b_u64(&b, 0x1548FE0);
	b_u64(&b, 849066707569276);
	b_u32(&b, 741);
	b_str(&b, "g1");
	for (int proto = PGOUTPUT_PROTO_TWO_PHASE; proto <= PGOUTPUT_PROTO_MAX; proto++) {
		assert_valid(&b, proto, false);
		assert_int_equal(msg.type, PGOUTPUT_BEGIN_PREPARE);
		assert_int_equal(msg.prepare.prepare_lsn, 0x1548EE8);
		assert_int_equal(msg.prepare.end_lsn, 0x1548FE0);
		assert_int_equal(msg.prepare.prepare_time, 849066707569276);
		assert_int_equal(msg.prepare.xid, 741);
		assert_string_equal(msg.prepare.gid, "g1");
	}
	assert_reason(&b, 2, false, "protocol version");
	memset(b.data + 9, 0, 8);
	assert_reason(&b, 3, false, "end LSN");
	b_free(&b);

	/* Prepare and Stream Prepare: the same layout with a flags byte first. */
	for (int i = 0; i < 2; i++) {
		uint8_t type = i == 0 ? PGOUTPUT_PREPARE : PGOUTPUT_STREAM_PREPARE;

		b_u8(&b, type);
		b_u8(&b, 0);
		b_u64(&b, 0x15E6570);
		b_u64(&b, 0x15E6668);
		b_u64(&b, 849066707615073);
		b_u32(&b, 751);
		b_str(&b, "g3");
		assert_valid(&b, 3, false);
		assert_int_equal(msg.type, type);
		assert_int_equal(msg.prepare.prepare_lsn, 0x15E6570);
		assert_int_equal(msg.prepare.end_lsn, 0x15E6668);
		assert_int_equal(msg.prepare.xid, 751);
		assert_string_equal(msg.prepare.gid, "g3");
		assert_reason(&b, 2, false, "protocol version");
		b.data[1] = 1;
		assert_reason(&b, 3, false, "flags");
		b.data[1] = 0;
		/* PostgreSQL 18's reader refuses xid 0 here. */
		memset(b.data + 26, 0, 4);
		assert_reason(&b, 3, false, "transaction ID");
		memset(b.data + 2, 0, 8);
		assert_reason(&b, 3, false, "prepare LSN");
		b_free(&b);
	}

	b_u8(&b, PGOUTPUT_COMMIT_PREPARED);
	b_u8(&b, 0);
	b_u64(&b, 0x1548FE0);
	b_u64(&b, 0x1549018);
	b_u64(&b, 849066707573002);
	b_u32(&b, 741);
	b_str(&b, "g1");
	assert_valid(&b, 3, false);
	assert_int_equal(msg.type, PGOUTPUT_COMMIT_PREPARED);
	assert_int_equal(msg.commit_prepared.commit_lsn, 0x1548FE0);
	assert_int_equal(msg.commit_prepared.end_lsn, 0x1549018);
	assert_int_equal(msg.commit_prepared.commit_time, 849066707573002);
	assert_int_equal(msg.commit_prepared.xid, 741);
	assert_string_equal(msg.commit_prepared.gid, "g1");
	assert_reason(&b, 2, false, "protocol version");
	b.data[1] = 1;
	assert_reason(&b, 3, false, "flags");
	b_free(&b);

	b_u8(&b, PGOUTPUT_ROLLBACK_PREPARED);
	b_u8(&b, 0);
	b_u64(&b, 0x1549190);
	b_u64(&b, 0x15491C8);
	b_u64(&b, 849066707576126);
	b_u64(&b, 849066707577737);
	b_u32(&b, 742);
	b_str(&b, "g2");
	assert_valid(&b, 3, false);
	assert_int_equal(msg.type, PGOUTPUT_ROLLBACK_PREPARED);
	assert_int_equal(msg.rollback_prepared.prepare_end_lsn, 0x1549190);
	assert_int_equal(msg.rollback_prepared.rollback_end_lsn, 0x15491C8);
	assert_int_equal(msg.rollback_prepared.prepare_time, 849066707576126);
	assert_int_equal(msg.rollback_prepared.rollback_time, 849066707577737);
	assert_int_equal(msg.rollback_prepared.xid, 742);
	assert_string_equal(msg.rollback_prepared.gid, "g2");
	assert_reason(&b, 2, false, "protocol version");
	memset(b.data + 10, 0, 8);
	assert_reason(&b, 3, false, "rollback end LSN");
	b_free(&b);

	/* A gid without its NUL. */
	b_u8(&b, PGOUTPUT_COMMIT_PREPARED);
	b_u8(&b, 0);
	b_u64(&b, 1);
	b_u64(&b, 2);
	b_u64(&b, 3);
	b_u32(&b, 4);
	b_raw(&b, "g1", 2);
	assert_reason(&b, 3, false, "truncated");
	b_free(&b);
}

static void
test_versions_and_types(void **state)
{
	static const uint8_t stop[] = {PGOUTPUT_STREAM_STOP};
	static const uint8_t unknown[] = {'Z', 0, 0, 0, 0};
	Builder b;

	(void) state;
	assert_rejected_raw(stop, 0, 1, false); /* empty */
	assert_rejected_raw(unknown, sizeof(unknown), 1, false);
	assert_rejected_raw(unknown, sizeof(unknown), 4, false);
	assert_rejected_raw(stop, sizeof(stop), 1, false);
	assert_rejected_raw(stop, sizeof(stop), 0, false);
	assert_rejected_raw(stop, sizeof(stop), PGOUTPUT_PROTO_MAX + 1, false);
	assert_rejected_raw(stop, sizeof(stop), -1, true);
	/* The envelope bytes are not pgoutput messages. */
	b_init(&b);
	b_u8(&b, PGOUTPUT_XLOGDATA);
	b_u64(&b, 1);
	b_u64(&b, 1);
	b_u64(&b, 1);
	assert_reason(&b, 4, false, "unknown pgoutput message type");
	b_free(&b);
	assert_string_equal(pgoutput_message_name(PGOUTPUT_STREAM_PREPARE), "Stream Prepare");
	assert_string_equal(pgoutput_message_name('Z'), "unknown");
}

/* Bytes captured from PostgreSQL 15.x with pg_logical_slot_peek_binary_changes. */

/* Decodes hex as a real message, runs the truncation checks, leaves it in msg and b. */
static void
real(Builder *b, const char *hex, int proto, bool in_stream)
{
	b_init(b);
	b_hex(b, hex);
	assert_valid(b, proto, in_stream);
}

static void
test_real_v1(void **state)
{
	Builder b;

	(void) state;
	real(&b, "42000000000154795800030438bf7dfc45000002db", 1, false);
	assert_int_equal(msg.type, PGOUTPUT_BEGIN);
	assert_int_equal(msg.begin.final_lsn, 0x1547958);
	assert_int_equal(msg.begin.commit_time, 849066707516485);
	assert_int_equal(msg.begin.xid, 731);
	b_free(&b);

	real(&b, "59000040017075626c6963006d6f6f6400", 1, false);
	assert_int_equal(msg.typ.type_oid, 16385);
	assert_string_equal(msg.typ.nspname, "public");
	assert_string_equal(msg.typ.typname, "mood");
	b_free(&b);

	/* t1 (id int primary key, name text, big text, m mood, n numeric(10,2)) */
	real(&b,
	     "52000040077075626c6963007431006400050169640000000017ffffffff006e616d6500"
	     "00000019ffffffff006269670000000019ffffffff006d0000004001ffffffff006e0000"
	     "0006a4000a0006",
	     1, false);
	assert_int_equal(msg.relation.relid, 16391);
	assert_string_equal(msg.relation.relname, "t1");
	assert_int_equal(msg.relation.replident, PGOUTPUT_REPLIDENT_DEFAULT);
	assert_int_equal(msg.relation.natts, 5);
	assert_int_equal(msg.relation.cols[0].flags, PGOUTPUT_RELATION_COLUMN_KEY);
	assert_string_equal(msg.relation.cols[3].name, "m");
	assert_int_equal(msg.relation.cols[3].type_oid, 16385);
	assert_int_equal(msg.relation.cols[4].type_oid, 1700);
	assert_int_equal(msg.relation.cols[4].typmod, (10 << 16 | 2) + 4);
	b_free(&b);

	/* s.t3: schema s, one bigint key. */
	real(&b, "520000401473007433006400010169640000000014ffffffff", 1, false);
	assert_string_equal(msg.relation.nspname, "s");
	assert_int_equal(msg.relation.cols[0].type_oid, 20);
	b_free(&b);

	/* t2 with REPLICA IDENTITY FULL: every column is key. */
	real(&b,
	     "520000400e7075626c69630074320066000201610000000017ffffffff0162000000"
	     "0019ffffffff",
	     1, false);
	assert_int_equal(msg.relation.replident, PGOUTPUT_REPLIDENT_FULL);
	assert_int_equal(msg.relation.cols[1].flags, PGOUTPUT_RELATION_COLUMN_KEY);
	b_free(&b);

	/* INSERT INTO t1 VALUES (2, NULL, NULL, NULL, NULL) */
	real(&b, "49000040074e00057400000001326e6e6e6e", 1, false);
	assert_int_equal(msg.insert.relid, 16391);
	assert_text_col(&msg.insert.newtuple.cols[0], "2");
	assert_kind_col(&msg.insert.newtuple.cols[4], PGOUTPUT_COLUMN_NULL);
	b_free(&b);

	/* UPDATE t1 SET name = 'uno': the 16 KB "big" column stays in TOAST, sent as 'u'. */
	real(&b,
	     "55000040074e00057400000001317400000003756e6f75740000000568617070797400"
	     "000004332e3134",
	     1, false);
	assert_int_equal(msg.update.old_kind, 0);
	assert_text_col(&msg.update.newtuple.cols[1], "uno");
	assert_kind_col(&msg.update.newtuple.cols[2], PGOUTPUT_COLUMN_UNCHANGED);
	assert_text_col(&msg.update.newtuple.cols[3], "happy");
	assert_text_col(&msg.update.newtuple.cols[4], "3.14");
	b_free(&b);

	/* UPDATE t1 SET id = 10 WHERE id = 2: the key changed, so the old key comes first. */
	real(&b, "55000040074b00057400000001326e6e6e6e4e0005740000000231306e6e6e6e", 1, false);
	assert_int_equal(msg.update.old_kind, PGOUTPUT_TUPLE_KEY);
	assert_text_col(&msg.update.oldtuple.cols[0], "2");
	assert_text_col(&msg.update.newtuple.cols[0], "10");
	b_free(&b);

	real(&b, "44000040074b0005740000000231306e6e6e6e", 1, false);
	assert_int_equal(msg.delete.old_kind, PGOUTPUT_TUPLE_KEY);
	assert_text_col(&msg.delete.oldtuple.cols[0], "10");
	b_free(&b);

	/* t2, REPLICA IDENTITY FULL: old rows. */
	real(&b, "550000400e4f00027400000001317400000001784e0002740000000131740000000179", 1, false);
	assert_int_equal(msg.update.old_kind, PGOUTPUT_TUPLE_OLD);
	assert_text_col(&msg.update.oldtuple.cols[1], "x");
	assert_text_col(&msg.update.newtuple.cols[1], "y");
	b_free(&b);

	real(&b, "440000400e4f0002740000000131740000000179", 1, false);
	assert_int_equal(msg.delete.old_kind, PGOUTPUT_TUPLE_OLD);
	b_free(&b);

	/* TRUNCATE t2, s.t3 RESTART IDENTITY CASCADE */
	real(&b, "5400000002030000400e00004014", 1, false);
	assert_int_equal(msg.truncate.nrels, 2);
	assert_int_equal(msg.truncate.flags, PGOUTPUT_TRUNCATE_CASCADE | PGOUTPUT_TRUNCATE_RESTART_IDENTITY);
	assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 0), 16398);
	assert_int_equal(pgoutput_truncate_relid(&msg.truncate, 1), 16404);
	b_free(&b);

	/* pg_logical_emit_message(true, 'pfx', 'hello') and (false, 'nt', '\x00ff') */
	real(&b, "4d010000000001548da0706678000000000568656c6c6f", 1, false);
	assert_int_equal(msg.message.flags, PGOUTPUT_MESSAGE_TRANSACTIONAL);
	assert_string_equal(msg.message.prefix, "pfx");
	assert_int_equal(msg.message.content_len, 5);
	assert_memory_equal(msg.message.content, "hello", 5);
	b_free(&b);
	real(&b, "4d000000000001548e086e74000000000200ff", 1, false);
	assert_int_equal(msg.message.flags, 0);
	assert_memory_equal(msg.message.content, "\x00\xff", 2);
	b_free(&b);

	/* pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-02 03:04:05+00') */
	real(&b, "4f0000000000abcdef7372633100", 1, false);
	assert_int_equal(msg.origin.origin_lsn, 0xABCDEF);
	assert_string_equal(msg.origin.name, "src1");
	b_free(&b);
	real(&b, "4200000000015499000002b0ec8515f340000002ea", 1, false);
	assert_int_equal(msg.begin.final_lsn, 0x1549900);
	assert_int_equal(pgtime_to_unix_us(msg.begin.commit_time), INT64_C(1704164645000000));
	b_free(&b);

	real(&b, "43000000000001547958000000000154798800030438bf7dfc45", 1, false);
	assert_int_equal(msg.commit.commit_lsn, 0x1547958);
	assert_int_equal(msg.commit.end_lsn, 0x1547988);
	assert_int_equal(msg.commit.commit_time, 849066707516485);
	b_free(&b);
}

static void
test_real_binary(void **state)
{
	Builder b;

	(void) state;
	/* binary = true: int4 2 as four bytes, the rest null. */
	real(&b, "49000040074e00056200000004000000026e6e6e6e", 1, false);
	assert_int_equal(msg.insert.newtuple.cols[0].kind, PGOUTPUT_COLUMN_BINARY);
	assert_int_equal(msg.insert.newtuple.cols[0].len, 4);
	assert_memory_equal(msg.insert.newtuple.cols[0].value, "\0\0\0\2", 4);
	b_free(&b);

	/* The 'u' update again, in binary: an enum's send form is its label, numeric 3.14 its digits. */
	real(&b,
	     "55000040074e00056200000004000000016200000003756e6f75620000000568617070"
	     "79620000000c000200000000000200030578",
	     1, false);
	assert_kind_col(&msg.update.newtuple.cols[2], PGOUTPUT_COLUMN_UNCHANGED);
	assert_int_equal(msg.update.newtuple.cols[3].kind, PGOUTPUT_COLUMN_BINARY);
	assert_memory_equal(msg.update.newtuple.cols[3].value, "happy", 5);
	assert_int_equal(msg.update.newtuple.cols[4].len, 12);
	b_free(&b);
}

static void
test_real_streaming(void **state)
{
	Builder b;

	(void) state;
	/* proto_version 2, streaming on, logical_decoding_work_mem = 64kB. */
	real(&b, "53000002eb01", 2, false);
	assert_int_equal(msg.stream_start.xid, 747);
	assert_true(msg.stream_start.first_segment);
	b_free(&b);

	/* Changes inside carry the xid of their subtransaction (749), not the top one (747). */
	real(&b,
	     "52000002ed0000400e7075626c69630074320066000201610000000017ffffffff0162"
	     "0000000019ffffffff",
	     2, true);
	assert_int_equal(msg.stream_xid, 749);
	assert_int_equal(msg.relation.relid, 16398);
	assert_string_equal(msg.relation.relname, "t2");
	b_free(&b);

	real(&b,
	     "49000002ed0000400e4e000274000000013174000000647a7a7a7a7a7a7a7a7a7a7a7a7a"
	     "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a"
	     "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a"
	     "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a",
	     2, true);
	assert_int_equal(msg.stream_xid, 749);
	assert_int_equal(msg.insert.relid, 16398);
	assert_int_equal(msg.insert.newtuple.cols[1].len, 100);
	b_free(&b);

	real(&b, "45", 2, true);
	assert_int_equal(msg.type, PGOUTPUT_STREAM_STOP);
	b_free(&b);

	/* ROLLBACK TO SAVEPOINT, and a whole streamed transaction rolled back. */
	real(&b, "41000002eb000002ec", 2, false);
	assert_int_equal(msg.stream_abort.xid, 747);
	assert_int_equal(msg.stream_abort.subxid, 748);
	assert_false(msg.stream_abort.has_abort_info);
	b_free(&b);
	real(&b, "41000002ee000002ee", 2, false);
	assert_int_equal(msg.stream_abort.xid, msg.stream_abort.subxid);
	b_free(&b);

	real(&b, "63000002eb000000000001597f500000000001597f8800030438bf7f4e04", 2, false);
	assert_int_equal(msg.commit.xid, 747);
	assert_int_equal(msg.commit.commit_lsn, 0x1597F50);
	assert_int_equal(msg.commit.end_lsn, 0x1597F88);
	b_free(&b);
}

static void
test_real_two_phase(void **state)
{
	Builder b;

	(void) state;
	/* proto_version 3, two_phase on (slot created with two_phase = true). */
	real(&b, "620000000001548ee80000000001548fe000030438bf7eca7c000002e5673100", 3, false);
	assert_int_equal(msg.type, PGOUTPUT_BEGIN_PREPARE);
	assert_int_equal(msg.prepare.prepare_lsn, 0x1548EE8);
	assert_int_equal(msg.prepare.xid, 741);
	assert_string_equal(msg.prepare.gid, "g1");
	b_free(&b);

	real(&b, "50000000000001548ee80000000001548fe000030438bf7eca7c000002e5673100", 3, false);
	assert_int_equal(msg.type, PGOUTPUT_PREPARE);
	assert_int_equal(msg.prepare.end_lsn, 0x1548FE0);
	b_free(&b);

	real(&b, "4b000000000001548fe0000000000154901800030438bf7ed90a000002e5673100", 3, false);
	assert_int_equal(msg.commit_prepared.commit_lsn, 0x1548FE0);
	assert_string_equal(msg.commit_prepared.gid, "g1");
	b_free(&b);

	real(&b, "7200000000000154919000000000015491c800030438bf7ee53e00030438bf7eeb89000002e6673200", 3, false);
	assert_int_equal(msg.rollback_prepared.prepare_end_lsn, 0x1549190);
	assert_int_equal(msg.rollback_prepared.rollback_end_lsn, 0x15491C8);
	assert_int_equal(msg.rollback_prepared.xid, 742);
	assert_string_equal(msg.rollback_prepared.gid, "g2");
	b_free(&b);

	/* A large prepared transaction, streamed and then prepared. */
	real(&b, "700000000000015e657000000000015e666800030438bf7f7d61000002ef673300", 3, false);
	assert_int_equal(msg.type, PGOUTPUT_STREAM_PREPARE);
	assert_int_equal(msg.prepare.xid, 751);
	assert_string_equal(msg.prepare.gid, "g3");
	b_free(&b);
}

/* The envelope */

static void
test_xlogdata(void **state)
{
	/* A walsender's XLogData carrying an Insert into s.t3 (id 100). */
	static const char hex[] = "7700000000015f080800000000015f080800030438c3b7b49549000040144e00017400000003313030";
	Builder b;
	XLogData x;
	char err[256];

	(void) state;
	b_init(&b);
	b_hex(&b, hex);
	assert_true(pgoutput_parse_xlogdata(b.data, b.len, &x, err, sizeof(err)));
	assert_int_equal(x.data_start, 0x15F0808);
	assert_int_equal(x.wal_end, 0x15F0808);
	assert_int_equal(x.send_time, 0x00030438c3b7b495);
	assert_ptr_equal(x.payload, b.data + 25);
	assert_int_equal(x.payload_len, b.len - 25);
	assert_true(pgoutput_decode(x.payload, x.payload_len, 1, false, &msg, err, sizeof(err)));
	assert_int_equal(msg.insert.relid, 16404);
	assert_text_col(&msg.insert.newtuple.cols[0], "100");

	/* Header cut short; an empty payload is still an envelope. */
	for (size_t n = 0; n < 25; n++) {
		uint8_t *copy = malloc(n ? n : 1);

		assert_non_null(copy);
		memcpy(copy, b.data, n);
		err[0] = '\0';
		assert_false(pgoutput_parse_xlogdata(copy, n, &x, err, sizeof(err)));
		assert_true(err[0] != '\0');
		free(copy);
	}
	assert_true(pgoutput_parse_xlogdata(b.data, 25, &x, err, sizeof(err)));
	assert_int_equal(x.payload_len, 0);
	b.data[0] = PGOUTPUT_KEEPALIVE;
	assert_false(pgoutput_parse_xlogdata(b.data, b.len, &x, err, sizeof(err)));
	b_free(&b);
}

static void
test_keepalive(void **state)
{
	static const char hex[] = "6b00000000015f09a000030438c3b7ea8200";
	Builder b;
	XLogKeepalive k;
	char err[256];

	(void) state;
	b_init(&b);
	b_hex(&b, hex);
	assert_true(pgoutput_parse_keepalive(b.data, b.len, &k, err, sizeof(err)));
	assert_int_equal(k.wal_end, 0x15F09A0);
	assert_int_equal(k.send_time, 0x00030438c3b7ea82);
	assert_false(k.reply_requested);
	b.data[17] = 1;
	assert_true(pgoutput_parse_keepalive(b.data, b.len, &k, err, sizeof(err)));
	assert_true(k.reply_requested);
	b.data[17] = 2;
	assert_false(pgoutput_parse_keepalive(b.data, b.len, &k, err, sizeof(err)));
	b.data[17] = 0;
	for (size_t n = 0; n < b.len; n++) {
		uint8_t *copy = malloc(n ? n : 1);

		assert_non_null(copy);
		memcpy(copy, b.data, n);
		err[0] = '\0';
		assert_false(pgoutput_parse_keepalive(copy, n, &k, err, sizeof(err)));
		assert_true(err[0] != '\0');
		free(copy);
	}
	b_u8(&b, 0);
	assert_false(pgoutput_parse_keepalive(b.data, b.len, &k, err, sizeof(err)));
	b.data[0] = PGOUTPUT_XLOGDATA;
	assert_false(pgoutput_parse_keepalive(b.data, b.len - 1, &k, err, sizeof(err)));
	b_free(&b);
}

static void
test_status_update(void **state)
{
	/* What we sent a PostgreSQL 15 walsender, which moved the slot to 0/15F08B8. */
	static const char sent[] = "7200000000015f08b800000000015f08b800000000015f08b800030438c3b7b77600";
	uint8_t out[PGOUTPUT_STATUS_UPDATE_LEN];
	Builder want;

	(void) state;
	b_init(&want);
	b_hex(&want, sent);
	assert_int_equal(pgoutput_build_status_update(out, 0x15F08B8, 0x15F08B8, 0x15F08B8, 0x00030438c3b7b776, false),
			 PGOUTPUT_STATUS_UPDATE_LEN);
	assert_int_equal(want.len, PGOUTPUT_STATUS_UPDATE_LEN);
	assert_memory_equal(out, want.data, PGOUTPUT_STATUS_UPDATE_LEN);
	b_free(&want);

	/* Three different LSNs land in order; reply is the last byte. */
	assert_int_equal(pgoutput_build_status_update(out, UINT64_C(0x0102030405060708), 2, 3, -1, true),
			 PGOUTPUT_STATUS_UPDATE_LEN);
	assert_int_equal(out[0], PGOUTPUT_STANDBY_STATUS_UPDATE);
	assert_memory_equal(out + 1, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	assert_int_equal(out[16], 2);
	assert_int_equal(out[24], 3);
	assert_memory_equal(out + 25, "\xff\xff\xff\xff\xff\xff\xff\xff", 8);
	assert_int_equal(out[33], 1);
}

static void
test_lsn(void **state)
{
	char buf[LSN_FORMAT_LEN];
	uint64_t lsn = 1;

	(void) state;
	lsn_format(UINT64_C(0x16B374D848), buf, sizeof(buf));
	assert_string_equal(buf, "16/B374D848");
	lsn_format(0, buf, sizeof(buf));
	assert_string_equal(buf, "0/0");
	lsn_format(UINT64_MAX, buf, sizeof(buf));
	assert_string_equal(buf, "FFFFFFFF/FFFFFFFF");
	lsn_format(UINT64_MAX, buf, 5);
	assert_string_equal(buf, "FFFF");
	lsn_format(UINT64_MAX, buf, 0);
	assert_string_equal(buf, "FFFF");

	assert_true(lsn_parse("16/B374D848", &lsn));
	assert_int_equal(lsn, UINT64_C(0x16B374D848));
	assert_true(lsn_parse("0/0", &lsn));
	assert_int_equal(lsn, 0);
	assert_true(lsn_parse("ffffffff/ffffffff", &lsn));
	assert_int_equal(lsn, UINT64_MAX);
	assert_true(lsn_parse("00000000/0000000A", &lsn));
	assert_int_equal(lsn, 10);
	for (uint64_t v = 1; v != 0; v <<= 3) {
		lsn_format(v * 0x9E3779B97F4A7C15u, buf, sizeof(buf));
		assert_true(lsn_parse(buf, &lsn));
		assert_int_equal(lsn, v * 0x9E3779B97F4A7C15u);
	}

	lsn = 7;
	assert_false(lsn_parse("", &lsn));
	assert_false(lsn_parse("/", &lsn));
	assert_false(lsn_parse("1/", &lsn));
	assert_false(lsn_parse("/1", &lsn));
	assert_false(lsn_parse("1", &lsn));
	assert_false(lsn_parse("123456789/0", &lsn));
	assert_false(lsn_parse("0/123456789", &lsn));
	assert_false(lsn_parse("1/2x", &lsn));
	assert_false(lsn_parse(" 1/2", &lsn));
	assert_false(lsn_parse("1/2 ", &lsn));
	assert_false(lsn_parse("+1/2", &lsn));
	assert_false(lsn_parse("0x1/2", &lsn));
	assert_false(lsn_parse("1//2", &lsn));
	assert_false(lsn_parse(NULL, &lsn));
	assert_int_equal(lsn, 7);
}

static void
test_time(void **state)
{
	(void) state;
	assert_int_equal(pgtime_to_unix_us(0), INT64_C(946684800000000));
	assert_int_equal(pgtime_from_unix_us(INT64_C(946684800000000)), 0);
	/* 2024-01-02 03:04:05 UTC, as the server sent it in the origin test above. */
	assert_int_equal(pgtime_to_unix_us(INT64_C(757479845000000)), INT64_C(1704164645000000));
	assert_int_equal(pgtime_from_unix_us(INT64_C(1704164645000000)), INT64_C(757479845000000));
	assert_true(pgtime_from_unix_us(0) == INT64_C(-946684800000000));
	/* Infinities stay infinite; what would overflow saturates. */
	assert_true(pgtime_to_unix_us(INT64_MAX) == INT64_MAX);
	assert_true(pgtime_to_unix_us(INT64_MIN) == INT64_MIN);
	assert_true(pgtime_to_unix_us(INT64_MAX - 1) == INT64_MAX);
	assert_true(pgtime_from_unix_us(INT64_MIN) == INT64_MIN);
	assert_true(pgtime_from_unix_us(INT64_MIN + 1) == INT64_MIN);
	assert_true(pgtime_from_unix_us(INT64_MAX) == INT64_MAX);
	/* Now is after 2024 and before 2100. */
	assert_true(pgtime_now() > INT64_C(757479845000000));
	assert_true(pgtime_now() < INT64_C(3155760000000000));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_begin_commit),
		cmocka_unit_test(test_origin_type),
		cmocka_unit_test(test_relation),
		cmocka_unit_test(test_max_columns),
		cmocka_unit_test(test_insert),
		cmocka_unit_test(test_bad_columns),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_message),
		cmocka_unit_test(test_streamed_changes),
		cmocka_unit_test(test_stream_control),
		cmocka_unit_test(test_stream_abort),
		cmocka_unit_test(test_two_phase),
		cmocka_unit_test(test_versions_and_types),
		cmocka_unit_test(test_real_v1),
		cmocka_unit_test(test_real_binary),
		cmocka_unit_test(test_real_streaming),
		cmocka_unit_test(test_real_two_phase),
		cmocka_unit_test(test_xlogdata),
		cmocka_unit_test(test_keepalive),
		cmocka_unit_test(test_status_update),
		cmocka_unit_test(test_lsn),
		cmocka_unit_test(test_time),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
