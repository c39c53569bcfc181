/*
 * A lexer that finds the same token boundaries as PostgreSQL's scan.l, and
 * two passes over its tokens.  sql_leaves_session_alone checks each
 * statement's kind, temporary objects, and every name followed by "(";
 * sql_each_custom_setting picks out the names SET, RESET and set_config
 * give custom settings.  All are byte loops with a fixed amount of state:
 * no allocation, no recursion, every read checked against the end of the
 * input.
 *
 * The bytes are the client's, in its client_encoding.  In the client-only
 * encodings (SJIS, BIG5, GBK, UHC, GB18030, JOHAB) the second byte of a
 * character may be an ASCII byte from 0x30 to 0x7e, which the server, after
 * converting to its own encoding, does not see.  Of those, only a backslash
 * in an E'' string and a punctuation byte right after an identifier (or a
 * dollar-quote tag) could move a token boundary here:
 * sql_leaves_session_alone refuses both, sql_each_custom_setting reads the
 * text both ways.
 */
#include "proxy/sqlscan.h"
#include "proxy/sqlscan_words.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Deeper nesting is refused: no client query needs it, and counters stay small. */
#define SQLSCAN_MAX_DEPTH 1000
/* PostgreSQL's NAMEDATALEN - 1: no keyword or listed function is longer. */
#define SQLSCAN_MAX_NAME 63
/* A name with more parts is never a listed function. */
#define SQLSCAN_MAX_PARTS 3

typedef enum SqlTokKind {
	SQLTOK_NONE,    /* no token yet in this statement */
	SQLTOK_IDENT,   /* unquoted identifier or keyword */
	SQLTOK_QIDENT,  /* "quoted identifier" */
	SQLTOK_LITERAL, /* string, number or $n parameter */
	SQLTOK_LPAREN,
	SQLTOK_RPAREN,
	SQLTOK_LBRACKET,
	SQLTOK_RBRACKET,
	SQLTOK_SEMI,
	SQLTOK_COMMA,
	SQLTOK_DOT,
	SQLTOK_CAST, /* :: */
	SQLTOK_OP,   /* one operator character, or ':' */
	SQLTOK_EOF,
} SqlTokKind;

typedef struct SqlTok {
	SqlTokKind kind;
	/* IDENT: the name; QIDENT: between the quotes, "" kept; '...' LITERAL: all of it */
	const unsigned char *s;
	size_t len;
	const SqlKeyword *kw; /* IDENT that is in sql_keywords, else NULL */
	bool unicode;         /* QIDENT written U&"...": escapes not decoded */
} SqlTok;

/*
 * How the lexer reads what depends on the server's settings and the
 * client's encoding.  STRICT refuses all of it (sql_leaves_session_alone);
 * without it, the lexer follows one reading and notes in seen what another
 * would lex differently (sql_each_custom_setting).
 */
#define SQLLEX_STRICT 0x01
/* standard_conforming_strings off: a backslash escapes in '...' too. */
#define SQLLEX_SCS_OFF 0x02
/* A client-only encoding: a byte >= 0x80 and a trail byte after it are one character. */
#define SQLLEX_MB_PAIRS 0x04

/* seen: a backslash in '...' (SCS_OFF would differ). */
#define SQLLEX_SAW_PLAIN_BACKSLASH 0x01
/* seen: a byte >= 0x80 before a backslash or a punctuation byte (MB_PAIRS would differ). */
#define SQLLEX_SAW_TRAIL_BYTE 0x02

typedef struct SqlLexer {
	const unsigned char *p;
	const unsigned char *end;
	unsigned mode; /* SQLLEX_STRICT, SQLLEX_SCS_OFF, SQLLEX_MB_PAIRS */
	unsigned seen; /* SQLLEX_SAW_* */
} SqlLexer;

/* A token as the statement pass remembers it. */
typedef struct SqlPrev {
	SqlTokKind kind;
	SqlKw kw; /* KW_OTHER unless an unquoted keyword we know */
} SqlPrev;

typedef struct SqlName {
	const unsigned char *s;
	size_t len;
	bool quoted;
	const SqlKeyword *kw;
} SqlName;

typedef struct SqlScan {
	/* The current statement. */
	bool started;
	SqlKw first;    /* its first keyword, KW_OTHER if not one we know */
	bool with_main; /* WITH statement: past the WITH list */
	int set_count;  /* depth-0 SET keywords */
	int paren_depth;
	int bracket_depth;
	/* ON CONFLICT (: open at this depth, then DO must follow its ')'. */
	bool conflict_open;
	int conflict_depth;
	bool need_do;
	SqlPrev prev; /* the last two tokens */
	SqlPrev prev2;
	/* The dotted name that ends at the last token, or ends with its '.'. */
	int parts; /* 0: the last token is not part of a name */
	bool after_dot;
	SqlName qualifier; /* first part, when parts == 2 */
	SqlName name;      /* last part */
	SqlPrev before;    /* the two tokens before the first part */
	SqlPrev before2;
} SqlScan;

