/*
 * libFuzzer target: prepared statements across server connections.  The
 * input is a script of steps for two clients and two servers: client
 * messages (well-formed ones over a few names and texts, cut-off ones, and
 * raw bytes), server replies (any type, raw bytes too), clients leaving,
 * servers closing.  A refused client message or reply drops what the relay
 * would drop.  After every step the module's invariants hold (the FIFO's
 * count, the name and statement sets, every definition's reference count),
 * what it asks to send is well framed, what it makes up for the client is a
 * ParseComplete, a CloseComplete or the "already exists" error, a swallowed
 * reply is a ParseComplete or CloseComplete, and at the end, with everything freed, no definition is
 * left.  AddressSanitizer reports leaks and bad accesses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/pktbuf.h"
#include "proxy/prepared.h"
#include "proxy/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Script {
	const uint8_t *p;
	size_t left;
} Script;

static uint8_t
next_byte(Script *s)
{
	if (s->left == 0)
		return 0;
	s->left--;
	return *s->p++;
}

static const char *const names[] = {"a", "b", "", "PGH_1"};
static const char *const texts[] = {"SELECT 1", "SELECT 2", "SELEC 3"};
static const uint8_t reply_types[] = {
	PQMSG_PARSE_COMPLETE,
	PQMSG_BIND_COMPLETE,
	PQMSG_CLOSE_COMPLETE,
	PQMSG_PARAMETER_DESCRIPTION,
	PQMSG_ROW_DESCRIPTION,
	PQMSG_NO_DATA,
	PQMSG_DATA_ROW,
	PQMSG_COMMAND_COMPLETE,
	PQMSG_EMPTY_QUERY_RESPONSE,
	PQMSG_PORTAL_SUSPENDED,
	PQMSG_READY_FOR_QUERY,
	PQMSG_ERROR_RESPONSE,
	PQMSG_NOTICE_RESPONSE,
	PQMSG_COPY_IN_RESPONSE,
	PQMSG_COPY_OUT_RESPONSE,
	PQMSG_COPY_DATA,
	PQMSG_COPY_DONE,
	PQMSG_PARAMETER_STATUS,
	PQMSG_FUNCTION_CALL_RESPONSE,
};

typedef struct World {
	PreparedRegistry *reg;
	PreparedClient *cl[2];
	PreparedServer *srv[2];
	int max;
} World;

static void
check_world(World *w)
{
	char err[256];

	if (!prepared_check(w->reg, w->srv, 2, w->cl, 2, err, sizeof(err))) {
		fprintf(stderr, "invariant broken: %s\n", err);
		abort();
	}
	for (int i = 0; i < 2; i++)
		if (prepared_server_pending(w->srv[i]) > ((size_t) 1 << 24))
			abort(); /* an underflowed count */
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

/* Whole messages back to back, the last one longer by tail bytes sent after them. */
static void
check_framed(const PktBuf *pb, size_t tail)
{
	size_t pos = 0;

	if (pb->failed || pb->in_message)
		abort();
	while (pos < pb->len) {
		uint32_t len;

		if (pb->len - pos < 5)
			abort();
		len = get32(pb->buf + pos + 1);
		if (len < 4)
			abort();
		if (pos + 1 + len > pb->len) {
			if (pos + 1 + len != pb->len + tail)
				abort();
			return;
		}
		pos += 1 + len;
	}
	if (tail != 0 && pos != pb->len)
		abort();
}

/* The proxy makes up ParseComplete, CloseComplete and the "already exists" error, nothing else. */
static void
check_made_up(const PktBuf *pb)
{
	size_t pos = 0;

	check_framed(pb, 0);
	while (pos < pb->len) {
		uint8_t type = pb->buf[pos];
		uint32_t len = get32(pb->buf + pos + 1);

		if (type == PQMSG_ERROR_RESPONSE) {
			if (!memmem(pb->buf + pos, 1 + len, "C42P05", 7))
				abort();
		} else if ((type != PQMSG_PARSE_COMPLETE && type != PQMSG_CLOSE_COMPLETE) || len != 4) {
			abort();
		}
		pos += 1 + len;
	}
}

