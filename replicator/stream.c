/*
 * The streaming loop, after pg_recvlogical.c: non-blocking PQgetCopyData,
 * never sleeping past the next feedback deadline, keepalives answered when
 * the server asks, and three positions kept apart: received (written), and
 * committed on the target (flushed = applied).  Only the latter moves the
 * slot, so the source keeps every change the target does not have yet.
 * In reverse (after a cutover) the two swap roles: see ReplDirection.
 */
#include "replicator/stream.h"
#include "common/clock.h"
#include "replicator/hold.h"
#include "replicator/status.h"
#include "common/log.h"
#include "replicator/apply.h"
#include "replicator/fence.h"
#include "replicator/pgoutput.h"
#include "replicator/sequences.h"
#include "replicator/spool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#define FEEDBACK_INTERVAL_S 10.0

typedef struct Stream {
	const Config *config;
	const ReplDirection *dir;
	ReplConn *repl;
	ReplConn from;              /* a plain connection to the slot's side, for sequences and slot checks */
	bool sequences_handed_over; /* the other direction exists: sequences are no longer ours to copy */
	const char *subject;
	Applier applier;
	PgoutputMessage *msg; /* large: one per stream, reused */
	uint64_t received_lsn;
	uint64_t wal_end;       /* the newest end of WAL the server told us about */
	int64_t last_commit_us; /* unix time of the last source commit seen */
	double last_feedback;
	double last_housekeeping;
	int proto_version;
	Spool spool;        /* streamed transactions not yet committed (protocol 2) */
	bool in_block;      /* between Stream Start and Stream Stop */
	uint32_t block_xid; /* in_block: the transaction being streamed */
	Hold hold;          /* `pghandoff verify` (forward only) */
	char *stash;        /* HOLD_HELD: the first message past the hold, read but not applied */
	int stash_len;
	double last_hold_ping;
	FenceWatch fence;
	uint64_t fence_passed; /* the commit LSN of the last transaction the fence let through */
} Stream;

static bool
send_feedback(Stream *s, bool reply)
{
	uint8_t buf[PGOUTPUT_STATUS_UPDATE_LEN];
	uint64_t flushed;
	size_t len;

	if (!applier_update_flushed(&s->applier))
		return false;
	flushed = s->applier.flushed_lsn;

	/*
	 * With nothing received beyond what the target has, the received position
	 * is safe to confirm too: it lets the slot move on while the source only
	 * writes to tables that are not published.
	 */
	if (!s->applier.target_open && !s->applier.in_source_xact && s->applier.committed_lsn == flushed &&
	    s->received_lsn > flushed)
		flushed = s->received_lsn;
	len = pgoutput_build_status_update(buf, s->received_lsn, flushed, flushed, pgtime_now(), reply);
	if (PQputCopyData(s->repl->conn, (const char *) buf, (int) len) != 1 || PQflush(s->repl->conn) != 0) {
		log_error(s->subject, "could not send feedback: %s", PQerrorMessage(s->repl->conn));
		return false;
	}
	s->last_feedback = clock_monotonic();
	return true;
}

static bool
start_streaming(Stream *s, const char *slot, const char *publication, uint64_t start_lsn)
{
	char lsn[LSN_FORMAT_LEN], sql[512];
	PGresult *res;

	lsn_format(start_lsn, lsn, sizeof(lsn));
	/*
	 * From 14 on, protocol 2 with streaming: a transaction larger than the
	 * source's logical_decoding_work_mem arrives while it runs instead of
	 * being spilled to the source's disk and sent at its commit (spool.h).
	 * Protocol 1 works with every source from 10 on.
	 *
	 * Logical messages (pg_logical_emit_message) from 14 on: the cutover's
	 * marker is one, in a transaction with nothing else, and from 15 pgoutput
	 * leaves such a transaction out unless its message is sent.  On 13 it
	 * arrives as an empty Begin/Commit, which moves the origin just as well.
	 */
	s->proto_version = s->repl->version >= 140000 ? PGOUTPUT_PROTO_STREAMING : PGOUTPUT_PROTO_MIN;
	snprintf(sql, sizeof(sql),
		 "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '%d', publication_names '\"%s\"'%s)", slot,
		 lsn, s->proto_version, publication,
		 s->proto_version >= PGOUTPUT_PROTO_STREAMING ? ", messages 'true', streaming 'on'" : "");
	if (!repl_query_while_in_use(s->repl, sql, 0, NULL, PGRES_COPY_BOTH, REPL_IN_USE_WAIT_S, &res))
		return false; /* error already logged */
	PQclear(res);
	log_info(s->subject, "streaming from %s", lsn);
	return true;
}

