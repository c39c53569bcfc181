/*
 * The cutover's database work, one blocking function per phase.  They run on
 * the cutover's worker thread (never on the proxy's event loop) and talk to
 * the clusters with their own libpq connections.  A direction says which
 * cluster the clients leave: the source on a cutover, the target on a
 * rollback.  Each function logs what failed once and writes a one-line
 * reason for the report into err.
 */
#ifndef PGHANDOFF_CUTOVER_DB_STEPS_H
#define PGHANDOFF_CUTOVER_DB_STEPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "config/config.h"

typedef struct CutoverDirection {
	const Config *config;
	bool reverse;        /* target -> source: a rollback */
	const char *subject; /* for logs */
} CutoverDirection;

/*
 * One connection per database to each side, opened before the pause and
 * kept, so the paused phases spend no time logging in.  The side clients go
 * to is exempt from a fence (a rollback writes sequences into the source).
 */
typedef struct CutoverLinks {
	int n;
	struct ReplConn *from;
	struct ReplConn *to;
} CutoverLinks;

bool steps_connect(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
	__attribute__((warn_unused_result));
void steps_disconnect(CutoverLinks *links);

/* What phase 1 found, for the report and the dry run. */
typedef struct PrecheckFacts {
	int64_t max_lag_bytes; /* the largest of the databases' lags */
	int tables;            /* tables compared */
} PrecheckFacts;

/*
 * Phase 1: for every database the follower is streaming (its slot active),
 * the lag is at most max_lag, and every table has the same columns on both
 * sides.
 */
bool steps_precheck(const CutoverDirection *dir, CutoverLinks *links, PrecheckFacts *facts, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Per database of the side left (hidden[i] for databases[i]): whether it has
 * triggers, rules, or views, defaults, checks, policies, operators or casts
 * that run code of its own or change session state; see cutover/hidden.c.
 * The custom settings its functions set by name are appended to settings,
 * space-separated.
 */
bool steps_find_hidden_code(const CutoverDirection *dir, CutoverLinks *links, bool *hidden, StrBuf *settings, char *err,
			    size_t errlen) __attribute__((warn_unused_result));

/*
 * Per database (sql[i] for databases[i], replaced): the Query a new
 * connection on the side clients go to runs before the pause, or NULL; see
 * cutover/warm.c.  A database whose tables could not be listed gets NULL
 * and a warning.  False only when out of memory.
 */
bool steps_warm_sql(const CutoverDirection *dir, CutoverLinks *links, char **sql) __attribute__((warn_unused_result));

/*
 * What default_transaction_read_only a fresh login to a database of the
 * side clients go to starts with once the switch is done (cutover/login.c):
 * all for roles without a setting of their own, values[i] for roles[i].
 */
typedef struct ReadOnlyDefaults {
	bool all;
	int nroles;
	char **roles;
	bool *values;
} ReadOnlyDefaults;

/* defaults[i] for databases[i], zeroed by the caller; read on the side clients go to. */
bool steps_read_only_defaults(const CutoverDirection *dir, CutoverLinks *links, ReadOnlyDefaults *defaults, char *err,
			      size_t errlen) __attribute__((warn_unused_result));
/* The value for a login as role. */
bool steps_read_only_default(const ReadOnlyDefaults *defaults, const char *role);
void steps_read_only_defaults_free(ReadOnlyDefaults *defaults, int n);

/*
 * Phase 3: every database left becomes read-only for new sessions, and the
 * sessions connected around the proxy are terminated; pids[i] lists the
 * proxy's own backends in database i as an SQL array literal ("{1,2}").
 */
bool steps_fence(const CutoverDirection *dir, CutoverLinks *links, char *const *pids, int *terminated, char *err,
		 size_t errlen) __attribute__((warn_unused_result));
/* The side clients go to takes writes (a rollback fenced it, or the cutover before it). */
bool steps_unfence_arrival(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
	__attribute__((warn_unused_result));
/* Undoes steps_fence, on connections of its own. */
bool steps_unfence(const CutoverDirection *dir, char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Phase 4: a marker written on every database left; returns once the other
 * side's replication origin has passed every marker.  lsns gets
 * "db=LSN ..." for the report.
 */
bool steps_catch_up(const CutoverDirection *dir, CutoverLinks *links, char *lsns, size_t lsnslen, char *err,
		    size_t errlen) __attribute__((warn_unused_result));

/*
 * A rollback: the forward follower has passed everything on the source, the
 * reverse follower's writes included (it skips them by their origin, which
 * must still exist when it reads them: the reverse objects are dropped
 * after this).
 */
bool steps_catch_up_other_way(const CutoverDirection *dir, CutoverLinks *links, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Phase 5: every sequence's value and is_called, to the side clients go to;
 * and the last diff of the large objects (replicator/largeobj.h).
 */
bool steps_sequences(const CutoverDirection *dir, CutoverLinks *links, int *count, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Dry run: how long the pause's diff of the large objects takes, and how many objects it would copy or unlink. */
bool steps_measure_large_objects(const CutoverDirection *dir, CutoverLinks *links, double *seconds, int *differing,
				 char *err, size_t errlen) __attribute__((warn_unused_result));

/* Phase 6: row counts of every table compared, in parallel. */
bool steps_verify_counts(const CutoverDirection *dir, int *tables, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Dry run: the time a marker takes from the source to the target's origin, in seconds. */
bool steps_measure_catch_up(const CutoverDirection *dir, CutoverLinks *links, double *seconds, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