static bool
is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* Dollar-quote tags may not contain '$'; identifiers may. */
static bool
is_tag_cont(unsigned char c)
{
	return is_ident_start(c) || is_digit(c);
}

static bool
is_ident_cont(unsigned char c)
{
	return is_tag_cont(c) || c == '$';
}

static bool
is_hex_digit(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* PostgreSQL's op_chars. */
static bool
is_op_char(unsigned char c)
{
	switch (c) {
	case '~':
	case '!':
	case '@':
	case '#':
	case '^':
	case '&':
	case '|':
	case '`':
	case '?':
	case '+':
	case '-':
	case '*':
	case '/':
	case '%':
	case '<':
	case '>':
	case '=':
		return true;
	default:
		return false;
	}
}

/*
 * The second byte of a character in a client-only encoding: 0x30-0x39 in
 * GB18030, 0x31-0x7e in JOHAB, 0x40-0x7e in the others, or a byte >= 0x80.
 */
static bool
is_mb_trail(unsigned char c)
{
	return c >= 0x30 && c != 0x7f;
}

/*
 * Bytes that can be the second byte of a character in a client-only
 * encoding (0x31-0x7e in JOHAB, 0x40-0x7e in the others) but that would
 * end an identifier here.  Digits and letters would not.
 */
static bool
is_trail_punct(unsigned char c)
{
	return c >= ':' && c <= '~' && !is_ident_cont(c);
}

static unsigned char
ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char) (c - 'A' + 'a') : c;
}

/* s[0..len) equals the lowercase literal lit, ignoring ASCII case. */
static bool
name_ieq(const unsigned char *s, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (ascii_lower(s[i]) != (unsigned char) lit[i])
			return false;
	return true;
}

static bool
name_iprefix(const unsigned char *s, size_t len, const char *lit)
{
	size_t n = strlen(lit);

	return len >= n && name_ieq(s, n, lit);
}

/*
 * The name as PostgreSQL would look it up, NUL-terminated in buf: unquoted
 * names folded to lower case.  False when it cannot be in our tables.
 */
static bool
name_lookup_key(const unsigned char *s, size_t len, bool quoted, char buf[SQLSCAN_MAX_NAME + 1])
{
	if (len == 0 || len > SQLSCAN_MAX_NAME)
		return false;
	for (size_t i = 0; i < len; i++) {
		/* A doubled quote inside a quoted name: no listed name has one. */
		if (s[i] == '"')
			return false;
		buf[i] = (char) (quoted ? s[i] : ascii_lower(s[i]));
	}
	buf[len] = '\0';
	return true;
}

static const SqlKeyword *
keyword_lookup(const unsigned char *s, size_t len)
{
	char buf[SQLSCAN_MAX_NAME + 1];

	if (!name_lookup_key(s, len, false, buf))
		return NULL;
	return sqlscan_keyword(buf);
}

static bool
function_listed(const SqlName *n)
{
	char buf[SQLSCAN_MAX_NAME + 1];

	if (!name_lookup_key(n->s, n->len, n->quoted, buf))
		return false;
	return sqlscan_function_listed(buf);
}

/*
 * TEMP, TEMPORARY (SELECT INTO TEMP) or the pg_temp schema.  Quoted names
 * are compared ignoring case too: a false alarm only costs a session read.
 */
static bool
names_temp(const SqlTok *t)
{
	if (t->kind == SQLTOK_IDENT && (name_ieq(t->s, t->len, "temp") || name_ieq(t->s, t->len, "temporary")))
		return true;
	return name_ieq(t->s, t->len, "pg_temp") || name_iprefix(t->s, t->len, "pg_temp_");
}

/* Whitespace, -- comments and nested block comments.  False if one is unterminated. */
static bool
lex_skip_blank(SqlLexer *lx)
{
	const unsigned char *p = lx->p;
	const unsigned char *end = lx->end;

	while (p < end) {
		if (is_space(*p)) {
			p++;
		} else if (*p == '-' && end - p >= 2 && p[1] == '-') {
			p += 2;
			while (p < end && *p != '\n' && *p != '\r')
				p++;
		} else if (*p == '/' && end - p >= 2 && p[1] == '*') {
			size_t depth = 1;

			p += 2;
			while (depth > 0) {
				if (p >= end)
					return false;
				if (*p == '/' && end - p >= 2 && p[1] == '*') {
					depth++;
					p += 2;
				} else if (*p == '*' && end - p >= 2 && p[1] == '/') {
					depth--;
					p += 2;
				} else {
					p++;
				}
			}
		} else {
			break;
		}
	}
	lx->p = p;
	return true;
}

/*
 * The rest of a '...' literal (E'...' when escape_string), lx->p just past
 * the opening quote.  In a plain literal a backslash escapes only when
 * standard_conforming_strings is off, which we do not know: STRICT refuses
 * it, the other modes read it as SCS_OFF says.  After a byte >= 0x80 the
 * backslash may be the second byte of a character: STRICT refuses that
 * too, MB_PAIRS reads it so.
 */
