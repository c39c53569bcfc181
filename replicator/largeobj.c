/*
 * Large objects, from the side a follower reads to the side it writes
 * (largeobj.h).  A round:
 *
 *   lock     pg_try_advisory_lock on the writing side: the follower's rounds
 *            and the cutover's last one never interleave, so an older
 *            snapshot never overwrites what a newer one copied;
 *   read     in one REPEATABLE READ snapshot of the reading side, per OID,
 *            md5(owner, grants, every page's pageno:xmin), from
 *            pg_largeobject_metadata and pg_largeobject (no data read);
 *   compare  with the writing side's objects and the signatures recorded
 *            in pghandoff_lo.synced, both in OID order: a merge;
 *   apply    unlink what is gone; write what is new or changed (unlink,
 *            lo_create with the same OID, lo_put page runs read in the same
 *            snapshot, owner, grants, and the signature), several objects a
 *            transaction, up to max_bytes a round.
 *
 * xmin, not the data, tells a change: any write of a page makes a new row
 * version, and xmin is kept when a row is frozen.  The signatures live in an
 * unlogged table: it is not published (so neither direction's follower
 * carries it), and it goes only with a crash of the server holding it, after
 * which every object is copied once more.  Objects the writing side has and
 * the reading side not are unlinked: the database there is a copy.
 */
#include "replicator/largeobj.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "replicator/fence.h"
#include "replicator/follow.h"
#include "replicator/replicate.h"
#include "replicator/status.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * The writing session's settings: its own application_name, so it is told
 * apart from the apply session in pg_stat_activity (and by whoever counts
 * that one).
 */
#define LARGEOBJ_SESSION "SET synchronous_commit = off; SET application_name = 'pghandoff large objects'"

/* "pghoLO": one lock per database, taken by every round that writes. */
#define LO_LOCK_KEY "110442207694927"
/* Pages read from the reading side per query: 1 MB with the default block size. */
#define LO_PAGES_PER_READ 512
#define LO_PAGES_PER_READ_SQL "512"
/* A transaction on the writing side holds about this much, or this many objects. */
#define LO_TXN_BYTES (8 << 20)
#define LO_TXN_OBJECTS 256
/* Larger objects without a signature are copied rather than compared (lo_get reads them whole). */
#define LO_VERIFY_MAX_BYTES ((int64_t) 64 << 20)
/* A follower's round copies about this much; the rest follows at once. */
#define LO_FOLLOW_ROUND_BYTES ((int64_t) 64 << 20)

static const char sql_signatures[] =
	"SELECT m.oid, coalesce(p.pages, 0), "
	"  md5(pg_catalog.pg_get_userbyid(m.lomowner) || '/' || coalesce(m.lomacl::text, '') || '/' || "
	"      coalesce(p.sig, '')) "
	"FROM pg_catalog.pg_largeobject_metadata m LEFT JOIN "
	"  (SELECT loid, count(*) AS pages, "
	"     pg_catalog.string_agg(pageno::text || ':' || xmin::text, ',' ORDER BY pageno) AS sig "
	"   FROM pg_catalog.pg_largeobject GROUP BY loid) p ON p.loid = m.oid "
	"ORDER BY m.oid";

static const char sql_no_signatures[] = "SELECT 0::oid, 0, '' WHERE false";

/* The writing side: every object, and every recorded signature, by OID. */
static const char sql_written_with_state[] =
	"SELECT coalesce(m.oid, s.loid), m.oid IS NOT NULL, s.sig "
	"FROM pg_catalog.pg_largeobject_metadata m FULL JOIN pghandoff_lo.synced s ON s.loid = m.oid ORDER BY 1";
static const char sql_written[] = "SELECT oid, true, NULL FROM pg_catalog.pg_largeobject_metadata ORDER BY 1";

static const char sql_make_state[] =
	"CREATE SCHEMA IF NOT EXISTS pghandoff_lo; "
	"COMMENT ON SCHEMA pghandoff_lo IS 'pghandoff: which large objects are in step with the other side'; "
	"CREATE UNLOGGED TABLE IF NOT EXISTS pghandoff_lo.synced (loid oid PRIMARY KEY, sig text NOT NULL)";

