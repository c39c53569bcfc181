/*
 * Loading the configuration file.
 *
 * inih does the INI syntax; this file does everything a DBA sees: one table of
 * keys with their types and defaults, strict values, every error reported as
 * FILE:LINE with the closest known key, and relative paths resolved against
 * the configuration file's directory so the process may run from anywhere.
 *
 * inih reports no line numbers to its handler, so lines are counted in our
 * own reader, which also rejects what inih would silently reinterpret
 * (indented continuation lines, over-long lines, lines with no "=").
 */
#include "config/config.h"
#include "common/strbuf.h"
#include "common/units.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libpq-fe.h>
#include <libgen.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum KeyType {
	KEY_STRING,
	KEY_SECRET, /* a string never printed */
	KEY_PATH,   /* a string; relative paths resolved against the file's directory */
	KEY_PORT,
	KEY_INT,
	KEY_SIZE,
	KEY_DURATION,
	KEY_SECONDS, /* a duration; a bare number is seconds, as PgBouncer reads its timeouts */
	KEY_BOOL,
	KEY_ENUM,
	KEY_NAME, /* a slot or publication name: [a-z0-9_], at most 63 bytes */
} KeyType;

typedef struct KeyDef {
	const char *section; /* NULL: a key of [source] and [target] */
	const char *name;
	KeyType type;
	size_t offset; /* into Config, or into ServerConfig when section is NULL */
	const char *default_value;
	const char *const *choices; /* KEY_ENUM: names in the enum's order */
	int64_t min, max;           /* KEY_INT */
} KeyDef;

static const char *const auth_type_names[] = {"trust", "md5", "scram-sha-256", "cert", NULL};
static const char *const tls_mode_names[] = {"disable", "allow", "require", NULL};
static const char *const schema_names[] = {"copy", "none", NULL};
static const char *const roles_names[] = {"none", "copy", NULL};
static const char *const ddl_names[] = {"replay", "stop", NULL};
static const char *const drain_names[] = {"abort", "cancel", NULL};
static const char *const unmovable_names[] = {"terminate", "abort", NULL};
static const char *const fence_names[] = {"none", "read_only", NULL};
static const char *const verify_names[] = {"none", "counts", NULL};
static const char *const pool_mode_names[] = {"session", "transaction", NULL};
static const char *const level_names[] = {"error", "warning", "info", "debug", NULL};
static const char *const format_names[] = {"text", "json", NULL};

#define S(field) offsetof(ServerConfig, field)
#define C(field) offsetof(Config, field)

static const KeyDef server_keys[] = {
	{NULL, "host", KEY_STRING, S(host), "", NULL, 0, 0},
	{NULL, "port", KEY_PORT, S(port), "", NULL, 0, 0},
	{NULL, "user", KEY_STRING, S(user), "", NULL, 0, 0},
	{NULL, "password", KEY_SECRET, S(password), "", NULL, 0, 0},
	{NULL, "conninfo", KEY_SECRET, S(conninfo), "", NULL, 0, 0},
};

