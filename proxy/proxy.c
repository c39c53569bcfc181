/*
 * The proxy process: listening sockets, accepting clients, signals, reload,
 * shutdown, and the loop iteration boundary where closed objects are freed.
 */
#include "proxy/proxy.h"
#include "proxy/objects.h"
#include "proxy/cutover.h"
#include "proxy/replprobe.h"
#include "common/log.h"
#include "proxy/userlist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

bool
proxy_is_paused(Proxy *proxy, Database *db)
{
	(void) proxy;
	return db && db->paused;
}

static void
on_login_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Client *client = container_of(w, Client, login_timer);

	(void) loop;
	(void) revents;
	client_disconnect(client, "08P01", "client did not log in within client_login_timeout");
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	Listener *listener = container_of(w, Listener, io);
	Proxy *proxy = listener->proxy;
	int accepted;

	(void) revents;
	/* A bounded batch: one busy listener must not starve established clients. */
	for (accepted = 0; accepted < 64; accepted++) {
		struct sockaddr_storage addr;
		socklen_t addrlen = sizeof(addr);
		int fd = accept4(listener->fd, (struct sockaddr *) &addr, &addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		Client *client;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				log_warning("proxy", "accept failed: %s", strerror(errno));
			return;
		}
		client = client_new(proxy, fd, (struct sockaddr *) &addr, addrlen);
		if (!client)
			continue;
		/* max_client_conn is checked on the startup packet: a CancelRequest must get through. */
		ev_timer_init(&client->login_timer, on_login_timeout,
			      (ev_tstamp) proxy->config.proxy.client_login_timeout / 1e6, 0.);
		ev_timer_start(loop, &client->login_timer);
		log_debug(client->subject, "connection accepted");
	}
}

static bool
listen_on(Proxy *proxy, const struct sockaddr *addr, socklen_t addrlen, const char *what)
{
	Listener *listener;
	int on = 1;
	int fd;

	if (proxy->nlisteners == PROXY_MAX_LISTENERS) {
		log_error("proxy", "too many listening sockets");
		return false;
	}
	fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		log_error("proxy", "could not create a socket for %s: %s", what, strerror(errno));
		return false;
	}
	if (addr->sa_family != AF_UNIX)
		(void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (addr->sa_family == AF_INET6)
		(void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, addr, addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		log_error("proxy", "could not listen on %s: %s", what, strerror(errno));
		close(fd);
		return false;
	}
	listener = &proxy->listeners[proxy->nlisteners++];
	listener->fd = fd;
	listener->proxy = proxy;
	listener->unix_socket = addr->sa_family == AF_UNIX;
	if (listener->unix_socket)
		snprintf(listener->path, sizeof(listener->path), "%s", ((const struct sockaddr_un *) addr)->sun_path);
	ev_io_init(&listener->io, on_accept, fd, EV_READ);
	ev_io_start(proxy->loop, &listener->io);
	log_info("proxy", "listening on %s", what);
	return true;
}

static bool
open_listeners(Proxy *proxy)
{
	const ProxyConfig *pc = &proxy->config.proxy;
	struct addrinfo hints, *res = NULL, *ai;
	char port[16], what[300];
	int rc;

	snprintf(port, sizeof(port), "%d", pc->listen_port);
	if (pc->listen_addr[0]) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		rc = getaddrinfo(strcmp(pc->listen_addr, "*") == 0 ? NULL : pc->listen_addr, port, &hints, &res);
		if (rc != 0) {
			log_error("proxy", "could not resolve listen_addr \"%s\": %s", pc->listen_addr, gai_strerror(rc));
			return false;
		}
		for (ai = res; ai; ai = ai->ai_next) {
			snprintf(what, sizeof(what), "%s:%s", pc->listen_addr, port);
			if (!listen_on(proxy, ai->ai_addr, ai->ai_addrlen, what)) {
				freeaddrinfo(res);
				return false;
			}
		}
		freeaddrinfo(res);
	}
	if (pc->unix_socket_dir[0]) {
		struct sockaddr_un un;
		int n;

		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", pc->unix_socket_dir, pc->listen_port);
		if (n < 0 || (size_t) n >= sizeof(un.sun_path)) {
			log_error("proxy", "unix_socket_dir is too long for a socket path");
			return false;
		}
		(void) unlink(un.sun_path);
		if (!listen_on(proxy, (struct sockaddr *) &un, sizeof(un), un.sun_path))
			return false;
		(void) chmod(un.sun_path, 0777);
	}
	if (proxy->nlisteners == 0) {
		log_error("proxy", "nothing to listen on: set listen_addr or unix_socket_dir");
		return false;
	}
	return true;
}

static void
close_listeners(Proxy *proxy)
{
	int i;

	for (i = 0; i < proxy->nlisteners; i++) {
		Listener *l = &proxy->listeners[i];

		ev_io_stop(proxy->loop, &l->io);
		close(l->fd);
		if (l->unix_socket)
			(void) unlink(l->path);
	}
	proxy->nlisteners = 0;
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
	return ctx;
}

