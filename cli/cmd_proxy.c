/*
 * `pghandoff proxy`: the proxy in the foreground until it is told to stop.
 */
#include "cli/cli.h"
#include "proxy/proxy.h"

#include <stdlib.h>

int
cmd_proxy(const CliCommand *cmd, int argc, char **argv)
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
	rc = proxy_main(path);
	free(path);
	return rc;
}
