/*
 * Decoding what a logical replication walsender running pgoutput sends:
 * the CopyBoth envelope (XLogData, primary keepalive, and the standby status
 * update we send back) and the pgoutput messages inside XLogData, protocol
 * versions 1 to 4 (PostgreSQL 13 to 18).  No sockets and no libpq: every
 * function works on the bytes of one message, so it is unit-tested and fuzzed
 * on byte arrays.
 *
 * Decoders fill structs whose strings and values point into the bytes they
 * were given (nothing is copied or allocated), so a decoded message lives no
 * longer than its buffer.  A message is accepted only if it is well formed
 * for the protocol version and consumed to its last byte; otherwise the
 * decoder returns false with a short reason in err, which names the message
 * but never echoes the untrusted bytes.
 */
#ifndef PGHANDOFF_REPLICATOR_PGOUTPUT_H
#define PGHANDOFF_REPLICATOR_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CopyData payloads of a replication connection: the first byte says which. */
#define PGOUTPUT_XLOGDATA 'w'              /* server: WAL data, one pgoutput message */
#define PGOUTPUT_KEEPALIVE 'k'             /* server: primary keepalive */
#define PGOUTPUT_STANDBY_STATUS_UPDATE 'r' /* client: written/flushed/applied */

/*
 * pgoutput message type bytes (PostgreSQL's LogicalRepMsgType).  These live
 * one layer inside the envelope, so ROLLBACK_PREPARED sharing 'r' with the
 * status update is no clash.
 */
#define PGOUTPUT_BEGIN 'B'
#define PGOUTPUT_COMMIT 'C'
#define PGOUTPUT_ORIGIN 'O'
#define PGOUTPUT_RELATION 'R'
#define PGOUTPUT_TYPE 'Y'
#define PGOUTPUT_INSERT 'I'
#define PGOUTPUT_UPDATE 'U'
#define PGOUTPUT_DELETE 'D'
#define PGOUTPUT_TRUNCATE 'T'
#define PGOUTPUT_MESSAGE 'M'
#define PGOUTPUT_STREAM_START 'S' /* protocol 2 */
#define PGOUTPUT_STREAM_STOP 'E'
#define PGOUTPUT_STREAM_COMMIT 'c'
#define PGOUTPUT_STREAM_ABORT 'A'
#define PGOUTPUT_BEGIN_PREPARE 'b' /* protocol 3 */
#define PGOUTPUT_PREPARE 'P'
#define PGOUTPUT_COMMIT_PREPARED 'K'
#define PGOUTPUT_ROLLBACK_PREPARED 'r'
#define PGOUTPUT_STREAM_PREPARE 'p'

/* Which tuple follows, in Insert, Update and Delete. */
#define PGOUTPUT_TUPLE_NEW 'N'
#define PGOUTPUT_TUPLE_KEY 'K' /* old replica identity key columns */
#define PGOUTPUT_TUPLE_OLD 'O' /* whole old row: REPLICA IDENTITY FULL */

/* Per-column markers in TupleData. */
#define PGOUTPUT_COLUMN_NULL 'n'
#define PGOUTPUT_COLUMN_UNCHANGED 'u' /* unchanged TOASTed value: keep the target's */
#define PGOUTPUT_COLUMN_TEXT 't'
#define PGOUTPUT_COLUMN_BINARY 'b'

/* pg_class.relreplident, as sent in Relation. */
#define PGOUTPUT_REPLIDENT_DEFAULT 'd'
#define PGOUTPUT_REPLIDENT_NOTHING 'n'
#define PGOUTPUT_REPLIDENT_FULL 'f'
#define PGOUTPUT_REPLIDENT_INDEX 'i'

/* Flag bits.  Bits not named here are rejected: they would mean something we do not know. */
#define PGOUTPUT_RELATION_COLUMN_KEY 0x01 /* column is part of the replica identity */
#define PGOUTPUT_TRUNCATE_CASCADE 0x01
#define PGOUTPUT_TRUNCATE_RESTART_IDENTITY 0x02
#define PGOUTPUT_MESSAGE_TRANSACTIONAL 0x01

/* proto_version values, and the first one that brought each feature. */
#define PGOUTPUT_PROTO_MIN 1
#define PGOUTPUT_PROTO_STREAMING 2 /* streamed in-progress transactions (PG14) */
#define PGOUTPUT_PROTO_TWO_PHASE 3 /* two-phase commit (PG15) */
#define PGOUTPUT_PROTO_PARALLEL 4  /* streaming = parallel (PG16) */
#define PGOUTPUT_PROTO_MAX 4

/*
 * PostgreSQL's MaxTupleAttributeNumber: no Relation or TupleData can have
 * more columns, so this cap rejects nothing a real server sends.
 */
#define PGOUTPUT_MAX_COLUMNS 1664

/* 'r', four Int64 and a Byte1. */
#define PGOUTPUT_STATUS_UPDATE_LEN 34

