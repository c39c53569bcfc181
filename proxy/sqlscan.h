/*
 * A lexical look at client SQL, to tell whether a cutover may trust the
 * session state it read earlier.  No parser and no catalog: the scanner
 * follows PostgreSQL's lexical rules, splits the text into statements and
 * accepts a statement only when every token it is unsure about is on a
 * short list (statement kinds, SQL keywords, built-in functions).  It only
 * answers "provably unchanged" or "ask the server"; a wrong "false" costs a
 * session read, a wrong "true" a lost setting, so every doubt goes to false.
 * The same lexer also names the custom settings the text may set, which
 * the session read cannot list; there every doubt goes to naming one more.
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
bool sql_leaves_session_alone(const char *sql, size_t len) __attribute__((warn_unused_result));

/* The longest setting name kept: NAMEDATALEN - 1. */
#define SQL_SETTING_NAME_MAX 63

typedef void (*SqlSettingFn)(const char *name, void *arg);

/*
 * Calls fn with the name of each custom setting (a name with a dot, as
 * "app.tenant") the text may set or reset, so that it can be read back with
 * current_setting(name, true): PostgreSQL hides such placeholders from
 * pg_settings.  Seen: SET [SESSION | LOCAL] name {TO | = | FROM} ... and
 * RESET name as the first token of any statement of the text, and
 * set_config('name', ...) anywhere, however qualified; not inside string
 * literals, comments, dollar-quoted bodies.  So not seen: names set by the
 * code of functions, procedures, triggers and DO blocks, and set_config
 * calls whose name is not a literal.
 *
 * The name is folded to lower case as PostgreSQL folds unquoted identifiers
 * (ASCII only); a double-quoted part keeps its case.  set_config's literal
 * is folded too (setting names are case-insensitive), and must be a dotted
 * name of unquoted parts.  fn gets it NUL-terminated, at most
 * SQL_SETTING_NAME_MAX bytes; longer or malformed names are skipped.
 *
 * Errs towards reporting: a name may be reported more than once, or when
 * the statement would fail.  Where the server's reading depends on what the
 * text does not say (standard_conforming_strings, a client-only encoding),
 * the names of every reading are reported.  The text ends at len or at a
 * NUL, as the server reads it.  Returns at once when the text has no "set"
 * in any case.  Linear, no allocation; never reads sql[len] or beyond.
 */
void sql_each_custom_setting(const char *sql, size_t len, SqlSettingFn fn, void *arg);

#endif
