/*
 * Scripts (the proxy's own queries on a server connection) and the session
 * carry of a cutover.
 *
 * A session's state is read with one query on the server the client leaves:
 * settings made with SET (source = 'session'); the rest is what a fresh
 * login on the other server starts with, its standby's too, even when that
 * database still carries a fence (cutover/login.c).  Then SQL prepared statements,
 * LISTEN channels, and what cannot move (temporary tables, advisory locks,
 * WITH HOLD cursors).  It is replayed on the other server with one Query
 * (set_config, PREPARE, LISTEN) followed by the client's remembered Parse
 * messages and a Sync, so protocol-level statements keep their names.
 */
#include "proxy/session.h"
#include "common/log.h"
#include "common/strbuf.h"
#include "cutover/loop/cutover.h"
#include "proxy/proto.h"
#include "proxy/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sql_capture[] =
	"SELECT 'set', name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings "
	"  WHERE source = 'session' "
	"UNION ALL SELECT 'prepare', name, statement FROM pg_catalog.pg_prepared_statements WHERE from_sql "
	"UNION ALL SELECT 'listen', c, NULL FROM pg_catalog.pg_listening_channels() AS c "
	"UNION ALL SELECT 'unmovable', 'temporary tables', count(*)::text FROM pg_catalog.pg_class "
	"  WHERE relnamespace = pg_catalog.pg_my_temp_schema() HAVING count(*) > 0 "
	"UNION ALL SELECT 'unmovable', 'advisory locks', count(*)::text FROM pg_catalog.pg_locks "
	"  WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid() HAVING count(*) > 0 "
	"UNION ALL SELECT 'unmovable', 'WITH HOLD cursors', count(*)::text FROM pg_catalog.pg_cursors "
	"  WHERE is_holdable HAVING count(*) > 0";

bool
script_run(Server *server, PktBuf *pb, int expected_rfq, ScriptDoneFn done)
{
	Script *script;

	if (server->script || pb->failed || !(script = calloc(1, sizeof(Script)))) {
		log_error(server->subject, "could not start a query of the proxy's own");
		pktbuf_free(pb);
		return false;
	}
	script->pending_rfq = expected_rfq;
	script->done = done;
	server->script = script;
	if (!sbuf_answer(&server->sbuf, pb->buf, pb->len)) {
		pktbuf_free(pb);
		server_disconnect(server, "08006", "could not send to the server");
		return false;
	}
	pktbuf_free(pb);
	return true;
}

static bool
copy_row(Script *script, const ProtoDataRow *row)
{
	int i;

	if (row->ncols != SCRIPT_COLUMNS)
		return true; /* set_config's answers and the like */
	if (script->nrows == script->cap) {
		int cap = script->cap ? script->cap * 2 : 16;
		char **grown = realloc(script->cells, sizeof(char *) * (size_t) cap * SCRIPT_COLUMNS);

		if (!grown)
			return false;
		script->cells = grown;
		script->cap = cap;
	}
	for (i = 0; i < SCRIPT_COLUMNS; i++) {
		char **cell = &script->cells[script->nrows * SCRIPT_COLUMNS + i];

		*cell = NULL;
		if (row->lengths[i] >= 0) {
			*cell = strndup((const char *) row->values[i], (size_t) row->lengths[i]);
			if (!*cell) {
				while (--i >= 0)
					free(script->cells[script->nrows * SCRIPT_COLUMNS + i]);
				return false;
			}
		}
	}
	script->nrows++;
	return true;
}

static void
script_fail(Script *script, const char *why)
{
	if (!script->failed)
		snprintf(script->error, sizeof(script->error), "%s", why);
	script->failed = true;
}

