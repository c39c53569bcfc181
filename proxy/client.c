/*
 * The frontend side: a client's startup packet, TLS and authentication, then
 * the relay of its messages to its server connection.
 *
 * The relay looks at each message header to know where the session stands
 * (between transactions or not, inside an extended-protocol pipeline, in
 * COPY) and which named prepared statements exist; bodies are forwarded as
 * they are.  That knowledge is what lets PAUSE hold a client exactly at a
 * transaction boundary.
 */
#include "proxy/objects.h"
#include "proxy/authquery.h"
#include "cutover/loop/cutover.h"
#include "proxy/negotiate.h"
#include "proxy/pool.h"
#include "proxy/session.h"
#include "proxy/sqlscan.h"
#include "common/log.h"
#include "common/md5auth.h"
#include "common/scram.h"
#include "proxy/pktbuf.h"
#include "proxy/proto.h"
#include "proxy/protocol.h"
#include "proxy/userlist.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void
auth_fail(Client *client, const char *why)
{
	char msg[160];

	log_info(client->subject, "authentication failed: %s", why);
	snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"", client->user);
	client_disconnect(client, "28P01", "%s", msg);
}

static bool
is_admin_user(Proxy *proxy, const char *user)
{
	const char *list = proxy->config.proxy.admin_users;
	size_t ulen = strlen(user);

	while (*list) {
		size_t n;

		while (*list == ' ' || *list == ',')
			list++;
		n = strcspn(list, ", ");
		if (n == ulen && strncmp(list, user, n) == 0)
			return true;
		list += n;
	}
	return false;
}

/* Authenticated: an admin session starts at once, anyone else once its server is in. */
static bool
auth_done(Client *client)
{
	Proxy *proxy = client->proxy;

	client->auth_step = CA_DONE;
	if (client->scram) {
		scram_server_clear(client->scram);
		free(client->scram);
		client->scram = NULL;
	}
	if (client->is_admin) {
		PktBuf pb;

		pktbuf_init(&pb);
		pktbuf_write_auth(&pb, AUTH_REQ_OK, NULL, 0);
		pktbuf_write_parameter_status(&pb, "server_version", PGHANDOFF_VERSION " (pghandoff)");
		pktbuf_write_parameter_status(&pb, "server_encoding", "UTF8");
		pktbuf_write_parameter_status(&pb, "client_encoding", "UTF8");
		pktbuf_write_parameter_status(&pb, "DateStyle", "ISO");
		pktbuf_write_parameter_status(&pb, "integer_datetimes", "on");
		pktbuf_write_parameter_status(&pb, "standard_conforming_strings", "on");
		pktbuf_write_backend_key_data(&pb, client->cancel_pid, client->cancel_key, client->cancel_key_len);
		pktbuf_write_ready_for_query(&pb, TXN_IDLE);
		ev_timer_stop(proxy->loop, &client->login_timer);
		client_change_state(client, CL_ADMIN);
		client->sbuf.max_pkt = SBUF_INSPECT_MAX;
		log_info(client->subject, "admin console login");
		return client_send(client, &pb);
	}

	if (proxy->logins_held) {
		/* Its server opens on whichever cluster the cutover leaves it on. */
		client->cutover.wait_login = true;
		client_change_state(client, CL_WAIT_SERVER);
		log_debug(client->subject, "login waits for the cutover");
		(void) pool_answer_login(client);
		return client->state != CL_JUSTFREE;
	}
	return proxy_connect_client(client);
}

bool
proxy_connect_client(Client *client)
{
	return pool_connect_client(client);
}

/* Why a login with no secret fails, for the log: auth_query's reason when it looked. */
static const char *
no_secret_reason(const Client *client, const char *otherwise)
{
	return client->auth_secret && !client->auth_secret->found ? client->auth_secret->why : otherwise;
}

/*
 * auth_type = cert: the handshake asked for a certificate and accepted any
 * (settings.c), so that one missing or not signed by client_tls_ca_file is
 * refused here with a SQLSTATE, as PostgreSQL's clientcert does; the user
 * must be the certificate's common name.
 */
