/*
 * The replicator's connections: blocking libpq connections to a database of
 * the source or the target (or a replication connection to the source), and
 * queries that log their error once, naming the connection, and return false.
 */
#ifndef PGHANDOFF_REPLICATOR_CONN_H
#define PGHANDOFF_REPLICATOR_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

#include "config/config.h"

typedef struct ReplConn {
	PGconn *conn;      /* NULL once closed, by repl_close or after a deadline passed */
	char subject[160]; /* "replicator app source", for logs */
	const char *role;  /* "source" or "target" */
	int version;       /* server_version_num */
} ReplConn;

/*
 * Deadlines for the calling thread's connections (the cutover's worker sets
 * them; the replicator runs without).  Between begin and end, each login and
 * each query waits at most timeout seconds for the server, and none past a
 * cap: a server that has not answered by then is given up on, its connection
 * closed, and the query fails.  what names the setting ("answer_timeout"),
 * for the message.
 */
void repl_deadline_begin(double timeout, const char *what);
/* No call waits past until (clock_monotonic() seconds), what names it; 0: the cap goes. */
void repl_deadline_cap(double until, const char *what);
void repl_deadline_end(void);
/* "the target did not answer within 2.0 s (catchup_timeout)" since the last begin, or NULL. */
const char *repl_deadline_missed(void);

bool repl_connect(ReplConn *rc, const ServerConfig *server, const char *dbname, bool replication, const char *subject)
	__attribute__((warn_unused_result));
void repl_close(ReplConn *rc);

/* Runs a command; the result is discarded. */
bool repl_exec(ReplConn *rc, const char *sql) __attribute__((warn_unused_result));
/* Runs a command with text parameters; the result is discarded. */
bool repl_exec_params(ReplConn *rc, const char *sql, int nparams, const char *const *params)
	__attribute__((warn_unused_result));
/* Runs sql with text parameters; *result is a TUPLES_OK or COMMAND_OK result to PQclear. */
bool repl_query(ReplConn *rc, const char *sql, int nparams, const char *const *params, PGresult **result)
	__attribute__((warn_unused_result));
/*
 * How long a follower waits for a slot or origin still held by its
 * predecessor's session (a follower killed with its walsender and target
 * backend not yet gone) before it counts as an error and is retried.
 */
#define REPL_IN_USE_WAIT_S 60.0

/*
 * Like repl_query, with ok the result status that counts as success
 * (PGRES_COPY_BOTH for START_REPLICATION), but an answer of 55006
 * (object_in_use) is tried again every quarter second for up to wait_s
 * seconds, said once as a warning: a slot or origin is still held by the
 * session of a follower that was stopped or killed and has not ended yet.
 */
bool repl_query_while_in_use(ReplConn *rc, const char *sql, int nparams, const char *const *params, ExecStatusType ok,
			     double wait_s, PGresult **result) __attribute__((warn_unused_result));
/* The first column of the first row, copied into buf; "" for NULL; false (logged) on no row. */
bool repl_query_copy_value(ReplConn *rc, const char *sql, int nparams, const char *const *params, char *buf, size_t len)
	__attribute__((warn_unused_result));

/*
 * The result of a query sent with PQsendQuery on rc, within the deadline:
 * false (logged; the connection closed on expiry) on an error or none.
 */
bool repl_get_result(ReplConn *rc, PGresult **result) __attribute__((warn_unused_result));

/* Appends name quoted as an SQL identifier; a relation's qualified name. */
struct StrBuf;
void repl_append_ident(struct StrBuf *sb, PGconn *conn, const char *name);
void repl_append_qualified(struct StrBuf *sb, PGconn *conn, const char *nspname, const char *relname);

/* A libpq conninfo string for server/dbname, password left out (it goes in PGPASSWORD). */
char *repl_conninfo(const ServerConfig *server, const char *dbname);

#endif