/* "FFFFFFFF/FFFFFFFF" and its NUL. */
#define LSN_FORMAT_LEN 18

/* One column of a TupleData. */
typedef struct PgoutputColumn {
	uint8_t kind;         /* PGOUTPUT_COLUMN_* */
	uint32_t len;         /* bytes at value; 0 for null and unchanged */
	const uint8_t *value; /* NULL for null and unchanged; never NUL-terminated */
} PgoutputColumn;

typedef struct PgoutputTuple {
	int ncols;
	PgoutputColumn cols[PGOUTPUT_MAX_COLUMNS];
} PgoutputTuple;

/* One column of a Relation. */
typedef struct PgoutputRelColumn {
	uint8_t flags; /* PGOUTPUT_RELATION_COLUMN_KEY or 0 */
	const char *name;
	uint32_t type_oid;
	int32_t typmod;
} PgoutputRelColumn;

typedef struct PgoutputBegin {
	uint64_t final_lsn;  /* never 0 */
	int64_t commit_time; /* microseconds since 2000-01-01 */
	uint32_t xid;
} PgoutputBegin;

/*
 * Commit and Stream Commit.  Their flags byte, like that of every two-phase
 * message, must be 0 (PostgreSQL's own reader rejects anything else), so it
 * is checked and not kept.
 */
typedef struct PgoutputCommit {
	uint32_t xid; /* Stream Commit only; 0 in Commit */
	uint64_t commit_lsn;
	uint64_t end_lsn;
	int64_t commit_time;
} PgoutputCommit;

typedef struct PgoutputOrigin {
	uint64_t origin_lsn;
	const char *name;
} PgoutputOrigin;

typedef struct PgoutputRelation {
	uint32_t relid;
	const char *nspname; /* "pg_catalog" (a static string) when sent as "" */
	const char *relname;
	uint8_t replident; /* PGOUTPUT_REPLIDENT_* */
	int natts;
	PgoutputRelColumn cols[PGOUTPUT_MAX_COLUMNS];
} PgoutputRelation;

typedef struct PgoutputType {
	uint32_t type_oid;
	const char *nspname; /* "pg_catalog" (a static string) when sent as "" */
	const char *typname;
} PgoutputType;

typedef struct PgoutputInsert {
	uint32_t relid;
	PgoutputTuple newtuple;
} PgoutputInsert;

typedef struct PgoutputUpdate {
	uint32_t relid;
	uint8_t old_kind;       /* 0 (no old tuple), PGOUTPUT_TUPLE_KEY or _OLD */
	PgoutputTuple oldtuple; /* valid when old_kind != 0 */
	PgoutputTuple newtuple;
} PgoutputUpdate;

typedef struct PgoutputDelete {
	uint32_t relid;
	uint8_t old_kind; /* PGOUTPUT_TUPLE_KEY or _OLD */
	PgoutputTuple oldtuple;
} PgoutputDelete;

typedef struct PgoutputTruncate {
	int nrels;
	uint8_t flags;         /* PGOUTPUT_TRUNCATE_* */
	const uint8_t *relids; /* nrels Int32 OIDs, network order: see pgoutput_truncate_relid */
} PgoutputTruncate;

/* A logical decoding message (pg_logical_emit_message). */
typedef struct PgoutputLogicalMessage {
	uint8_t flags; /* PGOUTPUT_MESSAGE_TRANSACTIONAL or 0 */
	uint64_t lsn;
	const char *prefix;
	uint32_t content_len;
	const uint8_t *content; /* NULL when content_len is 0 */
} PgoutputLogicalMessage;

typedef struct PgoutputStreamStart {
	uint32_t xid;
	bool first_segment;
} PgoutputStreamStart;

typedef struct PgoutputStreamAbort {
	uint32_t xid;
	uint32_t subxid; /* == xid when the whole transaction aborted */
	/* Protocol 4 with streaming = parallel only; the message length tells. */
	bool has_abort_info;
	uint64_t abort_lsn;
	int64_t abort_time;
} PgoutputStreamAbort;

/* Begin Prepare, Prepare and Stream Prepare. */
typedef struct PgoutputPrepare {
	uint64_t prepare_lsn;
	uint64_t end_lsn;
	int64_t prepare_time;
	uint32_t xid;
	const char *gid;
} PgoutputPrepare;

typedef struct PgoutputCommitPrepared {
	uint64_t commit_lsn;
	uint64_t end_lsn;
	int64_t commit_time;
	uint32_t xid;
	const char *gid;
} PgoutputCommitPrepared;

typedef struct PgoutputRollbackPrepared {
	uint64_t prepare_end_lsn;
	uint64_t rollback_end_lsn;
	int64_t prepare_time;
	int64_t rollback_time;
	uint32_t xid;
	const char *gid;
} PgoutputRollbackPrepared;

