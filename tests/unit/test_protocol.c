/*
 * The wire decoders on byte arrays: hand-written messages, round trips
 * through pktbuf, and malformed input.  Every proper prefix of a valid
 * fixed-shape message must be rejected; prefixes are copied to buffers of
 * exactly their size so AddressSanitizer sees any read past the end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/pktbuf.h"
#include "proxy/protocol.h"

/* A byte-string literal and its length without the literal's own NUL. */
#define LIT(s) (const uint8_t *) (s), (sizeof(s) - 1)

typedef bool (*TryFn)(const uint8_t *body, size_t len, char *err, size_t errlen);

/* One uniform signature per decoder, for the table-driven checks. */
#define TRY_WRAPPER(name, type) \
	static bool try_##name(const uint8_t *b, size_t n, char *err, size_t errlen) \
	{ \
		type out; \
		return proto_parse_##name(b, n, &out, err, errlen); \
	}

TRY_WRAPPER(startup, StartupPacket)
TRY_WRAPPER(parse, ProtoParse)
TRY_WRAPPER(bind, ProtoBind)
TRY_WRAPPER(close, ProtoTarget)
TRY_WRAPPER(describe, ProtoTarget)
TRY_WRAPPER(execute, ProtoExecute)
TRY_WRAPPER(query, ProtoQuery)
TRY_WRAPPER(sasl_initial_response, ProtoSaslInitialResponse)
TRY_WRAPPER(ready_for_query, ProtoReadyForQuery)
TRY_WRAPPER(backend_key_data, ProtoBackendKeyData)
TRY_WRAPPER(parameter_status, ProtoParameterStatus)
TRY_WRAPPER(auth_request, ProtoAuthRequest)
TRY_WRAPPER(error_response, ProtoErrorResponse)
TRY_WRAPPER(notification, ProtoNotification)
TRY_WRAPPER(negotiate_protocol_version, ProtoNegotiateProtocolVersion)
TRY_WRAPPER(copy_response, ProtoCopyResponse)
TRY_WRAPPER(command_complete, ProtoCommandComplete)
TRY_WRAPPER(data_row, ProtoDataRow)

/* Runs fn on an exact-size heap copy of body[0..n). */
static bool
try_copy(TryFn fn, const uint8_t *body, size_t n, char *err, size_t errlen)
{
	uint8_t *copy = malloc(n ? n : 1);
	bool ok;

	assert_non_null(copy);
	if (n > 0)
		memcpy(copy, body, n);
	ok = fn(copy, n, err, errlen);
	free(copy);
	return ok;
}

/* The whole body parses; every shorter prefix fails with a reason. */
static void
assert_prefixes_fail(TryFn fn, const uint8_t *body, size_t len)
{
	char err[256];

	assert_true(try_copy(fn, body, len, err, sizeof(err)));
	for (size_t n = 0; n < len; n++) {
		err[0] = '\0';
		if (try_copy(fn, body, n, err, sizeof(err)))
			fail_msg("prefix of %zu of %zu bytes was accepted", n, len);
		assert_true(err[0] != '\0');
	}
}

static void
assert_rejected(TryFn fn, const uint8_t *body, size_t len)
{
	char err[256] = "";

	assert_false(try_copy(fn, body, len, err, sizeof(err)));
	assert_true(err[0] != '\0');
}

/* The body of the single message in pb, checked through proto_parse_header. */
static void
wire_body(const PktBuf *pb, bool has_type, uint8_t expect_type, const uint8_t **body, size_t *len)
{
	uint8_t type = 0;
	uint32_t msglen;
	size_t off = has_type ? 1 : 0;

	assert_false(pb->failed);
	assert_int_equal(proto_parse_header(pb->buf, pb->len, has_type, &type, &msglen,
					    has_type ? 1 << 30 : PROTO_MAX_STARTUP_LENGTH),
			 PROTO_HEADER_OK);
	if (has_type)
		assert_int_equal(type, expect_type);
	assert_int_equal(off + msglen, pb->len);
	*body = pb->buf + off + 4;
	*len = msglen - 4;
}

