/*
 * Splitting a query string into statements and rewriting one captured
 * schema change for replay: see ddlsql.h for what and why.
 */
#include "replicator/ddlsql.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A statement with more tokens is not rewritten (DDL_SQL_NOT_FOUND); its tokens grow to this. */
#define MAX_TOKENS (1 << 20)

typedef enum TokKind {
	TOK_WORD,   /* an unquoted identifier or keyword */
	TOK_QIDENT, /* "a quoted identifier" */
	TOK_STRING, /* a string or dollar-quoted literal */
	TOK_OTHER,  /* numbers, operators, punctuation */
} TokKind;

typedef struct Tok {
	TokKind kind;
	size_t start, end; /* byte range in the query */
	int depth;         /* parentheses around it */
	char c;            /* TOK_OTHER: its first byte */
} Tok;

/* One statement: its tokens, comments and the closing semicolon left out. */
typedef struct Stmt {
	Tok *toks;
	int ntoks;
	bool truncated; /* more than MAX_TOKENS tokens */
} Stmt;

typedef struct Lexer {
	const char *s;
	size_t len;
	size_t pos;
} Lexer;

static bool
is_ident_start(unsigned char c)
{
	return isalpha(c) || c == '_' || c >= 0x80;
}

static bool
is_ident_cont(unsigned char c)
{
	return isalnum(c) || c == '_' || c == '$' || c >= 0x80;
}

/* Skips whitespace and comments; false at the end of the text. */
static bool
skip_space(Lexer *lx)
{
	while (lx->pos < lx->len && lx->s[lx->pos] != '\0') {
		char c = lx->s[lx->pos];

		if (isspace((unsigned char) c)) {
			lx->pos++;
		} else if (c == '-' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '-') {
			while (lx->pos < lx->len && lx->s[lx->pos] != '\n')
				lx->pos++;
		} else if (c == '/' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '*') {
			int nest = 0;

			while (lx->pos < lx->len) {
				if (lx->s[lx->pos] == '/' && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '*') {
					nest++;
					lx->pos += 2;
				} else if (lx->s[lx->pos] == '*' && lx->pos + 1 < lx->len &&
					   lx->s[lx->pos + 1] == '/') {
					lx->pos += 2;
					if (--nest == 0)
						break;
				} else {
					lx->pos++;
				}
			}
		} else {
			return true;
		}
	}
	return false;
}

/* From an opening quote at pos: past the closing one (doubled quotes stay inside; backslashes too if escapes). */
static void
skip_quoted(Lexer *lx, char q, bool escapes)
{
	lx->pos++;
	while (lx->pos < lx->len) {
		char c = lx->s[lx->pos];

		if (escapes && c == '\\') {
			lx->pos += 2;
			continue;
		}
		lx->pos++;
		if (c == q) {
			if (lx->pos < lx->len && lx->s[lx->pos] == q) {
				lx->pos++;
				continue;
			}
			return;
		}
	}
	lx->pos = lx->len;
}

/* At a '$': the length of a dollar-quote delimiter ($$ or $tag$) starting here, or 0. */
static size_t
dollar_delim(const Lexer *lx)
{
	size_t i = lx->pos + 1;

	if (i < lx->len && lx->s[i] == '$')
		return 2;
	if (i >= lx->len || !is_ident_start((unsigned char) lx->s[i]))
		return 0;
	while (i < lx->len &&
	       (isalnum((unsigned char) lx->s[i]) || lx->s[i] == '_' || (unsigned char) lx->s[i] >= 0x80))
		i++;
	return i < lx->len && lx->s[i] == '$' ? i + 1 - lx->pos : 0;
}

