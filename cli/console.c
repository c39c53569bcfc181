/*
 * The running proxy's admin console, as the command-line tools reach it: as
 * the first of admin_users, with the password from PGPASSWORD (or
 * ~/.pgpass), else the auth file's plaintext secret.
 */
#include "cli/console.h"
#include "cli/cli.h"
#include "proxy/userlist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
print_notice(void *arg, const char *message)
{
	(void) arg;
	fprintf(stderr, "%s", message);
}

static void
ignore_notice(void *arg, const char *message)
{
	(void) arg;
	(void) message;
}

PGconn *
console_connect(const Config *config, bool verbose)
{
	const char *keywords[10], *values[10];
	char user[64], port[16];
	UserList *users = NULL;
	const UserEntry *entry;
	PGconn *conn;
	int n = 0;

	snprintf(user, sizeof(user), "%.*s", (int) strcspn(config->proxy.admin_users, ", "), config->proxy.admin_users);
	snprintf(port, sizeof(port), "%d", config->proxy.listen_port);
	keywords[n] = "host";
	values[n++] = config->proxy.unix_socket_dir && config->proxy.unix_socket_dir[0] ? config->proxy.unix_socket_dir
											: config->proxy.listen_addr;
	keywords[n] = "port";
	values[n++] = port;
	keywords[n] = "dbname";
	values[n++] = "pghandoff";
	keywords[n] = "user";
	values[n++] = user;
	keywords[n] = "application_name";
	values[n++] = "pghandoff console";
	keywords[n] = "connect_timeout";
	values[n++] = "5";
	/* No auth file (auth_type = trust) is no error: libpq finds a password elsewhere, or none is needed. */
	if (!getenv("PGPASSWORD") && config->proxy.auth_file && config->proxy.auth_file[0] &&
	    access(config->proxy.auth_file, R_OK) == 0) {
		users = userlist_load(config->proxy.auth_file);
		entry = users ? userlist_find(users, user) : NULL;
		if (entry && entry->kind == SECRET_PLAIN) {
			keywords[n] = "password";
			values[n++] = entry->secret;
		}
	}
	keywords[n] = NULL;
	values[n] = NULL;
	conn = PQconnectdbParams(keywords, values, 0);
	userlist_free(users);
	if (PQstatus(conn) != CONNECTION_OK) {
		if (verbose)
			fprintf(stderr, "pghandoff: could not reach the proxy's admin console at %s:%s as %s: %s",
				values[0], port, user, PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, verbose ? print_notice : ignore_notice, NULL);
	return conn;
}

int
console_open(const CliCommand *cmd, int argc, char **argv, PGconn **conn)
{
	Config config;
	int rc = cli_load_config(cmd, argc, argv, &config);

	*conn = NULL;
	if (rc >= 0)
		return rc;
	*conn = console_connect(&config, true);
	config_free(&config);
	return *conn ? -1 : EXIT_PROBLEM;
}