static void
renew_server(World *w, int s)
{
	prepared_server_free(w->srv[s]);
	w->srv[s] = prepared_server_new(w->reg, w->max);
	if (!w->srv[s])
		abort();
}

static void
renew_client(World *w, int c)
{
	prepared_client_free(w->cl[c]);
	w->cl[c] = prepared_client_new(w->reg);
	if (!w->cl[c])
		abort();
}

/* The client message in m, of which avail bytes are at hand. */
static void
client_sends(World *w, int s, int c, const PktBuf *m, size_t avail)
{
	PktBuf to_server, to_client;
	size_t keep_from = 0;
	char err[256];

	if (m->failed || m->len < 5)
		return;
	if (avail > m->len)
		avail = m->len;
	if (avail < 5)
		avail = 5;
	pktbuf_init(&to_server);
	pktbuf_init(&to_client);
	if (prepared_client_message(w->srv[s], w->cl[c], m->buf, avail, m->len, &to_server, &keep_from, &to_client, err,
				    sizeof(err))) {
		if (keep_from > m->len)
			abort();
		/* A rewritten head is followed by the rest of the message, never a whole one by a piece. */
		check_framed(&to_server, keep_from > 0 && keep_from < m->len ? m->len - keep_from : 0);
		if (keep_from == 0 && to_server.len > 0)
			abort();
		check_made_up(&to_client);
	} else {
		/* The relay drops both. */
		renew_client(w, c);
		renew_server(w, s);
	}
	pktbuf_free(&to_server);
	pktbuf_free(&to_client);
}

static void
server_sends(World *w, int s, const PktBuf *m)
{
	PktBuf to_client;
	PreparedVerdict verdict;
	char err[256];

	if (m->failed || m->len < 5)
		return;
	pktbuf_init(&to_client);
	if (prepared_server_reply(w->srv[s], m->buf, m->len, m->len, &verdict, &to_client, err, sizeof(err))) {
		if (verdict == PREPARED_SWALLOW && m->buf[0] != PQMSG_PARSE_COMPLETE &&
		    m->buf[0] != PQMSG_CLOSE_COMPLETE)
			abort();
		check_made_up(&to_client);
	} else {
		renew_server(w, s);
	}
	pktbuf_free(&to_client);
}

