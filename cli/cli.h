/*
 * The command-line front end: one function per command, sharing option
 * parsing and configuration loading.  Exit status: 0 success, 1 the command
 * ran and found a problem (a failed check), 2 bad usage or configuration.
 */
#ifndef PGHANDOFF_CLI_CLI_H
#define PGHANDOFF_CLI_CLI_H

#include <stdbool.h>

#include "config/config.h"

#define EXIT_PROBLEM 1
#define EXIT_USAGE 2

typedef struct CliCommand {
	const char *name;
	const char *summary;
	const char *help; /* printed by `pghandoff COMMAND --help` */
	int (*run)(const struct CliCommand *cmd, int argc, char **argv);
} CliCommand;

/*
 * Parses the options every command takes (-c FILE, --help) and loads the
 * configuration.  Returns -1 to go on, or the exit status to return.
 */
int cli_load_config(const CliCommand *cmd, int argc, char **argv, Config *config);

int cmd_config(const CliCommand *cmd, int argc, char **argv);
int cmd_check(const CliCommand *cmd, int argc, char **argv);
int cmd_proxy(const CliCommand *cmd, int argc, char **argv);
int cmd_run(const CliCommand *cmd, int argc, char **argv);
int cmd_replicate(const CliCommand *cmd, int argc, char **argv);
int cmd_cutover(const CliCommand *cmd, int argc, char **argv);
int cmd_status(const CliCommand *cmd, int argc, char **argv);
int cmd_verify(const CliCommand *cmd, int argc, char **argv);
int cmd_rollback(const CliCommand *cmd, int argc, char **argv);

#endif
