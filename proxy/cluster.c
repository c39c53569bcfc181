/*
 * Resolving [source] and [target] for the proxy's own server connections.
 * The same settings drive libpq elsewhere (check, replication), so they are
 * read the way libpq reads them: a conninfo string, overridden by explicit
 * keys, then libpq's defaults (PGHOST, PGPORT, PGSSLMODE...).
 */
#include "proxy/cluster.h"
#include "common/log.h"

#include <libpq-fe.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static const char *
option_value(PQconninfoOption *opts, const char *name)
{
	PQconninfoOption *o;

	for (o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, name) == 0 && o->val && o->val[0])
			return o->val;
	return NULL;
}

static bool
parse_sslmode(const char *s, SslMode *mode)
{
	static const char *const names[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0) {
			*mode = (SslMode) i;
			return true;
		}
	}
	return false;
}

static bool
make_tls_context(Cluster *cluster, PQconninfoOption *opts)
{
	const char *rootcert = option_value(opts, "sslrootcert");
	const char *cert = option_value(opts, "sslcert");
	const char *key = option_value(opts, "sslkey");
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		log_error(cluster->role, "could not create a TLS context");
		return false;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (cluster->sslmode >= SSLMODE_VERIFY_CA || (cluster->sslmode == SSLMODE_REQUIRE && rootcert)) {
		/* Like libpq: require verifies only when a root certificate is given. */
		if (!rootcert || SSL_CTX_load_verify_locations(ctx, rootcert, NULL) != 1) {
			log_error(cluster->role, "could not load sslrootcert \"%s\"",
				  rootcert ? rootcert : "(not set)");
			SSL_CTX_free(ctx);
			return false;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (cluster->sslmode == SSLMODE_VERIFY_FULL) {
		X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);

		X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (!X509_VERIFY_PARAM_set1_host(param, cluster->host, 0)) {
			SSL_CTX_free(ctx);
			return false;
		}
	}
	if (cert && key) {
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
			log_error(cluster->role, "could not load sslcert \"%s\" / sslkey \"%s\"", cert, key);
			SSL_CTX_free(ctx);
			return false;
		}
	}
	ERR_clear_error();
	cluster->tls = ctx;
	return true;
}

static bool
resolve_address(Cluster *cluster)
{
	struct addrinfo hints, *res = NULL;
	char port[16];
	int rc;

	if (cluster->host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *) &cluster->addr;
		int n;

		memset(un, 0, sizeof(*un));
		un->sun_family = AF_UNIX;
		n = snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", cluster->host, cluster->port);
		if (n < 0 || (size_t) n >= sizeof(un->sun_path)) {
			log_error(cluster->role, "socket path too long: %s", cluster->host);
			return false;
		}
		cluster->addrlen = sizeof(*un);
		return true;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", cluster->port);
	rc = getaddrinfo(cluster->host, port, &hints, &res);
	if (rc != 0 || !res) {
		log_error(cluster->role, "could not resolve \"%s\": %s", cluster->host, gai_strerror(rc));
		return false;
	}
	memcpy(&cluster->addr, res->ai_addr, res->ai_addrlen);
	cluster->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return true;
}

bool
cluster_resolve(Cluster *cluster, const ServerConfig *server)
{
	PQconninfoOption *opts;
	const char *v;
	char *err = NULL;

	memset(cluster, 0, sizeof(*cluster));
	cluster->role = server->role;
	opts = PQconninfoParse(server->conninfo ? server->conninfo : "", &err);
	if (!opts) {
		log_error(cluster->role, "invalid conninfo: %s", err ? err : "out of memory");
		PQfreemem(err);
		return false;
	}
	v = server->host[0] ? server->host : option_value(opts, "host");
	if (!v)
		v = getenv("PGHOST");
	snprintf(cluster->host, sizeof(cluster->host), "%s", v ? v : "/var/run/postgresql");
	v = server->port ? server->port_str : option_value(opts, "port");
	if (!v)
		v = getenv("PGPORT");
	cluster->port = v ? (int) strtol(v, NULL, 10) : 5432;
	v = server->user[0] ? server->user : option_value(opts, "user");
	snprintf(cluster->user, sizeof(cluster->user), "%s", v ? v : "");
	v = server->password[0] ? server->password : option_value(opts, "password");
	snprintf(cluster->password, sizeof(cluster->password), "%s", v ? v : "");

	cluster->sslmode = SSLMODE_PREFER;
	v = option_value(opts, "sslmode");
	for (int k = 0; k < server->nssl; k++)
		if (strcmp(server->ssl_keys[k], "sslmode") == 0)
			v = server->ssl_values[k];
	if (!v)
		v = getenv("PGSSLMODE");
	if (v && !parse_sslmode(v, &cluster->sslmode)) {
		log_error(cluster->role, "invalid sslmode \"%s\"", v);
		PQconninfoFree(opts);
		return false;
	}
	/* Explicit ssl* keys override the conninfo's. */
	for (int k = 0; k < server->nssl; k++) {
		PQconninfoOption *o;

		for (o = opts; o->keyword; o++) {
			if (strcmp(o->keyword, server->ssl_keys[k]) == 0) {
				/* libpq allocates option values with malloc and frees them with free. */
				free(o->val);
				o->val = strdup(server->ssl_values[k]);
			}
		}
	}
	if (!resolve_address(cluster) ||
	    (cluster->sslmode != SSLMODE_DISABLE && cluster->host[0] != '/' && !make_tls_context(cluster, opts))) {
		PQconninfoFree(opts);
		return false;
	}
	PQconninfoFree(opts);
	return true;
}

void
cluster_clear(Cluster *cluster)
{
	if (cluster->tls)
		SSL_CTX_free(cluster->tls);
	OPENSSL_cleanse(cluster->password, sizeof(cluster->password));
	memset(cluster, 0, sizeof(*cluster));
}
