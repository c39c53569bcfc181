/*
 * pghandoff: moves a live PostgreSQL database to another cluster with a
 * wire-protocol proxy in front and logical replication behind.  This file
 * only dispatches to the commands.
 */
#include "cli/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const CliCommand commands[] = {
	{"run", "proxy and follower in one process: the normal way to run pghandoff",
	 "Usage: pghandoff run -c FILE\n\n"
	 "Runs the proxy (see `pghandoff proxy --help`) with the follower (see\n"
	 "`pghandoff replicate --help`) as its child process: the follower is\n"
	 "started again if it dies (it resumes from the target's replication\n"
	 "origin), and stopped when the proxy stops.  After a cutover with\n"
	 "rollback = on, the reverse follower runs beside it.\n\n"
	 "Signals: SIGTERM stops accepting and waits up to shutdown_timeout for\n"
	 "clients, then stops the followers; SIGINT stops at once; SIGHUP reloads\n"
	 "the proxy's configuration (the follower reads it when it restarts).\n",
	 cmd_run},
	{"config", "print the effective configuration, secrets redacted",
	 "Usage: pghandoff config -c FILE\n\n"
	 "Loads FILE, reports every error as FILE:LINE, and prints the effective\n"
	 "configuration (defaults filled in, relative paths resolved, passwords\n"
	 "shown as ********).\n",
	 cmd_config},
	{"check", "preflight: check both clusters before a migration",
	 "Usage: pghandoff check -c FILE\n\n"
	 "Connects to the source and target clusters and prints one line per\n"
	 "check, PASS, WARN or FAIL, with a hint for each problem: reachability,\n"
	 "versions, wal_level, free replication slots and WAL senders, the\n"
	 "REPLICATION privilege, the configured databases, tables without a\n"
	 "primary key or replica identity, large objects, and extensions the\n"
	 "target lacks.  Nothing is changed on either cluster.\n\n"
	 "Exit status: 0 when nothing failed, 1 when a check failed, 2 on a bad\n"
	 "configuration.\n",
	 cmd_check},
	{"proxy", "run the wire-protocol proxy in front of the source cluster",
	 "Usage: pghandoff proxy -c FILE\n\n"
	 "Listens on listen_addr:listen_port (and unix_socket_dir) and relays every\n"
	 "client of a database in [databases] to the source cluster, one server\n"
	 "connection per client.  Clients authenticate per auth_type against\n"
	 "auth_file.  Admin users reach a console in the virtual database\n"
	 "\"pghandoff\": SHOW CLIENTS|SERVERS|STATS|CONFIG|DATABASES|VERSION,\n"
	 "PAUSE [db], RESUME [db], RELOAD, SHUTDOWN, CUTOVER [DRY RUN], ROLLBACK,\n"
	 "SHOW CUTOVER [JSON], SHOW FENCE.\n\n"
	 "Signals: SIGTERM stops accepting and waits up to shutdown_timeout for\n"
	 "clients; SIGINT closes everything at once; SIGHUP reloads the\n"
	 "configuration and the auth file and reopens the log file.\n",
	 cmd_proxy},
	{"replicate", "copy the source into the target and stream every change",
	 "Usage: pghandoff replicate -c FILE [--drop | --reverse [--prepare | --drop]] [--skip-ddl LSN]\n\n"
	 "For each database in [databases]: checks both clusters, copies the\n"
	 "schema (schema = copy) and the data from a consistent snapshot, then\n"
	 "streams every committed change (pgoutput) into the target until\n"
	 "stopped with SIGTERM or SIGINT.  Progress lives in a replication origin\n"
	 "on the target, so a restart, even after kill -9, resumes where the\n"
	 "target stands, with no change lost or applied twice.\n\n"
	 "  --drop     remove the slot and publication from the source and the\n"
	 "             origin from the target instead, so an abandoned migration\n"
	 "             leaves no slot holding WAL; with them the capture of schema\n"
	 "             changes (schema pghandoff and its event triggers)\n"
	 "  --skip-ddl LSN  do not replay the schema change captured at LSN, once:\n"
	 "             after it failed on the other side and was made there by hand\n"
	 "  --reverse  the way back after a cutover: stream from the reverse slot on\n"
	 "             the target into the source (the proxy runs this itself with\n"
	 "             rollback = on); each direction skips what the other applied\n"
	 "  --reverse --prepare  make the reverse slot, publication and origin, exit\n"
	 "  --reverse --drop     remove them\n",
	 cmd_replicate},
	{"status", "where the migration stands: phase, copy progress, lag, clients",
	 "Usage: pghandoff status -c FILE [--watch] [--json]\n\n"
	 "Asks the running proxy (its admin console, as for `pghandoff cutover`)\n"
	 "and prints, per database: the phase (starting, schema, copy, indexes,\n"
	 "catch-up, streaming, retrying, cut over, rolled back), the copy's\n"
	 "progress (tables, bytes, rate, time left), the replication lag in bytes\n"
	 "and seconds and the apply rate; then the clients, the server\n"
	 "connections per cluster, which cluster is fenced (with a warning while an\n"
	 "aborted cutover's unfence is retried) and the last cutover's report.\n"
	 "The follower's progress comes from the files it writes next to\n"
	 "state_file.\n\n"
	 "  --watch  refresh every second (a progress bar on a terminal); Ctrl-C stops\n"
	 "  --json   one JSON object per refresh\n",
	 cmd_status},
	{"verify", "compare every table on both sides at one consistent point",
	 "Usage: pghandoff verify -c FILE\n\n"
	 "While replication goes on (`pghandoff run` or `replicate` must be\n"
	 "streaming with this configuration): the follower pauses, a snapshot of\n"
	 "the source is taken at a known LSN, the follower applies exactly up to\n"
	 "it and holds while a snapshot of the target is taken, then goes on.  In\n"
	 "those two snapshots every table's row count and an order-independent\n"
	 "hash of its rows are compared, copy_jobs tables at a time; a table that\n"
	 "differs is listed with a few of the keys that differ.\n\n"
	 "Exit status: 0 when every table matches, 1 otherwise, 2 on bad usage.\n",
	 cmd_verify},
	{"cutover", "switch every client from the source to the target",
	 "Usage: pghandoff cutover -c FILE [--dry-run] [--json]\n\n"
	 "Asks the running proxy (its admin console, as the first of admin_users)\n"
	 "to cut over: check that replication streams with lag <= max_lag and that\n"
	 "the tables match; open a target connection for every client; hold every\n"
	 "client at its next transaction boundary (drain_timeout, on_drain_timeout);\n"
	 "fence the source (fence = read_only); wait until the target has applied\n"
	 "the source's last write; copy the sequences; compare row counts\n"
	 "(verify = counts); prepare the reverse follower (rollback = on); move\n"
	 "each client's session (settings, prepared statements, LISTEN) to its\n"
	 "target connection; record the switch in state_file; resume.  Sessions\n"
	 "that cannot move (temporary tables, advisory locks, WITH HOLD cursors)\n"
	 "are terminated or make the cutover abort (unmovable).  Any failure before\n"
	 "the switch resumes every client on the source; an unfence that fails\n"
	 "then is retried in the background, and SHOW FENCE and status say so.\n\n"
	 "Each phase is printed as it ends, then the report (--json: as JSON).\n"
	 "  --dry-run  run the checks only and report the clients, which of them\n"
	 "             could not move, the lag and the catch-up time to expect\n\n"
	 "The password is PGPASSWORD's, else the auth file's plaintext entry.\n"
	 "Exit status: 0 done (or ready), 1 refused or aborted, 2 bad usage.\n",
	 cmd_cutover},
	{"rollback", "switch every client back from the target to the source",
	 "Usage: pghandoff rollback -c FILE [--json]\n\n"
	 "The cutover in reverse, after a cutover with rollback = on: the target is\n"
	 "fenced, the reverse follower applies its last writes to the source, the\n"
	 "sequences go back, the reverse follower stops and its slot is dropped,\n"
	 "the source takes writes again and every client moves back.\n",
	 cmd_rollback},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *out)
{
	size_t i;

	fprintf(out,
		"pghandoff moves a live PostgreSQL database to another cluster without downtime.\n\n"
		"Usage: pghandoff COMMAND -c FILE [options]\n\nCommands:\n");
	for (i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\nOptions:\n"
		"  -c, --config FILE  configuration file (see config/pghandoff.ini.example)\n"
		"  -h, --help         show help (pghandoff COMMAND --help for a command,\n"
		"                     pghandoff help for the whole manual)\n"
		"  -V, --version      show the version\n");
}

