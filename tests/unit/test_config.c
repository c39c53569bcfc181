/*
 * The configuration parser on good and bad files: every error must name its
 * FILE:LINE, and the annotated example must agree with the built-in defaults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/config.h"

static const char minimal[] = "[source]\nhost = 127.0.0.1\n"
			      "[target]\nhost = 127.0.0.1\n"
			      "[databases]\napp =\n";

static char *
write_temp(const char *text)
{
	char *path = strdup("/tmp/pghandoff-test-XXXXXX.ini");
	int fd = mkstemps(path, 4);
	FILE *f;

	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* Loads text; returns whether it loaded, with the error output in *errors. */
static bool
load_text(const char *text, Config *config, char **errors, char **path_out)
{
	size_t len;
	FILE *err = open_memstream(errors, &len);
	char *path = write_temp(text);
	bool ok = config_load(path, config, err);

	fclose(err);
	if (path_out)
		*path_out = path;
	else {
		unlink(path);
		free(path);
	}
	return ok;
}

static void
expect_error(const char *text, int line, const char *needle)
{
	Config config;
	char *errors = NULL;
	char *path;
	char where[256];

	assert_false(load_text(text, &config, &errors, &path));
	snprintf(where, sizeof(where), "%s:%d: ", path, line);
	if (!strstr(errors, where) || !strstr(errors, needle))
		fail_msg("expected \"%s...%s\" in:\n%s", where, needle, errors);
	unlink(path);
	free(path);
	free(errors);
}

static char *
printed(const Config *config)
{
	char *out = NULL;
	size_t len;
	FILE *f = open_memstream(&out, &len);
	char *nl;

	config_print(config, f);
	fclose(f);
	/* The first line names the file, which differs between the two. */
	nl = strchr(out, '\n');
	memmove(out, nl + 1, strlen(nl + 1) + 1);
	return out;
}

static void
test_minimal_defaults(void **state)
{
	Config config;
	char *errors = NULL;

	(void) state;
	assert_true(load_text(minimal, &config, &errors, NULL));
	assert_string_equal(errors, "");
	assert_int_equal(config.ndatabases, 1);
	assert_string_equal(config.databases[0].name, "app");
	assert_string_equal(config.databases[0].target_name, "app");
	assert_int_equal(config.proxy.listen_port, 6432);
	assert_int_equal(config.proxy.auth_type, AUTH_SCRAM_SHA_256);
	/* PgBouncer's: no auth_user, no lookups; its default query. */
	assert_string_equal(config.proxy.auth_user, "");
	assert_string_equal(config.proxy.auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1");
	assert_int_equal(config.proxy.auth_query_cache, 30 * 1000 * 1000);
	assert_string_equal(config.proxy.client_tls_ca_file, "");
	assert_int_equal(config.cutover.max_lag, 16 * 1024 * 1024);
	assert_int_equal(config.cutover.drain_timeout, 5 * 1000 * 1000);
	assert_true(config.cutover.rollback);
	assert_int_equal(config.cutover.fence, FENCE_READ_ONLY);
	assert_int_equal(config.replication.copy_jobs, 4);
	assert_int_equal(config.replication.maintenance_work_mem, 512LL * 1024 * 1024);
	assert_int_equal(config.replication.split_tables_larger_than, 0);
	assert_int_equal(config.source.port, 0);
	assert_int_equal(config.log.level, LOG_LEVEL_INFO);
	/* Relative paths are resolved against the file's directory (/tmp). */
	assert_string_equal(config.proxy.auth_file, "/tmp/userlist.txt");
	config_free(&config);
	free(errors);
}

static void
test_example_matches_defaults(void **state)
{
	char path[4096];
	const char *root = getenv("PGHANDOFF_SOURCE_ROOT");
	Config example, defaults;
	char *a, *b, *errors = NULL, *example_copy;
	FILE *f;
	long size;

	(void) state;
	snprintf(path, sizeof(path), "%s/config/pghandoff.ini.example", root ? root : ".");
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, 0, SEEK_SET);
	example_copy = calloc(1, (size_t) size + 1);
	assert_int_equal(fread(example_copy, 1, (size_t) size, f), size);
	fclose(f);

	/* Both loaded from /tmp, so relative paths resolve alike. */
	assert_true(load_text(example_copy, &example, &errors, NULL));
	free(errors);
	assert_true(load_text(minimal, &defaults, &errors, NULL));
	free(errors);
	a = printed(&example);
	b = printed(&defaults);
	assert_string_equal(a, b);
	free(a);
	free(b);
	free(example_copy);
	config_free(&example);
	config_free(&defaults);
}