/* The plain connection to the slot's side, opened again when it was lost. */
static bool
from_connected(Stream *s)
{
	if (s->from.conn && PQstatus(s->from.conn) == CONNECTION_OK)
		return true;
	repl_close(&s->from);
	return repl_connect(&s->from, s->dir->from, s->dir->from_db, false, s->subject);
}

static bool
is_change(const PgoutputMessage *m)
{
	return m->type == PGOUTPUT_INSERT || m->type == PGOUTPUT_UPDATE || m->type == PGOUTPUT_DELETE ||
		m->type == PGOUTPUT_TRUNCATE;
}

/*
 * Before the first change of a transaction that would be applied: a
 * transaction committed after the fence of the side it comes from is
 * refused, and the stream stops (fence.h).  Restarted, the follower meets
 * it again: nothing after it is applied until the fence is lifted, or the
 * origin is moved past it by hand.
 */
static bool
fence_lets_through(Stream *s)
{
	const Applier *ap = &s->applier;
	char lsn[LSN_FORMAT_LEN], fenced[LSN_FORMAT_LEN], what[200];
	bool allowed;

	if (!is_change(s->msg) || !applier_applies(ap) || ap->xact_final_lsn == s->fence_passed)
		return true;
	if (!from_connected(s) || !fence_allows(&s->fence, &s->from, ap->xact_final_lsn, &allowed))
		return false; /* error already logged; retried with the stream */
	if (allowed) {
		s->fence_passed = ap->xact_final_lsn;
		if (s->dir->status && s->dir->status->fence_violation[0])
			status_fence_violation(s->dir->status, "");
		return true;
	}
	lsn_format(ap->xact_final_lsn, lsn, sizeof(lsn));
	lsn_format(s->fence.fenced_at, fenced, sizeof(fenced));
	snprintf(what, sizeof(what), "%s written after fence: transaction %u committed at %s, fenced at %s",
		 s->dir->from->role, ap->xact_xid, lsn, fenced);
	log_error(s->subject,
		  "%s; not applied, and nothing after it until the fence is lifted. A session asked the "
		  "fenced %s for a read-write transaction: what it wrote is on the %s only. To go on without it, "
		  "advance the origin past it on the %s: SELECT pg_replication_origin_advance('%s', '%s')",
		  what, s->dir->from->role, s->dir->from->role, s->dir->to->role, s->dir->origin, lsn);
	if (s->dir->status)
		status_fence_violation(s->dir->status, what);
	return false;
}

/* One spooled message of a streamed transaction, at its Stream Commit. */
static bool
replay_one(void *arg, const uint8_t *data, size_t len)
{
	Stream *s = arg;
	char err[256];

	if (!pgoutput_decode(data, len, s->proto_version, true, s->msg, err, sizeof(err))) {
		log_error(s->subject, "could not decode a spooled pgoutput message: %s", err);
		return false;
	}
	return fence_lets_through(s) && applier_handle(&s->applier, s->msg);
}

/*
 * Stream Commit: the spooled transaction goes through the applier as if it
 * had arrived whole, framed by the Begin and Commit it would have had.  On
 * return s->msg holds the Stream Commit again, for the caller's bookkeeping.
 */
static bool
replay_streamed(Stream *s)
{
	PgoutputCommit commit = s->msg->commit;
	int64_t count = spool_count(&s->spool, commit.xid);
	char lsn[LSN_FORMAT_LEN];

	lsn_format(commit.commit_lsn, lsn, sizeof(lsn));
	log_debug(s->subject, "streamed transaction %u committed at %s: applying its %lld message(s)", commit.xid, lsn,
		  (long long) count);
	s->msg->type = PGOUTPUT_BEGIN;
	s->msg->stream_xid = 0;
	s->msg->begin.final_lsn = commit.commit_lsn;
	s->msg->begin.commit_time = commit.commit_time;
	s->msg->begin.xid = commit.xid;
	if (!applier_handle(&s->applier, s->msg) || !spool_replay(&s->spool, commit.xid, replay_one, s))
		return false;
	s->msg->type = PGOUTPUT_COMMIT;
	s->msg->stream_xid = 0;
	s->msg->commit = commit;
	if (!applier_handle(&s->applier, s->msg))
		return false;
	s->msg->type = PGOUTPUT_STREAM_COMMIT;
	return true;
}

