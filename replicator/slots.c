/*
 * Publications, slots and replication origins: made, read and dropped for
 * both directions of the follower (replicate.c, reverse.c).  Names go in as
 * parameters or quoted identifiers, never spliced in raw.
 */
#include "replicator/slots.h"
#include "common/log.h"
#include "replicator/pgoutput.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool
slots_origin_state(ReplConn *conn, const char *origin, bool *exists, uint64_t *progress)
{
	const char *params[1] = {origin};
	PGresult *res;

	if (!repl_query(conn,
			"SELECT pg_replication_origin_oid($1) IS NOT NULL, "
			"CASE WHEN pg_replication_origin_oid($1) IS NOT NULL "
			"THEN coalesce(pg_replication_origin_progress($1, false), '0/0') END",
			1, params, &res))
		return false;
	*exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	*progress = 0;
	if (*exists && !lsn_parse(PQgetvalue(res, 0, 1), progress)) {
		log_error(conn->subject, "unreadable origin progress \"%s\"", PQgetvalue(res, 0, 1));
		PQclear(res);
		return false;
	}
	PQclear(res);
	return true;
}

bool
slots_create_origin(ReplConn *conn, const char *origin)
{
	const char *params[1] = {origin};

	return repl_exec_params(conn, "SELECT pg_replication_origin_create($1)", 1, params);
}

bool
slots_advance_origin(ReplConn *conn, const char *origin, uint64_t lsn)
{
	char lsnbuf[LSN_FORMAT_LEN];
	const char *params[2] = {origin, lsnbuf};

	lsn_format(lsn, lsnbuf, sizeof(lsnbuf));
	return repl_exec_params(conn, "SELECT pg_replication_origin_advance($1, $2::pg_lsn)", 2, params);
}

bool
slots_drop_origin(ReplConn *conn, const char *origin)
{
	const char *params[1] = {origin};

	return repl_exec_params(conn,
				"SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1",
				1, params);
}

bool
slots_ensure_publication(ReplConn *conn, const char *publication, bool via_root)
{
	const char *params[1] = {publication};
	char buf[8];
	char sql[240];
	char *ident;
	bool ok;

	if (!repl_query_copy_value(conn, "SELECT count(*) FROM pg_publication WHERE pubname = $1", 1, params, buf,
				   sizeof(buf)))
		return false;
	if (strcmp(buf, "0") != 0)
		return true;
	ident = PQescapeIdentifier(conn->conn, publication, strlen(publication));
	if (!ident) {
		log_error(conn->subject, "could not quote publication name %s: %s", publication,
			  PQerrorMessage(conn->conn));
		return false;
	}
	snprintf(sql, sizeof(sql), "CREATE PUBLICATION %s FOR ALL TABLES%s", ident,
		 via_root ? " WITH (publish_via_partition_root = true)" : "");
	PQfreemem(ident);
	ok = repl_exec(conn, sql);
	if (ok)
		log_info(conn->subject, "created publication %s for all tables%s", publication,
			 via_root ? ", partitions published through their root tables" : "");
	return ok;
}

bool
slots_publication_state(ReplConn *conn, const char *publication, bool *exists, bool *via_root)
{
	const char *params[1] = {publication};
	PGresult *res;

	/* pubviaroot came with PostgreSQL 13; older publications always publish partitions themselves. */
	if (!repl_query(conn,
			conn->version >= PUBVIAROOT_MIN_VERSION
				? "SELECT pubviaroot FROM pg_publication WHERE pubname = $1"
				: "SELECT false FROM pg_publication WHERE pubname = $1",
			1, params, &res))
		return false;
	*exists = PQntuples(res) > 0;
	*via_root = *exists && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	return true;
}

bool
slots_drop_publication(ReplConn *conn, const char *publication)
{
	const char *params[1] = {publication};
	char buf[8];
	char sql[200];
	char *ident;

	if (!repl_query_copy_value(conn, "SELECT count(*) FROM pg_publication WHERE pubname = $1", 1, params, buf,
				   sizeof(buf)))
		return false;
	if (strcmp(buf, "0") == 0)
		return true;
	ident = PQescapeIdentifier(conn->conn, publication, strlen(publication));
	if (!ident) {
		log_error(conn->subject, "could not quote publication name %s: %s", publication,
			  PQerrorMessage(conn->conn));
		return false;
	}
	snprintf(sql, sizeof(sql), "DROP PUBLICATION %s", ident);
	PQfreemem(ident);
	return repl_exec(conn, sql);
}

