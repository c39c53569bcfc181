/*
 * The thin layer over libpq used by the command-line tools (check, and later
 * the replicator): blocking connections and queries whose errors come back as
 * one line of text, "SQLSTATE: message", ready to print next to a check.
 */
#ifndef PGHANDOFF_COMMON_PGSQL_H
#define PGHANDOFF_COMMON_PGSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

/* keywords/values as for PQconnectdbParams with expand_dbname = 1. */
bool pgsql_connect(const char *const *keywords, const char *const *values, PGconn **conn,
		   char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Runs sql with text parameters.  On success *result holds a TUPLES_OK or
 * COMMAND_OK result for the caller to PQclear.
 */
bool pgsql_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
		 PGresult **result, char *err, size_t errlen) __attribute__((warn_unused_result));

/* The first column of the first row as text, copied into buf ("" for NULL). */
bool pgsql_query_copy_value(PGconn *conn, const char *sql, int nparams, const char *const *params,
			    char *buf, size_t buflen, char *err, size_t errlen) __attribute__((warn_unused_result));

/* "13.23" from a server_version_num of 130023. */
void pgsql_format_version(int version_num, char *buf, size_t len);

#endif
