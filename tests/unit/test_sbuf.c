/*
 * The relay engine on real sockets (socketpairs) and a real libev loop:
 * message framing whatever the split of the byte stream, holding and
 * continuing, forwarding through a peer that stops reading, and the
 * failures a peer can cause.  The integration tests cross the same code with
 * whole clients, where a cursor error shows only as a rare corrupted relay.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/list.h"
#include "proxy/sbuf.h"

#define MAX_SEEN 256
#define SHOWN_MAX 64

typedef struct Seen {
	uint8_t type;
	uint32_t len;
	uint32_t avail;
	uint32_t body_avail;
	uint8_t body[SHOWN_MAX]; /* the first bytes of the body as shown */
} Seen;

typedef struct Side {
	SBuf sb;
	Seen seen[MAX_SEEN];
	int n_seen;
	int shown;     /* PACKET events, held ones included */
	bool forward;  /* forward every message to the peer, else consume it */
	int hold_next; /* hold this many of the next messages */
	int recv_failed;
	int send_failed;
} Side;

static bool
on_event(SBuf *sb, SBufEvent event, const PktHeader *pkt)
{
	Side *s = container_of(sb, Side, sb);

	switch (event) {
	case SBUF_EV_PACKET:
		s->shown++;
		if (s->hold_next > 0) {
			s->hold_next--;
			return false;
		}
		assert_true(s->n_seen < MAX_SEEN);
		{
			Seen *seen = &s->seen[s->n_seen++];

			seen->type = pkt->type;
			seen->len = pkt->len;
			seen->avail = pkt->avail;
			seen->body_avail = pkt->body_avail;
			memcpy(seen->body, pkt->body, pkt->body_avail < SHOWN_MAX ? pkt->body_avail : SHOWN_MAX);
		}
		if (s->forward)
			sbuf_forward(sb, pkt->len);
		else
			sbuf_consume(sb, pkt->len);
		return true;
	case SBUF_EV_RECV_FAILED:
		/* As an owner's teardown does: the socket is closed, the object lives on. */
		s->recv_failed++;
		sbuf_close(sb);
		return false;
	case SBUF_EV_SEND_FAILED:
		s->send_failed++;
		sbuf_close(sb);
		return false;
	default:
		return true;
	}
}

typedef struct Fixture {
	struct ev_loop *loop;
	int pair[2]; /* [0] the test writes, [1] the SBuf reads */
	Side side;
} Fixture;

static void
set_nonblocking(int fd)
{
	assert_true(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
}

static void
fixture_open(Fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(f->loop);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, f->pair), 0);
	set_nonblocking(f->pair[0]);
	sbuf_init(&f->side.sb, f->loop, on_event);
	assert_true(sbuf_accept(&f->side.sb, f->pair[1]));
}

static void
fixture_close(Fixture *f)
{
	sbuf_close(&f->side.sb);
	close(f->pair[0]);
	ev_loop_destroy(f->loop);
	sbuf_pool_trim();
	assert_int_equal(sbuf_pool_in_use(), 0);
}

static void
spin(struct ev_loop *loop)
{
	for (int i = 0; i < 4; i++)
		ev_run(loop, EVRUN_NOWAIT);
}

static void
write_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		assert_true(n > 0);
		data += n;
		len -= (size_t) n;
	}
}

/* Appends a typed message whose body is bytes seed, seed+1, ... */
static size_t
put_message(uint8_t *out, uint8_t type, uint32_t body_len, uint8_t seed)
{
	uint32_t len = body_len + 4;

	out[0] = type;
	out[1] = (uint8_t) (len >> 24);
	out[2] = (uint8_t) (len >> 16);
	out[3] = (uint8_t) (len >> 8);
	out[4] = (uint8_t) len;
	for (uint32_t i = 0; i < body_len; i++)
		out[5 + i] = (uint8_t) (seed + i);
	return 5 + body_len;
}

static void
assert_seen(const Seen *seen, uint8_t type, uint32_t body_len, uint8_t seed)
{
	uint32_t shown = body_len + 5 < SBUF_INSPECT_MAX ? body_len + 5 : SBUF_INSPECT_MAX;

	assert_int_equal(seen->type, type);
	assert_int_equal(seen->len, body_len + 5);
	assert_int_equal(seen->avail, shown);
	assert_int_equal(seen->body_avail, shown - 5);
	for (uint32_t i = 0; i < seen->body_avail && i < SHOWN_MAX; i++)
		assert_int_equal(seen->body[i], (uint8_t) (seed + i));
}

/* Bodies around the edges: empty, tiny, past the inspect window, past the buffer. */
static const uint32_t BODY_LENS[] = {0, 1, 4, 300, SBUF_INSPECT_MAX - 5, SBUF_INSPECT_MAX, 20000, 3 * SBUF_BUF_SIZE};
#define N_BODIES (sizeof(BODY_LENS) / sizeof(BODY_LENS[0]))

