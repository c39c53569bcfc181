/*
 * A lexical look at client SQL, to tell whether a cutover may trust the
 * session state it read earlier.  No parser and no catalog: the scanner
 * follows PostgreSQL's lexical rules, splits the text into statements and
 * accepts a statement only when every token it is unsure about is on a
 * short list (statement kinds, SQL keywords, built-in functions).  It only
 * answers "provably unchanged" or "ask the server"; a wrong "false" costs a
 * session read, a wrong "true" a lost setting, so every doubt goes to false.
 *
 * What it cannot see, because it is not in the text: triggers, column
 * defaults, rules, views, row security policies, user-defined operators and
 * casts, functions called with attribute notation (t.f for f(t)), and
 * built-in names shadowed through search_path.
 */
#ifndef PGHANDOFF_PROXY_SQLSCAN_H
#define PGHANDOFF_PROXY_SQLSCAN_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when running this SQL text (a simple-Query string or a Parse's query,
 * len bytes, not necessarily NUL-terminated) provably leaves the session
 * state a cutover carries unchanged: settings (SET, set_config), SQL prepared
 * statements, LISTEN channels, temporary tables, session advisory locks,
 * cursors.  False whenever in doubt: the caller then reads the session again.
 * One linear pass, no allocation; never reads sql[len] or beyond.
 */
bool sql_leaves_session_alone(const char *sql, size_t len)
	__attribute__((warn_unused_result));

#endif
