/*
 * Queries of the proxy's own on a server connection (scripts), and what the
 * cutover builds on them: reading a client's session state on the server it
 * leaves and replaying it on the server it goes to.
 *
 * A script runs only while its client is between transactions and held, so
 * the server's answers belong to the script alone; they are consumed, never
 * relayed (a NotificationResponse excepted: it is the client's).
 */
#ifndef PGHANDOFF_PROXY_SESSION_H
#define PGHANDOFF_PROXY_SESSION_H

#include <stdbool.h>

#include "proxy/objects.h"
#include "proxy/pktbuf.h"

#define SCRIPT_COLUMNS 3

typedef void (*ScriptDoneFn)(Server *server, Script *script);

struct Script {
	int pending_rfq; /* ReadyForQuery messages still to come */
	int nrows;
	int cap;
	char **cells; /* nrows * SCRIPT_COLUMNS strings copied from DataRows; NULL stays NULL */
	bool failed;
	char error[256]; /* the first ErrorResponse */
	ScriptDoneFn done;
};

/*
 * Sends the messages in pb (freed here) to server, expecting expected_rfq
 * ReadyForQuery answers; done runs after the last one, with the rows of
 * every three-column result.  False: nothing was started (logged).
 */
bool script_run(Server *server, PktBuf *pb, int expected_rfq, ScriptDoneFn done) __attribute__((warn_unused_result));
/* The server's packet while a script runs; same contract as an SBuf callback. */
bool script_on_packet(Server *server, const PktHeader *pkt);

/* A client's session state on its way from one server to another. */
struct SessionCarry {
	PktBuf replay; /* messages that rebuild the session on the other server */
	int replay_rfq;
	int nsettings;
	int nprepared; /* SQL PREPAREd */
	int nlisten;
	int nstmts;          /* protocol-level named statements */
	char unmovable[160]; /* why the session cannot move; "" when it can */
	bool captured;
	bool replay_started;
	bool replayed;
	bool failed; /* reading or replaying failed: the reason is in unmovable */
};

/*
 * Reads the session state of client->server (what the session set itself);
 * proxy_recheck runs when it is known.
 */
bool session_capture(Client *client) __attribute__((warn_unused_result));
/*
 * A session whose client never said anything that may change it
 * (client->session_touched false) in a database that runs no code of its
 * own behind the client's statements: its state is a fresh login's, which
 * its standby has.  Known at once, nothing is read.
 */
bool session_know_untouched(Client *client) __attribute__((warn_unused_result));
/* Custom setting names (app.tenant) the SQL text may set: read by name when a session is read. */
void session_learn_settings(Proxy *proxy, const char *sql, size_t len);
/* One name, lower-cased already; ignored past CUSTOM_SETTINGS_MAX. */
void session_learn_setting(Proxy *proxy, const char *name);
/* Replays the captured state on client->cutover.standby; proxy_recheck runs when done. */
bool session_replay(Client *client) __attribute__((warn_unused_result));

#endif
