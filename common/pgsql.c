/*
 * Blocking libpq helpers.  Only a few files talk to libpq directly; the
 * checks and commands call these.
 */
#include "common/pgsql.h"
#include "common/clock.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
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

/*
 * The command-line tools' bound on every login and query: a catalog query
 * that has not answered by then will not, the cluster stopped answering.
 */
#define PGSQL_ANSWER_TIMEOUT 30.0

bool
pgsql_connect(const char *const *keywords, const char *const *values, PGconn **conn, char *err, size_t errlen)
{
	bool expired;
	PGconn *c = pgsql_connect_until(keywords, values, clock_monotonic() + PGSQL_ANSWER_TIMEOUT, &expired);

	if (!c) {
		if (expired)
			snprintf(err, errlen, "the server did not answer within %.0f s", PGSQL_ANSWER_TIMEOUT);
		else
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
pgsql_query(PGconn *conn, const char *sql, int nparams, const char *const *params, PGresult **result, char *err,
	    size_t errlen)
{
	PGresult *res = NULL;
	ExecStatusType st;

	if (PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0) != 1) {
		copy_first_line(PQerrorMessage(conn), err, errlen);
		return false;
	}
	if (!pgsql_get_result_until(conn, clock_monotonic() + PGSQL_ANSWER_TIMEOUT, &res)) {
		/* The connection is mid-query now: later queries on it fail, and the caller closes it. */
		pgsql_cancel_detached(conn);
		snprintf(err, errlen, "the server did not answer within %.0f s", PGSQL_ANSWER_TIMEOUT);
		return false;
	}
	st = PQresultStatus(res);

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
pgsql_query_copy_value(PGconn *conn, const char *sql, int nparams, const char *const *params, char *buf, size_t buflen,
		       char *err, size_t errlen)
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

/* Waits until the connection's socket is readable (or writable); false once deadline has passed. */
static bool
wait_socket(PGconn *conn, bool for_write, double deadline)
{
	struct pollfd pfd;

	pfd.fd = PQsocket(conn);
	pfd.events = for_write ? POLLOUT : POLLIN;
	if (pfd.fd < 0)
		return true; /* libpq reports the broken connection on its next call */
	for (;;) {
		double left = deadline - clock_monotonic();
		int rc;

		if (left <= 0)
			return false;
		pfd.revents = 0;
		rc = poll(&pfd, 1, (int) (left * 1000.0) + 1);
		if (rc > 0 || (rc < 0 && errno != EINTR))
			return true; /* ready, or an error libpq will see and report */
	}
}

PGconn *
pgsql_connect_until(const char *const *keywords, const char *const *values, double deadline, bool *expired)
{
	PGconn *c = PQconnectStartParams(keywords, values, 1);
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;

	*expired = false;
	if (!c || PQstatus(c) == CONNECTION_BAD)
		return c;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		if (!wait_socket(c, st == PGRES_POLLING_WRITING, deadline)) {
			*expired = true;
			PQfinish(c);
			return NULL;
		}
		st = PQconnectPoll(c);
	}
	return c;
}

bool
pgsql_get_result_until(PGconn *conn, double deadline, PGresult **result)
{
	PGresult *last = NULL, *res;
	bool was_blocking = !PQisnonblocking(conn);
	int flushed;

	*result = NULL;
	/* Nonblocking, so that sending cannot wait on a full socket buffer either. */
	if (was_blocking && PQsetnonblocking(conn, 1) != 0)
		return true; /* no result: the caller reports PQerrorMessage */
	while ((flushed = PQflush(conn)) == 1)
		if (!wait_socket(conn, true, deadline))
			return false;
	if (flushed < 0)
		return true;
	for (;;) {
		ExecStatusType st;

		while (PQisBusy(conn)) {
			if (!wait_socket(conn, false, deadline)) {
				PQclear(last);
				return false;
			}
			if (PQconsumeInput(conn) == 0)
				break; /* the connection is gone: PQgetResult says so */
		}
		res = PQgetResult(conn);
		if (!res)
			break;
		st = PQresultStatus(res);
		if (last && PQresultStatus(last) == PGRES_FATAL_ERROR) {
			PQclear(res);
		} else {
			PQclear(last);
			last = res;
		}
		if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH ||
		    PQstatus(conn) == CONNECTION_BAD)
			break;
	}
	/* Back as it was for the connection's other users (COPY calls behave differently when nonblocking). */
	if (was_blocking && PQstatus(conn) == CONNECTION_OK)
		(void) PQsetnonblocking(conn, 0);
	*result = last;
	return true;
}

static void *
cancel_main(void *arg)
{
	PGcancel *cancel = arg;
	char errbuf[256];

	(void) PQcancel(cancel, errbuf, sizeof(errbuf)); /* nobody is left to tell */
	PQfreeCancel(cancel);
	return NULL;
}

void
pgsql_cancel_detached(PGconn *conn)
{
	PGcancel *cancel = PQgetCancel(conn);
	pthread_attr_t attr;
	pthread_t thread;
	bool started;

	if (!cancel)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	started = pthread_create(&thread, &attr, cancel_main, cancel) == 0;
	pthread_attr_destroy(&attr);
	if (!started)
		PQfreeCancel(cancel); /* closing the connection is all that is left */
}

void
pgsql_format_version(int version_num, char *buf, size_t len)
{
	if (version_num >= 100000)
		snprintf(buf, len, "%d.%d", version_num / 10000, version_num % 10000);
	else
		snprintf(buf, len, "%d.%d.%d", version_num / 10000, (version_num / 100) % 100, version_num % 100);
}