/* Owner, and the statements that give the object its grants: lomacl NULL keeps the default. */
static const char sql_object_meta[] =
	"SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(m.lomowner)), "
	"  CASE WHEN m.lomacl IS NULL THEN '' ELSE "
	"    format('REVOKE ALL ON LARGE OBJECT %s FROM %I; ', m.oid, pg_catalog.pg_get_userbyid(m.lomowner)) || "
	"    coalesce((SELECT pg_catalog.string_agg(format('GRANT %s ON LARGE OBJECT %s TO %s%s; ', a.privilege_type, "
	"       m.oid, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE "
	"       pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END, "
	"       CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), '') "
	"     FROM pg_catalog.aclexplode(m.lomacl) a), '') END "
	"FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = $1";

static const char sql_pages[] = "SELECT pageno, encode(data, 'hex') FROM pg_catalog.pg_largeobject "
				"WHERE loid = $1 AND pageno >= $2 ORDER BY pageno LIMIT " LO_PAGES_PER_READ_SQL;

typedef enum LoAction {
	LO_COPY,   /* new or changed on the reading side */
	LO_UNLINK, /* gone from the reading side */
	LO_FORGET, /* a signature of an object neither side has */
	LO_VERIFY, /* on both sides, no signature recorded: compared, copied only if it differs */
} LoAction;

typedef struct LoWork {
	unsigned int oid;
	LoAction action;
	bool exists;     /* the writing side has the object */
	int64_t pages;   /* LO_COPY, LO_VERIFY: pages on the reading side */
	const char *sig; /* LO_COPY, LO_VERIFY: the reading side's signature (into the source's result) */
} LoWork;

/* Everything one round keeps between its steps. */
typedef struct LoRun {
	ReplConn *from, *to;
	LargeObjRound *round;
	int lob_size;        /* bytes per pg_largeobject page on the reading side */
	bool state_exists;   /* pghandoff_lo.synced is on the writing side */
	bool replica_role;   /* SET LOCAL session_replication_role = replica is allowed on the writing side */
	bool to_in_xact;     /* a transaction is open on the writing side */
	int64_t xact_bytes;  /* bytes written in it */
	int xact_objects;    /* objects written or unlinked in it */
	int pending_in_step; /* objects written in it: in step once it commits */
	int64_t work_bytes;  /* copied or compared this round, against max_bytes */
	LoWork *work;
	int nwork;
} LoRun;

static bool
past_deadline(LoRun *r)
{
	if (r->round->deadline <= 0 || clock_monotonic() < r->round->deadline)
		return false;
	log_error(r->to->subject, "large objects: the diff did not end in time (%d copied, %d unlinked so far)",
		  r->round->copied, r->round->unlinked);
	return true;
}

static bool
query_bool(ReplConn *conn, const char *sql, int nparams, const char *const *params, bool *value)
{
	char buf[8];

	if (!repl_query_copy_value(conn, sql, nparams, params, buf, sizeof(buf)))
		return false;
	*value = strcmp(buf, "t") == 0;
	return true;
}

/* Opens the writing side's transaction if none is open; the first write of a round makes the state table. */
static bool
to_begin(LoRun *r)
{
	if (r->to_in_xact)
		return true;
	if (!repl_exec(r->to, "BEGIN"))
		return false;
	r->to_in_xact = true;
	r->xact_bytes = 0;
	r->xact_objects = 0;
	r->pending_in_step = 0;
	/*
	 * Event triggers (the capture of schema changes, ddl.h) would send the
	 * making of pghandoff_lo to the other side as a schema change; in the
	 * replica role they do not fire.
	 */
	if (r->replica_role && !repl_exec(r->to, "SET LOCAL session_replication_role = replica"))
		return false;
	if (!r->state_exists) {
		if (!repl_exec(r->to, sql_make_state))
			return false;
		r->state_exists = true;
	}
	return true;
}

static bool
to_commit(LoRun *r)
{
	if (!r->to_in_xact)
		return true;
	r->to_in_xact = false;
	if (!repl_exec(r->to, "COMMIT"))
		return false;
	r->round->in_step += r->pending_in_step;
	r->pending_in_step = 0;
	return true;
}

/* Writes one run of pages (hex, concatenated) at offset. */
static bool
put_run(LoRun *r, const char *oid, int64_t offset, const StrBuf *hex)
{
	char off[32];
	const char *params[3] = {oid, off, strbuf_str(hex)};

	if (hex->failed) {
		log_error(r->to->subject, "large object %s: out of memory", oid);
		return false;
	}
	snprintf(off, sizeof(off), "%lld", (long long) offset);
	return repl_exec_params(r->to, "SELECT pg_catalog.lo_put($1::oid, $2::bigint, decode($3, 'hex'))", 3, params);
}

