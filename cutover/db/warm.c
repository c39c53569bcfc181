/*
 * What a standby runs before the pause so that its backend is not cold when
 * its client arrives.  A backend builds the relation cache entry of every
 * table and index the first time it touches them; at the resume every moved
 * client does that at once, on the cluster it goes to, and the transactions
 * held by the pause wait for it.  "SELECT FROM t LIMIT 0" reads no row, but
 * plans the table, which opens it and every index on it.
 *
 * The tables are the most used of the database left (its statistics count
 * the clients' reads and writes), those that exist on the side clients go
 * to.  Best effort: a statement that fails (a lock held past the timeout, a
 * table the client's user may not read) ends the warm-up there, and nothing
 * else.
 */
#include "common/log.h"
#include "cutover/db/steps.h"
#include "replicator/conn.h"

#include <stdlib.h>
#include <string.h>

/* 16 tables: enough for what a session usually touches first, without much cost per standby. */
static const char sql_hot_tables[] =
	"SELECT coalesce(array_agg(pg_catalog.format('%I.%I', schemaname, relname) ORDER BY uses DESC), '{}') FROM ("
	"  SELECT s.schemaname, s.relname,"
	"    coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0) + s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS uses"
	"  FROM pg_catalog.pg_stat_user_tables s JOIN pg_catalog.pg_class c ON c.oid = s.relid"
	"  WHERE c.relpersistence = 'p' ORDER BY uses DESC LIMIT 16) t WHERE uses > 0";

/* A lock held on the other side (DDL, a TRUNCATE being applied) delays the warm-up by this much at most. */
static const char sql_warm_statements[] =
	"SELECT coalesce('SET LOCAL lock_timeout = ''100ms''; ' || string_agg(pg_catalog.format('SELECT FROM %I.%I LIMIT 0',"
	"  n.nspname, c.relname), '; ' ORDER BY u.i), '')"
	" FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(name, i)"
	" JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(u.name)"
	" JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

bool
steps_warm_sql(const CutoverDirection *dir, CutoverLinks *links, char **sql)
{
	int i;

	for (i = 0; i < links->n; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];
		char names[8192], warm[8192];
		const char *params[1] = {names};

		free(sql[i]);
		sql[i] = NULL;
		if (!repl_query_copy_value(&links->from[i], sql_hot_tables, 0, NULL, names, sizeof(names)) ||
		    !repl_query_copy_value(&links->to[i], sql_warm_statements, 1, params, warm, sizeof(warm))) {
			log_warning(dir->subject, "%s: could not list the tables to warm the new connections up with",
				    db->name);
			continue;
		}
		if (warm[0] && !(sql[i] = strdup(warm)))
			return false;
		log_debug(dir->subject, "%s: new connections warm up with: %s", db->name, warm[0] ? warm : "(nothing)");
	}
	return true;
}
