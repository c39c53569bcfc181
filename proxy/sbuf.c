/*
 * The relay engine: reading sockets into pooled buffers, showing the owner
 * each message, and writing forwarded bytes to the peer from the same buffer.
 *
 * An IoBuf has three cursors (0 <= pos <= scan <= end <= SBUF_BUF_SIZE):
 *   [pos, scan)  decided: forwarded to the peer, not yet written;
 *   [scan, end)  received, not yet shown to the owner (or a held message);
 *   [end, size)  free.
 * A buffer goes back to the pool as soon as it is empty, so idle sockets
 * cost no buffer memory.
 *
 * Back-pressure: when the peer cannot take more, reading stops and the
 * peer's write watcher resumes us.  The callback may tear the owner down; it
 * then returns false and this file touches nothing of it afterwards.
 */
#include "proxy/sbuf.h"
#include "common/list.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

struct IoBuf {
	IoBuf *next_free;
	uint32_t pos;
	uint32_t scan;
	uint32_t end;
	uint8_t data[SBUF_BUF_SIZE];
};

#define POOL_KEEP_FREE 64

static IoBuf *pool_free_list;
static int pool_free_count;
static int pool_used;

static IoBuf *
iobuf_get(void)
{
	IoBuf *b = pool_free_list;

	if (b) {
		pool_free_list = b->next_free;
		pool_free_count--;
	} else {
		b = malloc(sizeof(IoBuf));
		if (!b)
			return NULL;
	}
	b->pos = b->scan = b->end = 0;
	pool_used++;
	return b;
}

static void
iobuf_put(IoBuf *b)
{
	pool_used--;
	if (pool_free_count >= POOL_KEEP_FREE) {
		free(b);
		return;
	}
	b->next_free = pool_free_list;
	pool_free_list = b;
	pool_free_count++;
}

int
sbuf_pool_in_use(void)
{
	return pool_used;
}

void
sbuf_pool_trim(void)
{
	while (pool_free_list) {
		IoBuf *b = pool_free_list;

		pool_free_list = b->next_free;
		free(b);
	}
	pool_free_count = 0;
}

typedef enum IoResult {
	IO_OK,
	IO_AGAIN,
	IO_EOF,
	IO_ERROR,
} IoResult;

static IoResult
tls_result(SBuf *sb, int r)
{
	int err = SSL_get_error(sb->ssl, r);

	switch (err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		return IO_AGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return IO_EOF;
	case SSL_ERROR_SYSCALL:
		sb->error = errno ? errno : ECONNRESET;
		return errno ? IO_ERROR : IO_EOF;
	default:
		sb->error = EPROTO;
		ERR_clear_error();
		return IO_ERROR;
	}
}

static IoResult
raw_read(SBuf *sb, void *data, size_t len, size_t *n)
{
	ssize_t r;

	if (sb->ssl) {
		int got = SSL_read(sb->ssl, data, (int) len);

		if (got > 0) {
			*n = (size_t) got;
			return IO_OK;
		}
		return tls_result(sb, got);
	}
	do {
		r = read(sb->fd, data, len);
	} while (r < 0 && errno == EINTR);
	if (r > 0) {
		*n = (size_t) r;
		return IO_OK;
	}
	if (r == 0)
		return IO_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return IO_AGAIN;
	sb->error = errno;
	return IO_ERROR;
}

