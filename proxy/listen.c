/*
 * Listening and accepting: the listening sockets, accepting clients (with a
 * back-off when descriptors run out), the open-files limit max_client_conn
 * needs, and stopping: SHUTDOWN, SIGTERM and SIGINT close the listeners and
 * the clients here.
 */
#include "proxy/objects.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *w, int revents);

#define LISTEN_BACKLOG 1024

static void
on_login_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Client *client = container_of(w, Client, login_timer);

	(void) loop;
	(void) revents;
	client_disconnect(client, "08P01", "client did not log in within client_login_timeout");
}

/*
 * accept() fails with EMFILE or ENFILE (no descriptor left), ENOBUFS or
 * ENOMEM while the connection stays queued, so the listener stays readable:
 * retrying at once spins at full CPU and floods the log.  Accepting stops
 * instead, on every listener and the metrics endpoint, until ACCEPT_RETRY
 * has passed or a connection has closed and given a descriptor back
 * (PgBouncer also waits before it accepts again); the failures are logged
 * at most once per ACCEPT_LOG_INTERVAL, counted.
 */
#define ACCEPT_RETRY 1.0
#define ACCEPT_LOG_INTERVAL 10.0

static void
accept_stop(Proxy *proxy)
{
	int i;

	for (i = 0; i < proxy->nlisteners; i++)
		ev_io_stop(proxy->loop, &proxy->listeners[i].io);
	if (proxy->metrics_fd >= 0)
		ev_io_stop(proxy->loop, &proxy->metrics_io);
}

void
proxy_accept_resume(Proxy *proxy)
{
	int i;

	ev_timer_stop(proxy->loop, &proxy->accept_retry);
	proxy->accept_paused = false;
	for (i = 0; i < proxy->nlisteners; i++)
		ev_io_start(proxy->loop, &proxy->listeners[i].io);
	if (proxy->metrics_fd >= 0)
		ev_io_start(proxy->loop, &proxy->metrics_io);
}

static void
on_accept_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void) loop;
	(void) revents;
	proxy_accept_resume(container_of(w, Proxy, accept_retry));
}

void
proxy_accept_failed(Proxy *proxy, int err)
{
	ev_tstamp now = ev_now(proxy->loop);

	proxy->accept_failures++;
	if (!proxy->accept_failing || now - proxy->accept_logged >= ACCEPT_LOG_INTERVAL) {
		struct rlimit rl;
		unsigned long long limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long) rl.rlim_cur : 0;

		log_warning("proxy",
			    "could not accept connections: %s (open files limit %llu; accept attempts failed since "
			    "the last message: %llu); new connections wait in the listen queue, accepting again "
			    "when a connection closes or after %.0f s",
			    strerror(err), limit, (unsigned long long) proxy->accept_failures, ACCEPT_RETRY);
		proxy->accept_failures = 0;
		proxy->accept_logged = now;
		proxy->accept_failing = true;
	}
	accept_stop(proxy);
	proxy->accept_paused = true;
	ev_timer_set(&proxy->accept_retry, ACCEPT_RETRY, 0.);
	ev_timer_start(proxy->loop, &proxy->accept_retry);
}

bool
proxy_accept_error_is_transient(int err)
{
	return err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN || err == ENOPROTOOPT ||
		err == EHOSTDOWN || err == ENONET || err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH;
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
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (proxy_accept_error_is_transient(errno))
				continue;
			proxy_accept_failed(proxy, errno);
			return;
		}
		if (proxy->accept_failing) {
			log_info("proxy",
				 "accepting connections again (accept attempts failed since the last message: %llu)",
				 (unsigned long long) proxy->accept_failures);
			proxy->accept_failures = 0;
			proxy->accept_failing = false;
		}
		client = client_new(proxy, fd, (struct sockaddr *) &addr, addrlen);
		if (!client)
			continue;
		/*
		 * max_client_conn counts it from now on (client_new); one accepted
		 * beyond it is still read: a CancelRequest or an admin login must
		 * get through.
		 */
		ev_timer_init(&client->login_timer, on_login_timeout,
			      (ev_tstamp) proxy->config.proxy.client_login_timeout / 1e6, 0.);
		ev_timer_start(loop, &client->login_timer);
		log_debug(client->subject, "connection accepted");
	}
}

