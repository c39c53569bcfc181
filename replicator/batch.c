/*
 * Net-effect batching of keyed tables.
 *
 * Each table has a hash of its pending rows by key.  A row's pending change
 * is one of: INSERT (the row did not exist before the batch), UPDATE (it
 * did, and still does), DELETE (it did, and does not), or REPLACE (it did,
 * was deleted, and was inserted again).  Folding a new change into it:
 *
 *   pending \ new   INSERT     UPDATE            DELETE
 *   none            INSERT     UPDATE            DELETE
 *   INSERT          -          INSERT (merged)   none
 *   UPDATE          -          UPDATE (merged)   DELETE
 *   DELETE          REPLACE    -                 -
 *   REPLACE         -          REPLACE (merged)  DELETE
 *
 * ("-" cannot happen on a keyed table; it is refused.)  Merged means the new
 * values win column by column, and an unchanged TOASTed column ('u') keeps
 * the value already pending, or stays unchanged.  A key update is never
 * batched: the applier flushes and applies it alone.
 *
 * At flush, per table: deletes (DELETE and REPLACE), then updates grouped by
 * which columns they set, then inserts (INSERT and REPLACE), so the final
 * state is the one the changes produce in order.
 */
#include "replicator/batch.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum RowOp {
	ROW_NONE,
	ROW_INSERT,
	ROW_UPDATE,
	ROW_DELETE,
	ROW_REPLACE,
} RowOp;

typedef struct RowValue {
	int32_t len;  /* -1: NULL */
	bool present; /* false: unchanged TOASTed value, keep the target's */
	char *data;   /* NUL-terminated copy, NULL for NULL or absent */
} RowValue;

typedef struct Row {
	struct Row *next; /* in its hash bucket */
	RowOp op;
	uint32_t hash;
	char *key; /* the key columns' values, length-prefixed */
	size_t keylen;
	RowValue *values; /* natts; for a DELETE only the key columns are present */
} Row;

struct RelBatch {
	RelBatch *next;
	const RelCacheEntry *rel;
	Row **buckets;
	size_t nbuckets;
	size_t nrows;
};

#define INITIAL_BUCKETS 1024

void
batch_init(Batch *batch)
{
	memset(batch, 0, sizeof(*batch));
}

static void
free_row(Row *row, int natts)
{
	int i;

	for (i = 0; i < natts; i++)
		free(row->values[i].data);
	free(row->values);
	free(row->key);
	free(row);
}

static void
free_rel(RelBatch *rb)
{
	size_t b;

	for (b = 0; b < rb->nbuckets; b++) {
		while (rb->buckets[b]) {
			Row *next = rb->buckets[b]->next;

			free_row(rb->buckets[b], rb->rel->natts);
			rb->buckets[b] = next;
		}
	}
	free(rb->buckets);
	free(rb);
}

static void
clear_rels(Batch *batch)
{
	while (batch->rels) {
		RelBatch *next = batch->rels->next;

		free_rel(batch->rels);
		batch->rels = next;
	}
	batch->nchanges = batch->nrows = batch->bytes = 0;
}

void
batch_free(Batch *batch)
{
	int i;

	clear_rels(batch);
	for (i = 0; i < batch->ntemps; i++)
		free(batch->temps[i]);
	free(batch->temps);
	batch->temps = NULL;
	batch->ntemps = 0;
}

bool
batch_relation_ok(const RelCacheEntry *rel)
{
	int i;

	if (rel->replident == PGOUTPUT_REPLIDENT_FULL || rel->replident == PGOUTPUT_REPLIDENT_NOTHING)
		return false;
	for (i = 0; i < rel->natts; i++)
		if (rel->cols[i].key)
			return true;
	return false;
}

static uint32_t
hash_bytes(const char *p, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (uint8_t) p[i];
		h *= 16777619u;
	}
	return h;
}

