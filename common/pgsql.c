/*
 * Blocking libpq helpers.  Only a few files talk to libpq directly; the
 * checks and commands call these.
 */
#include "common/pgsql.h"

#include <stdio.h>
#include <string.h>

/* libpq messages end in a newline and may span lines; keep the first line. */
static void
copy_first_line(const char *msg, char *err, size_t errlen)
{
	size_t n = strcspn(msg, "\n");

	if (n >= errlen)
		n = errlen - 1;
	memcpy(err, msg, n);
	err[n] = '\0';
}

bool
pgsql_connect(const char *const *keywords, const char *const *values, PGconn **conn,
	      char *err, size_t errlen)
{
	PGconn *c = PQconnectdbParams(keywords, values, 1);

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	if (PQstatus(c) != CONNECTION_OK) {
		const char *msg = PQerrorMessage(c);

		/* "connection to server at ... failed: FATAL: ..." is the useful part. */
		copy_first_line(msg, err, errlen);
		PQfinish(c);
		return false;
	}
	*conn = c;
	return true;
}

bool
pgsql_query(PGconn *conn, const char *sql, int nparams, const char *const *params,
	    PGresult **result, char *err, size_t errlen)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		*result = res;
		return true;
	}
	if (res) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

		if (msg)
			snprintf(err, errlen, "%s: %s", state ? state : "XX000", msg);
		else
			copy_first_line(PQerrorMessage(conn), err, errlen);
	} else {
		copy_first_line(PQerrorMessage(conn), err, errlen);
	}
	PQclear(res);
	return false;
}

bool
pgsql_query_copy_value(PGconn *conn, const char *sql, int nparams, const char *const *params,
		       char *buf, size_t buflen, char *err, size_t errlen)
{
	PGresult *res;

	if (!pgsql_query(conn, sql, nparams, params, &res, err, errlen))
		return false;
	if (PQntuples(res) < 1 || PQnfields(res) < 1) {
		snprintf(err, errlen, "query returned no rows: %s", sql);
		PQclear(res);
		return false;
	}
	snprintf(buf, buflen, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}

void
pgsql_format_version(int version_num, char *buf, size_t len)
{
	if (version_num >= 100000)
		snprintf(buf, len, "%d.%d", version_num / 10000, version_num % 10000);
	else
		snprintf(buf, len, "%d.%d.%d", version_num / 10000, (version_num / 100) % 100, version_num % 100);
}
