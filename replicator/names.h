/*
 * The names pghandoff gives the objects it makes for a migration: a
 * publication and a slot on the source, a replication origin on the target;
 * for the way back after a cutover, a publication and a slot on the target
 * and an origin on the source.  Slots and origins are per cluster, so with
 * several databases each one's names must differ from every other's; the
 * functions here make them so, and find the pairs that would still collide.
 * No libpq in here: the names are unit-tested on their own.
 */
#ifndef PGHANDOFF_REPLICATOR_NAMES_H
#define PGHANDOFF_REPLICATOR_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

/* Each fits PostgreSQL's NAMEDATALEN (63 bytes and a NUL). */
typedef struct ReplNames {
	char publication[64];         /* on the source database */
	char slot[64];                /* on the source cluster */
	char origin[64];              /* on the target cluster */
	char reverse_publication[64]; /* on the target database */
	char reverse_slot[64];        /* on the target cluster */
	char reverse_origin[64];      /* on the source cluster */
} ReplNames;

/* The longest database part of a name: 63 bytes less the slot_name prefix and "_rollback". */
#define REPL_NAMES_DB_PART_MAX 32

/*
 * The part of the names that tells one database from another: the name
 * itself when it is 1 to 32 lower-case letters, digits and underscores not
 * ending in "_rollback" (so such names read as they always did); otherwise up to 23 characters of it
 * with anything else lower-cased or turned into '_', then '_' and 8 hex
 * digits of a hash of the exact name ("Ab" -> "ab_4cd553ea").  buf holds at
 * least REPL_NAMES_DB_PART_MAX + 1 bytes.
 */
void replicate_names_db_part(const char *dbname, char *buf, size_t len);

/*
 * The names for db under config.  With one database, slot_name and
 * publication_name as they are; with several, each slot and origin carries
 * the database part.  The same database always gets the same names.
 */
void replicate_names(const Config *config, const DatabaseMapping *db, ReplNames *names);

/*
 * Looks for two of config's databases whose slots or origins (forward or
 * reverse) would have the same name, or one name used both ways.  Returns
 * true, with a sentence naming both databases and the name in buf, at the
 * first collision found; false when every name is unique.
 */
bool replicate_names_collision(const Config *config, char *buf, size_t len);

#endif