/*
 * One decoded message: type says which union member is valid.  The columns
 * of Relation and TupleData live inside the struct, up to
 * PGOUTPUT_MAX_COLUMNS each, rather than in a scratch array passed beside
 * it: one object to keep, no second cap to agree on, and a copy of the
 * struct stays valid (it points only into the message bytes, never into
 * itself).  The price is size, about 53 KB: keep one per replication
 * connection and reuse it, rather than putting it on a small stack.
 */
typedef struct PgoutputMessage {
	uint8_t type; /* PGOUTPUT_BEGIN ... PGOUTPUT_STREAM_PREPARE */
	/*
	 * For a change inside a streamed block (Relation, Type, Insert, Update,
	 * Delete, Truncate, Message): the xid of the (sub)transaction it was
	 * made in, Stream Start's xid or, inside a savepoint or an exception
	 * block, a subtransaction's.  A Stream Abort whose subxid matches
	 * discards it.  0 outside streamed blocks.
	 */
	uint32_t stream_xid;
	union {
		PgoutputBegin begin;                        /* B */
		PgoutputCommit commit;                      /* C, c */
		PgoutputOrigin origin;                      /* O */
		PgoutputRelation relation;                  /* R */
		PgoutputType typ;                           /* Y */
		PgoutputInsert insert;                      /* I */
		PgoutputUpdate update;                      /* U */
		PgoutputDelete delete;                      /* D */
		PgoutputTruncate truncate;                  /* T */
		PgoutputLogicalMessage message;             /* M */
		PgoutputStreamStart stream_start;           /* S; E has no fields */
		PgoutputStreamAbort stream_abort;           /* A */
		PgoutputPrepare prepare;                    /* b, P, p */
		PgoutputCommitPrepared commit_prepared;     /* K */
		PgoutputRollbackPrepared rollback_prepared; /* r */
	};
} PgoutputMessage;

/*
 * Decodes one pgoutput message (the XLogData payload, starting with its type
 * byte) as sent under proto_version.  in_stream says the message comes
 * between Stream Start and Stream Stop, where the changes carry a leading
 * xid (protocol 2 and later; in_stream with protocol 1 is rejected).  The
 * order of messages (Begin before changes, Stream Start before Stream Stop)
 * is the caller's to check: in_stream only selects the layout.  On failure
 * *out is partly filled and must not be used.
 */
bool pgoutput_decode(const uint8_t *data, size_t len, int proto_version, bool in_stream, PgoutputMessage *out,
		     char *err, size_t errlen) __attribute__((warn_unused_result));

/* Relation i (0 <= i < t->nrels) of a decoded Truncate. */
uint32_t pgoutput_truncate_relid(const PgoutputTruncate *t, int i);

/* "Insert", "Stream Commit"...; "unknown" for other bytes.  For log lines. */
const char *pgoutput_message_name(uint8_t type);

/* The envelope. */

typedef struct XLogData {
	uint64_t data_start;    /* WAL position of the payload */
	uint64_t wal_end;       /* the server's current end of WAL */
	int64_t send_time;      /* microseconds since 2000-01-01 */
	const uint8_t *payload; /* one pgoutput message */
	size_t payload_len;
} XLogData;

typedef struct XLogKeepalive {
	uint64_t wal_end;
	int64_t send_time;
	bool reply_requested; /* answer now, or the server may time us out */
} XLogKeepalive;

/*
 * Both take a whole CopyData payload, its 'w' or 'k' byte included, as
 * PQgetCopyData returns it.
 */
bool pgoutput_parse_xlogdata(const uint8_t *data, size_t len, XLogData *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));
bool pgoutput_parse_keepalive(const uint8_t *data, size_t len, XLogKeepalive *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Writes a standby status update ('r' and its fields) for PQputCopyData and
 * returns its length, PGOUTPUT_STATUS_UPDATE_LEN.  The LSNs are the next
 * byte after what was written, flushed and applied; flushed moves the slot's
 * confirmed_flush_lsn, so it must cover only what is committed on the target.
 */
size_t pgoutput_build_status_update(uint8_t out[PGOUTPUT_STATUS_UPDATE_LEN], uint64_t written, uint64_t flushed,
				    uint64_t applied, int64_t now_us_since_2000, bool reply);

/* LSNs in PostgreSQL's text form, "16/B374D848" (pg_lsn through PG18). */
void lsn_format(uint64_t lsn, char *buf, size_t len);

/* The same form: 1 to 8 hex digits, '/', 1 to 8 hex digits, nothing else. */
bool lsn_parse(const char *s, uint64_t *out) __attribute__((warn_unused_result));

/*
 * Microseconds since 2000-01-01 (PostgreSQL's TimestampTz) to and from
 * microseconds since 1970-01-01.  PostgreSQL's infinities (INT64_MIN and
 * INT64_MAX) map to themselves; values that would overflow saturate to them.
 */
int64_t pgtime_to_unix_us(int64_t pg_us);
int64_t pgtime_from_unix_us(int64_t unix_us);

/* The wall clock as a PostgreSQL timestamp, for status updates. */
int64_t pgtime_now(void);

#endif /* PGHANDOFF_REPLICATOR_PGOUTPUT_H */