/*
 * A decoded message in s->msg (its bytes at data): streamed blocks go to the
 * spool, everything else to the applier.
 */
static bool
handle_message(Stream *s, const uint8_t *data, size_t len)
{
	const PgoutputMessage *m = s->msg;

	switch (m->type) {
	case PGOUTPUT_STREAM_START:
		if (s->in_block) {
			log_error(s->subject, "Stream Start of transaction %u inside the block of %u",
				  m->stream_start.xid, s->block_xid);
			return false;
		}
		if (!spool_start(&s->spool, m->stream_start.xid, m->stream_start.first_segment))
			return false;
		s->in_block = true;
		s->block_xid = m->stream_start.xid;
		return true;
	case PGOUTPUT_STREAM_STOP:
		if (!s->in_block) {
			log_error(s->subject, "Stream Stop outside a streamed block");
			return false;
		}
		s->in_block = false;
		return spool_stop(&s->spool, s->block_xid);
	case PGOUTPUT_STREAM_ABORT:
	case PGOUTPUT_STREAM_COMMIT:
		if (s->in_block) {
			log_error(s->subject, "%s inside a streamed block", pgoutput_message_name(m->type));
			return false;
		}
		if (m->type == PGOUTPUT_STREAM_ABORT)
			return spool_abort(&s->spool, m->stream_abort.xid, m->stream_abort.subxid);
		return replay_streamed(s);
	default:
		if (s->in_block)
			return spool_append(&s->spool, s->block_xid, m->stream_xid, data, len);
		return fence_lets_through(s) && applier_handle(&s->applier, s->msg);
	}
}

static bool
handle_copy_data(Stream *s, const uint8_t *data, size_t len)
{
	char err[256];

	if (len > 0 && data[0] == PGOUTPUT_KEEPALIVE) {
		XLogKeepalive ka;

		if (!pgoutput_parse_keepalive(data, len, &ka, err, sizeof(err))) {
			log_error(s->subject, "invalid keepalive: %s", err);
			return false;
		}
		if (ka.wal_end > s->wal_end)
			s->wal_end = ka.wal_end;
		if (ka.wal_end > s->received_lsn && !s->applier.in_source_xact)
			s->received_lsn = ka.wal_end;
		if (ka.reply_requested) {
			if (!applier_flush(&s->applier, true))
				return false;
			return send_feedback(s, false);
		}
		return true;
	}
	if (len > 0 && data[0] == PGOUTPUT_XLOGDATA) {
		XLogData xd;

		if (!pgoutput_parse_xlogdata(data, len, &xd, err, sizeof(err))) {
			log_error(s->subject, "invalid XLogData: %s", err);
			return false;
		}
		if (xd.wal_end > s->wal_end)
			s->wal_end = xd.wal_end;
		if (!pgoutput_decode(xd.payload, xd.payload_len, s->proto_version, s->in_block, s->msg, err,
				     sizeof(err))) {
			log_error(s->subject, "could not decode a pgoutput message at %llX: %s",
				  (unsigned long long) xd.data_start, err);
			return false;
		}
		if (!handle_message(s, xd.payload, xd.payload_len))
			return false;
		if ((s->msg->type == PGOUTPUT_COMMIT || s->msg->type == PGOUTPUT_STREAM_COMMIT) &&
		    s->msg->commit.end_lsn > s->received_lsn)
			s->received_lsn = s->msg->commit.end_lsn;
		if (s->msg->type == PGOUTPUT_COMMIT || s->msg->type == PGOUTPUT_STREAM_COMMIT)
			s->last_commit_us = pgtime_to_unix_us(s->msg->commit.commit_time);
		return true;
	}
	log_error(s->subject, "unexpected message type %d in the replication stream", len > 0 ? data[0] : 0);
	return false;
}

