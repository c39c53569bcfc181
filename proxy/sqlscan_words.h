/*
 * The words sqlscan.c knows by name: the keywords its statement pass looks
 * at, and the built-in functions that leave a session alone.
 */
#ifndef PGHANDOFF_PROXY_SQLSCAN_WORDS_H
#define PGHANDOFF_PROXY_SQLSCAN_WORDS_H

#include <stdbool.h>

/* The keywords the statement pass looks at by name. */
typedef enum SqlKw {
	KW_OTHER,
	KW_AS,
	KW_BIT,
	KW_BY,
	KW_CHAR,
	KW_CHARACTER,
	KW_CONFLICT,
	KW_CROSS,
	KW_CUBE,
	KW_DO,
	KW_FULL,
	KW_GROUP,
	KW_GROUPING,
	KW_INNER,
	KW_INTERVAL,
	KW_INTO,
	KW_JOIN,
	KW_LEFT,
	KW_MATERIALIZED,
	KW_NATURAL,
	KW_NCHAR,
	KW_NOT,
	KW_ON,
	KW_OPERATOR,
	KW_OUTER,
	KW_RECURSIVE,
	KW_RIGHT,
	KW_ROLLUP,
	KW_SECOND,
	KW_SET,
	KW_SETS,
	KW_TABLESAMPLE,
	KW_TIME,
	KW_UPDATE,
	KW_VARYING,
	KW_WITH,
	KW_ZONE,
} SqlKw;

/* Reserved or column-name keyword: unqualified, it can never name a function. */
#define SQLKW_SYNTAX 0x01
/* May start a statement that leaves the session alone. */
#define SQLKW_STATEMENT 0x02
/* Starts the main statement after a WITH list. */
#define SQLKW_MAIN 0x04

typedef struct SqlKeyword {
	const char *name;
	SqlKw id;
	unsigned flags;
} SqlKeyword;

/* The keyword named by lower (lowercase, NUL-terminated), or NULL. */
const SqlKeyword *sqlscan_keyword(const char *lower);
/* name (lowercase unless it was quoted) is a listed built-in function. */
bool sqlscan_function_listed(const char *name);

#endif