static void
test_values_parsed(void **state)
{
	Config config;
	char *errors = NULL;

	(void) state;
	assert_true(load_text("[source]\nconninfo = host=db1 port=5433 dbname=x\nsslmode = require\n"
			      "sslrootcert = /etc/ca.pem\n"
			      "[target]\nhost = db2\nport = 5434\npassword = s3cret\n"
			      "[databases]\napp =\nreports = reports_v2\n"
			      "[cutover]\nmax_lag = 1GB\ndrain_timeout = 2min\nrollback = off\n"
			      "on_drain_timeout = cancel\n"
			      "[proxy]\nauth_file = /etc/pghandoff/users.txt\nauth_type = md5\n"
			      "[log]\nlevel = debug\nformat = json\n",
			      &config, &errors, NULL));
	assert_string_equal(errors, "");
	assert_int_equal(config.ndatabases, 2);
	assert_string_equal(config.databases[1].target_name, "reports_v2");
	assert_int_equal(config.cutover.max_lag, INT64_C(1) << 30);
	assert_int_equal(config.cutover.drain_timeout, INT64_C(120) * 1000 * 1000);
	assert_false(config.cutover.rollback);
	assert_int_equal(config.cutover.on_drain_timeout, DRAIN_CANCEL);
	assert_string_equal(config.proxy.auth_file, "/etc/pghandoff/users.txt");
	assert_int_equal(config.proxy.auth_type, AUTH_MD5);
	assert_int_equal(config.log.level, LOG_LEVEL_DEBUG);
	assert_int_equal(config.log.format, LOG_FORMAT_JSON);
	assert_int_equal(config.source.nssl, 2);
	assert_string_equal(config.source.ssl_keys[0], "sslmode");
	assert_string_equal(config.source.ssl_values[0], "require");
	assert_string_equal(config.target.port_str, "5434");
	assert_non_null(config_find_database(&config, "reports"));
	assert_null(config_find_database(&config, "nope"));
	config_free(&config);
	free(errors);
}

static void
test_secrets_redacted(void **state)
{
	Config config;
	char *errors = NULL, *out;

	(void) state;
	assert_true(load_text("[source]\nconninfo = host=db1 password=topsecret1 user=u\n"
			      "[target]\nhost = db2\npassword = topsecret2\n[databases]\napp =\n",
			      &config, &errors, NULL));
	out = printed(&config);
	assert_null(strstr(out, "topsecret1"));
	assert_null(strstr(out, "topsecret2"));
	assert_non_null(strstr(out, "password = ********"));
	assert_non_null(strstr(out, "password='********'"));
	assert_non_null(strstr(out, "host='db1'"));
	free(out);
	config_free(&config);
	free(errors);
}

static void
test_conn_params(void **state)
{
	Config config;
	char *errors = NULL;
	const char *k[CONFIG_MAX_CONN_PARAMS + 1], *v[CONFIG_MAX_CONN_PARAMS + 1];

	(void) state;
	assert_true(load_text("[source]\nconninfo = host=db1\nport = 5999\nsslmode = disable\n"
			      "[target]\nhost = db2\n[databases]\napp =\n",
			      &config, &errors, NULL));
	config_conn_params(&config.source, "app", "pghandoff", k, v);
	/* Bounds first, so conninfo may override them; the real database name last, so it wins. */
	assert_string_equal(k[0], "connect_timeout");
	assert_string_equal(k[5], "tcp_user_timeout");
	assert_string_equal(k[6], "dbname");
	assert_string_equal(v[6], "host=db1");
	assert_string_equal(k[8], "port");
	assert_string_equal(v[8], "5999");
	assert_string_equal(k[11], "sslmode");
	assert_string_equal(k[13], "dbname");
	assert_string_equal(v[13], "app");
	assert_null(k[14]);
	config_free(&config);
	free(errors);
}

/* The pool settings: PgBouncer's bare-seconds timeouts, and its form of a database line. */
static void
test_pool_settings(void **state)
{
	Config config;
	char *errors = NULL;

	(void) state;
	assert_true(load_text("[source]\nhost = a\n[target]\nhost = b\n[databases]\n"
			      "app = dbname=app_new pool_mode=transaction pool_size=7 max_db_connections=9\n"
			      "other = other\n[proxy]\nserver_idle_timeout = 60\nquery_wait_timeout = 2min\n",
			      &config, &errors, NULL));
	assert_string_equal(config.databases[0].target_name, "app_new");
	assert_int_equal(config.databases[0].pool_mode, POOL_TRANSACTION);
	assert_int_equal(config.databases[0].pool_size, 7);
	assert_int_equal(config.databases[0].max_db_connections, 9);
	assert_int_equal(config.databases[0].min_pool_size, -1);
	assert_string_equal(config.databases[1].target_name, "other");
	assert_int_equal(config.databases[1].pool_size, -1);
	assert_int_equal(config.proxy.server_idle_timeout, 60 * 1000000LL);
	assert_int_equal(config.proxy.query_wait_timeout, 120 * 1000000LL);
	assert_int_equal(config.proxy.default_pool_size, 20);
	assert_string_equal(config.proxy.server_reset_query, "DISCARD ALL");
	config_free(&config);
	free(errors);
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp = dbname=x pool_sise=3\n", 6,
		     "unknown database option \"pool_sise\"");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp = pool_mode=statement\n", 6,
		     "invalid value \"statement\" for pool_mode");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp = pool_size=-1\n", 6, "pool_size");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\ndefault_pool_size = 0\n", 8,
		     "default_pool_size");
}