/* The key of tup: each key column's length and bytes. */
static char *
make_key(const RelCacheEntry *rel, const PgoutputTuple *tup, size_t *len)
{
	size_t total = 0, off = 0;
	char *key;
	int i;

	for (i = 0; i < rel->natts && i < tup->ncols; i++)
		if (rel->cols[i].key)
			total += sizeof(uint32_t) + tup->cols[i].len + 1;
	key = malloc(total ? total : 1);
	if (!key)
		return NULL;
	for (i = 0; i < rel->natts && i < tup->ncols; i++) {
		uint32_t n = tup->cols[i].len;

		if (!rel->cols[i].key)
			continue;
		memcpy(key + off, &n, sizeof(n));
		off += sizeof(n);
		key[off++] = (char) tup->cols[i].kind;
		if (n)
			memcpy(key + off, tup->cols[i].value, n);
		off += n;
	}
	*len = off;
	return key;
}

static RelBatch *
rel_batch(Batch *batch, const RelCacheEntry *rel)
{
	RelBatch *rb;

	for (rb = batch->rels; rb; rb = rb->next)
		if (rb->rel == rel)
			return rb;
	rb = calloc(1, sizeof(RelBatch));
	if (!rb)
		return NULL;
	rb->buckets = calloc(INITIAL_BUCKETS, sizeof(Row *));
	if (!rb->buckets) {
		free(rb);
		return NULL;
	}
	rb->nbuckets = INITIAL_BUCKETS;
	rb->rel = rel;
	rb->next = batch->rels;
	batch->rels = rb;
	return rb;
}

static bool
grow(RelBatch *rb)
{
	size_t n = rb->nbuckets * 2, b;
	Row **buckets = calloc(n, sizeof(Row *));

	if (!buckets)
		return false;
	for (b = 0; b < rb->nbuckets; b++) {
		while (rb->buckets[b]) {
			Row *row = rb->buckets[b];

			rb->buckets[b] = row->next;
			row->next = buckets[row->hash & (n - 1)];
			buckets[row->hash & (n - 1)] = row;
		}
	}
	free(rb->buckets);
	rb->buckets = buckets;
	rb->nbuckets = n;
	return true;
}

/* Finds the pending row with tup's key, or makes an empty one (op ROW_NONE). */
static Row *
lookup_row(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *tup)
{
	RelBatch *rb = rel_batch(batch, rel);
	size_t keylen;
	char *key;
	uint32_t h;
	Row *row;

	if (!rb || !(key = make_key(rel, tup, &keylen)))
		return NULL;
	h = hash_bytes(key, keylen);
	for (row = rb->buckets[h & (rb->nbuckets - 1)]; row; row = row->next) {
		if (row->hash == h && row->keylen == keylen && memcmp(row->key, key, keylen) == 0) {
			free(key);
			return row;
		}
	}
	if (rb->nrows >= rb->nbuckets && !grow(rb)) {
		free(key);
		return NULL;
	}
	row = calloc(1, sizeof(Row));
	if (!row || !(row->values = calloc((size_t) rel->natts, sizeof(RowValue)))) {
		free(row);
		free(key);
		return NULL;
	}
	row->key = key;
	row->keylen = keylen;
	row->hash = h;
	row->next = rb->buckets[h & (rb->nbuckets - 1)];
	rb->buckets[h & (rb->nbuckets - 1)] = row;
	rb->nrows++;
	batch->nrows++;
	batch->bytes += (int64_t) (sizeof(Row) + keylen + sizeof(RowValue) * (size_t) rel->natts);
	return row;
}

/* Folds tup's values into row: present columns replace, 'u' columns keep what is there. */
static bool
merge_values(Batch *batch, Row *row, const RelCacheEntry *rel, const PgoutputTuple *tup, bool keys_only)
{
	int i;

	for (i = 0; i < rel->natts && i < tup->ncols; i++) {
		const PgoutputColumn *c = &tup->cols[i];
		RowValue *v = &row->values[i];

		if (keys_only && !rel->cols[i].key)
			continue;
		if (c->kind == PGOUTPUT_COLUMN_UNCHANGED)
			continue;
		free(v->data);
		v->data = NULL;
		v->present = true;
		if (c->kind == PGOUTPUT_COLUMN_NULL) {
			v->len = -1;
			continue;
		}
		v->data = malloc((size_t) c->len + 1);
		if (!v->data)
			return false;
		memcpy(v->data, c->value, c->len);
		v->data[c->len] = '\0';
		v->len = (int32_t) c->len;
		batch->bytes += c->len + 1;
	}
	return true;
}

