/*
 * Protocol-level prepared statements across pooled server connections
 * (transaction mode), like PgBouncer's max_prepared_statements.  No sockets:
 * the relay hands in each message's bytes and gets back what to send where.
 *
 * Three kinds of object:
 * - PreparedRegistry, one per proxy: statement definitions interned by what
 *   a Parse says apart from its name (query text and parameter type OIDs).
 *   Each has a stable id and a name the proxy owns on servers, "PGH_<id>",
 *   and lives while a client name, a server or a queued message uses it.
 * - PreparedClient, one per client: its statement names -> definitions.
 *   A Parse of a new name maps it, a Close forgets it; a Parse of a name the
 *   client has gets PostgreSQL's error (42P05, and nothing more runs up to
 *   the Sync).  The unnamed statement is never mapped: it passes through as
 *   it is.
 * - PreparedServer, one per server connection: the definitions prepared on
 *   it (at most max_statements; the least recently used is closed to make
 *   room), and a FIFO of the replies the server owes, each marked forward
 *   (the client's message), swallow (a Parse or Close the proxy added) or
 *   synthesize (the client's message was answered by the proxy: a Close of
 *   a named statement, a Parse the server already has).
 *
 * How the relay uses it, with a client linked to a server:
 *
 *   prepared_client_message(srv, cl, pkt, avail, len, &to_server, &keep_from,
 *                           &to_client, err, errlen)
 *     for every message the client sends.  Send to_server's bytes to the
 *     server, then the client's message from byte keep_from to its end
 *     (0: all of it, as it came; len: none of it), then to_client's bytes to
 *     the client, after whatever the client was already sent.
 *     A Bind longer than the relay's window streams: only its head is
 *     rewritten, the rest follows from the client's buffer.
 *   prepared_server_reply(srv, pkt, avail, len, &verdict, &to_client, ...)
 *     for every message the server sends while it runs the client's
 *     messages: forward it to the client (PREPARED_FORWARD) or drop it
 *     (PREPARED_SWALLOW), then send to_client's bytes to the client, after
 *     the reply (they are the proxy's answers that were due behind it).
 *
 * Both append to the caller's PktBufs (reset them between calls) and return
 * false on what the relay cannot carry on from: a client message that must
 * be seen whole and is not, a server reply the FIFO cannot place (the server
 * and the client disagree with the proxy about the session: close both), a
 * server still owing replies to another client, no memory.  err says why.
 * Check the PktBufs' `failed` flags before sending.
 *
 * Only messages that went through prepared_client_message may have replies
 * fed to prepared_server_reply: a server's own queries (the reset and check
 * queries) run while nothing is pending, and after a reset that drops the
 * server's statements (DISCARD ALL, DEALLOCATE ALL) the relay calls
 * prepared_server_forget_all.  A client's DISCARD ALL or DEALLOCATE ALL is
 * seen in its CommandComplete: the server's set and the client's names are
 * emptied, as a server of its own would have done.
 *
 * A server is released from its client in transaction mode at a
 * ReadyForQuery once prepared_server_idle; if the client goes away first,
 * prepared_client_free detaches it, and the server's remaining replies still
 * go through prepared_server_reply (forward verdicts have no one to go to)
 * until nothing is pending, before another client may use the server.
 *
 * Pipelines are answered optimistically: a message relies on the outcome
 * of those sent before it, and past a Sync that outcome may not be known.
 * So a Parse of a text whose Parse on that server is still unanswered gets
 * a ParseComplete even if that Parse then fails (the client's Bind reports
 * the error instead); a Parse of a name whose own Parse is unanswered
 * replaces it rather than fail; a message using a name whose Parse then
 * fails names the proxy's statement in the server's error; and an eviction
 * skipped after an error, when the statement was already sent again past
 * the next Sync, makes that Parse fail with "already exists" once.
 */
#ifndef PGHANDOFF_PROXY_PREPARED_H
#define PGHANDOFF_PROXY_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/pktbuf.h"

/* Names the proxy gives its statements on servers: the prefix and the id. */
#define PREPARED_NAME_PREFIX "PGH_"
#define PREPARED_NAME_SIZE 32

typedef struct PreparedRegistry PreparedRegistry;
typedef struct PreparedClient PreparedClient;
typedef struct PreparedServer PreparedServer;

typedef enum PreparedVerdict {
	PREPARED_FORWARD, /* the client's: pass it on */
	PREPARED_SWALLOW, /* the answer to a message the proxy added: drop it */
} PreparedVerdict;

/* NULL when out of memory.  Free the registry after its clients and servers. */
PreparedRegistry *prepared_registry_new(void);
void prepared_registry_free(PreparedRegistry *reg);
/* Definitions alive. */
size_t prepared_registry_count(const PreparedRegistry *reg);

PreparedClient *prepared_client_new(PreparedRegistry *reg);
/* Detaches the client from a server still owing it replies, and forgets its names. */
void prepared_client_free(PreparedClient *cl);
/* Names the client has. */
size_t prepared_client_count(const PreparedClient *cl);
/*
 * The server-side name of the client's statement `name`, copied to out
 * (PREPARED_NAME_SIZE bytes); false when the client has no such statement.
 */
bool prepared_client_lookup(const PreparedClient *cl, const char *name, char *out);

/* max_statements >= 1: with 0 (PgBouncer's "off") the relay does not use this module. */
PreparedServer *prepared_server_new(PreparedRegistry *reg, int max_statements);
void prepared_server_free(PreparedServer *srv);
/* Definitions prepared (or being prepared) on the server. */
size_t prepared_server_count(const PreparedServer *srv);
/* Whether the server has (or is being sent) the client's statement `name`. */
bool prepared_server_has(const PreparedServer *srv, const PreparedClient *cl, const char *name);
/* Replies the server still owes, synthesized ones included. */
size_t prepared_server_pending(const PreparedServer *srv);
/*
 * Nothing owed, no Sync awaited after an error, not in COPY FROM STDIN: the
 * server may go to another client.  A server its client left otherwise is
 * closed, like one left in a transaction.
 */
bool prepared_server_idle(const PreparedServer *srv);
/* The server lost every statement (the proxy ran DISCARD ALL on it). */
void prepared_server_forget_all(PreparedServer *srv);

/*
 * One client message, from its type byte: avail bytes of it at msg, len its
 * whole length.  A Parse of a named statement, a Describe and a Close must
 * be whole (avail == len); of a Bind the portal and statement names are
 * enough, the rest streams through keep_from.
 */
bool prepared_client_message(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t avail, size_t len,
			     PktBuf *to_server, size_t *keep_from, PktBuf *to_client, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * One server message, from its type byte: avail bytes of it at msg, len its
 * whole length (a CommandComplete is read whole when it fits in avail).
 */
bool prepared_server_reply(PreparedServer *srv, const uint8_t *msg, size_t avail, size_t len, PreparedVerdict *verdict,
			   PktBuf *to_client, char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * For tests and fuzzing: checks the invariants of the FIFOs, the name and
 * statement sets, and, given every server and client there is, that each
 * definition's reference count is exactly what they hold.  False with the
 * first broken one in err.
 */
bool prepared_check(const PreparedRegistry *reg, PreparedServer *const *servers, size_t nservers,
		    PreparedClient *const *clients, size_t nclients, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif /* PGHANDOFF_PROXY_PREPARED_H */