static bool
cert_login(Client *client)
{
	SSL *ssl = client->sbuf.ssl;
	X509 *cert;
	char cn[256];
	long verify;
	int len;

	if (!client->tls || !ssl) {
		client_disconnect(client, "28000", "connection requires a valid client certificate");
		return false;
	}
	cert = SSL_get_peer_certificate(ssl);
	if (!cert) {
		client_disconnect(client, "28000", "connection requires a valid client certificate");
		return false;
	}
	verify = SSL_get_verify_result(ssl);
	len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
	X509_free(cert);
	if (verify != X509_V_OK) {
		log_info(client->subject, "authentication failed: client certificate not accepted: %s",
			 X509_verify_cert_error_string(verify));
		client_disconnect(client, "28000", "certificate authentication failed for user \"%s\"", client->user);
		return false;
	}
	/* A name with a NUL inside is not the user's, whatever it starts with. */
	if (len < 0 || (size_t) len != strlen(cn) || strcmp(cn, client->user) != 0) {
		log_info(client->subject, "authentication failed: the certificate's common name \"%s\" is not the user",
			 len < 0 ? "" : cn);
		client_disconnect(client, "28000", "certificate authentication failed for user \"%s\"", client->user);
		return false;
	}
	return true;
}

/* The password request of auth_type md5 or scram-sha-256, once client's secret is known (or known missing). */
static bool
request_password(Client *client)
{
	Proxy *proxy = client->proxy;
	PktBuf pb;
	char err[256];

	if (proxy->config.proxy.auth_type == AUTH_MD5) {
		if (!md5auth_random_salt(client->md5_salt, err, sizeof(err))) {
			client_disconnect(client, "XX000", "could not generate a salt: %s", err);
			return false;
		}
		client->auth_step = CA_WAIT_PASSWORD;
		pktbuf_init(&pb);
		pktbuf_write_auth(&pb, AUTH_REQ_MD5, client->md5_salt, sizeof(client->md5_salt));
		return client_send(client, &pb);
	} else {
		static const char mechanisms[] = "SCRAM-SHA-256\0";

		client->scram = calloc(1, sizeof(ScramServer));
		if (!client->scram) {
			client_disconnect(client, "53200", "out of memory");
			return false;
		}
		if (!userlist_scram_start_entry(authquery_entry(client), client->user, client->scram,
						&client->scram_mock, err, sizeof(err))) {
			client_disconnect(client, "XX000", "could not start SCRAM authentication: %s", err);
			return false;
		}
		client->auth_step = CA_WAIT_SASL_INITIAL;
		pktbuf_init(&pb);
		pktbuf_write_auth(&pb, AUTH_REQ_SASL, mechanisms, sizeof(mechanisms));
		return client_send(client, &pb);
	}
}

/* The md5 check of a response: false with err when it does not match client's secret. */
static bool
md5_check(Client *client, const char *response, size_t rlen, char *err, size_t errlen)
{
	if (userlist_md5_verify_entry(authquery_entry(client), client->user, client->md5_salt, response, rlen, err,
				      errlen))
		return true;
	if (authquery_entry(client) == NULL)
		snprintf(err, errlen, "%s", no_secret_reason(client, "user not in auth_file"));
	return false;
}

/* auth_query answered (Client.looked_up): the login goes on where it waited. */
static void
auth_looked_up(Client *client)
{
	char err[256];

	if (!client->auth_secret) {
		client_disconnect(client, "53200", "out of memory");
		return;
	}

	switch (client->auth_step) {
	case CA_LOOKUP:
		(void) request_password(client); /* a failure tore it down */
		return;
	case CA_LOOKUP_AGAIN:
		/* The response that failed the cached secret, against the cluster's secret of now. */
		if (!md5_check(client, client->md5_response, strlen(client->md5_response), err, sizeof(err))) {
			auth_fail(client, err);
			return;
		}
		(void) auth_done(client); /* a failure tore it down */
		return;
	default:
		client_disconnect(client, "XX000", "auth_query answered a client that was not waiting for it");
		return;
	}
}

static bool
start_auth(Client *client)
{
	Proxy *proxy = client->proxy;
	bool pending;

	switch (proxy->config.proxy.auth_type) {
	case AUTH_TRUST:
		return auth_done(client);
	case AUTH_CERT:
		return cert_login(client) && auth_done(client);
	case AUTH_MD5:
	case AUTH_SCRAM_SHA_256:
		if (authquery_wanted(client)) {
			client->looked_up = auth_looked_up;
			if (!authquery_start(client, false, &pending)) {
				client_disconnect(client, "53200", "out of memory");
				return false;
			}
			if (pending) {
				/* The request goes out when the answer comes (auth_looked_up). */
				client->auth_step = CA_LOOKUP;
				return true;
			}
		}
		return request_password(client);
	}
	return false;
}