static void
clear_values(Row *row, int natts)
{
	int i;

	for (i = 0; i < natts; i++) {
		free(row->values[i].data);
		row->values[i].data = NULL;
		row->values[i].present = false;
		row->values[i].len = 0;
	}
}

/* A row of a keyless table: inserts only, never looked up again. */
static Row *
append_row(Batch *batch, const RelCacheEntry *rel)
{
	RelBatch *rb = rel_batch(batch, rel);
	Row *row;
	size_t b;

	if (!rb)
		return NULL;
	row = calloc(1, sizeof(Row));
	if (!row || !(row->values = calloc((size_t) rel->natts, sizeof(RowValue)))) {
		free(row);
		return NULL;
	}
	b = rb->nrows++ & (rb->nbuckets - 1);
	row->next = rb->buckets[b];
	rb->buckets[b] = row;
	batch->nrows++;
	batch->bytes += (int64_t) (sizeof(Row) + sizeof(RowValue) * (size_t) rel->natts);
	return row;
}

bool
batch_insert(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *tup)
{
	Row *row = batch_relation_ok(rel) ? lookup_row(batch, rel, tup) : append_row(batch, rel);

	if (!row)
		return false;
	batch->nchanges++;
	switch (row->op) {
	case ROW_NONE:
		row->op = ROW_INSERT;
		break;
	case ROW_DELETE:
		row->op = ROW_REPLACE;
		clear_values(row, rel->natts);
		break;
	default:
		/* An insert over a pending row: the source's unique key forbids it. */
		log_warning("batch", "insert into %s.%s over a pending row; keeping the newer", rel->nspname,
			    rel->relname);
		row->op = row->op == ROW_INSERT ? ROW_INSERT : ROW_REPLACE;
		clear_values(row, rel->natts);
		break;
	}
	return merge_values(batch, row, rel, tup, false);
}

bool
batch_update(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *tup)
{
	Row *row = lookup_row(batch, rel, tup);

	if (!row)
		return false;
	batch->nchanges++;
	if (row->op == ROW_NONE)
		row->op = ROW_UPDATE;
	else if (row->op == ROW_DELETE)
		row->op = ROW_REPLACE; /* cannot happen on a keyed table; the safe reading */
	return merge_values(batch, row, rel, tup, false);
}

bool
batch_delete(Batch *batch, const RelCacheEntry *rel, const PgoutputTuple *key)
{
	Row *row = lookup_row(batch, rel, key);

	if (!row)
		return false;
	batch->nchanges++;
	if (row->op == ROW_INSERT) {
		/* Inserted and deleted within the batch: nothing to write. */
		clear_values(row, rel->natts);
		row->op = ROW_NONE;
		return true;
	}
	row->op = ROW_DELETE;
	clear_values(row, rel->natts);
	return merge_values(batch, row, rel, key, true);
}

/* COPY text format: backslash escapes for the characters COPY gives meaning to. */
static void
append_copy_value(StrBuf *sb, const RowValue *v)
{
	const char *p;

	if (v->len < 0) {
		strbuf_append(sb, "\\N");
		return;
	}
	for (p = v->data; *p; p++) {
		switch (*p) {
		case '\\':
			strbuf_append(sb, "\\\\");
			break;
		case '\t':
			strbuf_append(sb, "\\t");
			break;
		case '\n':
			strbuf_append(sb, "\\n");
			break;
		case '\r':
			strbuf_append(sb, "\\r");
			break;
		default:
			strbuf_append_char(sb, *p);
		}
	}
}

