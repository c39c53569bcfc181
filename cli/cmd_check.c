/*
 * `pghandoff check`: the preflight checks, one line each, as they complete.
 */
#include "cli/cli.h"
#include "cli/console.h"
#include "replicator/preflight.h"

#include <stdio.h>
#include <string.h>

static void
print_check(void *arg, CheckStatus status, const char *message, const char *hint)
{
	FILE *out = arg;

	fprintf(out, "%s  %s\n", check_status_name(status), message);
	if (hint)
		fprintf(out, "      hint: %s\n", hint);
	fflush(out);
}

static const char *
report_value(PGresult *res, const char *field)
{
	int i;

	for (i = 0; i < PQntuples(res); i++)
		if (strcmp(PQgetvalue(res, i, 0), field) == 0)
			return PQgetvalue(res, i, 1);
	return "";
}

/*
 * What a cutover would do with the clients connected now: the running
 * proxy's CUTOVER DRY RUN, when a proxy with this configuration runs.
 */
static void
check_clients(Preflight *pf, const Config *config)
{
	PGconn *conn = console_connect(config, false);
	PGresult *res;

	if (!conn) {
		pf->npass++;
		print_check(stdout, CHECK_PASS, "proxy: not running with this configuration, no clients to move yet",
			    NULL);
		return;
	}
	res = PQexec(conn, "CUTOVER DRY RUN");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char line[1024];

		PQclear(res);
		res = PQexec(conn, "SHOW CUTOVER");
		snprintf(line, sizeof(line), "proxy: a cutover now would be refused: %s",
			 PQresultStatus(res) == PGRES_TUPLES_OK ? report_value(res, "reason") : PQerrorMessage(conn));
		pf->nwarn++;
		print_check(stdout, CHECK_WARN, line, "fix this before `pghandoff cutover`");
	} else if (strcmp(report_value(res, "clients_unmovable"), "0") != 0) {
		char line[2048];

		snprintf(line, sizeof(line), "proxy: %s client(s) connected, %s cannot move: %s",
			 report_value(res, "clients"), report_value(res, "clients_unmovable"),
			 report_value(res, "client_list"));
		pf->nwarn++;
		print_check(stdout, CHECK_WARN, line,
			    "with unmovable = terminate these sessions are ended at the cutover (the application must "
			    "reconnect); with unmovable = abort they stop it");
	} else {
		char line[2048];

		snprintf(line, sizeof(line),
			 "proxy: %s client(s) connected, all can move; catch-up takes about %s ms, the diff of large "
			 "objects %s ms",
			 report_value(res, "clients"), report_value(res, "catch_up_estimate_ms"),
			 report_value(res, "large_object_diff_estimate_ms"));
		pf->npass++;
		print_check(stdout, CHECK_PASS, line, NULL);
	}
	PQclear(res);
	PQfinish(conn);
}

int
cmd_check(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	Preflight pf = {.emit = print_check, .arg = stdout, .compare_tables = true};
	int rc = cli_load_config(cmd, argc, argv, &config);
	bool ok;

	if (rc >= 0)
		return rc;
	pf.config = &config;
	ok = preflight_run(&pf);
	check_clients(&pf, &config);
	printf("\n%d passed, %d warnings, %d failed\n", pf.npass, pf.nwarn, pf.nfail);
	config_free(&config);
	return ok ? 0 : EXIT_PROBLEM;
}
