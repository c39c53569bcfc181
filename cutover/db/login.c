/*
 * What default_transaction_read_only a fresh login to each database of the
 * side clients go to starts with, the fence aside.
 *
 * A standby logs in while that database may still carry the fence (a
 * rollback goes back to the fenced source; a cutover after a rollback, to
 * the fenced target): the fence's ALTER DATABASE setting would become the
 * session's reset value, and RESET ALL or DISCARD ALL (a pool does one at
 * every release) would turn it read-only long after the fence is gone.  So
 * the standby passes the value a fresh login gets once the switch is done
 * in its startup packet, where it becomes the reset value.
 *
 * That value follows PostgreSQL's order: the role's setting in this
 * database, the role's own, the database's (none with fence = read_only:
 * the fence owns it and the switch resets it), ALTER ROLE ALL's, then the
 * configuration files'.  The files are read from pg_file_settings when the
 * worker's user may (a superuser); else the built-in default stands for
 * them.
 */
#include "common/errbuf.h"
#include "common/log.h"
#include "cutover/db/steps.h"
#include "replicator/conn.h"

#include <stdlib.h>
#include <string.h>

/* $1: the database's own setting counts (no fence owns it). */
static const char sql_defaults_head[] =
	"WITH s AS ("
	"  SELECT s.setrole, s.setdatabase, pg_catalog.substr(c, 31)::bool AS v"
	"  FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) AS c"
	"  WHERE c LIKE 'default\\_transaction\\_read\\_only=%' AND s.setdatabase IN (0,"
	"    (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())))"
	" SELECT NULL::text, coalesce((SELECT v FROM s WHERE setrole = 0 AND setdatabase <> 0 AND $1::bool),"
	"  (SELECT v FROM s WHERE setrole = 0 AND setdatabase = 0), ";
static const char sql_base_files[] =
	"(SELECT setting::bool FROM pg_catalog.pg_file_settings WHERE name = 'default_transaction_read_only' "
	"  AND applied AND error IS NULL ORDER BY seqno DESC LIMIT 1), ";
static const char sql_defaults_tail[] =
	"  (SELECT boot_val::bool FROM pg_catalog.pg_settings WHERE name = 'default_transaction_read_only'))"
	" UNION ALL SELECT r.rolname, coalesce((SELECT v FROM s WHERE setrole = r.oid AND setdatabase <> 0),"
	"  (SELECT v FROM s WHERE setrole = r.oid AND setdatabase = 0))"
	" FROM pg_catalog.pg_roles r WHERE r.oid IN (SELECT setrole FROM s WHERE setrole <> 0)";

static bool
read_defaults(ReplConn *conn, bool database_counts, ReadOnlyDefaults *d)
{
	const char *params[1] = {database_counts ? "true" : "false"};
	char files[8];
	StrBuf sql;
	PGresult *res;
	int i, n;
	bool ok;

	if (!repl_query_copy_value(conn,
				   "SELECT pg_catalog.has_function_privilege("
				   "'pg_catalog.pg_show_all_file_settings()', 'EXECUTE')",
				   0, NULL, files, sizeof(files)))
		return false;
	strbuf_init(&sql);
	strbuf_append(&sql, sql_defaults_head);
	if (strcmp(files, "t") == 0)
		strbuf_append(&sql, sql_base_files);
	strbuf_append(&sql, sql_defaults_tail);
	ok = !sql.failed && repl_query(conn, strbuf_str(&sql), 1, params, &res);
	strbuf_free(&sql);
	if (!ok)
		return false;
	n = PQntuples(res);
	d->roles = calloc((size_t) n + 1, sizeof(char *));
	d->values = calloc((size_t) n + 1, sizeof(bool));
	ok = d->roles && d->values && n >= 1;
	for (i = 0; ok && i < n; i++) {
		bool on = strcmp(PQgetvalue(res, i, 1), "t") == 0;

		if (PQgetisnull(res, i, 0)) {
			d->all = on;
			continue;
		}
		if (!(d->roles[d->nroles] = strdup(PQgetvalue(res, i, 0)))) {
			ok = false;
			break;
		}
		d->values[d->nroles++] = on;
	}
	PQclear(res);
	return ok;
}

bool
steps_read_only_defaults(const CutoverDirection *dir, CutoverLinks *links, ReadOnlyDefaults *defaults, char *err,
			 size_t errlen)
{
	int i;

	for (i = 0; i < links->n; i++) {
		const DatabaseMapping *db = &dir->config->databases[i];

		if (!read_defaults(&links->to[i], dir->config->cutover.fence != FENCE_READ_ONLY, &defaults[i]))
			return errbuf_fail(err, errlen,
					   "%s: could not read the settings a new session on the %s starts with",
					   db->name, dir->reverse ? "source" : "target");
		log_debug(dir->subject,
			  "%s: new sessions on the %s start with default_transaction_read_only = %s, "
			  "%d role(s) with a setting of their own",
			  db->name, dir->reverse ? "source" : "target", defaults[i].all ? "on" : "off",
			  defaults[i].nroles);
	}
	return true;
}

bool
steps_read_only_default(const ReadOnlyDefaults *defaults, const char *role)
{
	int i;

	for (i = 0; i < defaults->nroles; i++)
		if (strcmp(defaults->roles[i], role) == 0)
			return defaults->values[i];
	return defaults->all;
}

void
steps_read_only_defaults_free(ReadOnlyDefaults *defaults, int n)
{
	int i, j;

	if (!defaults)
		return;
	for (i = 0; i < n; i++) {
		for (j = 0; j < defaults[i].nroles; j++)
			free(defaults[i].roles[j]);
		free(defaults[i].roles);
		free(defaults[i].values);
	}
	free(defaults);
}