/* The object's signature on the target, in the transaction that made it equal. */
static bool
record_in_step(LoRun *r, const char *oid, const char *sig)
{
	const char *state[2] = {oid, sig};

	return repl_exec_params(r->to,
				"INSERT INTO pghandoff_lo.synced VALUES ($1::oid, $2) "
				"ON CONFLICT (loid) DO UPDATE SET sig = excluded.sig",
				2, state);
}

/*
 * Copies one object: its pages are read in runs of contiguous full pages
 * (a short page, or a hole, starts a new run at its own offset: holes read
 * as zeros on both sides).
 */
static bool
copy_object(LoRun *r, const LoWork *w)
{
	char oid[16], from_page[24], sql[160];
	const char *params[2] = {oid, from_page};
	PGresult *res;
	StrBuf hex, stmt;
	int64_t next_page = 0, run_offset = -1, expect = -1;
	bool ok = true, more = true;

	snprintf(oid, sizeof(oid), "%u", w->oid);
	if (!to_begin(r))
		return false;
	if (w->exists && !repl_exec_params(r->to, "SELECT pg_catalog.lo_unlink($1::oid)", 1, params))
		return false;
	if (!repl_exec_params(r->to, "SELECT pg_catalog.lo_create($1::oid)", 1, params))
		return false;
	strbuf_init(&hex);
	while (ok && more) {
		int i, n;

		snprintf(from_page, sizeof(from_page), "%lld", (long long) next_page);
		if (past_deadline(r) || !repl_query(r->from, sql_pages, 2, params, &res)) {
			ok = false;
			break;
		}
		n = PQntuples(res);
		more = n == LO_PAGES_PER_READ;
		for (i = 0; ok && i < n; i++) {
			int64_t pageno = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			const char *data = PQgetvalue(res, i, 1);
			size_t len = strlen(data);

			if (run_offset >= 0 && pageno != expect) {
				ok = put_run(r, oid, run_offset, &hex);
				strbuf_reset(&hex);
				run_offset = -1;
			}
			if (run_offset < 0)
				run_offset = pageno * r->lob_size;
			strbuf_append_len(&hex, data, len);
			r->round->bytes += (int64_t) len / 2;
			r->work_bytes += (int64_t) len / 2;
			r->xact_bytes += (int64_t) len / 2;
			/* A short page ends the run: what follows it starts at its own offset. */
			expect = (int64_t) len / 2 == r->lob_size ? pageno + 1 : -1;
			next_page = pageno + 1;
			if (ok && hex.len >= (size_t) 2 * LO_PAGES_PER_READ * (size_t) r->lob_size) {
				ok = put_run(r, oid, run_offset, &hex);
				strbuf_reset(&hex);
				run_offset = expect >= 0 ? expect * r->lob_size : -1;
			}
		}
		PQclear(res);
	}
	if (ok && run_offset >= 0 && hex.len > 0)
		ok = put_run(r, oid, run_offset, &hex);
	strbuf_free(&hex);
	if (!ok)
		return false;
	/* Owner and grants as the reading side has them (the roles must exist on both sides). */
	if (!repl_query(r->from, sql_object_meta, 1, params, &res))
		return false;
	if (PQntuples(res) != 1) {
		/* Unlinked since the signatures were read: impossible inside one snapshot. */
		log_error(r->from->subject, "large object %s vanished from the snapshot", oid);
		PQclear(res);
		return false;
	}
	strbuf_init(&stmt);
	snprintf(sql, sizeof(sql), "ALTER LARGE OBJECT %s OWNER TO ", oid);
	strbuf_append(&stmt, sql);
	strbuf_append(&stmt, PQgetvalue(res, 0, 0));
	strbuf_append(&stmt, "; ");
	strbuf_append(&stmt, PQgetvalue(res, 0, 1));
	PQclear(res);
	ok = !stmt.failed && repl_exec(r->to, strbuf_str(&stmt));
	strbuf_free(&stmt);
	if (!ok)
		return false;
	if (!record_in_step(r, oid, w->sig))
		return false;
	r->round->copied++;
	r->pending_in_step++;
	r->xact_objects++;
	return true;
}

