/*
 * The cutover and the sessions: each client's session state is read on the
 * cluster it leaves (or known without reading), before the pause while the
 * clients run and in it as they go quiet, then replayed on its standby.
 * Also the dry run's look at every session.
 */
#include "cutover/loop/internal.h"
#include "common/log.h"
#include "proxy/session.h"

#include <stdio.h>
#include <string.h>

/*
 * Before the pause the sessions are read while their clients run, a few at
 * a time (hundreds of reads at once starve the clients, whose transactions
 * then pile up for the pause to wait on), in rounds: a round reads each
 * session unread when its client is quiet, once.  A client that speaks
 * after its read is read again in the next round; each round is shorter
 * than the one before, so the pause is left with the few that spoke last.
 * Once may_settle (the worker is done and every standby in), settled at the
 * end of a round that leaves at most SETTLED_UNREAD unread, or that did not
 * cut the unread by a quarter (clients that are always busy are read in
 * the pause), or after SETTLE_MAX_ROUNDS.
 */
#define SESSION_READS_AT_ONCE 4
#define SETTLED_UNREAD 16
#define SETTLE_MAX_ROUNDS 8

/*
 * Known without reading: its client never touched it, and its database runs
 * no code behind the client's statements.  What it did not set is what a
 * fresh login gets on the standby too (cutover/login.c).
 */
static bool
knowable(const Cutover *c, const Client *client)
{
	long i = client->db - c->proxy->databases;

	return !client->session_touched && c->hidden_known && i >= 0 && i < c->nhidden && !c->hidden_code[i];
}

/* Reads the session of a quiet client, or knows it at once; false: the client is gone. */
static bool
read_session(Cutover *c, Client *client)
{
	if (knowable(c, client)) {
		if (session_know_untouched(client)) {
			c->sessions_known++;
			return true;
		}
	} else if (session_capture(client)) {
		return true;
	}
	client_disconnect(client, "08006", "its session state could not be read");
	return false;
}

static int
count_reading(const Cutover *c)
{
	const List *item;
	int n = 0;

	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		n += cutover_is_moving(c, client) && client->cutover.carry && !client->cutover.carry->captured;
	}
	return n;
}

/* Starts the reads the round still owes; true when the round is over. */
static bool
read_round(Cutover *c, int *unread)
{
	List *item, *tmp;
	int reading = count_reading(c);
	bool over = reading == 0;

	*unread = 0;
	list_for_each_safe(item, tmp, &c->proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (!cutover_is_moving(c, client) || (client->cutover.carry && client->cutover.carry->captured))
			continue;
		if (!client->cutover.carry && cutover_client_quiet(client) && knowable(c, client)) {
			(void) read_session(c, client); /* at once, nothing to throttle */
			continue;
		}
		(*unread)++;
		if (client->cutover.carry || client->cutover.carry_round == c->settle_round ||
		    !cutover_client_quiet(client))
			continue;
		over = false;
		if (reading < SESSION_READS_AT_ONCE && read_session(c, client)) {
			client->cutover.carry_round = c->settle_round;
			reading++;
		}
	}
	return over;
}

bool
cutover_sessions_settled(Cutover *c, bool may_settle)
{
	int unread;

	if (c->settle_round == 0)
		c->settle_round = 1;
	/* A round that starts no read is over at once: nothing would wake this again. */
	while (read_round(c, &unread)) {
		if (!may_settle) {
			c->settle_unread = unread;
			c->settle_round++;
			(void) read_round(c, &unread); /* the next one begins */
			return false;
		}
		if (c->t_settle == 0) {
			c->t_settle = ev_time();
			c->settle_rounds = 0;
		} else {
			c->settle_rounds++;
			if (unread <= SETTLED_UNREAD || unread > c->settle_unread * 3 / 4 ||
			    c->settle_rounds >= SETTLE_MAX_ROUNDS) {
				c->settle_unread = unread;
				return true;
			}
		}
		if (unread <= SETTLED_UNREAD) {
			c->settle_unread = unread;
			return true;
		}
		log_debug("cutover", "sessions read before the pause: round %d leaves %d unread", c->settle_rounds,
			  unread);
		c->settle_unread = unread;
		c->settle_round++;
	}
	return false;
}

