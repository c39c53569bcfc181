/*
 * `pghandoff check`: the preflight checks, one line each, as they complete.
 */
#include "cli/cli.h"
#include "replicator/preflight.h"

#include <stdio.h>

static void
print_check(void *arg, CheckStatus status, const char *message, const char *hint)
{
	FILE *out = arg;

	fprintf(out, "%s  %s\n", check_status_name(status), message);
	if (hint)
		fprintf(out, "      hint: %s\n", hint);
	fflush(out);
}

int
cmd_check(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	Preflight pf = {.emit = print_check, .arg = stdout};
	int rc = cli_load_config(cmd, argc, argv, &config);
	bool ok;

	if (rc >= 0)
		return rc;
	pf.config = &config;
	ok = preflight_run(&pf);
	printf("\n%d passed, %d warnings, %d failed\n", pf.npass, pf.nwarn, pf.nfail);
	config_free(&config);
	return ok ? 0 : EXIT_PROBLEM;
}
