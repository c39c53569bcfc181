/*
 * `pghandoff status [--watch] [--json]`: where the migration stands, read
 * from the running proxy's admin console (SHOW REPLICATION, SHOW DATABASES,
 * SHOW SERVERS, SHOW POOLS, SHOW FENCE, SHOW CUTOVER JSON).  With --watch it refreshes every second:
 * on a terminal the screen is redrawn with a progress bar per copy, anywhere
 * else one block of plain lines follows another.
 */
#include "cli/cli.h"
#include "cli/console.h"
#include "common/strbuf.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 40

static volatile sig_atomic_t stop_watching;

static void
on_sigint(int signo)
{
	(void) signo;
	stop_watching = 1;
}

static PGresult *
console_query(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pghandoff: %s: %s", sql, PQerrorMessage(conn));
		PQclear(res);
		return NULL;
	}
	return res;
}

static const char *
field(PGresult *res, int row, const char *name)
{
	int col = PQfnumber(res, name);

	return col >= 0 ? PQgetvalue(res, row, col) : "";
}

static void
human_bytes(double bytes, char *buf, size_t len)
{
	static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
	int u = 0;

	while (bytes >= 1024 && u < 4) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static void
count_connections(PGresult *dbs, PGresult *servers, int *clients, int *source, int *target)
{
	int i;

	*clients = *source = *target = 0;
	for (i = 0; i < PQntuples(dbs); i++)
		*clients += (int) strtol(field(dbs, i, "clients"), NULL, 10);
	for (i = 0; i < PQntuples(servers); i++) {
		if (strcmp(field(servers, i, "state"), "retiring") == 0)
			continue; /* left by its client at a cutover, closing */
		if (strcmp(field(servers, i, "cluster"), "target") == 0)
			(*target)++;
		else
			(*source)++;
	}
}

/* SHOW POOLS' maxwait and maxwait_us, in seconds. */
static double
pool_maxwait(PGresult *pools, int row)
{
	return strtod(field(pools, row, "maxwait"), NULL) + strtod(field(pools, row, "maxwait_us"), NULL) / 1e6;
}

/* One line per pool (database, user), PgBouncer's columns; nothing before the first login. */
static void
print_pools(FILE *out, PGresult *pools)
{
	static const char *const counts[] = {"cl_active", "cl_waiting", "sv_active", "sv_idle",
					     "sv_used",   "sv_tested",  "sv_login"};
	size_t c;
	int i;

	if (PQntuples(pools) == 0)
		return;
	fprintf(out, "%-16s %-16s %-11s", "pool", "user", "mode");
	for (c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
		fprintf(out, " %-10s", counts[c]);
	fprintf(out, " %s\n", "maxwait");
	for (i = 0; i < PQntuples(pools); i++) {
		fprintf(out, "%-16s %-16s %-11s", field(pools, i, "database"), field(pools, i, "user"),
			field(pools, i, "pool_mode"));
		for (c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
			fprintf(out, " %-10s", field(pools, i, counts[c]));
		fprintf(out, " %.3f s\n", pool_maxwait(pools, i));
	}
}

/* SHOW FENCE: one row per cluster (cluster, fenced, cleanup_pending, detail). */
static bool
fence_row(PGresult *fence, const char *cluster, bool *fenced, bool *pending, const char **detail)
{
	int i;

	for (i = 0; i < PQntuples(fence); i++) {
		if (strcmp(field(fence, i, "cluster"), cluster) != 0)
			continue;
		*fenced = strcmp(field(fence, i, "fenced"), "t") == 0;
		*pending = strcmp(field(fence, i, "cleanup_pending"), "t") == 0;
		*detail = field(fence, i, "detail");
		return true;
	}
	*fenced = *pending = false;
	*detail = "";
	return false;
}

static void
print_fence(FILE *out, PGresult *fence)
{
	static const char *const clusters[] = {"source", "target"};
	const char *detail, *pending_detail = NULL;
	bool fenced, pending;
	size_t i;

	for (i = 0; i < 2; i++) {
		(void) fence_row(fence, clusters[i], &fenced, &pending, &detail);
		if (pending && fenced)
			fprintf(out,
				"WARNING: the %s is still fenced (read-only) after an aborted cutover or rollback; "
				"unfencing is retried: %s\n",
				clusters[i], detail);
		else if (fenced)
			fprintf(out, "fenced: the %s (read-only: clients are served by the other cluster)\n",
				clusters[i]);
		if (pending && !pending_detail)
			pending_detail = detail;
	}
	if (pending_detail && !strstr(pending_detail, "still fenced"))
		fprintf(out,
			"WARNING: an aborted cutover or rollback left objects behind; dropping them is retried: %s\n",
			pending_detail);
}

static void
print_text(FILE *out, PGresult *repl, PGresult *dbs, PGresult *servers, PGresult *pools, PGresult *fence,
	   PGresult *cutover, bool tty)
{
	int i, source, target, clients;

	fprintf(out, "%-16s %-12s %-9s %-23s %-11s %-7s %-12s %-9s %s\n", "database", "phase", "tables", "copied",
		"rate", "eta", "lag", "lag time", "apply rate");
	for (i = 0; i < PQntuples(repl); i++) {
		char done[16], total[16], copied[40], rate[24], lag[24], eta[16], tables[16], lagt[16], apply[24];
		double d = strtod(field(repl, i, "copied_bytes"), NULL),
		       t = strtod(field(repl, i, "total_bytes"), NULL);
		const char *phase = field(repl, i, "phase");
		bool copying = strcmp(phase, "copy") == 0;

		human_bytes(d, done, sizeof(done));
		human_bytes(t, total, sizeof(total));
		snprintf(copied, sizeof(copied), "%s / %s", done, total);
		human_bytes(strtod(field(repl, i, "copy_rate_bytes"), NULL), rate, sizeof(rate));
		strncat(rate, "/s", sizeof(rate) - strlen(rate) - 1);
		human_bytes(strtod(field(repl, i, "lag_bytes"), NULL), lag, sizeof(lag));
		snprintf(eta, sizeof(eta), "%s%s", field(repl, i, "eta_seconds"),
			 field(repl, i, "eta_seconds")[0] ? " s" : "-");
		snprintf(tables, sizeof(tables), "%s/%s", field(repl, i, "tables_done"),
			 field(repl, i, "tables_total"));
		snprintf(lagt, sizeof(lagt), "%s s", field(repl, i, "lag_seconds"));
		snprintf(apply, sizeof(apply), "%s/s", field(repl, i, "apply_rate"));
		fprintf(out, "%-16s %-12s %-9s %-23s %-11s %-7s %-12s %-9s %s\n", field(repl, i, "database"), phase,
			tables, copied, copying ? rate : "-", copying ? eta : "-", lag, lagt, apply);
		if (copying && tty && t > 0) {
			int filled = (int) (BAR_WIDTH * (d > t ? 1.0 : d / t));
			char bar[BAR_WIDTH + 1];

			memset(bar, '#', (size_t) filled);
			memset(bar + filled, '-', (size_t) (BAR_WIDTH - filled));
			bar[BAR_WIDTH] = '\0';
			fprintf(out, "%-16s [%s] %3.0f%%\n", "", bar, d > t ? 100.0 : 100.0 * d / t);
		}
	}
	count_connections(dbs, servers, &clients, &source, &target);
	fprintf(out, "clients: %d   server connections: source %d, target %d\n", clients, source, target);
	print_pools(out, pools);
	print_fence(out, fence);
	if (cutover && PQntuples(cutover) == 1 && strcmp(PQgetvalue(cutover, 0, 0), "{}") != 0)
		fprintf(out, "last cutover: %s\n", PQgetvalue(cutover, 0, 0));
}

/*
 * SHOW POOLS as JSON objects: the names as strings, the counts as numbers,
 * maxwait in seconds (maxwait_us folded in).
 */
static void
append_pools_json(StrBuf *sb, PGresult *pools)
{
	static const char *const names[] = {"database", "user", "pool_mode"};
	static const char *const counts[] = {"cl_active", "cl_waiting", "sv_active", "sv_idle",
					     "sv_used",   "sv_tested",  "sv_login"};
	size_t c;
	int i;

	for (i = 0; i < PQntuples(pools); i++) {
		strbuf_append(sb, i ? ", {" : "{");
		for (c = 0; c < sizeof(names) / sizeof(names[0]); c++) {
			strbuf_append(sb, c ? ", " : "");
			strbuf_append_json(sb, names[c]);
			strbuf_append(sb, ": ");
			strbuf_append_json(sb, field(pools, i, names[c]));
		}
		for (c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
			strbuf_appendf(sb, ", \"%s\": %ld", counts[c], strtol(field(pools, i, counts[c]), NULL, 10));
		strbuf_appendf(sb, ", \"maxwait\": %.6f}", pool_maxwait(pools, i));
	}
}

static void
print_json(FILE *out, PGresult *repl, PGresult *dbs, PGresult *servers, PGresult *pools, PGresult *fence,
	   PGresult *cutover)
{
	bool source_fenced, target_fenced, source_pending, target_pending;
	const char *source_detail, *target_detail;
	static const char *const numeric[] =
		{"tables_done",     "tables_total",        "copied_bytes", "total_bytes",
		 "copy_rate_bytes", "eta_seconds",         "lag_bytes",    "lag_seconds",
		 "apply_rate",      "updated_seconds_ago", "pid",          "slot_lag_bytes"};
	StrBuf sb;
	int i, c, clients, source, target;

	strbuf_init(&sb);
	strbuf_append(&sb, "{\"databases\": [");
	for (i = 0; i < PQntuples(repl); i++) {
		strbuf_append(&sb, i ? ", {" : "{");
		for (c = 0; c < PQnfields(repl); c++) {
			const char *name = PQfname(repl, c), *value = PQgetvalue(repl, i, c);
			bool number = false;
			size_t k;

			for (k = 0; k < sizeof(numeric) / sizeof(numeric[0]); k++)
				number |= strcmp(name, numeric[k]) == 0;
			strbuf_append(&sb, c ? ", " : "");
			strbuf_append_json(&sb, name);
			strbuf_append(&sb, ": ");
			if (number && value[0])
				strbuf_append(&sb, value);
			else if (number)
				strbuf_append(&sb, "null");
			else
				strbuf_append_json(&sb, value);
		}
		strbuf_append_char(&sb, '}');
	}
	count_connections(dbs, servers, &clients, &source, &target);
	(void) fence_row(fence, "source", &source_fenced, &source_pending, &source_detail);
	(void) fence_row(fence, "target", &target_fenced, &target_pending, &target_detail);
	strbuf_appendf(&sb, "], \"fenced\": {\"source\": %s, \"target\": %s}, \"cleanup_pending\": ",
		       source_fenced ? "true" : "false", target_fenced ? "true" : "false");
	if (source_pending || target_pending)
		strbuf_append_json(&sb, source_pending ? source_detail : target_detail);
	else
		strbuf_append(&sb, "null");
	strbuf_appendf(&sb, ", \"clients\": %d, \"servers\": {\"source\": %d, \"target\": %d}, \"pools\": [", clients,
		       source, target);
	append_pools_json(&sb, pools);
	strbuf_appendf(&sb, "], \"last_cutover\": %s}",
		       cutover && PQntuples(cutover) == 1 && strcmp(PQgetvalue(cutover, 0, 0), "{}") != 0
			       ? PQgetvalue(cutover, 0, 0)
			       : "null");
	fprintf(out, "%s\n", strbuf_str(&sb));
	strbuf_free(&sb);
}

static bool
show_once(PGconn *conn, bool json, bool tty)
{
	PGresult *repl = console_query(conn, "SHOW REPLICATION");
	PGresult *dbs = repl ? console_query(conn, "SHOW DATABASES") : NULL;
	PGresult *servers = dbs ? console_query(conn, "SHOW SERVERS") : NULL;
	PGresult *pools = servers ? console_query(conn, "SHOW POOLS") : NULL;
	PGresult *fence = pools ? console_query(conn, "SHOW FENCE") : NULL;
	PGresult *cutover = fence ? console_query(conn, "SHOW CUTOVER JSON") : NULL;
	bool ok = cutover != NULL;

	if (ok && json)
		print_json(stdout, repl, dbs, servers, pools, fence, cutover);
	else if (ok)
		print_text(stdout, repl, dbs, servers, pools, fence, cutover, tty);
	fflush(stdout);
	PQclear(repl);
	PQclear(dbs);
	PQclear(servers);
	PQclear(pools);
	PQclear(fence);
	PQclear(cutover);
	return ok;
}

int
cmd_status(const CliCommand *cmd, int argc, char **argv)
{
	bool json = false, watch = false, tty = isatty(STDOUT_FILENO);
	PGconn *conn;
	int i, n = 0, rc;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--watch") == 0)
			watch = true;
		else
			argv[n++] = argv[i];
	}
	rc = console_open(cmd, n, argv, &conn);
	if (rc >= 0)
		return rc;
	signal(SIGINT, on_sigint);
	rc = 0;
	do {
		struct timespec second = {1, 0};

		if (watch && tty && !json)
			fputs("\033[H\033[2J", stdout); /* home, clear: redraw in place */
		if (!show_once(conn, json, tty)) {
			rc = EXIT_PROBLEM;
			break;
		}
		if (watch && !(tty && !json))
			putchar('\n');
		if (watch)
			nanosleep(&second, NULL);
	} while (watch && !stop_watching);
	PQfinish(conn);
	return rc;
}