static bool
lex_string(SqlLexer *lx, bool escape_string)
{
	const unsigned char *p = lx->p;
	const unsigned char *end = lx->end;
	bool strict = (lx->mode & SQLLEX_STRICT) != 0;
	bool escapes = escape_string || (lx->mode & SQLLEX_SCS_OFF);

	for (;;) {
		if (p >= end)
			return false;
		if (*p == '\'') {
			if (end - p >= 2 && p[1] == '\'') {
				p += 2;
				continue;
			}
			lx->p = p + 1;
			return true;
		}
		if (*p >= 0x80 && (lx->mode & SQLLEX_MB_PAIRS)) {
			p += (end - p >= 2 && is_mb_trail(p[1])) ? 2 : 1;
			continue;
		}
		if (*p == '\\') {
			/* p[-1] is at worst the opening quote. */
			if (strict) {
				if (!escape_string || p[-1] >= 0x80 || end - p < 2)
					return false;
			} else {
				if (p[-1] >= 0x80)
					lx->seen |= SQLLEX_SAW_TRAIL_BYTE;
				if (!escape_string)
					lx->seen |= SQLLEX_SAW_PLAIN_BACKSLASH;
				if (!escapes) {
					p++;
					continue;
				}
				if (end - p < 2)
					return false;
			}
			p += 2;
			continue;
		}
		p++;
	}
}

/* $n, or a $tag$...$tag$ literal; lx->p at the '$'. */
static bool
lex_dollar(SqlLexer *lx)
{
	const unsigned char *start = lx->p;
	const unsigned char *end = lx->end;
	const unsigned char *q = start + 1;
	size_t taglen;

	if (q < end && is_digit(*q)) {
		while (q < end && is_digit(*q))
			q++;
		lx->p = q;
		return true;
	}
	while (q < end) {
		if (*q >= 0x80 && (lx->mode & SQLLEX_MB_PAIRS) && end - q >= 2 && is_mb_trail(q[1])) {
			q += 2;
			continue;
		}
		if (!is_tag_cont(*q))
			break;
		q++;
	}
	if (q[-1] >= 0x80 && q < end && is_trail_punct(*q))
		lx->seen |= SQLLEX_SAW_TRAIL_BYTE;
	/* A lone '$' or "$name": PostgreSQL rejects both. */
	if (q >= end || *q != '$')
		return false;
	taglen = (size_t) (q - start) + 1;
	/*
	 * Linear: a comparison that gets k bytes into the tag has passed k - 1
	 * bytes that are not '$', so the next candidate is at least that far on.
	 */
	for (const unsigned char *r = q + 1; (size_t) (end - r) >= taglen; r++) {
		size_t i = 0;

		if (*r != '$')
			continue;
		while (i < taglen && r[i] == start[i])
			i++;
		if (i == taglen) {
			lx->p = r + taglen;
			return true;
		}
	}
	return false;
}

/* The rest of a "..." identifier, lx->p just past the opening quote. */
static bool
lex_quoted_ident(SqlLexer *lx, SqlTok *tok)
{
	const unsigned char *p = lx->p;
	const unsigned char *end = lx->end;

	for (;;) {
		if (p >= end)
			return false;
		if (*p == '"') {
			if (end - p >= 2 && p[1] == '"') {
				p += 2;
				continue;
			}
			break;
		}
		p++;
	}
	tok->s = lx->p;
	tok->len = (size_t) (p - lx->p);
	lx->p = p + 1;
	return true;
}

static const unsigned char *
skip_digits(const unsigned char *p, const unsigned char *end, bool (*digit)(unsigned char))
{
	while (p < end && (digit(*p) || *p == '_'))
		p++;
	return p;
}

static bool
is_octal_digit(unsigned char c)
{
	return c >= '0' && c <= '7';
}

static bool
is_binary_digit(unsigned char c)
{
	return c == '0' || c == '1';
}

/*
 * A numeric literal, lx->p at a digit or at '.' before a digit.  Letters
 * that do not belong to it are left for the next token, so a name glued to
 * a number is still seen as a name.
 */
static void
lex_number(SqlLexer *lx)
{
	const unsigned char *p = lx->p;
	const unsigned char *end = lx->end;

	if (*p == '0' && end - p >= 3) {
		unsigned char base = ascii_lower(p[1]);
		bool (*digit)(unsigned char) = base == 'x' ? is_hex_digit
			: base == 'o'                      ? is_octal_digit
			: base == 'b'                      ? is_binary_digit
							   : NULL;

		if (digit && digit(p[2])) {
			lx->p = skip_digits(p + 2, end, digit);
			return;
		}
	}
	p = skip_digits(p, end, is_digit);
	/* "1..2" is 1 then "..", as in PostgreSQL. */
	if (p < end && *p == '.' && !(end - p >= 2 && p[1] == '.'))
		p = skip_digits(p + 1, end, is_digit);
	if (p < end && (*p == 'e' || *p == 'E')) {
		const unsigned char *q = p + 1;

		if (q < end && (*q == '+' || *q == '-'))
			q++;
		if (q < end && is_digit(*q))
			p = skip_digits(q, end, is_digit);
	}
	lx->p = p;
}

