/*
 * Slot, origin and publication names per database (names.h).  Names are
 * derived, never stored: a restarted follower, `replicate --drop`, the
 * cutover and `check` all find the objects by computing the names again, so
 * a given database's names must never depend on anything but its own name
 * and the configured slot_name and publication_name.
 */
#include "replicator/names.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Room for the readable prefix before "_" and the 8 hex digits of the hash. */
#define DB_PART_PREFIX_MAX (REPL_NAMES_DB_PART_MAX - 9)

/* 32-bit FNV-1a: stable across builds and platforms, and easy to compute anywhere else. */
static uint32_t
name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char) *s;
		h *= 16777619u;
	}
	return h;
}

#define ROLLBACK_SUFFIX "_rollback"

/*
 * A name used as it is.  One that ends like a rollback name is not: database
 * x's rollback slot would otherwise be database x_rollback's forward slot.
 */
static bool
is_plain(const char *s)
{
	size_t i, n = strlen(s), k = strlen(ROLLBACK_SUFFIX);

	if (n == 0 || n > REPL_NAMES_DB_PART_MAX || (n >= k && strcmp(s + n - k, ROLLBACK_SUFFIX) == 0))
		return false;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

void
replicate_names_db_part(const char *dbname, char *buf, size_t len)
{
	char prefix[DB_PART_PREFIX_MAX + 1];
	size_t i, n = 0;

	if (is_plain(dbname)) {
		snprintf(buf, len, "%s", dbname);
		return;
	}
	/*
	 * Lower-casing and replacing is what makes "Ab" and "ab", or "a-b" and
	 * "a_b", look alike, and cutting what makes long names alike: the hash
	 * of the exact bytes keeps them apart.  Only ASCII is lower-cased, so the
	 * result never depends on the locale.
	 */
	for (i = 0; dbname[i] && n < DB_PART_PREFIX_MAX; i++) {
		char c = dbname[i];

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			prefix[n++] = c;
		else if (c >= 'A' && c <= 'Z')
			prefix[n++] = (char) (c - 'A' + 'a');
		else
			prefix[n++] = '_';
	}
	prefix[n] = '\0';
	snprintf(buf, len, "%s_%08x", prefix, (unsigned) name_hash(dbname));
}

void
replicate_names(const Config *config, const DatabaseMapping *db, ReplNames *names)
{
	char part[REPL_NAMES_DB_PART_MAX + 1];

	snprintf(names->publication, sizeof(names->publication), "%s", config->replication.publication_name);
	/* Publications are per database: their names need no database part. */
	snprintf(names->reverse_publication, sizeof(names->reverse_publication), "%.54s" ROLLBACK_SUFFIX,
		 config->replication.publication_name);
	if (config->ndatabases == 1) {
		snprintf(names->slot, sizeof(names->slot), "%s", config->replication.slot_name);
		snprintf(names->reverse_slot, sizeof(names->reverse_slot), "%.54s" ROLLBACK_SUFFIX,
			 config->replication.slot_name);
	} else {
		/* The base cut short so that the database part and the suffix always fit in 63 bytes. */
		replicate_names_db_part(db->name, part, sizeof(part));
		snprintf(names->slot, sizeof(names->slot), "%.30s_%s", config->replication.slot_name, part);
		snprintf(names->reverse_slot, sizeof(names->reverse_slot), "%.21s_%s" ROLLBACK_SUFFIX,
			 config->replication.slot_name, part);
	}
	/* Origins are per cluster too; each is named like its direction's slot, unique already. */
	snprintf(names->origin, sizeof(names->origin), "%s", names->slot);
	snprintf(names->reverse_origin, sizeof(names->reverse_origin), "%s", names->reverse_slot);
}

/* The names that share a namespace: slots (either cluster, in case both are one) and origins. */
static void
names_list(const ReplNames *n, const char *list[4], const char *what[4])
{
	list[0] = n->slot;
	what[0] = "slot";
	list[1] = n->reverse_slot;
	what[1] = "rollback slot";
	list[2] = n->origin;
	what[2] = "origin";
	list[3] = n->reverse_origin;
	what[3] = "rollback origin";
}

bool
replicate_names_collision(const Config *config, char *buf, size_t len)
{
	int i, j, a, b;

	for (i = 0; i < config->ndatabases; i++) {
		ReplNames ni;
		const char *li[4], *wi[4];

		replicate_names(config, &config->databases[i], &ni);
		names_list(&ni, li, wi);
		for (j = i; j < config->ndatabases; j++) {
			ReplNames nj;
			const char *lj[4], *wj[4];

			replicate_names(config, &config->databases[j], &nj);
			names_list(&nj, lj, wj);
			for (a = 0; a < 4; a++) {
				/* Slots with slots and origins with origins: the two namespaces. */
				for (b = a & 2; b < (a & 2) + 2; b++) {
					if (i == j && b <= a)
						continue;
					if (strcmp(li[a], lj[b]) != 0)
						continue;
					if (i == j)
						snprintf(buf, len, "database %s: its %s and %s are both named %s",
							 config->databases[i].name, wi[a], wj[b], li[a]);
					else
						snprintf(buf, len,
							 "databases %s and %s: the %s of one and the %s of the "
							 "other are both named %s",
							 config->databases[i].name, config->databases[j].name, wi[a],
							 wj[b], li[a]);
					return true;
				}
			}
		}
	}
	return false;
}
