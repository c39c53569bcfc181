/*
 * The cutover as the proxy runs it: the admin console's CUTOVER, CUTOVER DRY
 * RUN and ROLLBACK.  The event loop holds the clients, carries their
 * sessions and switches their server connections; a worker thread does the
 * blocking database work of cutover/db/steps.h meanwhile.
 */
#ifndef PGHANDOFF_CUTOVER_LOOP_CUTOVER_H
#define PGHANDOFF_CUTOVER_LOOP_CUTOVER_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy/objects.h"

typedef enum CutoverKind {
	CUTOVER_FORWARD,  /* source -> target */
	CUTOVER_DRY_RUN,  /* phase 1 and a report, nothing changes */
	CUTOVER_ROLLBACK, /* target -> source */
} CutoverKind;

/* True, with why, when a cutover of that kind cannot start now (SQLSTATE 55000). */
bool cutover_refusal(const Proxy *proxy, CutoverKind kind, char *why, size_t len);
/* The admin console's command, once cutover_refusal found nothing: admin waits until the report is sent. */
bool cutover_start(Client *admin, CutoverKind kind) __attribute__((warn_unused_result));
/* SHOW CUTOVER [JSON]: the last report. */
bool cutover_show(Client *admin, bool json) __attribute__((warn_unused_result));

/* True while a cutover or rollback runs, or an aborted one's cleanup is retried (RELOAD waits for it). */
bool cutover_running(const Proxy *proxy);

/* An aborted cutover or rollback left a fence or the way back's objects: undoing them is retried. */
bool cutover_cleanup_pending(const Proxy *proxy);
/* What is left to undo, "" when nothing. */
void cutover_cleanup_describe(const Proxy *proxy, char *buf, size_t len);
/* Whether pghandoff keeps cluster read-only: left by a switch, or an aborted switch's unfence still owed. */
bool cutover_cluster_fenced(const Proxy *proxy, const Cluster *cluster);
/* SHOW FENCE: both clusters' fence and what is still owed. */
bool cutover_show_fence(Client *admin) __attribute__((warn_unused_result));

void cutover_init(Proxy *proxy);
/* At start: the state file says where clients go, and starts the reverse follower if one belongs. */
bool cutover_load_state(Proxy *proxy) __attribute__((warn_unused_result));
/* After each loop iteration: looks again if poked, frees a finished cutover. */
void cutover_reap(Proxy *proxy, bool recheck);
/* At exit: stops the reverse follower, waits for a running worker. */
void cutover_shutdown(Proxy *proxy);

#endif
