/*
 * Where a cluster ([source] or [target]) is and how to reach it: its address
 * resolved once (at start and on reload), its TLS mode and context, in the
 * terms of libpq's connection keywords so users configure it as for psql.
 */
#ifndef PGHANDOFF_PROXY_CLUSTER_H
#define PGHANDOFF_PROXY_CLUSTER_H

#include <stdbool.h>
#include <sys/socket.h>
#include <openssl/ssl.h>

#include "config/config.h"

typedef enum SslMode {
	SSLMODE_DISABLE,
	SSLMODE_ALLOW,
	SSLMODE_PREFER,
	SSLMODE_REQUIRE,
	SSLMODE_VERIFY_CA,
	SSLMODE_VERIFY_FULL,
} SslMode;

typedef struct Cluster {
	const char *role;
	char host[256]; /* as configured: a name, an address or a socket directory */
	int port;
	char user[64];
	char password[256];
	struct sockaddr_storage addr;
	socklen_t addrlen;
	SslMode sslmode;
	SSL_CTX *tls; /* NULL when sslmode is disable */
} Cluster;

/* Resolves server's settings (conninfo first, then the explicit keys, as libpq does). */
bool cluster_resolve(Cluster *cluster, const ServerConfig *server) __attribute__((warn_unused_result));
void cluster_clear(Cluster *cluster);

#endif