static void
test_header(void **state)
{
	static const uint8_t msg[] = {'Z', 0, 0, 0, 5, 'I'};
	static const uint8_t startup[] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
	uint8_t hdr[5] = {'Q', 0, 0, 0, 0};
	uint8_t type = 0;
	uint32_t len = 0;

	(void) state;
	for (size_t n = 0; n < 5; n++)
		assert_int_equal(proto_parse_header(msg, n, true, &type, &len, 1000), PROTO_HEADER_NEED_MORE);
	assert_int_equal(proto_parse_header(msg, 5, true, &type, &len, 1000), PROTO_HEADER_OK);
	assert_int_equal(type, PQMSG_READY_FOR_QUERY);
	assert_int_equal(len, 5);
	for (size_t n = 0; n < 4; n++)
		assert_int_equal(proto_parse_header(startup, n, false, NULL, &len, 1000), PROTO_HEADER_NEED_MORE);
	assert_int_equal(proto_parse_header(startup, 4, false, NULL, &len, 1000), PROTO_HEADER_OK);
	assert_int_equal(len, 8);

	/* Too short, over the limit, negative on the wire. */
	hdr[4] = 3;
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, 1000), PROTO_HEADER_BAD);
	hdr[4] = 4;
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, 1000), PROTO_HEADER_OK);
	hdr[3] = 0x03;
	hdr[4] = 0xe9; /* 1001 */
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, 1000), PROTO_HEADER_BAD);
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, 1001), PROTO_HEADER_OK);
	memset(hdr + 1, 0xff, 4);
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, SIZE_MAX), PROTO_HEADER_BAD);
	hdr[1] = 0x80;
	hdr[2] = hdr[3] = hdr[4] = 0;
	assert_int_equal(proto_parse_header(hdr, 5, true, &type, &len, SIZE_MAX), PROTO_HEADER_BAD);

	/* The startup cap: 10000 bytes after the length word. */
	hdr[0] = 0;
	hdr[1] = 0;
	hdr[2] = (PROTO_MAX_STARTUP_LENGTH >> 8) & 0xff;
	hdr[3] = PROTO_MAX_STARTUP_LENGTH & 0xff;
	assert_int_equal(proto_parse_header(hdr, 4, false, NULL, &len, PROTO_MAX_STARTUP_LENGTH), PROTO_HEADER_OK);
	assert_int_equal(len, 10004);
	hdr[3]++;
	assert_int_equal(proto_parse_header(hdr, 4, false, NULL, &len, PROTO_MAX_STARTUP_LENGTH), PROTO_HEADER_BAD);
}

static void
test_startup_round_trip(void **state)
{
	static const char *const keys[] = {
		"user",     "database", "application_name", "client_encoding",
		"_pq_.opt", "options",  "replication",      "DateStyle",
	};
	static const char *const values[] = {
		"bob", "shop", "psql", "UTF8", "on", "-c work_mem=64MB", "database", "ISO",
	};
	StartupPacket sp;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_startup(&pb, PG_PROTOCOL_3_2, keys, values, 8);
	wire_body(&pb, false, 0, &body, &len);
	assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_V3);
	assert_int_equal(sp.code, PG_PROTOCOL_3_2);
	assert_int_equal(sp.minor, 2);
	assert_string_equal(sp.user, "bob");
	assert_string_equal(sp.database, "shop");
	assert_string_equal(sp.application_name, "psql");
	assert_string_equal(sp.options, "-c work_mem=64MB");
	assert_string_equal(sp.replication, "database");
	assert_int_equal(sp.nparams, 2);
	assert_string_equal(sp.param_names[0], "client_encoding");
	assert_string_equal(sp.param_values[0], "UTF8");
	assert_string_equal(sp.param_names[1], "DateStyle");
	assert_string_equal(sp.param_values[1], "ISO");
	assert_int_equal(sp.nextensions, 1);
	assert_string_equal(sp.extension_names[0], "_pq_.opt");
	assert_string_equal(sp.extension_values[0], "on");
	/* Pointers into the packet, not copies. */
	assert_true((const uint8_t *) sp.user > body && (const uint8_t *) sp.user < body + len);
	assert_prefixes_fail(try_startup, body, len);
	pktbuf_free(&pb);
}

static void
test_startup_defaults_and_rejects(void **state)
{
	StartupPacket sp;
	char err[256];

	(void) state;
	/* database defaults to the user, also when empty; absent names are NULL. */
	assert_true(proto_parse_startup(LIT("\0\3\0\0user\0bob\0\0"), &sp, err, sizeof(err)));
	assert_string_equal(sp.database, "bob");
	assert_null(sp.options);
	assert_null(sp.application_name);
	assert_null(sp.replication);
	assert_int_equal(sp.minor, 0);
	assert_true(proto_parse_startup(LIT("\0\3\0\0database\0\0user\0bob\0\0"), &sp, err, sizeof(err)));
	assert_string_equal(sp.database, "bob");

	assert_rejected(try_startup, LIT("\0\3\0\0database\0db\0\0"));                  /* no user */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0\0\0"));                        /* empty user */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0a\0user\0b\0\0"));              /* duplicate */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0a\0x\0y\0x\0z\0\0"));           /* duplicate */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0a\0_pq_.x\0y\0_pq_.x\0z\0\0")); /* duplicate */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0bob\0"));                       /* no terminator */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0bob\0\0\0"));                   /* after terminator */
	assert_rejected(try_startup, LIT("\0\3\0\0user\0bob\0\0x"));
	assert_rejected(try_startup, LIT("\0\3\0\0user\0bob\0key")); /* no value */
	assert_rejected(try_startup, LIT("\0\3\0\0"));
	for (size_t n = 0; n < 4; n++)
		assert_rejected(try_startup, (const uint8_t *) "\0\3\0\0", n);
}

