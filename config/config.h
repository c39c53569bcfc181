/*
 * The configuration file: one INI file, the user-facing contract.  Every key,
 * its type and its default live in one table in config.c; the annotated
 * config/pghandoff.ini.example documents the same defaults and the unit tests
 * check that the two agree.
 */
#ifndef PGHANDOFF_CONFIG_CONFIG_H
#define PGHANDOFF_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/log.h"

#define CONFIG_MAX_SSL_KEYS 16

typedef enum AuthType {
	AUTH_TRUST = 0,
	AUTH_MD5,
	AUTH_SCRAM_SHA_256,
	AUTH_CERT, /* the client's TLS certificate, signed by client_tls_ca_file, its CN the user */
} AuthType;

typedef enum ClientTlsMode {
	CLIENT_TLS_DISABLE = 0,
	CLIENT_TLS_ALLOW,
	CLIENT_TLS_REQUIRE,
} ClientTlsMode;

typedef enum SchemaMode { SCHEMA_COPY = 0, SCHEMA_NONE } SchemaMode;
typedef enum RolesMode { ROLES_NONE = 0, ROLES_COPY } RolesMode;
typedef enum DdlMode { DDL_REPLAY = 0, DDL_STOP } DdlMode;
typedef enum DrainPolicy { DRAIN_ABORT = 0, DRAIN_CANCEL } DrainPolicy;
typedef enum UnmovablePolicy { UNMOVABLE_TERMINATE = 0, UNMOVABLE_ABORT } UnmovablePolicy;
typedef enum FenceMode { FENCE_NONE = 0, FENCE_READ_ONLY } FenceMode;
typedef enum VerifyMode { VERIFY_NONE = 0, VERIFY_COUNTS } VerifyMode;
typedef enum PoolMode { POOL_SESSION = 0, POOL_TRANSACTION } PoolMode;

/* [source] and [target]: where a cluster is and how to log in to it. */
typedef struct ServerConfig {
	const char *role; /* "source" or "target" */
	char *host;
	int port; /* 0: libpq's default (PGPORT or 5432) */
	char port_str[8];
	char *user;
	char *password;
	char *conninfo;
	int nssl;
	char *ssl_keys[CONFIG_MAX_SSL_KEYS]; /* libpq ssl* keywords, passed through */
	char *ssl_values[CONFIG_MAX_SSL_KEYS];
	int line; /* line of the section header, 0 when absent */
} ServerConfig;

/* One line of [databases]: a database proxied, replicated and cut over. */
typedef struct DatabaseMapping {
	char *name;        /* name on the source, and the name clients use */
	char *target_name; /* name on the target */
	/* PgBouncer's per-database overrides; -1: [proxy]'s value. */
	int pool_mode;
	int pool_size;
	int min_pool_size;
	int reserve_pool;
	int max_db_connections;
	int line;
} DatabaseMapping;

typedef struct ProxyConfig {
	char *listen_addr;
	int listen_port;
	char *unix_socket_dir;
	AuthType auth_type;
	char *auth_file;
	char *auth_user;          /* empty: no auth_query lookups */
	char *auth_query;         /* PgBouncer's: $1 is the user, answers (name, secret) */
	int64_t auth_query_cache; /* microseconds a looked-up secret is used before it is asked again */
	ClientTlsMode client_tls_mode;
	char *client_tls_cert_file;
	char *client_tls_key_file;
	char *client_tls_ca_file; /* auth_type = cert: the CA that signs client certificates */
	int max_client_conn;
	char *admin_users;       /* comma-separated */
	int admin_reserved_conn; /* admin console sessions, let in beyond max_client_conn */
	char *metrics_listen;
	char *state_file;
	int64_t client_login_timeout; /* microseconds */
	int64_t shutdown_timeout;     /* microseconds */
	/* Server connection pools, with PgBouncer's meanings and defaults. */
	PoolMode pool_mode;
	int default_pool_size;
	int min_pool_size;
	int reserve_pool_size;
	int64_t reserve_pool_timeout; /* microseconds */
	int max_db_connections;       /* 0: no limit */
	int64_t server_idle_timeout;  /* microseconds; 0: never */
	int64_t server_lifetime;      /* microseconds; 0: never */
	char *server_reset_query;
	bool server_reset_query_always;
	char *server_check_query;
	int64_t server_check_delay; /* microseconds */
	int64_t query_wait_timeout; /* microseconds; 0: wait forever */
} ProxyConfig;

typedef struct ReplicationConfig {
	char *slot_name;
	char *publication_name;
	SchemaMode schema;
	RolesMode roles;
	DdlMode ddl; /* schema changes while streaming: replayed, or the follower stops */
	int copy_jobs;
	int64_t split_tables_larger_than; /* bytes: larger tables are copied in ctid ranges; 0: never */
	char *pg_bindir;
	int64_t maintenance_work_mem;   /* bytes, of each index build on the target after the copy; 0: the target's */
	int64_t slot_retention_warning; /* bytes of WAL the slot may hold before warnings */
	int64_t sequence_sync_interval; /* microseconds */
	int64_t large_object_sync_interval; /* microseconds between two diffs of the large objects; 0: none */
} ReplicationConfig;

typedef struct CutoverConfig {
	int64_t max_lag;         /* bytes */
	int64_t drain_timeout;   /* microseconds */
	int64_t catchup_timeout; /* microseconds: fenced source to target caught up */
	int64_t answer_timeout;  /* microseconds: a cluster's answer to one login or query of the cutover */
	DrainPolicy on_drain_timeout;
	UnmovablePolicy unmovable;
	FenceMode fence;
	VerifyMode verify;
	bool rollback;
} CutoverConfig;

typedef struct LogConfig {
	LogLevel level;
	LogFormat format;
	char *file;
} LogConfig;

typedef struct Config {
	char *path;
	ServerConfig source;
	ServerConfig target;
	int ndatabases;
	DatabaseMapping *databases;
	ProxyConfig proxy;
	ReplicationConfig replication;
	CutoverConfig cutover;
	LogConfig log;
} Config;

/*
 * Reads and checks path.  Every problem is written to errors as
 * "FILE:LINE: message" (all of them, not only the first); on failure *config
 * holds nothing that needs freeing.
 */
bool config_load(const char *path, Config *config, FILE *errors) __attribute__((warn_unused_result));
/* The same from an open stream; path is used in messages and for relative paths. */
bool config_load_stream(FILE *file, const char *path, Config *config, FILE *errors) __attribute__((warn_unused_result));
void config_free(Config *config);

/* Calls fn for every setting in file order, values formatted as in the file, secrets "********". */
typedef void (*ConfigEachFn)(void *arg, const char *section, const char *key, const char *value);
void config_each(const Config *config, ConfigEachFn fn, void *arg);

/* Writes the effective configuration as INI, secrets replaced by "********". */
void config_print(const Config *config, FILE *out);

const DatabaseMapping *config_find_database(const Config *config, const char *name);

/* Fills the libpq keyword/value arrays for a connection to dbname (NULL-terminated; at most
 * CONFIG_MAX_CONN_PARAMS entries).  The arrays point into config and dbname. */
#define CONFIG_MAX_CONN_PARAMS (CONFIG_MAX_SSL_KEYS + 16)
void config_conn_params(const ServerConfig *server, const char *dbname, const char *application_name,
			const char **keywords, const char **values);

#endif
