/*
 * The cutover as the proxy runs it: the admin console's CUTOVER, CUTOVER DRY
 * RUN and ROLLBACK.  The event loop holds the clients, carries their
 * sessions and switches their server connections; a worker thread does the
 * blocking database work of cutover/steps.h meanwhile.
 */
#ifndef PGHANDOFF_PROXY_CUTOVER_H
#define PGHANDOFF_PROXY_CUTOVER_H

#include <stdbool.h>

#include "proxy/objects.h"

typedef enum CutoverKind {
	CUTOVER_FORWARD,	/* source -> target */
	CUTOVER_DRY_RUN,	/* phase 1 and a report, nothing changes */
	CUTOVER_ROLLBACK,	/* target -> source */
} CutoverKind;

/* Why a cutover of that kind cannot start now (SQLSTATE 55000), or NULL. */
const char *cutover_refusal(const Proxy *proxy, CutoverKind kind);
/* The admin console's command, once cutover_refusal found nothing: admin waits until the report is sent. */
bool cutover_start(Client *admin, CutoverKind kind) __attribute__((warn_unused_result));
/* SHOW CUTOVER [JSON]: the last report. */
bool cutover_show(Client *admin, bool json) __attribute__((warn_unused_result));

/* A client that logs in now waits for the cutover before its server opens. */
/* True while a cutover or rollback runs (RELOAD waits for it). */
bool cutover_running(const Proxy *proxy);

void cutover_init(Proxy *proxy);
/* At start: the state file says where clients go, and starts the reverse follower if one belongs. */
bool cutover_load_state(Proxy *proxy) __attribute__((warn_unused_result));
/* After each loop iteration: looks again if poked, frees a finished cutover. */
void cutover_reap(Proxy *proxy, bool recheck);
/* At exit: stops the reverse follower, waits for a running worker. */
void cutover_shutdown(Proxy *proxy);

#endif