/* A v3 packet with user and count extra parameters named prefix0, prefix1... */
static void
build_many_params(PktBuf *pb, const char *prefix, int count)
{
	char name[32];

	pktbuf_start(pb, 0);
	pktbuf_put_int32(pb, PG_PROTOCOL_3_0);
	pktbuf_put_string(pb, "user");
	pktbuf_put_string(pb, "bob");
	for (int i = 0; i < count; i++) {
		snprintf(name, sizeof(name), "%s%d", prefix, i);
		pktbuf_put_string(pb, name);
		pktbuf_put_string(pb, "v");
	}
	pktbuf_put_byte(pb, 0);
	pktbuf_finish(pb);
}

static void
test_startup_limits(void **state)
{
	static const char head[] = "\0\3\0\0user\0bob\0options\0";
	StartupPacket sp;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];
	uint8_t *big;

	(void) state;
	pktbuf_init(&pb);
	build_many_params(&pb, "p", PROTO_MAX_STARTUP_PARAMS);
	wire_body(&pb, false, 0, &body, &len);
	assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
	assert_int_equal(sp.nparams, PROTO_MAX_STARTUP_PARAMS);
	pktbuf_reset(&pb);
	build_many_params(&pb, "p", PROTO_MAX_STARTUP_PARAMS + 1);
	wire_body(&pb, false, 0, &body, &len);
	assert_rejected(try_startup, body, len);
	pktbuf_reset(&pb);
	build_many_params(&pb, "_pq_.", PROTO_MAX_STARTUP_PARAMS);
	wire_body(&pb, false, 0, &body, &len);
	assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
	assert_int_equal(sp.nextensions, PROTO_MAX_STARTUP_PARAMS);
	pktbuf_reset(&pb);
	build_many_params(&pb, "_pq_.", PROTO_MAX_STARTUP_PARAMS + 1);
	wire_body(&pb, false, 0, &body, &len);
	assert_rejected(try_startup, body, len);
	pktbuf_free(&pb);

	/* Exactly 10000 bytes after the length word is fine, one more is not. */
	big = malloc(PROTO_MAX_STARTUP_PACKET + 1);
	assert_non_null(big);
	memcpy(big, head, sizeof(head) - 1);
	memset(big + sizeof(head) - 1, 'x', PROTO_MAX_STARTUP_PACKET - (sizeof(head) - 1) - 2);
	big[PROTO_MAX_STARTUP_PACKET - 2] = 0;
	big[PROTO_MAX_STARTUP_PACKET - 1] = 0;
	assert_true(try_copy(try_startup, big, PROTO_MAX_STARTUP_PACKET, err, sizeof(err)));
	big[PROTO_MAX_STARTUP_PACKET - 2] = 'x';
	big[PROTO_MAX_STARTUP_PACKET - 1] = 0;
	big[PROTO_MAX_STARTUP_PACKET] = 0;
	assert_rejected(try_startup, big, PROTO_MAX_STARTUP_PACKET + 1);
	free(big);
}

