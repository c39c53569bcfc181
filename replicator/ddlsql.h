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
 * The statement is then rewritten for the replay:
 *   - CREATE INDEX CONCURRENTLY and DROP INDEX CONCURRENTLY keep it, and
 *     come back as DDL_SQL_ALONE: they cannot run in a transaction block,
 *     so the applier runs them on their own between two apply transactions
 *     (a build on a large table must not hold the table's lock for the
 *     whole of it).  The drop gets IF EXISTS: a restart that replays it
 *     again finds the index gone.  With in_transaction (the source
 *     transaction changed rows before it, so it cannot be split) CONCURRENTLY
 *     is removed instead, and the result is DDL_SQL_OK;
 *   - ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY too (the concurrent
 *     detach leaves a CHECK constraint on the partition, which the plain one
 *     does not make); ddlsql_detach names its tables, and the FINALIZE that
 *     completes it when a restart finds it half done;
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
	DDL_SQL_OK,        /* out holds the statement to run in the apply transaction */
	DDL_SQL_ALONE,     /* out holds a statement that must run outside a transaction block */
	DDL_SQL_SKIP,      /* nothing to replay: a temporary table */
	DDL_SQL_NOT_FOUND, /* no statement of the string matches ordinal and tag */
} DdlSqlResult;

/*
 * The statement number ordinal (from 1) among the statements of query that
 * fire event triggers, rewritten as above into out (appended).  tag is the
 * event trigger's command tag ("ALTER TABLE", "CREATE TABLE AS").
 */
DdlSqlResult ddlsql_statement(const char *query, size_t len, const char *tag, int ordinal, bool in_transaction,
			      StrBuf *out);

/*
 * statement, a DDL_SQL_ALONE ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY:
 * its partitioned table and partition, as written (to_regclass() reads
 * them), and the statement with FINALIZE in place of CONCURRENTLY, each
 * appended.  False for any other statement.
 */
bool ddlsql_detach(const char *statement, size_t len, StrBuf *parent, StrBuf *child, StrBuf *finalize);

/* How many statements (empty ones not counted) query holds; for tests. */
int ddlsql_count_statements(const char *query, size_t len);

#endif
