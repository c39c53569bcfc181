/*
 * The proxy's objects: clients (frontend connections), servers (backend
 * connections), the databases they belong to, and the proxy itself.
 *
 * Each connection kind has one state enum; each state says which list the
 * object is on, and only client_change_state / server_change_state move it.
 * Teardown has one path per kind (client_disconnect, server_disconnect) that
 * takes a reason; an object closed inside its own callback is only marked
 * JUSTFREE and freed after the loop iteration.
 */
#ifndef PGHANDOFF_PROXY_OBJECTS_H
#define PGHANDOFF_PROXY_OBJECTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <ev.h>

#include "common/list.h"
#include "config/config.h"
#include "proxy/cluster.h"
#include "proxy/negotiate.h"
#include "proxy/sbuf.h"
#include "proxy/sqlscan.h"

#define PROXY_ADMIN_DATABASE "pghandoff"
#define CANCEL_KEY_MAX 32 /* the key length we issue to protocol 3.2 clients; 3.0 clients get 4 bytes */
#define SUBJECT_LEN 224
#define CUSTOM_SETTINGS_MAX 64

typedef struct Proxy Proxy;
typedef struct Client Client;
typedef struct Server Server;
typedef struct Pool Pool;
typedef struct UserList UserList;
typedef struct ScramServer ScramServer;
typedef struct ScramClient ScramClient;
typedef struct UserEntry UserEntry;
typedef struct AuthSecret AuthSecret;
typedef struct AuthLookup AuthLookup;
/* The longest message a logged-in client may send: PostgreSQL's MaxAllocSize. */
#define MAX_MESSAGE_LEN 0x3fffffff

typedef struct Script Script;
typedef struct PktBuf PktBuf;
typedef struct Cutover Cutover;
typedef struct SessionCarry SessionCarry;
typedef struct CutoverReport CutoverReport;
typedef struct CutoverCleanup CutoverCleanup;

/* Upper bounds of the latency histograms' buckets, in seconds; the last bucket is +Inf. */
#define STATS_BUCKETS 12
extern const double stats_bucket_bounds[STATS_BUCKETS - 1];

typedef struct DbStats {
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t bytes_received; /* from clients */
	uint64_t bytes_sent;     /* to clients */
	uint64_t xact_time_us;
	uint64_t query_time_us;
	uint64_t query_hist[STATS_BUCKETS]; /* non-cumulative counts per bucket */
	uint64_t xact_hist[STATS_BUCKETS];
} DbStats;

void stats_observe(uint64_t *hist, double seconds);

/* One database of [databases]: where its clients go, and its counters. */
typedef struct Database {
	char name[64];
	char target_name[64];
	bool paused; /* PAUSE: new transactions wait */
	int nclients;
	/* [databases] overrides of the pool settings (DatabaseMapping), -1 when none. */
	int pool_mode;
	int pool_size;
	int min_pool_size;
	int reserve_pool;
	int max_db_connections;
	DbStats stats;
} Database;

typedef enum ClientState {
	CL_LOGIN,       /* on proxy.login_clients: startup packet, TLS, authentication */
	CL_WAIT_SERVER, /* on proxy.active_clients: authenticated, its server logging in */
	CL_ACTIVE,      /* on proxy.active_clients: linked to a logged-in server, relaying */
	CL_ADMIN,       /* on proxy.admin_clients: a session of the admin console */
	CL_JUSTFREE,    /* on proxy.justfree_clients: closed, freed after this loop iteration */
} ClientState;

/*
 * Which limit a client counts against.  max_client_conn counts clients from
 * accept on, logged in or still logging in; admin console sessions count
 * against admin_reserved_conn instead, so a full proxy still answers its
 * console.  A connection accepted while every place is taken gets none: its
 * startup packet may still be a CancelRequest or an admin login.
 */
