/*
 * Prometheus metrics over HTTP at metrics_listen: `GET /metrics` answers the
 * text exposition format, anything else 404.  One request per connection,
 * answered from the loop and closed; a scrape that does not send its request
 * within a few seconds is dropped.
 */
#include "proxy/objects.h"
#include "proxy/pool.h"
#include "proxy/poolstats.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "cutover/loop/cutover.h"
#include "proxy/progress.h"

#include <errno.h>
#include <stddef.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX 8192
#define REQUEST_TIMEOUT 5.0

const double stats_bucket_bounds[STATS_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
						       0.05,   0.1,   0.25,   0.5,   1.0};

void
stats_observe(uint64_t *hist, double seconds)
{
	int i = 0;

	while (i < STATS_BUCKETS - 1 && seconds > stats_bucket_bounds[i])
		i++;
	hist[i]++;
}

typedef struct Scrape {
	ev_io io;
	ev_timer timer;
	Proxy *proxy;
	int fd;
	size_t len;
	char request[REQUEST_MAX];
	char *response;
	size_t response_len;
	size_t sent;
} Scrape;

static void
scrape_free(Scrape *s)
{
	ev_io_stop(s->proxy->loop, &s->io);
	ev_timer_stop(s->proxy->loop, &s->timer);
	close(s->fd);
	free(s->response);
	free(s);
}

static void
histogram(StrBuf *out, const char *name, const char *db, const uint64_t *hist, uint64_t sum_us, uint64_t count)
{
	uint64_t cumulative = 0;
	int i;

	for (i = 0; i < STATS_BUCKETS - 1; i++) {
		cumulative += hist[i];
		strbuf_appendf(out, "%s_bucket{database=\"%s\",le=\"%g\"} %llu\n", name, db, stats_bucket_bounds[i],
			       (unsigned long long) cumulative);
	}
	cumulative += hist[STATS_BUCKETS - 1];
	strbuf_appendf(out, "%s_bucket{database=\"%s\",le=\"+Inf\"} %llu\n", name, db, (unsigned long long) cumulative);
	strbuf_appendf(out, "%s_sum{database=\"%s\"} %.6f\n", name, db, (double) sum_us / 1e6);
	strbuf_appendf(out, "%s_count{database=\"%s\"} %llu\n", name, db, (unsigned long long) count);
}

/* One counter family from DbStats: the field at offset, per database. */
static void
stats_counter(StrBuf *out, const Proxy *proxy, const char *name, const char *help, size_t offset)
{
	int i;

	strbuf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
	for (i = 0; i < proxy->ndatabases; i++) {
		uint64_t value;

		memcpy(&value, (const char *) &proxy->databases[i].stats + offset, sizeof(value));
		strbuf_appendf(out, "%s{database=\"%s\"} %llu\n", name, proxy->databases[i].name,
			       (unsigned long long) value);
	}
}

static void
count_connections(const Proxy *proxy, const Database *db, int *active, int *waiting, int *servers_source,
		  int *servers_target)
{
	const List *lists[] = {&proxy->active_servers, &proxy->login_servers, &proxy->standby_servers};
	const List *item;
	size_t i;

	*active = *waiting = *servers_source = *servers_target = 0;
	list_for_each(item, &proxy->active_clients)
	{
		const Client *c = container_of(item, const Client, head);

		if (c->db != db)
			continue;
		if (c->state == CL_ACTIVE && !c->held)
			(*active)++;
		else
			(*waiting)++;
	}
	for (i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		list_for_each(item, lists[i])
		{
			const Server *s = container_of(item, const Server, head);

			if (s->db != db)
				continue;
			if (s->cluster == &proxy->target)
				(*servers_target)++;
			else
				(*servers_source)++;
		}
	}
}

/*
 * A label value as the text format wants it: backslash, double quote and
 * newline escaped.  A pool's user is what a client logged in as, so it may
 * hold any of them.
 */
static void
append_label(StrBuf *out, const char *name, const char *value)
{
	strbuf_appendf(out, "%s=\"", name);
	for (; *value; value++) {
		if (*value == '\\')
			strbuf_append(out, "\\\\");
		else if (*value == '"')
			strbuf_append(out, "\\\"");
		else if (*value == '\n')
			strbuf_append(out, "\\n");
		else
			strbuf_append_char(out, *value);
	}
	strbuf_append_char(out, '"');
}