static size_t
build_stream(uint8_t *out)
{
	size_t n = 0;

	for (size_t i = 0; i < N_BODIES; i++)
		n += put_message(out + n, (uint8_t) ('A' + i), BODY_LENS[i], (uint8_t) (i * 7));
	return n;
}

static void
assert_stream_seen(const Side *s)
{
	assert_int_equal(s->n_seen, N_BODIES);
	for (size_t i = 0; i < N_BODIES; i++)
		assert_seen(&s->seen[i], (uint8_t) ('A' + i), BODY_LENS[i], (uint8_t) (i * 7));
}

/* Every message arrives once, whole and in order, when the stream comes one byte at a time. */
static void
test_one_byte_at_a_time(void **state)
{
	Fixture f;
	size_t cap = 8 * SBUF_BUF_SIZE, len;
	uint8_t *stream = malloc(cap);

	(void) state;
	assert_non_null(stream);
	len = build_stream(stream);
	fixture_open(&f);
	for (size_t i = 0; i < len; i++) {
		write_all(f.pair[0], stream + i, 1);
		spin(f.loop);
	}
	assert_stream_seen(&f.side);
	assert_int_equal(f.side.recv_failed, 0);
	/* Nothing left over: the idle socket holds no buffer. */
	assert_false(sbuf_has_buffer(&f.side.sb));
	fixture_close(&f);
	free(stream);
}

/* The same stream cut in two at every byte of its small messages. */
static void
test_split_at_every_byte(void **state)
{
	uint8_t stream[2048];
	size_t len = 0;

	(void) state;
	for (int i = 0; i < 5; i++)
		len += put_message(stream + len, (uint8_t) ('a' + i), (uint32_t) (i * 37), (uint8_t) i);
	for (size_t cut = 0; cut <= len; cut++) {
		Fixture f;

		fixture_open(&f);
		write_all(f.pair[0], stream, cut);
		spin(f.loop);
		write_all(f.pair[0], stream + cut, len - cut);
		spin(f.loop);
		assert_int_equal(f.side.n_seen, 5);
		for (int i = 0; i < 5; i++)
			assert_seen(&f.side.seen[i], (uint8_t) ('a' + i), (uint32_t) (i * 37), (uint8_t) i);
		fixture_close(&f);
	}
}

/* A startup packet has no type byte; the message after it has one. */
static void
test_startup_then_typed(void **state)
{
	Fixture f;
	uint8_t bytes[64];
	size_t n = 0;

	(void) state;
	fixture_open(&f);
	f.side.sb.startup = true;
	bytes[n++] = 0;
	bytes[n++] = 0;
	bytes[n++] = 0;
	bytes[n++] = 12;
	memcpy(bytes + n, "\x00\x03\x00\x00xyz\x00", 8);
	n += 8;
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.n_seen, 1);
	assert_int_equal(f.side.seen[0].type, 0);
	assert_int_equal(f.side.seen[0].len, 12);
	assert_int_equal(f.side.seen[0].body_avail, 8);
	assert_memory_equal(f.side.seen[0].body, "\x00\x03\x00\x00xyz\x00", 8);
	f.side.sb.startup = false;
	n = put_message(bytes, 'Q', 3, 9);
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.n_seen, 2);
	assert_seen(&f.side.seen[1], 'Q', 3, 9);
	fixture_close(&f);
}

/* A held message is not shown again, nor anything after it, until sbuf_continue. */
static void
test_hold_and_continue(void **state)
{
	Fixture f;
	uint8_t bytes[128];
	size_t n = 0;

	(void) state;
	fixture_open(&f);
	f.side.hold_next = 1;
	n += put_message(bytes + n, 'X', 10, 1);
	n += put_message(bytes + n, 'Y', 20, 2);
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.shown, 1);
	assert_int_equal(f.side.n_seen, 0);
	/* More bytes while held: still nothing shown. */
	n = put_message(bytes, 'Z', 0, 0);
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.shown, 1);
	sbuf_continue(&f.side.sb);
	spin(f.loop);
	assert_int_equal(f.side.n_seen, 3);
	assert_seen(&f.side.seen[0], 'X', 10, 1);
	assert_seen(&f.side.seen[1], 'Y', 20, 2);
	assert_seen(&f.side.seen[2], 'Z', 0, 0);
	fixture_close(&f);
}

static void
expect_recv_failure(const uint8_t *bytes, size_t n, uint32_t max_pkt, int expected_errno)
{
	Fixture f;

	fixture_open(&f);
	if (max_pkt)
		f.side.sb.max_pkt = max_pkt;
	if (n)
		write_all(f.pair[0], bytes, n);
	else
		shutdown(f.pair[0], SHUT_WR);
	spin(f.loop);
	assert_int_equal(f.side.recv_failed, 1);
	assert_int_equal(f.side.n_seen, 0);
	assert_int_equal(f.side.sb.error, expected_errno);
	fixture_close(&f);
}

