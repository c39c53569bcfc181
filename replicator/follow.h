/*
 * Which way a follower streams between the objects named in names.h, and
 * the loop that follows it.
 */
#ifndef PGHANDOFF_REPLICATOR_FOLLOW_H
#define PGHANDOFF_REPLICATOR_FOLLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"
#include "replicator/names.h"
#include "replicator/replicate.h"

/*
 * Which way a follower streams.  Forward: from the slot on the source into
 * the target, before the cutover and after it.  Reverse: after a cutover,
 * from the reverse slot on the target back into the source, so that a
 * rollback finds the source up to date.  Both run at once, so each skips
 * the transactions the other applied (skip_origin), or they would bounce
 * between the clusters forever.
 */
typedef struct ReplDirection {
	bool reverse;
	const ServerConfig *from; /* the cluster with the slot and the publication */
	const char *from_db;
	const ServerConfig *to; /* the cluster changes are applied to, with the origin */
	const char *to_db;
	const char *slot;
	const char *publication;
	const char *origin;
	const char *skip_origin;   /* the other direction's origin, on the from cluster */
	const char *drop_command;  /* what removes this direction's slot, for warnings */
	struct ReplStatus *status; /* where progress is published (forward only), or NULL */
} ReplDirection;

/*
 * The cluster a direction reads from (the source, forward; the target in
 * reverse) and the one it applies to, and db's name on each: what a cutover
 * going the same way fences, catches up and switches to.
 */
const ServerConfig *replicate_from_server(const Config *config, bool reverse);
const ServerConfig *replicate_to_server(const Config *config, bool reverse);
const char *replicate_from_db(const DatabaseMapping *db, bool reverse);
const char *replicate_to_db(const DatabaseMapping *db, bool reverse);

/* Fills dir for one database; it points into config, db and names. */
void replicate_direction(const Config *config, const DatabaseMapping *db, const ReplNames *names, bool reverse,
			 ReplDirection *dir);

/*
 * A plain connection to the database changes are applied to.  In reverse
 * that is the source, which the cutover fenced read-only: this session
 * alone writes again.
 */
bool replicate_connect_apply(const ReplDirection *dir, ReplConn *conn, const char *subject)
	__attribute__((warn_unused_result));

/*
 * Streams dir from start_lsn until stopped, retrying whatever ends a stream
 * with backoff from the origin's progress.  repl (a replication connection
 * to the from side) and apply (from replicate_connect_apply) are connected
 * on entry and closed on return.  Exit status.
 */
int replicate_follow(const Config *config, const ReplDirection *dir, ReplConn *repl, ReplConn *apply,
		     uint64_t start_lsn, const char *subject);

#endif
