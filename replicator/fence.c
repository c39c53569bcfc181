/*
 * Reading the cutover's fence on the side a follower reads (fence.h).
 *
 * One reading answers for every transaction that committed before the WAL
 * position it returns: a follower that is behind asks once for many
 * transactions, one that keeps up about once per transaction with changes,
 * one round trip each.
 */
#include "replicator/fence.h"
#include "common/log.h"
#include "replicator/pgoutput.h"

#include <string.h>

/*
 * The position is read first, the fence by a second statement, with a
 * snapshot of its own, in the same round trip: a transaction that committed
 * before that position was visible to it, so a fence recorded before the
 * transaction committed is seen.
 */
static const char sql_fence[] =
	"SELECT pg_catalog.set_config('pghandoff.fence_read_at', pg_catalog.pg_current_wal_lsn()::text, false); "
	"SELECT pg_catalog.current_setting('pghandoff.fence_read_at'),"
	" (SELECT pg_catalog.substr(c, pg_catalog.length('" FENCE_SETTING "=') + 1)"
	"  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c"
	"  WHERE s.setrole = 0 AND c LIKE 'pghandoff.fenced\\_at=%' AND s.setdatabase ="
	"    (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()))";

bool
fence_allows(FenceWatch *fw, ReplConn *conn, uint64_t commit_lsn, bool *allowed)
{
	PGresult *res;
	uint64_t upto = 0, fenced_at = 0;
	bool ok;

	if (commit_lsn > fw->known_upto) {
		if (!repl_query(conn, sql_fence, 0, NULL, &res))
			return false;
		ok = PQntuples(res) == 1 && PQnfields(res) == 2 && lsn_parse(PQgetvalue(res, 0, 0), &upto) &&
			(PQgetisnull(res, 0, 1) || lsn_parse(PQgetvalue(res, 0, 1), &fenced_at));
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
