/*
 * The schema on the target: with schema = copy, pg_dump's pre-data section
 * (tables, types, functions) goes in before the data and the post-data
 * section (indexes, constraints, triggers) after it, which is much faster
 * than loading into indexed tables; pg_restore builds the post-data section
 * with several jobs.  With schema = none the DBA made the schema, and every
 * published table is checked column by column.
 *
 * The tools run as child processes; the schema-only archive is small, and
 * the password reaches them through PGPASSWORD, never argv.
 */
#include "replicator/schema.h"
#include "replicator/ddl.h"
#include "common/tmpfile.h"
#include "common/log.h"
#include "common/strbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

bool
schema_find_tool(const Config *config, const char *tool, int min_major, char *path, size_t len, const char *subject)
{
	const char *bindir = config->replication.pg_bindir;
	char cmd[PATH_MAX + 64], line[256];
	FILE *f;
	int major = 0;
	const char *p;

	if (bindir[0])
		snprintf(path, len, "%s/%s", bindir, tool);
	else
		snprintf(path, len, "%s", tool);
	snprintf(cmd, sizeof(cmd), "'%s' --version 2>/dev/null", path);
	f = popen(cmd, "r");
	if (!f || !fgets(line, sizeof(line), f)) {
		if (f)
			pclose(f);
		log_error(subject, "%s not found%s%s: install the PostgreSQL client tools or set pg_bindir", tool,
			  bindir[0] ? " in pg_bindir " : " on PATH", bindir);
		return false;
	}
	pclose(f);
	/* "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" */
	p = strstr(line, ") ");
	if (p)
		major = (int) strtol(p + 2, NULL, 10);
	if (major < min_major) {
		log_error(subject,
			  "%s is version %d, older than the source's %d: set pg_bindir to the tools of "
			  "PostgreSQL %d or later",
			  path, major, min_major, min_major);
		return false;
	}
	return true;
}

static char *
password_of(const ServerConfig *server)
{
	PQconninfoOption *opts, *o;
	char *pw = NULL;

	if (server->password[0])
		return strdup(server->password);
	opts = PQconninfoParse(server->conninfo, NULL);
	for (o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && o->val[0])
			pw = strdup(o->val);
	PQconninfoFree(opts);
	return pw;
}

