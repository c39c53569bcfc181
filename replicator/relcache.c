/*
 * The relation cache: a hash table of copied Relation messages keyed by
 * relid.  Tables come and go rarely and are never forgotten within a
 * session (pgoutput has no "drop relation" message), so the table only
 * grows: no tombstones, and a probe stops at the first empty slot.
 */
#include "replicator/relcache.h"

#include <stdlib.h>
#include <string.h>

/* The first table's size; it doubles whenever it would be more than 3/4 full. */
#define RELCACHE_INITIAL_SLOTS 64

void
relcache_init(RelCache *cache)
{
	cache->slots = NULL;
	cache->nslots = 0;
	cache->count = 0;
}

/*
 * MurmurHash3's finalizer: every bit of the relid reaches the low bits the
 * mask keeps, so relids that differ only in high bits do not pile up.
 */
static size_t
relid_hash(uint32_t relid, size_t nslots)
{
	uint32_t h = relid;

	h ^= h >> 16;
	h *= UINT32_C(0x85ebca6b);
	h ^= h >> 13;
	h *= UINT32_C(0xc2b2ae35);
	h ^= h >> 16;
	return (size_t) h & (nslots - 1);
}

/* The slot holding relid, or the empty slot where it would go. */
static size_t
find_slot(RelCacheEntry *const *slots, size_t nslots, uint32_t relid)
{
	size_t i = relid_hash(relid, nslots);

	while (slots[i] && slots[i]->relid != relid)
		i = (i + 1) & (nslots - 1);
	return i;
}

/* Doubles the table (or makes the first one); entries move, their addresses do not. */
static bool
grow(RelCache *cache)
{
	size_t nslots = cache->nslots ? cache->nslots * 2 : RELCACHE_INITIAL_SLOTS;
	RelCacheEntry **slots;

	if (nslots < cache->nslots || nslots > SIZE_MAX / sizeof(*slots))
		return false;
	slots = calloc(nslots, sizeof(*slots));
	if (!slots)
		return false;
	for (size_t i = 0; i < cache->nslots; i++) {
		if (cache->slots[i])
			slots[find_slot(slots, nslots, cache->slots[i]->relid)] = cache->slots[i];
	}
	free(cache->slots);
	cache->slots = slots;
	cache->nslots = nslots;
	return true;
}

/* Copies s to *dst and returns where the next string goes. */
static char *
put_string(char *dst, const char *s, const char **out)
{
	size_t n = strlen(s) + 1;

	memcpy(dst, s, n);
	*out = dst;
	return dst + n;
}

/*
 * Fills a fresh entry's contents from rel: one block for every string and
 * one array for the columns, so an entry costs three allocations whatever
 * its width.
 */
static bool
copy_relation(RelCacheEntry *e, const PgoutputRelation *rel)
{
	size_t total = strlen(rel->nspname) + 1 + strlen(rel->relname) + 1;
	char *p;

	for (int i = 0; i < rel->natts; i++)
		total += strlen(rel->cols[i].name) + 1;
	e->relid = rel->relid;
	e->replident = rel->replident;
	e->natts = rel->natts;
	e->cols = NULL;
	e->strings = malloc(total);
	if (!e->strings)
		return false;
	if (rel->natts > 0) {
		e->cols = calloc((size_t) rel->natts, sizeof(*e->cols));
		if (!e->cols) {
			free(e->strings);
			e->strings = NULL;
			return false;
		}
	}
	p = put_string(e->strings, rel->nspname, &e->nspname);
	p = put_string(p, rel->relname, &e->relname);
	for (int i = 0; i < rel->natts; i++) {
		RelCacheColumn *c = &e->cols[i];

		p = put_string(p, rel->cols[i].name, &c->name);
		c->type_oid = rel->cols[i].type_oid;
		c->typmod = rel->cols[i].typmod;
		c->key = (rel->cols[i].flags & PGOUTPUT_RELATION_COLUMN_KEY) != 0;
	}
	return true;
}

static bool
same_columns(const RelCacheEntry *a, const RelCacheEntry *b)
{
	if (a->natts != b->natts)
		return false;
	for (int i = 0; i < a->natts; i++) {
		const RelCacheColumn *x = &a->cols[i], *y = &b->cols[i];

		if (x->type_oid != y->type_oid || x->typmod != y->typmod || x->key != y->key ||
		    strcmp(x->name, y->name) != 0)
			return false;
	}
	return true;
}

bool
relcache_update_copy(RelCache *cache, const PgoutputRelation *rel, bool *columns_changed)
{
	RelCacheEntry fresh;
	RelCacheEntry *e;
	size_t slot;

	/* Build the copy first, so a failure leaves the cache untouched. */
	if (!copy_relation(&fresh, rel))
		return false;
	if (cache->nslots > 0) {
		slot = find_slot(cache->slots, cache->nslots, rel->relid);
		e = cache->slots[slot];
		if (e) {
			if (columns_changed)
				*columns_changed = !same_columns(e, &fresh);
			free(e->cols);
			free(e->strings);
			*e = fresh;
			return true;
		}
	}
	e = malloc(sizeof(*e));
	if (!e || ((cache->count + 1) * 4 > cache->nslots * 3 && !grow(cache))) {
		free(e);
		free(fresh.cols);
		free(fresh.strings);
		return false;
	}
	*e = fresh;
	cache->slots[find_slot(cache->slots, cache->nslots, rel->relid)] = e;
	cache->count++;
	if (columns_changed)
		*columns_changed = true;
	return true;
}

const RelCacheEntry *
relcache_lookup(const RelCache *cache, uint32_t relid)
{
	if (cache->nslots == 0)
		return NULL;
	return cache->slots[find_slot(cache->slots, cache->nslots, relid)];
}

void
relcache_free(RelCache *cache)
{
	for (size_t i = 0; i < cache->nslots; i++) {
		RelCacheEntry *e = cache->slots[i];

		if (e) {
			free(e->cols);
			free(e->strings);
			free(e);
		}
	}
	free(cache->slots);
	relcache_init(cache);
}
