/*
 * libFuzzer target: the startup negotiation (proxy/negotiate.c) fed a
 * client's byte stream in chunks the input chooses, the way client.c feeds
 * it whatever one read brought.
 *
 * Input: one flags byte (bit 0: the proxy offers TLS; bit 1: also read the
 * first chunk as a server's answer to our SSLRequest), then chunks, each a
 * length byte and that many bytes of the stream (the last one may be short).
 *
 * Checked, besides memory safety on exact-size copies:
 * - no startup packet is ever taken from bytes that had arrived by the time
 *   an encryption request was answered (the CVE-2021-23214 property): they
 *   were never encrypted;
 * - a request that came with bytes after it takes them all and fails the
 *   connection next; one that came alone is answered and the stream goes on;
 * - apart from that failure, the decisions are the ones made when the same
 *   stream comes one byte at a time.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/negotiate.h"
#include "proxy/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DECISIONS 8
#define STREAM_MAX 65536

typedef struct Decision {
	NegotiateAction action;
	size_t len;
	uint8_t answer;
	bool tainted; /* an answer that took bytes from after its request */
	char sqlstate[6];
	char message[256];
} Decision;

typedef struct Run {
	Decision d[MAX_DECISIONS];
	int n;
} Run;

static void
check_inside(const void *p, const uint8_t *buf, size_t len)
{
	const uint8_t *q = p;

	if (!q || q < buf || q >= buf + len || !memchr(q, '\0', (size_t) (buf + len - q)))
		abort();
}

/* Feeds stream[0..len) in the chunks sizes[0..nchunks) (the rest in one more), deciding as client.c does. */
static void
run(const uint8_t *stream, size_t len, const size_t *sizes, size_t nchunks, bool tls_offered, Run *out)
{
	NegotiateState state = NEG_START;
	size_t start = 0, received = 0, horizon = 0;
	int answers = 0;

	memset(out, 0, sizeof(*out));
	for (size_t c = 0; c <= nchunks && received < len; c++) {
		size_t take = c < nchunks ? sizes[c] : len - received;

		received += take < len - received ? take : len - received;
		for (;;) {
			size_t avail = received - start;
			uint8_t *copy = malloc(avail ? avail : 1);
			NegotiateState before = state;
			NegotiateResult res;
			NegotiateAction action;
			Decision *d;

			if (!copy)
				abort();
			memcpy(copy, stream + start, avail);
			action = negotiate_client(&state, tls_offered, avail ? copy : NULL, avail, &res);
			if (action == NEG_NEED_MORE) {
				free(copy);
				if (state != before)
					abort();
				break;
			}
			if (out->n >= MAX_DECISIONS)
				abort(); /* at most two answers, then one final decision */
			d = &out->d[out->n++];
			d->action = action;
			d->len = res.len;
			switch (action) {
			case NEG_ANSWER:
				if (res.len < 8 || res.len > avail || ++answers > 2)
					abort();
				if (res.answer != NEGOTIATE_ANSWER_NO &&
				    !(res.answer == NEGOTIATE_ANSWER_SSL && tls_offered))
					abort();
				d->answer = res.answer;
				d->tainted = state == NEG_TAINTED_SSL || state == NEG_TAINTED_GSS;
				/* A tainted answer takes everything; an untainted one had its request alone. */
				if (res.len != avail || (!d->tainted && res.len != 8))
					abort();
				horizon = received;
				start += res.len;
				break;
			case NEG_STARTUP:
				if (start < horizon)
					abort(); /* bytes received before an answer, taken as a startup packet */
				if (res.len < 8 || res.len > avail)
					abort();
				check_inside(res.packet.user, copy, res.len);
				check_inside(res.packet.database, copy, res.len);
				for (int i = 0; i < res.packet.nparams; i++) {
					check_inside(res.packet.param_names[i], copy, res.len);
					check_inside(res.packet.param_values[i], copy, res.len);
				}
				break;
			case NEG_CANCEL:
				if (start < horizon || res.len < 16 || res.len > avail)
					abort();
				if (res.packet.cancel_keylen < PROTO_MIN_CANCEL_KEY ||
				    res.packet.cancel_keylen > PROTO_MAX_CANCEL_KEY)
					abort();
				break;
			case NEG_FAIL:
				if (!res.sqlstate || strlen(res.sqlstate) != 5 || res.message[0] == '\0')
					abort();
				if (state != before)
					abort();
				memcpy(d->sqlstate, res.sqlstate, 6);
				memcpy(d->message, res.message, sizeof(d->message));
				break;
			case NEG_NEED_MORE:
				break;
			}
			free(copy);
			if (action != NEG_ANSWER)
				return; /* logging in, cancelled, or closed: the negotiation is over */
			if (d->tainted) {
				/* Asked again after the answer (and the handshake): it must fail now. */
				if (negotiate_client(&state, tls_offered, NULL, 0, &res) != NEG_FAIL ||
				    strcmp(res.sqlstate, "08P01") != 0)
					abort();
				return;
			}
		}
	}
}