static bool
unlink_object(LoRun *r, const LoWork *w)
{
	char oid[16];
	const char *params[1] = {oid};

	snprintf(oid, sizeof(oid), "%u", w->oid);
	if (!to_begin(r))
		return false;
	if (w->exists && !repl_exec_params(r->to, "SELECT pg_catalog.lo_unlink($1::oid)", 1, params))
		return false;
	if (r->state_exists &&
	    !repl_exec_params(r->to, "DELETE FROM pghandoff_lo.synced WHERE loid = $1::oid", 1, params))
		return false;
	if (w->action == LO_UNLINK)
		r->round->unlinked++;
	r->xact_objects++;
	return true;
}

static bool
add_work(LoRun *r, int *cap, const LoWork *w)
{
	if (r->nwork == *cap) {
		int grown_cap = *cap ? *cap * 2 : 256;
		LoWork *grown = realloc(r->work, sizeof(LoWork) * (size_t) grown_cap);

		if (!grown) {
			log_error(r->to->subject, "large objects: out of memory");
			return false;
		}
		r->work = grown;
		*cap = grown_cap;
	}
	r->work[r->nwork++] = *w;
	return true;
}

/*
 * The merge of the reading side's signatures (src) with the writing side's
 * objects and recorded signatures (dst), both ordered by OID.
 */
static bool
plan_work(LoRun *r, const PGresult *src, const PGresult *dst)
{
	int i = 0, j = 0, ns = PQntuples(src), nd = PQntuples(dst), cap = 0;

	while (i < ns || j < nd) {
		int64_t so = i < ns ? (int64_t) strtoul(PQgetvalue(src, i, 0), NULL, 10) : INT64_MAX;
		int64_t dsto = j < nd ? (int64_t) strtoul(PQgetvalue(dst, j, 0), NULL, 10) : INT64_MAX;
		LoWork w;

		memset(&w, 0, sizeof(w));
		if (so < dsto) {
			w.oid = (unsigned int) so;
			w.action = LO_COPY;
			w.pages = strtoll(PQgetvalue(src, i, 1), NULL, 10);
			w.sig = PQgetvalue(src, i, 2);
			i++;
		} else if (dsto < so) {
			w.oid = (unsigned int) dsto;
			w.exists = strcmp(PQgetvalue(dst, j, 1), "t") == 0;
			w.action = w.exists ? LO_UNLINK : LO_FORGET;
			j++;
		} else {
			w.oid = (unsigned int) so;
			w.exists = strcmp(PQgetvalue(dst, j, 1), "t") == 0;
			if (w.exists && !PQgetisnull(dst, j, 2) &&
			    strcmp(PQgetvalue(dst, j, 2), PQgetvalue(src, i, 2)) == 0) {
				r->round->in_step++;
				i++;
				j++;
				continue;
			}
			/* Unknown rather than different (a record lost, or made by the other direction): compare first. */
			w.action = w.exists && PQgetisnull(dst, j, 2) ? LO_VERIFY : LO_COPY;
			w.pages = strtoll(PQgetvalue(src, i, 1), NULL, 10);
			w.sig = PQgetvalue(src, i, 2);
			i++;
			j++;
		}
		if (!add_work(r, &cap, &w))
			return false;
	}
	return true;
}

/*
 * An object both sides have, with no signature recorded: after a cutover
 * the other direction's diff finds every object so, equal.  Contents,
 * owner and grants are compared; only a difference is copied.
 */
static bool
verify_object(LoRun *r, const LoWork *w)
{
	static const char sql[] = "SELECT md5(pg_catalog.lo_get(m.oid)) || '/' || "
				  "pg_catalog.pg_get_userbyid(m.lomowner) || '/' || coalesce(m.lomacl::text, '') "
				  "FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = $1::oid";
	char oid[16], mine[1024], theirs[1024];
	const char *params[1] = {oid};

	if (w->pages * r->lob_size > LO_VERIFY_MAX_BYTES)
		return copy_object(r, w);
	snprintf(oid, sizeof(oid), "%u", w->oid);
	if (!repl_query_copy_value(r->from, sql, 1, params, mine, sizeof(mine)) ||
	    !repl_query_copy_value(r->to, sql, 1, params, theirs, sizeof(theirs)))
		return false;
	r->work_bytes += 2 * w->pages * r->lob_size;
	/* Grants too long for the buffer compare as different: the object is copied, which is never wrong. */
	if (strcmp(mine, theirs) != 0 || strlen(mine) >= sizeof(mine) - 1)
		return copy_object(r, w);
	if (!to_begin(r))
		return false;
	if (!record_in_step(r, oid, w->sig))
		return false;
	r->round->verified++;
	r->pending_in_step++;
	r->xact_objects++;
	return true;
}

