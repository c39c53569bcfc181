/*
 * Preflight checks: everything that would make a migration fail or lose data,
 * found before anything is changed.  Used by `pghandoff check` and, later, by
 * the replicator before it creates anything on either cluster.
 */
#ifndef PGHANDOFF_REPLICATOR_PREFLIGHT_H
#define PGHANDOFF_REPLICATOR_PREFLIGHT_H

#include <stdbool.h>

#include "config/config.h"

typedef enum CheckStatus {
	CHECK_PASS = 0,
	CHECK_WARN,
	CHECK_FAIL,
} CheckStatus;

/* Called once per check, as it completes; hint is NULL for a PASS. */
typedef void (*CheckEmit)(void *arg, CheckStatus status, const char *message, const char *hint);

typedef struct Preflight {
	const Config *config;
	CheckEmit emit;
	void *arg;
	/*
	 * Compare the target's tables with the source's (`pghandoff check`); the
	 * follower, which makes them or checks them its own way, does not.
	 */
	bool compare_tables;
	int npass;
	int nwarn;
	int nfail;
} Preflight;

/*
 * Tables (partitions excepted: their root stands for them), one row each:
 * the qualified name and its columns "name type, ..." sorted by name.  The
 * cutover compares the same lists before it switches.
 */
extern const char preflight_sql_table_columns[];

/*
 * A condition on pg_class c: the table has no replica identity, so its
 * UPDATEs and DELETEs cannot be published (or found again on the target).
 */
#define PREFLIGHT_SQL_NO_REPLICA_IDENTITY \
	"(c.relreplident = 'n' " \
	" OR (c.relreplident = 'd' AND NOT EXISTS " \
	"     (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) " \
	" OR (c.relreplident = 'i' AND NOT EXISTS " \
	"     (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))"

/* Runs every check; true when none failed. */
bool preflight_run(Preflight *pf) __attribute__((warn_unused_result));

const char *check_status_name(CheckStatus status);

#endif