/* name{database="..",user=".."[,label="value"]} value, one sample of a pool. */
static void
pool_sample(StrBuf *out, const char *name, const Pool *pool, const char *label, const char *value, double sample)
{
	strbuf_appendf(out, "%s{", name);
	append_label(out, "database", pool->dbname);
	strbuf_append_char(out, ',');
	append_label(out, "user", pool->user);
	if (label) {
		strbuf_append_char(out, ',');
		append_label(out, label, value);
	}
	strbuf_appendf(out, "} %.6g\n", sample);
}

/*
 * Per pool (database, user) what SHOW POOLS says, counted by the same
 * function: clients, server connections by state (those idle or logging in
 * counted on the cluster served), the longest wait and the pool mode (a
 * state set: 1 for the pool's mode, 0 for the other).  A pool whose database
 * a reload dropped is left out, as there.
 */
static void
render_pools(const Proxy *proxy, StrBuf *out)
{
	static const char *const families[] = {
		"# HELP pghandoff_pool_clients Client connections of a pool (database, user): active (with a "
		"server connection or between transactions) or waiting for one.\n"
		"# TYPE pghandoff_pool_clients gauge\n",
		"# HELP pghandoff_pool_server_connections Server connections of a pool, by state as SHOW POOLS "
		"counts them (sv_active, sv_idle, sv_used, sv_tested, sv_login).\n"
		"# TYPE pghandoff_pool_server_connections gauge\n",
		"# HELP pghandoff_pool_maxwait_seconds How long the pool's longest waiting client has waited.\n"
		"# TYPE pghandoff_pool_maxwait_seconds gauge\n",
		"# HELP pghandoff_pool_mode The pool's pool_mode: 1 for its mode, 0 for the other.\n"
		"# TYPE pghandoff_pool_mode gauge\n",
	};
	size_t f;

	for (f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		const List *item;

		strbuf_append(out, families[f]);
		list_for_each(item, &proxy->pools)
		{
			const Pool *pool = container_of(item, const Pool, head);
			PoolStats st;

			if (!pool->db)
				continue;
			poolstats_count(proxy, pool, &st);
			if (f == 0) {
				pool_sample(out, "pghandoff_pool_clients", pool, "state", "active", st.cl_active);
				pool_sample(out, "pghandoff_pool_clients", pool, "state", "waiting", st.cl_waiting);
			} else if (f == 1) {
				const char *states[] = {"active", "idle", "used", "tested", "login"};
				const int counts[] = {st.sv_active, st.sv_idle, st.sv_used, st.sv_tested, st.sv_login};
				size_t i;

				for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
					pool_sample(out, "pghandoff_pool_server_connections", pool, "state", states[i],
						    counts[i]);
			} else if (f == 2) {
				pool_sample(out, "pghandoff_pool_maxwait_seconds", pool, NULL, NULL, st.maxwait);
			} else {
				pool_sample(out, "pghandoff_pool_mode", pool, "mode", "session",
					    st.mode == POOL_SESSION);
				pool_sample(out, "pghandoff_pool_mode", pool, "mode", "transaction",
					    st.mode == POOL_TRANSACTION);
			}
		}
	}
}

/*
 * The follower's progress, per database (progress.c); nothing for a database
 * without a progress file.  Then what the clusters say whatever the file
 * does: whether the follower runs, and the slot's lag.
 */
