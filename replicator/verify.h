/*
 * `pghandoff verify`: every table of every database compared between the
 * source and the target at one consistent point, while replication goes on.
 */
#ifndef PGHANDOFF_REPLICATOR_VERIFY_H
#define PGHANDOFF_REPLICATOR_VERIFY_H

#include <stdio.h>

#include "config/config.h"

/* Prints one line per table; exit status 0 only when every table matches. */
int verify_main(const Config *config, FILE *out);

#endif