/* Waits for the socket, at most until the next feedback is due. */
static bool
wait_for_data(Stream *s)
{
	int fd = PQsocket(s->repl->conn);
	double left = FEEDBACK_INTERVAL_S - (clock_monotonic() - s->last_feedback);
	struct timeval tv;
	fd_set fds;

	if (left <= 0)
		return send_feedback(s, false);
	if (left > 1.0)
		left = 1.0; /* wake up to notice a stop request */
	FD_ZERO(&fds);
	FD_SET(fd, &fds);
	tv.tv_sec = (time_t) left;
	tv.tv_usec = (suseconds_t) ((left - (double) tv.tv_sec) * 1e6);
	if (select(fd + 1, &fds, NULL, NULL, &tv) < 0 && errno != EINTR) {
		log_error(s->subject, "select: %s", strerror(errno));
		return false;
	}
	if (PQconsumeInput(s->repl->conn) != 1) {
		log_error(s->subject, "replication connection lost: %s", PQerrorMessage(s->repl->conn));
		return false;
	}
	return true;
}

/*
 * Whether the other direction's origin exists on the from side.  Forward,
 * that means a cutover has prepared the way back: the target is where
 * sequences advance now, and copying the fenced source's values over them
 * would move them backwards.  Asked at every housekeeping, since a rollback
 * drops that origin and hands the sequences back.
 */
static bool
sequences_handed_over(Stream *s)
{
	const char *params[1] = {s->dir->skip_origin};
	char buf[8];
	bool now;

	if (!repl_query_copy_value(&s->from, "SELECT pg_replication_origin_oid($1) IS NOT NULL", 1, params, buf,
				   sizeof(buf)))
		return true; /* unknown: copy nothing this time */
	now = strcmp(buf, "t") == 0;
	if (now != s->sequences_handed_over)
		log_info(s->subject,
			 now ? "origin %s exists on the source, the way back from the target is prepared: "
			       "sequences are no longer copied to the target"
			     : "origin %s is gone from the source: sequences are copied to the target again",
			 s->dir->skip_origin);
	s->sequences_handed_over = now;
	return now;
}

/*
 * Every sequence_sync_interval: sequence values to the target, and a loud
 * warning while the slot holds more WAL than slot_retention_warning.
 * Failures here are logged and retried next time; they never stop streaming.
 *
 * In reverse no sequences are copied: the cutover sets the source's at a
 * rollback, and while clients are on the target nobody uses them.
 */
static void
housekeeping(Stream *s)
{
	const char *params[1] = {s->dir->slot};
	PGresult *res;
	int count;

	s->last_housekeeping = clock_monotonic();
	if (!from_connected(s))
		return;
	if (!s->dir->reverse && !s->applier.target_open && !sequences_handed_over(s) &&
	    sequences_sync(&s->from, s->applier.target, &count))
		log_debug(s->subject, "%d sequence(s) copied to the target", count);
	if (repl_query(&s->from,
		       "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots "
		       "WHERE slot_name = $1",
		       1, params, &res)) {
		if (PQntuples(res) == 1) {
			long long held = strtoll(PQgetvalue(res, 0, 0), NULL, 10);

			if (held > s->config->replication.slot_retention_warning)
				log_warning(s->subject,
					    "slot %s holds %lld MB of WAL on the %s, more than slot_retention_warning: "
					    "the follower is behind, or stopped; %s removes the slot "
					    "of an abandoned migration",
					    s->dir->slot, held >> 20, s->dir->from->role, s->dir->drop_command);
		}
		PQclear(res);
	}
}

