/*
 * Schema changes during the migration: captured where clients write, and
 * replayed by the follower at the same position of the stream.
 *
 * Capture: event triggers (ddl_command_start for CREATE TABLE AS and SELECT
 * INTO, whose rows follow in the WAL, and to tell commands run inside
 * another; ddl_command_end for the rest; sql_drop to tell drops of
 * temporary objects) installed in the schema "pghandoff"
 * insert one row per command into pghandoff.ddl_log, and delete it again at
 * once.  The table is in the FOR ALL TABLES publication, so the Insert
 * travels in the command's own transaction, ordered with its row changes,
 * and vanishes with a rollback, on every source version (pgoutput sends
 * logical messages only from 14 on).  The row carries the query string, the
 * command tag, the command's ordinal among the string's statements that
 * fire event triggers, search_path, the role and the objects' identities,
 * and the source's WAL insert position, which names the change (--skip-ddl).
 *
 * Commands on large objects (their owner, grants, comments) are not
 * captured: the objects themselves do not travel in the stream, and the
 * diff of largeobj.h carries owners and grants with them.
 *
 * With ddl = stop nothing is replayed: the follower goes on until a change
 * no longer fits the target's table, as without the capture, and the error
 * then names the schema change that made it so.
 *
 * Replay: the applier hands Inserts into that table here instead of
 * applying them as rows; the statement is cut out of the query string and
 * rewritten (ddlsql.h), and runs in the open apply transaction, under the
 * captured search_path and role.  CREATE INDEX CONCURRENTLY, DROP INDEX
 * CONCURRENTLY and DETACH PARTITION ... CONCURRENTLY run on their own instead: the applier commits what precedes
 * them (with the origin's progress), the statement runs outside any
 * transaction block, and the apply goes on in a new transaction that
 * commits the source transaction they came in.  A restart in between
 * replays the statement again, so it is made to do nothing the second
 * time: a valid index of the captured name is taken as built, an invalid
 * one (a build that failed or was interrupted) is dropped and built again,
 * the drop has IF EXISTS, a partition no longer attached is done and one
 * whose detach stopped half-way is finalized.  A failure stops the apply with the
 * statement, its source position and the target's error; the apply
 * transaction rolls back with it.  The applier's own session runs with
 * session_replication_role = replica, in which event triggers do not fire:
 * a replayed change is never captured again on the side it is replayed to.
 */
#ifndef PGHANDOFF_REPLICATOR_DDL_H
#define PGHANDOFF_REPLICATOR_DDL_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "replicator/conn.h"
#include "replicator/pgoutput.h"

#define DDL_SCHEMA "pghandoff"
#define DDL_LOG_TABLE "ddl_log"
/* For the catalog queries that list the user's tables: pghandoff's own schema is not one of them. */
#define DDL_EXCLUDE_SCHEMA " AND n.nspname <> 'pghandoff' "

typedef struct DdlReplay {
	DdlMode mode;
	bool keep_roles; /* roles = copy: replay as the source's role; else as the applier, who owns everything */
	uint32_t relid;  /* pghandoff.ddl_log on the sending side; 0 before its Relation message */
	int col_lsn, col_tag, col_ordinal, col_search_path, col_role, col_objects, col_query;
	bool replayed_in_xact; /* the source transaction replayed a change: commit the apply group at its end */
	/*
	 * Before a statement that runs on its own: commits the open apply
	 * transaction, leaving none open, and sets *split; or leaves it open with
	 * *split false when the source transaction already changed rows (it cannot
	 * be cut in two), and the statement then runs in it without CONCURRENTLY.
	 * NULL: always the latter.
	 */
	bool (*commit_before_alone)(void *arg, bool *split);
	void *commit_arg;
	int64_t replayed;
	uint64_t failed_lsn; /* the change that could not be replayed, for the status; 0: none */
	char *last_skipped;  /* ddl = stop: the last change not replayed, "LSN: statement", to name it */
} DdlReplay;

/* Creates (or replaces) the capture on conn's database; false if it could not (logged as a warning). */
bool ddl_install(ReplConn *conn, const char *side) __attribute__((warn_unused_result));

/* Removes the capture: triggers, functions, the schema. */
bool ddl_uninstall(ReplConn *conn) __attribute__((warn_unused_result));

/* Removes the capture if there is one (a source without it needs no privilege for this). */
bool ddl_leave_out(ReplConn *conn) __attribute__((warn_unused_result));

/*
 * The cutover's precheck with ddl = replay: the indexes and constraints of
 * every table (partitions left out) by name and definition, the same on
 * both sides.  False with the differences named in err (not logged).
 */
bool ddl_compare_definitions(ReplConn *from, ReplConn *to, const char *dbname, const char *from_role,
			     const char *to_role, char *err, size_t errlen) __attribute__((warn_unused_result));

/* `replicate --skip-ddl LSN`: the change captured at lsn is not replayed, once. */
void ddl_skip_once(uint64_t lsn);

void ddl_init(DdlReplay *d, DdlMode mode);
void ddl_free(DdlReplay *d);

/* With ddl = stop, after a table stopped fitting: logs the last schema change seen, if any. */
void ddl_name_last_change(const DdlReplay *d, const char *subject);

/* A Relation message for the capture table: notes its relid and columns, returns true.  Others: false. */
bool ddl_relation(DdlReplay *d, const PgoutputRelation *rel);

/*
 * Replays the change in an Insert into the capture table, in target's open
 * transaction; or on its own (see commit_before_alone), after which no
 * transaction is open on target.
 */
bool ddl_replay(DdlReplay *d, ReplConn *target, const PgoutputTuple *tup, const char *subject)
	__attribute__((warn_unused_result));

#endif