/* The next token; false on anything unterminated or that PostgreSQL would reject. */
static bool
lex_next(SqlLexer *lx, SqlTok *tok)
{
	const unsigned char *p;
	unsigned char c;

	if (!lex_skip_blank(lx))
		return false;
	p = lx->p;
	tok->s = p;
	tok->len = 0;
	tok->kw = NULL;
	tok->unicode = false;
	if (p >= lx->end) {
		tok->kind = SQLTOK_EOF;
		return true;
	}
	c = *p;
	if (c == '\'') {
		tok->kind = SQLTOK_LITERAL;
		lx->p = p + 1;
		if (!lex_string(lx, false))
			return false;
		tok->len = (size_t) (lx->p - tok->s);
		return true;
	}
	/*
	 * U&"..." may spell any name with escapes (U&"pg\005ftemp"), so the
	 * names we look for cannot be seen in it.  Outside STRICT it is a
	 * quoted name marked unicode.
	 */
	if ((c == 'u' || c == 'U') && lx->end - p >= 3 && p[1] == '&' && p[2] == '"') {
		if (lx->mode & SQLLEX_STRICT)
			return false;
		tok->kind = SQLTOK_QIDENT;
		tok->unicode = true;
		lx->p = p + 3;
		return lex_quoted_ident(lx, tok);
	}
	/* E'...' only when the E stands alone: "be'x'" is a name then a plain literal. */
	if ((c == 'e' || c == 'E') && lx->end - p >= 2 && p[1] == '\'') {
		tok->kind = SQLTOK_LITERAL;
		lx->p = p + 2;
		if (!lex_string(lx, true))
			return false;
		tok->len = (size_t) (lx->p - tok->s);
		return true;
	}
	if (is_ident_start(c)) {
		while (p < lx->end) {
			if (*p >= 0x80 && (lx->mode & SQLLEX_MB_PAIRS) && lx->end - p >= 2 && is_mb_trail(p[1])) {
				p += 2;
				continue;
			}
			if (!is_ident_cont(*p))
				break;
			p++;
		}
		if (p[-1] >= 0x80 && p < lx->end && is_trail_punct(*p)) {
			if (lx->mode & SQLLEX_STRICT)
				return false;
			lx->seen |= SQLLEX_SAW_TRAIL_BYTE;
		}
		tok->kind = SQLTOK_IDENT;
		tok->len = (size_t) (p - tok->s);
		tok->kw = keyword_lookup(tok->s, tok->len);
		lx->p = p;
		return true;
	}
	if (c == '"') {
		tok->kind = SQLTOK_QIDENT;
		lx->p = p + 1;
		return lex_quoted_ident(lx, tok);
	}
	if (is_digit(c) || (c == '.' && lx->end - p >= 2 && is_digit(p[1]))) {
		tok->kind = SQLTOK_LITERAL;
		lex_number(lx);
		return true;
	}
	if (c == '$') {
		tok->kind = SQLTOK_LITERAL;
		return lex_dollar(lx);
	}
	lx->p = p + 1;
	switch (c) {
	case '(':
		tok->kind = SQLTOK_LPAREN;
		return true;
	case ')':
		tok->kind = SQLTOK_RPAREN;
		return true;
	case '[':
		tok->kind = SQLTOK_LBRACKET;
		return true;
	case ']':
		tok->kind = SQLTOK_RBRACKET;
		return true;
	case ';':
		tok->kind = SQLTOK_SEMI;
		return true;
	case ',':
		tok->kind = SQLTOK_COMMA;
		return true;
	case '.':
		tok->kind = SQLTOK_DOT;
		return true;
	case ':':
		if (lx->end - p >= 2 && p[1] == ':') {
			tok->kind = SQLTOK_CAST;
			lx->p = p + 2;
		} else {
			tok->kind = SQLTOK_OP;
		}
		return true;
	default:
		break;
	}
	if (is_op_char(c)) {
		tok->kind = SQLTOK_OP;
		return true;
	}
	/* NUL, backslash, braces, control bytes: PostgreSQL's {other}, a syntax error. */
	return false;
}

/* Right after one of these, a name cannot start an expression. */
static bool
ends_operand(SqlTokKind kind)
{
	return kind == SQLTOK_RPAREN || kind == SQLTOK_RBRACKET || kind == SQLTOK_LITERAL || kind == SQLTOK_QIDENT;
}

/*
 * Non-reserved keywords that take a parenthesis where the tokens before
 * them leave no room for a function call of the same name.
 */