/* The next token into *t; false at the end of the text. */
static bool
next_token(Lexer *lx, Tok *t)
{
	unsigned char c;
	size_t d;

	if (!skip_space(lx))
		return false;
	t->start = lx->pos;
	c = (unsigned char) lx->s[lx->pos];
	t->c = (char) c;
	if ((c == 'e' || c == 'E') && lx->pos + 1 < lx->len && lx->s[lx->pos + 1] == '\'') {
		lx->pos++;
		skip_quoted(lx, '\'', true);
		t->kind = TOK_STRING;
	} else if ((c == 'u' || c == 'U') && lx->pos + 2 < lx->len && lx->s[lx->pos + 1] == '&' &&
		   (lx->s[lx->pos + 2] == '\'' || lx->s[lx->pos + 2] == '"')) {
		char q = lx->s[lx->pos + 2];

		lx->pos += 2;
		skip_quoted(lx, q, false);
		t->kind = q == '"' ? TOK_QIDENT : TOK_STRING;
	} else if (is_ident_start(c)) {
		while (lx->pos < lx->len && is_ident_cont((unsigned char) lx->s[lx->pos]))
			lx->pos++;
		/* B'..', X'..', N'..': the prefix and the string are one literal. */
		if (lx->pos - t->start == 1 && lx->pos < lx->len && lx->s[lx->pos] == '\'' && strchr("bBxXnN", c)) {
			skip_quoted(lx, '\'', false);
			t->kind = TOK_STRING;
		} else {
			t->kind = TOK_WORD;
		}
	} else if (c == '\'') {
		skip_quoted(lx, '\'', false);
		t->kind = TOK_STRING;
	} else if (c == '"') {
		skip_quoted(lx, '"', false);
		t->kind = TOK_QIDENT;
	} else if (c == '$' && (d = dollar_delim(lx)) > 0) {
		const char *delim = lx->s + lx->pos;
		size_t i;

		t->kind = TOK_STRING;
		for (i = lx->pos + d; i + d <= lx->len; i++)
			if (lx->s[i] == '$' && memcmp(lx->s + i, delim, d) == 0)
				break;
		lx->pos = i + d <= lx->len ? i + d : lx->len;
	} else {
		lx->pos++;
		t->kind = TOK_OTHER;
	}
	return true;
}

static bool
word_is(const char *s, const Tok *t, const char *word)
{
	size_t n = strlen(word);

	return t->kind == TOK_WORD && t->end - t->start == n && strncasecmp(s + t->start, word, n) == 0;
}

/*
 * Splits the text into statements, calling fn for each non-empty one.
 * A semicolon ends a statement outside parentheses and outside a
 * BEGIN ATOMIC body (CASE ... END nests inside one, as psql counts).
 */
typedef bool (*StmtFn)(const char *s, const Stmt *st, void *arg);

static void
split(const char *s, size_t len, StmtFn fn, void *arg)
{
	Lexer lx = {s, len, 0};
	Stmt st = {NULL, 0, false};
	int depth = 0, atomic = 0, cap = 0;
	Tok t;

	for (;;) {
		bool more = next_token(&lx, &t);

		t.end = lx.pos;
		t.depth = depth;
		if (!more || (t.kind == TOK_OTHER && t.c == ';' && depth == 0 && atomic == 0)) {
			if ((st.ntoks > 0 && !fn(s, &st, arg)) || !more)
				break;
			st.ntoks = 0;
			st.truncated = false;
			continue;
		}
		if (t.kind == TOK_OTHER && t.c == '(')
			depth++;
		else if (t.kind == TOK_OTHER && t.c == ')' && depth > 0)
			t.depth = --depth;
		else if (atomic > 0 && (word_is(s, &t, "CASE") || word_is(s, &t, "BEGIN")))
			atomic++;
		else if (atomic > 0 && word_is(s, &t, "END"))
			atomic--;
		else if (word_is(s, &t, "ATOMIC") && st.ntoks > 0 && word_is(s, &st.toks[st.ntoks - 1], "BEGIN"))
			atomic = 1;
		if (st.ntoks == cap && cap < MAX_TOKENS) {
			int grown_cap = cap ? cap * 2 : 256;
			Tok *grown = realloc(st.toks, sizeof(Tok) * (size_t) grown_cap);

			if (grown) {
				st.toks = grown;
				cap = grown_cap;
			}
		}
		if (st.ntoks < cap)
			st.toks[st.ntoks++] = t;
		else
			st.truncated = true; /* out of memory, or too long */
	}
	free(st.toks);
}

/* The i-th token as a word, or "". */
static bool
tok_word(const char *s, const Stmt *st, int i, const char *word)
{
	return i < st->ntoks && word_is(s, &st->toks[i], word);
}

/* The index of the first top-level word `word` at or after from, or -1. */
static int
find_word(const char *s, const Stmt *st, int from, const char *word)
{
	for (int i = from; i < st->ntoks; i++)
		if (st->toks[i].depth == 0 && word_is(s, &st->toks[i], word))
			return i;
	return -1;
}

