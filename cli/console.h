/*
 * A libpq connection to the running proxy's admin console.
 */
#ifndef PGHANDOFF_CLI_CONSOLE_H
#define PGHANDOFF_CLI_CONSOLE_H

#include <stdbool.h>
#include <libpq-fe.h>

#include "config/config.h"

/*
 * For a command that talks to the running proxy: loads the configuration
 * from its options (after the caller took its own flags out) and connects.
 * Returns -1 with *conn set to go on, or the exit status to return.
 */
struct CliCommand;
int console_open(const struct CliCommand *cmd, int argc, char **argv, PGconn **conn);

/* NULL when the proxy cannot be reached; verbose: say why, and print the console's notices on stderr. */
PGconn *console_connect(const Config *config, bool verbose);

#endif
