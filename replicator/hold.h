/*
 * The follower's part in `pghandoff verify`: holding at an exact source LSN
 * while a snapshot of the target is taken, so the target is compared with a
 * source snapshot of the same instant.  Requests arrive in a control file
 * next to state_file ("<state_file>-verify-<database>"), answers go to the
 * same name with ".reply"; each line is "<nonce> <word> [arguments]":
 *
 *   request pause          -> paused <received LSN>   (stops reading the stream)
 *   request hold <LSN>     -> held <LSN> <snapshot>   (applies every transaction
 *                                                     committed before LSN, no more,
 *                                                     and exports a target snapshot)
 *   request release        -> released                (goes on streaming)
 *
 * A verify that goes away is not waited for: a hold ends by itself after
 * HOLD_TIMEOUT seconds without a new request.
 */
#ifndef PGHANDOFF_REPLICATOR_HOLD_H
#define PGHANDOFF_REPLICATOR_HOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"

#define HOLD_TIMEOUT 60.0

typedef enum HoldState {
	HOLD_NONE,     /* streaming as usual */
	HOLD_PAUSED,   /* not reading the stream */
	HOLD_APPLYING, /* streaming up to the requested LSN */
	HOLD_HELD,     /* stopped there, a target snapshot exported */
} HoldState;

typedef struct Hold {
	HoldState state;
	char control[4096];
	char reply[4100];
	char nonce[64];
	uint64_t at;  /* HOLD_APPLYING, HOLD_HELD: the source LSN */
	double since; /* when the state last changed */
	double last_poll;
	ReplConn snapshot; /* HOLD_HELD: the open transaction whose snapshot is exported */
} Hold;

void hold_init(Hold *hold, const Config *config, const char *dbname);
void hold_free(Hold *hold);

/* What a new request asks, read from the control file at most every 50 ms. */
typedef enum HoldRequest { HOLD_REQ_NONE, HOLD_REQ_PAUSE, HOLD_REQ_HOLD, HOLD_REQ_RELEASE } HoldRequest;
HoldRequest hold_poll(Hold *hold, uint64_t *lsn);

/* Answers the current request. */
bool hold_answer(Hold *hold, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The file names for a database, for the verify side. */
void hold_paths(const Config *config, const char *dbname, char *control, size_t clen, char *reply, size_t rlen);

#endif