static const KeyDef global_keys[] = {
	{"proxy", "listen_addr", KEY_STRING, C(proxy.listen_addr), "127.0.0.1", NULL, 0, 0},
	{"proxy", "listen_port", KEY_PORT, C(proxy.listen_port), "6432", NULL, 0, 0},
	{"proxy", "unix_socket_dir", KEY_PATH, C(proxy.unix_socket_dir), "", NULL, 0, 0},
	{"proxy", "auth_type", KEY_ENUM, C(proxy.auth_type), "scram-sha-256", auth_type_names, 0, 0},
	{"proxy", "auth_file", KEY_PATH, C(proxy.auth_file), "userlist.txt", NULL, 0, 0},
	{"proxy", "auth_user", KEY_STRING, C(proxy.auth_user), "", NULL, 0, 0},
	{"proxy", "auth_query", KEY_STRING, C(proxy.auth_query),
	 "SELECT usename, passwd FROM pg_shadow WHERE usename=$1", NULL, 0, 0},
	{"proxy", "auth_query_cache", KEY_DURATION, C(proxy.auth_query_cache), "30s", NULL, 0, 0},
	{"proxy", "client_tls_mode", KEY_ENUM, C(proxy.client_tls_mode), "disable", tls_mode_names, 0, 0},
	{"proxy", "client_tls_cert_file", KEY_PATH, C(proxy.client_tls_cert_file), "", NULL, 0, 0},
	{"proxy", "client_tls_key_file", KEY_PATH, C(proxy.client_tls_key_file), "", NULL, 0, 0},
	{"proxy", "client_tls_ca_file", KEY_PATH, C(proxy.client_tls_ca_file), "", NULL, 0, 0},
	{"proxy", "max_client_conn", KEY_INT, C(proxy.max_client_conn), "1000", NULL, 1, 1000000},
	{"proxy", "admin_users", KEY_STRING, C(proxy.admin_users), "postgres", NULL, 0, 0},
	{"proxy", "admin_reserved_conn", KEY_INT, C(proxy.admin_reserved_conn), "10", NULL, 1, 1000},
	{"proxy", "metrics_listen", KEY_STRING, C(proxy.metrics_listen), "", NULL, 0, 0},
	{"proxy", "state_file", KEY_PATH, C(proxy.state_file), "pghandoff.state", NULL, 0, 0},
	{"proxy", "client_login_timeout", KEY_DURATION, C(proxy.client_login_timeout), "15s", NULL, 0, 0},
	{"proxy", "shutdown_timeout", KEY_DURATION, C(proxy.shutdown_timeout), "30s", NULL, 0, 0},
	{"proxy", "pool_mode", KEY_ENUM, C(proxy.pool_mode), "session", pool_mode_names, 0, 0},
	{"proxy", "default_pool_size", KEY_INT, C(proxy.default_pool_size), "20", NULL, 1, 100000},
	{"proxy", "min_pool_size", KEY_INT, C(proxy.min_pool_size), "0", NULL, 0, 100000},
	{"proxy", "reserve_pool_size", KEY_INT, C(proxy.reserve_pool_size), "0", NULL, 0, 100000},
	{"proxy", "reserve_pool_timeout", KEY_SECONDS, C(proxy.reserve_pool_timeout), "5s", NULL, 0, 0},
	{"proxy", "max_db_connections", KEY_INT, C(proxy.max_db_connections), "0", NULL, 0, 1000000},
	{"proxy", "server_idle_timeout", KEY_SECONDS, C(proxy.server_idle_timeout), "600s", NULL, 0, 0},
	{"proxy", "server_lifetime", KEY_SECONDS, C(proxy.server_lifetime), "3600s", NULL, 0, 0},
	{"proxy", "server_reset_query", KEY_STRING, C(proxy.server_reset_query), "DISCARD ALL", NULL, 0, 0},
	{"proxy", "server_reset_query_always", KEY_BOOL, C(proxy.server_reset_query_always), "off", NULL, 0, 0},
	{"proxy", "server_check_query", KEY_STRING, C(proxy.server_check_query), "select 1", NULL, 0, 0},
	{"proxy", "server_check_delay", KEY_SECONDS, C(proxy.server_check_delay), "30s", NULL, 0, 0},
	{"proxy", "query_wait_timeout", KEY_SECONDS, C(proxy.query_wait_timeout), "120s", NULL, 0, 0},
	{"replication", "slot_name", KEY_NAME, C(replication.slot_name), "pghandoff", NULL, 0, 0},
	{"replication", "publication_name", KEY_NAME, C(replication.publication_name), "pghandoff", NULL, 0, 0},
	{"replication", "schema", KEY_ENUM, C(replication.schema), "copy", schema_names, 0, 0},
	{"replication", "roles", KEY_ENUM, C(replication.roles), "none", roles_names, 0, 0},
	{"replication", "ddl", KEY_ENUM, C(replication.ddl), "replay", ddl_names, 0, 0},
	{"replication", "copy_jobs", KEY_INT, C(replication.copy_jobs), "4", NULL, 1, 64},
	{"replication", "split_tables_larger_than", KEY_SIZE, C(replication.split_tables_larger_than), "0", NULL, 0, 0},
	{"replication", "pg_bindir", KEY_PATH, C(replication.pg_bindir), "", NULL, 0, 0},
	{"replication", "maintenance_work_mem", KEY_SIZE, C(replication.maintenance_work_mem), "512MB", NULL, 0, 0},
	{"replication", "slot_retention_warning", KEY_SIZE, C(replication.slot_retention_warning), "10GB", NULL, 0, 0},
	{"replication", "sequence_sync_interval", KEY_DURATION, C(replication.sequence_sync_interval), "30s", NULL, 0,
	 0},
	{"replication", "large_object_sync_interval", KEY_DURATION, C(replication.large_object_sync_interval), "10s",
	 NULL, 0, 0},
	{"cutover", "max_lag", KEY_SIZE, C(cutover.max_lag), "16MB", NULL, 0, 0},
	{"cutover", "drain_timeout", KEY_DURATION, C(cutover.drain_timeout), "5s", NULL, 0, 0},
	{"cutover", "catchup_timeout", KEY_DURATION, C(cutover.catchup_timeout), "30s", NULL, 0, 0},
	{"cutover", "answer_timeout", KEY_DURATION, C(cutover.answer_timeout), "10s", NULL, 0, 0},
	{"cutover", "on_drain_timeout", KEY_ENUM, C(cutover.on_drain_timeout), "abort", drain_names, 0, 0},
	{"cutover", "unmovable", KEY_ENUM, C(cutover.unmovable), "terminate", unmovable_names, 0, 0},
	{"cutover", "fence", KEY_ENUM, C(cutover.fence), "read_only", fence_names, 0, 0},
	{"cutover", "verify", KEY_ENUM, C(cutover.verify), "none", verify_names, 0, 0},
	{"cutover", "rollback", KEY_BOOL, C(cutover.rollback), "on", NULL, 0, 0},
	{"log", "level", KEY_ENUM, C(log.level), "info", level_names, 0, 0},
	{"log", "format", KEY_ENUM, C(log.format), "text", format_names, 0, 0},
	{"log", "file", KEY_PATH, C(log.file), "", NULL, 0, 0},
};

#define N_SERVER_KEYS (sizeof(server_keys) / sizeof(server_keys[0]))
#define N_GLOBAL_KEYS (sizeof(global_keys) / sizeof(global_keys[0]))

static const char *const section_names[] = {
	"source", "target", "databases", "proxy", "replication", "cutover", "log", NULL,
};

#define MAX_DATABASES 256
#define MAX_NAME_LEN 63