static bool
keyword_takes_paren(const SqlScan *st, SqlKw kw)
{
	SqlKw b = st->before.kw;

	switch (kw) {
	case KW_CONFLICT:
		/* Not enough alone, JOIN t ON conflict(x) is a call: see scan_token. */
		return b == KW_ON;
	case KW_ZONE:
		return b == KW_TIME;
	case KW_VARYING:
		return b == KW_CHARACTER || b == KW_CHAR || b == KW_NCHAR || b == KW_BIT;
	case KW_SECOND:
		return b == KW_INTERVAL;
	case KW_MATERIALIZED:
		return b == KW_NOT && st->before2.kw == KW_AS;
	case KW_JOIN:
		return b == KW_LEFT || b == KW_RIGHT || b == KW_FULL || b == KW_INNER || b == KW_OUTER ||
			b == KW_CROSS || b == KW_NATURAL;
	case KW_ROLLUP:
	case KW_CUBE:
		return b == KW_BY && st->before2.kw == KW_GROUP;
	case KW_SETS:
		return b == KW_GROUPING;
	case KW_SET:
		/* UPDATE t SET (a, b) = ..., ON CONFLICT ... DO UPDATE SET (a) = ... */
		return b == KW_UPDATE || (st->first == KW_UPDATE && st->paren_depth == 0 && st->set_count == 1);
	default:
		return false;
	}
}

/* WITH name (columns) AS (...): a list of names, not a call. */
static bool
cte_columns(const SqlScan *st)
{
	if (st->before.kw == KW_WITH)
		return true;
	if (st->before.kw == KW_RECURSIVE && st->before2.kw == KW_WITH)
		return true;
	return st->before.kind == SQLTOK_COMMA && st->first == KW_WITH && st->paren_depth == 0 && !st->with_main;
}

static bool
is_pg_catalog(const SqlName *n)
{
	if (n->quoted)
		return n->len == strlen("pg_catalog") && memcmp(n->s, "pg_catalog", n->len) == 0;
	return name_ieq(n->s, n->len, "pg_catalog");
}

/*
 * The name that ends at the last token is followed by "(": true when that
 * is no call at all, or a call of a listed built-in.
 */
static bool
paren_after_name_ok(const SqlScan *st)
{
	SqlKw kw = st->name.kw ? st->name.kw->id : KW_OTHER;

	/* OPERATOR(schema.op) names an operator, maybe a user's. */
	if (st->parts == 1 && kw == KW_OPERATOR)
		return false;
	/* ::numeric(10,2), CAST(x AS varchar(20)), AS t(a, b), INTO s.t (a, b) */
	if (st->before.kind == SQLTOK_CAST || st->before.kw == KW_AS || st->before.kw == KW_INTO)
		return true;
	/* OVER (...), FILTER (...), an alias's column list: not calls. */
	if (ends_operand(st->before.kind))
		return true;
	/* (expr).name( */
	if (st->before.kind == SQLTOK_DOT)
		return false;
	if (st->parts == 1) {
		if (st->name.kw && (st->name.kw->flags & SQLKW_SYNTAX))
			return true;
		if (st->name.kw && keyword_takes_paren(st, kw))
			return true;
		/* TABLESAMPLE method (...): a handler, C code that takes internal. */
		if (st->before.kw == KW_TABLESAMPLE)
			return true;
		if (cte_columns(st))
			return true;
		return function_listed(&st->name);
	}
	return st->parts == 2 && is_pg_catalog(&st->qualifier) && function_listed(&st->name);
}

static void
scan_reset_statement(SqlScan *st)
{
	memset(st, 0, sizeof(*st));
}

/* Extends or restarts the dotted name with tok. */
static void
scan_track_name(SqlScan *st, const SqlTok *tok)
{
	if (tok->kind == SQLTOK_IDENT || tok->kind == SQLTOK_QIDENT) {
		SqlName n = {tok->s, tok->len, tok->kind == SQLTOK_QIDENT, tok->kw};

		if (st->after_dot) {
			if (st->parts < SQLSCAN_MAX_PARTS)
				st->parts++;
			st->qualifier = st->name;
		} else {
			st->parts = 1;
			st->before = st->prev;
			st->before2 = st->prev2;
		}
		st->name = n;
		st->after_dot = false;
	} else if (tok->kind == SQLTOK_DOT && st->parts > 0 && !st->after_dot) {
		st->after_dot = true;
	} else {
		st->parts = 0;
		st->after_dot = false;
	}
}

