/*
 * `pghandoff cutover [--dry-run] [--json]` and `pghandoff rollback [--json]`:
 * a client of the running proxy's admin console.  The phases arrive as
 * notices and are printed as they happen; the report follows.
 *
 */
#include "cli/cli.h"
#include "cli/console.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
print_report(PGresult *res, bool json)
{
	int i;

	if (json) {
		if (PQntuples(res) == 1)
			printf("%s\n", PQgetvalue(res, 0, 0));
		return;
	}
	for (i = 0; i < PQntuples(res); i++)
		printf("%-22s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
}

static int
run(const CliCommand *cmd, int argc, char **argv, const char *command)
{
	bool json = false, dry_run = false;
	PGconn *conn;
	PGresult *res;
	int i, n = 0, rc;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (strcmp(argv[i], "--dry-run") == 0 && strcmp(cmd->name, "cutover") == 0)
			dry_run = true;
		else
			argv[n++] = argv[i];
	}
	rc = console_open(cmd, n, argv, &conn);
	if (rc >= 0)
		return rc;
	res = PQexec(conn, dry_run ? "CUTOVER DRY RUN" : command);
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		rc = 0;
		if (json) {
			PQclear(res);
			res = PQexec(conn, "SHOW CUTOVER JSON");
		}
		print_report(res, json);
	} else {
		fprintf(stderr, "pghandoff: %s", PQresultErrorMessage(res));
		rc = EXIT_PROBLEM;
		PQclear(res);
		res = PQexec(conn, json ? "SHOW CUTOVER JSON" : "SHOW CUTOVER");
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			print_report(res, json);
	}
	/* A dry run that found the cutover would be refused says so in its exit status. */
	if (rc == 0 && dry_run && !json && PQntuples(res) > 1 && strcmp(PQgetvalue(res, 1, 1), "ready") != 0)
		rc = EXIT_PROBLEM;
	PQclear(res);
	PQfinish(conn);
	return rc;
}

int
cmd_cutover(const CliCommand *cmd, int argc, char **argv)
{
	return run(cmd, argc, argv, "CUTOVER");
}

int
cmd_rollback(const CliCommand *cmd, int argc, char **argv)
{
	return run(cmd, argc, argv, "ROLLBACK");
}