static bool
handle_password_message(Client *client, const PktHeader *pkt)
{
	const UserEntry *entry = authquery_entry(client);
	const uint8_t *body = pkt->body;
	size_t len = pkt->body_avail;
	char err[256];
	char out[1024];
	size_t outlen;
	PktBuf pb;

	if (pkt->avail != pkt->len) {
		client_disconnect(client, "08P01", "authentication message too long");
		return false;
	}
	/*
	 * An empty password never logs in, whoever asks (PostgreSQL's rule), and
	 * fails like a wrong one: in md5, and in place of either SCRAM message.
	 */
	if ((client->auth_step == CA_WAIT_PASSWORD || client->auth_step == CA_WAIT_SASL_INITIAL ||
	     client->auth_step == CA_WAIT_SASL_FINAL) &&
	    (len == 0 || (len == 1 && body[0] == '\0'))) {
		auth_fail(client, "empty password returned by the client");
		return false;
	}
	switch (client->auth_step) {
	case CA_WAIT_PASSWORD: {
		size_t rlen = body[len - 1] == '\0' ? len - 1 : len; /* len > 0: checked above */
		bool pending;

		if (md5_check(client, (const char *) body, rlen, err, sizeof(err))) {
			sbuf_consume(&client->sbuf, pkt->len);
			return auth_done(client);
		}
		if (!client->auth_secret || !client->auth_secret->cached || rlen >= sizeof(client->md5_response)) {
			auth_fail(client, err);
			return false;
		}
		/*
		 * The cached secret may be older than a password change: the
		 * cluster is asked once more, and the same response checked
		 * against what it says now (the salt is this login's).
		 */
		memcpy(client->md5_response, body, rlen);
		client->md5_response[rlen] = '\0';
		sbuf_consume(&client->sbuf, pkt->len);
		authquery_forget(client);
		if (!authquery_start(client, true, &pending)) {
			client_disconnect(client, "53200", "out of memory");
			return false;
		}
		client->auth_step = CA_LOOKUP_AGAIN;
		return true; /* the client waits for the answer (auth_looked_up) */
	}
	case CA_WAIT_SASL_INITIAL: {
		ProtoSaslInitialResponse sasl;

		if (!proto_parse_sasl_initial_response(body, len, &sasl, err, sizeof(err)) || sasl.datalen < 0) {
			client_disconnect(client, "08P01", "invalid SASL initial response: %s", err);
			return false;
		}
		if (strcmp(sasl.mechanism, "SCRAM-SHA-256") != 0) {
			client_disconnect(client, "08P01", "client selected an invalid SASL authentication mechanism");
			return false;
		}
		if (!scram_server_read_client_first(client->scram, (const char *) sasl.data, (size_t) sasl.datalen, err,
						    sizeof(err)) ||
		    !scram_server_build_server_first(client->scram, out, sizeof(out), &outlen, err, sizeof(err))) {
			client_disconnect(client, "08P01", "malformed SCRAM message: %s", err);
			return false;
		}
		sbuf_consume(&client->sbuf, pkt->len);
		client->auth_step = CA_WAIT_SASL_FINAL;
		pktbuf_init(&pb);
		pktbuf_write_auth(&pb, AUTH_REQ_SASL_CONT, out, outlen);
		return client_send(client, &pb);
	}
	case CA_WAIT_SASL_FINAL:
		if (!scram_server_read_client_final(client->scram, (const char *) body, len, err, sizeof(err))) {
			client_disconnect(client, "08P01", "malformed SCRAM message: %s", err);
			return false;
		}
		if (!scram_server_verify_proof(client->scram, err, sizeof(err))) {
			/*
			 * The proof was made with the cached verifier's salt, so a
			 * fresh verifier cannot check it: the cache forgets it, and
			 * the client's next login asks the cluster.
			 */
			if (client->auth_secret && client->auth_secret->cached)
				authquery_forget(client);
			auth_fail(client,
				  client->scram_mock
					  ? no_secret_reason(client, "no SCRAM secret for this user in auth_file")
					  : err);
			return false;
		}
		if (!scram_server_build_server_final(client->scram, out, sizeof(out), &outlen, err, sizeof(err))) {
			client_disconnect(client, "XX000", "SCRAM: %s", err);
			return false;
		}
		if (entry && entry->kind == SECRET_SCRAM)
			client->have_client_key = scram_server_get_client_key(client->scram, client->client_key);
		sbuf_consume(&client->sbuf, pkt->len);
		pktbuf_init(&pb);
		pktbuf_write_auth(&pb, AUTH_REQ_SASL_FIN, out, outlen);
		if (!client_send(client, &pb)) {
			client_disconnect(client, NULL, "could not send to the client");
			return false;
		}
		return auth_done(client);
	default:
		client_disconnect(client, "08P01", "unexpected password message");
		return false;
	}
}