typedef struct Loader {
	Config *config;
	FILE *file;
	FILE *errors;
	const char *path;
	char *dir; /* directory of the file, for relative paths */
	int line;  /* line being parsed */
	bool at_line_start;
	int nerrors;
	int section_line[8]; /* per section_names entry: header line, 0 = absent */
	int global_seen[N_GLOBAL_KEYS];
	int server_seen[2][N_SERVER_KEYS];
	int databases_cap;
} Loader;

static void loader_error(Loader *ld, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
loader_error(Loader *ld, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(ld->errors, "%s:%d: ", ld->path, line);
	va_start(ap, fmt);
	vfprintf(ld->errors, fmt, ap);
	va_end(ap);
	fputc('\n', ld->errors);
	ld->nerrors++;
}

static size_t
edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t prev[64], cur[64];
	size_t i, j;

	if (la >= 63 || lb >= 63)
		return 99;
	for (j = 0; j <= lb; j++)
		prev[j] = j;
	for (i = 1; i <= la; i++) {
		cur[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t sub =
				prev[j - 1] + (tolower((unsigned char) a[i - 1]) != tolower((unsigned char) b[j - 1]));
			size_t del = prev[j] + 1;
			size_t ins = cur[j - 1] + 1;

			cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
		memcpy(prev, cur, sizeof(size_t) * (lb + 1));
	}
	return prev[lb];
}

/* A close enough name from names (NULL-terminated), or NULL. */
static const char *
closest_name(const char *word, const char *const *names, size_t n)
{
	const char *best = NULL;
	size_t best_distance = 99;
	size_t i;

	for (i = 0; i < n && names[i]; i++) {
		size_t d = edit_distance(word, names[i]);

		if (d < best_distance) {
			best_distance = d;
			best = names[i];
		}
	}
	if (best && best_distance <= (strlen(word) > 6 ? 3 : 2))
		return best;
	return NULL;
}

static int
section_index(const char *section)
{
	int i;

	for (i = 0; section_names[i]; i++)
		if (strcmp(section_names[i], section) == 0)
			return i;
	return -1;
}

static char *
resolve_path(Loader *ld, const char *value)
{
	char *out;
	size_t len;

	if (value[0] == '\0' || value[0] == '/' || !ld->dir)
		return strdup(value);
	len = strlen(ld->dir) + strlen(value) + 2;
	out = malloc(len);
	if (out)
		snprintf(out, len, "%s/%s", ld->dir, value);
	return out;
}

static bool
valid_name(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if (!(islower((unsigned char) *s) || isdigit((unsigned char) *s) || *s == '_'))
			return false;
	return n > 0 && n <= MAX_NAME_LEN;
}

/* Stores value into the field def describes, in base (a Config or a ServerConfig). */
static bool
set_value(Loader *ld, const KeyDef *def, void *base, const char *value, int line)
{
	char *field = (char *) base + def->offset;
	char err[256];
	int64_t n;
	bool b;
	int i;

	switch (def->type) {
	case KEY_STRING:
	case KEY_SECRET:
	case KEY_PATH:
	case KEY_NAME: {
		char *copy;

		if (def->type == KEY_NAME && !valid_name(value)) {
			loader_error(ld, line,
				     "invalid %s \"%s\": use 1 to %d lower-case letters, digits or underscores",
				     def->name, value, MAX_NAME_LEN);
			return false;
		}
		copy = def->type == KEY_PATH ? resolve_path(ld, value) : strdup(value);
		if (!copy) {
			loader_error(ld, line, "out of memory");
			return false;
		}
		free(*(char **) field);
		*(char **) field = copy;
		return true;
	}
	case KEY_PORT:
		if (value[0] == '\0' && def->section == NULL) {
			*(int *) field = 0;
			return true;
		}
		if (!parse_int(value, 1, 65535, &n, err, sizeof(err))) {
			loader_error(ld, line, "%s: %s", def->name, err);
			return false;
		}
		*(int *) field = (int) n;
		return true;
	case KEY_INT:
		if (!parse_int(value, def->min, def->max, &n, err, sizeof(err))) {
			loader_error(ld, line, "%s: %s", def->name, err);
			return false;
		}
		*(int *) field = (int) n;
		return true;
	case KEY_SIZE:
		if (!parse_size(value, &n, err, sizeof(err))) {
			loader_error(ld, line, "%s: %s", def->name, err);
			return false;
		}
		*(int64_t *) field = n;
		return true;
	case KEY_SECONDS:
		if (value[0] && strspn(value, "0123456789") == strlen(value) && strlen(value) <= 9) {
			*(int64_t *) field = (int64_t) strtol(value, NULL, 10) * 1000000;
			return true;
		}
		/* fall through */
	case KEY_DURATION:
		if (!parse_duration(value, &n, err, sizeof(err))) {
			loader_error(ld, line, "%s: %s", def->name, err);
			return false;
		}
		*(int64_t *) field = n;
		return true;
	case KEY_BOOL:
		if (!parse_bool(value, &b, err, sizeof(err))) {
			loader_error(ld, line, "%s: %s", def->name, err);
			return false;
		}
		*(bool *) field = b;
		return true;
	case KEY_ENUM:
		for (i = 0; def->choices[i]; i++) {
			if (strcmp(def->choices[i], value) == 0) {
				*(int *) field = i;
				return true;
			}
		}
		{
			char list[256] = "";
			size_t used = 0;

			for (i = 0; def->choices[i]; i++)
				used += (size_t) snprintf(list + used, used < sizeof(list) ? sizeof(list) - used : 0,
							  "%s%s", i ? ", " : "", def->choices[i]);
			loader_error(ld, line, "invalid value \"%s\" for %s: expected one of %s", value, def->name,
				     list);
		}
		return false;
	}
	return false;
}

static bool
ssl_keyword_known(const char *name)
{
	PQconninfoOption *opts = PQconndefaults();
	PQconninfoOption *o;
	bool found = false;

	if (!opts)
		return false;
	for (o = opts; o->keyword; o++)
		if (strcmp(o->keyword, name) == 0)
			found = true;
	PQconninfoFree(opts);
	return found;
}

static void
handle_server_key(Loader *ld, ServerConfig *server, int which, const char *name, const char *value)
{
	static const char *const names[] = {"host", "port", "user", "password", "conninfo", "sslmode", NULL};
	size_t i;

	for (i = 0; i < N_SERVER_KEYS; i++) {
		if (strcmp(server_keys[i].name, name) != 0)
			continue;
		if (ld->server_seen[which][i]) {
			loader_error(ld, ld->line, "duplicate key \"%s\" in [%s], first set at line %d", name,
				     server->role, ld->server_seen[which][i]);
			return;
		}
		ld->server_seen[which][i] = ld->line;
		(void) set_value(ld, &server_keys[i], server, value, ld->line);
		return;
	}

	/* Any libpq ssl* keyword is passed through untouched; libpq checks its value. */
	if (strncmp(name, "ssl", 3) == 0 && ssl_keyword_known(name)) {
		int k;

		for (k = 0; k < server->nssl; k++) {
			if (strcmp(server->ssl_keys[k], name) == 0) {
				loader_error(ld, ld->line, "duplicate key \"%s\" in [%s]", name, server->role);
				return;
			}
		}
		if (server->nssl == CONFIG_MAX_SSL_KEYS) {
			loader_error(ld, ld->line, "too many ssl keys in [%s]", server->role);
			return;
		}
		server->ssl_keys[server->nssl] = strdup(name);
		server->ssl_values[server->nssl] = strdup(value);
		server->nssl++;
		return;
	}

	{
		const char *hint = closest_name(name, names, SIZE_MAX);

		if (hint)
			loader_error(ld, ld->line, "unknown key \"%s\" in [%s]; did you mean \"%s\"?", name,
				     server->role, hint);
		else
			loader_error(ld, ld->line,
				     "unknown key \"%s\" in [%s]; known keys are host, port, user, "
				     "password, conninfo and libpq's ssl* keys",
				     name, server->role);
	}
}

/*
 * PgBouncer's form of a database line, "dbname=app_new pool_mode=transaction
 * pool_size=10": the keys that mean the same here are read, any other is an
 * error naming it.
 */
static bool
parse_database_options(Loader *ld, DatabaseMapping *db, const char *value)
{
	static const char *const int_keys[] = {"pool_size", "min_pool_size", "reserve_pool", "max_db_connections"};
	int *int_fields[] = {&db->pool_size, &db->min_pool_size, &db->reserve_pool, &db->max_db_connections};
	const char *p = value;

	while (*p) {
		char key[64], val[MAX_NAME_LEN + 1];
		size_t klen, vlen, i;
		bool known = false;

		p += strspn(p, " \t");
		if (!*p)
			break;
		klen = strcspn(p, "= \t");
		if (p[klen] != '=' || klen == 0 || klen >= sizeof(key)) {
			loader_error(ld, ld->line, "invalid database option near \"%s\": expected key=value", p);
			return false;
		}
		memcpy(key, p, klen);
		key[klen] = '\0';
		p += klen + 1;
		vlen = strcspn(p, " \t");
		if (vlen == 0 || vlen >= sizeof(val)) {
			loader_error(ld, ld->line, "invalid value for database option %s", key);
			return false;
		}
		memcpy(val, p, vlen);
		val[vlen] = '\0';
		p += vlen;
		if (strcmp(key, "dbname") == 0) {
			free(db->target_name);
			db->target_name = strdup(val);
			continue;
		}
		if (strcmp(key, "pool_mode") == 0) {
			if (strcmp(val, "session") != 0 && strcmp(val, "transaction") != 0) {
				loader_error(ld, ld->line,
					     "invalid value \"%s\" for pool_mode: expected one of session, transaction",
					     val);
				return false;
			}
			db->pool_mode = strcmp(val, "session") == 0 ? POOL_SESSION : POOL_TRANSACTION;
			continue;
		}
		for (i = 0; i < sizeof(int_keys) / sizeof(int_keys[0]); i++) {
			int64_t n;
			char err[128];

			if (strcmp(key, int_keys[i]) != 0)
				continue;
			known = true;
			if (!parse_int(val, 0, 100000, &n, err, sizeof(err))) {
				loader_error(ld, ld->line, "%s: %s", key, err);
				return false;
			}
			*int_fields[i] = (int) n;
		}
		if (!known) {
			loader_error(ld, ld->line,
				     "unknown database option \"%s\"; known options are dbname, pool_mode, pool_size, "
				     "min_pool_size, reserve_pool and max_db_connections",
				     key);
			return false;
		}
	}
	return true;
}

static void
handle_database(Loader *ld, const char *name, const char *value)
{
	Config *config = ld->config;
	DatabaseMapping *db;
	int i;

	if (strlen(name) > MAX_NAME_LEN || (strlen(value) > MAX_NAME_LEN && !strchr(value, '='))) {
		loader_error(ld, ld->line, "database name too long (at most %d bytes)", MAX_NAME_LEN);
		return;
	}
	for (i = 0; i < config->ndatabases; i++) {
		if (strcmp(config->databases[i].name, name) == 0) {
			loader_error(ld, ld->line, "database \"%s\" listed twice, first at line %d", name,
				     config->databases[i].line);
			return;
		}
	}
	if (config->ndatabases == MAX_DATABASES) {
		loader_error(ld, ld->line, "too many databases (at most %d)", MAX_DATABASES);
		return;
	}
	if (config->ndatabases == ld->databases_cap) {
		int cap = ld->databases_cap ? ld->databases_cap * 2 : 8;
		DatabaseMapping *grown = realloc(config->databases, sizeof(DatabaseMapping) * (size_t) cap);

		if (!grown) {
			loader_error(ld, ld->line, "out of memory");
			return;
		}
		config->databases = grown;
		ld->databases_cap = cap;
	}
	db = &config->databases[config->ndatabases++];
	db->name = strdup(name);
	db->target_name = NULL;
	db->pool_mode = db->pool_size = db->min_pool_size = db->reserve_pool = db->max_db_connections = -1;
	db->line = ld->line;
	if (strchr(value, '=')) {
		if (!parse_database_options(ld, db, value))
			return;
	}
	if (!db->target_name)
		db->target_name = strdup(value[0] && !strchr(value, '=') ? value : name);
}

static int
config_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	Loader *ld = user;
	int sidx = section_index(section);
	size_t i;

	if (section[0] == '\0') {
		loader_error(ld, ld->line, "key \"%s\" outside of any section", name);
		return 1;
	}
	if (sidx < 0)
		return 1; /* reported once, at the section header */
	if (sidx == 0 || sidx == 1) {
		handle_server_key(ld, sidx == 0 ? &ld->config->source : &ld->config->target, sidx, name, value);
		return 1;
	}
	if (sidx == 2) {
		handle_database(ld, name, value);
		return 1;
	}
	for (i = 0; i < N_GLOBAL_KEYS; i++) {
		if (strcmp(global_keys[i].section, section) != 0 || strcmp(global_keys[i].name, name) != 0)
			continue;
		if (ld->global_seen[i]) {
			loader_error(ld, ld->line, "duplicate key \"%s\" in [%s], first set at line %d", name, section,
				     ld->global_seen[i]);
			return 1;
		}
		ld->global_seen[i] = ld->line;
		(void) set_value(ld, &global_keys[i], ld->config, value, ld->line);
		return 1;
	}
	{
		const char *names[N_GLOBAL_KEYS + 1];
		const char *hint;
		size_t n = 0;

		for (i = 0; i < N_GLOBAL_KEYS; i++)
			if (strcmp(global_keys[i].section, section) == 0)
				names[n++] = global_keys[i].name;
		names[n] = NULL;
		hint = closest_name(name, names, n);
		if (hint)
			loader_error(ld, ld->line, "unknown key \"%s\" in [%s]; did you mean \"%s\"?", name, section,
				     hint);
		else
			loader_error(ld, ld->line, "unknown key \"%s\" in [%s]", name, section);
	}
	return 1;
}