/* HOLD_APPLYING: everything committed before the hold's LSN is applied; export the target's snapshot. */
static bool
hold_take_snapshot(Stream *s)
{
	Hold *h = &s->hold;
	char subject[200], id[128], lsn[LSN_FORMAT_LEN];

	if (!applier_flush(&s->applier, true))
		return false;
	snprintf(subject, sizeof(subject), "%s verify", s->subject);
	if (!repl_connect(&h->snapshot, s->dir->to, s->dir->to_db, false, subject) ||
	    !repl_exec(&h->snapshot, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") ||
	    !repl_query_copy_value(&h->snapshot, "SELECT pg_export_snapshot()", 0, NULL, id, sizeof(id))) {
		repl_close(&h->snapshot);
		h->state = HOLD_NONE;
		(void) hold_answer(h, "failed could not export a snapshot of the %s", s->dir->to->role);
		return true; /* the verify fails; streaming goes on */
	}
	lsn_format(h->at, lsn, sizeof(lsn));
	h->state = HOLD_HELD;
	log_info(s->subject, "verify: holding at %s, %s snapshot %s exported", lsn, s->dir->to->role, id);
	(void) hold_answer(h, "held %s %s", lsn, id);
	return true;
}

static bool
hold_release(Stream *s, const char *why)
{
	Hold *h = &s->hold;
	bool ok = true;

	repl_close(&h->snapshot);
	h->state = HOLD_NONE;
	log_info(s->subject, "verify: going on (%s)", why);
	if (s->stash) {
		ok = handle_copy_data(s, (const uint8_t *) s->stash, (size_t) s->stash_len);
		PQfreemem(s->stash);
		s->stash = NULL;
	}
	return ok;
}

/*
 * The verify hold (hold.h), checked on every turn of the loop.  Sets
 * *skip_read while the stream must not be read; false ends the stream.
 */
static bool
hold_step(Stream *s, bool *skip_read)
{
	Hold *h = &s->hold;
	double now = clock_monotonic();
	char lsn[LSN_FORMAT_LEN];
	uint64_t at = 0;

	switch (hold_poll(h, &at)) {
	case HOLD_REQ_PAUSE:
		h->state = HOLD_PAUSED;
		h->since = now;
		lsn_format(s->received_lsn, lsn, sizeof(lsn));
		log_info(s->subject, "verify: paused at %s", lsn);
		(void) hold_answer(h, "paused %s", lsn);
		break;
	case HOLD_REQ_HOLD:
		h->at = at;
		h->state = HOLD_APPLYING;
		h->since = now;
		break;
	case HOLD_REQ_RELEASE:
		if (!hold_release(s, "released"))
			return false;
		(void) hold_answer(h, "released");
		break;
	case HOLD_REQ_NONE:
		break;
	}
	if (h->state != HOLD_NONE && now - h->since > HOLD_TIMEOUT && !hold_release(s, "the verify went away"))
		return false;
	if (h->state == HOLD_APPLYING) {
		if (s->stash || (!s->applier.in_source_xact && s->received_lsn >= h->at)) {
			if (!hold_take_snapshot(s))
				return false;
		} else if (now - s->last_hold_ping >= 0.1) {
			/* An idle source sends keepalives rarely: ask for one, it says how far the stream is. */
			s->last_hold_ping = now;
			if (!send_feedback(s, true))
				return false;
		}
	}
	*skip_read = h->state == HOLD_PAUSED || h->state == HOLD_HELD;
	return true;
}

/*
 * HOLD_APPLYING: is this message the Begin, or the Stream Commit, of a
 * transaction committed at or after the hold's LSN?
 */
static bool
begins_past_hold(const Stream *s, const uint8_t *data, size_t len)
{
	XLogData xd;
	char err[64];
	uint64_t final_lsn = 0;
	size_t i, at;

	if (len == 0 || data[0] != PGOUTPUT_XLOGDATA || !pgoutput_parse_xlogdata(data, len, &xd, err, sizeof(err)))
		return false;
	/* Begin: its final LSN follows the type byte; Stream Commit: after an xid and a flags byte. */
	if (xd.payload_len >= 9 && xd.payload[0] == PGOUTPUT_BEGIN)
		at = 1;
	else if (xd.payload_len >= 14 && xd.payload[0] == PGOUTPUT_STREAM_COMMIT)
		at = 6;
	else
		return false;
	for (i = at; i < at + 8; i++)
		final_lsn = (final_lsn << 8) | xd.payload[i];
	return final_lsn >= s->hold.at;
}

/* Progress for `pghandoff status`: written at most once a second by status_stream. */
static void
publish(Stream *s)
{
	uint64_t applied = s->applier.committed_lsn;

	if (!s->dir->status)
		return;
	/* With nothing open, everything received is applied (or had nothing to apply). */
	if (!s->applier.target_open && !s->applier.in_source_xact && s->received_lsn > applied)
		applied = s->received_lsn;
	status_stream(s->dir->status, s->received_lsn, applied, s->wal_end, s->last_commit_us, s->applier.xacts_applied,
		      s->applier.changes_applied);
	status_ddl_passed(s->dir->status, s->applier.committed_lsn);
}

bool
stream_run(const Config *config, const ReplDirection *dir, ReplConn *repl, ReplConn *apply, uint64_t start_lsn,
	   uint64_t *exact_before, const char *subject)
{
	Stream s;
	bool ok = false;

	memset(&s, 0, sizeof(s));
	s.config = config;
	s.dir = dir;
	s.repl = repl;
	s.subject = subject;
	s.received_lsn = start_lsn;
	s.wal_end = start_lsn;
	spool_init(&s.spool, subject);
	s.msg = malloc(sizeof(PgoutputMessage));
	if (!s.msg) {
		log_error(subject, "out of memory");
		return false;
	}
	if (dir->status)
		hold_init(&s.hold, config, dir->from_db);
	if (!applier_init(&s.applier, apply, dir->origin, dir->skip_origin, start_lsn, *exact_before, subject) ||
	    !start_streaming(&s, dir->slot, dir->publication, start_lsn))
		goto done;
	s.applier.ddl.mode = config->replication.ddl;
	s.applier.ddl.keep_roles = config->replication.roles == ROLES_COPY;
	s.last_feedback = clock_monotonic();
	if (dir->status)
		status_phase(dir->status, "streaming");
	housekeeping(&s);
	for (;;) {
		char *buf = NULL;
		bool skip_read = false;
		int n;

		if (!replicate_stop_requested && dir->status && !hold_step(&s, &skip_read))
			break;
		if (skip_read && !replicate_stop_requested) {
			struct timespec tick = {0, 10 * 1000 * 1000};

			if (clock_monotonic() - s.last_feedback >= FEEDBACK_INTERVAL_S && !send_feedback(&s, false))
				break;
			nanosleep(&tick, NULL);
			continue;
		}
		if (replicate_stop_requested) {
			if (applier_flush(&s.applier, true) && !s.applier.in_source_xact)
				ok = send_feedback(&s, false);
			else
				ok = !s.applier.target_open || repl_exec(apply, "ROLLBACK");
			log_info(subject,
				 "stopping: %lld transaction(s), %lld change(s) applied, %lld transaction(s) of "
				 "origin %s skipped",
				 (long long) (s.applier.xacts_applied - s.applier.xacts_skipped),
				 (long long) s.applier.changes_applied, (long long) s.applier.xacts_skipped,
				 dir->skip_origin);
			break;
		}
		n = PQgetCopyData(repl->conn, &buf, 1);
		if (n == 0) {
			/* Nothing waiting: the moment to commit what is open. */
			if (!applier_flush(&s.applier, true))
				break;
			publish(&s);
			if (clock_monotonic() - s.last_housekeeping >=
			    (double) config->replication.sequence_sync_interval / 1e6)
				housekeeping(&s);
			if (!wait_for_data(&s))
				break;
			continue;
		}
		if (n == -1) {
			PGresult *res = PQgetResult(repl->conn);

			log_error(subject, "the source ended the replication stream: %s",
				  res ? PQresultErrorMessage(res) : "no reason given");
			PQclear(res);
			break;
		}
		if (n < 0) {
			log_error(subject, "replication connection lost: %s", PQerrorMessage(repl->conn));
			break;
		}
		if (s.hold.state == HOLD_APPLYING && begins_past_hold(&s, (const uint8_t *) buf, (size_t) n)) {
			s.stash = buf; /* applied after the release */
			s.stash_len = n;
			continue;
		}
		if (!handle_copy_data(&s, (const uint8_t *) buf, (size_t) n)) {
			PQfreemem(buf);
			break;
		}
		PQfreemem(buf);
		publish(&s);
		if (clock_monotonic() - s.last_feedback >= FEEDBACK_INTERVAL_S && !send_feedback(&s, false))
			break;
		if (clock_monotonic() - s.last_housekeeping >=
		    (double) config->replication.sequence_sync_interval / 1e6)
			housekeeping(&s);
	}
done:
	if (dir->status && s.applier.ddl.failed_lsn != 0)
		status_ddl_stopped(dir->status, s.applier.ddl.failed_lsn);
	if (s.applier.batch_failed) {
		*exact_before = s.wal_end > s.received_lsn ? s.wal_end : s.received_lsn;
		log_warning(subject,
			    "a batch could not be applied; its transactions are applied again one change at a "
			    "time");
	}
	repl_close(&s.from);
	hold_free(&s.hold);
	spool_free(&s.spool);
	if (s.stash)
		PQfreemem(s.stash);
	applier_free(&s.applier);
	free(s.msg);
	return ok;
}
