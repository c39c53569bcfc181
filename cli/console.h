/*
 * A libpq connection to the running proxy's admin console.
 */
#ifndef PGHANDOFF_CLI_CONSOLE_H
#define PGHANDOFF_CLI_CONSOLE_H

#include <stdbool.h>
#include <libpq-fe.h>

#include "config/config.h"

/* NULL when the proxy cannot be reached; verbose: say why, and print the console's notices on stderr. */
PGconn *console_connect(const Config *config, bool verbose);

#endif
