/*
 * The proxy process: start, signals, and the loop iteration boundary where
 * PAUSE and the cutover look again and closed objects are freed.  Listening
 * and stopping are in listen.c, the configuration in settings.c.
 */
#include "proxy/proxy.h"
#include "proxy/objects.h"
#include "proxy/pool.h"
#include "cutover/loop/cutover.h"
#include "proxy/replprobe.h"
#include "common/log.h"
#include "proxy/authquery.h"
#include "proxy/userlist.h"

#include <openssl/ssl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

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
			log_warning(
				"proxy",
				"SIGHUP ignored: a cutover is running or being undone; send it again once it has finished");
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
 * the place where PAUSE and the cutover look again at what those callbacks
 * changed (Proxy.recheck), to free what they closed, and to notice that a
 * shutdown has nothing left to wait for.
 */
static void
on_loop_iteration(struct ev_loop *loop, ev_prepare *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, reaper);
	bool recheck = proxy->recheck;

	(void) revents;
	/* What waits on clients looks first, and lets go of those that closed, before they are freed. */
	proxy->recheck = false;
	if (recheck && proxy->pause_waiters > 0)
		admin_check_pause_waiters(proxy);
	if (proxy->txn_release_pending)
		pool_txn_release(proxy);
	cutover_reap(proxy, recheck);
	/* Shutting down: nothing will take the pools' idle connections any more. */
	if (proxy->shutting_down && !list_empty(&proxy->idle_servers))
		(void) pool_close_idle(proxy, NULL, "pghandoff is shutting down");
	/* What closed gave descriptors back: worth trying to accept again. */
	if (proxy_free_justfree(proxy) > 0 && proxy->accept_paused && !proxy->shutting_down)
		proxy_accept_resume(proxy);
	if (proxy->shutting_down && list_empty(&proxy->active_clients) && list_empty(&proxy->admin_clients) &&
	    list_empty(&proxy->login_clients) && list_empty(&proxy->login_servers) &&
	    list_empty(&proxy->active_servers) && list_empty(&proxy->standby_servers) &&
	    list_empty(&proxy->retiring_servers) && list_empty(&proxy->idle_servers))
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
	if (!settings_load(config_path, &s)) {
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
	list_init(&proxy->idle_servers);
	list_init(&proxy->pools);
	list_init(&proxy->justfree_servers);
	proxy->metrics_fd = -1;
	proxy->admin_on_packet = admin_on_packet;
	cutover_init(proxy);
	if (!proxy_fit_open_files(&proxy->config) || !proxy_install_databases(proxy, &proxy->config) ||
	    !cutover_load_state(proxy) || !proxy_listen(proxy) || !metrics_start(proxy) || !replprobe_start(proxy))
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
	ev_prepare_init(&proxy->reaper, on_loop_iteration);
	ev_prepare_start(proxy->loop, &proxy->reaper);
	pool_start(proxy);

	log_info("proxy", "pghandoff %s proxy started: %d database(s), source %s:%d", PGHANDOFF_VERSION,
		 proxy->ndatabases, proxy->source.host, proxy->source.port);
	ev_run(proxy->loop, 0);
	log_info("proxy", "stopped");
	rc = 0;
done:
	proxy_close_listeners(proxy);
	metrics_stop(proxy);
	cutover_shutdown(proxy);
	followers_shutdown(proxy);
	replprobe_stop(proxy);
	pool_stop(proxy);
	(void) pool_close_idle(proxy, NULL, "pghandoff stopped");
	(void) proxy_free_justfree(proxy);
	pool_free_all(proxy);
	ev_signal_stop(proxy->loop, &proxy->sig_term);
	ev_signal_stop(proxy->loop, &proxy->sig_int);
	ev_signal_stop(proxy->loop, &proxy->sig_hup);
	ev_prepare_stop(proxy->loop, &proxy->reaper);
	ev_timer_stop(proxy->loop, &proxy->shutdown_timer);
	userlist_free(proxy->users);
	authquery_cache_clear();
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