bool
script_on_packet(Server *server, const PktHeader *pkt)
{
	Script *script = server->script;
	char err[128];

	if (pkt->type == PQMSG_NOTIFICATION_RESPONSE && server->sbuf.peer) {
		sbuf_forward(&server->sbuf, pkt->len);
		return true;
	}
	sbuf_consume(&server->sbuf, pkt->len);
	if (pkt->avail != pkt->len) {
		script_fail(script, "an answer too long to read");
		return true;
	}
	switch (pkt->type) {
	case PQMSG_DATA_ROW: {
		ProtoDataRow row;

		if (!proto_parse_data_row(pkt->body, pkt->body_avail, &row, err, sizeof(err)))
			script_fail(script, err);
		else if (!copy_row(script, &row))
			script_fail(script, "out of memory");
		return true;
	}
	case PQMSG_ERROR_RESPONSE: {
		ProtoErrorResponse e;

		if (proto_parse_error_response(pkt->body, pkt->body_avail, &e, err, sizeof(err))) {
			char why[256];

			snprintf(why, sizeof(why), "%s (%s)", e.message, e.sqlstate ? e.sqlstate : "?");
			script_fail(script, why);
		} else {
			script_fail(script, err);
		}
		return true;
	}
	case PQMSG_READY_FOR_QUERY: {
		ProtoReadyForQuery rfq;

		if (!proto_parse_ready_for_query(pkt->body, pkt->body_avail, &rfq, err, sizeof(err))) {
			server_disconnect(server, "08P01", "invalid ReadyForQuery: %s", err);
			return false;
		}
		if (--script->pending_rfq > 0)
			return true;
		server->script = NULL;
		script->done(server, script);
		script_free(script);
		/* A message that waited for the script goes on (after this loop iteration), unless a pause holds it. */
		if (server->client && server->client->held)
			server->proxy->resume_pending = true;
		return !sbuf_closed(&server->sbuf);
	}
	default:
		/* RowDescription, CommandComplete, ParseComplete, ParameterStatus, notices. */
		return true;
	}
}

/* An E'' literal: right whatever standard_conforming_strings says. */
static void
append_literal(StrBuf *sb, const char *s)
{
	strbuf_append(sb, "E'");
	for (; *s; s++) {
		if (*s == '\'' || *s == '\\')
			strbuf_append_char(sb, *s);
		strbuf_append_char(sb, *s);
	}
	strbuf_append_char(sb, '\'');
}

static void
append_ident(StrBuf *sb, const char *s)
{
	strbuf_append_char(sb, '"');
	for (; *s; s++) {
		if (*s == '"')
			strbuf_append_char(sb, '"');
		strbuf_append_char(sb, *s);
	}
	strbuf_append_char(sb, '"');
}

/* Several statements prepared in one query string share its text: replay it once. */
static bool
seen_before(const Script *script, int row)
{
	int i;

	for (i = 0; i < row; i++)
		if (strcmp(script->cells[i * SCRIPT_COLUMNS], "prepare") == 0 &&
		    strcmp(script->cells[i * SCRIPT_COLUMNS + 2], script->cells[row * SCRIPT_COLUMNS + 2]) == 0)
			return true;
	return false;
}

static void
build_replay(Client *client, const Script *script)
{
	SessionCarry *carry = client->cutover.carry;
	StrBuf sql;
	int i;

	strbuf_init(&sql);
	for (i = 0; i < script->nrows; i++) {
		char *const *row = &script->cells[i * SCRIPT_COLUMNS];

		if (!row[0] || !row[1])
			continue;
		if (strcmp(row[0], "set") == 0 && row[2]) {
			/* set_config parses list settings (search_path) as the SET command does. */
			strbuf_append(&sql, "SELECT pg_catalog.set_config(");
			append_literal(&sql, row[1]);
			strbuf_append(&sql, ", ");
			append_literal(&sql, row[2]);
			strbuf_append(&sql, ", false);\n");
			carry->nsettings++;
		} else if (strcmp(row[0], "prepare") == 0 && row[2]) {
			if (!seen_before(script, i)) {
				strbuf_append(&sql, row[2]);
				strbuf_append(&sql, ";\n");
			}
			carry->nprepared++;
		} else if (strcmp(row[0], "listen") == 0) {
			strbuf_append(&sql, "LISTEN ");
			append_ident(&sql, row[1]);
			strbuf_append(&sql, ";\n");
			carry->nlisten++;
		} else if (strcmp(row[0], "unmovable") == 0) {
			size_t used = strlen(carry->unmovable);

			snprintf(carry->unmovable + used, sizeof(carry->unmovable) - used, "%s%s %s", used ? ", " : "",
				 row[2] ? row[2] : "?", row[1]);
		}
	}
	pktbuf_init(&carry->replay);
	if (sql.len > 0) {
		pktbuf_write_query(&carry->replay, strbuf_str(&sql));
		carry->replay_rfq++;
	}
	if (sql.failed)
		carry->replay.failed = true;
	strbuf_free(&sql);
}