static void
render_replication(const Proxy *proxy, StrBuf *out)
{
	static const struct {
		const char *name, *type, *help;
	} families[] = {
		{"pghandoff_replication_lag_bytes", "gauge",
		 "WAL the follower has still to apply: its own figure or its slot's, the larger."},
		{"pghandoff_replication_lag_seconds", "gauge", "Age of the last source commit applied, while behind."},
		{"pghandoff_replication_applied_changes_total", "counter",
		 "Changes applied since the follower started."},
		{"pghandoff_copy_done_bytes", "gauge", "Bytes of the initial copy streamed."},
		{"pghandoff_copy_total_bytes", "gauge", "Bytes of the initial copy, estimated from table sizes."},
		{"pghandoff_copy_tables_done", "gauge", "Tables of the initial copy finished."},
		{"pghandoff_copy_tables_total", "gauge", "Tables of the initial copy."},
		{"pghandoff_replication_fence_violation", "gauge",
		 "1 while the follower refuses a transaction committed after the fence of the side it reads."},
		{"pghandoff_replication_ddl_stopped", "gauge",
		 "1 while the follower is stopped at a schema change it could not replay."},
	};
	ReplProgress *progress = calloc((size_t) proxy->ndatabases + 1, sizeof(ReplProgress));
	size_t f;
	int i;

	if (!progress)
		return;
	for (i = 0; i < proxy->ndatabases; i++)
		progress_read(proxy, &proxy->databases[i], &progress[i]);
	for (f = 0; f < sizeof(families) / sizeof(families[0]); f++) {
		strbuf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
			       families[f].name, families[f].type);
		for (i = 0; i < proxy->ndatabases; i++) {
			const ReplProgress *p = &progress[i];
			const double values[9] =
				{p->lag_bytes,          p->lag_seconds, p->changes,      p->bytes_done,
				 p->bytes_total,        p->tables_done, p->tables_total, p->fence_violation[0] != '\0',
				 p->ddl_stopped ? 1 : 0};

			if (p->have)
				strbuf_appendf(out, "%s{database=\"%s\"} %.3f\n", families[f].name,
					       proxy->databases[i].name, values[f]);
		}
	}
	strbuf_append(out,
		      "# HELP pghandoff_replication_follower_up 1 while the database's follower runs, 0 once its "
		      "process is gone without having stopped.\n"
		      "# TYPE pghandoff_replication_follower_up gauge\n");
	for (i = 0; i < proxy->ndatabases; i++)
		if (progress[i].have)
			strbuf_appendf(out, "pghandoff_replication_follower_up{database=\"%s\"} %d\n",
				       proxy->databases[i].name, !progress[i].down);
	strbuf_append(out,
		      "# HELP pghandoff_replication_large_objects Large objects on the source at the follower's "
		      "last diff.\n"
		      "# TYPE pghandoff_replication_large_objects gauge\n");
	for (i = 0; i < proxy->ndatabases; i++)
		if (progress[i].have && progress[i].large_objects >= 0)
			strbuf_appendf(out, "pghandoff_replication_large_objects{database=\"%s\"} %.0f\n",
				       proxy->databases[i].name, progress[i].large_objects);
	strbuf_append(out,
		      "# HELP pghandoff_replication_large_objects_in_step Of those, the ones equal on the target.\n"
		      "# TYPE pghandoff_replication_large_objects_in_step gauge\n");
	for (i = 0; i < proxy->ndatabases; i++)
		if (progress[i].have && progress[i].large_objects >= 0)
			strbuf_appendf(out, "pghandoff_replication_large_objects_in_step{database=\"%s\"} %.0f\n",
				       proxy->databases[i].name, progress[i].large_objects_in_step);
	strbuf_append(out,
		      "# HELP pghandoff_replication_slot_lag_bytes The source's end of WAL less the slot's "
		      "confirmed position, as the source reports it.\n"
		      "# TYPE pghandoff_replication_slot_lag_bytes gauge\n");
	for (i = 0; i < proxy->ndatabases; i++)
		if (progress[i].probed && strcmp(progress[i].slot, "missing") != 0)
			strbuf_appendf(out, "pghandoff_replication_slot_lag_bytes{database=\"%s\"} %.0f\n",
				       proxy->databases[i].name, progress[i].slot_lag_bytes);
	strbuf_append(out,
		      "# HELP pghandoff_replication_slot_active 1 while a walsender streams from the database's "
		      "slot.\n"
		      "# TYPE pghandoff_replication_slot_active gauge\n");
	for (i = 0; i < proxy->ndatabases; i++)
		if (progress[i].probed && strcmp(progress[i].slot, "missing") != 0)
			strbuf_appendf(out, "pghandoff_replication_slot_active{database=\"%s\"} %d\n",
				       proxy->databases[i].name, strcmp(progress[i].slot, "active") == 0);
	free(progress);
}