/* Packs the startup parameters the server must see: key\0value\0... */
static bool
keep_params(Client *client, const StartupPacket *sp)
{
	size_t cap = 0, len = 0;
	int i;
	char *p;

	if (sp->options)
		cap += strlen("options") + strlen(sp->options) + 2;
	if (sp->application_name)
		cap += strlen("application_name") + strlen(sp->application_name) + 2;
	for (i = 0; i < sp->nparams; i++)
		cap += strlen(sp->param_names[i]) + strlen(sp->param_values[i]) + 2;
	p = malloc(cap + 1);
	if (!p)
		return false;
#define PUT(s) \
	do { \
		size_t n_ = strlen(s) + 1; \
		memcpy(p + len, (s), n_); \
		len += n_; \
	} while (0)
	if (sp->options) {
		PUT("options");
		PUT(sp->options);
	}
	if (sp->application_name) {
		PUT("application_name");
		PUT(sp->application_name);
	}
	for (i = 0; i < sp->nparams; i++) {
		PUT(sp->param_names[i]);
		PUT(sp->param_values[i]);
	}
#undef PUT
	client->params = p;
	client->params_len = (uint32_t) len;
	return true;
}

static bool
negotiate_version(Client *client, const StartupPacket *sp)
{
	const char *names[PROTO_MAX_STARTUP_PARAMS];
	PktBuf pb;
	int i;

	/*
	 * 3.2 differs from 3.0 only in the cancel key's length, and the key is
	 * the proxy's own: 3.2 clients get a longer one, whatever the server
	 * speaks.  Newer minors and _pq_ options are declined.
	 */
	client->proto_minor = (uint16_t) (sp->minor > 2 ? 2 : sp->minor);
	client->cancel_key_len = client->proto_minor >= 2 ? CANCEL_KEY_MAX : 4;
	if (sp->minor <= 2 && sp->nextensions == 0)
		return true;
	for (i = 0; i < sp->nextensions; i++)
		names[i] = sp->extension_names[i];
	pktbuf_init(&pb);
	pktbuf_write_negotiate_protocol_version(&pb, PG_PROTOCOL(3, client->proto_minor), sp->nextensions, names);
	return client_send(client, &pb);
}

/* The StartupMessage: who logs in, to what, and whether that may go on. */
static bool
handle_startup_message(Client *client, const PktHeader *pkt, const StartupPacket *sp)
{
	Proxy *proxy = client->proxy;

	snprintf(client->user, sizeof(client->user), "%s", sp->user);
	snprintf(client->dbname, sizeof(client->dbname), "%s", sp->database);
	client_set_subject(client);
	if (proxy->config.proxy.client_tls_mode == CLIENT_TLS_REQUIRE && !client->tls) {
		client_disconnect(client, "28000", "TLS is required: connect with sslmode=require");
		return false;
	}
	if (sp->replication && strcmp(sp->replication, "false") != 0 && strcmp(sp->replication, "0") != 0) {
		client_disconnect(client, "08P01", "replication connections are not supported through pghandoff");
		return false;
	}
	if (strcmp(sp->database, PROXY_ADMIN_DATABASE) == 0) {
		if (!is_admin_user(proxy, sp->user)) {
			client_disconnect(client, "28000",
					  "user \"%s\" is not allowed in the admin console (admin_users)", sp->user);
			return false;
		}
		client->is_admin = true;
	} else {
		client->db = proxy_find_database(proxy, sp->database);
		if (!client->db) {
			client_disconnect(client, "3D000", "database \"%s\" does not exist", sp->database);
			return false;
		}
		client->db->nclients++;
	}
	if (proxy->shutting_down) {
		client_disconnect(client, "57P01", "pghandoff is shutting down");
		return false;
	}
	/* Its place was taken at accept if one was free; an admin gives it back for one of its own. */
	if (!client_take_place(client, client->is_admin ? PLACE_ADMIN : PLACE_CLIENT)) {
		if (client->is_admin)
			client_disconnect(client, "53300",
					  "sorry, too many admin console sessions already (admin_reserved_conn = %d)",
					  proxy->config.proxy.admin_reserved_conn);
		else
			client_disconnect(client, "53300", "sorry, too many clients already (max_client_conn = %d)",
					  proxy->config.proxy.max_client_conn);
		return false;
	}
	if (!keep_params(client, sp)) {
		client_disconnect(client, "53200", "out of memory");
		return false;
	}
	sbuf_consume(&client->sbuf, pkt->len);
	client->sbuf.startup = false;
	client->sbuf.max_pkt = SBUF_INSPECT_MAX; /* authentication messages are short */
	log_debug(client->subject, "startup packet: protocol 3.%d", sp->minor);
	if (!negotiate_version(client, sp)) {
		client_disconnect(client, NULL, "could not send to the client");
		return false;
	}
	return start_auth(client);
}