static IoResult
raw_write(SBuf *sb, const void *data, size_t len, size_t *n)
{
	ssize_t r;

	if (sb->ssl) {
		int put = SSL_write(sb->ssl, data, (int) (len > INT32_MAX ? INT32_MAX : len));

		if (put > 0) {
			*n = (size_t) put;
			return IO_OK;
		}
		return tls_result(sb, put);
	}
	do {
		r = send(sb->fd, data, len, MSG_NOSIGNAL);
	} while (r < 0 && errno == EINTR);
	if (r >= 0) {
		*n = (size_t) r;
		return IO_OK;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return IO_AGAIN;
	sb->error = errno;
	return IO_ERROR;
}

static void
start_reading(SBuf *sb)
{
	if (!sbuf_closed(sb) && !ev_is_active(&sb->io_read))
		ev_io_start(sb->loop, &sb->io_read);
}

static void
stop_reading(SBuf *sb)
{
	if (ev_is_active(&sb->io_read))
		ev_io_stop(sb->loop, &sb->io_read);
}

static void
want_write(SBuf *sb)
{
	if (!sbuf_closed(sb) && !ev_is_active(&sb->io_write))
		ev_io_start(sb->loop, &sb->io_write);
}

static void
release_if_empty(SBuf *sb)
{
	IoBuf *b = sb->buf;

	if (b && b->pos == b->end && !sb->held) {
		sb->buf = NULL;
		iobuf_put(b);
	}
}

/* Writes [pos, scan) to the peer.  False when it could not all go out now. */
static bool
flush_forward(SBuf *sb)
{
	IoBuf *b = sb->buf;
	SBuf *dst = sb->peer;

	if (!b || b->pos == b->scan)
		return true;
	if (!dst || sbuf_closed(dst)) {
		/* Nowhere to go: the owner is tearing the pair down. */
		b->pos = b->scan;
		return true;
	}
	while (b->pos < b->scan) {
		size_t n = 0;

		switch (raw_write(dst, b->data + b->pos, b->scan - b->pos, &n)) {
		case IO_OK:
			b->pos += (uint32_t) n;
			dst->bytes_out += n;
			break;
		case IO_AGAIN:
			stop_reading(sb);
			want_write(dst);
			return false;
		case IO_EOF:
		case IO_ERROR:
			if (!dst->error)
				dst->error = EPIPE;
			(void) dst->cb(dst, SBUF_EV_SEND_FAILED, NULL);
			return false;
		}
	}
	if (b->pos == b->end)
		b->pos = b->scan = b->end = 0;
	return true;
}

/*
 * Shows the owner every complete header in the buffer.  False when processing
 * stopped: a held message, a blocked peer, or a teardown.
 */
static bool
process(SBuf *sb)
{
	IoBuf *b;

	while (!sb->held && !sbuf_closed(sb) && (b = sb->buf) != NULL) {
		uint32_t avail = b->end - b->scan;
		uint32_t hdr = sb->startup ? 4 : 5;
		uint32_t len, need;
		const uint8_t *p;
		PktHeader h;
		bool go_on;

		if (sb->pkt_remaining) {
			uint32_t take = avail < sb->pkt_remaining ? avail : sb->pkt_remaining;

			if (take == 0)
				break;
			if (sb->pkt_forward) {
				b->scan += take;
			} else {
				if (b->pos != b->scan && !flush_forward(sb))
					return false;
				b->scan += take;
				b->pos = b->scan;
			}
			sb->pkt_remaining -= take;
			continue;
		}
		if (avail < hdr)
			break;
		p = b->data + b->scan;
		len = ((uint32_t) p[hdr - 4] << 24) | ((uint32_t) p[hdr - 3] << 16) | ((uint32_t) p[hdr - 2] << 8) |
			p[hdr - 1];
		if (len < 4 || len > sb->max_pkt) {
			sb->error = len < 4 ? EPROTO : EMSGSIZE;
			(void) flush_forward(sb);
			(void) sb->cb(sb, SBUF_EV_RECV_FAILED, NULL);
			return false;
		}
		len += hdr - 4;
		need = len < SBUF_INSPECT_MAX ? len : SBUF_INSPECT_MAX;
		if (avail < need) {
			if (b->scan + need > SBUF_BUF_SIZE) {
				/* Make room for the rest of the header part: move it to the front. */
				if (b->pos != b->scan && !flush_forward(sb))
					return false;
				memmove(b->data, b->data + b->scan, avail);
				b->pos = b->scan = 0;
				b->end = avail;
			}
			break;
		}
		h.type = sb->startup ? 0 : p[0];
		h.len = len;
		h.data = p;
		h.avail = need;
		h.body = p + hdr;
		h.body_avail = need - hdr;
		h.buffered = avail;
		sb->held = true; /* cleared by a decision */
		go_on = sb->cb(sb, SBUF_EV_PACKET, &h);
		if (sbuf_closed(sb))
			return false;
		if (sb->held) {
			/* Held: what was decided before it still goes out. */
			stop_reading(sb);
			(void) flush_forward(sb);
			return false;
		}
		if (!go_on) {
			(void) flush_forward(sb);
			return false;
		}
	}
	if (sbuf_closed(sb))
		return false;
	return flush_forward(sb);
}

static void
read_and_process(SBuf *sb)
{
	for (;;) {
		IoBuf *b;
		size_t n = 0;

		if (!sb->buf && !(sb->buf = iobuf_get())) {
			sb->error = ENOMEM;
			(void) sb->cb(sb, SBUF_EV_RECV_FAILED, NULL);
			return;
		}
		b = sb->buf;
		if (b->end == SBUF_BUF_SIZE && b->pos > 0) {
			memmove(b->data, b->data + b->pos, b->end - b->pos);
			b->scan -= b->pos;
			b->end -= b->pos;
			b->pos = 0;
		}
		if (b->end == SBUF_BUF_SIZE) {
			/* Full of bytes waiting for the peer: the peer's write watcher resumes us. */
			stop_reading(sb);
			return;
		}
		switch (raw_read(sb, b->data + b->end, SBUF_BUF_SIZE - b->end, &n)) {
		case IO_OK:
			b->end += (uint32_t) n;
			sb->bytes_in += n;
			break;
		case IO_AGAIN:
			release_if_empty(sb);
			return;
		case IO_EOF:
		case IO_ERROR:
			(void) flush_forward(sb);
			if (!sbuf_closed(sb))
				(void) sb->cb(sb, SBUF_EV_RECV_FAILED, NULL);
			return;
		}
		if (!process(sb))
			return;
		release_if_empty(sb);
		/* TLS may hold decrypted bytes the socket no longer signals. */
		if (!sb->ssl || SSL_pending(sb->ssl) == 0)
			return;
	}
}

static void
drive_handshake(SBuf *sb)
{
	int r = SSL_do_handshake(sb->ssl);

	if (r == 1) {
		sb->wait = SBUF_WAIT_MESSAGE;
		if (ev_is_active(&sb->io_write))
			ev_io_stop(sb->loop, &sb->io_write);
		start_reading(sb);
		(void) sb->cb(sb, SBUF_EV_TLS_READY, NULL);
		return;
	}
	switch (SSL_get_error(sb->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		start_reading(sb);
		return;
	case SSL_ERROR_WANT_WRITE:
		want_write(sb);
		return;
	default:
		sb->error = EPROTO;
		(void) sb->cb(sb, SBUF_EV_TLS_FAILED, NULL);
	}
}

static void
on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	SBuf *sb = container_of(w, SBuf, io_read);

	(void) loop;
	(void) revents;
	if (sb->wait == SBUF_WAIT_TLS) {
		drive_handshake(sb);
	} else if (sb->wait == SBUF_WAIT_ANSWER) {
		uint8_t answer[SBUF_ANSWER_READ];
		size_t n = 0;
		PktHeader h;

		/*
		 * More than the byte is read, to see whether anything came with it:
		 * what follows a good answer belongs to TLS or to the server's
		 * reply to a startup packet not yet sent, so the owner fails the
		 * connection when there is more.
		 */
		switch (raw_read(sb, answer, sizeof(answer), &n)) {
		case IO_OK:
			sb->wait = SBUF_WAIT_MESSAGE;
			memset(&h, 0, sizeof(h));
			h.type = answer[0];
			h.len = 1;
			h.data = answer;
			h.avail = h.buffered = (uint32_t) n;
			(void) sb->cb(sb, SBUF_EV_BYTE, &h);
			break;
		case IO_AGAIN:
			break;
		case IO_EOF:
		case IO_ERROR:
			(void) sb->cb(sb, SBUF_EV_RECV_FAILED, NULL);
			break;
		}
	} else {
		read_and_process(sb);
	}
}

static bool
flush_out(SBuf *sb)
{
	while (sb->out_sent < sb->out_len) {
		size_t n = 0;

		switch (raw_write(sb, sb->out + sb->out_sent, sb->out_len - sb->out_sent, &n)) {
		case IO_OK:
			sb->out_sent += (uint32_t) n;
			sb->bytes_out += n;
			break;
		case IO_AGAIN:
			want_write(sb);
			return false;
		case IO_EOF:
		case IO_ERROR:
			if (!sb->error)
				sb->error = EPIPE;
			(void) sb->cb(sb, SBUF_EV_SEND_FAILED, NULL);
			return false;
		}
	}
	free(sb->out);
	sb->out = NULL;
	sb->out_len = sb->out_sent = 0;
	return true;
}

static void
on_write(struct ev_loop *loop, ev_io *w, int revents)
{
	SBuf *sb = container_of(w, SBuf, io_write);
	SBuf *src;

	(void) loop;
	(void) revents;
	if (sb->wait == SBUF_WAIT_CONNECT) {
		int err = 0;
		socklen_t len = sizeof(err);

		ev_io_stop(sb->loop, &sb->io_write);
		sb->wait = SBUF_WAIT_MESSAGE;
		if (getsockopt(sb->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		sb->error = err;
		if (!err)
			start_reading(sb);
		(void) sb->cb(sb, err ? SBUF_EV_CONNECT_FAILED : SBUF_EV_CONNECT_OK, NULL);
		return;
	}
	if (sb->wait == SBUF_WAIT_TLS) {
		drive_handshake(sb);
		return;
	}
	ev_io_stop(sb->loop, &sb->io_write);

	/* Bytes forwarded into this socket went first; they are older than our own. */
	src = sb->peer;
	if (src && !sbuf_closed(src) && src->buf && src->buf->pos != src->buf->scan) {
		if (!flush_forward(src))
			return;
	}
	if (sbuf_closed(sb) || !flush_out(sb))
		return;
	if (sb->want_flush_event) {
		sb->want_flush_event = false;
		if (!sb->cb(sb, SBUF_EV_FLUSHED, NULL) || sbuf_closed(sb))
			return;
	}
	if (src && !sbuf_closed(src) && !src->held && src->peer == sb) {
		start_reading(src);
		if (src->buf && process(src))
			release_if_empty(src);
		/* TLS may hold decrypted bytes that no readiness event will announce. */
		if (!sbuf_closed(src) && src->ssl && SSL_pending(src->ssl) > 0)
			read_and_process(src);
	}
}

void
sbuf_init(SBuf *sb, struct ev_loop *loop, SBufCallback cb)
{
	memset(sb, 0, sizeof(*sb));
	sb->fd = -1;
	sb->loop = loop;
	sb->cb = cb;
	sb->max_pkt = 0x3fffffff;
	ev_init(&sb->io_read, on_read);
	ev_init(&sb->io_write, on_write);
}

static void
tune_socket(int fd)
{
	int on = 1;

	(void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	(void) setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
}

bool
sbuf_accept(SBuf *sb, int fd)
{
	int flags = fcntl(fd, F_GETFL);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		sb->error = errno;
		return false;
	}
	tune_socket(fd);
	sb->fd = fd;
	ev_io_set(&sb->io_read, fd, EV_READ);
	ev_io_set(&sb->io_write, fd, EV_WRITE);
	start_reading(sb);
	return true;
}

bool
sbuf_connect(SBuf *sb, const struct sockaddr *addr, socklen_t addrlen)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		sb->error = errno;
		return false;
	}
	if (addr->sa_family != AF_UNIX)
		tune_socket(fd);
	sb->fd = fd;
	ev_io_set(&sb->io_read, fd, EV_READ);
	ev_io_set(&sb->io_write, fd, EV_WRITE);
	if (connect(fd, addr, addrlen) < 0 && errno != EINPROGRESS) {
		sb->error = errno;
		return false;
	}
	/* Even an immediate success is reported from the loop, never from inside this call. */
	sb->wait = SBUF_WAIT_CONNECT;
	want_write(sb);
	return true;
}

void
sbuf_close(SBuf *sb)
{
	bool handshaking = sb->wait == SBUF_WAIT_TLS;

	if (sb->wait == SBUF_CLOSED)
		return;
	sb->wait = SBUF_CLOSED;
	stop_reading(sb);
	if (ev_is_active(&sb->io_write))
		ev_io_stop(sb->loop, &sb->io_write);
	if (sb->ssl) {
		if (!handshaking)
			(void) SSL_shutdown(sb->ssl);
		SSL_free(sb->ssl);
		sb->ssl = NULL;
		ERR_clear_error();
	}
	if (sb->fd >= 0)
		close(sb->fd);
	sb->fd = -1;
	if (sb->buf) {
		iobuf_put(sb->buf);
		sb->buf = NULL;
	}
	free(sb->out);
	sb->out = NULL;
	sb->out_len = sb->out_sent = 0;
	if (sb->peer && sb->peer->peer == sb)
		sb->peer->peer = NULL;
	sb->peer = NULL;
}

static bool
tls_start(SBuf *sb, SSL_CTX *ctx, bool server, const char *hostname)
{
	sb->ssl = SSL_new(ctx);
	if (!sb->ssl || !SSL_set_fd(sb->ssl, sb->fd)) {
		sb->error = ENOMEM;
		return false;
	}
	SSL_set_mode(sb->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (server) {
		SSL_set_accept_state(sb->ssl);
	} else {
		SSL_set_connect_state(sb->ssl);
		if (hostname && hostname[0] && hostname[0] != '/') {
			(void) SSL_set_tlsext_host_name(sb->ssl, hostname);
		}
	}
	sb->tls_server = server;
	sb->wait = SBUF_WAIT_TLS;
	drive_handshake(sb);
	return true;
}

bool
sbuf_tls_accept(SBuf *sb, SSL_CTX *ctx)
{
	return tls_start(sb, ctx, true, NULL);
}

bool
sbuf_tls_connect(SBuf *sb, SSL_CTX *ctx, const char *hostname)
{
	return tls_start(sb, ctx, false, hostname);
}

void
sbuf_forward(SBuf *sb, uint32_t len)
{
	sb->held = false;
	sb->pkt_forward = true;
	sb->pkt_remaining = len;
}

void
sbuf_consume(SBuf *sb, uint32_t len)
{
	sb->held = false;
	sb->pkt_forward = false;
	sb->pkt_remaining = len;
}

void
sbuf_pause(SBuf *sb)
{
	stop_reading(sb);
}

void
sbuf_continue(SBuf *sb)
{
	if (sbuf_closed(sb))
		return;
	sb->held = false;
	start_reading(sb);
	if (sb->buf && process(sb))
		release_if_empty(sb);
	if (!sbuf_closed(sb) && !sb->held && sb->ssl && SSL_pending(sb->ssl) > 0)
		read_and_process(sb);
}

bool
sbuf_answer(SBuf *sb, const void *data, size_t len)
{
	SBuf *src = sb->peer;
	uint8_t *grown;

	if (sbuf_closed(sb))
		return false;
	/* Answers are ordered after what the peer already forwarded here. */
	if (src && !sbuf_closed(src) && src->buf && src->buf->pos != src->buf->scan)
		(void) flush_forward(src);
	if (sb->out_len == sb->out_sent && !(src && src->buf && src->buf->pos != src->buf->scan)) {
		const uint8_t *p = data;

		while (len > 0) {
			size_t n = 0;
			IoResult r = raw_write(sb, p, len, &n);

			if (r == IO_AGAIN)
				break;
			if (r != IO_OK) {
				if (!sb->error)
					sb->error = EPIPE;
				return false;
			}
			sb->bytes_out += n;
			p += n;
			len -= n;
		}
		data = p;
		if (len == 0)
			return true;
	}
	grown = realloc(sb->out, sb->out_len + len);
	if (!grown) {
		sb->error = ENOMEM;
		return false;
	}
	memcpy(grown + sb->out_len, data, len);
	sb->out = grown;
	sb->out_len += (uint32_t) len;
	want_write(sb);
	return true;
}

bool
sbuf_is_drained(const SBuf *sb)
{
	return sb->out_len == sb->out_sent && (!sb->buf || sb->buf->pos == sb->buf->scan);
}

bool
sbuf_has_buffer(const SBuf *sb)
{
	return sb->buf != NULL;
}