typedef enum ClientPlace {
	PLACE_NONE,   /* none held: refused at its startup packet unless one frees up */
	PLACE_CLIENT, /* one of max_client_conn's */
	PLACE_ADMIN,  /* one of admin_reserved_conn's */
} ClientPlace;

typedef enum ClientAuthStep {
	CA_NONE,
	CA_LOOKUP,        /* auth_query runs; the password request follows its answer */
	CA_LOOKUP_AGAIN,  /* an md5 response failed a cached secret: checked again against a fresh one */
	CA_WAIT_PASSWORD, /* md5 request sent */
	CA_WAIT_SASL_INITIAL,
	CA_WAIT_SASL_FINAL,
	CA_DONE,
} ClientAuthStep;

/* A named prepared statement a client made with Parse (protocol level). */
typedef struct PreparedStmt {
	struct PreparedStmt *next;
	uint32_t len;        /* of msg */
	bool leaves_session; /* running it cannot change the session state (proxy/sqlscan.h) */
	uint8_t msg[];       /* the whole Parse message, to re-Parse it elsewhere */
} PreparedStmt;

/* What a cutover keeps of a client it moves (cutover/loop/ writes it; teardown frees it). */
typedef struct ClientCutover {
	Server *standby;     /* its server on the other cluster, logged in before the pause */
	SessionCarry *carry; /* its session state, read and replayed on the standby */
	int carry_round;     /* the round of reads before the pause that last read its session */
	bool wait_login;     /* logged in during the pause: its server opens once the cutover ends */
	bool txn_killed;     /* its open transaction was rolled back: its next request hears so */
	bool killed_other;   /* since then, something other than a ROLLBACK was asked */
	uint8_t killed_nreplies;
	uint8_t killed_replies[16]; /* the answers an extended-protocol ROLLBACK expects, by type */
	bool cancel_sent;           /* its running statement was cancelled */
} ClientCutover;

struct Client {
	List head;
	ClientState state;
	uint32_t id;
	SBuf sbuf;
	Proxy *proxy;
	Server *server;
	Database *db;
	Pool *pool;     /* its database's and user's, from its login on */
	List wait_head; /* on pool->waiting while it waits for a server connection */
	bool pool_waiting;
	ev_tstamp wait_since;
	bool login_answered; /* told its login is complete before its server connection was there */
	bool acquiring;      /* transaction mode: getting a server connection from inside its own callback */
	/*
	 * Transaction mode: outside a transaction block it ran something that
	 * may set session state (SET, LISTEN, a lock...): its server connection
	 * is reset before another client gets it, and it is warned once.
	 */
	bool txn_touched;
	bool txn_warned;
	char user[64];
	char dbname[64];
	char subject[SUBJECT_LEN]; /* "C-12 app@db 127.0.0.1:50312", for logs */
	struct sockaddr_storage addr;
	ev_tstamp connect_time;
	ev_tstamp request_time; /* when the current query or transaction started */
	ev_tstamp xact_start;
	ev_timer login_timer;

	/* Startup parameters forwarded to the server: key\0value\0... */
	char *params;
	uint32_t params_len;
	uint16_t proto_minor;
	NegotiateState negotiation; /* SSLRequest and GSSENCRequest, before the startup packet */
	bool tls;
	bool is_admin;
	ClientPlace place; /* client_take_place changes it, client_disconnect gives it back */

	/* Authentication, while logging in. */
	ClientAuthStep auth_step;
	uint8_t md5_salt[4];
	ScramServer *scram;
	bool scram_mock;      /* an exchange that can only fail: no verifier for this user */
	bool have_client_key; /* recovered from a SCRAM proof, for pass-through */
	uint8_t client_key[32];
	AuthLookup *lookup;                /* auth_query running for it (authquery.c) */
	void (*looked_up)(Client *client); /* told when it answers (client.c): the lookup sits below the client */
	AuthSecret *auth_secret;           /* its secret from auth_query; NULL: the auth file's, if any */
	char md5_response[40];             /* CA_LOOKUP_AGAIN: the response, checked again */