/* SELECT ... INTO name (not INSERT INTO, MERGE INTO): the index of its INTO, or -1. */
static int
select_into(const char *s, const Stmt *st)
{
	int i;

	if (!tok_word(s, st, 0, "SELECT") && !tok_word(s, st, 0, "WITH"))
		return -1;
	for (i = 1; i < st->ntoks; i++) {
		if (st->toks[i].depth != 0)
			continue;
		if (word_is(s, &st->toks[i], "INSERT") || word_is(s, &st->toks[i], "UPDATE") ||
		    word_is(s, &st->toks[i], "DELETE") || word_is(s, &st->toks[i], "MERGE"))
			return -1;
		if (word_is(s, &st->toks[i], "INTO"))
			return i;
	}
	return -1;
}

/*
 * Whether the statement fires event triggers: commands on objects of the
 * database, not on cluster-wide ones (roles, databases, tablespaces), which
 * fire none.  REINDEX is left out on both sides: it fires them only from
 * PostgreSQL 17 on, and the trigger does not count it.
 */
static bool
fires_event_trigger(const char *s, const Stmt *st)
{
	static const char *const shared[] = {"ROLE",   "USER",  "GROUP",        "DATABASE",  "TABLESPACE",
					     "SYSTEM", "EVENT", "SUBSCRIPTION", "PARAMETER", NULL};
	int i, on;

	if (tok_word(s, st, 0, "CREATE") || tok_word(s, st, 0, "ALTER") || tok_word(s, st, 0, "DROP")) {
		if (tok_word(s, st, 1, "USER") && tok_word(s, st, 2, "MAPPING"))
			return true;
		for (i = 0; shared[i]; i++)
			if (tok_word(s, st, 1, shared[i]))
				return false;
		return true;
	}
	if (tok_word(s, st, 0, "COMMENT") || tok_word(s, st, 0, "SECURITY")) {
		on = find_word(s, st, 1, "ON");
		for (i = 0; on >= 0 && shared[i]; i++)
			if (tok_word(s, st, on + 1, shared[i]))
				return false;
		return on >= 0;
	}
	if (tok_word(s, st, 0, "GRANT") || tok_word(s, st, 0, "REVOKE")) {
		/* Without ON it grants a role. */
		on = find_word(s, st, 1, "ON");
		for (i = 0; on >= 0 && shared[i]; i++)
			if (tok_word(s, st, on + 1, shared[i]))
				return false;
		return on >= 0;
	}
	if (tok_word(s, st, 0, "REFRESH") || tok_word(s, st, 0, "IMPORT"))
		return true;
	return select_into(s, st) >= 0;
}

/* The first word of the command tag ("ALTER" of "ALTER TABLE"), copied into buf. */
static void
tag_first_word(const char *tag, char *buf, size_t len)
{
	size_t n = strcspn(tag, " ");

	if (n >= len)
		n = len - 1;
	memcpy(buf, tag, n);
	buf[n] = '\0';
}

static void
append_range(StrBuf *out, const char *s, size_t from, size_t to)
{
	if (to > from)
		strbuf_append_len(out, s + from, to - from);
}

/* CREATE TABLE ... AS query [WITH [NO] DATA]: the structure only. */
static DdlSqlResult
rewrite_ctas(const char *s, const Stmt *st, StrBuf *out)
{
	int as = find_word(s, st, 1, "AS"), n = st->ntoks, i;

	for (i = 1; i < (as >= 0 ? as : n); i++)
		if (word_is(s, &st->toks[i], "TEMP") || word_is(s, &st->toks[i], "TEMPORARY"))
			return DDL_SQL_SKIP;
	if (n >= 3 && tok_word(s, st, n - 3, "WITH") && tok_word(s, st, n - 2, "NO") &&
	    tok_word(s, st, n - 1, "DATA")) {
		append_range(out, s, st->toks[0].start, st->toks[n - 1].end);
	} else if (n >= 2 && tok_word(s, st, n - 2, "WITH") && tok_word(s, st, n - 1, "DATA")) {
		append_range(out, s, st->toks[0].start, st->toks[n - 2].end);
		strbuf_append(out, " NO DATA");
	} else {
		append_range(out, s, st->toks[0].start, st->toks[n - 1].end);
		strbuf_append(out, " WITH NO DATA");
	}
	return DDL_SQL_OK;
}