/* A failed negotiation: the FATAL carries PostgreSQL's detail when there is one. */
static void
negotiation_failed(Client *client, const NegotiateResult *res)
{
	if (res->detail) {
		(void) client_send_error(client, "FATAL", res->sqlstate, res->message, res->detail, NULL);
		client_disconnect(client, NULL, "%s (%s)", res->message, res->sqlstate);
		return;
	}
	client_disconnect(client, res->sqlstate, "%s", res->message);
}

/*
 * After an answer was sent (and after an 'S', the handshake done): nothing
 * is buffered then, and only a tainted negotiation has anything to say.
 */
static bool
negotiation_continue(Client *client)
{
	NegotiateResult res;

	if (negotiate_client(&client->negotiation, client->proxy->client_tls != NULL, NULL, 0, &res) == NEG_FAIL) {
		negotiation_failed(client, &res);
		return false;
	}
	return true;
}

static bool
answer_request(Client *client, const NegotiateResult *res)
{
	/* The request, and whatever came with it unencrypted, which nothing may read. */
	sbuf_consume(&client->sbuf, (uint32_t) res->len);
	if (!sbuf_answer(&client->sbuf, &res->answer, 1)) {
		client_disconnect(client, NULL, "could not answer the %s request",
				  res->packet.kind == PROTO_STARTUP_GSSENC ? "GSSENC" : "SSL");
		return false;
	}
	if (res->answer == NEGOTIATE_ANSWER_SSL) {
		if (!sbuf_tls_accept(&client->sbuf, client->proxy->client_tls)) {
			client_disconnect(client, NULL, "could not start TLS");
			return false;
		}
		return false; /* the handshake has the socket until SBUF_EV_TLS_READY */
	}
	return negotiation_continue(client);
}

static bool
handle_startup(Client *client, const PktHeader *pkt)
{
	Proxy *proxy = client->proxy;
	NegotiateResult res;
	const StartupPacket *sp = &res.packet;

	switch (negotiate_client(&client->negotiation, proxy->client_tls != NULL, pkt->data, pkt->buffered, &res)) {
	case NEG_NEED_MORE:
		/* Not reached: the packet is whole (client_on_event checked), and its length passed sbuf. */
		client_disconnect(client, "08P01", "invalid length of startup packet");
		return false;
	case NEG_FAIL:
		negotiation_failed(client, &res);
		return false;
	case NEG_ANSWER:
		return answer_request(client, &res);
	case NEG_CANCEL: {
		Client *target =
			proxy_find_client_by_cancel_key(proxy, sp->cancel_pid, sp->cancel_key, sp->cancel_keylen);

		if (target && target->server && target->server->state == SV_ACTIVE) {
			log_info(client->subject, "cancel request for %s", target->subject);
			server_send_cancel(proxy, target->server);
		} else {
			log_debug(client->subject, "cancel request with an unknown key ignored");
		}
		client_disconnect(client, NULL, "cancel request handled");
		return false;
	}
	case NEG_STARTUP:
		break;
	}
	return handle_startup_message(client, pkt, sp);
}

static void
remember_statement(Client *client, const PktHeader *pkt)
{
	ProtoParse parse;
	PreparedStmt *stmt, **link;
	char err[128];

	if (pkt->avail != pkt->len) {
		/* A huge Parse: its name is all we could keep, and it is not re-playable. */
		client->unnamed_leaves_session = false; /* it may be the unnamed one: unknown text */
		log_debug(client->subject, "Parse of %u bytes not remembered", pkt->len);
		return;
	}
	if (!proto_parse_parse(pkt->body, pkt->body_avail, &parse, err, sizeof(err))) {
		client->unnamed_leaves_session = false;
		return;
	}
	session_learn_settings(client->proxy, parse.query, strlen(parse.query));
	if (parse.stmt[0] == '\0') {
		client->unnamed_leaves_session = sql_leaves_session_alone(parse.query, strlen(parse.query));
		return;
	}
	stmt = malloc(sizeof(PreparedStmt) + pkt->len);
	if (!stmt)
		return;
	stmt->len = pkt->len;
	stmt->leaves_session = sql_leaves_session_alone(parse.query, strlen(parse.query));
	memcpy(stmt->msg, pkt->data, pkt->len);
	/* A re-Parse of the same name replaces the old one (after a Close the server allows it). */
	for (link = &client->stmts; *link; link = &(*link)->next) {
		if (strcmp((const char *) (*link)->msg + 5, parse.stmt) == 0) {
			PreparedStmt *old = *link;

			*link = old->next;
			free(old);
			client->nstmts--;
			break;
		}
	}
	stmt->next = client->stmts;
	client->stmts = stmt;
	client->nstmts++;
	if (client->server) {
		/* The server holds a name of this client's now (transaction mode: server_take_statements). */
		client->server->named_stmts = true;
		client->server->stmts_owner = client->id;
	}
}