static void
capture_done(Server *server, Script *script)
{
	Client *client = server->client;

	if (!client || !client->cutover.carry)
		return;
	if (script->failed) {
		snprintf(client->cutover.carry->unmovable, sizeof(client->cutover.carry->unmovable),
			 "its session state could not be read: %.100s", script->error);
		client->cutover.carry->failed = true;
	} else {
		build_replay(client, script);
		if (client->cutover.carry->replay.failed) {
			snprintf(client->cutover.carry->unmovable, sizeof(client->cutover.carry->unmovable),
				 "out of memory");
			client->cutover.carry->failed = true;
		}
	}
	client->cutover.carry->captured = true;
	log_debug(client->subject,
		  "session state: %d setting(s), %d SQL prepared, %d LISTEN, %d named statement(s)%s%s",
		  client->cutover.carry->nsettings, client->cutover.carry->nprepared, client->cutover.carry->nlisten,
		  client->nstmts, client->cutover.carry->unmovable[0] ? "; cannot move: " : "",
		  client->cutover.carry->unmovable);
	proxy_recheck(server->proxy);
}

void
session_learn_setting(Proxy *proxy, const char *name)
{
	int i;

	for (i = 0; i < proxy->ncustom_settings; i++)
		if (strcmp(proxy->custom_settings[i], name) == 0)
			return;
	if (proxy->ncustom_settings == CUSTOM_SETTINGS_MAX || strlen(name) > SQL_SETTING_NAME_MAX)
		return;
	snprintf(proxy->custom_settings[proxy->ncustom_settings++], SQL_SETTING_NAME_MAX + 1, "%s", name);
	log_debug("proxy", "custom setting %s will be carried by a cutover", name);
}

static void
learn_one(const char *name, void *arg)
{
	session_learn_setting(arg, name);
}

void
session_learn_settings(Proxy *proxy, const char *sql, size_t len)
{
	sql_each_custom_setting(sql, len, learn_one, proxy);
}

bool
session_capture(Client *client)
{
	Proxy *proxy = client->proxy;
	StrBuf q;
	PktBuf pb;
	int i;

	session_carry_free(client->cutover.carry);
	client->cutover.carry = calloc(1, sizeof(SessionCarry));
	if (!client->cutover.carry) {
		log_error(client->subject, "out of memory");
		return false;
	}
	strbuf_init(&q);
	strbuf_append(&q, sql_capture);
	if (proxy->ncustom_settings > 0) {
		strbuf_append(
			&q,
			" UNION ALL SELECT 'set', n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[");
		for (i = 0; i < proxy->ncustom_settings; i++) {
			strbuf_append(&q, i ? ", " : "");
			append_literal(&q, proxy->custom_settings[i]);
		}
		strbuf_append(&q, "]::text[]) AS n WHERE pg_catalog.current_setting(n, true) IS NOT NULL");
	}
	if (q.failed) {
		strbuf_free(&q);
		log_error(client->subject, "out of memory");
		return false;
	}
	pktbuf_init(&pb);
	pktbuf_write_query(&pb, strbuf_str(&q));
	strbuf_free(&q);
	return script_run(client->server, &pb, 1, capture_done);
}

static void
replay_done(Server *server, Script *script)
{
	Client *client = server->client;

	if (!client || !client->cutover.carry)
		return;
	if (script->failed) {
		snprintf(client->cutover.carry->unmovable, sizeof(client->cutover.carry->unmovable),
			 "its session state could not be rebuilt on the %s: %.100s", server->cluster->role,
			 script->error);
		client->cutover.carry->failed = true;
		log_warning(client->subject, "%s", client->cutover.carry->unmovable);
	}
	client->cutover.carry->replayed = true;
	proxy_recheck(server->proxy);
}

bool
session_know_untouched(Client *client)
{
	session_carry_free(client->cutover.carry);
	client->cutover.carry = calloc(1, sizeof(SessionCarry));
	if (!client->cutover.carry) {
		log_error(client->subject, "out of memory");
		return false;
	}
	pktbuf_init(&client->cutover.carry->replay);
	client->cutover.carry->captured = true;
	return true;
}

/*
 * The protocol-level statements are added here, not when the session is
 * read: the client may have parsed more since, and the proxy keeps them.
 */
bool
session_replay(Client *client)
{
	SessionCarry *carry = client->cutover.carry;
	PktBuf pb = carry->replay;
	const PreparedStmt *stmt;
	int rfq = carry->replay_rfq;

	memset(&carry->replay, 0, sizeof(carry->replay));
	for (stmt = client->stmts; stmt; stmt = stmt->next) {
		pktbuf_put_messages(&pb, stmt->msg, stmt->len);
		carry->nstmts++;
	}
	if (carry->nstmts > 0) {
		pktbuf_start(&pb, PQMSG_SYNC);
		pktbuf_finish(&pb);
		rfq++;
	}
	if (pb.failed) {
		pktbuf_free(&pb);
		return false;
	}
	if (rfq == 0) {
		pktbuf_free(&pb);
		carry->replayed = true;
		return true;
	}
	return script_run(client->cutover.standby, &pb, rfq, replay_done);
}