/* One token of the current statement; false when the statement fails. */
static bool
scan_token(SqlScan *st, const SqlTok *tok)
{
	SqlKw kw = tok->kw ? tok->kw->id : KW_OTHER;

	if ((tok->kind == SQLTOK_IDENT || tok->kind == SQLTOK_QIDENT) && names_temp(tok))
		return false;
	if (st->need_do) {
		if (kw != KW_DO)
			return false;
		st->need_do = false;
	}
	if (tok->kind == SQLTOK_SEMI) {
		if (st->paren_depth != 0 || st->bracket_depth != 0)
			return false;
		scan_reset_statement(st);
		return true;
	}
	if (!st->started) {
		if (!tok->kw || !(tok->kw->flags & SQLKW_STATEMENT))
			return false;
		st->started = true;
		st->first = kw;
	}
	switch (tok->kind) {
	case SQLTOK_LPAREN:
		if (st->parts > 0 && !st->after_dot && !paren_after_name_ok(st))
			return false;
		/*
		 * ON CONFLICT (target) DO ...: only the DO after the ')' tells it
		 * from a join condition ON conflict(x).  A target with WHERE is
		 * refused with it.
		 */
		if (st->parts == 1 && st->name.kw && st->name.kw->id == KW_CONFLICT && st->before.kw == KW_ON) {
			if (st->conflict_open)
				return false;
			st->conflict_open = true;
			st->conflict_depth = st->paren_depth;
		}
		/* WITH a AS (...) (SELECT ...): the main statement in parentheses. */
		if (st->first == KW_WITH && st->paren_depth == 0 && st->prev.kind != SQLTOK_IDENT &&
		    st->prev.kind != SQLTOK_QIDENT)
			st->with_main = true;
		if (++st->paren_depth > SQLSCAN_MAX_DEPTH)
			return false;
		break;
	case SQLTOK_RPAREN:
		if (--st->paren_depth < 0)
			return false;
		if (st->conflict_open && st->paren_depth == st->conflict_depth) {
			st->conflict_open = false;
			st->need_do = true;
		}
		break;
	case SQLTOK_LBRACKET:
		if (++st->bracket_depth > SQLSCAN_MAX_DEPTH)
			return false;
		break;
	case SQLTOK_RBRACKET:
		if (--st->bracket_depth < 0)
			return false;
		break;
	case SQLTOK_IDENT:
		if (st->paren_depth == 0 && kw == KW_SET && st->set_count < 2)
			st->set_count++;
		if (st->paren_depth == 0 && tok->kw && (tok->kw->flags & SQLKW_MAIN) && st->prev.kind != SQLTOK_NONE)
			st->with_main = true;
		break;
	default:
		break;
	}
	scan_track_name(st, tok);
	st->prev2 = st->prev;
	st->prev.kind = tok->kind;
	st->prev.kw = kw;
	return true;
}

bool
sql_leaves_session_alone(const char *sql, size_t len)
{
	SqlLexer lx;
	SqlScan st;
	SqlTok tok;

	if (len == 0)
		return true;
	/* The server reads a query up to its NUL: the bytes after one are not what it runs. */
	if (memchr(sql, '\0', len) != NULL)
		return false;
	lx.p = (const unsigned char *) sql;
	lx.end = lx.p + len;
	lx.mode = SQLLEX_STRICT;
	lx.seen = 0;
	scan_reset_statement(&st);
	for (;;) {
		if (!lex_next(&lx, &tok))
			return false;
		if (tok.kind == SQLTOK_EOF)
			break;
		if (!scan_token(&st, &tok))
			return false;
	}
	return st.paren_depth == 0 && st.bracket_depth == 0 && !st.need_do;
}

/*
 * sql_each_custom_setting: the same lexer, and a second small pass over its
 * tokens that looks for SET and RESET at the start of a statement and for
 * set_config( followed by a literal anywhere.  Here the safe side is the
 * other one: a name reported in vain costs one current_setting() call, a
 * name missed is a setting lost.  So where the lexer cannot know how the
 * server splits the text (standard_conforming_strings, a client-only
 * encoding), the text is read once more in each way that would split it
 * differently, and the names of every reading are reported.  A reading that
 * the lexer cannot finish ends there: the server rejects such a text as a
 * whole, before running any of it.
 */

/* A custom setting's name as it is read, NUL-terminated in buf. */
typedef struct SettingName {
	char buf[SQL_SETTING_NAME_MAX + 1];
	size_t len;
	unsigned parts;
	bool bad; /* too long, or a part that cannot be in one */
} SettingName;

/* Where the SET or RESET at the start of a statement is. */
typedef enum SettingPhase {
	SETTING_STATEMENT_START, /* the next token starts a statement */
	SETTING_AFTER_SET,       /* SET or RESET: SESSION, LOCAL or the name next */
	SETTING_AFTER_MODIFIER,  /* SET SESSION or SET LOCAL: a '.' makes it the name */
	SETTING_PART,            /* the name so far ends with '.': a part next */
	SETTING_AFTER_PART,      /* after a part: '.' or the end of the name */
	SETTING_OTHER,           /* nothing to look at before the next ';' */
} SettingPhase;