static void
forget_statement(Client *client, const PktHeader *pkt)
{
	ProtoTarget target;
	PreparedStmt **link;
	char err[128];

	if (!proto_parse_close(pkt->body, pkt->body_avail, &target, err, sizeof(err)) ||
	    target.kind != PQTARGET_STATEMENT)
		return;
	for (link = &client->stmts; *link; link = &(*link)->next) {
		if (strcmp((const char *) (*link)->msg + 5, target.name) == 0) {
			PreparedStmt *old = *link;

			*link = old->next;
			free(old);
			client->nstmts--;
			return;
		}
	}
}

/*
 * Whether running this message may change the session state a cutover
 * carries.  Parse and Close do not: the proxy keeps the named statements and
 * re-Parses them itself.  Bind runs what was parsed: as safe as its text.
 */
static bool
may_touch_session(const Client *client, const PktHeader *pkt)
{
	char err[128];

	if (pkt->avail != pkt->len)
		return pkt->type != PQMSG_COPY_DATA; /* too long to look at */
	switch (pkt->type) {
	case PQMSG_QUERY: {
		ProtoQuery q;

		return !proto_parse_query(pkt->body, pkt->body_avail, &q, err, sizeof(err)) ||
			!sql_leaves_session_alone(q.sql, strlen(q.sql));
	}
	case PQMSG_BIND: {
		ProtoBind bind;
		const PreparedStmt *stmt;

		if (!proto_parse_bind(pkt->body, pkt->body_avail, &bind, err, sizeof(err)))
			return true;
		if (bind.stmt[0] == '\0')
			return !client->unnamed_leaves_session;
		for (stmt = client->stmts; stmt; stmt = stmt->next)
			if (strcmp((const char *) stmt->msg + 5, bind.stmt) == 0)
				return !stmt->leaves_session;
		return true;
	}
	case PQMSG_PARSE:
	case PQMSG_CLOSE:
	case PQMSG_DESCRIBE:
	case PQMSG_EXECUTE:
	case PQMSG_SYNC:
	case PQMSG_FLUSH:
	case PQMSG_COPY_DATA:
	case PQMSG_COPY_DONE:
	case PQMSG_COPY_FAIL:
		return false; /* a COPY started with a Query that touched */
	default:
		return true; /* FunctionCall and anything unknown */
	}
}

/* Custom settings a Query may set, for a cutover to read by name (session_learn_settings). */
static void
learn_settings(Client *client, const PktHeader *pkt)
{
	ProtoQuery q;
	char err[128];

	if (pkt->avail == pkt->len && proto_parse_query(pkt->body, pkt->body_avail, &q, err, sizeof(err)))
		session_learn_settings(client->proxy, q.sql, strlen(q.sql));
}

/* ROLLBACK or ABORT, alone, as drivers send them. */
static bool
is_rollback(const char *sql)
{
	size_t n;

	while (isspace((unsigned char) *sql))
		sql++;
	if (strncasecmp(sql, "ROLLBACK", 8) == 0)
		n = 8;
	else if (strncasecmp(sql, "ABORT", 5) == 0)
		n = 5;
	else
		return false;
	for (sql += n; *sql; sql++)
		if (!isspace((unsigned char) *sql) && *sql != ';')
			return false;
	return true;
}

static void
killed_expect(Client *client, uint8_t reply)
{
	if (client->cutover.killed_nreplies < sizeof(client->cutover.killed_replies))
		client->cutover.killed_replies[client->cutover.killed_nreplies++] = reply;
	else
		client->cutover.killed_other = true;
}

/*
 * A cutover rolled this client's transaction back (on_drain_timeout =
 * cancel).  Its requests up to the next Sync or Query are dropped; a
 * ROLLBACK (simple or extended protocol) is answered as done, anything else
 * with one retryable error, after which the client rolls back as after any
 * error.
 */