/*
 * Each client's session moves on its own as soon as it can: read once the
 * client is quiet (or before the pause, and read again if it spoke since),
 * replayed once it is quiet and held and its standby is in.
 * True when every moving client's session is replayed or known unmovable.
 */
bool
cutover_carry_sessions(Cutover *c)
{
	List *item, *tmp;
	bool done = true;

	list_for_each_safe(item, tmp, &c->proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);
		SessionCarry *carry;

		if (!cutover_is_moving(c, client))
			continue;
		if (!client->cutover.carry) {
			if (!cutover_client_quiet(client) || !read_session(c, client) ||
			    !client->cutover.carry->captured) {
				done = false;
				continue;
			}
		}
		carry = client->cutover.carry;
		if (!carry->captured) {
			done = false;
			continue;
		}
		if (carry->unmovable[0] || carry->replayed)
			continue;
		if (!client->cutover.standby) {
			snprintf(carry->unmovable, sizeof(carry->unmovable), "its %s connection was lost", c->to->role);
			continue;
		}
		if (client->cutover.standby->state != SV_STANDBY || client->cutover.standby->script) {
			done = false;
			continue;
		}
		if (!carry->replay_started && !cutover_client_quiet(client)) {
			/* Read before the pause, still in a transaction: its state may change yet. */
			done = false;
			continue;
		}
		if (!carry->replay_started) {
			carry->replay_started = true;
			if (!session_replay(client)) {
				snprintf(carry->unmovable, sizeof(carry->unmovable),
					 "its session could not be replayed");
				continue;
			}
		}
		done &= carry->replayed;
	}
	return done;
}

int
cutover_count_unmovable(Cutover *c, char *first, size_t len)
{
	const List *item;
	int n = 0;

	first[0] = '\0';
	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (cutover_is_moving(c, client) && client->cutover.carry && client->cutover.carry->unmovable[0]) {
			if (n++ == 0) {
				/* A long reason is cut short: it is one line of a report. */
				size_t used = strlen(client->subject);

				snprintf(first, len, "%s", client->subject);
				if (used + 7 < len)
					snprintf(first + used, len - used, " holds %s",
						 client->cutover.carry->unmovable);
			}
		}
	}
	return n;
}

void
cutover_dry_run_list(Cutover *c)
{
	const List *item;

	list_for_each(item, &c->proxy->active_clients)
	{
		const Client *client = container_of(item, const Client, head);

		if (!cutover_is_moving(c, client))
			continue;
		c->moved++;
		if (!client->cutover.carry) {
			strbuf_appendf(&c->dry_clients, "%s%s: in a transaction, not inspected",
				       c->dry_clients.len ? "; " : "", client->subject);
			continue;
		}
		if (client->cutover.carry->unmovable[0])
			c->unmovable++;
		strbuf_appendf(&c->dry_clients, "%s%s: %s%s", c->dry_clients.len ? "; " : "", client->subject,
			       client->cutover.carry->unmovable[0] ? "cannot move, holds " : "movable",
			       client->cutover.carry->unmovable);
	}
}

/* Dry run: the idle clients' sessions are inspected, a few at a time; none is held for long. */
bool
cutover_dry_run_inspect(Cutover *c)
{
	List *item, *tmp;
	bool done = true;
	int reading = count_reading(c);

	list_for_each_safe(item, tmp, &c->proxy->active_clients)
	{
		Client *client = container_of(item, Client, head);

		if (!cutover_is_moving(c, client))
			continue;
		if (!client->cutover.carry) {
			/* Busy, or read once and changed since: listed as not inspected. */
			if (!cutover_client_quiet(client) || client->cutover.carry_round > 0)
				continue;
			if (knowable(c, client)) {
				(void) read_session(c, client);
				continue;
			}
			done = false;
			if (reading >= SESSION_READS_AT_ONCE || !read_session(c, client))
				continue;
			client->cutover.carry_round = 1;
			reading++;
		} else if (!client->cutover.carry->captured) {
			done = false;
		}
	}
	return done;
}