static void
test_startup_special(void **state)
{
	uint8_t key[PROTO_MAX_CANCEL_KEY + 1];
	StartupPacket sp;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t) i;
	pktbuf_init(&pb);
	pktbuf_write_ssl_request(&pb);
	wire_body(&pb, false, 0, &body, &len);
	assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_SSL);
	assert_rejected(try_startup,
			LIT("\x04\xd2\x16\x2f"
			    "x"));

	assert_true(proto_parse_startup(LIT("\x04\xd2\x16\x30"), &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_GSSENC);
	assert_int_equal(sp.code, NEGOTIATE_GSS_CODE);

	/* Cancel keys: 4 bytes (3.0), 32 bytes (what PostgreSQL 18 sends), 256. */
	{
		static const size_t good[] = {4, 32, PROTO_MAX_CANCEL_KEY};

		for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
			pktbuf_reset(&pb);
			pktbuf_write_cancel_request(&pb, 4242, key, good[i]);
			wire_body(&pb, false, 0, &body, &len);
			assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
			assert_int_equal(sp.kind, PROTO_STARTUP_CANCEL);
			assert_int_equal(sp.cancel_pid, 4242);
			assert_int_equal(sp.cancel_keylen, good[i]);
			assert_memory_equal(sp.cancel_key, key, good[i]);
		}
	}
	pktbuf_reset(&pb);
	pktbuf_write_cancel_request(&pb, 4242, key, 4);
	wire_body(&pb, false, 0, &body, &len);
	assert_prefixes_fail(try_startup, body, len);
	pktbuf_reset(&pb);
	pktbuf_write_cancel_request(&pb, 4242, key, 3);
	wire_body(&pb, false, 0, &body, &len);
	assert_rejected(try_startup, body, len);
	pktbuf_reset(&pb);
	pktbuf_write_cancel_request(&pb, 4242, key, PROTO_MAX_CANCEL_KEY + 1);
	wire_body(&pb, false, 0, &body, &len);
	assert_rejected(try_startup, body, len);
	pktbuf_free(&pb);

	/* Protocol 2, 4.0 and unknown special codes: kept for the caller to report. */
	assert_true(proto_parse_startup(LIT("\0\2\0\0user\0bob\0\0"), &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_UNSUPPORTED);
	assert_int_equal(sp.code, PG_PROTOCOL(2, 0));
	assert_true(proto_parse_startup(LIT("\0\4\0\0"), &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_UNSUPPORTED);
	assert_int_equal(sp.code, PG_PROTOCOL(4, 0));
	assert_true(proto_parse_startup(LIT("\x04\xd2\x27\x0f"), &sp, err, sizeof(err)));
	assert_int_equal(sp.kind, PROTO_STARTUP_UNSUPPORTED);
	assert_int_equal(sp.code, PG_PROTOCOL(1234, 9999));
}

static void
test_frontend_messages(void **state)
{
	ProtoParse parse;
	ProtoBind bind;
	ProtoTarget target;
	ProtoExecute exec;
	ProtoQuery query;
	ProtoSaslInitialResponse sasl;
	char err[256];

	(void) state;
	assert_true(proto_parse_parse(LIT("s1\0SELECT $1, $2\0\0\2\0\0\0\x17\0\0\0\x19"), &parse, err, sizeof(err)));
	assert_string_equal(parse.stmt, "s1");
	assert_string_equal(parse.query, "SELECT $1, $2");
	assert_int_equal(parse.nparams, 2);
	assert_int_equal(parse.param_types[7], 0x19);
	assert_prefixes_fail(try_parse, LIT("s1\0SELECT $1, $2\0\0\2\0\0\0\x17\0\0\0\x19"));
	assert_prefixes_fail(try_parse, LIT("\0SELECT 1\0\0\0"));

	/* portal, stmt, 1 format (binary), 3 params (2 bytes, NULL, empty), 1 result format. */
	assert_true(proto_parse_bind(LIT("p1\0s1\0\0\1\0\1\0\3\0\0\0\2hi\xff\xff\xff\xff\0\0\0\0\0\1\0\0"), &bind, err,
				     sizeof(err)));
	assert_string_equal(bind.portal, "p1");
	assert_string_equal(bind.stmt, "s1");
	assert_int_equal(bind.nparams, 3);
	assert_prefixes_fail(try_bind, LIT("p1\0s1\0\0\1\0\1\0\3\0\0\0\2hi\xff\xff\xff\xff\0\0\0\0\0\1\0\0"));
	assert_prefixes_fail(try_bind, LIT("\0\0\0\0\0\0\0\0"));

	assert_true(proto_parse_close(LIT("Sst\0"), &target, err, sizeof(err)));
	assert_int_equal(target.kind, PQTARGET_STATEMENT);
	assert_string_equal(target.name, "st");
	assert_prefixes_fail(try_close, LIT("Sst\0"));
	assert_true(proto_parse_describe(LIT("P\0"), &target, err, sizeof(err)));
	assert_int_equal(target.kind, PQTARGET_PORTAL);
	assert_string_equal(target.name, "");
	assert_prefixes_fail(try_describe, LIT("P\0"));

	assert_true(proto_parse_execute(LIT("p1\0\0\0\0\x64"), &exec, err, sizeof(err)));
	assert_string_equal(exec.portal, "p1");
	assert_int_equal(exec.max_rows, 100);
	assert_prefixes_fail(try_execute, LIT("p1\0\0\0\0\x64"));

	assert_true(proto_parse_query(LIT("SELECT 1\0"), &query, err, sizeof(err)));
	assert_string_equal(query.sql, "SELECT 1");
	assert_prefixes_fail(try_query, LIT("SELECT 1\0"));

	assert_true(proto_parse_sasl_initial_response(LIT("SCRAM-SHA-256\0\0\0\0\3n,,"), &sasl, err, sizeof(err)));
	assert_string_equal(sasl.mechanism, "SCRAM-SHA-256");
	assert_int_equal(sasl.datalen, 3);
	assert_memory_equal(sasl.data, "n,,", 3);
	assert_prefixes_fail(try_sasl_initial_response, LIT("SCRAM-SHA-256\0\0\0\0\3n,,"));
	assert_true(proto_parse_sasl_initial_response(LIT("X\0\xff\xff\xff\xff"), &sasl, err, sizeof(err)));
	assert_int_equal(sasl.datalen, -1);
	assert_null(sasl.data);
	assert_prefixes_fail(try_sasl_initial_response, LIT("X\0\xff\xff\xff\xff"));
}

static void
test_frontend_malformed(void **state)
{
	(void) state;
	assert_rejected(try_parse, LIT("\0q\0\xff\xff"));                   /* -1 params */
	assert_rejected(try_parse, LIT("\0q\0\x7f\xff\0\0\0\0"));           /* 32767 params */
	assert_rejected(try_parse, LIT("\0q\0\0\0x"));                      /* trailing */
	assert_rejected(try_bind, LIT("\0\0\0\0\0\1\xff\xff\xff\xfe\0\0")); /* length -2 */
	assert_rejected(try_bind, LIT("\0\0\0\0\0\1\x7f\xff\xff\xff\0\0")); /* huge length */
	assert_rejected(try_bind, LIT("\0\0\0\2\0\0\0\0\0\1\0\0\0\0\0\0")); /* 2 formats, 1 param */
	assert_rejected(try_bind, LIT("\0\0\xff\xff\0\0\0\0"));             /* -1 formats */
	assert_rejected(try_bind, LIT("\0\0\0\0\0\0\xff\xff"));             /* -1 result formats */
	assert_rejected(try_describe, LIT("Xname\0"));
	assert_rejected(try_close, LIT("S"));
	assert_rejected(try_close, LIT("Sname"));
	assert_rejected(try_query, LIT("SELECT 1\0\0"));
	assert_rejected(try_query, LIT("SELECT 1"));
	assert_rejected(try_execute, LIT("\0\0\0\0\0\0"));
	assert_rejected(try_sasl_initial_response, LIT("X\0\xff\xff\xff\xfe")); /* length -2 */
	assert_rejected(try_sasl_initial_response,
			LIT("X\0\x7f\xff\xff\xff"
			    "abc"));                                      /* beyond the end */
	assert_rejected(try_sasl_initial_response, LIT("X\0\0\0\0\1ab")); /* trailing */
}

static void
test_backend_simple(void **state)
{
	ProtoReadyForQuery rfq;
	ProtoParameterStatus ps;
	ProtoNotification nt;
	ProtoCommandComplete cc;
	char err[256];

	(void) state;
	assert_true(proto_parse_ready_for_query(LIT("I"), &rfq, err, sizeof(err)));
	assert_int_equal(rfq.status, TXN_IDLE);
	assert_true(proto_parse_ready_for_query(LIT("T"), &rfq, err, sizeof(err)));
	assert_int_equal(rfq.status, TXN_IN_BLOCK);
	assert_true(proto_parse_ready_for_query(LIT("E"), &rfq, err, sizeof(err)));
	assert_int_equal(rfq.status, TXN_FAILED);
	assert_prefixes_fail(try_ready_for_query, LIT("E"));
	assert_rejected(try_ready_for_query, LIT("X"));
	assert_rejected(try_ready_for_query, LIT("II"));

	assert_true(proto_parse_parameter_status(LIT("TimeZone\0UTC\0"), &ps, err, sizeof(err)));
	assert_string_equal(ps.name, "TimeZone");
	assert_string_equal(ps.value, "UTC");
	assert_prefixes_fail(try_parameter_status, LIT("TimeZone\0UTC\0"));
	assert_rejected(try_parameter_status, LIT("a\0b\0c"));

	assert_true(proto_parse_notification(LIT("\0\0\1\0chan\0hello\0"), &nt, err, sizeof(err)));
	assert_int_equal(nt.pid, 256);
	assert_string_equal(nt.channel, "chan");
	assert_string_equal(nt.payload, "hello");
	assert_prefixes_fail(try_notification, LIT("\0\0\1\0chan\0hello\0"));

	assert_true(proto_parse_command_complete(LIT("INSERT 0 1\0"), &cc, err, sizeof(err)));
	assert_string_equal(cc.tag, "INSERT 0 1");
	assert_prefixes_fail(try_command_complete, LIT("INSERT 0 1\0"));
}

static void
test_data_row(void **state)
{
	ProtoDataRow row;
	char err[256];

	(void) state;
	/* Three columns: "set", NULL, "" */
	assert_true(proto_parse_data_row(LIT("\0\3\0\0\0\3set\xff\xff\xff\xff\0\0\0\0"), &row, err, sizeof(err)));
	assert_int_equal(row.ncols, 3);
	assert_int_equal(row.lengths[0], 3);
	assert_memory_equal(row.values[0], "set", 3);
	assert_int_equal(row.lengths[1], -1);
	assert_int_equal(row.lengths[2], 0);
	assert_prefixes_fail(try_data_row, LIT("\0\3\0\0\0\3set\xff\xff\xff\xff\0\0\0\0"));
	/* A length past the end, a negative length other than -1, too many columns, bytes left over. */
	assert_rejected(try_data_row, LIT("\0\1\0\0\0\11abc"));
	assert_rejected(try_data_row, LIT("\0\1\xff\xff\xff\xfe"));
	assert_rejected(try_data_row, LIT("\0\x11"));
	assert_rejected(try_data_row, LIT("\xff\xff"));
	assert_rejected(try_data_row, LIT("\0\0x"));
}

static void
test_backend_key_data(void **state)
{
	uint8_t key[PROTO_MAX_CANCEL_KEY + 1];
	ProtoBackendKeyData kd;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t) (0xa0 + i);
	/* 3.0: four bytes, every prefix fails. */
	assert_true(proto_parse_backend_key_data(LIT("\0\0\x30\x39\1\2\3\4"), &kd, err, sizeof(err)));
	assert_int_equal(kd.pid, 12345);
	assert_int_equal(kd.keylen, 4);
	assert_prefixes_fail(try_backend_key_data, LIT("\0\0\x30\x39\1\2\3\4"));

	/* 3.2: a 32-byte key as PostgreSQL 18 sends, through pktbuf. */
	pktbuf_init(&pb);
	pktbuf_write_backend_key_data(&pb, 777, key, 32);
	wire_body(&pb, true, PQMSG_BACKEND_KEY_DATA, &body, &len);
	assert_int_equal(len, 36);
	assert_true(proto_parse_backend_key_data(body, len, &kd, err, sizeof(err)));
	assert_int_equal(kd.pid, 777);
	assert_int_equal(kd.keylen, 32);
	assert_memory_equal(kd.key, key, 32);
	assert_ptr_equal(kd.key, body + 4);
	/* Shorter prefixes are shorter keys while at least 4 bytes remain. */
	for (size_t n = 0; n < len; n++) {
		if (n < 8)
			assert_false(try_copy(try_backend_key_data, body, n, err, sizeof(err)));
		else
			assert_true(try_copy(try_backend_key_data, body, n, err, sizeof(err)));
	}

	pktbuf_reset(&pb);
	pktbuf_write_backend_key_data(&pb, 777, key, PROTO_MAX_CANCEL_KEY);
	wire_body(&pb, true, PQMSG_BACKEND_KEY_DATA, &body, &len);
	assert_true(proto_parse_backend_key_data(body, len, &kd, err, sizeof(err)));
	assert_int_equal(kd.keylen, PROTO_MAX_CANCEL_KEY);
	pktbuf_reset(&pb);
	pktbuf_write_backend_key_data(&pb, 777, key, PROTO_MAX_CANCEL_KEY + 1);
	wire_body(&pb, true, PQMSG_BACKEND_KEY_DATA, &body, &len);
	assert_rejected(try_backend_key_data, body, len);
	pktbuf_free(&pb);
}