static bool
is_comment_or_blank(const char *p)
{
	return *p == '\0' || *p == ';' || *p == '#';
}

/* Checks a section header line; records where known sections start. */
static void
check_section_line(Loader *ld, const char *p)
{
	const char *end = strchr(p, ']');
	char name[80];
	size_t len;
	int idx;

	if (!end) {
		loader_error(ld, ld->line, "section header is missing \"]\"");
		return;
	}
	len = (size_t) (end - p - 1);
	if (len >= sizeof(name)) {
		loader_error(ld, ld->line, "unknown section");
		return;
	}
	memcpy(name, p + 1, len);
	name[len] = '\0';
	idx = section_index(name);
	if (idx < 0) {
		const char *hint = closest_name(name, section_names, SIZE_MAX);

		if (hint)
			loader_error(ld, ld->line, "unknown section [%s]; did you mean [%s]?", name, hint);
		else
			loader_error(ld, ld->line, "unknown section [%s]", name);
		return;
	}
	if (ld->section_line[idx])
		loader_error(ld, ld->line, "section [%s] appears twice, first at line %d", name, ld->section_line[idx]);
	else
		ld->section_line[idx] = ld->line;
	if (idx == 0)
		ld->config->source.line = ld->line;
	else if (idx == 1)
		ld->config->target.line = ld->line;
}