/* How much of "set_config ( 'name' ," has been seen. */
typedef enum SetConfigStep {
	SET_CONFIG_NONE,
	SET_CONFIG_NAME,    /* set_config */
	SET_CONFIG_PAREN,   /* set_config ( */
	SET_CONFIG_LITERAL, /* set_config ( 'name': a ',' or '::' next */
} SetConfigStep;

typedef struct SettingScan {
	SqlSettingFn fn;
	void *arg;
	SettingPhase phase;
	bool reset;       /* the statement is RESET, not SET */
	SettingName name; /* after SET or RESET */
	SetConfigStep set_config;
	SettingName literal; /* set_config's first argument */
} SettingScan;

static void
setting_name_clear(SettingName *n)
{
	n->len = 0;
	n->parts = 0;
	n->bad = false;
	n->buf[0] = '\0';
}

static void
setting_name_append(SettingName *n, unsigned char c)
{
	if (n->len >= SQL_SETTING_NAME_MAX) {
		n->bad = true;
		return;
	}
	n->buf[n->len++] = (char) c;
}

/*
 * Adds a name token as the next part: an unquoted one folded to lower case,
 * a quoted one as it is, "" read as one quote.  U&"..." would need its
 * escapes decoded, and "" names nothing: such a name is skipped.
 */
static void
setting_name_add_part(SettingName *n, const SqlTok *tok)
{
	if (n->parts > 0)
		setting_name_append(n, '.');
	n->parts++;
	if (tok->kind == SQLTOK_IDENT) {
		for (size_t i = 0; i < tok->len; i++)
			setting_name_append(n, ascii_lower(tok->s[i]));
		return;
	}
	if (tok->unicode || tok->len == 0)
		n->bad = true;
	for (size_t i = 0; i < tok->len; i++) {
		setting_name_append(n, tok->s[i]);
		/* The lexer only lets a quote through doubled. */
		if (tok->s[i] == '"')
			i++;
	}
}

/*
 * The contents of a '...' literal (or an E'...' one), folded to lower case,
 * when they are a dotted name of unquoted parts.  A doubled quote, a
 * backslash or anything else that is not in a name makes it no name.
 */
static bool
setting_name_from_literal(SettingName *n, const SqlTok *tok)
{
	const unsigned char *s = tok->s;
	const unsigned char *end = tok->s + tok->len;
	bool part_start = true;

	setting_name_clear(n);
	if (s < end && (*s == 'e' || *s == 'E'))
		s++;
	/* Numbers and $$ literals; the lexer ends a quoted one with its quote. */
	if (s >= end || *s != '\'' || end - s < 2)
		return false;
	s++;
	end--;
	for (; s < end; s++) {
		unsigned char c = *s;

		if (c == '.') {
			if (part_start)
				return false;
			part_start = true;
		} else if (part_start ? is_ident_start(c) : is_ident_cont(c)) {
			if (part_start)
				n->parts++;
			part_start = false;
		} else {
			return false;
		}
		setting_name_append(n, ascii_lower(c));
	}
	return !part_start;
}

/* Calls back with the name when it is a custom setting's. */
static void
setting_report(const SettingScan *ss, SettingName *n)
{
	if (n->bad || n->parts < 2)
		return;
	n->buf[n->len] = '\0';
	ss->fn(n->buf, ss->arg);
}

static bool
tok_is_word(const SqlTok *tok, const char *word)
{
	return tok->kind == SQLTOK_IDENT && name_ieq(tok->s, tok->len, word);
}

/* set_config ( 'name' , ...: the first argument is the name. */
static void
setting_scan_set_config(SettingScan *ss, const SqlTok *tok)
{
	SetConfigStep next = SET_CONFIG_NONE;

	switch (ss->set_config) {
	case SET_CONFIG_NAME:
		if (tok->kind == SQLTOK_LPAREN)
			next = SET_CONFIG_PAREN;
		break;
	case SET_CONFIG_PAREN:
		if (tok->kind == SQLTOK_LITERAL && setting_name_from_literal(&ss->literal, tok))
			next = SET_CONFIG_LITERAL;
		break;
	case SET_CONFIG_LITERAL:
		/* Not "'app.' || x": that name is longer than the literal. */
		if (tok->kind == SQLTOK_COMMA || tok->kind == SQLTOK_CAST)
			setting_report(ss, &ss->literal);
		break;
	case SET_CONFIG_NONE:
		break;
	}
	/*
	 * Whatever qualifies it: pg_catalog.set_config is the built-in, and
	 * another schema's set_config most likely wraps it.
	 */
	if (next == SET_CONFIG_NONE &&
	    (tok_is_word(tok, "set_config") ||
	     (tok->kind == SQLTOK_QIDENT && !tok->unicode && tok->len == strlen("set_config") &&
	      memcmp(tok->s, "set_config", tok->len) == 0)))
		next = SET_CONFIG_NAME;
	ss->set_config = next;
}

/*
 * SET [SESSION | LOCAL] name {TO | = | FROM CURRENT} ... and RESET name, as
 * the first token of a statement.  Any ';' ends a statement here, even in
 * parentheses: at worst a name is reported in vain.
 */