/* Sends rows through COPY sql FROM STDIN; cols says which columns, in order. */
static bool
copy_rows(ReplConn *target, const char *sql, RelBatch *rb, RowOp want1, RowOp want2, const bool *cols, const char *mask,
	  const char *subject)
{
	const RelCacheEntry *rel = rb->rel;
	PGresult *res = PQexec(target->conn, sql);
	StrBuf line;
	size_t b;
	bool ok = true;

	if (PQresultStatus(res) != PGRES_COPY_IN) {
		log_error(subject, "%s: %s", sql, PQresultErrorMessage(res));
		PQclear(res);
		return false;
	}
	PQclear(res);
	strbuf_init(&line);
	for (b = 0; b < rb->nbuckets && ok; b++) {
		const Row *row;

		for (row = rb->buckets[b]; row && ok; row = row->next) {
			bool first = true;
			int i;

			if (row->op != want1 && row->op != want2)
				continue;
			if (mask) {
				for (i = 0; i < rel->natts; i++)
					if ((mask[i] == 's') != (row->values[i].present && !rel->cols[i].key))
						break;
				if (i < rel->natts)
					continue;
			}
			for (i = 0; i < rel->natts; i++) {
				if (!cols[i])
					continue;
				if (!first)
					strbuf_append_char(&line, '\t');
				append_copy_value(&line, &row->values[i]);
				first = false;
			}
			strbuf_append_char(&line, '\n');
			if (line.len >= 64 * 1024) {
				ok = !line.failed && PQputCopyData(target->conn, line.data, (int) line.len) == 1;
				strbuf_reset(&line);
			}
		}
	}
	if (ok && line.len > 0)
		ok = !line.failed && PQputCopyData(target->conn, line.data, (int) line.len) == 1;
	strbuf_free(&line);
	if (PQputCopyEnd(target->conn, ok ? NULL : "pghandoff could not send the rows") != 1)
		ok = false;
	res = PQgetResult(target->conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		log_error(subject, "%s: %s", sql, PQresultErrorMessage(res));
		ok = false;
	}
	PQclear(res);
	while ((res = PQgetResult(target->conn)) != NULL)
		PQclear(res);
	return ok;
}

/* A temporary table with the given columns of rel, made once per session. */
static bool
temp_table(Batch *batch, ReplConn *target, const RelCacheEntry *rel, const bool *cols, const char *tag, char *name,
	   size_t namelen, const char *subject)
{
	char key[64];
	StrBuf sql;
	char **grown;
	bool first = true, ok;
	int i;

	snprintf(name, namelen, "pgh_%u_%08x", rel->relid, hash_bytes(tag, strlen(tag)));
	snprintf(key, sizeof(key), "%s", name);
	for (i = 0; i < batch->ntemps; i++)
		if (strcmp(batch->temps[i], key) == 0)
			return true;
	strbuf_init(&sql);
	/* One left by a relation whose columns changed since has the old shape. */
	strbuf_appendf(&sql, "DROP TABLE IF EXISTS pg_temp.%s", name);
	ok = repl_exec(target, strbuf_str(&sql));
	strbuf_reset(&sql);
	strbuf_appendf(&sql, "CREATE TEMP TABLE %s ON COMMIT DELETE ROWS AS SELECT ", name);
	for (i = 0; i < rel->natts; i++) {
		if (!cols[i])
			continue;
		strbuf_append(&sql, first ? "" : ", ");
		repl_append_ident(&sql, target->conn, rel->cols[i].name);
		first = false;
	}
	strbuf_append(&sql, " FROM ");
	repl_append_qualified(&sql, target->conn, rel->nspname, rel->relname);
	strbuf_append(&sql, " WITH NO DATA");
	ok = ok && !sql.failed && repl_exec(target, strbuf_str(&sql));
	strbuf_free(&sql);
	if (!ok)
		return false;
	grown = realloc(batch->temps, sizeof(char *) * (size_t) (batch->ntemps + 1));
	if (!grown || !(grown[batch->ntemps] = strdup(key))) {
		if (grown)
			batch->temps = grown;
		log_error(subject, "out of memory");
		return false;
	}
	batch->temps = grown;
	batch->ntemps++;
	return true;
}

