/*
 * The replicator's entry point: `pghandoff replicate` in each of its modes.
 */
#ifndef PGHANDOFF_REPLICATOR_REPLICATE_H
#define PGHANDOFF_REPLICATOR_REPLICATE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"

typedef enum ReplMode {
	REPL_FORWARD = 0,     /* copy, then stream source -> target */
	REPL_DROP,            /* remove the forward slot, publication and origin */
	REPL_REVERSE,         /* stream target -> source from the prepared reverse slot */
	REPL_REVERSE_PREPARE, /* make the reverse slot, publication and origin, then exit */
	REPL_REVERSE_DROP,    /* remove them */
} ReplMode;

/* Set by SIGTERM/SIGINT: loops finish what they hold and return. */
extern volatile sig_atomic_t replicate_stop_requested;

/* Runs mode for every database of [databases].  Exit status. */
int replicate_main(const Config *config, ReplMode mode);

#endif
