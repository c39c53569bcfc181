/*
 * The backend side: connecting to a cluster, TLS per sslmode, logging in as
 * the client's user (with the auth file's secret, or by SCRAM pass-through
 * with the ClientKey the client's own proof revealed), then relaying the
 * server's messages to the client while tracking ReadyForQuery and COPY.
 */
#include "proxy/objects.h"
#include "cutover/loop/cutover.h"
#include "proxy/negotiate.h"
#include "proxy/pool.h"
#include "proxy/session.h"
#include "common/log.h"
#include "common/md5auth.h"
#include "common/scram.h"
#include "common/strbuf.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "proxy/protocol.h"
#include "proxy/authquery.h"
#include "proxy/userlist.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool
server_send(Server *server, PktBuf *pb)
{
	bool ok = !pb->failed && sbuf_answer(&server->sbuf, pb->buf, pb->len);

	pktbuf_free(pb);
	if (!ok)
		server_disconnect(server, "08006", "could not send to the server");
	return ok;
}

/*
 * A standby may log in while its database still carries a cutover's fence;
 * the read-only default it is given goes first in options, so the client's
 * own options still win, as they would on a direct login.  What options
 * set is the session's reset value, which RESET ALL and DISCARD ALL go
 * back to.
 */
static bool
send_startup(Server *server)
{
	const char *keys[3 + PROTO_MAX_STARTUP_PARAMS + 2];
	const char *values[3 + PROTO_MAX_STARTUP_PARAMS + 2];
	const char *p = server->params;
	const char *end = server->params + server->params_len;
	int n = 0, options = -1;
	StrBuf opts;
	PktBuf pb;

	strbuf_init(&opts);
	keys[n] = "user";
	values[n++] = server->user;
	keys[n] = "database";
	values[n++] = server->cluster == &server->proxy->target ? server->db->target_name : server->db->name;
	while (p < end && n < (int) (sizeof(keys) / sizeof(keys[0]))) {
		if (strcmp(p, "options") == 0)
			options = n;
		keys[n] = p;
		p += strlen(p) + 1;
		values[n++] = p;
		p += strlen(p) + 1;
	}
	if (server->login_read_only) {
		strbuf_appendf(&opts, "-c default_transaction_read_only=%s", server->login_read_only);
		if (options >= 0) {
			strbuf_append_char(&opts, ' ');
			strbuf_append(&opts, values[options]);
		} else if (n < (int) (sizeof(keys) / sizeof(keys[0]))) {
			options = n++;
			keys[options] = "options";
		}
		if (options >= 0)
			values[options] = strbuf_str(&opts);
	}
	pktbuf_init(&pb);
	pktbuf_write_startup(&pb, PG_PROTOCOL_3_0, keys, values, n);
	if (opts.failed)
		pb.failed = true;
	strbuf_free(&opts);
	server_change_state(server, SV_LOGIN);
	return server_send(server, &pb);
}

bool
server_start(Server *server)
{
	const Cluster *cluster = server->cluster;

	if (!sbuf_connect(&server->sbuf, (const struct sockaddr *) &cluster->addr, cluster->addrlen)) {
		server_disconnect(server, "08006", "could not connect to the %s cluster at %s:%d: %s", cluster->role,
				  cluster->host, cluster->port, strerror(server->sbuf.error));
		return false;
	}
	log_debug(server->subject, "connecting to %s:%d", cluster->host, cluster->port);
	return true;
}

/* The secret to log in with: the auth file's, else the cluster's own user's. */
static const char *
login_password(Server *server, SecretKind *kind, const UserEntry **entry_out)
{
	/* A connection the pool opens without a client knows only the auth file. */
	const UserEntry *entry =
		server->client ? authquery_entry(server->client) : userlist_find(server->proxy->users, server->user);

	*entry_out = entry;
	if (entry) {
		*kind = entry->kind;
		return entry->secret;
	}
	if (server->cluster->password[0] && strcmp(server->cluster->user, server->user) == 0) {
		*kind = SECRET_PLAIN;
		return server->cluster->password;
	}
	return NULL;
}

