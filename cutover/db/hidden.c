/*
 * Code a database runs that its clients do not name: triggers, rules, and
 * views, defaults, checks, policies, operators or casts that call functions
 * of the database's own, or set_config and the session advisory locks; and
 * functions of its own that a client's text may call without naming them
 * as such: one named like a built-in, or one taking a table's row (t.f is
 * f(t)).
 *
 * The proxy knows a session's state without reading it when its client
 * only ever sent statements that leave the session alone (proxy/sqlscan.h):
 * that holds only if nothing runs behind those statements.  One query per
 * database, before the pause; a database that has any of this gets every
 * session read, as before.
 */
#include "common/errbuf.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "cutover/db/steps.h"
#include "replicator/conn.h"

#include <stdio.h>
#include <string.h>

/* 16384 is FirstNormalObjectId: what the database's users made, not initdb. */
static const char sql_hidden_code[] =
	"WITH state_fns AS ("
	"  SELECT string_agg(oid::text, '|') AS oids FROM pg_catalog.pg_proc"
	"  WHERE pronamespace = 'pg_catalog'::regnamespace AND proname IN ('set_config', 'pg_advisory_lock',"
	"    'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared', 'pg_advisory_unlock',"
	"    'pg_advisory_unlock_shared', 'pg_advisory_unlock_all')), "
	"exprs AS ("
	"  SELECT ev_action::text AS t FROM pg_catalog.pg_rewrite WHERE ev_class >= 16384"
	"  UNION ALL SELECT adbin::text FROM pg_catalog.pg_attrdef"
	"  UNION ALL SELECT conbin::text FROM pg_catalog.pg_constraint WHERE conbin IS NOT NULL"
	"  UNION ALL SELECT polqual::text FROM pg_catalog.pg_policy WHERE polqual IS NOT NULL"
	"  UNION ALL SELECT polwithcheck::text FROM pg_catalog.pg_policy WHERE polwithcheck IS NOT NULL) "
	"SELECT concat_ws(', ',"
	"  (SELECT count(*) || ' trigger(s)' FROM pg_catalog.pg_trigger WHERE NOT tgisinternal HAVING count(*) > 0),"
	"  (SELECT count(*) || ' rule(s)' FROM pg_catalog.pg_rewrite"
	"     WHERE ev_class >= 16384 AND rulename <> '_RETURN' HAVING count(*) > 0),"
	"  (SELECT count(*) || ' view(s), default(s), check(s) or policies calling functions of its own'"
	"     FROM pg_catalog.pg_depend WHERE refclassid = 'pg_catalog.pg_proc'::regclass AND refobjid >= 16384"
	"     AND classid IN ('pg_catalog.pg_rewrite'::regclass, 'pg_catalog.pg_attrdef'::regclass,"
	"                     'pg_catalog.pg_constraint'::regclass, 'pg_catalog.pg_policy'::regclass)"
	"     HAVING count(*) > 0),"
	"  (SELECT count(*) || ' view(s), default(s), check(s) or policies calling set_config or advisory locks'"
	"     FROM exprs, state_fns WHERE exprs.t ~ (':funcid (' || state_fns.oids || ') ') HAVING count(*) > 0),"
	"  (SELECT count(*) || ' operator(s) or cast(s) of its own' FROM ("
	"     SELECT 'pg_catalog.pg_operator'::regclass AS classid, oid FROM pg_catalog.pg_operator WHERE oid >= 16384"
	"     UNION ALL SELECT 'pg_catalog.pg_cast'::regclass, oid FROM pg_catalog.pg_cast WHERE oid >= 16384) o"
	"   WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e"
	"                     WHERE e.classid = o.classid AND e.objid = o.oid AND e.deptype = 'e')"
	"   HAVING count(*) > 0),"
	/* A built-in's name on a function of its own may win over the built-in (search_path, argument types). */
	"  (SELECT count(*) || ' function(s) of its own named like built-ins or callable as t.f'"
	"     FROM pg_catalog.pg_proc p WHERE p.oid >= 16384"
	"     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e"
	"                     WHERE e.classid = 'pg_catalog.pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e')"
	"     AND (EXISTS (SELECT 1 FROM pg_catalog.pg_proc b WHERE b.oid < 16384 AND b.proname = p.proname)"
	"          OR (p.pronargs = 1 AND EXISTS (SELECT 1 FROM pg_catalog.pg_type t"
	"                                         WHERE t.oid = p.proargtypes[0] AND t.typtype = 'c')))"
	"   HAVING count(*) > 0))";

/*
 * Custom settings (app.tenant) the database's own functions set by a literal
 * name: pg_settings never shows them, so the proxy reads them by name.  C
 * and internal functions' prosrc is a symbol, not code.
 */
static const char sql_function_settings[] =
	"SELECT coalesce(string_agg(DISTINCT lower(m[1]), ' '), '') FROM pg_catalog.pg_proc p,"
	"  pg_catalog.regexp_matches(p.prosrc,"
	"    '(?:set_config\\s*\\(\\s*''|\\mset\\s+(?:session\\s+|local\\s+)?)"
	"([a-z_][a-z0-9_$]*(?:\\.[a-z_][a-z0-9_$]*)+)', 'gi') AS m"
	" WHERE p.oid >= 16384 AND p.prolang NOT IN (12, 13)"; /* internal, c */

bool
steps_find_hidden_code(const CutoverDirection *dir, CutoverLinks *links, bool *hidden, StrBuf *settings, char *err,
		       size_t errlen)
{
	int i;

	for (i = 0; i < links->n; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];
		char what[512], names[2048];

		if (!repl_query_copy_value(&links->from[i], sql_function_settings, 0, NULL, names, sizeof(names)))
			return errbuf_fail(err, errlen, "%s: could not look for settings in its functions", db->name);
		if (names[0])
			strbuf_appendf(settings, "%s ", names);
		if (!repl_query_copy_value(&links->from[i], sql_hidden_code, 0, NULL, what, sizeof(what)))
			return errbuf_fail(err, errlen, "%s: could not look for triggers and rules", db->name);
		hidden[i] = what[0] != '\0';
		if (hidden[i])
			log_info(dir->subject, "%s runs code its clients do not name (%s): every session is read",
				 db->name, what);
	}
	return true;
}