/*
 * inih's line reader.  Hands inih each line without its leading white space,
 * so an indented line is never taken as the continuation of the previous
 * value, and checks the syntax itself so that every bad line is reported.
 */
static char *
config_ini_reader(char *str, int num, void *stream)
{
	Loader *ld = stream;
	size_t len;
	char *p;

	if (!fgets(str, num, ld->file))
		return NULL;
	ld->line++;
	len = strlen(str);
	if (len > 0 && str[len - 1] != '\n' && !feof(ld->file)) {
		int c;

		loader_error(ld, ld->line, "line is too long (at most %d characters)", num - 2);
		while ((c = fgetc(ld->file)) != EOF && c != '\n')
			;
		str[0] = '\0';
		return str;
	}
	for (p = str; *p == ' ' || *p == '\t'; p++)
		;
	memmove(str, p, strlen(p) + 1);
	len = strlen(str);
	while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r' || isspace((unsigned char) str[len - 1])))
		str[--len] = '\0';

	if (ld->line == 1 && (unsigned char) str[0] == 0xEF)
		return str; /* inih strips a UTF-8 BOM itself */
	if (is_comment_or_blank(str))
		return str;
	if (str[0] == '[') {
		check_section_line(ld, str);
		return str;
	}
	if (!strchr(str, '=')) {
		loader_error(ld, ld->line, "syntax error: expected \"key = value\" or \"[section]\"");
		str[0] = '\0';
		return str;
	}
	if (str[0] == '=') {
		loader_error(ld, ld->line, "syntax error: missing key before \"=\"");
		str[0] = '\0';
	}
	return str;
}