	/* Where the protocol stands, as seen by the relay. */
	char txn_status;     /* of the last ReadyForQuery */
	int32_t pending_rfq; /* Query, Sync and FunctionCall sent, ReadyForQuery not yet seen */
	bool unsynced;       /* extended-protocol messages sent since the last Sync */
	bool in_copy;        /* COPY FROM STDIN in progress */
	bool held;           /* a message waits for RESUME */
	int nstmts;
	PreparedStmt *stmts;
	/*
	 * Whether anything it sent since its login may have changed its session
	 * state: until then a cutover knows that state without reading it.
	 */
	bool session_touched;
	bool unnamed_leaves_session; /* the unnamed statement's text leaves the session alone */

	/* The key this client's CancelRequest must carry; issued by the proxy. */
	int32_t cancel_pid;
	uint8_t cancel_key_len;
	uint8_t cancel_key[CANCEL_KEY_MAX];

	/* The admin console's PAUSE waits on this client's databases to go idle. */
	bool admin_waiting_pause;
	char admin_pause_db[64];
	/* The admin console's CUTOVER or ROLLBACK waits for it to finish. */
	bool admin_waiting_cutover;
	/* The admin console refused an extended-protocol message: the rest up to Sync is skipped. */
	bool admin_skip_to_sync;

	ev_tstamp held_since; /* when its next message started waiting for a pause to end */
	ClientCutover cutover;
};

typedef enum ServerState {
	SV_CONNECTING, /* on proxy.login_servers: TCP connect, TLS */
	SV_LOGIN,      /* on proxy.login_servers: startup sent, authenticating */
	SV_ACTIVE,     /* on proxy.active_servers: logged in, linked to its client */
	SV_STANDBY,    /* on proxy.standby_servers: logged in for its client's cutover, not yet relaying */
	SV_RETIRING,   /* on proxy.retiring_servers: its client moved on; closed a few at a time after */
	SV_IDLE,       /* on proxy.idle_servers: in its pool, reset, waiting for a client */
	SV_TESTING,    /* on proxy.idle_servers: running the reset or check query between two clients */
	SV_JUSTFREE,   /* on proxy.justfree_servers: closed, freed after this loop iteration */
} ServerState;

struct Server {
	List head;
	ServerState state;
	uint32_t id;
	SBuf sbuf;
	Proxy *proxy;
	Client *client;
	Database *db;
	Pool *pool;
	const Cluster *cluster; /* source or target */
	char user[64];
	/* The startup parameters it logged in with (Client.params'), which a client reusing it must share. */
	char *params;
	uint32_t params_len;
	ev_tstamp idle_since; /* when its last client left it (or its login ended) */
	/*
	 * Transaction mode: its transaction ended (ReadyForQuery, idle): the
	 * loop's prepare hook gives it back once that answer is out.  Whose named
	 * statements it holds (a client id, 0: none), and whether it holds any.
	 */
	bool txn_done;
	uint32_t stmts_owner;
	bool named_stmts;
	char subject[SUBJECT_LEN];
	ev_tstamp connect_time;
	bool tls_requested;
	ScramClient *scram;
	/* ParameterStatus messages of the login, replayed to the client. */
	uint8_t *login_params;
	uint32_t login_params_len;
	int32_t backend_pid;
	uint8_t backend_key_len;
	uint8_t backend_key[32];     /* 4 bytes in protocol 3.0, which the proxy speaks to servers */
	bool is_standby;             /* opened by a cutover as its client's standby */
	const char *login_read_only; /* "on", "off": default_transaction_read_only at login (a standby), else NULL */
	bool warmed;                 /* a standby: done with its warm-up, or has none to do */
	Script *script;              /* a query of the proxy's own runs: the server's messages go to it */
};

typedef struct Listener {
	ev_io io;
	int fd;
	Proxy *proxy;
	bool unix_socket;
	char path[108];
} Listener;