static bool
answer_killed_transaction(Client *client, const PktHeader *pkt)
{
	ProtoQuery q;
	ProtoParse parse;
	ProtoTarget target;
	char err[64];
	PktBuf pb;
	int i;

	sbuf_consume(&client->sbuf, pkt->len);
	switch (pkt->type) {
	case PQMSG_PARSE:
		if (pkt->avail != pkt->len ||
		    !proto_parse_parse(pkt->body, pkt->body_avail, &parse, err, sizeof(err)) ||
		    !is_rollback(parse.query))
			client->cutover.killed_other = true;
		killed_expect(client, PQMSG_PARSE_COMPLETE);
		return true;
	case PQMSG_BIND:
		killed_expect(client, PQMSG_BIND_COMPLETE);
		return true;
	case PQMSG_DESCRIBE:
		if (proto_parse_describe(pkt->body, pkt->body_avail, &target, err, sizeof(err)) &&
		    target.kind == PQTARGET_STATEMENT)
			killed_expect(client, PQMSG_PARAMETER_DESCRIPTION);
		killed_expect(client, PQMSG_NO_DATA);
		return true;
	case PQMSG_EXECUTE:
		killed_expect(client, PQMSG_COMMAND_COMPLETE);
		return true;
	case PQMSG_CLOSE:
		killed_expect(client, PQMSG_CLOSE_COMPLETE);
		return true;
	case PQMSG_QUERY:
		client->cutover.killed_other |= pkt->avail != pkt->len ||
			!proto_parse_query(pkt->body, pkt->body_avail, &q, err, sizeof(err)) || !is_rollback(q.sql);
		client->cutover.killed_nreplies = 0;
		killed_expect(client, PQMSG_COMMAND_COMPLETE);
		break;
	case PQMSG_SYNC:
	case PQMSG_FUNCTION_CALL:
		client->cutover.killed_other |=
			pkt->type == PQMSG_FUNCTION_CALL || client->cutover.killed_nreplies == 0;
		break;
	default:
		return true;
	}
	pktbuf_init(&pb);
	if (!client->cutover.killed_other) {
		/* What the client wanted anyway: the transaction is gone. */
		for (i = 0; i < client->cutover.killed_nreplies; i++) {
			uint8_t reply = client->cutover.killed_replies[i];

			if (reply == PQMSG_COMMAND_COMPLETE) {
				pktbuf_write_command_complete(&pb, "ROLLBACK");
			} else {
				pktbuf_start(&pb, reply);
				if (reply == PQMSG_PARAMETER_DESCRIPTION)
					pktbuf_put_int16(&pb, 0);
				pktbuf_finish(&pb);
			}
		}
		client->txn_status = TXN_IDLE;
		pktbuf_write_ready_for_query(&pb, TXN_IDLE);
	} else {
		client->txn_status = TXN_FAILED;
		pktbuf_write_error(&pb, "ERROR", "40001", "the transaction was rolled back by a pghandoff cutover",
				   "It was open longer than drain_timeout.", "Roll back and retry the transaction.");
		pktbuf_write_ready_for_query(&pb, TXN_FAILED);
	}
	client->cutover.txn_killed = false;
	client->cutover.killed_other = false;
	client->cutover.killed_nreplies = 0;
	return client_send(client, &pb);
}