static bool
apply_defaults(Loader *ld)
{
	size_t i;

	for (i = 0; i < N_GLOBAL_KEYS; i++)
		if (!set_value(ld, &global_keys[i], ld->config, global_keys[i].default_value, 0))
			return false;
	for (i = 0; i < N_SERVER_KEYS; i++) {
		if (!set_value(ld, &server_keys[i], &ld->config->source, server_keys[i].default_value, 0) ||
		    !set_value(ld, &server_keys[i], &ld->config->target, server_keys[i].default_value, 0))
			return false;
	}
	return true;
}

static void
check_server(Loader *ld, ServerConfig *server, int last_line)
{
	if (server->line == 0) {
		loader_error(ld, last_line, "missing required section [%s]", server->role);
		return;
	}
	if (server->host[0] == '\0' && server->conninfo[0] == '\0')
		loader_error(ld, server->line, "[%s] needs \"host\" or \"conninfo\"", server->role);
	if (server->conninfo[0]) {
		char *errmsg = NULL;
		PQconninfoOption *opts = PQconninfoParse(server->conninfo, &errmsg);
		int which = server == &ld->config->source ? 0 : 1;

		if (!opts) {
			size_t len = errmsg ? strlen(errmsg) : 0;

			while (len > 0 && errmsg[len - 1] == '\n')
				errmsg[--len] = '\0';
			loader_error(ld, ld->server_seen[which][4], "invalid conninfo: %s",
				     errmsg ? errmsg : "out of memory");
		}
		PQconninfoFree(opts);
		PQfreemem(errmsg);
	}
	if (server->port)
		snprintf(server->port_str, sizeof(server->port_str), "%d", server->port);
	else
		server->port_str[0] = '\0';
}

static int
global_line(Loader *ld, const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < N_GLOBAL_KEYS; i++)
		if (strcmp(global_keys[i].section, section) == 0 && strcmp(global_keys[i].name, name) == 0)
			return ld->global_seen[i];
	return 0;
}

static void
check_config(Loader *ld)
{
	Config *config = ld->config;
	int last = ld->line > 0 ? ld->line : 1;

	check_server(ld, &config->source, last);
	check_server(ld, &config->target, last);
	if (config->ndatabases == 0)
		loader_error(ld, ld->section_line[2] ? ld->section_line[2] : last,
			     "no database configured: list at least one in [databases] (\"name =\")");

	if (config->proxy.client_tls_mode != CLIENT_TLS_DISABLE &&
	    (config->proxy.client_tls_cert_file[0] == '\0' || config->proxy.client_tls_key_file[0] == '\0'))
		loader_error(ld, global_line(ld, "proxy", "client_tls_mode"),
			     "client_tls_mode = %s needs client_tls_cert_file and client_tls_key_file",
			     tls_mode_names[config->proxy.client_tls_mode]);
	if ((config->proxy.auth_type == AUTH_MD5 || config->proxy.auth_type == AUTH_SCRAM_SHA_256) &&
	    config->proxy.auth_file[0] == '\0')
		loader_error(ld, global_line(ld, "proxy", "auth_file"), "auth_type = %s needs an auth_file",
			     auth_type_names[config->proxy.auth_type]);
	if (config->proxy.auth_type == AUTH_CERT && config->proxy.client_tls_mode == CLIENT_TLS_DISABLE)
		loader_error(ld, global_line(ld, "proxy", "auth_type"),
			     "auth_type = cert needs TLS: set client_tls_mode = require");
	if (config->proxy.auth_type == AUTH_CERT && config->proxy.client_tls_ca_file[0] == '\0')
		loader_error(ld, global_line(ld, "proxy", "auth_type"),
			     "auth_type = cert needs client_tls_ca_file, the CA that signs client certificates");
	if (config->proxy.auth_user[0] && config->proxy.auth_query[0] == '\0')
		loader_error(ld, global_line(ld, "proxy", "auth_query"),
			     "auth_user is set: auth_query must not be empty");
	if (config->proxy.metrics_listen[0]) {
		const char *colon = strrchr(config->proxy.metrics_listen, ':');
		int64_t port;
		char err[128];

		if (!colon || colon == config->proxy.metrics_listen ||
		    !parse_int(colon + 1, 1, 65535, &port, err, sizeof(err)))
			loader_error(ld, global_line(ld, "proxy", "metrics_listen"),
				     "invalid metrics_listen \"%s\": expected host:port", config->proxy.metrics_listen);
	}
	if (config->proxy.state_file[0] == '\0')
		loader_error(ld, global_line(ld, "proxy", "state_file"), "state_file must not be empty");
}