static void
setting_scan_statement(SettingScan *ss, const SqlTok *tok)
{
	bool name_tok = tok->kind == SQLTOK_IDENT || tok->kind == SQLTOK_QIDENT;

	switch (ss->phase) {
	case SETTING_STATEMENT_START:
		ss->phase = SETTING_OTHER;
		if (tok_is_word(tok, "set") || tok_is_word(tok, "reset")) {
			ss->reset = tok_is_word(tok, "reset");
			setting_name_clear(&ss->name);
			ss->phase = SETTING_AFTER_SET;
		}
		break;
	case SETTING_AFTER_SET:
		ss->phase = SETTING_OTHER;
		if (name_tok) {
			setting_name_add_part(&ss->name, tok);
			ss->phase = SETTING_AFTER_PART;
			/* SET session.x = 1 names session.x: only the '.' tells. */
			if (!ss->reset && (tok_is_word(tok, "session") || tok_is_word(tok, "local")))
				ss->phase = SETTING_AFTER_MODIFIER;
		}
		break;
	case SETTING_AFTER_MODIFIER:
		if (tok->kind == SQLTOK_DOT) {
			ss->phase = SETTING_PART;
		} else if (name_tok) {
			setting_name_clear(&ss->name);
			setting_name_add_part(&ss->name, tok);
			ss->phase = SETTING_AFTER_PART;
		} else {
			ss->phase = SETTING_OTHER;
		}
		break;
	case SETTING_PART:
		ss->phase = SETTING_OTHER;
		if (name_tok) {
			setting_name_add_part(&ss->name, tok);
			ss->phase = SETTING_AFTER_PART;
		}
		break;
	case SETTING_AFTER_PART:
		if (tok->kind == SQLTOK_DOT) {
			ss->phase = SETTING_PART;
			break;
		}
		ss->phase = SETTING_OTHER;
		if (ss->reset ? (tok->kind == SQLTOK_SEMI || tok->kind == SQLTOK_EOF)
			      : (tok_is_word(tok, "to") || tok_is_word(tok, "from") ||
				 (tok->kind == SQLTOK_OP && tok->s[0] == '=')))
			setting_report(ss, &ss->name);
		break;
	case SETTING_OTHER:
		break;
	}
	if (tok->kind == SQLTOK_SEMI)
		ss->phase = SETTING_STATEMENT_START;
}

/* One reading of the text in the lexer's mode; returns what its lexer saw. */
static unsigned
setting_scan_text(const unsigned char *sql, size_t len, unsigned mode, SqlSettingFn fn, void *arg)
{
	SqlLexer lx = {sql, sql + len, mode, 0};
	SettingScan ss;
	SqlTok tok;

	memset(&ss, 0, sizeof(ss));
	ss.fn = fn;
	ss.arg = arg;
	ss.phase = SETTING_STATEMENT_START;
	ss.set_config = SET_CONFIG_NONE;
	do {
		if (!lex_next(&lx, &tok))
			break;
		setting_scan_set_config(&ss, &tok);
		setting_scan_statement(&ss, &tok);
	} while (tok.kind != SQLTOK_EOF);
	return lx.seen;
}

/* "set" in any case: SET, RESET and set_config all contain it. */
static bool
mentions_set(const unsigned char *s, size_t len)
{
	for (size_t i = 0; len >= 3 && i <= len - 3; i++) {
		if ((s[i] | 0x20) == 's' && (s[i + 1] | 0x20) == 'e' && (s[i + 2] | 0x20) == 't')
			return true;
	}
	return false;
}

void
sql_each_custom_setting(const char *sql, size_t len, SqlSettingFn fn, void *arg)
{
	/*
	 * The readings in order, each after those that lack one of its flags.
	 * A reading lexes the text exactly as the same reading without a flag
	 * unless that one met a spot the flag reads differently: so a reading
	 * is needed only when an earlier one saw such a spot for each flag.
	 */
	static const unsigned modes[] = {
		0,
		SQLLEX_SCS_OFF,
		SQLLEX_MB_PAIRS,
		SQLLEX_SCS_OFF | SQLLEX_MB_PAIRS,
	};
	const unsigned char *text = (const unsigned char *) sql;
	const unsigned char *nul;
	unsigned seen = 0;

	if (!mentions_set(text, len))
		return;
	/* The server reads a query up to its NUL. */
	nul = memchr(text, '\0', len);
	if (nul)
		len = (size_t) (nul - text);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		unsigned need = 0;

		if (modes[i] & SQLLEX_SCS_OFF)
			need |= SQLLEX_SAW_PLAIN_BACKSLASH;
		if (modes[i] & SQLLEX_MB_PAIRS)
			need |= SQLLEX_SAW_TRAIL_BYTE;
		if ((seen & need) == need)
			seen |= setting_scan_text(text, len, modes[i], fn, arg);
	}
}