static bool
same(const Decision *a, const Decision *b)
{
	return a->action == b->action && a->len == b->len && a->answer == b->answer &&
		strcmp(a->sqlstate, b->sqlstate) == 0 && strcmp(a->message, b->message) == 0;
}

static void
check_server_answer(const uint8_t *answer, size_t len)
{
	NegotiateServerAnswer a = negotiate_server_answer(answer, len);

	switch (a) {
	case NEG_SERVER_TLS:
		if (len != 1 || answer[0] != NEGOTIATE_ANSWER_SSL)
			abort();
		break;
	case NEG_SERVER_PLAIN:
		if (len != 1 || answer[0] != NEGOTIATE_ANSWER_NO)
			abort();
		break;
	case NEG_SERVER_UNENCRYPTED:
		if (len < 2 || (answer[0] != NEGOTIATE_ANSWER_SSL && answer[0] != NEGOTIATE_ANSWER_NO))
			abort();
		break;
	case NEG_SERVER_ERROR:
		if (len < 1 || answer[0] != PQMSG_ERROR_RESPONSE)
			abort();
		break;
	case NEG_SERVER_INVALID:
		if (len > 0 &&
		    (answer[0] == NEGOTIATE_ANSWER_SSL || answer[0] == NEGOTIATE_ANSWER_NO ||
		     answer[0] == PQMSG_ERROR_RESPONSE))
			abort();
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t stream[STREAM_MAX];
	static size_t sizes[STREAM_MAX], ones[STREAM_MAX];
	size_t len = 0, nchunks = 0, pos = 1;
	bool tls_offered;
	Run chunked, bytewise;

	if (size < 1)
		return 0;
	tls_offered = data[0] & 1;
	while (pos < size && len < STREAM_MAX) {
		size_t n = data[pos++];

		if (n > size - pos)
			n = size - pos;
		if (n > STREAM_MAX - len)
			n = STREAM_MAX - len;
		memcpy(stream + len, data + pos, n);
		sizes[nchunks++] = n;
		len += n;
		pos += n;
	}
	if ((data[0] & 2) && nchunks > 0) {
		uint8_t *answer = malloc(sizes[0] ? sizes[0] : 1);

		if (!answer)
			abort();
		memcpy(answer, stream, sizes[0]);
		check_server_answer(answer, sizes[0]);
		free(answer);
	}

	run(stream, len, sizes, nchunks, tls_offered, &chunked);
	for (size_t i = 0; i < len; i++)
		ones[i] = 1;
	run(stream, len, ones, len, tls_offered, &bytewise);

	/* One byte at a time, every request comes alone. */
	for (int i = 0; i < bytewise.n; i++)
		if (bytewise.d[i].tainted)
			abort();
	for (int i = 0; i < chunked.n; i++) {
		const Decision *c = &chunked.d[i];

		if (i >= bytewise.n)
			abort();
		if (c->tainted) {
			/* The same request, answered the same, which came alone there. */
			if (bytewise.d[i].action != NEG_ANSWER || bytewise.d[i].answer != c->answer ||
			    bytewise.d[i].len >= c->len)
				abort();
			return 0;
		}
		if (!same(c, &bytewise.d[i]))
			abort();
	}
	if (chunked.n != bytewise.n)
		abort();
	return 0;
}
