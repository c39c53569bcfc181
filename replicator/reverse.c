/*
 * The reverse follower: target -> source after a cutover.  The objects are
 * the forward ones mirrored (publication and slot on the target, origin on
 * the source, named by replicate_names), and streaming is the forward
 * follower's loop with the direction turned round (replicate_direction).
 *
 * Sequences are not copied this way: the cutover sets the source's from the
 * target's at a rollback, the one moment they matter there.
 */
#include "replicator/reverse.h"
#include "common/log.h"
#include "replicator/ddl.h"
#include "replicator/slots.h"
#include "replicator/pgoutput.h"
#include "replicator/follow.h"

#include <stdio.h>
#include <string.h>

bool
reverse_prepare(const Config *config, const DatabaseMapping *db, const char *subject)
{
	ReplConn target = {0}, source = {0};
	ReplNames names;
	ReplDirection dir;
	char lsnbuf[LSN_FORMAT_LEN];
	uint64_t lsn = 0;
	bool ok, forward_exists, via_root;

	replicate_names(config, db, &names);
	replicate_direction(config, db, &names, true, &dir);
	/* Both connections first: a fenced source that refuses us leaves nothing made on the target. */
	if (!replicate_connect_apply(&dir, &source, subject))
		return false;
	/*
	 * A rollback left the target fenced, and a cutover after it makes the
	 * way back before the target takes writes again: this session is exempt.
	 */
	if (!repl_connect(&target, &config->target, db->target_name, false, subject) ||
	    !repl_exec(&target, "SET default_transaction_read_only = off")) {
		repl_close(&target);
		repl_close(&source);
		return false;
	}
	/*
	 * The old origin goes first (a reverse follower still using it makes
	 * this fail before anything changed).  The publication exists before
	 * the slot, so that decoding finds it from the slot's first change on;
	 * the slot's consistent point is where the two sides were equal, and
	 * the origin starts there.
	 */
	/*
	 * Partitions go back the way they came: through their roots if the
	 * target partitions differently, which the forward publication says.
	 */
	/* Schema changes on the target after the cutover go back to the source too (ddl.h). */
	if (!ddl_install(&target, "target")) {
		/* logged as a warning */
	}
	ok = slots_publication_state(&source, names.publication, &forward_exists, &via_root) &&
		slots_drop_origin(&source, names.reverse_origin) &&
		slots_drop_slot(&target, names.reverse_slot, true) &&
		slots_drop_publication(&target, names.reverse_publication) &&
		slots_ensure_publication(&target, names.reverse_publication, via_root) &&
		slots_create_slot(&target, names.reverse_slot, &lsn) &&
		slots_create_origin(&source, names.reverse_origin) &&
		slots_advance_origin(&source, names.reverse_origin, lsn);
	repl_close(&target);
	repl_close(&source);
	if (ok) {
		lsn_format(lsn, lsnbuf, sizeof(lsnbuf));
		log_info(subject,
			 "way back prepared: slot %s and publication %s on the target from %s, origin %s on the "
			 "source",
			 names.reverse_slot, names.reverse_publication, lsnbuf, names.reverse_origin);
	}
	return ok;
}

bool
reverse_drop(const Config *config, const DatabaseMapping *db, const char *subject)
{
	ReplConn target = {0}, source = {0};
	ReplNames names;
	ReplDirection dir;
	bool ok = true;

	replicate_names(config, db, &names);
	replicate_direction(config, db, &names, true, &dir);
	/* After a rollback the target is fenced: this session is exempt. */
	if (repl_connect(&target, &config->target, db->target_name, false, subject) &&
	    repl_exec(&target, "SET default_transaction_read_only = off")) {
		ok = slots_drop_slot(&target, names.reverse_slot, true) &&
			slots_drop_publication(&target, names.reverse_publication) && ddl_leave_out(&target);
		repl_close(&target);
	} else {
		repl_close(&target); /* connected, perhaps, but could not lift the fence */
		ok = false;
	}
	if (replicate_connect_apply(&dir, &source, subject)) {
		if (!slots_drop_origin(&source, names.reverse_origin))
			ok = false;
		repl_close(&source);
	} else {
		ok = false;
	}
	if (ok)
		log_info(subject, "dropped slot %s and publication %s on the target, origin %s on the source",
			 names.reverse_slot, names.reverse_publication, names.reverse_origin);
	return ok;
}

int
reverse_run(const Config *config, const DatabaseMapping *db)
{
	ReplConn apply = {0}, repl = {0}, check = {0};
	ReplNames names;
	ReplDirection dir;
	char subject[160];
	bool origin_exists, slot_exists = false, ok;
	uint64_t start_lsn = 0;

	snprintf(subject, sizeof(subject), "reverse replicator %s", db->name);
	replicate_names(config, db, &names);
	replicate_direction(config, db, &names, true, &dir);
	if (!replicate_connect_apply(&dir, &apply, subject))
		return 1;
	if (!slots_origin_state(&apply, dir.origin, &origin_exists, &start_lsn)) {
		repl_close(&apply);
		return 1;
	}
	/* Both checks name the fix: a missing object is no error to retry. */
	ok = repl_connect(&check, dir.from, dir.from_db, false, subject) &&
		slots_slot_exists(&check, dir.slot, &slot_exists);
	repl_close(&check);
	if (!ok) {
		repl_close(&apply);
		return 1;
	}
	if (!origin_exists || !slot_exists) {
		log_error(subject,
			  "the way back is not prepared: %s %s does not exist on the %s; the cutover prepares "
			  "it, or `pghandoff replicate --reverse --prepare` while both sides hold the same data",
			  !slot_exists ? "slot" : "origin", !slot_exists ? dir.slot : dir.origin,
			  !slot_exists ? dir.from->role : dir.to->role);
		repl_close(&apply);
		return 1;
	}
	if (!repl_connect(&repl, dir.from, dir.from_db, true, subject)) {
		repl_close(&apply);
		return 1;
	}
	return replicate_follow(config, &dir, &repl, &apply, start_lsn, subject);
}
