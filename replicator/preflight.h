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
	int npass;
	int nwarn;
	int nfail;
} Preflight;

/* Runs every check; true when none failed. */
bool preflight_run(Preflight *pf) __attribute__((warn_unused_result));

const char *check_status_name(CheckStatus status);

#endif
