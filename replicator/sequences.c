/*
 * Sequence values, source to target.  One query reads them all on the source
 * (pg_sequences, PostgreSQL 10+), one statement sets them all on the target:
 * setval is not transactional, so a partial failure leaves each sequence at
 * a value it really had on the source.
 */
#include "replicator/sequences.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <stdlib.h>
#include <string.h>

static const char sql_sequences[] = "SELECT format('%I.%I', schemaname, sequencename), "
				    "  coalesce(last_value, (SELECT seqstart FROM pg_sequence s "
				    "    WHERE s.seqrelid = format('%I.%I', schemaname, sequencename)::regclass)), "
				    "  last_value IS NOT NULL "
				    "FROM pg_sequences WHERE schemaname <> 'pghandoff' ORDER BY 1";

bool
sequences_sync(ReplConn *source, ReplConn *target, int *count)
{
	PGresult *res;
	StrBuf sql;
	bool ok = true;
	int i, n;

	*count = 0;
	if (!repl_query(source, sql_sequences, 0, NULL, &res))
		return false;
	n = PQntuples(res);
	if (n == 0) {
		PQclear(res);
		return true;
	}
	strbuf_init(&sql);
	strbuf_append(&sql, "SELECT ");
	for (i = 0; i < n; i++) {
		char *name = PQescapeLiteral(target->conn, PQgetvalue(res, i, 0), strlen(PQgetvalue(res, i, 0)));

		strbuf_appendf(&sql, "%ssetval(%s, %s, %s)", i ? ", " : "", name ? name : "''", PQgetvalue(res, i, 1),
			       strcmp(PQgetvalue(res, i, 2), "t") == 0 ? "true" : "false");
		PQfreemem(name);
	}
	PQclear(res);
	if (sql.failed)
		ok = false;
	else
		ok = repl_exec(target, strbuf_str(&sql));
	strbuf_free(&sql);
	if (ok)
		*count = n;
	return ok;
}