static void
test_auth_requests(void **state)
{
	static const char sasl_list[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0"; /* + final NUL */
	ProtoAuthRequest ar;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	assert_true(proto_parse_auth_request(LIT("\0\0\0\0"), &ar, err, sizeof(err)));
	assert_int_equal(ar.code, AUTH_REQ_OK);
	assert_int_equal(ar.datalen, 0);
	assert_prefixes_fail(try_auth_request, LIT("\0\0\0\0"));
	assert_rejected(try_auth_request, LIT("\0\0\0\0x"));
	assert_rejected(try_auth_request, LIT("\0\0\0\3x"));

	assert_true(proto_parse_auth_request(LIT("\0\0\0\5\1\2\3\4"), &ar, err, sizeof(err)));
	assert_int_equal(ar.code, AUTH_REQ_MD5);
	assert_int_equal(ar.datalen, 4);
	assert_memory_equal(ar.data, "\1\2\3\4", 4);
	assert_prefixes_fail(try_auth_request, LIT("\0\0\0\5\1\2\3\4"));
	assert_rejected(try_auth_request, LIT("\0\0\0\5\1\2\3\4\5"));

	pktbuf_init(&pb);
	pktbuf_write_auth(&pb, AUTH_REQ_SASL, sasl_list, sizeof(sasl_list));
	wire_body(&pb, true, PQMSG_AUTHENTICATION_REQUEST, &body, &len);
	assert_true(proto_parse_auth_request(body, len, &ar, err, sizeof(err)));
	assert_int_equal(ar.code, AUTH_REQ_SASL);
	assert_int_equal(ar.nmechanisms, 2);
	assert_string_equal(ar.mechanisms[0], "SCRAM-SHA-256-PLUS");
	assert_string_equal(ar.mechanisms[1], "SCRAM-SHA-256");
	assert_prefixes_fail(try_auth_request, body, len);
	pktbuf_free(&pb);
	assert_rejected(try_auth_request, LIT("\0\0\0\x0a\0")); /* no mechanism */
	assert_rejected(try_auth_request,
			LIT("\0\0\0\x0a"
			    "A\0\0x")); /* trailing */
	assert_rejected(try_auth_request,
			LIT("\0\0\0\x0a"
			    "a\0b\0c\0d\0e\0f\0g\0h\0i\0\0"));

	/* SASL continue / final carry opaque data: only the code is required. */
	assert_true(proto_parse_auth_request(LIT("\0\0\0\x0br=abc,s=xyz,i=4096"), &ar, err, sizeof(err)));
	assert_int_equal(ar.code, AUTH_REQ_SASL_CONT);
	assert_int_equal(ar.datalen, 18);
	for (size_t n = 0; n < 4; n++)
		assert_rejected(try_auth_request, (const uint8_t *) "\0\0\0\x0b", n);
}

static void
test_error_response(void **state)
{
	static const uint8_t full[] =
		"SERREUR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0Ddet\0Hhint\0P15\0Xunknown\0";
	ProtoErrorResponse er;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	/* sizeof includes the literal's NUL, which is the message terminator here. */
	assert_true(proto_parse_error_response(full, sizeof(full), &er, err, sizeof(err)));
	assert_string_equal(er.severity, "ERROR");
	assert_string_equal(er.sqlstate, "42P01");
	assert_string_equal(er.message, "relation \"t\" does not exist");
	assert_string_equal(er.detail, "det");
	assert_string_equal(er.hint, "hint");
	assert_prefixes_fail(try_error_response, full, sizeof(full));

	/* No V (before 9.6): the localized S stands in; absent detail and hint are NULL. */
	assert_true(proto_parse_error_response(LIT("SFATAL\0C28P01\0Mno\0\0"), &er, err, sizeof(err)));
	assert_string_equal(er.severity, "FATAL");
	assert_null(er.detail);
	assert_null(er.hint);

	assert_rejected(try_error_response, LIT("SERROR\0Mno\0\0"));           /* no SQLSTATE */
	assert_rejected(try_error_response, LIT("SERROR\0C2801\0Mno\0\0"));    /* short SQLSTATE */
	assert_rejected(try_error_response, LIT("C28P01\0Mno\0\0"));           /* no severity */
	assert_rejected(try_error_response, LIT("SERROR\0C28P01\0\0"));        /* no message */
	assert_rejected(try_error_response, LIT("SERROR\0C28P01\0Mno\0"));     /* no terminator */
	assert_rejected(try_error_response, LIT("SERROR\0C28P01\0Mno\0\0\0")); /* trailing */
	assert_rejected(try_error_response, LIT(""));

	pktbuf_init(&pb);
	pktbuf_write_error(&pb, "FATAL", "57P01", "terminating connection", "d", "h");
	wire_body(&pb, true, PQMSG_ERROR_RESPONSE, &body, &len);
	assert_true(proto_parse_error_response(body, len, &er, err, sizeof(err)));
	assert_string_equal(er.severity, "FATAL");
	assert_string_equal(er.sqlstate, "57P01");
	assert_string_equal(er.message, "terminating connection");
	assert_string_equal(er.detail, "d");
	assert_string_equal(er.hint, "h");
	assert_prefixes_fail(try_error_response, body, len);
	pktbuf_reset(&pb);
	pktbuf_write_notice(&pb, "WARNING", "01000", "careful", NULL, NULL);
	wire_body(&pb, true, PQMSG_NOTICE_RESPONSE, &body, &len);
	assert_true(proto_parse_error_response(body, len, &er, err, sizeof(err)));
	assert_string_equal(er.severity, "WARNING");
	assert_null(er.detail);
	pktbuf_free(&pb);
}

static void
test_negotiate_protocol_version(void **state)
{
	static const char *const names[] = {"_pq_.a", "_pq_.b"};
	ProtoNegotiateProtocolVersion nv;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_negotiate_protocol_version(&pb, PG_PROTOCOL_3_0, 2, names);
	wire_body(&pb, true, PQMSG_NEGOTIATE_PROTOCOL_VERSION, &body, &len);
	assert_true(proto_parse_negotiate_protocol_version(body, len, &nv, err, sizeof(err)));
	assert_int_equal(nv.version, PG_PROTOCOL_3_0);
	assert_int_equal(nv.newest_minor, 0);
	assert_int_equal(nv.nunrecognized, 2);
	assert_string_equal(nv.unrecognized[0], "_pq_.a");
	assert_string_equal(nv.unrecognized[1], "_pq_.b");
	assert_prefixes_fail(try_negotiate_protocol_version, body, len);
	pktbuf_free(&pb);

	assert_true(proto_parse_negotiate_protocol_version(LIT("\0\3\0\2\0\0\0\0"), &nv, err, sizeof(err)));
	assert_int_equal(nv.newest_minor, 2);
	assert_int_equal(nv.nunrecognized, 0);
	assert_rejected(try_negotiate_protocol_version, LIT("\0\0\0\2\0\0\0\0")); /* bare minor */
	assert_rejected(try_negotiate_protocol_version, LIT("\0\3\0\0\xff\xff\xff\xff"));
	assert_rejected(try_negotiate_protocol_version, LIT("\0\3\0\0\x7f\xff\xff\xff"));
	assert_rejected(try_negotiate_protocol_version, LIT("\0\3\0\0\0\0\0\2a\0"));
	assert_rejected(try_negotiate_protocol_version, LIT("\0\3\0\0\0\0\0\0x"));
}

static void
test_copy_response(void **state)
{
	ProtoCopyResponse cr;
	char err[256];

	(void) state;
	assert_true(proto_parse_copy_response(LIT("\0\0\2\0\0\0\0"), &cr, err, sizeof(err)));
	assert_int_equal(cr.format, PQFORMAT_TEXT);
	assert_int_equal(cr.ncols, 2);
	assert_prefixes_fail(try_copy_response, LIT("\0\0\2\0\0\0\0"));
	assert_true(proto_parse_copy_response(LIT("\1\0\2\0\1\0\0"), &cr, err, sizeof(err)));
	assert_int_equal(cr.format, PQFORMAT_BINARY);
	assert_true(proto_parse_copy_response(LIT("\0\0\0"), &cr, err, sizeof(err)));
	assert_int_equal(cr.ncols, 0);

	assert_rejected(try_copy_response, LIT("\0\0\1\0\1"));     /* binary column in text COPY */
	assert_rejected(try_copy_response, LIT("\2\0\0"));         /* unknown format */
	assert_rejected(try_copy_response, LIT("\1\0\1\0\2"));     /* unknown column format */
	assert_rejected(try_copy_response, LIT("\0\xff\xff"));     /* negative count */
	assert_rejected(try_copy_response, LIT("\0\x7f\xff\0\0")); /* count beyond the end */
	assert_rejected(try_copy_response, LIT("\0\0\0\0"));       /* trailing */
}

static void
test_round_trips(void **state)
{
	static const char *const keys[] = {"user"};
	static const char *const values[] = {"u"};
	ProtoQuery q;
	ProtoCommandComplete cc;
	ProtoParameterStatus ps;
	ProtoReadyForQuery rfq;
	ProtoSaslInitialResponse sasl;
	StartupPacket sp;
	PktBuf pb;
	const uint8_t *body;
	size_t len;
	char err[256];

	(void) state;
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, "SELECT 'x'");
	wire_body(&pb, true, PQMSG_QUERY, &body, &len);
	assert_true(proto_parse_query(body, len, &q, err, sizeof(err)));
	assert_string_equal(q.sql, "SELECT 'x'");

	pktbuf_reset(&pb);
	pktbuf_write_command_complete(&pb, "UPDATE 3");
	wire_body(&pb, true, PQMSG_COMMAND_COMPLETE, &body, &len);
	assert_true(proto_parse_command_complete(body, len, &cc, err, sizeof(err)));
	assert_string_equal(cc.tag, "UPDATE 3");

	pktbuf_reset(&pb);
	pktbuf_write_parameter_status(&pb, "server_version", "18.1");
	wire_body(&pb, true, PQMSG_PARAMETER_STATUS, &body, &len);
	assert_true(proto_parse_parameter_status(body, len, &ps, err, sizeof(err)));
	assert_string_equal(ps.value, "18.1");

	pktbuf_reset(&pb);
	pktbuf_write_ready_for_query(&pb, TXN_FAILED);
	wire_body(&pb, true, PQMSG_READY_FOR_QUERY, &body, &len);
	assert_true(proto_parse_ready_for_query(body, len, &rfq, err, sizeof(err)));
	assert_int_equal(rfq.status, TXN_FAILED);

	pktbuf_reset(&pb);
	pktbuf_write_sasl_initial_response(&pb, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
	wire_body(&pb, true, PQMSG_SASL_INITIAL_RESPONSE, &body, &len);
	assert_true(proto_parse_sasl_initial_response(body, len, &sasl, err, sizeof(err)));
	assert_int_equal(sasl.datalen, 11);
	assert_memory_equal(sasl.data, "n,,n=,r=abc", 11);

	pktbuf_reset(&pb);
	pktbuf_write_startup(&pb, PG_PROTOCOL_3_0, keys, values, 1);
	wire_body(&pb, false, 0, &body, &len);
	assert_true(proto_parse_startup(body, len, &sp, err, sizeof(err)));
	assert_string_equal(sp.user, "u");
	assert_string_equal(sp.database, "u");
	pktbuf_free(&pb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header),
		cmocka_unit_test(test_startup_round_trip),
		cmocka_unit_test(test_startup_defaults_and_rejects),
		cmocka_unit_test(test_startup_limits),
		cmocka_unit_test(test_startup_special),
		cmocka_unit_test(test_frontend_messages),
		cmocka_unit_test(test_frontend_malformed),
		cmocka_unit_test(test_backend_simple),
		cmocka_unit_test(test_backend_key_data),
		cmocka_unit_test(test_auth_requests),
		cmocka_unit_test(test_error_response),
		cmocka_unit_test(test_negotiate_protocol_version),
		cmocka_unit_test(test_copy_response),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_data_row),
	};

	return cmocka_run_group_tests_name("protocol", tests, NULL, NULL);
}