static void
render(const Proxy *proxy, StrBuf *out)
{
	int i;

	strbuf_append(out,
		      "# HELP pghandoff_client_connections Client connections, by database and state.\n"
		      "# TYPE pghandoff_client_connections gauge\n");
	for (i = 0; i < proxy->ndatabases; i++) {
		const Database *db = &proxy->databases[i];
		int active, waiting, src, tgt;

		count_connections(proxy, db, &active, &waiting, &src, &tgt);
		strbuf_appendf(out, "pghandoff_client_connections{database=\"%s\",state=\"active\"} %d\n", db->name,
			       active);
		strbuf_appendf(out, "pghandoff_client_connections{database=\"%s\",state=\"waiting\"} %d\n", db->name,
			       waiting);
	}
	strbuf_append(out,
		      "# HELP pghandoff_server_connections Server connections, by database and cluster.\n"
		      "# TYPE pghandoff_server_connections gauge\n");
	for (i = 0; i < proxy->ndatabases; i++) {
		const Database *db = &proxy->databases[i];
		int active, waiting, src, tgt;

		count_connections(proxy, db, &active, &waiting, &src, &tgt);
		strbuf_appendf(out, "pghandoff_server_connections{database=\"%s\",cluster=\"source\"} %d\n", db->name,
			       src);
		strbuf_appendf(out, "pghandoff_server_connections{database=\"%s\",cluster=\"target\"} %d\n", db->name,
			       tgt);
	}
	render_pools(proxy, out);
	stats_counter(out, proxy, "pghandoff_queries_total", "Queries relayed (one per ReadyForQuery).",
		      offsetof(DbStats, query_count));
	stats_counter(out, proxy, "pghandoff_transactions_total", "Transactions relayed.",
		      offsetof(DbStats, xact_count));
	stats_counter(out, proxy, "pghandoff_received_bytes_total", "Bytes received from clients.",
		      offsetof(DbStats, bytes_received));
	stats_counter(out, proxy, "pghandoff_sent_bytes_total", "Bytes sent to clients.",
		      offsetof(DbStats, bytes_sent));
	strbuf_append(out,
		      "# HELP pghandoff_query_duration_seconds Query latency through the proxy.\n"
		      "# TYPE pghandoff_query_duration_seconds histogram\n");
	for (i = 0; i < proxy->ndatabases; i++) {
		const DbStats *st = &proxy->databases[i].stats;

		histogram(out, "pghandoff_query_duration_seconds", proxy->databases[i].name, st->query_hist,
			  st->query_time_us, st->query_count);
	}
	strbuf_append(out,
		      "# HELP pghandoff_transaction_duration_seconds Transaction latency through the proxy.\n"
		      "# TYPE pghandoff_transaction_duration_seconds histogram\n");
	for (i = 0; i < proxy->ndatabases; i++) {
		const DbStats *st = &proxy->databases[i].stats;

		histogram(out, "pghandoff_transaction_duration_seconds", proxy->databases[i].name, st->xact_hist,
			  st->xact_time_us, st->xact_count);
	}
	strbuf_appendf(out,
		       "# HELP pghandoff_serving_target 1 once clients are served by the target cluster.\n"
		       "# TYPE pghandoff_serving_target gauge\n"
		       "pghandoff_serving_target %d\n"
		       "# HELP pghandoff_cutover_running 1 while a cutover or rollback runs.\n"
		       "# TYPE pghandoff_cutover_running gauge\n"
		       "pghandoff_cutover_running %d\n"
		       "# HELP pghandoff_cutovers_total Cutovers and rollbacks finished, dry runs excepted.\n"
		       "# TYPE pghandoff_cutovers_total counter\n"
		       "pghandoff_cutovers_total{result=\"completed\"} %llu\n"
		       "pghandoff_cutovers_total{result=\"aborted\"} %llu\n"
		       "# HELP pghandoff_cutover_last_pause_seconds The last cutover's pause, first held query to resume.\n"
		       "# TYPE pghandoff_cutover_last_pause_seconds gauge\n"
		       "pghandoff_cutover_last_pause_seconds %.6f\n",
		       proxy->serving == &proxy->target, proxy->cutover != NULL,
		       (unsigned long long) (proxy->cutovers_total - proxy->cutovers_failed_total),
		       (unsigned long long) proxy->cutovers_failed_total, proxy->last_pause_seconds);
	strbuf_appendf(out,
		       "# HELP pghandoff_fenced 1 while pghandoff keeps the cluster's databases read-only.\n"
		       "# TYPE pghandoff_fenced gauge\n"
		       "pghandoff_fenced{cluster=\"source\"} %d\n"
		       "pghandoff_fenced{cluster=\"target\"} %d\n"
		       "# HELP pghandoff_cleanup_pending 1 while an aborted cutover's unfence or way back's objects are "
		       "still being retried.\n"
		       "# TYPE pghandoff_cleanup_pending gauge\n"
		       "pghandoff_cleanup_pending %d\n",
		       cutover_cluster_fenced(proxy, &proxy->source), cutover_cluster_fenced(proxy, &proxy->target),
		       cutover_cleanup_pending(proxy));
	render_replication(proxy, out);
}

