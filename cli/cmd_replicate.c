/*
 * `pghandoff replicate [--drop]`: the follower in the foreground.
 */
#include "cli/cli.h"
#include "replicator/replicate.h"

#include <stdio.h>
#include <string.h>

int
cmd_replicate(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	bool drop = false;
	int i, n = 0, rc;

	/* --drop is ours; the rest is the common options. */
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--drop") == 0)
			drop = true;
		else
			argv[n++] = argv[i];
	}
	rc = cli_load_config(cmd, n, argv, &config);
	if (rc >= 0)
		return rc;
	if (!log_open(config.log.level, config.log.format, config.log.file)) {
		config_free(&config);
		return EXIT_USAGE;
	}
	rc = replicate_main(&config, drop);
	config_free(&config);
	log_close();
	return rc;
}
