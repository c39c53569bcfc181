/*
 * `pghandoff replicate [--drop]`: the follower in the foreground.
 * `pghandoff replicate --reverse [--prepare | --drop]`: the way back after a
 * cutover, target -> source; --prepare makes its slot, publication and
 * origin and exits (the cutover does the same), --drop removes them.
 */
#include "cli/cli.h"
#include "replicator/ddl.h"
#include "replicator/pgoutput.h"
#include "replicator/replicate.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/*
 * Run by a proxy (`pghandoff run`, the reverse follower): stop when it dies,
 * however it dies, rather than stream on unsupervised.  A follower stopped
 * this way resumes from its origin when the proxy starts it again.
 */
static void
follow_parent(void)
{
	const char *parent = getenv("PGHANDOFF_PARENT_PID");

	if (!parent)
		return;
	(void) prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != (pid_t) strtol(parent, NULL, 10))
		(void) raise(SIGTERM); /* it died before the line above */
	(void) unsetenv("PGHANDOFF_PARENT_PID");
}

int
cmd_replicate(const CliCommand *cmd, int argc, char **argv)
{
	Config config;
	bool drop = false, reverse = false, prepare = false;
	ReplMode mode;
	int i, n = 0, rc;

	/* --drop, --reverse, --prepare and --skip-ddl are ours; the rest is the common options. */
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--drop") == 0)
			drop = true;
		else if (strcmp(argv[i], "--reverse") == 0)
			reverse = true;
		else if (strcmp(argv[i], "--prepare") == 0)
			prepare = true;
		else if (strcmp(argv[i], "--skip-ddl") == 0) {
			uint64_t lsn;

			if (i + 1 >= argc || !lsn_parse(argv[i + 1], &lsn) || lsn == 0) {
				fprintf(stderr,
					"pghandoff %s: --skip-ddl takes the LSN of the schema change, as in 0/16B3748\n",
					cmd->name);
				return EXIT_USAGE;
			}
			ddl_skip_once(lsn);
			i++;
		} else
			argv[n++] = argv[i];
	}
	if (prepare && (!reverse || drop)) {
		fprintf(stderr, "pghandoff %s: --prepare goes with --reverse, and not with --drop\n", cmd->name);
		return EXIT_USAGE;
	}
	if (reverse)
		mode = prepare ? REPL_REVERSE_PREPARE : drop ? REPL_REVERSE_DROP : REPL_REVERSE;
	else
		mode = drop ? REPL_DROP : REPL_FORWARD;
	rc = cli_load_config(cmd, n, argv, &config);
	if (rc >= 0)
		return rc;
	if (!log_open(config.log.level, config.log.format, config.log.file)) {
		config_free(&config);
		return EXIT_USAGE;
	}
	follow_parent();
	rc = replicate_main(&config, mode);
	config_free(&config);
	log_close();
	return rc;
}