/* Everything that a reload may replace, made aside first so a bad file changes nothing. */
typedef struct Settings {
	Config config;
	UserList *users;
	SSL_CTX *client_tls;
	Cluster source;
	Cluster target;
} Settings;

static bool
load_settings(const char *path, Settings *s)
{
	memset(s, 0, sizeof(*s));
	if (!config_load(path, &s->config, stderr))
		return false;
	if (s->config.proxy.auth_type != AUTH_TRUST || access(s->config.proxy.auth_file, R_OK) == 0) {
		s->users = userlist_load(s->config.proxy.auth_file);
		if (!s->users)
			goto fail;
	}
	if (s->config.proxy.client_tls_mode != CLIENT_TLS_DISABLE && !(s->client_tls = make_client_tls(&s->config.proxy)))
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

static bool
install_databases(Proxy *proxy, const Config *config)
{
	Database *dbs = calloc((size_t) config->ndatabases, sizeof(Database));
	int i;

	if (!dbs)
		return false;
	for (i = 0; i < config->ndatabases; i++) {
		Database *old = proxy->databases ? proxy_find_database(proxy, config->databases[i].name) : NULL;

		snprintf(dbs[i].name, sizeof(dbs[i].name), "%s", config->databases[i].name);
		snprintf(dbs[i].target_name, sizeof(dbs[i].target_name), "%s", config->databases[i].target_name);
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

	list_for_each(item, clients) {
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
	if (!load_settings(proxy->config_path, &s)) {
		log_error("proxy", "reload failed: the previous configuration stays in force");
		return false;
	}
	/* A database that still has clients cannot go away under them. */
	list_for_each(item, &proxy->active_clients) {
		Client *c = container_of(item, Client, head);

		if (!database_listed(&s.config, c->db->name)) {
			log_error("proxy", "reload refused: database \"%s\" still has clients", c->db->name);
			goto refuse;
		}
	}
	list_for_each(item, &proxy->login_clients) {
		Client *c = container_of(item, Client, head);

		if (c->db && !database_listed(&s.config, c->db->name)) {
			log_error("proxy", "reload refused: database \"%s\" still has clients", c->db->name);
			goto refuse;
		}
	}
	if (s.config.proxy.listen_port != proxy->config.proxy.listen_port ||
	    strcmp(s.config.proxy.listen_addr, proxy->config.proxy.listen_addr) != 0)
		log_warning("proxy", "listen_addr and listen_port take effect at the next restart");
	if (!install_databases(proxy, &s.config))
		goto refuse;
	/* Every client and server points into the old array: re-point them all, logging in or not. */
	repoint_clients(proxy, &proxy->active_clients);
	repoint_clients(proxy, &proxy->login_clients);
	for (i = 0; i < proxy->ndatabases; i++) {
		proxy->databases[i].nclients = 0;
		list_for_each(item, &proxy->active_clients)
			if (container_of(item, Client, head)->db == &proxy->databases[i])
				proxy->databases[i].nclients++;
		list_for_each(item, &proxy->login_clients)
			if (container_of(item, Client, head)->db == &proxy->databases[i])
				proxy->databases[i].nclients++;
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

void
proxy_shutdown(Proxy *proxy, bool immediate)
{
	List *item, *tmp;

	if (!proxy->shutting_down) {
		proxy->shutting_down = true;
		close_listeners(proxy);
		log_info("proxy", "shutting down: %s", immediate ? "now" : "waiting for clients to leave");
		if (!immediate) {
			ev_timer_set(&proxy->shutdown_timer, (ev_tstamp) proxy->config.proxy.shutdown_timeout / 1e6, 0.);
			ev_timer_start(proxy->loop, &proxy->shutdown_timer);
		}
	}
	list_for_each_safe(item, tmp, &proxy->login_clients)
		client_disconnect(container_of(item, Client, head), "57P01", "pghandoff is shutting down");
	if (immediate) {
		list_for_each_safe(item, tmp, &proxy->active_clients)
			client_disconnect(container_of(item, Client, head), "57P01",
					  "terminating connection due to administrator command");
		list_for_each_safe(item, tmp, &proxy->admin_clients)
			client_disconnect(container_of(item, Client, head), "57P01",
					  "terminating connection due to administrator command");
	}
}

static void
on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, shutdown_timer);

	(void) loop;
	(void) revents;
	log_warning("proxy", "shutdown_timeout reached: closing the remaining clients");
	proxy_shutdown(proxy, true);
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	Proxy *proxy;

	(void) loop;
	(void) revents;
	if (w->signum == SIGHUP) {
		proxy = container_of(w, Proxy, sig_hup);
		if (!log_reopen())
			log_error("proxy", "could not reopen the log file");
		if (cutover_running(proxy))
			log_warning("proxy", "SIGHUP ignored: a cutover is running; send it again once it has finished");
		else
			(void) proxy_reload(proxy);
	} else if (w->signum == SIGTERM) {
		proxy = container_of(w, Proxy, sig_term);
		log_info("proxy", "SIGTERM: no new connections, waiting up to shutdown_timeout for clients");
		proxy_shutdown(proxy, false);
	} else {
		proxy = container_of(w, Proxy, sig_int);
		log_info("proxy", "SIGINT: closing every connection");
		proxy_shutdown(proxy, true);
	}
}

/*
 * Runs just before the loop blocks, after every callback of the iteration:
 * the place to free what those callbacks closed, and to notice that a
 * shutdown has nothing left to wait for.
 */
static void
on_loop_iteration(struct ev_loop *loop, ev_prepare *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, reaper);

	(void) revents;
	proxy_free_justfree(proxy);
	cutover_reap(proxy);
	if (proxy->shutting_down && list_empty(&proxy->active_clients) && list_empty(&proxy->admin_clients) &&
	    list_empty(&proxy->login_clients) && list_empty(&proxy->login_servers) &&
	    list_empty(&proxy->active_servers) && list_empty(&proxy->standby_servers) &&
	    list_empty(&proxy->retiring_servers))
		ev_break(loop, EVBREAK_ALL);
}

int
proxy_main(const char *config_path, bool with_follower)
{
	Proxy *proxy = calloc(1, sizeof(Proxy));
	Settings s;
	int rc = 1;

	if (!proxy)
		return 1;
	if (!load_settings(config_path, &s)) {
		free(proxy);
		return 2;
	}
	if (!log_open(s.config.log.level, s.config.log.format, s.config.log.file)) {
		free(proxy);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	proxy->loop = ev_default_loop(EVFLAG_AUTO);
	proxy->config_path = strdup(config_path);
	proxy->config = s.config;
	proxy->users = s.users;
	proxy->client_tls = s.client_tls;
	proxy->source = s.source;
	proxy->target = s.target;
	proxy->start_time = ev_now(proxy->loop);
	list_init(&proxy->login_clients);
	list_init(&proxy->active_clients);
	list_init(&proxy->admin_clients);
	list_init(&proxy->justfree_clients);
	list_init(&proxy->login_servers);
	list_init(&proxy->active_servers);
	list_init(&proxy->standby_servers);
	list_init(&proxy->retiring_servers);
	list_init(&proxy->justfree_servers);
	proxy->metrics_fd = -1;
	cutover_init(proxy);
	if (!install_databases(proxy, &proxy->config) || !cutover_load_state(proxy) || !open_listeners(proxy) ||
	    !metrics_start(proxy) || !replprobe_start(proxy))
		goto done;
	proxy->run_replicator = with_follower;
	if (with_follower && !followers_start(proxy, FOLLOWER_FORWARD))
		goto done;

	ev_signal_init(&proxy->sig_term, on_signal, SIGTERM);
	ev_signal_init(&proxy->sig_int, on_signal, SIGINT);
	ev_signal_init(&proxy->sig_hup, on_signal, SIGHUP);
	ev_signal_start(proxy->loop, &proxy->sig_term);
	ev_signal_start(proxy->loop, &proxy->sig_int);
	ev_signal_start(proxy->loop, &proxy->sig_hup);
	ev_init(&proxy->shutdown_timer, on_shutdown_timeout);
	ev_prepare_init(&proxy->reaper, on_loop_iteration);
	ev_prepare_start(proxy->loop, &proxy->reaper);

	log_info("proxy", "pghandoff %s proxy started: %d database(s), source %s:%d", PGHANDOFF_VERSION,
		 proxy->ndatabases, proxy->source.host, proxy->source.port);
	ev_run(proxy->loop, 0);
	log_info("proxy", "stopped");
	rc = 0;
done:
	close_listeners(proxy);
	metrics_stop(proxy);
	cutover_shutdown(proxy);
	followers_shutdown(proxy);
	replprobe_stop(proxy);
	proxy_free_justfree(proxy);
	ev_signal_stop(proxy->loop, &proxy->sig_term);
	ev_signal_stop(proxy->loop, &proxy->sig_int);
	ev_signal_stop(proxy->loop, &proxy->sig_hup);
	ev_prepare_stop(proxy->loop, &proxy->reaper);
	ev_timer_stop(proxy->loop, &proxy->shutdown_timer);
	userlist_free(proxy->users);
	if (proxy->client_tls)
		SSL_CTX_free(proxy->client_tls);
	cluster_clear(&proxy->source);
	cluster_clear(&proxy->target);
	config_free(&proxy->config);
	free(proxy->databases);
	free(proxy->config_path);
	sbuf_pool_trim();
	ev_loop_destroy(proxy->loop);
	free(proxy);
	log_close();
	return rc;
}