static void
scrape_on_write(struct ev_loop *loop, ev_io *w, int revents)
{
	Scrape *s = container_of(w, Scrape, io);
	ssize_t n;

	(void) loop;
	(void) revents;
	n = send(s->fd, s->response + s->sent, s->response_len - s->sent, MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		s->sent += (size_t) n;
	/* The watchers are stopped in scrape_free and nothing else refers to s. */
	if (n <= 0 || s->sent == s->response_len)
		scrape_free(s);
}

static void
respond(Scrape *s)
{
	StrBuf body, msg;
	bool found = strncmp(s->request, "GET /metrics ", 13) == 0 || strncmp(s->request, "GET /metrics?", 13) == 0;

	strbuf_init(&body);
	strbuf_init(&msg);
	if (found)
		render(s->proxy, &body);
	else
		strbuf_append(&body, "not found: GET /metrics\n");
	strbuf_appendf(&msg,
		       "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
		       "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		       found ? "200 OK" : "404 Not Found", body.len);
	strbuf_append_len(&msg, strbuf_str(&body), body.len);
	strbuf_free(&body);
	if (msg.failed) {
		strbuf_free(&msg);
		scrape_free(s);
		return;
	}
	s->response = msg.data;
	s->response_len = msg.len;
	ev_io_stop(s->proxy->loop, &s->io);
	ev_io_init(&s->io, scrape_on_write, s->fd, EV_WRITE);
	ev_io_start(s->proxy->loop, &s->io);
}

static void
scrape_on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	Scrape *s = container_of(w, Scrape, io);
	ssize_t n;

	(void) loop;
	(void) revents;
	n = recv(s->fd, s->request + s->len, sizeof(s->request) - 1 - s->len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		scrape_free(s);
		return;
	}
	s->len += (size_t) n;
	s->request[s->len] = '\0';
	if (strstr(s->request, "\r\n\r\n") || strstr(s->request, "\n\n"))
		respond(s);
	else if (s->len == sizeof(s->request) - 1)
		scrape_free(s); /* a request this long is not a scrape */
}

static void
scrape_on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	Scrape *s = container_of(w, Scrape, timer);

	(void) loop;
	(void) revents;
	scrape_free(s);
}

static void
metrics_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	Proxy *proxy = container_of(w, Proxy, metrics_io);
	Scrape *s;
	int fd;

	(void) revents;
	fd = accept4(proxy->metrics_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		/* Out of descriptors, the scrape stays queued: retrying at once would spin. */
		if (errno != EAGAIN && errno != EWOULDBLOCK && !proxy_accept_error_is_transient(errno))
			proxy_accept_failed(proxy, errno);
		return;
	}
	s = calloc(1, sizeof(Scrape));
	if (!s) {
		close(fd);
		return;
	}
	s->proxy = proxy;
	s->fd = fd;
	ev_io_init(&s->io, scrape_on_read, fd, EV_READ);
	ev_io_start(loop, &s->io);
	ev_timer_init(&s->timer, scrape_on_timeout, REQUEST_TIMEOUT, 0.);
	ev_timer_start(loop, &s->timer);
}

bool
metrics_start(Proxy *proxy)
{
	const char *listen_at = proxy->config.proxy.metrics_listen;
	const char *colon = strrchr(listen_at, ':');
	struct addrinfo hints, *res = NULL;
	char host[256];
	int on = 1, rc;

	proxy->metrics_fd = -1;
	if (!listen_at[0])
		return true;
	snprintf(host, sizeof(host), "%.*s", (int) (colon - listen_at), listen_at);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	rc = getaddrinfo(host[0] && strcmp(host, "*") != 0 ? host : NULL, colon + 1, &hints, &res);
	if (rc != 0) {
		log_error("metrics", "could not resolve metrics_listen %s: %s", listen_at, gai_strerror(rc));
		return false;
	}
	proxy->metrics_fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (proxy->metrics_fd < 0 || setsockopt(proxy->metrics_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) < 0 ||
	    bind(proxy->metrics_fd, res->ai_addr, res->ai_addrlen) < 0 || listen(proxy->metrics_fd, 16) < 0) {
		log_error("metrics", "could not listen on %s: %s", listen_at, strerror(errno));
		if (proxy->metrics_fd >= 0)
			close(proxy->metrics_fd);
		proxy->metrics_fd = -1;
		freeaddrinfo(res);
		return false;
	}
	freeaddrinfo(res);
	ev_io_init(&proxy->metrics_io, metrics_on_accept, proxy->metrics_fd, EV_READ);
	ev_io_start(proxy->loop, &proxy->metrics_io);
	log_info("metrics", "Prometheus metrics at http://%s/metrics", listen_at);
	return true;
}

void
metrics_stop(Proxy *proxy)
{
	if (proxy->metrics_fd < 0)
		return;
	ev_io_stop(proxy->loop, &proxy->metrics_io);
	close(proxy->metrics_fd);
	proxy->metrics_fd = -1;
}
