/*
 * The proxy as a whole: `pghandoff proxy` runs proxy_main until SIGTERM,
 * SIGINT or the admin console's SHUTDOWN.
 */
#ifndef PGHANDOFF_PROXY_PROXY_H
#define PGHANDOFF_PROXY_PROXY_H

/* Returns the process exit status: 0 after a clean stop, 2 on a bad configuration. */
int proxy_main(const char *config_path);

#endif