/* The work planned, in transactions of a bounded size. */
static bool
apply_work(LoRun *r)
{
	int k;

	for (k = 0; k < r->nwork; k++) {
		const LoWork *w = &r->work[k];

		if (past_deadline(r))
			return false;
		/* A follower asked to stop keeps what it committed; the next one carries on. */
		if (replicate_stop_requested) {
			r->round->more = true;
			break;
		}
		if ((w->action == LO_COPY || w->action == LO_VERIFY) && r->round->max_bytes > 0 && r->work_bytes > 0 &&
		    r->work_bytes + w->pages * r->lob_size > r->round->max_bytes) {
			r->round->more = true;
			break;
		}
		if (w->action == LO_COPY             ? !copy_object(r, w)
			    : w->action == LO_VERIFY ? !verify_object(r, w)
						     : !unlink_object(r, w))
			return false;
		if ((r->xact_bytes >= LO_TXN_BYTES || r->xact_objects >= LO_TXN_OBJECTS) && !to_commit(r))
			return false;
	}
	return to_commit(r);
}

/* The writing side's lock: tried once without a deadline, else until it. */
static bool
take_lock(LoRun *r, bool *taken)
{
	*taken = false;
	for (;;) {
		if (!query_bool(r->to, "SELECT pg_catalog.pg_try_advisory_lock(" LO_LOCK_KEY ")", 0, NULL, taken))
			return false;
		if (*taken || r->round->deadline <= 0)
			return true;
		if (past_deadline(r))
			return false;
		{
			struct timespec tick = {0, 20 * 1000 * 1000};

			nanosleep(&tick, NULL);
		}
	}
}