bool
slots_create_slot(ReplConn *conn, const char *slot, uint64_t *lsn)
{
	const char *params[1] = {slot};
	char buf[LSN_FORMAT_LEN + 8];

	/* Returns once the slot is consistent: transactions running now must end first. */
	if (!repl_query_copy_value(conn, "SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", 1,
				   params, buf, sizeof(buf)))
		return false;
	if (!lsn_parse(buf, lsn)) {
		log_error(conn->subject, "unreadable consistent point \"%s\" of the new slot %s", buf, slot);
		return false;
	}
	log_info(conn->subject, "created replication slot %s at %s", slot, buf);
	return true;
}

bool
slots_slot_exists(ReplConn *conn, const char *slot, bool *exists)
{
	const char *params[1] = {slot};
	char buf[8];

	if (!repl_query_copy_value(conn, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", 1, params,
				   buf, sizeof(buf)))
		return false;
	*exists = strcmp(buf, "0") != 0;
	return true;
}

bool
slots_drop_stale_slot(ReplConn *conn, const char *slot)
{
	const char *params[1] = {slot};
	PGresult *res;
	bool ok = true;

	if (!repl_query(conn,
			"SELECT active_pid, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
			"FROM pg_replication_slots WHERE slot_name = $1",
			1, params, &res))
		return false;
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		log_error(conn->subject,
			  "replication slot %s is in use by process %s: a follower streams from it (another "
			  "pghandoff replicate for this database, or another migration with the same slot_name); stop "
			  "it, or give this migration a slot_name of its own",
			  slot, PQgetvalue(res, 0, 0));
		ok = false;
	} else if (PQntuples(res) == 1) {
		log_warning(conn->subject,
			    "dropping replication slot %s, left by an initial sync that did not complete; it held %s "
			    "of WAL",
			    slot, PQgetisnull(res, 0, 1) ? "no" : PQgetvalue(res, 0, 1));
		ok = slots_drop_slot(conn, slot, false);
	}
	PQclear(res);
	return ok;
}

/* Ends the walsender streaming from slot, if any, and waits until it lets go (up to 10 s). */
static bool
end_walsender(ReplConn *conn, const char *slot)
{
	const char *params[1] = {slot};
	PGresult *res;

	if (!repl_query(conn,
			"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
			"WHERE slot_name = $1 AND active_pid IS NOT NULL",
			1, params, &res))
		return false;
	PQclear(res);
	/* The walsender takes a moment to exit and release its slot. */
	for (int tries = 0; tries < 100; tries++) {
		char active[8];

		if (!repl_query_copy_value(conn,
					   "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND active",
					   1, params, active, sizeof(active)))
			return false;
		if (strcmp(active, "0") == 0)
			break;
		usleep(100 * 1000);
	}
	return true;
}

bool
slots_drop_slot(ReplConn *conn, const char *slot, bool terminate)
{
	static const char sql[] = "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
				  "WHERE slot_name = $1";
	const char *params[1] = {slot};
	PGresult *res;
	int attempt;

	/*
	 * A follower still running reconnects after its walsender was ended and
	 * may take the slot again before the drop: then it is ended again, a few
	 * times, before the drop's error counts.
	 */
	for (attempt = 1; terminate && attempt < 5; attempt++) {
		const char *state;

		if (!end_walsender(conn, slot))
			return false;
		res = PQexecParams(conn->conn, sql, 1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			if (PQntuples(res) > 0)
				log_info(conn->subject, "dropped replication slot %s", slot);
			PQclear(res);
			return true;
		}
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (!state || strcmp(state, "55006") != 0) { /* not object_in_use: no retry helps */
			PQclear(res);
			break;
		}
		log_debug(conn->subject,
			  "replication slot %s was taken again before the drop: ending its walsender "
			  "again",
			  slot);
		PQclear(res);
	}
	if (terminate && !end_walsender(conn, slot))
		return false;
	if (!repl_query(conn, sql, 1, params, &res))
		return false;
	if (PQntuples(res) > 0)
		log_info(conn->subject, "dropped replication slot %s", slot);
	PQclear(res);
	return true;
}