/*
 * The descriptors max_client_conn may need.  A client holds up to three:
 * its own socket, its server's, and during a cutover the one it moves to
 * (after it, the server it left, until that is retired).  Then the admin
 * sessions, the listeners, two connections per database for the cutover's
 * worker, and a margin for the log, the state and progress files, the
 * metrics endpoint and its scrapes, cancel requests, and connections still
 * logging in beyond the limit.
 */
#define FDS_PER_CLIENT 3
#define FDS_PER_DATABASE 2
#define FDS_MARGIN 64

static unsigned long long
open_files_needed(const Config *config)
{
	return (unsigned long long) FDS_PER_CLIENT * (unsigned long long) config->proxy.max_client_conn +
		(unsigned long long) config->proxy.admin_reserved_conn + PROXY_MAX_LISTENERS +
		(unsigned long long) FDS_PER_DATABASE * (unsigned long long) config->ndatabases + FDS_MARGIN;
}

/*
 * Raises the soft limit on open files to what config needs, up to the hard
 * limit; false (logged) when the hard limit is below it, so the proxy does
 * not find out under load.
 */
bool
proxy_fit_open_files(const Config *config)
{
	unsigned long long needed = open_files_needed(config);
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_error("proxy", "could not read the open files limit (RLIMIT_NOFILE): %s", strerror(errno));
		return false;
	}
	if (rl.rlim_cur == RLIM_INFINITY || (unsigned long long) rl.rlim_cur >= needed)
		return true;
	if (rl.rlim_max != RLIM_INFINITY && (unsigned long long) rl.rlim_max < needed) {
		log_error("proxy",
			  "max_client_conn = %d needs %llu open files, but the hard limit on open files "
			  "(RLIMIT_NOFILE) is %llu: raise it (ulimit -Hn, LimitNOFILE= in a systemd unit) or "
			  "lower max_client_conn",
			  config->proxy.max_client_conn, needed, (unsigned long long) rl.rlim_max);
		return false;
	}
	was = rl.rlim_cur;
	rl.rlim_cur = (rlim_t) needed;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_error("proxy", "could not raise the open files limit (RLIMIT_NOFILE) from %llu to %llu: %s",
			  (unsigned long long) was, needed, strerror(errno));
		return false;
	}
	log_info("proxy", "open files limit raised from %llu to %llu for max_client_conn = %d",
		 (unsigned long long) was, needed, config->proxy.max_client_conn);
	return true;
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

bool
proxy_listen(Proxy *proxy)
{
	const ProxyConfig *pc = &proxy->config.proxy;
	struct addrinfo hints, *res = NULL, *ai;
	char port[16], what[300];
	int rc;

	ev_init(&proxy->accept_retry, on_accept_retry);
	ev_init(&proxy->shutdown_timer, on_shutdown_timeout);
	snprintf(port, sizeof(port), "%d", pc->listen_port);
	if (pc->listen_addr[0]) {
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		rc = getaddrinfo(strcmp(pc->listen_addr, "*") == 0 ? NULL : pc->listen_addr, port, &hints, &res);
		if (rc != 0) {
			log_error("proxy", "could not resolve listen_addr \"%s\": %s", pc->listen_addr,
				  gai_strerror(rc));
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

void
proxy_close_listeners(Proxy *proxy)
{
	int i;

	if (proxy->accept_paused)
		proxy_accept_resume(proxy); /* the metrics endpoint listens on */
	for (i = 0; i < proxy->nlisteners; i++) {
		Listener *l = &proxy->listeners[i];

		ev_io_stop(proxy->loop, &l->io);
		close(l->fd);
		if (l->unix_socket)
			(void) unlink(l->path);
	}
	proxy->nlisteners = 0;
}

void
proxy_shutdown(Proxy *proxy, bool immediate)
{
	List *item, *tmp;

	if (!proxy->shutting_down) {
		proxy->shutting_down = true;
		proxy_close_listeners(proxy);
		log_info("proxy", "shutting down: %s", immediate ? "now" : "waiting for clients to leave");
		if (!immediate) {
			ev_timer_set(&proxy->shutdown_timer, (ev_tstamp) proxy->config.proxy.shutdown_timeout / 1e6,
				     0.);
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