static bool
read_sides(LoRun *r, PGresult **src, PGresult **dst)
{
	char buf[16];
	const LargeObjRound *round = r->round;
	bool any;

	*src = *dst = NULL;
	if (!repl_query_copy_value(r->from, "SELECT current_setting('block_size')::int / 4", 0, NULL, buf, sizeof(buf)))
		return false;
	r->lob_size = (int) strtol(buf, NULL, 10);
	if (r->lob_size <= 0) {
		log_error(r->from->subject, "large objects: unexpected page size %s", buf);
		return false;
	}
	if (!query_bool(r->to, "SELECT pg_catalog.to_regclass('pghandoff_lo.synced') IS NOT NULL", 0, NULL,
			&r->state_exists) ||
	    !query_bool(r->to, "SELECT pg_catalog.current_setting('is_superuser') = 'on'", 0, NULL, &r->replica_role))
		return false;
	if (!repl_exec(r->from, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
		return false;
	if (round->snapshot) {
		char set[160];

		snprintf(set, sizeof(set), "SET TRANSACTION SNAPSHOT '%s'", round->snapshot);
		if (!repl_exec(r->from, set))
			return false;
	}
	/*
	 * pg_largeobject is read only when there are objects: by default only
	 * superusers may read it, and a database without large objects must not
	 * need that (pghandoff check says when it is needed).
	 */
	if (!query_bool(r->from, "SELECT EXISTS (SELECT FROM pg_catalog.pg_largeobject_metadata)", 0, NULL, &any))
		return false;
	return repl_query(r->from, any ? sql_signatures : sql_no_signatures, 0, NULL, src) &&
		repl_query(r->to, r->state_exists ? sql_written_with_state : sql_written, 0, NULL, dst);
}

bool
largeobj_sync(ReplConn *from, ReplConn *to, LargeObjRound *round)
{
	LoRun r;
	PGresult *src = NULL, *dst = NULL;
	bool locked = false, ok;

	memset(&r, 0, sizeof(r));
	r.from = from;
	r.to = to;
	r.round = round;
	round->total = round->in_step = round->copied = round->unlinked = round->verified = 0;
	round->bytes = 0;
	round->more = false;
	if (!round->diff_only) {
		if (!take_lock(&r, &locked))
			return false;
		if (!locked) {
			log_debug(to->subject, "large objects: another round holds the %s, this one is left out",
				  to->role);
			round->more = true;
			return true;
		}
	}
	ok = read_sides(&r, &src, &dst) && plan_work(&r, src, dst);
	if (ok) {
		round->total = PQntuples(src);
		if (round->diff_only) {
			int k;

			for (k = 0; k < r.nwork; k++) {
				if (r.work[k].action == LO_COPY || r.work[k].action == LO_VERIFY)
					round->copied++;
				else if (r.work[k].action == LO_UNLINK)
					round->unlinked++;
			}
		} else {
			ok = apply_work(&r);
		}
	}
	if (r.to_in_xact && to->conn && !repl_exec(to, "ROLLBACK")) {
		/* already logged */
	}
	if (from->conn && PQtransactionStatus(from->conn) != PQTRANS_IDLE && !repl_exec(from, "ROLLBACK")) {
		/* already logged */
	}
	if (locked && to->conn && !repl_exec(to, "SELECT pg_catalog.pg_advisory_unlock(" LO_LOCK_KEY ")")) {
		/* already logged; the lock goes with the session */
	}
	PQclear(src);
	PQclear(dst);
	free(r.work);
	return ok;
}

bool
largeobj_forget(ReplConn *conn)
{
	/* READ WRITE: the side may be fenced (the source after a cutover, the target after a rollback). */
	return repl_exec(conn,
			 "BEGIN READ WRITE; SET LOCAL client_min_messages = warning; "
			 "DROP SCHEMA IF EXISTS pghandoff_lo CASCADE; COMMIT");
}

bool
largeobj_copy_initial(const Config *config, const DatabaseMapping *db, const char *snapshot, const char *subject)
{
	ReplConn from = {0}, to = {0};
	LargeObjRound round;
	char sub[200];
	double t0 = clock_monotonic();
	bool ok;

	snprintf(sub, sizeof(sub), "%s large objects", subject);
	memset(&round, 0, sizeof(round));
	round.snapshot = snapshot;
	ok = repl_connect(&from, &config->source, db->name, false, sub) &&
		repl_connect(&to, &config->target, db->target_name, false, sub) && repl_exec(&to, LARGEOBJ_SESSION) &&
		largeobj_sync(&from, &to, &round);
	if (ok && round.more) {
		/* Stopped by request (the next run copies again), or the lock was taken. */
		if (!replicate_stop_requested)
			log_error(sub, "the %s's large objects are being written by another pghandoff", to.role);
		ok = false;
	}
	if (ok && (round.total > 0 || round.unlinked > 0))
		log_info(sub, "copied %d large object(s), %lld MB, in %.1f s; %d unlinked on the target", round.copied,
			 (long long) (round.bytes >> 20), clock_monotonic() - t0, round.unlinked);
	repl_close(&from);
	repl_close(&to);
	return ok;
}

/* ---- the periodic diff while streaming ---- */

struct LargeObjFollower {
	const Config *config;
	ReplDirection dir;
	char subject[200];
	ReplConn from, to;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stop; /* under lock */
	bool stood_down;
	int last_total, last_in_step;
	int64_t rounds; /* rounds done */
};

/* Whether this direction must leave the large objects alone for now (see largeobj.h). */
static bool
stands_down(LargeObjFollower *f, bool *down)
{
	const char *params[1] = {f->dir.reverse ? "" : f->dir.skip_origin};
	PGresult *res;
	bool fenced, prepared;

	if (!repl_query(&f->from,
			"SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, "
			"  pg_catalog.unnest(s.setconfig) AS c WHERE s.setrole = 0 AND c LIKE 'pghandoff.fenced\\_at=%' "
			"  AND s.setdatabase = (SELECT oid FROM pg_catalog.pg_database "
			"                       WHERE datname = pg_catalog.current_database())), "
			"  CASE WHEN $1 = '' THEN false ELSE pg_catalog.pg_replication_origin_oid($1) IS NOT NULL END",
			1, params, &res))
		return false;
	fenced = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	prepared = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	*down = fenced || prepared;
	if (*down && !f->stood_down)
		log_info(f->subject, "%s: the diff stands down, the cutover's own diff has the last word",
			 fenced ? (f->dir.reverse ? "the target is fenced" : "the source is fenced")
				: "the way back from the target is prepared");
	else if (!*down && f->stood_down)
		log_info(f->subject, "the %s takes writes again: the diff goes on", f->dir.from->role);
	f->stood_down = *down;
	return true;
}

static bool
follower_connected(LargeObjFollower *f)
{
	if (f->from.conn && PQstatus(f->from.conn) == CONNECTION_OK && f->to.conn &&
	    PQstatus(f->to.conn) == CONNECTION_OK)
		return true;
	repl_close(&f->from);
	repl_close(&f->to);
	/* In reverse the side written is the fenced source: this session is exempt, as the follower's. */
	return repl_connect(&f->from, f->dir.from, f->dir.from_db, false, f->subject) &&
		repl_connect(&f->to, f->dir.to, f->dir.to_db, false, f->subject) &&
		repl_exec(&f->to, "SET default_transaction_read_only = off") && repl_exec(&f->to, LARGEOBJ_SESSION);
}

/* One round; *again: work is left, the next round starts at once. */
static void
follower_round(LargeObjFollower *f, bool *again)
{
	LargeObjRound round;
	bool down;

	*again = false;
	if (!follower_connected(f) || !stands_down(f, &down)) {
		repl_close(&f->from);
		repl_close(&f->to);
		return; /* logged; tried again next interval */
	}
	if (down)
		return;
	memset(&round, 0, sizeof(round));
	round.max_bytes = LO_FOLLOW_ROUND_BYTES;
	if (!largeobj_sync(&f->from, &f->to, &round)) {
		log_warning(f->subject, "the diff failed; it is tried again in the next round");
		repl_close(&f->from);
		repl_close(&f->to);
		return;
	}
	if (round.copied || round.unlinked || round.verified)
		log_info(f->subject, "%d copied (%lld kB), %d unlinked, %d found equal; %d of %d in step%s",
			 round.copied, (long long) (round.bytes >> 10), round.unlinked, round.verified, round.in_step,
			 round.total, round.more ? ", more next round" : "");
	else if (f->rounds == 0 || round.total != f->last_total || round.in_step != f->last_in_step)
		log_debug(f->subject, "%s%d of %d in step", f->rounds == 0 ? "first diff: " : "", round.in_step,
			  round.total);
	f->rounds++;
	f->last_total = round.total;
	f->last_in_step = round.in_step;
	if (f->dir.status)
		status_large_objects(f->dir.status, round.total, round.in_step);
	*again = round.more;
}

static void *
follower_main(void *arg)
{
	LargeObjFollower *f = arg;
	double interval = (double) f->config->replication.large_object_sync_interval / 1e6;
	double next = clock_monotonic();

	for (;;) {
		bool stop, again;

		pthread_mutex_lock(&f->lock);
		/* Woken by largeobj_follow_stop; a stop signal is seen within a second. */
		while (!f->stop && !replicate_stop_requested && clock_monotonic() < next) {
			struct timespec until;
			double wait = next - clock_monotonic();

			clock_gettime(CLOCK_REALTIME, &until);
			if (wait > 1.0)
				wait = 1.0;
			until.tv_sec += (time_t) wait;
			until.tv_nsec += (long) ((wait - (double) (time_t) wait) * 1e9);
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			(void) pthread_cond_timedwait(&f->wake, &f->lock, &until);
		}
		stop = f->stop || replicate_stop_requested;
		pthread_mutex_unlock(&f->lock);
		if (stop)
			break;
		follower_round(f, &again);
		next = clock_monotonic() + (again ? 0.0 : interval);
	}
	repl_close(&f->from);
	repl_close(&f->to);
	return NULL;
}

LargeObjFollower *
largeobj_follow_start(const Config *config, const ReplDirection *dir, const char *subject)
{
	LargeObjFollower *f;
	int rc;

	if (config->replication.large_object_sync_interval <= 0)
		return NULL;
	f = calloc(1, sizeof(*f));
	if (!f) {
		log_error(subject, "out of memory");
		return NULL;
	}
	f->config = config;
	f->dir = *dir;
	snprintf(f->subject, sizeof(f->subject), "%s large objects", subject);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->wake, NULL);
	rc = pthread_create(&f->thread, NULL, follower_main, f);
	if (rc != 0) {
		log_error(subject, "could not start the diff of large objects: %s", strerror(rc));
		pthread_mutex_destroy(&f->lock);
		pthread_cond_destroy(&f->wake);
		free(f);
		return NULL;
	}
	return f;
}

void
largeobj_follow_stop(LargeObjFollower *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->wake);
	free(f);
}