/* SELECT ... INTO [TEMP | UNLOGGED] [TABLE] name ...: CREATE TABLE name AS SELECT ... WITH NO DATA. */
static DdlSqlResult
rewrite_select_into(const char *s, const Stmt *st, StrBuf *out)
{
	int into = select_into(s, st), i, name_start, name_end;
	bool unlogged = false;

	if (into < 0)
		return DDL_SQL_NOT_FOUND;
	i = into + 1;
	if (tok_word(s, st, i, "GLOBAL") || tok_word(s, st, i, "LOCAL"))
		i++;
	if (tok_word(s, st, i, "TEMP") || tok_word(s, st, i, "TEMPORARY"))
		return DDL_SQL_SKIP;
	if (tok_word(s, st, i, "UNLOGGED")) {
		unlogged = true;
		i++;
	}
	if (tok_word(s, st, i, "TABLE"))
		i++;
	name_start = i;
	for (;;) {
		if (i >= st->ntoks || (st->toks[i].kind != TOK_WORD && st->toks[i].kind != TOK_QIDENT))
			return DDL_SQL_NOT_FOUND;
		i++;
		if (i < st->ntoks && st->toks[i].kind == TOK_OTHER && st->toks[i].c == '.') {
			i++;
			continue;
		}
		break;
	}
	name_end = i - 1;
	strbuf_append(out, unlogged ? "CREATE UNLOGGED TABLE " : "CREATE TABLE ");
	append_range(out, s, st->toks[name_start].start, st->toks[name_end].end);
	strbuf_append(out, " AS ");
	append_range(out, s, st->toks[0].start, st->toks[into - 1].end); /* into > 0: SELECT or WITH came first */
	if (i < st->ntoks) {
		strbuf_append_char(out, ' ');
		append_range(out, s, st->toks[i].start, st->toks[st->ntoks - 1].end);
	}
	strbuf_append(out, " WITH NO DATA");
	return DDL_SQL_OK;
}

/* After a name at i (a.b."c", and a trailing * of an inheritance tree): its last token's index, or -1. */
static int
name_end(const char *s, const Stmt *st, int i)
{
	(void) s;
	for (;;) {
		if (i >= st->ntoks || (st->toks[i].kind != TOK_WORD && st->toks[i].kind != TOK_QIDENT))
			return -1;
		if (i + 2 < st->ntoks && st->toks[i + 1].kind == TOK_OTHER && st->toks[i + 1].c == '.') {
			i += 2;
			continue;
		}
		if (i + 1 < st->ntoks && st->toks[i + 1].kind == TOK_OTHER && st->toks[i + 1].c == '*')
			i++;
		return i;
	}
}

/*
 * ALTER TABLE [IF EXISTS] [ONLY] parent DETACH PARTITION child CONCURRENTLY:
 * the token indexes of the parent's and child's names (first and last), or
 * false for any other statement.
 */
static bool
detach_names(const char *s, const Stmt *st, int *parent, int *parent_end, int *child, int *child_end)
{
	int i = 2;

	if (!tok_word(s, st, 0, "ALTER") || !tok_word(s, st, 1, "TABLE") ||
	    !tok_word(s, st, st->ntoks - 1, "CONCURRENTLY"))
		return false;
	if (tok_word(s, st, i, "IF") && tok_word(s, st, i + 1, "EXISTS"))
		i += 2;
	if (tok_word(s, st, i, "ONLY"))
		i++;
	*parent = i;
	if ((*parent_end = name_end(s, st, i)) < 0)
		return false;
	i = *parent_end + 1;
	if (!tok_word(s, st, i, "DETACH") || !tok_word(s, st, i + 1, "PARTITION"))
		return false;
	*child = i + 2;
	*child_end = name_end(s, st, *child);
	return *child_end >= 0 && *child_end == st->ntoks - 2;
}

static bool
detach_concurrently(const char *s, const Stmt *st)
{
	int a, b, c, d;

	return detach_names(s, st, &a, &b, &c, &d);
}

/*
 * Everything else: as written.  CONCURRENTLY is kept for CREATE INDEX, DROP
 * INDEX and DETACH PARTITION run on their own (DDL_SQL_ALONE; the drop made
 * IF EXISTS), and removed everywhere else.
 */
