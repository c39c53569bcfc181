/*
 * Reading the cutover's fence on the side a follower reads (fence.h).
 *
 * One query answers for every transaction that committed before the WAL
 * position it returns: a follower that is behind asks once for many
 * transactions, one that keeps up asks about once per transaction with
 * changes, never more often than the round trip allows.
 */
#include "replicator/fence.h"
#include "common/log.h"
#include "replicator/pgoutput.h"

#include <string.h>

/*
 * The position is read first, the fence in a later statement (a later
 * snapshot): a transaction that committed before that position was visible
 * to it, so a fence recorded before the transaction committed is seen.
 */
static const char sql_fence[] =
	"SELECT (SELECT pg_catalog.substr(c, pg_catalog.length('" FENCE_SETTING "=') + 1)"
	"  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c"
	"  WHERE s.setrole = 0 AND c LIKE 'pghandoff.fenced\\_at=%' AND s.setdatabase ="
	"    (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))";

bool
fence_allows(FenceWatch *fw, ReplConn *conn, uint64_t commit_lsn, bool *allowed)
{
	PGresult *res;
	char lsn[LSN_FORMAT_LEN + 2];
	uint64_t upto = 0, fenced_at = 0;
	bool ok;

	if (commit_lsn > fw->known_upto) {
		if (!repl_query_copy_value(conn, "SELECT pg_catalog.pg_current_wal_lsn()", 0, NULL, lsn, sizeof(lsn)) ||
		    !repl_query(conn, sql_fence, 0, NULL, &res))
			return false;
		ok = PQntuples(res) == 1 && lsn_parse(lsn, &upto) &&
		     (PQgetisnull(res, 0, 0) || lsn_parse(PQgetvalue(res, 0, 0), &fenced_at));
		if (!ok)
			log_error(conn->subject, "could not read the fence: unreadable LSN");
		PQclear(res);
		if (!ok)
			return false;
		fw->known_upto = upto;
		fw->fenced_at = fenced_at;
	}
	*allowed = fw->fenced_at == 0 || commit_lsn <= fw->fenced_at;
	return true;
}