#define PROXY_MAX_LISTENERS 4

/* The `pghandoff replicate` processes the proxy runs as children (followers.c). */
typedef enum FollowerKind {
	FOLLOWER_FORWARD,      /* `replicate`, under `pghandoff run` */
	FOLLOWER_REVERSE,      /* `replicate --reverse`, after a cutover with rollback = on */
	FOLLOWER_REVERSE_DROP, /* `replicate --reverse --drop`, after a rollback */
	FOLLOWER_KINDS,
} FollowerKind;

typedef struct Follower {
	ev_child watcher;
	ev_timer restart; /* a follower that died is started again after a while */
	Proxy *proxy;
	FollowerKind kind;
	int pid;        /* 0: not running */
	bool wanted;    /* it should run: restarted when it exits */
	bool then_drop; /* FOLLOWER_REVERSE: once it has exited, drop its slot */
	int restarts;
} Follower;

struct Proxy {
	struct ev_loop *loop;
	Config config;
	char *config_path;
	UserList *users;
	SSL_CTX *client_tls;
	Cluster source;
	Cluster target;
	Listener listeners[PROXY_MAX_LISTENERS];
	int nlisteners;
	int ndatabases;
	Database *databases;

	List login_clients;
	List active_clients;
	List admin_clients;
	List justfree_clients;
	List login_servers;
	List active_servers;
	List standby_servers;
	List retiring_servers;
	List idle_servers;
	List justfree_servers;
	List pools;
	ev_timer pool_timer;
	int nclients;
	int nclient_places; /* clients holding a place of max_client_conn */
	int nadmin_places;  /* of admin_reserved_conn */

	/*
	 * Accepting stops a while when accept() fails for want of descriptors or
	 * memory (proxy.c); a line about it is logged at most once per interval.
	 */
	ev_timer accept_retry;
	bool accept_paused;
	bool accept_failing;      /* a failure was logged, its recovery not yet */
	uint64_t accept_failures; /* failed accept() calls not yet logged */
	ev_tstamp accept_logged;  /* when the last line about them was */

	uint32_t next_client_id;
	uint32_t next_server_id;
	bool shutting_down;
	int pause_waiters;      /* admin clients waiting for a PAUSE to take hold */
	const Cluster *serving; /* where clients are served: the source, or the target after a cutover */
	bool rolled_back;       /* the last switch was a rollback */
	/*
	 * Custom settings (app.tenant) a session may have: pg_settings never
	 * shows them, so a cutover reads these by name.  Learned from what
	 * clients send and from the databases' functions; at most
	 * CUSTOM_SETTINGS_MAX, first come.
	 */
	int ncustom_settings;
	char custom_settings[CUSTOM_SETTINGS_MAX][SQL_SETTING_NAME_MAX + 1];
	Cutover *cutover;           /* the cutover or rollback running, if any */
	CutoverReport *last_report; /* the last cutover's, for SHOW CUTOVER */
	CutoverCleanup *cleanup;    /* what an aborted cutover still has to undo, retried (cutover/loop/cleanup.c) */
	Follower followers[FOLLOWER_KINDS];
	struct ReplProbe *probe; /* each database's slot and origin as the clusters see them (replprobe.h) */
	bool run_replicator;     /* `pghandoff run`: the forward follower is a child of the proxy */
	bool resume_pending;     /* clients held by a proxy query wait for the next loop iteration */
	/*
	 * Something a PAUSE or the cutover waits for may have happened (a client
	 * left, a transaction ended, a script finished): set by proxy_recheck
	 * anywhere below, acted on by the loop's prepare hook (proxy.c), so the
	 * relay and teardown never call up into the console or the cutover.
	 */
	bool recheck;
	bool logins_held;         /* new logins wait for the cutover's switch (set by cutover.c) */
	bool txn_release_pending; /* a server connection has Server.txn_done set */
	/*
	 * admin_on_packet, set at start: the console sits above the client relay
	 * (it starts cutovers, which move clients), so the relay reaches it
	 * through this pointer rather than by name.
	 */
	bool (*admin_on_packet)(Client *client, const PktHeader *pkt);
	/*
	 * The pools (pool.c) sit above the objects and the relay, which reach
	 * them through these, set at start: a client's teardown gives its server
	 * connection back, a server that logged in without a client joins its
	 * pool, a client whose checked connection failed looks for another.
	 */
	void (*pool_release)(Server *server, const char *why);
	void (*pool_server_idle)(Server *server);
	void (*pool_retry_client)(Client *client);
	/* Standby server connections lost during the cutover that opened them (reset when one starts). */
	int standbys_lost;
	char standby_lost_error[512];
	ev_timer retire_timer;   /* closes retiring_servers a few at a time */
	uint64_t cutovers_total; /* finished, by result, for the metrics */
	uint64_t cutovers_failed_total;
	double last_pause_seconds;
	int metrics_fd;
	ev_io metrics_io;
	ev_tstamp start_time;

