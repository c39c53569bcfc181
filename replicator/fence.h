/*
 * The cutover's fence as the follower sees it.  A cutover fences the side
 * clients leave: new sessions there start read-only, the sessions around
 * the proxy are ended, and once they are gone the WAL position of that
 * moment is recorded in the database's own settings (FENCE_SETTING, with
 * ALTER DATABASE; cutover/db/steps.c).  A session that asks for a read-write
 * transaction can still commit there; the follower refuses to carry such a
 * transaction to the live side: before applying the first change of a
 * transaction it asks whether the side it reads was fenced before that
 * transaction committed.
 */
#ifndef PGHANDOFF_REPLICATOR_FENCE_H
#define PGHANDOFF_REPLICATOR_FENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "replicator/conn.h"

/* The database setting that holds the fence's LSN while the fence stands. */
#define FENCE_SETTING "pghandoff.fenced_at"

typedef struct FenceWatch {
	uint64_t known_upto; /* the WAL position when the fence was last read */
	uint64_t fenced_at;  /* then: the fence's LSN, 0 without a fence */
} FenceWatch;

/*
 * *allowed: a transaction committed at commit_lsn on conn's database was
 * committed before any fence that stands (read again only for a commit past
 * what was known when it was last read).  False (logged) when the fence
 * could not be read.
 */
bool fence_allows(FenceWatch *fw, ReplConn *conn, uint64_t commit_lsn, bool *allowed)
	__attribute__((warn_unused_result));

#endif