static void
test_errors(void **state)
{
	(void) state;
	expect_error("[source]\nhost = a\nprot = 5432\n[target]\nhost = b\n[databases]\napp =\n", 3,
		     "unknown key \"prot\" in [source]; did you mean \"port\"?");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nlisten_prot = 1\n", 8,
		     "did you mean \"listen_port\"?");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[cutovr]\n", 7,
		     "unknown section [cutovr]; did you mean [cutover]?");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[cutover]\ndrain_timeout = 5\n", 8,
		     "a unit is required");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[cutover]\nmax_lag = 16XB\n", 8,
		     "valid units are");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[cutover]\nfence = maybe\n", 8,
		     "expected one of none, read_only");
	expect_error("[source]\nhost = a\nhost = c\n[target]\nhost = b\n[databases]\napp =\n", 3,
		     "duplicate key \"host\" in [source], first set at line 2");
	expect_error("[source]\nhost = a\n[databases]\napp =\n", 4, "missing required section [target]");
	expect_error("[source]\nhost = a\n[target]\nport = 5\n[databases]\napp =\n", 3,
		     "[target] needs \"host\" or \"conninfo\"");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\n", 5, "no database configured");
	expect_error("host = a\n[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n", 1,
		     "outside of any section");
	expect_error("[source]\nhost = a\njunk\n[target]\nhost = b\n[databases]\napp =\n", 3, "syntax error");
	expect_error("[source]\nhost = a\n[target\nhost = b\n[databases]\napp =\n", 3, "missing \"]\"");
	expect_error("[source]\nconninfo = host=a bogus=1\n[target]\nhost = b\n[databases]\napp =\n", 2,
		     "invalid conninfo");
	expect_error("[source]\nhost = a\nsslbogus = 1\n[target]\nhost = b\n[databases]\napp =\n", 3,
		     "unknown key \"sslbogus\"");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\napp = x\n", 7,
		     "database \"app\" listed twice, first at line 6");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nclient_tls_mode = require\n",
		     8, "needs client_tls_cert_file and client_tls_key_file");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nlisten_port = 70000\n", 8,
		     "out of range");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[replication]\nslot_name = My-Slot\n",
		     8, "invalid slot_name");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[replication]\ncopy_jobs = -1\n", 8,
		     "out of range");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nmetrics_listen = nowhere\n",
		     8, "expected host:port");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[cutover]\nrollback = perhaps\n", 8,
		     "invalid boolean");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nauth_type = cert\n"
		     "client_tls_mode = require\nclient_tls_cert_file = c\nclient_tls_key_file = k\n",
		     8, "auth_type = cert needs client_tls_ca_file");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nauth_type = cert\n"
		     "client_tls_ca_file = ca\n",
		     8, "auth_type = cert needs TLS");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nauth_user = a\n"
		     "auth_query =\n",
		     9, "auth_query must not be empty");
	expect_error("[source]\nhost = a\n[target]\nhost = b\n[databases]\napp =\n[proxy]\nauth_query_cache = 5\n", 8,
		     "a unit is required");
}

static void
test_indented_line_is_not_a_continuation(void **state)
{
	Config config;
	char *errors = NULL;

	(void) state;
	/* inih would append an indented line to the previous value; we read it as a key. */
	assert_true(load_text("[source]\n  host = a\n  port = 5433\n[target]\nhost = b\n[databases]\napp =\n", &config,
			      &errors, NULL));
	assert_string_equal(config.source.host, "a");
	assert_int_equal(config.source.port, 5433);
	config_free(&config);
	free(errors);
}

static void
test_all_errors_reported(void **state)
{
	Config config;
	char *errors = NULL;
	char *path;
	int lines = 0;
	char *p;

	(void) state;
	assert_false(load_text("[source]\nhost = a\nfoo = 1\nbar = 2\n[target]\nhost = b\n[databases]\napp =\n"
			       "[cutover]\nmax_lag = big\n",
			       &config, &errors, &path));
	for (p = errors; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 3);
	unlink(path);
	free(path);
	free(errors);
}

static void
test_long_line(void **state)
{
	char text[1024];

	(void) state;
	snprintf(text, sizeof(text), "[source]\nhost = %0300d\n[target]\nhost = b\n[databases]\napp =\n", 1);
	expect_error(text, 2, "line is too long");
}

static void
test_missing_file(void **state)
{
	Config config;
	char *errors = NULL;
	size_t len;
	FILE *err = open_memstream(&errors, &len);

	(void) state;
	assert_false(config_load("/nonexistent/pghandoff.ini", &config, err));
	fclose(err);
	assert_non_null(strstr(errors, "/nonexistent/pghandoff.ini: could not open configuration file"));
	free(errors);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_defaults),    cmocka_unit_test(test_example_matches_defaults),
		cmocka_unit_test(test_values_parsed),       cmocka_unit_test(test_secrets_redacted),
		cmocka_unit_test(test_conn_params),         cmocka_unit_test(test_errors),
		cmocka_unit_test(test_pool_settings),       cmocka_unit_test(test_indented_line_is_not_a_continuation),
		cmocka_unit_test(test_all_errors_reported), cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_missing_file),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
