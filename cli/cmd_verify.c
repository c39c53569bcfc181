/*
 * `pghandoff verify`: the online, consistent comparison (replicator/verify.c).
 */
#include "cli/cli.h"
#include "replicator/verify.h"

int
cmd_verify(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	int rc = cli_load_config(cmd, argc, argv, &config);

	if (rc >= 0)
		return rc;
	if (!log_open(config.log.level, config.log.format, config.log.file)) {
		config_free(&config);
		return EXIT_USAGE;
	}
	rc = verify_main(&config, stdout);
	config_free(&config);
	log_close();
	return rc;
}
