/*
 * The target's schema: copied with pg_dump (schema = copy) or checked
 * against the source's (schema = none).
 */
#ifndef PGHANDOFF_REPLICATOR_SCHEMA_H
#define PGHANDOFF_REPLICATOR_SCHEMA_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "replicator/conn.h"

/* Finds tool in pg_bindir or on PATH and checks it is at least min_major. */
bool schema_find_tool(const Config *config, const char *tool, int min_major, char *path, size_t len,
		      const char *subject) __attribute__((warn_unused_result));
/* pg_dump --schema-only of the source database into a custom-format archive at path. */
bool schema_dump(const Config *config, const DatabaseMapping *db, int source_major, const char *path,
		 const char *subject) __attribute__((warn_unused_result));
/*
 * A file (/tmp/pghandoff-KIND-XXXXXX) that lives only as long as its
 * descriptor, even after kill -9: it is unlinked at once, and the tools
 * started here (pg_dump, pg_restore and its workers) reach it at path,
 * /proc/self/fd/N, through the inherited descriptor.  Returns the
 * descriptor, or -1 (logged).
 */
int schema_anonymous_file(const char *kind, char *path, size_t len, const char *subject)
	__attribute__((warn_unused_result));
/* pg_restore --list of one section of that archive, into a string to free. */
bool schema_list(const Config *config, const char *path, const char *section, char **toc, const char *subject)
	__attribute__((warn_unused_result));
/*
 * pg_restore of one section ("pre-data", "post-data") of that archive into
 * the target database; or, with use_list (made by schema_list of the
 * section), the entries that list keeps.
 */
bool schema_restore(const Config *config, const DatabaseMapping *db, const char *path, const char *section,
		    const char *use_list, int jobs, const char *subject) __attribute__((warn_unused_result));
/* roles = copy: pg_dumpall --roles-only; roles that exist on the target are kept. */
bool schema_copy_roles(const Config *config, int source_major, const char *subject) __attribute__((warn_unused_result));
/*
 * schema = none: every source table's columns exist on the target with the
 * same types.  via_root (partitions published through their root tables):
 * root and plain tables only, since the target may partition differently.
 */
bool schema_verify(ReplConn *source, ReplConn *target, bool via_root, const char *subject)
	__attribute__((warn_unused_result));

#endif
