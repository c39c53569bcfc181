/*
 * The configuration in force: loading it (the file, the auth file, TLS
 * towards clients, the clusters) aside first, so that a bad file changes
 * nothing, and RELOAD / SIGHUP putting a loaded one in place.
 */
#include "proxy/objects.h"
#include "proxy/authquery.h"
#include "proxy/pool.h"
#include "common/log.h"
#include "proxy/userlist.h"

#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any certificate passes the handshake: cert_login (client.c) refuses a bad one with a SQLSTATE. */
static int
accept_any_certificate(int preverify_ok, X509_STORE_CTX *ctx)
{
	(void) preverify_ok;
	(void) ctx;
	return 1;
}

/*
 * auth_type = cert: clients are asked for a certificate, told which CAs
 * sign them, and theirs is checked against client_tls_ca_file; the result
 * is read at login (SSL_get_verify_result).
 */
static bool
ask_client_certificates(SSL_CTX *ctx, const ProxyConfig *pc)
{
	static const unsigned char session_context[] = "pghandoff";
	STACK_OF(X509_NAME) * names;

	if (SSL_CTX_load_verify_locations(ctx, pc->client_tls_ca_file, NULL) != 1 ||
	    !(names = SSL_load_client_CA_file(pc->client_tls_ca_file))) {
		unsigned long e = ERR_get_error();

		log_error("proxy", "could not load client_tls_ca_file \"%s\": %s", pc->client_tls_ca_file,
			  e ? ERR_reason_error_string(e) : "no certificate in it");
		ERR_clear_error();
		return false;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_certificate);
	/* Verification with session resumption needs a context the sessions belong to. */
	SSL_CTX_set_session_id_context(ctx, session_context, sizeof(session_context) - 1);
	return true;
}