bool
config_load(const char *path, Config *config, FILE *errors)
{
	FILE *file = fopen(path, "r");
	bool ok;

	if (!file) {
		memset(config, 0, sizeof(*config));
		fprintf(errors, "%s: could not open configuration file: %s\n", path, strerror(errno));
		return false;
	}
	ok = config_load_stream(file, path, config, errors);
	fclose(file);
	return ok;
}

bool
config_load_stream(FILE *file, const char *path, Config *config, FILE *errors)
{
	Loader ld;
	char *pathcopy;
	int rc;

	memset(config, 0, sizeof(*config));
	memset(&ld, 0, sizeof(ld));
	config->source.role = "source";
	config->target.role = "target";
	ld.config = config;
	ld.errors = errors;
	ld.path = path;
	ld.file = file;

	config->path = strdup(path);
	pathcopy = strdup(path);
	if (!config->path || !pathcopy) {
		fprintf(errors, "%s: out of memory\n", path);
		free(pathcopy);
		config_free(config);
		return false;
	}
	ld.dir = strdup(dirname(pathcopy));
	free(pathcopy);

	if (apply_defaults(&ld)) {
		rc = ini_parse_stream(config_ini_reader, &ld, config_ini_handler, &ld);
		if (rc < 0)
			loader_error(&ld, ld.line, "could not read the file");
		else if (rc > 0 && ld.nerrors == 0)
			loader_error(&ld, rc, "syntax error");
		check_config(&ld);
	}
	free(ld.dir);

	if (ld.nerrors > 0) {
		config_free(config);
		return false;
	}
	return true;
}

static void
free_server(ServerConfig *server)
{
	size_t i;
	int k;

	for (i = 0; i < N_SERVER_KEYS; i++) {
		if (server_keys[i].type == KEY_STRING || server_keys[i].type == KEY_SECRET) {
			char **field = (char **) ((char *) server + server_keys[i].offset);

			free(*field);
			*field = NULL;
		}
	}
	for (k = 0; k < server->nssl; k++) {
		free(server->ssl_keys[k]);
		free(server->ssl_values[k]);
	}
	server->nssl = 0;
}

void
config_free(Config *config)
{
	size_t i;
	int d;

	for (i = 0; i < N_GLOBAL_KEYS; i++) {
		KeyType t = global_keys[i].type;

		if (t == KEY_STRING || t == KEY_SECRET || t == KEY_PATH || t == KEY_NAME) {
			char **field = (char **) ((char *) config + global_keys[i].offset);

			free(*field);
			*field = NULL;
		}
	}
	free_server(&config->source);
	free_server(&config->target);
	for (d = 0; d < config->ndatabases; d++) {
		free(config->databases[d].name);
		free(config->databases[d].target_name);
	}
	free(config->databases);
	config->databases = NULL;
	config->ndatabases = 0;
	free(config->path);
	config->path = NULL;
}

/* conninfo with any password replaced, so it can be shown. */
static void
format_conninfo_redacted(const char *conninfo, StrBuf *out)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	PQconninfoOption *o;
	bool first = true;

	if (!opts) {
		strbuf_append(out, "********");
		return;
	}
	for (o = opts; o->keyword; o++) {
		const char *v;

		if (!o->val || !o->val[0])
			continue;
		/* libpq marks its secret options (password, sslpassword) with dispchar "*". */
		v = strchr(o->dispchar, '*') ? "********" : o->val;
		strbuf_appendf(out, "%s%s='", first ? "" : " ", o->keyword);
		for (; *v; v++) {
			if (*v == '\'' || *v == '\\')
				strbuf_append_char(out, '\\');
			strbuf_append_char(out, *v);
		}
		strbuf_append_char(out, '\'');
		first = false;
	}
	PQconninfoFree(opts);
}

static void
format_value(const KeyDef *def, const void *base, StrBuf *out)
{
	const char *field = (const char *) base + def->offset;
	char buf[64];

	switch (def->type) {
	case KEY_STRING:
	case KEY_PATH:
	case KEY_NAME:
		strbuf_append(out, *(char *const *) field);
		break;
	case KEY_SECRET: {
		const char *v = *(char *const *) field;

		if (v[0] && strcmp(def->name, "conninfo") == 0)
			format_conninfo_redacted(v, out);
		else if (v[0])
			strbuf_append(out, "********");
		break;
	}
	case KEY_PORT:
		if (*(const int *) field)
			strbuf_appendf(out, "%d", *(const int *) field);
		break;
	case KEY_INT:
		strbuf_appendf(out, "%d", *(const int *) field);
		break;
	case KEY_SIZE:
		format_size(*(const int64_t *) field, buf, sizeof(buf));
		strbuf_append(out, buf);
		break;
	case KEY_DURATION:
	case KEY_SECONDS:
		format_duration(*(const int64_t *) field, buf, sizeof(buf));
		strbuf_append(out, buf);
		break;
	case KEY_BOOL:
		strbuf_append(out, *(const bool *) field ? "on" : "off");
		break;
	case KEY_ENUM:
		strbuf_append(out, def->choices[*(const int *) field]);
		break;
	}
}