static bool
relay_client_packet(Client *client, const PktHeader *pkt)
{
	Proxy *proxy = client->proxy;
	ev_tstamp now;

	if (pkt->type == PQMSG_TERMINATE) {
		sbuf_consume(&client->sbuf, pkt->len);
		client_disconnect(client, NULL, "client sent Terminate");
		return false;
	}
	if (client->server && client->server->script) {
		/* A query of the proxy's own runs on its server: this waits for it. */
		if (!client->held)
			client->held_since = ev_time();
		client->held = true;
		return false;
	}
	if (client->cutover.txn_killed)
		return answer_killed_transaction(client, pkt);
	if (client_between_transactions(client)) {
		if (proxy_is_paused(proxy, client->db)) {
			if (!client->held) {
				log_debug(client->subject, "held by PAUSE");
				client->held_since = ev_time();
			}
			client->held = true;
			return false; /* no decision: the message waits in the buffer */
		}
		now = ev_now(proxy->loop);
		client->request_time = now;
		client->xact_start = now;
	} else if (client->pending_rfq == 0 && !client->unsynced && !client->in_copy) {
		client->request_time = ev_now(proxy->loop);
	}
	if ((!client->server && !pool_txn_acquire(client)) || client->server->state != SV_ACTIVE) {
		/* Transaction mode: its server connection for this transaction is not there yet (logging in). */
		if (client->state == CL_JUSTFREE)
			return false;
		if (!client->held)
			client->held_since = ev_time();
		client->held = true;
		return false;
	}
	client->held = false;
	/*
	 * A session read before the pause (not yet replayed) is stale once the
	 * client says something that may change it.  Looked at only while it
	 * matters: a touched session without a reading needs no more looks.
	 */
	if ((!client->session_touched ||
	     (client->cutover.carry && client->cutover.carry->captured && !client->cutover.carry->replay_started)) &&
	    may_touch_session(client, pkt)) {
		client->session_touched = true;
		if (client->cutover.carry && client->cutover.carry->captured &&
		    !client->cutover.carry->replay_started) {
			session_carry_free(client->cutover.carry);
			client->cutover.carry = NULL;
		}
	}

	if (client->txn_status == TXN_IDLE && !client->txn_touched &&
	    database_pool_mode(proxy, client->db) == POOL_TRANSACTION && may_touch_session(client, pkt))
		client->txn_touched = true;

	switch (pkt->type) {
	case PQMSG_QUERY:
		learn_settings(client, pkt);
		client->pending_rfq++;
		break;
	case PQMSG_FUNCTION_CALL:
		client->pending_rfq++;
		break;
	case PQMSG_SYNC:
		client->pending_rfq++;
		client->unsynced = false;
		break;
	case PQMSG_PARSE:
		remember_statement(client, pkt);
		client->unsynced = true;
		break;
	case PQMSG_CLOSE:
		forget_statement(client, pkt);
		client->unsynced = true;
		break;
	case PQMSG_BIND:
	case PQMSG_DESCRIBE:
	case PQMSG_EXECUTE:
		client->unsynced = true;
		break;
	case PQMSG_COPY_DONE:
	case PQMSG_COPY_FAIL:
		client->in_copy = false;
		break;
	default:
		break;
	}
	client->db->stats.bytes_received += pkt->len;
	sbuf_forward(&client->sbuf, pkt->len);
	return true;
}

bool
client_on_event(SBuf *sb, SBufEvent event, const PktHeader *pkt)
{
	Client *client = container_of(sb, Client, sbuf);

	switch (event) {
	case SBUF_EV_PACKET:
		switch (client->state) {
		case CL_LOGIN:
			if (sb->startup) {
				if (pkt->avail != pkt->len) {
					client_disconnect(client, "08P01", "invalid length of startup packet");
					return false;
				}
				return handle_startup(client, pkt);
			}
			if (pkt->type != PQMSG_PASSWORD_MESSAGE) {
				client_disconnect(client, "08P01", "expected password response, got message type %d",
						  pkt->type);
				return false;
			}
			return handle_password_message(client, pkt);
		case CL_WAIT_SERVER:
			return false; /* held until the server is in */
		case CL_ACTIVE:
			return relay_client_packet(client, pkt);
		case CL_ADMIN:
			return client->proxy->admin_on_packet(client, pkt);
		case CL_JUSTFREE:
			return false;
		}
		return false;
	case SBUF_EV_RECV_FAILED:
		if (sb->error == EMSGSIZE || sb->error == EPROTO)
			client_disconnect(client, "08P01",
					  sb->startup ? "invalid length of startup packet" : "invalid message length");
		else if (sb->error)
			client_disconnect(client, NULL, "could not receive from the client: %s", strerror(sb->error));
		else
			client_disconnect(client, NULL, "client closed the connection");
		return false;
	case SBUF_EV_SEND_FAILED:
		client_disconnect(client, NULL, "could not send to the client: %s", strerror(sb->error));
		return false;
	case SBUF_EV_TLS_READY:
		client->tls = true;
		client->sbuf.startup = true;
		log_debug(client->subject, "TLS established: %s", SSL_get_version(sb->ssl));
		return negotiation_continue(client);
	case SBUF_EV_TLS_FAILED:
		client_disconnect(client, NULL, "TLS handshake failed");
		return false;
	case SBUF_EV_CONNECT_OK:
	case SBUF_EV_CONNECT_FAILED:
	case SBUF_EV_FLUSHED:
	case SBUF_EV_BYTE:
		return true;
	}
	return true;
}

void
client_resume_held(Proxy *proxy, Database *db)
{
	List *item, *tmp;

	list_for_each_safe(item, tmp, &proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (client->held && (!db || client->db == db) && !proxy_is_paused(proxy, client->db)) {
			client->held = false;
			sbuf_continue(&client->sbuf);
		}
	}
}