static SSL_CTX *
make_client_tls(const ProxyConfig *pc)
{
	SSL_CTX *ctx;

	if (pc->client_tls_mode == CLIENT_TLS_DISABLE)
		return NULL;
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, pc->client_tls_cert_file) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, pc->client_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		unsigned long e = ERR_get_error();

		log_error("proxy", "could not load client_tls_cert_file \"%s\" / client_tls_key_file \"%s\": %s",
			  pc->client_tls_cert_file, pc->client_tls_key_file, ERR_reason_error_string(e));
		SSL_CTX_free(ctx);
		ERR_clear_error();
		return NULL;
	}
	if (pc->auth_type == AUTH_CERT && !ask_client_certificates(ctx, pc)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

bool
settings_load(const char *path, Settings *s)
{
	memset(s, 0, sizeof(*s));
	if (!config_load(path, &s->config, stderr))
		return false;
	if (s->config.proxy.auth_type == AUTH_MD5 || s->config.proxy.auth_type == AUTH_SCRAM_SHA_256 ||
	    access(s->config.proxy.auth_file, R_OK) == 0) {
		char secret_path[4096];

		/* Beside the state file: what a restarted proxy must find again. */
		snprintf(secret_path, sizeof(secret_path), "%s-secret", s->config.proxy.state_file);
		userlist_keep_secret(secret_path);
		s->users = userlist_load(s->config.proxy.auth_file);
		if (!s->users)
			goto fail;
		/* Logins derive no SCRAM keys: plaintext passwords get their verifiers now. */
		if (s->config.proxy.auth_type == AUTH_SCRAM_SHA_256 && !userlist_prepare_scram(s->users))
			goto fail;
	}
	if (s->config.proxy.client_tls_mode != CLIENT_TLS_DISABLE &&
	    !(s->client_tls = make_client_tls(&s->config.proxy)))
		goto fail;
	if (!cluster_resolve(&s->source, &s->config.source) || !cluster_resolve(&s->target, &s->config.target))
		goto fail;
	return true;
fail:
	userlist_free(s->users);
	if (s->client_tls)
		SSL_CTX_free(s->client_tls);
	cluster_clear(&s->source);
	cluster_clear(&s->target);
	config_free(&s->config);
	return false;
}

bool
proxy_install_databases(Proxy *proxy, const Config *config)
{
	Database *dbs = calloc((size_t) config->ndatabases, sizeof(Database));
	int i;

	if (!dbs)
		return false;
	for (i = 0; i < config->ndatabases; i++) {
		Database *old = proxy->databases ? proxy_find_database(proxy, config->databases[i].name) : NULL;

		snprintf(dbs[i].name, sizeof(dbs[i].name), "%s", config->databases[i].name);
		snprintf(dbs[i].target_name, sizeof(dbs[i].target_name), "%s", config->databases[i].target_name);
		dbs[i].pool_mode = config->databases[i].pool_mode;
		dbs[i].pool_size = config->databases[i].pool_size;
		dbs[i].min_pool_size = config->databases[i].min_pool_size;
		dbs[i].reserve_pool = config->databases[i].reserve_pool;
		dbs[i].max_db_connections = config->databases[i].max_db_connections;
		if (old) {
			dbs[i].paused = old->paused;
			dbs[i].stats = old->stats;
		}
	}
	proxy->databases = dbs;
	proxy->ndatabases = config->ndatabases;
	return true;
}

static bool
database_listed(const Config *config, const char *name)
{
	return config_find_database(config, name) != NULL;
}

static void
repoint_clients(Proxy *proxy, List *clients)
{
	List *item;

	list_for_each(item, clients)
	{
		Client *c = container_of(item, Client, head);

		if (!c->db)
			continue;
		c->db = proxy_find_database(proxy, c->db->name);
		if (c->server)
			c->server->db = c->db;
	}
}

bool
proxy_reload(Proxy *proxy)
{
	Settings s;
	Database *old_dbs = proxy->databases;
	List *item;
	int i;

	log_info("proxy", "reloading %s", proxy->config_path);
	if (!settings_load(proxy->config_path, &s)) {
		log_error("proxy", "reload failed: the previous configuration stays in force");
		return false;
	}
	if (!proxy_fit_open_files(&s.config)) {
		log_error("proxy", "reload refused: the previous configuration stays in force");
		goto refuse;
	}
	/* A database that still has clients cannot go away under them. */
	list_for_each(item, &proxy->active_clients)
	{
		Client *c = container_of(item, Client, head);

		if (!database_listed(&s.config, c->db->name)) {
			log_error("proxy", "reload refused: database \"%s\" still has clients", c->db->name);
			goto refuse;
		}
	}
	list_for_each(item, &proxy->login_clients)
	{
		Client *c = container_of(item, Client, head);

		if (c->db && !database_listed(&s.config, c->db->name)) {
			log_error("proxy", "reload refused: database \"%s\" still has clients", c->db->name);
			goto refuse;
		}
	}
	if (s.config.proxy.listen_port != proxy->config.proxy.listen_port ||
	    strcmp(s.config.proxy.listen_addr, proxy->config.proxy.listen_addr) != 0)
		log_warning("proxy", "listen_addr and listen_port take effect at the next restart");
	if (!proxy_install_databases(proxy, &s.config))
		goto refuse;
	/* Every client and server points into the old array: re-point them all, logging in or not. */
	repoint_clients(proxy, &proxy->active_clients);
	repoint_clients(proxy, &proxy->login_clients);
	pool_repoint(proxy);
	for (i = 0; i < proxy->ndatabases; i++) {
		proxy->databases[i].nclients = 0;
		list_for_each(item, &proxy->active_clients) if (container_of(item, Client, head)->db ==
								&proxy->databases[i]) proxy->databases[i]
			.nclients++;
		list_for_each(item, &proxy->login_clients) if (container_of(item, Client, head)->db ==
							       &proxy->databases[i]) proxy->databases[i]
			.nclients++;
	}
	free(old_dbs);
	/* Listening settings stay; the rest is the new file's. */
	{
		char *addr = s.config.proxy.listen_addr;
		int port = s.config.proxy.listen_port;

		s.config.proxy.listen_addr = proxy->config.proxy.listen_addr;
		s.config.proxy.listen_port = proxy->config.proxy.listen_port;
		proxy->config.proxy.listen_addr = addr;
		proxy->config.proxy.listen_port = port;
	}
	config_free(&proxy->config);
	proxy->config = s.config;
	userlist_free(proxy->users);
	proxy->users = s.users;
	/* auth_user, auth_query or a cluster may have changed: what was looked up is asked again. */
	authquery_cache_clear();
	if (proxy->client_tls)
		SSL_CTX_free(proxy->client_tls);
	proxy->client_tls = s.client_tls;
	/* Servers point at these structs, which stay put; TLS sessions hold references to the old contexts. */
	cluster_clear(&proxy->source);
	cluster_clear(&proxy->target);
	proxy->source = s.source;
	proxy->target = s.target;
	if (!log_open(proxy->config.log.level, proxy->config.log.format, proxy->config.log.file))
		log_error("proxy", "could not reopen the log");
	log_info("proxy", "configuration reloaded");
	return true;
refuse:
	userlist_free(s.users);
	if (s.client_tls)
		SSL_CTX_free(s.client_tls);
	cluster_clear(&s.source);
	cluster_clear(&s.target);
	config_free(&s.config);
	return false;
}
