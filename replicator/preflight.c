/*
 * Preflight checks against the source and target clusters.
 *
 * Each check reports PASS, WARN or FAIL with a hint that tells the DBA what to
 * change.  A check that cannot run because an earlier one failed (no
 * connection, say) is skipped rather than reported twice.  Nothing here
 * writes to either cluster.
 */
#include "replicator/preflight.h"
#include "replicator/ddl.h"
#include "common/pgsql.h"
#include "common/strbuf.h"
#include "replicator/names.h"
#include "replicator/replicate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SOURCE_VERSION 100000 /* pgoutput appeared in 10 */
#define TESTED_SOURCE_VERSION 130000
#define LIST_LIMIT 20

typedef struct Side {
	const ServerConfig *server;
	PGconn *conn; /* a maintenance connection, for cluster-wide checks */
	int version;
} Side;

const char *
check_status_name(CheckStatus status)
{
	switch (status) {
	case CHECK_PASS:
		return "PASS";
	case CHECK_WARN:
		return "WARN";
	case CHECK_FAIL:
		return "FAIL";
	}
	return "?";
}

static void report(Preflight *pf, CheckStatus status, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
report(Preflight *pf, CheckStatus status, const char *hint, const char *fmt, ...)
{
	StrBuf msg;
	va_list ap;

	strbuf_init(&msg);
	va_start(ap, fmt);
	strbuf_vappendf(&msg, fmt, ap);
	va_end(ap);
	if (status == CHECK_PASS)
		pf->npass++;
	else if (status == CHECK_WARN)
		pf->nwarn++;
	else
		pf->nfail++;
	pf->emit(pf->arg, status, strbuf_str(&msg), status == CHECK_PASS ? NULL : hint);
	strbuf_free(&msg);
}

static bool
connect_db(const ServerConfig *server, const char *dbname, PGconn **conn, char *err, size_t errlen)
{
	const char *keywords[CONFIG_MAX_CONN_PARAMS + 1];
	const char *values[CONFIG_MAX_CONN_PARAMS + 1];

	config_conn_params(server, dbname, "pghandoff check", keywords, values);
	return pgsql_connect(keywords, values, conn, err, errlen);
}

static const char *
connect_hint(const char *err)
{
	if (strstr(err, "password authentication failed") || strstr(err, "no password supplied"))
		return "check the password in the [source]/[target] section, or in .pgpass / PGPASSFILE";
	if (strstr(err, "no pg_hba.conf entry"))
		return "allow this host and user in the server's pg_hba.conf, then reload it";
	if (strstr(err, "Connection refused") || strstr(err, "could not connect") ||
	    strstr(err, "could not translate host name") || strstr(err, "timeout"))
		return "check host and port, and that the server is running and listens on that address";
	return "check the connection settings of this section";
}

/*
 * Opens a maintenance connection.  The postgres database is the usual one;
 * template1 always exists; a configured database is the last resort.
 */
static bool
side_connect(Preflight *pf, Side *side)
{
	const char *candidates[3] = {"postgres", "template1", NULL};
	const ServerConfig *server = side->server;
	const char *where = server->host[0] ? server->host : "(conninfo)";
	char err[512] = "";
	char version[32];
	int i;

	if (pf->config->ndatabases > 0)
		candidates[2] = server == &pf->config->source ? pf->config->databases[0].name
							      : pf->config->databases[0].target_name;
	for (i = 0; i < 3 && candidates[i]; i++) {
		if (connect_db(server, candidates[i], &side->conn, err, sizeof(err)))
			break;
		/* Only a missing database is worth another try; anything else fails the same way. */
		if (!strstr(err, "does not exist"))
			break;
	}
	if (!side->conn) {
		report(pf, CHECK_FAIL, connect_hint(err), "%s unreachable: %s", server->role, err);
		return false;
	}
	side->version = PQserverVersion(side->conn);
	pgsql_format_version(side->version, version, sizeof(version));
	report(pf, CHECK_PASS, NULL, "%s reachable: PostgreSQL %s at %s%s%s as %s", server->role, version, where,
	       server->port_str[0] ? ":" : "", server->port_str, PQuser(side->conn));
	return true;
}

static void
check_versions(Preflight *pf, Side *source, Side *target)
{
	char sv[32], tv[32];

	pgsql_format_version(source->version, sv, sizeof(sv));
	pgsql_format_version(target->version, tv, sizeof(tv));
	if (source->version < MIN_SOURCE_VERSION)
		report(pf, CHECK_FAIL, "upgrade the source to PostgreSQL 10 or later first (pg_upgrade)",
		       "source version %s has no pgoutput logical decoding", sv);
	else if (source->version < TESTED_SOURCE_VERSION)
		report(pf, CHECK_WARN, "sources older than PostgreSQL 13 are not tested",
		       "source version %s is older than 13", sv);
	if (target->version / 10000 < source->version / 10000)
		report(pf, CHECK_FAIL, "the target must run the same or a newer major version than the source",
		       "target version %s is older than source version %s", tv, sv);
	else
		report(pf, CHECK_PASS, NULL, "versions: source %s, target %s", sv, tv);
}

static bool
show_setting(Preflight *pf, Side *side, const char *name, char *buf, size_t len)
{
	char err[512];
	const char *params[1] = {name};

	if (pgsql_query_copy_value(side->conn, "SELECT current_setting($1)", 1, params, buf, len, err, sizeof(err)))
		return true;
	report(pf, CHECK_FAIL, "the user needs to read server settings", "%s: could not read %s: %s",
	       side->server->role, name, err);
	return false;
}

static void
check_wal_level(Preflight *pf, Side *side, const char *why_hint)
{
	char level[64];

	if (!show_setting(pf, side, "wal_level", level, sizeof(level)))
		return;
	if (strcmp(level, "logical") == 0)
		report(pf, CHECK_PASS, NULL, "%s: wal_level = logical", side->server->role);
	else
		report(pf, CHECK_FAIL, why_hint, "%s: wal_level is \"%s\", logical replication needs \"logical\"",
		       side->server->role, level);
}

static bool
query_int(Preflight *pf, Side *side, const char *sql, int nparams, const char *const *params, long *out)
{
	char buf[64], err[512];

	if (!pgsql_query_copy_value(side->conn, sql, nparams, params, buf, sizeof(buf), err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed; does the user have read access to the catalogs?",
		       "%s: %s", side->server->role, err);
		return false;
	}
	*out = strtol(buf, NULL, 10);
	return true;
}

static void
check_slots_and_senders(Preflight *pf, Side *source)
{
	const char *prefix[1] = {pf->config->replication.slot_name};
	long max_slots, used_slots, ours, max_senders, used_senders;
	long need = pf->config->ndatabases;

	if (!query_int(pf, source, "SELECT current_setting('max_replication_slots')::int", 0, NULL, &max_slots) ||
	    !query_int(pf, source, "SELECT count(*) FROM pg_replication_slots", 0, NULL, &used_slots) ||
	    !query_int(pf, source, "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'", 1,
		       prefix, &ours))
		return;
	/* Slots this tool already made will be reused, not created again. */
	if (max_slots - (used_slots - ours) < need)
		report(pf, CHECK_FAIL,
		       "raise max_replication_slots on the source (needs a restart) or drop unused slots",
		       "source: %ld of max_replication_slots = %ld in use, %ld needed (one per database)", used_slots,
		       max_slots, need);
	else
		report(pf, CHECK_PASS, NULL, "source: replication slots free: %ld of %ld, %ld needed",
		       max_slots - used_slots, max_slots, need);

	if (!query_int(pf, source, "SELECT current_setting('max_wal_senders')::int", 0, NULL, &max_senders) ||
	    !query_int(pf, source, "SELECT count(*) FROM pg_stat_replication", 0, NULL, &used_senders))
		return;
	if (max_senders - used_senders < need)
		report(pf, CHECK_FAIL, "raise max_wal_senders on the source (needs a restart)",
		       "source: %ld of max_wal_senders = %ld in use, %ld needed", used_senders, max_senders, need);
	else
		report(pf, CHECK_PASS, NULL, "source: WAL senders free: %ld of %ld, %ld needed",
		       max_senders - used_senders, max_senders, need);
}

static void
check_replication_privilege(Preflight *pf, Side *source)
{
	long ok;

	if (!query_int(pf, source,
		       "SELECT (rolreplication OR rolsuper)::int FROM pg_roles WHERE rolname = current_user", 0, NULL,
		       &ok))
		return;
	if (ok)
		report(pf, CHECK_PASS, NULL, "source: user %s has the REPLICATION privilege", PQuser(source->conn));
	else
		report(pf, CHECK_FAIL, "run ALTER ROLE ... REPLICATION on the source, or use a role that has it",
		       "source: user %s lacks the REPLICATION privilege", PQuser(source->conn));
}

/*
 * The capture of schema changes (ddl.h) is a set of event triggers, which
 * only a superuser may create (every version up to 18).  Without it the
 * follower stops at a change that no longer fits, as with ddl = stop: a
 * warning, not a failure.
 */
static void
check_event_triggers(Preflight *pf, Side *side, const char *why)
{
	long ok;

	if (pf->config->replication.ddl != DDL_REPLAY)
		return;
	if (!query_int(pf, side, "SELECT rolsuper::int FROM pg_roles WHERE rolname = current_user", 0, NULL, &ok))
		return;
	if (ok)
		report(pf, CHECK_PASS, NULL, "%s: user %s may create event triggers: schema changes %s are replayed",
		       side->server->role, PQuser(side->conn), why);
	else
		report(pf, CHECK_WARN,
		       "connect as a superuser (on a managed service, a role its documentation allows to create event "
		       "triggers), or make each schema change on both sides by hand and set ddl = stop",
		       "%s: user %s is not a superuser and may not create event triggers: schema changes %s are not "
		       "captured, and stop the follower where they no longer fit",
		       side->server->role, PQuser(side->conn), why);
}

static bool
database_exists(Preflight *pf, Side *side, const char *name, bool *exists)
{
	const char *params[1] = {name};
	long n;

	if (!query_int(pf, side, "SELECT count(*) FROM pg_database WHERE datname = $1", 1, params, &n))
		return false;
	*exists = n > 0;
	return true;
}

/* Runs sql returning one text column and reports the rows as a list when there are any. */
static bool
report_rows(Preflight *pf, PGconn *conn, const char *sql, CheckStatus status, const char *hint, const char *what_found,
	    const char *what_none, const char *dbname)
{
	PGresult *res;
	StrBuf list;
	char err[512];
	int i, n;

	if (!pgsql_query(conn, sql, 0, NULL, &res, err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed; does the user have read access to the catalogs?",
		       "database %s: %s", dbname, err);
		return false;
	}
	n = PQntuples(res);
	if (n == 0) {
		report(pf, CHECK_PASS, NULL, "database %s: %s", dbname, what_none);
		PQclear(res);
		return true;
	}
	strbuf_init(&list);
	for (i = 0; i < n && i < LIST_LIMIT; i++)
		strbuf_appendf(&list, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
	if (n > LIST_LIMIT)
		strbuf_appendf(&list, " and %d more", n - LIST_LIMIT);
	report(pf, status, hint, "database %s: %s (%d): %s", dbname, what_found, n, strbuf_str(&list));
	strbuf_free(&list);
	PQclear(res);
	return true;
}

static const char sql_tables_without_identity[] =
	"SELECT format('%I.%I', n.nspname, c.relname) "
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' " DDL_EXCLUDE_SCHEMA
	"  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
	"                  AND d.objid = c.oid AND d.deptype = 'e') "
	"  AND " PREFLIGHT_SQL_NO_REPLICA_IDENTITY " "
	"ORDER BY 1";

const char preflight_sql_table_columns[] =
	"SELECT format('%I.%I', n.nspname, c.relname), "
	"  string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attname) "
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
	"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' " DDL_EXCLUDE_SCHEMA
	"GROUP BY 1 ORDER BY 1";

static const char sql_unlogged_tables[] =
	"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u' AND n.nspname <> 'pghandoff_lo' ORDER BY 1";

static const char sql_matviews[] = "SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews ORDER BY 1";

static const char sql_generated_columns[] =
	"SELECT format('%I.%I.%I', n.nspname, c.relname, a.attname) "
	"FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE a.attgenerated <> '' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') ORDER BY 1";

static const char sql_unreadable_tables[] =
	"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' "
	"  AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1";

static const char sql_large_objects[] =
	"SELECT count(*)::text || ' large object(s)' FROM pg_largeobject_metadata HAVING count(*) > 0";

/* The copy and the diff read pg_largeobject, which PostgreSQL lets only superusers read by default. */
static const char sql_large_objects_unreadable[] =
	"SELECT count(*)::text || ' large object(s)' FROM pg_largeobject_metadata "
	"HAVING count(*) > 0 AND NOT has_table_privilege('pg_catalog.pg_largeobject', 'SELECT')";

static const char sql_extensions[] = "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1";

static void
check_extensions(Preflight *pf, PGconn *source_db, Side *target, const char *dbname)
{
	PGresult *have, *avail;
	StrBuf missing;
	char err[512];
	int i, j, nmissing = 0;

	if (!pgsql_query(source_db, sql_extensions, 0, NULL, &have, err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed", "database %s: %s", dbname, err);
		return;
	}
	if (!pgsql_query(target->conn, "SELECT name FROM pg_available_extensions", 0, NULL, &avail, err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed", "target: %s", err);
		PQclear(have);
		return;
	}
	strbuf_init(&missing);
	for (i = 0; i < PQntuples(have); i++) {
		const char *name = PQgetvalue(have, i, 0);
		bool found = false;

		for (j = 0; j < PQntuples(avail) && !found; j++)
			found = strcmp(name, PQgetvalue(avail, j, 0)) == 0;
		if (!found)
			strbuf_appendf(&missing, "%s%s", nmissing++ ? ", " : "", name);
	}
	if (nmissing)
		report(pf, CHECK_FAIL,
		       "install these extensions for the target's major version (Debian: postgresql-NN-<name>), "
		       "or drop them on the source",
		       "database %s: extensions installed on the source but not available on the target: %s", dbname,
		       strbuf_str(&missing));
	else
		report(pf, CHECK_PASS, NULL, "database %s: all %d extension(s) available on the target", dbname,
		       PQntuples(have));
	strbuf_free(&missing);
	PQclear(have);
	PQclear(avail);
}

/* The target's tables against the source's: missing ones, and columns that differ. */
static void
check_target_tables(Preflight *pf, PGconn *source_db, Side *target, const DatabaseMapping *db)
{
	PGconn *conn = NULL;
	PGresult *a = NULL, *b = NULL;
	StrBuf missing, differ;
	char err[512];
	int i, j, nmissing = 0, ndiffer = 0;
	bool exists;

	if (!database_exists(pf, target, db->target_name, &exists) || !exists)
		return;
	if (!connect_db(target->server, db->target_name, &conn, err, sizeof(err))) {
		report(pf, CHECK_FAIL, connect_hint(err), "database %s: could not connect on the target: %s",
		       db->target_name, err);
		return;
	}
	if (!pgsql_query(source_db, preflight_sql_table_columns, 0, NULL, &a, err, sizeof(err)) ||
	    !pgsql_query(conn, preflight_sql_table_columns, 0, NULL, &b, err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed", "database %s: %s", db->name, err);
		PQclear(a);
		PQfinish(conn);
		return;
	}
	strbuf_init(&missing);
	strbuf_init(&differ);
	/* Both lists are sorted by name: one merge pass. */
	for (i = 0, j = 0; i < PQntuples(a); i++) {
		const char *name = PQgetvalue(a, i, 0);
		int cmp = 1;

		while (j < PQntuples(b) && (cmp = strcmp(PQgetvalue(b, j, 0), name)) < 0)
			j++;
		if (j >= PQntuples(b) || cmp != 0) {
			if (nmissing++ < LIST_LIMIT)
				strbuf_appendf(&missing, "%s%s", nmissing > 1 ? ", " : "", name);
		} else if (strcmp(PQgetvalue(a, i, 1), PQgetvalue(b, j, 1)) != 0 && ndiffer++ < 3) {
			strbuf_appendf(&differ, "%s%s: source (%s), target (%s)", ndiffer > 1 ? "; " : "", name,
				       PQgetvalue(a, i, 1), PQgetvalue(b, j, 1));
		}
	}
	if (ndiffer)
		report(pf, CHECK_FAIL,
		       "make the target's tables match the source's, or drop them there and let schema = copy make them",
		       "database %s: %d table(s) differ on the target: %s", db->name, ndiffer, strbuf_str(&differ));
	if (nmissing && pf->config->replication.schema == SCHEMA_NONE)
		report(pf, CHECK_FAIL, "schema = none: create these tables on the target first",
		       "database %s: %d table(s) missing on the target: %s", db->name, nmissing, strbuf_str(&missing));
	else if (nmissing && nmissing < PQntuples(a))
		report(pf, CHECK_WARN,
		       "schema = copy restores the whole schema into the target database, where some tables exist "
		       "already: drop them there, or make the rest yourself and set schema = none",
		       "database %s: %d table(s) missing on the target: %s", db->name, nmissing, strbuf_str(&missing));
	else if (nmissing)
		report(pf, CHECK_PASS, NULL, "database %s: the target has no tables yet; schema = copy makes them",
		       db->name);
	else if (!ndiffer)
		report(pf, CHECK_PASS, NULL, "database %s: the target has all %d table(s), with the same columns",
		       db->name, PQntuples(a));
	strbuf_free(&missing);
	strbuf_free(&differ);
	PQclear(a);
	PQclear(b);
	PQfinish(conn);
}

/* The WAL this migration's slot makes the source keep, when it exists already. */
static void
check_retained_wal(Preflight *pf, Side *source, const char *slot)
{
	const char *params[1] = {slot};
	long exists, held;

	if (!query_int(pf, source, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", 1, params,
		       &exists) ||
	    !exists ||
	    !query_int(pf, source,
		       "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint "
		       "FROM pg_replication_slots WHERE slot_name = $1",
		       1, params, &held))
		return;
	if (held > pf->config->replication.slot_retention_warning)
		report(pf, CHECK_WARN,
		       "the follower is behind or stopped: start it (pghandoff run), or drop an abandoned migration's slot "
		       "with `pghandoff replicate --drop`",
		       "source: slot %s holds %ld MB of WAL, more than slot_retention_warning", slot, held >> 20);
	else
		report(pf, CHECK_PASS, NULL, "source: slot %s holds %ld MB of WAL", slot, held >> 20);
}

/* The slot and publication this migration will use, taken by something else. */
static void
check_names(Preflight *pf, Side *source, const DatabaseMapping *db)
{
	ReplNames names;
	const char *params[2];
	long foreign_slots, foreign_pubs;
	PGconn *conn = NULL;
	char err[512], buf[32];

	replicate_names(pf->config, db, &names);
	params[0] = names.slot;
	params[1] = db->name;
	if (!query_int(pf, source,
		       "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 "
		       "AND (slot_type <> 'logical' OR plugin <> 'pgoutput' OR database <> $2)",
		       2, params, &foreign_slots))
		return;
	if (foreign_slots)
		report(pf, CHECK_FAIL, "choose another slot_name in [replication], or drop that slot",
		       "source: slot %s exists and is not a pgoutput slot of database %s", names.slot, db->name);
	else
		check_retained_wal(pf, source, names.slot);
	if (!connect_db(source->server, db->name, &conn, err, sizeof(err)))
		return;
	params[0] = names.publication;
	if (!pgsql_query_copy_value(conn, "SELECT count(*) FROM pg_publication WHERE pubname = $1 AND NOT puballtables",
				    1, params, buf, sizeof(buf), err, sizeof(err))) {
		report(pf, CHECK_FAIL, "the check query failed", "database %s: %s", db->name, err);
		PQfinish(conn);
		return;
	}
	PQfinish(conn);
	foreign_pubs = strtol(buf, NULL, 10);
	if (foreign_pubs)
		report(pf, CHECK_FAIL, "choose another publication_name in [replication], or drop that publication",
		       "database %s: publication %s exists and does not publish all tables", db->name,
		       names.publication);
	if (!foreign_slots && !foreign_pubs)
		report(pf, CHECK_PASS, NULL, "database %s: slot %s and publication %s are free or pghandoff's own",
		       db->name, names.slot, names.publication);
}

/*
 * Slots and origins are per cluster: two databases whose names collide
 * would share one, and one of them would silently never be replicated.
 * The naming keeps them apart; this is the check that it did.
 */
static void
check_name_collisions(Preflight *pf)
{
	char why[512];

	if (replicate_names_collision(pf->config, why, sizeof(why)))
		report(pf, CHECK_FAIL, "rename one of the databases, or migrate them with separate configurations",
		       "%s", why);
	else if (pf->config->ndatabases > 1)
		report(pf, CHECK_PASS, NULL, "the slot and origin names of the %d databases are all different",
		       pf->config->ndatabases);
}

/* Cluster-wide: WAL a stopped follower could make the source keep, and transactions that block a cutover. */
static void
check_wal_retention(Preflight *pf, Side *source)
{
	char keep[64];
	long old;
	char threshold[32];
	const char *params[1] = {threshold};

	if (source->version >= 130000 && show_setting(pf, source, "max_slot_wal_keep_size", keep, sizeof(keep))) {
		if (strcmp(keep, "-1") == 0)
			report(pf, CHECK_WARN,
			       "a stopped follower makes the source keep WAL without bound: watch the slot (pghandoff "
			       "warns past slot_retention_warning), or set max_slot_wal_keep_size",
			       "source: max_slot_wal_keep_size = -1 (unlimited)");
		else
			report(pf, CHECK_PASS, NULL, "source: max_slot_wal_keep_size = %s", keep);
	}
	snprintf(threshold, sizeof(threshold), "%lld", (long long) (pf->config->cutover.drain_timeout / 1000));
	if (!query_int(pf, source,
		       "SELECT count(*) FROM pg_stat_activity WHERE xact_start < now() - $1::bigint * interval '1 ms' "
		       "AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
		       1, params, &old))
		return;
	if (old)
		report(pf, CHECK_WARN,
		       "a transaction open longer than drain_timeout stops a cutover (on_drain_timeout): find them in "
		       "pg_stat_activity",
		       "source: %ld transaction(s) open longer than drain_timeout", old);
	else
		report(pf, CHECK_PASS, NULL, "source: no transaction open longer than drain_timeout");
}

static void
check_database(Preflight *pf, Side *source, Side *target, const DatabaseMapping *db)
{
	PGconn *conn = NULL;
	char err[512];
	bool exists;

	if (!database_exists(pf, source, db->name, &exists))
		return;
	if (!exists) {
		report(pf, CHECK_FAIL, "remove it from [databases] or fix its name",
		       "database %s does not exist on the source", db->name);
		return;
	}
	if (target->conn) {
		if (!database_exists(pf, target, db->target_name, &exists))
			return;
		if (!exists && pf->config->replication.schema == SCHEMA_COPY)
			report(pf, CHECK_WARN, "replicate creates it, with the schema copied from the source",
			       "database %s does not exist on the target yet", db->target_name);
		else if (!exists)
			report(pf, CHECK_FAIL, "schema = none: create it on the target with the schema first",
			       "database %s does not exist on the target", db->target_name);
	}
	if (!connect_db(source->server, db->name, &conn, err, sizeof(err))) {
		report(pf, CHECK_FAIL, connect_hint(err), "database %s: could not connect on the source: %s", db->name,
		       err);
		return;
	}
	report(pf, CHECK_PASS, NULL, "database %s exists on the source", db->name);
	(void) report_rows(pf, conn, sql_tables_without_identity, CHECK_FAIL,
			   "UPDATE and DELETE on these tables fail once they are published: add a primary key, "
			   "or ALTER TABLE ... REPLICA IDENTITY FULL",
			   "tables without a primary key or replica identity",
			   "every table has a primary key or replica identity", db->name);
	(void) report_rows(pf, conn, sql_large_objects, CHECK_PASS, NULL,
			   "large objects, copied with the tables and kept in step by a diff", "no large objects",
			   db->name);
	(void) report_rows(pf, conn, sql_large_objects_unreadable, CHECK_FAIL,
			   "large objects are copied by reading pg_catalog.pg_largeobject: connect as a superuser, "
			   "or GRANT SELECT on it to the [source] user (the [target] user sets their owners: a "
			   "superuser, or a member of every owner role)",
			   "the source user cannot read pg_largeobject", "large objects can be read", db->name);
	(void) report_rows(pf, conn, sql_unreadable_tables, CHECK_FAIL,
			   "the copy reads every table: GRANT SELECT on them (or pg_read_all_data, PostgreSQL 14+) to "
			   "the [source] user",
			   "tables the source user cannot read", "the source user can read every table", db->name);
	(void) report_rows(pf, conn, sql_unlogged_tables, CHECK_WARN,
			   "unlogged tables are not replicated (they write no WAL): copy their rows after the cutover, or "
			   "ALTER TABLE ... SET LOGGED",
			   "unlogged tables", "no unlogged tables", db->name);
	(void) report_rows(pf, conn, sql_matviews, CHECK_WARN,
			   "materialized views are created but not replicated: REFRESH MATERIALIZED VIEW them on the "
			   "target after the cutover",
			   "materialized views", "no materialized views", db->name);
	(void) report_rows(pf, conn, sql_generated_columns, CHECK_WARN,
			   "generated columns are computed on the target, not copied: the target's expressions must "
			   "give the same values",
			   "generated columns", "no generated columns", db->name);
	if (target->conn) {
		check_extensions(pf, conn, target, db->name);
		if (pf->compare_tables)
			check_target_tables(pf, conn, target, db);
	}
	check_names(pf, source, db);
	PQfinish(conn);
}

bool
preflight_run(Preflight *pf)
{
	const Config *config = pf->config;
	Side source = {.server = &config->source};
	Side target = {.server = &config->target};
	int i;

	pf->npass = pf->nwarn = pf->nfail = 0;
	check_name_collisions(pf);
	(void) side_connect(pf, &source);
	(void) side_connect(pf, &target);

	if (source.conn && target.conn)
		check_versions(pf, &source, &target);
	if (source.conn) {
		check_wal_level(pf, &source, "ALTER SYSTEM SET wal_level = logical on the source, then restart it");
		check_slots_and_senders(pf, &source);
		check_replication_privilege(pf, &source);
		check_wal_retention(pf, &source);
		check_event_triggers(pf, &source, "made on the source during the migration");
	}
	if (target.conn && config->cutover.rollback)
		check_event_triggers(pf, &target, "made on the target after the cutover");
	if (target.conn && config->cutover.rollback)
		check_wal_level(pf, &target,
				"rollback = on streams changes back from the target: ALTER SYSTEM SET wal_level = "
				"logical on the target and restart it, or set rollback = off");
	if (source.conn)
		for (i = 0; i < config->ndatabases; i++)
			check_database(pf, &source, &target, &config->databases[i]);

	if (source.conn)
		PQfinish(source.conn);
	if (target.conn)
		PQfinish(target.conn);
	return pf->nfail == 0;
}