/* Forks argv with stdin/stdout redirected; the password goes through the environment. */
static pid_t
spawn(char *const argv[], int in_fd, int out_fd, const char *password, const char *subject)
{
	pid_t pid = fork();

	if (pid < 0) {
		log_error(subject, "could not start %s: %s", argv[0], strerror(errno));
		return -1;
	}
	if (pid == 0) {
		if (in_fd >= 0 && dup2(in_fd, STDIN_FILENO) < 0)
			_exit(127);
		if (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0)
			_exit(127);
		if (password)
			setenv("PGPASSWORD", password, 1);
		else
			unsetenv("PGPASSWORD");
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

static bool
wait_child(pid_t pid, const char *what, const char *subject)
{
	int status;

	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			log_error(subject, "waiting for %s: %s", what, strerror(errno));
			return false;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	log_error(subject, "%s failed (%s %d)", what, WIFEXITED(status) ? "exit status" : "signal",
		  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	return false;
}

/* Runs `dump_argv | psql target` and waits for both. */
static bool
run_pipeline(char *const dump_argv[], const char *psql, const char *target_conninfo, const char *source_pw,
	     const char *target_pw, bool stop_on_error, const char *what, const char *subject)
{
	char *psql_argv[] = {(char *) psql,
			     "-X",
			     "-q",
			     "-v",
			     stop_on_error ? "ON_ERROR_STOP=1" : "ON_ERROR_STOP=0",
			     "-d",
			     (char *) target_conninfo,
			     NULL};
	int fds[2];
	pid_t dumper, loader;
	int devnull;
	bool ok;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		log_error(subject, "pipe: %s", strerror(errno));
		return false;
	}
	dumper = spawn(dump_argv, -1, fds[1], source_pw, subject);
	/* psql's results (a dump's set_config calls) are noise; its errors go to stderr. */
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	loader = dumper < 0 ? -1 : spawn(psql_argv, fds[0], devnull, target_pw, subject);
	close(fds[0]);
	close(fds[1]);
	if (devnull >= 0)
		close(devnull);
	if (dumper < 0 || loader < 0) {
		if (dumper > 0)
			(void) wait_child(dumper, dump_argv[0], subject);
		return false;
	}
	ok = wait_child(dumper, dump_argv[0], subject);
	ok = wait_child(loader, "psql", subject) && ok;
	if (ok)
		log_info(subject, "%s restored on the target", what);
	else
		log_error(subject, "%s could not be restored on the target", what);
	return ok;
}

bool
schema_dump(const Config *config, const DatabaseMapping *db, int source_major, const char *path, const char *subject)
{
	char pg_dump[PATH_MAX];
	char *source_ci = repl_conninfo(&config->source, db->name);
	char *source_pw = password_of(&config->source);
	bool keep_roles = config->replication.roles == ROLES_COPY;
	char *argv[20];
	int n = 0;
	pid_t pid;
	bool ok = false;

	if (!source_ci || !schema_find_tool(config, "pg_dump", source_major, pg_dump, sizeof(pg_dump), subject))
		goto done;
	argv[n++] = pg_dump;
	argv[n++] = "--schema-only";
	argv[n++] = "--format=custom";
	argv[n++] = "--no-publications";
	argv[n++] = "--no-subscriptions";
	if (!keep_roles) {
		argv[n++] = "--no-owner";
		argv[n++] = "--no-privileges";
	}
	argv[n++] = "--file";
	argv[n++] = (char *) path;
	argv[n++] = "-d";
	argv[n++] = source_ci;
	argv[n] = NULL;
	pid = spawn(argv, -1, -1, source_pw, subject);
	ok = pid > 0 && wait_child(pid, "pg_dump", subject);
done:
	free(source_ci);
	free(source_pw);
	return ok;
}

int
schema_anonymous_file(const char *kind, char *path, size_t len, const char *subject)
{
	int fd = tmpfile_anonymous(kind, subject);

	if (fd >= 0)
		snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

bool
schema_list(const Config *config, const char *path, const char *section, char **toc, const char *subject)
{
	char pg_restore[PATH_MAX], sect[64];
	char *argv[] = {pg_restore, sect, "--list", (char *) path, NULL};
	StrBuf out;
	char buf[8192];
	ssize_t got;
	int fds[2];
	pid_t pid;
	bool ok;

	*toc = NULL;
	snprintf(sect, sizeof(sect), "--section=%s", section);
	if (!schema_find_tool(config, "pg_restore", 0, pg_restore, sizeof(pg_restore), subject))
		return false;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		log_error(subject, "pipe: %s", strerror(errno));
		return false;
	}
	pid = spawn(argv, -1, fds[1], NULL, subject);
	close(fds[1]);
	strbuf_init(&out);
	while ((got = read(fds[0], buf, sizeof(buf))) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			log_error(subject, "reading pg_restore --list: %s", strerror(errno));
			break;
		}
		strbuf_append_len(&out, buf, (size_t) got);
	}
	close(fds[0]);
	ok = pid > 0 && wait_child(pid, "pg_restore --list", subject) && got == 0 && !out.failed;
	if (ok)
		*toc = strdup(strbuf_str(&out));
	strbuf_free(&out);
	if (ok && !*toc) {
		log_error(subject, "out of memory");
		ok = false;
	}
	return ok;
}

bool
schema_restore(const Config *config, const DatabaseMapping *db, const char *path, const char *section,
	       const char *use_list, int jobs, const char *subject)
{
	char pg_restore[PATH_MAX], sect[64], jobsarg[32];
	char *target_ci = repl_conninfo(&config->target, db->target_name);
	char *target_pw = password_of(&config->target);
	StrBuf ci;
	bool keep_roles = config->replication.roles == ROLES_COPY;
	char *argv[20];
	int n = 0;
	pid_t pid;
	bool ok = false;

	strbuf_init(&ci);
	if (!target_ci || !schema_find_tool(config, "pg_restore", 0, pg_restore, sizeof(pg_restore), subject))
		goto done;
	strbuf_append(&ci, target_ci);
	/* Index builds sort in memory rather than in temporary files: the target's default (64MB) spills. */
	if (strcmp(section, "post-data") == 0 && config->replication.maintenance_work_mem > 0)
		strbuf_appendf(&ci, " options='-c maintenance_work_mem=%lldkB'",
			       (long long) (config->replication.maintenance_work_mem / 1024));
	if (ci.failed)
		goto done;
	snprintf(sect, sizeof(sect), "--section=%s", section);
	snprintf(jobsarg, sizeof(jobsarg), "--jobs=%d", jobs);
	argv[n++] = pg_restore;
	/*
	 * Not both: with a list, pg_restore gives an entry without a section of
	 * its own (a COMMENT) the section of the listed entry before it.
	 */
	argv[n++] = use_list ? "--use-list" : sect;
	if (use_list)
		argv[n++] = (char *) use_list;
	/* Indexes and constraints of different tables build side by side. */
	argv[n++] = jobsarg;
	argv[n++] = "--exit-on-error";
	if (!keep_roles) {
		argv[n++] = "--no-owner";
		argv[n++] = "--no-privileges";
	}
	argv[n++] = "-d";
	argv[n++] = (char *) strbuf_str(&ci);
	argv[n++] = (char *) path;
	argv[n] = NULL;
	pid = spawn(argv, -1, -1, target_pw, subject);
	ok = pid > 0 && wait_child(pid, "pg_restore", subject);
	if (ok)
		log_info(subject, "%s restored on the target", section);
	else
		log_error(subject, "%s could not be restored on the target", section);
done:
	strbuf_free(&ci);
	free(target_ci);
	free(target_pw);
	return ok;
}

bool
schema_copy_roles(const Config *config, int source_major, const char *subject)
{
	char pg_dumpall[PATH_MAX], psql[PATH_MAX];
	char *source_ci = repl_conninfo(&config->source, "postgres");
	char *target_ci = repl_conninfo(&config->target, "postgres");
	char *source_pw = password_of(&config->source);
	char *target_pw = password_of(&config->target);
	bool ok = false;

	if (source_ci && target_ci &&
	    schema_find_tool(config, "pg_dumpall", source_major, pg_dumpall, sizeof(pg_dumpall), subject) &&
	    schema_find_tool(config, "psql", 0, psql, sizeof(psql), subject)) {
		char *argv[] = {pg_dumpall, "--roles-only", "-d", source_ci, NULL};

		/* A role that exists already fails its CREATE ROLE and keeps its settings: that is wanted. */
		ok = run_pipeline(argv, psql, target_ci, source_pw, target_pw, false, "roles", subject);
	}
	free(source_ci);
	free(target_ci);
	free(source_pw);
	free(target_pw);
	return ok;
}

#define SQL_COLUMNS(which) \
	"SELECT format('%I.%I', n.nspname, c.relname), a.attname, format_type(a.atttypid, a.atttypmod) " \
	"FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
	"JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped " \
	"WHERE " which " AND c.relpersistence = 'p' " \
	"  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' " DDL_EXCLUDE_SCHEMA \
	"ORDER BY 1, 2"

/* Every table, partitions included: rows are published into each by its own name. */
static const char sql_columns[] = SQL_COLUMNS("c.relkind IN ('r', 'p')");
/* Tables that are no partition: published through the roots, partitions are the target's own business. */
static const char sql_root_columns[] = SQL_COLUMNS("c.relkind IN ('r', 'p') AND NOT c.relispartition");

bool
schema_verify(ReplConn *source, ReplConn *target, bool via_root, const char *subject)
{
	const char *sql = via_root ? sql_root_columns : sql_columns;
	PGresult *s = NULL, *t = NULL;
	int i = 0, j = 0, ns, nt, problems = 0;

	if (!repl_query(source, sql, 0, NULL, &s) || !repl_query(target, sql, 0, NULL, &t)) {
		PQclear(s);
		return false;
	}
	ns = PQntuples(s);
	nt = PQntuples(t);
	/* Both sides sorted by (table, column): a merge finds every difference. */
	while (i < ns || j < nt) {
		int cmp;

		if (i == ns)
			cmp = 1;
		else if (j == nt)
			cmp = -1;
		else {
			cmp = strcmp(PQgetvalue(s, i, 0), PQgetvalue(t, j, 0));
			if (cmp == 0)
				cmp = strcmp(PQgetvalue(s, i, 1), PQgetvalue(t, j, 1));
		}
		if (cmp < 0) {
			log_error(subject, "table %s: column %s (%s) is missing on the target", PQgetvalue(s, i, 0),
				  PQgetvalue(s, i, 1), PQgetvalue(s, i, 2));
			problems++;
			i++;
		} else if (cmp > 0) {
			/* Extra target columns are fine only if nullable or defaulted; inserts will tell. */
			j++;
		} else {
			if (strcmp(PQgetvalue(s, i, 2), PQgetvalue(t, j, 2)) != 0) {
				log_error(subject, "table %s: column %s is %s on the source but %s on the target",
					  PQgetvalue(s, i, 0), PQgetvalue(s, i, 1), PQgetvalue(s, i, 2),
					  PQgetvalue(t, j, 2));
				problems++;
			}
			i++;
			j++;
		}
	}
	PQclear(s);
	PQclear(t);
	if (problems)
		log_error(subject, "schema = none: the target's schema differs from the source's in %d place(s)",
			  problems);
	return problems == 0;
}