/* `pghandoff help`: the whole manual, every command's help included, laid out like a man page. */
static void
manual(FILE *out)
{
	size_t i;
	const char *p;

	fprintf(out,
		"PGHANDOFF(1)\n\nNAME\n    pghandoff - move a live PostgreSQL database to another cluster without "
		"downtime\n\n"
		"SYNOPSIS\n    pghandoff COMMAND -c FILE [options]\n    pghandoff help | --help | --version\n\n"
		"DESCRIPTION\n"
		"    Applications connect to pghandoff instead of the database.  It fronts the\n"
		"    source (old) cluster and the target (new) one: a wire-protocol proxy, a\n"
		"    logical-replication follower that copies the source into the target and\n"
		"    streams every change, and a cutover that moves every client to the target\n"
		"    at a transaction boundary, with its session, in well under a second.\n"
		"    The usual sequence: check, run, status (until streaming), verify,\n"
		"    cutover --dry-run, cutover; rollback if needed.\n\nCOMMANDS\n");
	for (i = 0; i < N_COMMANDS; i++) {
		fprintf(out, "    %s - %s\n\n", commands[i].name, commands[i].summary);
		for (p = commands[i].help; *p;) {
			size_t n = strcspn(p, "\n");

			fprintf(out, n ? "        %.*s\n" : "\n", (int) n, p);
			p += n + (p[n] == '\n');
		}
		fputc('\n', out);
	}
	fprintf(out,
		"FILES\n"
		"    pghandoff.ini        the configuration (config/pghandoff.ini.example documents every key)\n"
		"    auth_file            users and secrets for client logins (plaintext, md5 or SCRAM verifiers)\n"
		"    state_file           where clients go after a cutover or rollback; beside it the follower's\n"
		"                         progress (-replication-DB) and verify's requests (-verify-DB)\n"
		"    pghandoff.service    a systemd unit running `pghandoff run` (config/)\n\n"
		"SIGNALS\n"
		"    SIGTERM  stop accepting, let clients finish (shutdown_timeout), stop the followers\n"
		"    SIGINT   stop at once\n"
		"    SIGHUP   reload the configuration and the auth file, reopen the log file\n\n"
		"ENVIRONMENT\n"
		"    PGPASSWORD, PGPASSFILE  the admin console's password for cutover, rollback, status, check\n\n"
		"EXIT STATUS\n"
		"    0 success; 1 the command ran and found a problem (a failed check, a refused\n"
		"    cutover, a table that differs); 2 bad usage or configuration.\n");
}

int
cli_load_config(const CliCommand *cmd, int argc, char **argv, Config *config)
{
	static const struct option options[] = {
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'h':
			fputs(cmd->help, stdout);
			return 0;
		default:
			fprintf(stderr, "Try \"pghandoff %s --help\".\n", cmd->name);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pghandoff %s: unexpected argument \"%s\"\n", cmd->name, argv[optind]);
		return EXIT_USAGE;
	}
	if (!path) {
		fprintf(stderr, "pghandoff %s: no configuration file given (-c FILE)\n", cmd->name);
		return EXIT_USAGE;
	}
	if (!config_load(path, config, stderr))
		return EXIT_USAGE;
	return -1;
}

int
cmd_config(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	int rc = cli_load_config(cmd, argc, argv, &config);

	if (rc >= 0)
		return rc;
	config_print(&config, stdout);
	config_free(&config);
	return 0;
}

int
main(int argc, char **argv)
{
	size_t i;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "help") == 0) {
		manual(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("pghandoff %s\n", PGHANDOFF_VERSION);
		return 0;
	}
	for (i = 0; i < N_COMMANDS; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(&commands[i], argc - 1, argv + 1);

	fprintf(stderr, "pghandoff: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