static void
append_key_join(StrBuf *sql, PGconn *conn, const RelCacheEntry *rel, const char *tmp)
{
	bool first = true;
	int i;

	for (i = 0; i < rel->natts; i++) {
		if (!rel->cols[i].key)
			continue;
		strbuf_append(sql, first ? " WHERE " : " AND ");
		strbuf_append(sql, "t.");
		repl_append_ident(sql, conn, rel->cols[i].name);
		strbuf_appendf(sql, " = %s.", tmp);
		repl_append_ident(sql, conn, rel->cols[i].name);
		first = false;
	}
}

static bool
flush_deletes(Batch *batch, ReplConn *target, RelBatch *rb, const char *subject)
{
	const RelCacheEntry *rel = rb->rel;
	bool cols[PGOUTPUT_MAX_COLUMNS];
	char tmp[64];
	StrBuf sql;
	bool ok;
	int i;

	for (i = 0; i < rel->natts; i++)
		cols[i] = rel->cols[i].key;
	if (!temp_table(batch, target, rel, cols, "keys", tmp, sizeof(tmp), subject))
		return false;
	strbuf_init(&sql);
	strbuf_appendf(&sql, "COPY %s FROM STDIN", tmp);
	ok = copy_rows(target, strbuf_str(&sql), rb, ROW_DELETE, ROW_REPLACE, cols, NULL, subject);
	strbuf_reset(&sql);
	strbuf_append(&sql, "DELETE FROM ");
	repl_append_qualified(&sql, target->conn, rel->nspname, rel->relname);
	strbuf_appendf(&sql, " t USING %s", tmp);
	append_key_join(&sql, target->conn, rel, tmp);
	ok = ok && repl_exec(target, strbuf_str(&sql));
	strbuf_reset(&sql);
	strbuf_appendf(&sql, "TRUNCATE %s", tmp);
	ok = ok && repl_exec(target, strbuf_str(&sql));
	strbuf_free(&sql);
	return ok;
}

/* Updates that set the same columns go together: one temporary table and one UPDATE each. */
static bool
flush_updates(Batch *batch, ReplConn *target, RelBatch *rb, const char *subject)
{
	const RelCacheEntry *rel = rb->rel;
	char **masks = NULL;
	int nmasks = 0, m, i;
	size_t b;
	bool ok = true;

	for (b = 0; b < rb->nbuckets; b++) {
		const Row *row;

		for (row = rb->buckets[b]; row; row = row->next) {
			char *mask;

			if (row->op != ROW_UPDATE)
				continue;
			mask = malloc((size_t) rel->natts + 1);
			if (!mask) {
				ok = false;
				goto done;
			}
			for (i = 0; i < rel->natts; i++)
				mask[i] = row->values[i].present && !rel->cols[i].key ? 's' : '-';
			mask[rel->natts] = '\0';
			for (m = 0; m < nmasks; m++)
				if (strcmp(masks[m], mask) == 0)
					break;
			if (m < nmasks) {
				free(mask);
				continue;
			}
			{
				char **grown = realloc(masks, sizeof(char *) * (size_t) (nmasks + 1));

				if (!grown) {
					free(mask);
					ok = false;
					goto done;
				}
				masks = grown;
				masks[nmasks++] = mask;
			}
		}
	}
	for (m = 0; m < nmasks && ok; m++) {
		bool cols[PGOUTPUT_MAX_COLUMNS];
		char tmp[64];
		StrBuf sql;
		bool first = true;

		for (i = 0; i < rel->natts; i++)
			cols[i] = rel->cols[i].key || masks[m][i] == 's';
		if (!temp_table(batch, target, rel, cols, masks[m], tmp, sizeof(tmp), subject)) {
			ok = false;
			break;
		}
		strbuf_init(&sql);
		strbuf_appendf(&sql, "COPY %s FROM STDIN", tmp);
		ok = copy_rows(target, strbuf_str(&sql), rb, ROW_UPDATE, ROW_UPDATE, cols, masks[m], subject);
		strbuf_reset(&sql);
		strbuf_append(&sql, "UPDATE ");
		repl_append_qualified(&sql, target->conn, rel->nspname, rel->relname);
		strbuf_append(&sql, " t SET ");
		for (i = 0; i < rel->natts; i++) {
			if (masks[m][i] != 's')
				continue;
			strbuf_append(&sql, first ? "" : ", ");
			repl_append_ident(&sql, target->conn, rel->cols[i].name);
			strbuf_appendf(&sql, " = %s.", tmp);
			repl_append_ident(&sql, target->conn, rel->cols[i].name);
			first = false;
		}
		strbuf_appendf(&sql, " FROM %s", tmp);
		append_key_join(&sql, target->conn, rel, tmp);
		if (!first)
			ok = ok && repl_exec(target, strbuf_str(&sql));
		strbuf_reset(&sql);
		strbuf_appendf(&sql, "TRUNCATE %s", tmp);
		ok = ok && repl_exec(target, strbuf_str(&sql));
		strbuf_free(&sql);
	}
done:
	for (m = 0; m < nmasks; m++)
		free(masks[m]);
	free(masks);
	return ok;
}