static DdlSqlResult
rewrite_plain(const char *s, const Stmt *st, bool in_transaction, StrBuf *out)
{
	size_t from = st->toks[0].start;
	bool concurrent_ok = tok_word(s, st, 0, "CREATE") || tok_word(s, st, 0, "DROP") || tok_word(s, st, 0, "ALTER");
	/* CREATE [UNIQUE] INDEX CONCURRENTLY, DROP INDEX CONCURRENTLY: the words in that order, at the start. */
	int index_at = tok_word(s, st, 1, "UNIQUE") ? 2 : 1;
	bool alone = !in_transaction && tok_word(s, st, index_at, "INDEX") &&
		tok_word(s, st, index_at + 1, "CONCURRENTLY") &&
		(tok_word(s, st, 0, "CREATE") || (tok_word(s, st, 0, "DROP") && index_at == 1));
	int i;

	if (!in_transaction && detach_concurrently(s, st)) {
		append_range(out, s, from, st->toks[st->ntoks - 1].end);
		return DDL_SQL_ALONE;
	}
	if (alone) {
		int after = index_at + 2;

		append_range(out, s, from, st->toks[index_at + 1].end);
		if (tok_word(s, st, 0, "DROP") &&
		    !(tok_word(s, st, after, "IF") && tok_word(s, st, after + 1, "EXISTS")))
			strbuf_append(out, " IF EXISTS");
		if (after < st->ntoks) {
			strbuf_append_char(out, ' ');
			append_range(out, s, st->toks[after].start, st->toks[st->ntoks - 1].end);
		}
		return DDL_SQL_ALONE;
	}
	for (i = 0; i < st->ntoks; i++) {
		if (concurrent_ok && st->toks[i].depth == 0 && word_is(s, &st->toks[i], "CONCURRENTLY")) {
			append_range(out, s, from, st->toks[i].start);
			/* The space after it goes too: the statement is logged, and reads as written. */
			from = i + 1 < st->ntoks ? st->toks[i + 1].start : st->toks[i].end;
		}
	}
	append_range(out, s, from, st->toks[st->ntoks - 1].end);
	return DDL_SQL_OK;
}

typedef struct Pick {
	const char *tag;
	int ordinal;
	bool in_transaction;
	int seen; /* statements that fire event triggers, so far */
	StrBuf *out;
	DdlSqlResult result;
} Pick;

static bool
pick_one(const char *s, const Stmt *st, void *arg)
{
	Pick *p = arg;
	char first[32];
	bool select_form;

	if (!fires_event_trigger(s, st) || ++p->seen < p->ordinal)
		return true;
	if (st->truncated)
		return false; /* too long to rewrite safely: NOT_FOUND */
	/* This is the one: it must be the command the trigger named. */
	tag_first_word(p->tag, first, sizeof(first));
	select_form = strcmp(p->tag, "SELECT INTO") == 0;
	if (select_form ? select_into(s, st) < 0 : !tok_word(s, st, 0, first))
		return false; /* result stays NOT_FOUND */
	if (select_form)
		p->result = rewrite_select_into(s, st, p->out);
	else if (strcmp(p->tag, "CREATE TABLE AS") == 0)
		p->result = rewrite_ctas(s, st, p->out);
	else
		p->result = rewrite_plain(s, st, p->in_transaction, p->out);
	return false;
}

DdlSqlResult
ddlsql_statement(const char *query, size_t len, const char *tag, int ordinal, bool in_transaction, StrBuf *out)
{
	Pick p = {tag, ordinal, in_transaction, 0, out, DDL_SQL_NOT_FOUND};

	if (ordinal < 1)
		return DDL_SQL_NOT_FOUND;
	split(query, len, pick_one, &p);
	return p.result;
}

static bool
count_one(const char *s, const Stmt *st, void *arg)
{
	(void) s;
	(void) st;
	(*(int *) arg)++;
	return true;
}

int
ddlsql_count_statements(const char *query, size_t len)
{
	int n = 0;

	split(query, len, count_one, &n);
	return n;
}

typedef struct Detach {
	StrBuf *parent, *child, *finalize;
	bool found;
} Detach;

static bool
detach_one(const char *s, const Stmt *st, void *arg)
{
	Detach *d = arg;
	int parent, parent_end, child, child_end;

	if (d->found || st->truncated || !detach_names(s, st, &parent, &parent_end, &child, &child_end))
		return false;
	d->found = true;
	append_range(d->parent, s, st->toks[parent].start, st->toks[parent_end].end);
	append_range(d->child, s, st->toks[child].start, st->toks[child_end].end);
	append_range(d->finalize, s, st->toks[0].start, st->toks[child_end].end);
	strbuf_append(d->finalize, " FINALIZE");
	return false;
}

bool
ddlsql_detach(const char *statement, size_t len, StrBuf *parent, StrBuf *child, StrBuf *finalize)
{
	Detach d = {parent, child, finalize, false};

	split(statement, len, detach_one, &d);
	return d.found;
}
