/*
 * Whether the forward publication publishes partitions through their root
 * tables: decided once, when the publication is made, from how the target
 * partitions each partitioned table of the source; read back from
 * pg_publication ever after.
 */
#include "replicator/partitions.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "replicator/slots.h"
#include "replicator/preflight.h"

#include <string.h>

/*
 * Every partitioned root table with a description of its whole tree: each
 * member's name, kind, parent, bound and partition key.  Two trees with the
 * same description hold the same partitions, so rows published per
 * partition fit the target's.  Sorted byte-wise, for a merge.
 */
static const char sql_trees[] =
	"WITH RECURSIVE tree(root, relid, parent) AS ("
	"  SELECT c.oid, c.oid, 0::oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"  WHERE c.relkind = 'p' AND NOT c.relispartition AND c.relpersistence = 'p' "
	"    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "
	"  UNION ALL "
	"  SELECT t.root, i.inhrelid, t.relid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid) "
	"SELECT format('%I.%I', rn.nspname, r.relname) COLLATE \"C\", "
	"  string_agg(format('%I.%I %s of %s %s %s', n.nspname, c.relname, c.relkind, "
	"                    CASE WHEN p.oid IS NULL THEN '-' ELSE format('%I.%I', pn.nspname, p.relname) END, "
	"                    coalesce(pg_get_expr(c.relpartbound, c.oid), '-'), "
	"                    coalesce(pg_get_partkeydef(c.oid), '-')), "
	"             '; ' ORDER BY n.nspname COLLATE \"C\", c.relname COLLATE \"C\") "
	"FROM tree t JOIN pg_class r ON r.oid = t.root JOIN pg_namespace rn ON rn.oid = r.relnamespace "
	"JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace "
	"LEFT JOIN pg_class p ON p.oid = t.parent LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace "
	"GROUP BY 1 ORDER BY 1";

/*
 * Partitioned tables without a replica identity of their own.  Published
 * through the root, a change carries the root's key columns: without any,
 * an update or delete would find no row on the target.
 */
static const char sql_roots_without_identity[] =
	"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	"WHERE c.relkind = 'p' AND NOT c.relispartition AND c.relpersistence = 'p' "
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "
	"  AND " PREFLIGHT_SQL_NO_REPLICA_IDENTITY " "
	"ORDER BY 1";

/* Bounds print their values: timestamptz ones in the session's time zone, the same on both sides. */
static bool
list_trees(ReplConn *conn, PGresult **res)
{
	bool ok;

	if (!repl_exec(conn, "BEGIN; SET LOCAL TimeZone = 'UTC'"))
		return false;
	ok = repl_query(conn, sql_trees, 0, NULL, res);
	if (!repl_exec(conn, ok ? "COMMIT" : "ROLLBACK") && ok) {
		PQclear(*res);
		*res = NULL;
		ok = false;
	}
	return ok;
}

static bool
roots_have_identity(ReplConn *source, const char *subject)
{
	PGresult *res;
	StrBuf names;
	int i, n;

	if (!repl_query(source, sql_roots_without_identity, 0, NULL, &res))
		return false;
	n = PQntuples(res);
	strbuf_init(&names);
	for (i = 0; i < n; i++)
		strbuf_appendf(&names, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
	if (n > 0)
		log_error(subject,
			  "%d partitioned table(s) have no primary key or replica identity of their own (%s): "
			  "replicated through their root tables, their updates and deletes could not be applied on the "
			  "target; add a primary key to each, or ALTER TABLE ... REPLICA IDENTITY FULL on the source",
			  n, strbuf_str(&names));
	strbuf_free(&names);
	PQclear(res);
	return n == 0;
}

/*
 * The partitioned tables of the source whose tree the target does not have
 * under the same name, listed in names; with warn, each is named in a
 * warning of its own, so that a DBA who searches the log for it finds it.
 */
static bool
differing_roots(ReplConn *source, ReplConn *target, bool warn, StrBuf *names, int *count, const char *subject)
{
	PGresult *s = NULL, *t = NULL;
	int i, j = 0, ns, nt;

	*count = 0;
	if (!list_trees(source, &s) || !list_trees(target, &t)) {
		PQclear(s);
		return false;
	}
	ns = PQntuples(s);
	nt = PQntuples(t);
	for (i = 0; i < ns; i++) {
		const char *name = PQgetvalue(s, i, 0);
		int cmp = 1;

		while (j < nt && (cmp = strcmp(PQgetvalue(t, j, 0), name)) < 0)
			j++;
		if (j < nt && cmp == 0 && strcmp(PQgetvalue(s, i, 1), PQgetvalue(t, j, 1)) == 0)
			continue;
		strbuf_appendf(names, "%s%s", (*count)++ ? ", " : "", name);
		if (warn)
			log_warning(subject,
				    "table %s is partitioned differently on the target: it is replicated through "
				    "its root table, and PostgreSQL does not replicate a TRUNCATE of a single partition in "
				    "this mode (a TRUNCATE of the root table is replicated): do not truncate single "
				    "partitions of it during the migration",
				    name);
	}
	PQclear(s);
	PQclear(t);
	return true;
}

bool
partitions_publish_mode(const Config *config, ReplConn *source, ReplConn *target, const char *publication,
			bool *via_root, const char *subject)
{
	StrBuf differing;
	bool exists, ok = true;
	int ndiffer;

	if (!slots_publication_state(source, publication, &exists, via_root))
		return false;
	/* A target restored from the source partitions like it: nothing to check. */
	if (config->replication.schema == SCHEMA_COPY)
		return true;
	strbuf_init(&differing);
	/* Only a publication through the roots, or one that will be, replicates tables that way. */
	if (!differing_roots(source, target, exists ? *via_root : source->version >= PUBVIAROOT_MIN_VERSION, &differing,
			     &ndiffer, subject)) {
		strbuf_free(&differing);
		return false;
	}
	if (!exists) {
		*via_root = ndiffer > 0;
		if (*via_root && source->version < PUBVIAROOT_MIN_VERSION) {
			log_error(subject,
				  "the target partitions %d table(s) differently from the source (%s), and a source "
				  "older than PostgreSQL 13 can publish partitions only one by one: partition them on the "
				  "target like on the source",
				  ndiffer, strbuf_str(&differing));
			ok = false;
		}
	} else if (!*via_root && ndiffer > 0) {
		log_error(subject,
			  "publication %s publishes partitions one by one, as the target partitioned every "
			  "table like the source when it was made, but now the target partitions %d table(s) "
			  "differently (%s): run `pghandoff replicate --drop` and start again, so that the new "
			  "publication replicates them through their root tables",
			  publication, ndiffer, strbuf_str(&differing));
		ok = false;
	} else if (*via_root && ndiffer == 0) {
		/* Still correct, only without TRUNCATE of single partitions: no reason to stop. */
		log_warning(subject,
			    "publication %s replicates partitioned tables through their root tables, though the "
			    "target now partitions every table like the source; to replicate partitions one by one "
			    "again, run `pghandoff replicate --drop` and start again",
			    publication);
	}
	strbuf_free(&differing);
	return ok && (!*via_root || roots_have_identity(source, subject));
}
