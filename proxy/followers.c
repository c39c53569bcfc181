/*
 * The followers the proxy runs as child processes of its own executable:
 * `pghandoff replicate` under `pghandoff run`, `replicate --reverse` after a
 * cutover with rollback = on, and `replicate --reverse --drop` after a
 * rollback.  A child is watched with ev_child; one that dies while it is
 * wanted is started again after FOLLOWER_RESTART_DELAY (the follower itself
 * resumes from its replication origin, so a restart loses nothing).
 */
#include "proxy/objects.h"
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FOLLOWER_RESTART_DELAY 5.0

extern char **environ;

static const char *const follower_names[FOLLOWER_KINDS] = {"follower", "reverse follower", "reverse slot drop"};

static bool
spawn(Follower *f)
{
	Proxy *proxy = f->proxy;
	char *argv[7] = {"pghandoff", "replicate", "-c", proxy->config_path, NULL, NULL, NULL};
	char exe[4096], parent[16];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	posix_spawnattr_t attr;
	pid_t pid;
	int rc;

	if (f->kind != FOLLOWER_FORWARD)
		argv[4] = "--reverse";
	if (f->kind == FOLLOWER_REVERSE_DROP)
		argv[5] = "--drop";
	if (n <= 0) {
		log_error("proxy", "could not find the pghandoff executable: %s", strerror(errno));
		return false;
	}
	exe[n] = '\0';
	/* The child ends with us, even if we are killed (see cmd_replicate.c). */
	snprintf(parent, sizeof(parent), "%d", (int) getpid());
	(void) setenv("PGHANDOFF_PARENT_PID", parent, 1);
	/*
	 * A session of its own, as a service manager would start it: under the
	 * kernel's autogroup scheduling, processes sharing a session share one
	 * CPU share, and a follower busy applying would take the relay's.  The
	 * terminal's signals reach only the proxy, which stops its followers.
	 */
	rc = posix_spawnattr_init(&attr);
	if (rc == 0) {
		rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
		if (rc == 0)
			rc = posix_spawn(&pid, exe, NULL, &attr, argv, environ);
		posix_spawnattr_destroy(&attr);
	}
	if (rc != 0) {
		log_error("proxy", "could not start the %s: %s", follower_names[f->kind], strerror(rc));
		return false;
	}
	f->pid = pid;
	ev_child_set(&f->watcher, pid, 0);
	ev_child_start(proxy->loop, &f->watcher);
	log_info("proxy", "%s started (pid %d)", follower_names[f->kind], pid);
	return true;
}

static void
on_restart(struct ev_loop *loop, ev_timer *w, int revents)
{
	Follower *f = container_of(w, Follower, restart);

	(void) loop;
	(void) revents;
	if (f->wanted && f->pid == 0 && !spawn(f)) {
		/* logged; tried again after the next delay */
		ev_timer_set(&f->restart, FOLLOWER_RESTART_DELAY, 0.);
		ev_timer_start(f->proxy->loop, &f->restart);
	}
}

static void
on_exit_child(struct ev_loop *loop, ev_child *w, int revents)
{
	Follower *f = container_of(w, Follower, watcher);
	int status = w->rstatus;
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

	(void) revents;
	ev_child_stop(loop, w);
	f->pid = 0;
	if (f->kind == FOLLOWER_REVERSE_DROP) {
		if (code == 0)
			log_info("proxy", "the reverse follower's slot, publication and origin are dropped");
		else
			log_error("proxy",
				  "`pghandoff replicate --reverse --drop` failed (status %d): its slot may still "
				  "hold WAL on the target; run it by hand",
				  code);
		return;
	}
	if (f->wanted) {
		f->restarts++;
		log_warning("proxy", "the %s exited with status %d; starting it again in %.0f s",
			    follower_names[f->kind], code, FOLLOWER_RESTART_DELAY);
		ev_timer_set(&f->restart, FOLLOWER_RESTART_DELAY, 0.);
		ev_timer_start(loop, &f->restart);
		return;
	}
	log_info("proxy", "the %s stopped (status %d)", follower_names[f->kind], code);
	if (f->then_drop) {
		f->then_drop = false;
		if (!followers_start(f->proxy, FOLLOWER_REVERSE_DROP)) {
			/* logged */
		}
	}
}

static Follower *
follower(Proxy *proxy, FollowerKind kind)
{
	Follower *f = &proxy->followers[kind];

	if (!f->proxy) {
		f->proxy = proxy;
		f->kind = kind;
		ev_child_init(&f->watcher, on_exit_child, 0, 0);
		ev_timer_init(&f->restart, on_restart, 0., 0.);
	}
	return f;
}

void
followers_start_after(Proxy *proxy, FollowerKind kind, double seconds)
{
	Follower *f = follower(proxy, kind);

	f->wanted = true;
	f->then_drop = false;
	if (f->pid > 0)
		return;
	ev_timer_stop(proxy->loop, &f->restart);
	ev_timer_set(&f->restart, seconds, 0.);
	ev_timer_start(proxy->loop, &f->restart);
}

bool
followers_start(Proxy *proxy, FollowerKind kind)
{
	Follower *f = follower(proxy, kind);

	f->wanted = kind != FOLLOWER_REVERSE_DROP;
	f->then_drop = false;
	if (f->pid > 0)
		return true;
	return spawn(f);
}

void
followers_stop(Proxy *proxy, FollowerKind kind, bool then_drop)
{
	Follower *f = follower(proxy, kind);

	f->wanted = false;
	f->then_drop = then_drop;
	ev_timer_stop(proxy->loop, &f->restart);
	if (f->pid > 0 && kill(f->pid, SIGTERM) == 0)
		return; /* on_exit_child does the rest */
	if (then_drop && !followers_start(proxy, FOLLOWER_REVERSE_DROP)) {
		/* logged */
	}
}

void
followers_shutdown(Proxy *proxy)
{
	int kind, status;

	for (kind = 0; kind < FOLLOWER_KINDS; kind++) {
		Follower *f = &proxy->followers[kind];

		if (!f->proxy)
			continue;
		ev_timer_stop(proxy->loop, &f->restart);
		ev_child_stop(proxy->loop, &f->watcher);
		if (f->pid <= 0)
			continue;
		/* A drop is left to finish: the slot would otherwise stay behind. */
		if (kind != FOLLOWER_REVERSE_DROP)
			(void) kill(f->pid, SIGTERM);
		(void) waitpid(f->pid, &status, 0);
		f->pid = 0;
	}
}