static void
step(World *w, Script *sc)
{
	uint8_t op = next_byte(sc);
	int c = (op >> 4) & 1, s = (op >> 5) & 1;
	uint8_t arg = next_byte(sc);
	const char *name = names[arg % 4];
	PktBuf m;

	pktbuf_init(&m);
	switch (op % 16) {
	case 0: {
		int nparams = (arg >> 4) & 1;

		pktbuf_start(&m, PQMSG_PARSE);
		pktbuf_put_string(&m, name);
		pktbuf_put_string(&m, texts[(arg >> 2) % 3]);
		pktbuf_put_int16(&m, (int16_t) nparams);
		if (nparams)
			pktbuf_put_int32(&m, 23);
		pktbuf_finish(&m);
		/* Sometimes only a piece of it is at hand. */
		client_sends(w, s, c, &m, arg & 0x80 ? (size_t) 5 + ((arg >> 5) & 3) * 3 : m.len);
		break;
	}
	case 1:
		pktbuf_start(&m, PQMSG_BIND);
		pktbuf_put_string(&m, (arg & 0x40) ? "portal" : "");
		pktbuf_put_string(&m, name);
		pktbuf_put_int16(&m, 0);
		pktbuf_put_int16(&m, 0);
		pktbuf_put_int16(&m, 0);
		pktbuf_finish(&m);
		client_sends(w, s, c, &m, arg & 0x80 ? (size_t) 5 + ((arg >> 4) & 3) * 2 : m.len);
		break;
	case 2:
	case 3:
		pktbuf_start(&m, op % 16 == 2 ? PQMSG_DESCRIBE : PQMSG_CLOSE);
		pktbuf_put_byte(&m, (arg & 0x40) ? PQTARGET_PORTAL : PQTARGET_STATEMENT);
		pktbuf_put_string(&m, name);
		pktbuf_finish(&m);
		client_sends(w, s, c, &m, m.len);
		break;
	case 4:
		pktbuf_start(&m, PQMSG_EXECUTE);
		pktbuf_put_string(&m, "");
		pktbuf_put_int32(&m, 0);
		pktbuf_finish(&m);
		client_sends(w, s, c, &m, m.len);
		break;
	case 5:
	case 6: {
		static const uint8_t bare[] = {PQMSG_SYNC, PQMSG_FLUSH, PQMSG_COPY_DONE, PQMSG_COPY_FAIL,
					       PQMSG_TERMINATE};

		if (op % 16 == 5) {
			pktbuf_start(&m, bare[arg % 5]);
			if (bare[arg % 5] == PQMSG_COPY_FAIL)
				pktbuf_put_string(&m, "no");
			pktbuf_finish(&m);
		} else {
			pktbuf_write_query(&m, arg & 1 ? "DISCARD ALL" : "SELECT 1");
		}
		client_sends(w, s, c, &m, m.len);
		break;
	}
	case 7: {
		/* Raw client bytes: a type and up to 31 body bytes from the script. */
		size_t n = (arg >> 3) & 31;

		pktbuf_start(&m, next_byte(sc));
		for (size_t i = 0; i < n; i++)
			pktbuf_put_byte(&m, next_byte(sc));
		pktbuf_finish(&m);
		client_sends(w, s, c, &m, arg & 1 ? m.len : 5 + (arg & 7));
		break;
	}
	case 8:
	case 9:
	case 10:
	case 11: {
		uint8_t type = reply_types[arg % sizeof(reply_types)];

		pktbuf_start(&m, type);
		if (type == PQMSG_COMMAND_COMPLETE)
			pktbuf_put_string(&m,
					  arg & 0x80 ? "DISCARD ALL" : (arg & 0x40 ? "DEALLOCATE ALL" : "SELECT 1"));
		else if (type == PQMSG_READY_FOR_QUERY)
			pktbuf_put_byte(&m, TXN_IDLE);
		pktbuf_finish(&m);
		server_sends(w, s, &m);
		break;
	}
	case 12: {
		size_t n = (arg >> 3) & 31;

		pktbuf_start(&m, next_byte(sc));
		for (size_t i = 0; i < n; i++)
			pktbuf_put_byte(&m, next_byte(sc));
		pktbuf_finish(&m);
		server_sends(w, s, &m);
		break;
	}
	case 13:
		renew_client(w, c);
		break;
	case 14:
		renew_server(w, s);
		break;
	case 15:
		prepared_server_forget_all(w->srv[s]);
		break;
	}
	pktbuf_free(&m);
	check_world(w);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Script sc = {data, size};
	World w;

	memset(&w, 0, sizeof(w));
	w.max = 1 + next_byte(&sc) % 4;
	w.reg = prepared_registry_new();
	if (!w.reg)
		abort();
	for (int i = 0; i < 2; i++) {
		w.cl[i] = prepared_client_new(w.reg);
		w.srv[i] = prepared_server_new(w.reg, w.max);
		if (!w.cl[i] || !w.srv[i])
			abort();
	}
	while (sc.left > 0)
		step(&w, &sc);
	/* Either order of teardown: clients first here, servers first on odd sizes. */
	for (int i = 0; i < 2; i++) {
		if (size & 1) {
			prepared_server_free(w.srv[i]);
			w.srv[i] = NULL;
		} else {
			prepared_client_free(w.cl[i]);
			w.cl[i] = NULL;
		}
	}
	for (int i = 0; i < 2; i++) {
		prepared_client_free(w.cl[i]);
		prepared_server_free(w.srv[i]);
	}
	if (prepared_registry_count(w.reg) != 0)
		abort();
	prepared_registry_free(w.reg);
	return 0;
}