static void
test_bad_lengths_and_eof(void **state)
{
	static const uint8_t too_short[] = {'Q', 0, 0, 0, 3};
	static const uint8_t too_long[] = {'Q', 0, 0, 1, 0, 'x'};

	(void) state;
	expect_recv_failure(too_short, sizeof(too_short), 0, EPROTO);
	expect_recv_failure(too_long, sizeof(too_long), 200, EMSGSIZE);
	/* A clean close is a failure to read with no errno. */
	expect_recv_failure(NULL, 0, 0, 0);
}

/*
 * Forwarding into a peer that stops reading: the reading side stops too and
 * holds at most one buffer; once the far end reads again every byte arrives,
 * in order, none copied twice or lost.
 */
static void
test_forward_back_pressure(void **state)
{
	Fixture f;
	int out[2]; /* [0] the peer SBuf writes, [1] the test reads */
	Side peer;
	size_t msg_body = 8000, n_msgs = 200, msg_len = msg_body + 5;
	size_t total = msg_len * n_msgs, written = 0, received = 0;
	uint8_t *stream = malloc(total), *got = malloc(total);
	int small = 4096;
	bool saw_stop = false;

	(void) state;
	assert_non_null(stream);
	assert_non_null(got);
	for (size_t i = 0; i < n_msgs; i++)
		(void) put_message(stream + i * msg_len, 'D', (uint32_t) msg_body, (uint8_t) i);
	fixture_open(&f);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
	assert_int_equal(setsockopt(out[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	set_nonblocking(out[1]);
	memset(&peer, 0, sizeof(peer));
	sbuf_init(&peer.sb, f.loop, on_event);
	assert_true(sbuf_accept(&peer.sb, out[0]));
	f.side.forward = true;
	f.side.sb.peer = &peer.sb;
	peer.sb.peer = &f.side.sb;

	/* Phase 1: write without reading the far end until the relay pushes back. */
	while (written < total) {
		ssize_t n = write(f.pair[0], stream + written, total - written);

		if (n > 0)
			written += (size_t) n;
		spin(f.loop);
		if (!ev_is_active(&f.side.sb.io_read)) {
			saw_stop = true;
			break;
		}
		assert_true(n > 0 || errno == EAGAIN);
	}
	assert_true(saw_stop);
	assert_true(sbuf_pool_in_use() <= 1);
	assert_false(sbuf_is_drained(&f.side.sb));

	/* Phase 2: read the far end and keep writing until everything went through. */
	while (received < total) {
		ssize_t n;

		if (written < total) {
			n = write(f.pair[0], stream + written, total - written);
			if (n > 0)
				written += (size_t) n;
		}
		spin(f.loop);
		n = read(out[1], got + received, total - received);
		if (n > 0)
			received += (size_t) n;
		else
			assert_true(n < 0 && errno == EAGAIN);
		assert_true(sbuf_pool_in_use() <= 1);
	}
	spin(f.loop);
	assert_memory_equal(got, stream, total);
	assert_int_equal(f.side.n_seen, n_msgs);
	assert_true(sbuf_is_drained(&f.side.sb));
	assert_int_equal(f.side.sb.bytes_in, total);
	assert_int_equal(peer.sb.bytes_out, total);
	assert_int_equal(f.side.send_failed + peer.send_failed, 0);

	sbuf_close(&peer.sb);
	close(out[1]);
	fixture_close(&f);
	free(stream);
	free(got);
}

/*
 * A peer that can no longer be written to: the peer is told its send failed.
 * A peer already closed by its owner: forwarded bytes are dropped.
 */
static void
test_forward_into_closed_peer(void **state)
{
	Fixture f;
	int out[2];
	Side peer;
	uint8_t bytes[64];
	size_t n;

	(void) state;
	fixture_open(&f);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
	memset(&peer, 0, sizeof(peer));
	sbuf_init(&peer.sb, f.loop, on_event);
	assert_true(sbuf_accept(&peer.sb, out[0]));
	f.side.forward = true;
	f.side.sb.peer = &peer.sb;
	peer.sb.peer = &f.side.sb;
	assert_int_equal(shutdown(out[1], SHUT_RD), 0);
	n = put_message(bytes, 'Q', 10, 3);
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.n_seen, 1);
	assert_int_equal(peer.send_failed, 1);
	assert_int_equal(peer.sb.error, EPIPE);
	assert_null(f.side.sb.peer);
	/* The reading side goes on, its messages going nowhere. */
	write_all(f.pair[0], bytes, n);
	spin(f.loop);
	assert_int_equal(f.side.n_seen, 2);
	assert_true(sbuf_is_drained(&f.side.sb));
	close(out[1]);
	fixture_close(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_byte_at_a_time),       cmocka_unit_test(test_split_at_every_byte),
		cmocka_unit_test(test_startup_then_typed),       cmocka_unit_test(test_hold_and_continue),
		cmocka_unit_test(test_bad_lengths_and_eof),      cmocka_unit_test(test_forward_back_pressure),
		cmocka_unit_test(test_forward_into_closed_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
