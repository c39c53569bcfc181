/*
 * SBuf: one socket of the proxy (a client's or a server's) with its libev
 * watchers, optional TLS, and the relay engine.
 *
 * Bytes read from a socket land in a pooled IoBuf.  The owner is shown each
 * message header (and up to SBUF_INSPECT_MAX bytes of the message) and
 * decides what becomes of the message: forward it to the peer socket, consume
 * it (the owner handled it), or hold it until later.  Forwarded bytes are
 * written to the peer straight from the buffer they were read into; message
 * bodies are never copied, and a message larger than the buffer streams
 * through it.  An idle socket holds no buffer.
 */
#ifndef PGHANDOFF_PROXY_SBUF_H
#define PGHANDOFF_PROXY_SBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <ev.h>
#include <openssl/ssl.h>

#define SBUF_BUF_SIZE (32 * 1024)
#define SBUF_INSPECT_MAX (16 * 1024)
#define SBUF_ANSWER_READ 16

typedef struct SBuf SBuf;

typedef struct PktHeader {
	uint8_t type;        /* 0 for a startup-style packet, which has no type byte */
	uint32_t len;        /* the whole message: type byte, length word and body */
	const uint8_t *data; /* the message's first byte, in the buffer */
	uint32_t avail;      /* bytes at data: min(len, SBUF_INSPECT_MAX) */
	const uint8_t *body; /* after the header */
	uint32_t body_avail; /* bytes of the body at body */
	/*
	 * Bytes at data received so far: this message and whatever came after
	 * it (>= avail).  The startup negotiation needs to know whether a
	 * request came alone.
	 */
	uint32_t buffered;
} PktHeader;

typedef enum SBufEvent {
	/* A message has arrived: call sbuf_forward or sbuf_consume, or neither to hold it. */
	SBUF_EV_PACKET,
	/* The socket closed, or reading it failed. */
	SBUF_EV_RECV_FAILED,
	/* Writing to this socket failed. */
	SBUF_EV_SEND_FAILED,
	/* An outgoing connection (sbuf_connect) is established, or failed. */
	SBUF_EV_CONNECT_OK,
	SBUF_EV_CONNECT_FAILED,
	/* A TLS handshake (sbuf_tls_accept / sbuf_tls_connect) completed, or failed. */
	SBUF_EV_TLS_READY,
	SBUF_EV_TLS_FAILED,
	/* Everything queued for this socket has been written. */
	SBUF_EV_FLUSHED,
	/*
	 * The answer to an SSLRequest, asked for with sbuf_expect_answer: its byte is in
	 * pkt->type, and pkt->data holds the pkt->buffered bytes read with it (up
	 * to SBUF_ANSWER_READ; more than one means something came after it).
	 */
	SBUF_EV_BYTE,
} SBufEvent;

/*
 * Returns false when processing must stop: the message is held, or the owner
 * tore the connection down.  Never frees the owner.
 */
typedef bool (*SBufCallback)(SBuf *sb, SBufEvent event, const PktHeader *pkt);

/* What a socket waits for: one thing at a time. */
typedef enum SBufWait {
	SBUF_WAIT_MESSAGE, /* messages (a startup packet first, with startup set) */
	SBUF_WAIT_CONNECT, /* an outgoing connect to finish (sbuf_connect) */
	SBUF_WAIT_TLS,     /* a TLS handshake to finish */
	SBUF_WAIT_ANSWER,  /* the one-byte answer to an SSLRequest (sbuf_expect_answer) */
	SBUF_CLOSED,       /* nothing: closed */
} SBufWait;

typedef struct IoBuf IoBuf;

struct SBuf {
	int fd;
	SSL *ssl;
	struct ev_loop *loop;
	ev_io io_read;
	ev_io io_write;
	SBufCallback cb;
	SBuf *peer; /* where forwarded bytes go */
	IoBuf *buf;
	uint32_t pkt_remaining; /* bytes of the current message not yet passed on */
	uint32_t max_pkt;       /* longest message accepted from this socket */
	SBufWait wait;
	bool pkt_forward; /* the remaining bytes are forwarded (else dropped) */
	bool startup;     /* the next packet has no type byte */
	bool held;        /* the owner holds the current message */
	bool tls_server;  /* our side of the handshake accepts */
	bool want_flush_event;
	/* Bytes the proxy itself wrote to this socket that could not go out yet. */
	uint8_t *out;
	uint32_t out_len;
	uint32_t out_sent;
	int error; /* errno of the last failure, 0 for a clean close */
	uint64_t bytes_in;
	uint64_t bytes_out;
};

void sbuf_init(SBuf *sb, struct ev_loop *loop, SBufCallback cb);
/* Takes a connected socket (made non-blocking here) and starts reading it. */
bool sbuf_accept(SBuf *sb, int fd) __attribute__((warn_unused_result));
/* Starts a non-blocking connect; the callback gets CONNECT_OK or CONNECT_FAILED. */
bool sbuf_connect(SBuf *sb, const struct sockaddr *addr, socklen_t addrlen) __attribute__((warn_unused_result));
void sbuf_close(SBuf *sb);

/* Starts TLS on the socket; the callback gets TLS_READY or TLS_FAILED. */
bool sbuf_tls_accept(SBuf *sb, SSL_CTX *ctx) __attribute__((warn_unused_result));
bool sbuf_tls_connect(SBuf *sb, SSL_CTX *ctx, const char *hostname) __attribute__((warn_unused_result));

static inline bool
sbuf_closed(const SBuf *sb)
{
	return sb->wait == SBUF_CLOSED;
}

/* The next read is the one-byte answer to an SSLRequest the owner sends, not a message. */
static inline void
sbuf_expect_answer(SBuf *sb)
{
	sb->wait = SBUF_WAIT_ANSWER;
}

/*
 * Decisions on the message just shown to the callback.  sbuf_consume may
 * take more than the message, up to pkt->buffered: what came after it is
 * dropped unread.
 */
void sbuf_forward(SBuf *sb, uint32_t len);
void sbuf_consume(SBuf *sb, uint32_t len);

/* Processes buffered messages again after a hold; starts reading again. */
void sbuf_continue(SBuf *sb);
/* Stops reading the socket (and processing) until sbuf_continue. */
void sbuf_pause(SBuf *sb);

/*
 * Writes bytes the proxy made itself.  What cannot be written now is queued
 * and written when the socket allows; forwarding into this socket waits for it.
 */
bool sbuf_answer(SBuf *sb, const void *data, size_t len) __attribute__((warn_unused_result));

/* True when nothing waits to be written to this socket or forwarded from it. */
bool sbuf_is_drained(const SBuf *sb);
bool sbuf_has_buffer(const SBuf *sb);

/* The pool of I/O buffers, shared by every socket. */
int sbuf_pool_in_use(void);
void sbuf_pool_trim(void);

#endif
