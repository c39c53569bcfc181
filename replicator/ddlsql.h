/*
 * The text of one captured schema change, cut out of the query string it
 * came in and made fit to replay on the other side.
 *
 * The source's event trigger sees the whole query string a client sent
 * (current_query()), which may hold several statements, DML among them,
 * and the position of the change among the statements of that string that
 * fire event triggers (its ordinal, counted by the trigger).  Here the
 * string is split with PostgreSQL's lexical rules (quotes, E'' strings,
 * quoted identifiers, dollar quotes, nested comments, BEGIN ATOMIC bodies),
 * the statements that fire event triggers are counted the same way, and
 * the one with that ordinal is taken, if its first word agrees with the
 * trigger's command tag.  No catalog, no parser: a change made from inside
 * a function, procedure or DO block is not in the string as a statement of
 * its own, and is refused (DDL_SQL_NOT_FOUND), never guessed.
 *
 * The statement is then rewritten for the apply transaction:
 *   - CONCURRENTLY is removed (CREATE INDEX, DROP INDEX, DETACH PARTITION):
 *     the apply transaction is the only writer of those tables on the
 *     replaying side, and a plain build there is atomic with the apply's
 *     progress, so a crash never replays it twice;
 *   - CREATE TABLE AS and SELECT INTO make the structure only (WITH NO
 *     DATA): the rows arrive through the stream as the source wrote them;
 *   - temporary tables made by either are not replayed (DDL_SQL_SKIP).
 * Linear, never reads past len; the result is a new NUL-terminated string.
 */
#ifndef PGHANDOFF_REPLICATOR_DDLSQL_H
#define PGHANDOFF_REPLICATOR_DDLSQL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/strbuf.h"

typedef enum DdlSqlResult {
	DDL_SQL_OK,        /* out holds the statement to run */
	DDL_SQL_SKIP,      /* nothing to replay: a temporary table */
	DDL_SQL_NOT_FOUND, /* no statement of the string matches ordinal and tag */
} DdlSqlResult;

/*
 * The statement number ordinal (from 1) among the statements of query that
 * fire event triggers, rewritten as above into out (appended).  tag is the
 * event trigger's command tag ("ALTER TABLE", "CREATE TABLE AS").
 */
DdlSqlResult ddlsql_statement(const char *query, size_t len, const char *tag, int ordinal, StrBuf *out);

/* How many statements (empty ones not counted) query holds; for tests. */
int ddlsql_count_statements(const char *query, size_t len);

#endif
