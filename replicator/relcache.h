/*
 * What the replicator knows about each published table, from pgoutput's
 * Relation messages: the server sends one before the first change of a
 * table in a session and again after its schema changes, and the changes
 * themselves name the table only by relid.  Unlike the decoder, this keeps
 * copies (hence relcache_update_copy), since a Relation message's buffer is
 * gone long before the changes that need it arrive.
 */
#ifndef PGHANDOFF_REPLICATOR_RELCACHE_H
#define PGHANDOFF_REPLICATOR_RELCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replicator/pgoutput.h"

typedef struct RelCacheColumn {
	const char *name;
	uint32_t type_oid;
	int32_t typmod;
	bool key; /* part of the replica identity */
} RelCacheColumn;

/*
 * One table.  An entry stays at the same address for the cache's lifetime,
 * even when a new Relation message replaces its contents; the strings and
 * columns it points to are replaced with it.
 */
typedef struct RelCacheEntry {
	uint32_t relid;
	const char *nspname; /* never "": "pg_catalog" as the decoder resolved it */
	const char *relname;
	uint8_t replident; /* PGOUTPUT_REPLIDENT_* */
	int natts;
	RelCacheColumn *cols; /* natts of them; NULL when natts is 0 */
	char *strings;        /* one block holding every name above */
} RelCacheEntry;

/* Open addressing on relid with linear probing; nslots is a power of two. */
typedef struct RelCache {
	RelCacheEntry **slots; /* NULL = empty; entries are never removed */
	size_t nslots;
	size_t count;
} RelCache;

void relcache_init(RelCache *cache);

/*
 * Stores a copy of rel, replacing what was known about rel->relid.
 * *columns_changed (if not NULL) says whether the column list differs from
 * the one known before (names, types, typmods, key flags, order); it is
 * true for a relid seen for the first time.  A rename or a replica identity
 * change alone shows in the entry but not in the flag.  Returns false only
 * when out of memory, and then the cache is as it was.
 */
bool relcache_update_copy(RelCache *cache, const PgoutputRelation *rel, bool *columns_changed)
	__attribute__((warn_unused_result));

/* The entry for relid, or NULL when no Relation message has named it. */
const RelCacheEntry *relcache_lookup(const RelCache *cache, uint32_t relid);

/* Frees every entry; the cache is empty and usable again afterwards. */
void relcache_free(RelCache *cache);

#endif /* PGHANDOFF_REPLICATOR_RELCACHE_H */
