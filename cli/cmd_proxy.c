/*
 * `pghandoff proxy` and `pghandoff run`: the proxy in the foreground until it
 * is told to stop; under `run`, with the follower as its child.
 */
#include "cli/cli.h"
#include "proxy/proxy.h"

#include <stdlib.h>

static int
run_proxy(const CliCommand *cmd, int argc, char **argv, bool with_follower)
{
	Config config;
	char *path;
	int rc = cli_load_config(cmd, argc, argv, &config);

	if (rc >= 0)
		return rc;
	/* The proxy loads the file itself, so that RELOAD reads it the same way. */
	path = config.path;
	config.path = NULL;
	config_free(&config);
	rc = proxy_main(path, with_follower);
	free(path);
	return rc;
}

int
cmd_proxy(const CliCommand *cmd, int argc, char **argv)
{
	return run_proxy(cmd, argc, argv, false);
}

int
cmd_run(const CliCommand *cmd, int argc, char **argv)
{
	return run_proxy(cmd, argc, argv, true);
}
