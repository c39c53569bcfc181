/*
 * The thin layer over libpq used by the command-line tools (check): blocking
 * connections and queries, each given up after 30 s (a cluster that stopped
 * answering), whose errors come back as one line of text, "SQLSTATE:
 * message", ready to print next to a check.
 */
#ifndef PGHANDOFF_COMMON_PGSQL_H
#define PGHANDOFF_COMMON_PGSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

/* keywords/values as for PQconnectdbParams with expand_dbname = 1. */
bool pgsql_connect(const char *const *keywords, const char *const *values, PGconn **conn, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Runs sql with text parameters.  On success *result holds a TUPLES_OK or
 * COMMAND_OK result for the caller to PQclear.
 */
bool pgsql_query(PGconn *conn, const char *sql, int nparams, const char *const *params, PGresult **result, char *err,
		 size_t errlen) __attribute__((warn_unused_result));

/* The first column of the first row as text, copied into buf ("" for NULL). */
bool pgsql_query_copy_value(PGconn *conn, const char *sql, int nparams, const char *const *params, char *buf,
			    size_t buflen, char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Waiting with a deadline (clock_monotonic() seconds).  A stopped server's
 * kernel still accepts connections and acknowledges what is sent, so neither
 * connect_timeout on a started connection, keepalives nor tcp_user_timeout
 * notice it: only the caller's clock does.  On expiry the connection is left
 * for the caller to close; no cancel is sent (libpq's PQcancel waits for the
 * server without a bound).
 */

/* PQconnectdbParams(keywords, values, 1) that gives up at deadline: NULL then, with *expired. */
PGconn *pgsql_connect_until(const char *const *keywords, const char *const *values, double deadline, bool *expired)
	__attribute__((warn_unused_result));

/*
 * The result of what PQsendQuery* sent, as PQexec would return it (the
 * first error, else the last result; a COPY result ends the wait).  False
 * when the deadline passed first (*result NULL); the connection is then in
 * the middle of a query and only fit to be closed.
 */
bool pgsql_get_result_until(PGconn *conn, double deadline, PGresult **result) __attribute__((warn_unused_result));

/*
 * Asks the server to cancel what conn is running, from a detached thread of
 * its own: PQcancel waits for the server's answer without a bound, and a
 * stopped server gives none until it runs again (the thread ends then, and
 * the query it was given up on does not run on after all).  Before the
 * caller closes conn.
 */
void pgsql_cancel_detached(PGconn *conn);

/* "13.23" from a server_version_num of 130023. */
void pgsql_format_version(int version_num, char *buf, size_t len);

#endif
