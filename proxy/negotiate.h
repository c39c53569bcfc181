/*
 * The start of a connection, decided on bytes, without sockets: on the
 * frontend side, what to do with the bytes a client has sent so far in the
 * state its negotiation is in; on the backend side, what a server's answer
 * to the proxy's SSLRequest says.  client.c and server.c call these and do
 * what they say; the unit tests and the fuzzer call them on byte arrays.
 *
 * A request for encryption must be the last thing its sender writes before
 * it reads the answer.  After an 'S' the bytes that follow are read through
 * TLS, so bytes that arrived together with the request were never encrypted,
 * and a man in the middle may have put them there to be taken as the
 * client's (PostgreSQL's CVE-2021-23214; CVE-2021-23222 for the answer).
 * Such bytes are never read.  The connection fails, as PostgreSQL's does,
 * once the answer is out and, after an 'S', the handshake done, so that the
 * client hears why over the channel it trusts.
 */
#ifndef PGHANDOFF_PROXY_NEGOTIATE_H
#define PGHANDOFF_PROXY_NEGOTIATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/protocol.h"

/* Where a client's negotiation stands; only negotiate_client changes it. */
typedef enum NegotiateState {
	NEG_START,        /* nothing asked yet */
	NEG_SSL_DECLINED, /* SSLRequest answered 'N': a GSSENCRequest may still come */
	NEG_GSS_DECLINED, /* GSSENCRequest answered 'N': an SSLRequest may still come */
	NEG_SETTLED,      /* TLS started, or both declined: only a cancel or a startup packet */
	NEG_TAINTED_SSL,  /* bytes came with the SSLRequest: fails once it is answered */
	NEG_TAINTED_GSS,  /* bytes came with the GSSENCRequest: fails once it is answered */
} NegotiateState;

typedef enum NegotiateAction {
	NEG_NEED_MORE, /* no whole packet yet: read more and ask again */
	/*
	 * Drop len bytes (the request and anything that came with it), send the
	 * answer byte, after an 'S' do the TLS handshake, then ask again with
	 * the bytes received since (none yet is fine): a tainted negotiation
	 * fails then.
	 */
	NEG_ANSWER,
	NEG_CANCEL,  /* a CancelRequest in packet: act on it and close */
	NEG_STARTUP, /* a StartupMessage in packet (len bytes): log in */
	NEG_FAIL,    /* send a FATAL with sqlstate, message and detail; close */
} NegotiateAction;

typedef struct NegotiateResult {
	size_t len;           /* NEG_ANSWER, NEG_CANCEL, NEG_STARTUP: input bytes the action takes */
	uint8_t answer;       /* NEG_ANSWER: NEGOTIATE_ANSWER_SSL or NEGOTIATE_ANSWER_NO */
	StartupPacket packet; /* NEG_CANCEL, NEG_STARTUP: points into the input */
	const char *sqlstate; /* NEG_FAIL */
	char message[256];    /* NEG_FAIL: never echoes the client's bytes */
	const char *detail;   /* NEG_FAIL: NULL or a fixed text */
} NegotiateResult;

/*
 * Decides on data[0..avail), everything received from the client and not
 * yet taken, in *state (changed here only).  tls_offered: whether the proxy
 * answers an SSLRequest with 'S'.
 */
NegotiateAction negotiate_client(NegotiateState *state, bool tls_offered, const uint8_t *data, size_t avail,
				 NegotiateResult *out) __attribute__((warn_unused_result));

/* What the bytes read as a server's answer to an SSLRequest say. */
typedef enum NegotiateServerAnswer {
	NEG_SERVER_TLS,         /* 'S' alone: do the TLS handshake */
	NEG_SERVER_PLAIN,       /* 'N' alone: no TLS (if sslmode allows) */
	NEG_SERVER_ERROR,       /* 'E': the server failed before it could answer */
	NEG_SERVER_UNENCRYPTED, /* 'S' or 'N' with more bytes after it */
	NEG_SERVER_INVALID,     /* any other byte, or none */
} NegotiateServerAnswer;

/* data[0..len): every byte received since the SSLRequest was sent. */
NegotiateServerAnswer negotiate_server_answer(const uint8_t *data, size_t len) __attribute__((warn_unused_result));

#endif