	ev_signal sig_term;
	ev_signal sig_int;
	ev_signal sig_hup;
	ev_timer shutdown_timer;
	ev_prepare reaper; /* frees JUSTFREE objects after each loop iteration */
};

/* Lookups. */
Database *proxy_find_database(Proxy *proxy, const char *name);
Client *proxy_find_client_by_cancel_key(Proxy *proxy, int32_t pid, const uint8_t *key, size_t keylen);

/* Clients: objects.c */
/* See Proxy.recheck: PAUSE waiters and the cutover look again before the loop blocks. */
static inline void
proxy_recheck(Proxy *proxy)
{
	proxy->recheck = true;
}

Client *client_new(Proxy *proxy, int fd, const struct sockaddr *addr, socklen_t addrlen);
void client_change_state(Client *client, ClientState state);
/*
 * The one way a client goes away: reason is logged; with a SQLSTATE, the
 * client is first sent a FATAL carrying it.  The server connection, if any,
 * is closed too (session mode: it belongs to this client alone).
 */
void client_disconnect(Client *client, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void client_set_subject(Client *client);
/* Moves client to a place of that kind, giving back the one it held; false (nothing changed) when none is free. */
bool client_take_place(Client *client, ClientPlace place) __attribute__((warn_unused_result));
/* Writes pb (freed here) to the client; best effort: a failure shows as a closed socket at the next read. */
bool client_send(Client *client, PktBuf *pb);
/* The console's answer, pb (freed here), to an admin client; false when it could not go, the client closed. */
bool admin_send(PktBuf *pb, Client *admin) __attribute__((warn_unused_result));
bool client_send_error(Client *client, const char *severity, const char *sqlstate, const char *message,
		       const char *detail, const char *hint);
/* The server finished logging in: the client is told it may start, and the two relay from now on. */
void client_server_ready(Client *client);
/* session or transaction: [proxy] pool_mode, or the database line's. */
PoolMode database_pool_mode(const Proxy *proxy, const Database *db);
/* New queries of db's clients wait (PAUSE). */
bool proxy_is_paused(Proxy *proxy, Database *db);
/* What hangs off a server (a script of the proxy's own) or a client (a session being carried), freed with it. */
void script_free(Script *script);
void session_carry_free(SessionCarry *carry);

/* Servers: objects.c */
Server *server_new(Proxy *proxy, Client *client, const Cluster *cluster, Database *db);
void server_change_state(Server *server, ServerState state);
/* From now on bytes relay between the two: the one place a client and its server are linked. */
void client_link_server(Client *client, Server *server);
/* Closes a server connection; its client, if any, gets reason as a FATAL with sqlstate. */
void server_disconnect(Server *server, const char *sqlstate, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Frees the objects closed during this loop iteration; returns how many. */
int proxy_free_justfree(Proxy *proxy);

/* client.c */
bool client_on_event(SBuf *sb, SBufEvent event, const PktHeader *pkt);
/* (objects.c)
 * Between transactions: nothing of the client is in flight (every
 * ReadyForQuery answered, no unsynced extended query, no COPY) and the server
 * said idle.  The one definition PAUSE, the relay and the cutover share.
 */
bool client_between_transactions(const Client *client);
void client_resume_held(Proxy *proxy, Database *db);

/* server.c */
bool server_start(Server *server) __attribute__((warn_unused_result));
bool server_on_event(SBuf *sb, SBufEvent event, const PktHeader *pkt);
/*
 * Transaction mode: the client's named statements onto a server connection
 * that another client used last, before its transaction runs there (a
 * script: the client's message waits for it).  False: the server was closed.
 */
bool server_take_statements(Server *server, Client *client) __attribute__((warn_unused_result));
/* Opens a short connection to send a CancelRequest for server's backend. */
void server_send_cancel(Proxy *proxy, Server *server);

/* admin.c */
/* A message from a logged-in admin client; same contract as an SBuf callback. */
bool admin_on_packet(Client *client, const PktHeader *pkt) __attribute__((warn_unused_result));
/* An ERROR and ReadyForQuery to an admin client; false (and the client closed) when it cannot be sent. */
bool admin_send_error(Client *client, const char *sqlstate, const char *message, const char *hint);
void admin_check_pause_waiters(Proxy *proxy);

/* followers.c */
bool followers_start(Proxy *proxy, FollowerKind kind) __attribute__((warn_unused_result));
/* Started by a timer, seconds from now (the restart timer: a stop or a start cancels it). */
void followers_start_after(Proxy *proxy, FollowerKind kind, double seconds);
/* SIGTERM; with then_drop (the reverse follower), its slot is dropped once it has exited. */
void followers_stop(Proxy *proxy, FollowerKind kind, bool then_drop);
/* At exit: followers get SIGTERM and are waited for; a drop in progress finishes. */
void followers_shutdown(Proxy *proxy);

/* metrics.c: Prometheus text at metrics_listen */
bool metrics_start(Proxy *proxy) __attribute__((warn_unused_result));
void metrics_stop(Proxy *proxy);

/* listen.c */
/* Opens the listening sockets and starts accepting; errors are logged. */
bool proxy_listen(Proxy *proxy) __attribute__((warn_unused_result));
void proxy_close_listeners(Proxy *proxy);
/* Linux hands a queued connection's network error to accept(): that one is gone, the next may be fine. */
bool proxy_accept_error_is_transient(int err);
/* accept() failed otherwise (no descriptor left): accepting stops a while, on every listener. */
void proxy_accept_failed(Proxy *proxy, int err);
/* A descriptor came back: accepting stopped by proxy_accept_failed starts again. */
void proxy_accept_resume(Proxy *proxy);
/* Raises the open-files limit to what config's max_client_conn needs; false (logged) when the hard limit is lower. */
bool proxy_fit_open_files(const Config *config) __attribute__((warn_unused_result));
/* No new clients; immediate closes every client now, else after shutdown_timeout. */
void proxy_shutdown(Proxy *proxy, bool immediate);

/* settings.c */
/* Everything that a reload may replace, made aside first so a bad file changes nothing. */
typedef struct Settings {
	Config config;
	UserList *users;
	SSL_CTX *client_tls;
	Cluster source;
	Cluster target;
} Settings;
bool settings_load(const char *path, Settings *s) __attribute__((warn_unused_result));
bool proxy_install_databases(Proxy *proxy, const Config *config) __attribute__((warn_unused_result));
/* Errors are logged; on failure the previous configuration stays in force. */
bool proxy_reload(Proxy *proxy);
/* Opens client's server connection on the cluster clients are served by now. */
bool proxy_connect_client(Client *client) __attribute__((warn_unused_result));

#endif