static bool login_fail(Server *server, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The login cannot go on: the client hears why, as a FATAL 28000. */
static bool
login_fail(Server *server, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	server_disconnect(server, "28000", "%s", msg);
	return false;
}

/*
 * The ClientKey a SCRAM pass-through logs in with: its client's, else the
 * one the pool kept from its last client (a connection opened without one).
 */
static const uint8_t *
pass_through_key(const Server *server)
{
	if (server->client && server->client->have_client_key)
		return server->client->client_key;
	if (server->pool && server->pool->have_client_key)
		return server->pool->client_key;
	return NULL;
}

static bool
handle_auth_request(Server *server, const PktHeader *pkt)
{
	const char *user = server->user;
	const UserEntry *entry;
	ProtoAuthRequest req;
	SecretKind kind = SECRET_PLAIN;
	const char *secret;
	char err[256], out[1024];
	size_t outlen;
	PktBuf pb;

	if (!proto_parse_auth_request(pkt->body, pkt->body_avail, &req, err, sizeof(err))) {
		server_disconnect(server, "08P01", "invalid authentication request: %s", err);
		return false;
	}
	secret = login_password(server, &kind, &entry);
	switch (req.code) {
	case AUTH_REQ_OK:
		log_debug(server->subject, "authenticated");
		return true;
	case AUTH_REQ_PASSWORD:
		if (!secret || kind != SECRET_PLAIN)
			return login_fail(server, "server asks for a plaintext password, none is known for user \"%s\"",
					  user);
		pktbuf_init(&pb);
		pktbuf_write_password_message(&pb, secret, strlen(secret) + 1);
		return server_send(server, &pb);
	case AUTH_REQ_MD5: {
		char response[36];
		bool ok;

		if (!secret || kind == SECRET_SCRAM)
			return login_fail(server,
					  "server asks for md5, no password or md5 hash is known for user \"%s\"",
					  user);
		if (kind == SECRET_MD5)
			ok = md5auth_response_from_stored(secret, req.data, response, err, sizeof(err));
		else
			ok = md5auth_response_from_password(user, secret, req.data, response, err, sizeof(err));
		if (!ok)
			return login_fail(server, "md5: %s", err);
		pktbuf_init(&pb);
		pktbuf_write_password_message(&pb, response, strlen(response) + 1);
		return server_send(server, &pb);
	}
	case AUTH_REQ_SASL: {
		const uint8_t *client_key = pass_through_key(server);
		bool offered = false, ok;
		int i;

		for (i = 0; i < req.nmechanisms; i++)
			offered |= strcmp(req.mechanisms[i], "SCRAM-SHA-256") == 0;
		if (!offered)
			return login_fail(server, "server offers no SASL mechanism pghandoff supports (user \"%s\")",
					  user);
		server->scram = calloc(1, sizeof(ScramClient));
		if (!server->scram) {
			server_disconnect(server, "53200", "out of memory");
			return false;
		}
		if (secret && kind == SECRET_PLAIN)
			ok = scram_client_init_password(server->scram, secret, err, sizeof(err));
		else if (entry && kind == SECRET_SCRAM && client_key)
			ok = scram_client_init_keys(server->scram, client_key, entry->verifier.stored_key,
						    entry->verifier.server_key, err, sizeof(err));
		else
			return login_fail(server,
					  "server asks for SCRAM, no password or SCRAM key is known for user "
					  "\"%s\"",
					  user);
		if (!ok ||
		    !scram_client_build_client_first(server->scram, NULL, out, sizeof(out), &outlen, err, sizeof(err)))
			return login_fail(server, "SCRAM: %s", err);
		pktbuf_init(&pb);
		pktbuf_write_sasl_initial_response(&pb, "SCRAM-SHA-256", out, outlen);
		return server_send(server, &pb);
	}
	case AUTH_REQ_SASL_CONT:
		if (!server->scram ||
		    !scram_client_read_server_first(server->scram, (const char *) req.data, req.datalen, err,
						    sizeof(err)) ||
		    !scram_client_build_client_final(server->scram, out, sizeof(out), &outlen, err, sizeof(err)))
			return login_fail(server, "SCRAM: %s", server->scram ? err : "unexpected SASL continue");
		pktbuf_init(&pb);
		pktbuf_write_password_message(&pb, out, outlen);
		return server_send(server, &pb);
	case AUTH_REQ_SASL_FIN:
		if (!server->scram ||
		    !scram_client_read_server_final(server->scram, (const char *) req.data, req.datalen, err,
						    sizeof(err)))
			return login_fail(server, "SCRAM: server signature rejected: %s",
					  server->scram ? err : "unexpected SASL final");
		scram_client_clear(server->scram);
		free(server->scram);
		server->scram = NULL;
		return true;
	default:
		return login_fail(server, "server asks for an authentication method pghandoff does not support (%d)",
				  req.code);
	}
}

static bool
keep_login_message(Server *server, const PktHeader *pkt)
{
	uint8_t *grown;

	if (pkt->avail != pkt->len)
		return true; /* a parameter longer than 16 kB is not worth replaying */
	grown = realloc(server->login_params, server->login_params_len + pkt->len);
	if (!grown) {
		server_disconnect(server, "53200", "out of memory");
		return false;
	}
	memcpy(grown + server->login_params_len, pkt->data, pkt->len);
	server->login_params = grown;
	server->login_params_len += pkt->len;
	return true;
}

/* Its ParameterStatus messages become the pool's welcome (pool_answer_login). */
static void
keep_welcome(Server *server)
{
	Pool *pool = server->pool;
	int c = server->cluster == &server->proxy->target ? 1 : 0;
	uint8_t *copy;

	if (!pool || !server->login_params_len)
		return;
	copy = malloc(server->login_params_len);
	if (!copy)
		return;
	memcpy(copy, server->login_params, server->login_params_len);
	free(pool->welcome[c]);
	pool->welcome[c] = copy;
	pool->welcome_len[c] = server->login_params_len;
}

static bool
handle_login_packet(Server *server, const PktHeader *pkt)
{
	Client *client = server->client;
	char err[256];

	if (pkt->avail != pkt->len) {
		server_disconnect(server, "08P01", "login message of %u bytes is too long", pkt->len);
		return false;
	}
	switch (pkt->type) {
	case PQMSG_AUTHENTICATION_REQUEST:
		sbuf_consume(&server->sbuf, pkt->len);
		return handle_auth_request(server, pkt);
	case PQMSG_PARAMETER_STATUS:
	case PQMSG_NOTICE_RESPONSE:
		sbuf_consume(&server->sbuf, pkt->len);
		return keep_login_message(server, pkt);
	case PQMSG_BACKEND_KEY_DATA: {
		ProtoBackendKeyData key;

		if (!proto_parse_backend_key_data(pkt->body, pkt->body_avail, &key, err, sizeof(err))) {
			server_disconnect(server, "08P01", "invalid BackendKeyData: %s", err);
			return false;
		}
		server->backend_pid = key.pid;
		server->backend_key_len = (uint8_t) (key.keylen > sizeof(server->backend_key) ? 0 : key.keylen);
		memcpy(server->backend_key, key.key, server->backend_key_len);
		sbuf_consume(&server->sbuf, pkt->len);
		return true;
	}
	case PQMSG_NEGOTIATE_PROTOCOL_VERSION:
		sbuf_consume(&server->sbuf, pkt->len);
		return true;
	case PQMSG_ERROR_RESPONSE: {
		ProtoErrorResponse e;

		/* The server refused the login: the client gets its words. */
		if (proto_parse_error_response(pkt->body, pkt->body_avail, &e, err, sizeof(err)) && client &&
		    server->is_standby) {
			sbuf_consume(&server->sbuf, pkt->len);
			server_disconnect(server, NULL, "login refused: %s", e.message);
			return false;
		}
		if (proto_parse_error_response(pkt->body, pkt->body_avail, &e, err, sizeof(err)) && client) {
			(void) client_send_error(client, "FATAL", e.sqlstate ? e.sqlstate : "08006", e.message,
						 e.detail, e.hint);
			log_info(server->subject, "login refused: %s", e.message);
			server->client = NULL;
			client->server = NULL;
			client_disconnect(client, NULL, "server refused the login");
		}
		sbuf_consume(&server->sbuf, pkt->len);
		server_disconnect(server, NULL, "login refused");
		return false;
	}
	case PQMSG_READY_FOR_QUERY:
		sbuf_consume(&server->sbuf, pkt->len);
		if (!client && server->pool && !server->is_standby) {
			/* Opened for the pool alone (min_pool_size, a cutover's warm-up), or its client left. */
			log_debug(server->subject, "logged in for the pool, backend pid %d", server->backend_pid);
			keep_welcome(server);
			server->proxy->pool_server_idle(server);
			return !sbuf_closed(&server->sbuf);
		}
		if (!client) {
			server_disconnect(server, NULL, "client gone");
			return false;
		}
		if (server->is_standby) {
			/* It waits for its client's switch; the cutover is told. */
			server_change_state(server, SV_STANDBY);
			log_debug(server->subject, "standby logged in, backend pid %d", server->backend_pid);
			proxy_recheck(server->proxy);
			return !sbuf_closed(&server->sbuf);
		}
		keep_welcome(server);
		server_change_state(server, SV_ACTIVE);
		log_debug(server->subject, "logged in, backend pid %d", server->backend_pid);
		if (client->state == CL_ACTIVE) {
			/* Transaction mode: its client's next transaction waited for this login. */
			client_link_server(client, server);
			if (!server_take_statements(server, client))
				return false;
			if (!server->script)
				sbuf_continue(&client->sbuf);
			return !sbuf_closed(&server->sbuf);
		}
		client_server_ready(client);
		return !sbuf_closed(&server->sbuf);
	default:
		server_disconnect(server, "08P01", "unexpected message type %d during login", pkt->type);
		return false;
	}
}

static bool
relay_server_packet(Server *server, const PktHeader *pkt)
{
	Client *client = server->client;
	Proxy *proxy = server->proxy;
	ProtoReadyForQuery rfq;
	char err[128];

	if (!client) {
		server_disconnect(server, NULL, "client gone");
		return false;
	}
	switch (pkt->type) {
	case PQMSG_READY_FOR_QUERY: {
		ev_tstamp now = ev_now(proxy->loop);
		DbStats *stats = &client->db->stats;

		if (!proto_parse_ready_for_query(pkt->body, pkt->body_avail, &rfq, err, sizeof(err))) {
			server_disconnect(server, "08P01", "invalid ReadyForQuery: %s", err);
			return false;
		}
		client->txn_status = rfq.status;
		client->in_copy = false;
		if (client->pending_rfq > 0)
			client->pending_rfq--;
		stats->query_count++;
		if (client->pending_rfq == 0 && client->request_time > 0) {
			stats->query_time_us += (uint64_t) ((now - client->request_time) * 1e6);
			stats_observe(stats->query_hist, now - client->request_time);
			client->request_time = 0;
		}
		if (rfq.status == TXN_IDLE && client->pending_rfq == 0 && client->xact_start > 0) {
			stats->xact_count++;
			stats->xact_time_us += (uint64_t) ((now - client->xact_start) * 1e6);
			stats_observe(stats->xact_hist, now - client->xact_start);
			client->xact_start = 0;
		}
		stats->bytes_sent += pkt->len;
		sbuf_forward(&server->sbuf, pkt->len);
		if (client->pending_rfq == 0)
			proxy_recheck(proxy);
		if (client->pending_rfq == 0 && rfq.status == TXN_IDLE && server->pool &&
		    database_pool_mode(proxy, client->db) == POOL_TRANSACTION) {
			/* Back to the pool once this answer is out (pool_txn_release). */
			server->txn_done = true;
			proxy->txn_release_pending = true;
		}
		return !sbuf_closed(&server->sbuf);
	}
	case PQMSG_COPY_IN_RESPONSE:
	case PQMSG_COPY_BOTH_RESPONSE:
		client->in_copy = true;
		break;
	case PQMSG_ERROR_RESPONSE:
		if (client->cutover.cancel_sent && pkt->avail == pkt->len) {
			ProtoErrorResponse e;

			client->cutover.cancel_sent = false;
			if (proto_parse_error_response(pkt->body, pkt->body_avail, &e, err, sizeof(err)) &&
			    e.sqlstate && strcmp(e.sqlstate, "57014") == 0) {
				/* The cancel was the cutover's: say so, and that a retry will work. */
				sbuf_consume(&server->sbuf, pkt->len);
				return client_send_error(client, "ERROR", "57014",
							 "canceling statement for a pghandoff cutover",
							 "The transaction was open longer than drain_timeout.",
							 "Retry the transaction.");
			}
		}
		break;
	default:
		break;
	}
	client->db->stats.bytes_sent += pkt->len;
	sbuf_forward(&server->sbuf, pkt->len);
	return true;
}

static bool
start_tls_or_login(Server *server)
{
	const Cluster *cluster = server->cluster;

	if (cluster->tls && cluster->sslmode >= SSLMODE_PREFER) {
		PktBuf pb;
		bool sent;

		pktbuf_init(&pb);
		pktbuf_write_ssl_request(&pb);
		server->tls_requested = true;
		sbuf_expect_answer(&server->sbuf);
		sent = !pb.failed && sbuf_answer(&server->sbuf, pb.buf, pb.len);
		pktbuf_free(&pb);
		if (!sent) {
			server_disconnect(server, "08006", "could not send SSLRequest");
			return false;
		}
		return true;
	}
	return send_startup(server);
}

bool
server_on_event(SBuf *sb, SBufEvent event, const PktHeader *pkt)
{
	Server *server = container_of(sb, Server, sbuf);
	const Cluster *cluster = server->cluster;

	switch (event) {
	case SBUF_EV_CONNECT_OK:
		return start_tls_or_login(server);
	case SBUF_EV_CONNECT_FAILED:
		server_disconnect(server, "08006", "could not connect to the %s cluster at %s:%d: %s", cluster->role,
				  cluster->host, cluster->port, strerror(sb->error));
		return false;
	case SBUF_EV_BYTE:
		switch (negotiate_server_answer(pkt->data, pkt->buffered)) {
		case NEG_SERVER_TLS:
			if (!sbuf_tls_connect(sb, cluster->tls, cluster->host)) {
				server_disconnect(server, "08006", "could not start TLS");
				return false;
			}
			return true;
		case NEG_SERVER_PLAIN:
			if (cluster->sslmode == SSLMODE_PREFER)
				return send_startup(server);
			server_disconnect(server, "08006", "the %s cluster refused TLS (sslmode = require or stricter)",
					  cluster->role);
			return false;
		case NEG_SERVER_UNENCRYPTED:
			/* Bytes no one asked for yet, maybe a man in the middle's: libpq refuses them too. */
			server_disconnect(server, "08P01", "received unencrypted data after SSL response (%s cluster)",
					  cluster->role);
			return false;
		case NEG_SERVER_ERROR:
			server_disconnect(server, "08006", "the %s cluster answered the SSL request with an error",
					  cluster->role);
			return false;
		case NEG_SERVER_INVALID:
			break;
		}
		server_disconnect(server, "08P01", "the %s cluster sent an invalid answer to the SSL request",
				  cluster->role);
		return false;
	case SBUF_EV_TLS_READY:
		log_debug(server->subject, "TLS established: %s", SSL_get_version(sb->ssl));
		return send_startup(server);
	case SBUF_EV_TLS_FAILED: {
		long verify = SSL_get_verify_result(sb->ssl);

		server_disconnect(server, "08006", "TLS handshake with the %s cluster failed%s%s", cluster->role,
				  verify != X509_V_OK ? ": " : "",
				  verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
		return false;
	}
	case SBUF_EV_PACKET:
		if (server->script)
			return script_on_packet(server, pkt);
		if (server->state == SV_ACTIVE)
			return relay_server_packet(server, pkt);
		if (server->state == SV_STANDBY || server->state == SV_RETIRING || server->state == SV_IDLE) {
			/* Nothing is asked of it before the switch: notices and the like. */
			sbuf_consume(sb, pkt->len);
			return true;
		}
		return handle_login_packet(server, pkt);
	case SBUF_EV_RECV_FAILED:
		if (sb->error == EMSGSIZE || sb->error == EPROTO)
			server_disconnect(server, "08P01", "invalid message from the server");
		else
			server_disconnect(server, "08006", "the server closed the connection%s%s",
					  sb->error ? ": " : "", sb->error ? strerror(sb->error) : "");
		return false;
	case SBUF_EV_SEND_FAILED:
		server_disconnect(server, "08006", "could not send to the server: %s", strerror(sb->error));
		return false;
	case SBUF_EV_FLUSHED:
		return true;
	}
	return true;
}

static void
statements_taken(Server *server, Script *script)
{
	if (script->failed)
		log_warning(server->subject, "preparing its client's statements: %s", script->error);
}

bool
server_take_statements(Server *server, Client *client)
{
	const PreparedStmt *stmt;
	int expected = 0;
	PktBuf pb;

	if (server->stmts_owner == client->id || (!server->named_stmts && !client->stmts)) {
		server->stmts_owner = client->id;
		return true;
	}
	pktbuf_init(&pb);
	if (server->named_stmts) {
		/* Another client's names: they would collide with this one's. */
		pktbuf_write_query(&pb, "DEALLOCATE ALL");
		expected++;
	}
	if (client->stmts) {
		for (stmt = client->stmts; stmt; stmt = stmt->next)
			pktbuf_put_messages(&pb, stmt->msg, stmt->len);
		pktbuf_start(&pb, PQMSG_SYNC);
		pktbuf_finish(&pb);
		expected++;
	}
	server->stmts_owner = client->id;
	server->named_stmts = client->stmts != NULL;
	log_debug(server->subject, "taking the %d named statement(s) of %s", client->nstmts, client->subject);
	return script_run(server, &pb, expected, statements_taken);
}

/*
 * CancelRequest: a fresh connection to the server's cluster carrying the
 * backend's key.  Plaintext, as libpq sends it; the request owns nothing
 * but its watcher and frees itself when done.
 */
typedef struct CancelConn {
	ev_io io;
	int fd;
	size_t len;
	uint8_t packet[64];
} CancelConn;

static void
cancel_on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	CancelConn *cc = container_of(w, CancelConn, io);

	(void) revents;
	ev_io_stop(loop, w);
	/* The watcher is stopped and nothing else refers to cc: freeing here is safe. */
	if (send(cc->fd, cc->packet, cc->len, MSG_NOSIGNAL) != (ssize_t) cc->len)
		log_warning("cancel", "could not send a CancelRequest: %s", strerror(errno));
	close(cc->fd);
	free(cc);
}

void
server_send_cancel(Proxy *proxy, Server *server)
{
	const Cluster *cluster = server->cluster;
	CancelConn *cc;
	PktBuf pb;

	if (server->backend_key_len == 0)
		return;
	cc = calloc(1, sizeof(CancelConn));
	if (!cc)
		return;
	pktbuf_init_fixed(&pb, cc->packet, sizeof(cc->packet));
	pktbuf_write_cancel_request(&pb, server->backend_pid, server->backend_key, server->backend_key_len);
	cc->len = pb.len;
	cc->fd = socket(cluster->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (pb.failed || cc->fd < 0 ||
	    (connect(cc->fd, (const struct sockaddr *) &cluster->addr, cluster->addrlen) < 0 && errno != EINPROGRESS)) {
		log_warning(server->subject, "could not send a CancelRequest: %s", strerror(errno));
		if (cc->fd >= 0)
			close(cc->fd);
		free(cc);
		return;
	}
	ev_io_init(&cc->io, cancel_on_writable, cc->fd, EV_WRITE);
	ev_io_start(proxy->loop, &cc->io);
}