static bool
flush_inserts(ReplConn *target, RelBatch *rb, const char *subject)
{
	const RelCacheEntry *rel = rb->rel;
	bool cols[PGOUTPUT_MAX_COLUMNS];
	StrBuf sql;
	bool ok;
	int i;

	strbuf_init(&sql);
	strbuf_append(&sql, "COPY ");
	repl_append_qualified(&sql, target->conn, rel->nspname, rel->relname);
	strbuf_append(&sql, " (");
	for (i = 0; i < rel->natts; i++) {
		cols[i] = true;
		strbuf_append(&sql, i ? ", " : "");
		repl_append_ident(&sql, target->conn, rel->cols[i].name);
	}
	strbuf_append(&sql, ") FROM STDIN");
	ok = !sql.failed && copy_rows(target, strbuf_str(&sql), rb, ROW_INSERT, ROW_REPLACE, cols, NULL, subject);
	strbuf_free(&sql);
	return ok;
}

bool
batch_flush(Batch *batch, ReplConn *target, const char *subject)
{
	RelBatch *rb;
	bool ok = true;

	for (rb = batch->rels; rb && ok; rb = rb->next) {
		size_t b;
		int counts[5] = {0};

		for (b = 0; b < rb->nbuckets; b++)
			for (const Row *row = rb->buckets[b]; row; row = row->next)
				counts[row->op]++;
		if (counts[ROW_DELETE] + counts[ROW_REPLACE] > 0)
			ok = flush_deletes(batch, target, rb, subject);
		if (ok && counts[ROW_UPDATE] > 0)
			ok = flush_updates(batch, target, rb, subject);
		if (ok && counts[ROW_INSERT] + counts[ROW_REPLACE] > 0)
			ok = flush_inserts(target, rb, subject);
	}
	if (ok && batch->nchanges > 0)
		log_debug(subject, "batch: %lld change(s) applied as %lld row(s)", (long long) batch->nchanges,
			  (long long) batch->nrows);
	clear_rels(batch);
	return ok;
}

void
batch_forget_relation(Batch *batch, uint32_t relid)
{
	char prefix[32];
	size_t plen;
	int i, n = 0;

	snprintf(prefix, sizeof(prefix), "pgh_%u_", relid);
	plen = strlen(prefix);
	/* The temporary tables stay (unused) until the session ends; new ones get new names. */
	for (i = 0; i < batch->ntemps; i++) {
		if (strncmp(batch->temps[i], prefix, plen) == 0)
			free(batch->temps[i]);
		else
			batch->temps[n++] = batch->temps[i];
	}
	batch->ntemps = n;
}