static void
each_value(ConfigEachFn fn, void *arg, const char *section, const KeyDef *def, const void *base)
{
	StrBuf value;

	strbuf_init(&value);
	format_value(def, base, &value);
	fn(arg, section, def->name, strbuf_str(&value));
	strbuf_free(&value);
}

void
config_each(const Config *config, ConfigEachFn fn, void *arg)
{
	const ServerConfig *servers[2] = {&config->source, &config->target};
	size_t i;
	int s, k, d;

	for (s = 0; s < 2; s++) {
		for (i = 0; i < N_SERVER_KEYS; i++)
			each_value(fn, arg, servers[s]->role, &server_keys[i], servers[s]);
		for (k = 0; k < servers[s]->nssl; k++) {
			/* sslpassword unlocks the client key: as secret as a password. */
			bool secret = strstr(servers[s]->ssl_keys[k], "password") != NULL;

			fn(arg, servers[s]->role, servers[s]->ssl_keys[k],
			   secret ? "********" : servers[s]->ssl_values[k]);
		}
	}
	for (d = 0; d < config->ndatabases; d++) {
		const DatabaseMapping *db = &config->databases[d];
		char line[512];
		int n;

		if (db->pool_mode < 0 && db->pool_size < 0 && db->min_pool_size < 0 && db->reserve_pool < 0 &&
		    db->max_db_connections < 0) {
			fn(arg, "databases", db->name, db->target_name);
			continue;
		}
		n = snprintf(line, sizeof(line), "dbname=%s", db->target_name);
		if (db->pool_mode >= 0)
			n += snprintf(line + n, sizeof(line) - (size_t) n, " pool_mode=%s",
				      pool_mode_names[db->pool_mode]);
		if (db->pool_size >= 0)
			n += snprintf(line + n, sizeof(line) - (size_t) n, " pool_size=%d", db->pool_size);
		if (db->min_pool_size >= 0)
			n += snprintf(line + n, sizeof(line) - (size_t) n, " min_pool_size=%d", db->min_pool_size);
		if (db->reserve_pool >= 0)
			n += snprintf(line + n, sizeof(line) - (size_t) n, " reserve_pool=%d", db->reserve_pool);
		if (db->max_db_connections >= 0)
			snprintf(line + n, sizeof(line) - (size_t) n, " max_db_connections=%d", db->max_db_connections);
		fn(arg, "databases", db->name, line);
	}
	for (i = 0; i < N_GLOBAL_KEYS; i++)
		each_value(fn, arg, global_keys[i].section, &global_keys[i], config);
}

typedef struct PrintState {
	FILE *out;
	const char *section;
} PrintState;

static void
print_one(void *arg, const char *section, const char *key, const char *value)
{
	PrintState *ps = arg;

	if (!ps->section || strcmp(ps->section, section) != 0) {
		fprintf(ps->out, "%s[%s]\n", ps->section ? "\n" : "", section);
		ps->section = section;
	}
	fprintf(ps->out, "%s = %s\n", key, value);
}

void
config_print(const Config *config, FILE *out)
{
	PrintState ps = {out, NULL};

	fprintf(out, "; effective configuration of %s\n", config->path);
	config_each(config, print_one, &ps);
}

const DatabaseMapping *
config_find_database(const Config *config, const char *name)
{
	int i;

	for (i = 0; i < config->ndatabases; i++)
		if (strcmp(config->databases[i].name, name) == 0)
			return &config->databases[i];
	return NULL;
}

void
config_conn_params(const ServerConfig *server, const char *dbname, const char *application_name, const char **keywords,
		   const char **values)
{
	int n = 0;
	int k;

	/*
	 * A cluster that stops answering must not hold a login forever, nor a
	 * connection whose peer went away: bounds a conninfo may override, so
	 * they come before it.  (A stopped server's kernel still acknowledges
	 * TCP, so queries need deadlines of their own: replicator/conn.c.)
	 */
	keywords[n] = "connect_timeout";
	values[n++] = "10";
	keywords[n] = "keepalives";
	values[n++] = "1";
	keywords[n] = "keepalives_idle";
	values[n++] = "10";
	keywords[n] = "keepalives_interval";
	values[n++] = "5";
	keywords[n] = "keepalives_count";
	values[n++] = "3";
	keywords[n] = "tcp_user_timeout";
	values[n++] = "30000";
	/*
	 * PQconnectdbParams(..., expand_dbname = 1) expands only the first
	 * "dbname", and what it says overrides the keys before it; later keys
	 * override what it says.
	 */
	if (server->conninfo && server->conninfo[0]) {
		keywords[n] = "dbname";
		values[n++] = server->conninfo;
	}
	keywords[n] = "host";
	values[n++] = server->host;
	keywords[n] = "port";
	values[n++] = server->port_str;
	keywords[n] = "user";
	values[n++] = server->user;
	keywords[n] = "password";
	values[n++] = server->password;
	for (k = 0; k < server->nssl; k++) {
		keywords[n] = server->ssl_keys[k];
		values[n++] = server->ssl_values[k];
	}
	keywords[n] = "application_name";
	values[n++] = application_name;
	keywords[n] = "dbname";
	values[n++] = dbname;
	keywords[n] = NULL;
	values[n] = NULL;
}
