/*
 * The proxy as a whole: `pghandoff proxy` and `pghandoff run` run proxy_main
 * until SIGTERM, SIGINT or the admin console's SHUTDOWN.
 */
#ifndef PGHANDOFF_PROXY_PROXY_H
#define PGHANDOFF_PROXY_PROXY_H

#include <stdbool.h>

/*
 * Returns the process exit status: 0 after a clean stop, 2 on a bad
 * configuration.  with_follower (`pghandoff run`): `pghandoff replicate` runs
 * as a child, started again if it dies, stopped with the proxy.
 */
int proxy_main(const char *config_path, bool with_follower);

#endif
