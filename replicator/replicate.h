/*
 * The replicator's entry point and the names it gives the objects it makes:
 * a publication and a slot on the source, a replication origin on the target.
 */
#ifndef PGHANDOFF_REPLICATOR_REPLICATE_H
#define PGHANDOFF_REPLICATOR_REPLICATE_H

#include <signal.h>
#include <stdbool.h>

#include "config/config.h"

typedef struct ReplNames {
	char publication[64];
	char slot[64];
	char origin[64];
} ReplNames;

/* Set by SIGTERM/SIGINT: loops finish what they hold and return. */
extern volatile sig_atomic_t replicate_stop_requested;

void replicate_names(const Config *config, const DatabaseMapping *db, ReplNames *names);

/* Runs until stopped; with drop, removes the slot, publication and origin instead.  Exit status. */
int replicate_main(const Config *config, bool drop);

#endif
