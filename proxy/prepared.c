/*
 * Protocol-level prepared statements in transaction mode: the names a client
 * gave its statements are mapped to definitions the proxy prepares, under
 * names of its own, on whichever server connection runs the client's next
 * message (proxy/prepared.h says how the relay calls in).
 *
 * The one hard part is the replies.  The proxy sends a server messages the
 * client did not (a Parse the server lacks, a Close to make room) and holds
 * back some the client did (a Close of a named statement, a Parse the
 * server already has), so each server keeps a FIFO of what it owes and who
 * it is for.  PostgreSQL answers the extended protocol in order, and after
 * an error skips every message up to the next Sync: the entries up to that
 * Sync are settled as never run.  A client's name changes take effect when
 * the message is sent (later messages in the pipeline use them) and are
 * undone if the server skips or refuses the message; they settle strictly
 * in FIFO order, so the change being settled is always the oldest queued
 * one for its name.
 */
#include "proxy/prepared.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errbuf.h"
#include "common/list.h"
#include "common/msgread.h"
#include "proxy/proto.h"
#include "proxy/protocol.h"

#define HASH_MIN_BUCKETS 16
/* Entries kept for reuse before a message is looked at, so it rarely fails halfway. */
#define EXPECT_RESERVE 3

/* Chained hash tables, intrusive: the owner compares keys after the hash matches. */
typedef struct HashLink {
	struct HashLink *next;
	uint64_t hash;
} HashLink;

typedef struct HashTable {
	HashLink **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
} HashTable;

typedef struct PreparedDef {
	HashLink link; /* in the registry */
	PreparedRegistry *reg;
	uint64_t id;
	/* Client names, queued name changes that may restore it, server sets, queued messages. */
	uint32_t refs;
	int16_t nparams;
	size_t query_len;
	const uint8_t *param_types; /* nparams Int32 OIDs, network order, after the query's NUL */
	char name[PREPARED_NAME_SIZE];
	char query[]; /* NUL-terminated, then the parameter types */
} PreparedDef;

struct PreparedRegistry {
	HashTable defs;
	uint64_t next_id;
};

typedef struct Expect Expect;

/* A client's statement name. */
typedef struct StmtName {
	HashLink link;
	PreparedDef *def; /* a reference; NULL: closed, kept while a queued change names it */
	Expect *latest;   /* the newest queued change of this name, NULL when none */
	bool marked;      /* scratch for client_forget_all */
	char name[];
} StmtName;

struct PreparedClient {
	PreparedRegistry *reg;
	HashTable names;
	size_t live;            /* names with a definition */
	PreparedServer *server; /* the server whose FIFO holds this client's messages, if any */
};

/* A definition prepared (or being prepared) on a server. */
typedef struct ServerStmt {
	HashLink link;    /* keyed by the definition's id */
	List lru;         /* least recently used first */
	PreparedDef *def; /* a reference */
	uint64_t created; /* seq of the Parse that made it */
} ServerStmt;

/* Which message a FIFO entry answers, and so which replies end it. */
typedef enum ExpectKind {
	EXPECT_PARSE,           /* ParseComplete */
	EXPECT_BIND,            /* BindComplete */
	EXPECT_CLOSE,           /* CloseComplete */
	EXPECT_DESCRIBE_STMT,   /* ParameterDescription, then RowDescription or NoData */
	EXPECT_DESCRIBE_PORTAL, /* RowDescription or NoData */
	EXPECT_EXECUTE,         /* rows or COPY, then CommandComplete, EmptyQueryResponse or PortalSuspended */
	EXPECT_SYNC,            /* ReadyForQuery */
	EXPECT_QUERY,           /* anything, errors too, then ReadyForQuery (Query, FunctionCall) */
} ExpectKind;

typedef enum ExpectAction {
	EXPECT_FORWARD,    /* the client's message: its replies are the client's */
	EXPECT_SWALLOW,    /* a message the proxy added: its reply is dropped, an error is not */
	EXPECT_SYNTHESIZE, /* not sent: the proxy answers the client when the entry reaches the head */
} ExpectAction;

struct Expect {
	Expect *next;
	uint64_t seq;
	ExpectKind kind;
	ExpectAction action;
	PreparedDef *def; /* a reference: PARSE of a definition, CLOSE of an evicted one */
	/* A change of a client name that stands or falls with this message. */
	StmtName *name;
	PreparedDef *prev; /* a reference: what the name meant before, NULL for nothing */
	Expect *later;     /* the next queued change of the same name */
	char *duplicate;   /* SYNTHESIZE PARSE: answer "already exists" for this name instead */
};

struct PreparedServer {
	PreparedRegistry *reg;
	int max;
	HashTable stmts;
	List lru;
	Expect *head;
	Expect *tail;
	size_t pending;
	uint64_t next_seq;
	/* Whose messages the FIFO holds (or who owes the Sync that ends skipping); NULL when the client left. */
	PreparedClient *client;
	/*
	 * The client's messages up to its next Sync are not run: an error came
	 * back with no Sync queued (the server drops them), or the proxy answers
	 * one of them with an error of its own (it drops them).
	 */
	bool skipping;
	bool copy_in;  /* in COPY FROM STDIN: the server drops the client's Sync and Flush */
	Expect *spare; /* freed entries, for reuse */
	size_t nspare;
};

/* Hash tables */

static bool
hash_init(HashTable *t)
{
	t->buckets = calloc(HASH_MIN_BUCKETS, sizeof(HashLink *));
	t->nbuckets = HASH_MIN_BUCKETS;
	t->count = 0;
	return t->buckets != NULL;
}

static HashLink *
hash_bucket(const HashTable *t, uint64_t hash)
{
	return t->buckets[hash & (t->nbuckets - 1)];
}

/* Never fails: when growing fails the chains just get longer. */
static void
hash_insert(HashTable *t, HashLink *link, uint64_t hash)
{
	HashLink **slot;

	if (t->count >= t->nbuckets && t->nbuckets <= SIZE_MAX / 2 / sizeof(HashLink *)) {
		size_t n = t->nbuckets * 2;
		HashLink **grown = calloc(n, sizeof(HashLink *));

		if (grown) {
			for (size_t i = 0; i < t->nbuckets; i++) {
				HashLink *l = t->buckets[i];

				while (l) {
					HashLink *next = l->next;

					l->next = grown[l->hash & (n - 1)];
					grown[l->hash & (n - 1)] = l;
					l = next;
				}
			}
			free(t->buckets);
			t->buckets = grown;
			t->nbuckets = n;
		}
	}
	link->hash = hash;
	slot = &t->buckets[hash & (t->nbuckets - 1)];
	link->next = *slot;
	*slot = link;
	t->count++;
}

static void
hash_remove(HashTable *t, HashLink *link)
{
	HashLink **slot = &t->buckets[link->hash & (t->nbuckets - 1)];

	while (*slot && *slot != link)
		slot = &(*slot)->next;
	if (*slot) {
		*slot = link->next;
		t->count--;
	}
}

/* 64-bit FNV-1a, continued from h. */
static uint64_t
fnv1a(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(1099511628211);
	}
	return h;
}

#define FNV_BASIS UINT64_C(14695981039346656037)

/* Definitions */

static uint64_t
def_hash(const char *query, size_t query_len, int16_t nparams, const uint8_t *types)
{
	uint64_t h = fnv1a(FNV_BASIS, query, query_len + 1);

	h = fnv1a(h, &nparams, sizeof(nparams));
	return fnv1a(h, types, (size_t) nparams * 4);
}

static PreparedDef *
def_ref(PreparedDef *def)
{
	def->refs++;
	return def;
}

static void
def_unref(PreparedDef *def)
{
	if (!def || --def->refs > 0)
		return;
	hash_remove(&def->reg->defs, &def->link);
	free(def);
}

/* The definition of what parse says, with a new reference; NULL when out of memory. */
static PreparedDef *
registry_intern(PreparedRegistry *reg, const ProtoParse *parse)
{
	size_t query_len = strlen(parse->query);
	size_t types_len = (size_t) parse->nparams * 4;
	uint64_t hash = def_hash(parse->query, query_len, (int16_t) parse->nparams, parse->param_types);
	PreparedDef *def;

	for (HashLink *l = hash_bucket(&reg->defs, hash); l; l = l->next) {
		def = container_of(l, PreparedDef, link);
		if (l->hash == hash && def->query_len == query_len && def->nparams == parse->nparams &&
		    memcmp(def->query, parse->query, query_len) == 0 &&
		    memcmp(def->param_types, parse->param_types, types_len) == 0)
			return def_ref(def);
	}
	def = malloc(sizeof(PreparedDef) + query_len + 1 + types_len);
	if (!def)
		return NULL;
	def->reg = reg;
	def->id = reg->next_id++;
	def->refs = 1;
	def->nparams = (int16_t) parse->nparams;
	def->query_len = query_len;
	memcpy(def->query, parse->query, query_len + 1);
	memcpy(def->query + query_len + 1, parse->param_types, types_len);
	def->param_types = (const uint8_t *) def->query + query_len + 1;
	snprintf(def->name, sizeof(def->name), PREPARED_NAME_PREFIX "%" PRIu64, def->id);
	hash_insert(&reg->defs, &def->link, hash);
	return def;
}

PreparedRegistry *
prepared_registry_new(void)
{
	PreparedRegistry *reg = calloc(1, sizeof(PreparedRegistry));

	if (!reg)
		return NULL;
	if (!hash_init(&reg->defs)) {
		free(reg);
		return NULL;
	}
	reg->next_id = 1;
	return reg;
}

void
prepared_registry_free(PreparedRegistry *reg)
{
	if (!reg)
		return;
	/* Every user is gone by now; anything left would be a leak, so free it too. */
	for (size_t i = 0; i < reg->defs.nbuckets; i++) {
		HashLink *l = reg->defs.buckets[i];

		while (l) {
			HashLink *next = l->next;

			free(container_of(l, PreparedDef, link));
			l = next;
		}
	}
	free(reg->defs.buckets);
	free(reg);
}

size_t
prepared_registry_count(const PreparedRegistry *reg)
{
	return reg->defs.count;
}

/* Client names */

static StmtName *
name_find(const PreparedClient *cl, const char *name)
{
	uint64_t hash = fnv1a(FNV_BASIS, name, strlen(name));

	for (HashLink *l = hash_bucket(&cl->names, hash); l; l = l->next) {
		StmtName *nm = container_of(l, StmtName, link);

		if (l->hash == hash && strcmp(nm->name, name) == 0)
			return nm;
	}
	return NULL;
}

/* The name's entry, made (closed) if new; NULL when out of memory. */
static StmtName *
name_get(PreparedClient *cl, const char *name)
{
	StmtName *nm = name_find(cl, name);
	size_t len = strlen(name);

	if (nm)
		return nm;
	nm = malloc(sizeof(StmtName) + len + 1);
	if (!nm)
		return NULL;
	nm->def = NULL;
	nm->latest = NULL;
	nm->marked = false;
	memcpy(nm->name, name, len + 1);
	hash_insert(&cl->names, &nm->link, fnv1a(FNV_BASIS, name, len));
	return nm;
}

/* Points the name at def, taking over the caller's reference and dropping the old one. */
static void
name_set(PreparedClient *cl, StmtName *nm, PreparedDef *def)
{
	if (nm->def && !def)
		cl->live--;
	else if (!nm->def && def)
		cl->live++;
	def_unref(nm->def);
	nm->def = def;
}

/* A closed name nothing queued refers to is forgotten. */
static void
name_gc(PreparedClient *cl, StmtName *nm)
{
	if (nm->def || nm->latest)
		return;
	hash_remove(&cl->names, &nm->link);
	free(nm);
}

static PreparedDef *
client_def(const PreparedClient *cl, const char *name)
{
	StmtName *nm = name_find(cl, name);

	return nm ? nm->def : NULL;
}

PreparedClient *
prepared_client_new(PreparedRegistry *reg)
{
	PreparedClient *cl = calloc(1, sizeof(PreparedClient));

	if (!cl)
		return NULL;
	if (!hash_init(&cl->names)) {
		free(cl);
		return NULL;
	}
	cl->reg = reg;
	return cl;
}

size_t
prepared_client_count(const PreparedClient *cl)
{
	return cl->live;
}

bool
prepared_client_lookup(const PreparedClient *cl, const char *name, char *out)
{
	PreparedDef *def = client_def(cl, name);

	if (!def)
		return false;
	memcpy(out, def->name, PREPARED_NAME_SIZE);
	return true;
}

/* Queued name changes */

/* Points the client's name at def (a reference the name takes), queued on e to be settled. */
static void
op_apply(PreparedClient *cl, StmtName *nm, PreparedDef *def, Expect *e)
{
	e->name = nm;
	e->prev = nm->def; /* the name's reference moves to the entry */
	if (e->prev && !def)
		cl->live--;
	else if (!e->prev && def)
		cl->live++;
	nm->def = def;
	e->later = NULL;
	if (nm->latest)
		nm->latest->later = e;
	nm->latest = e;
}

/* The change took effect: what the name meant before is gone for good. */
static void
op_commit(PreparedClient *cl, Expect *e)
{
	StmtName *nm = e->name;

	if (!nm)
		return;
	def_unref(e->prev);
	e->prev = NULL;
	e->name = NULL;
	if (nm->latest == e)
		nm->latest = NULL;
	e->later = NULL;
	name_gc(cl, nm);
}

/* The server never ran the message: the change did not happen. */
static void
op_undo(PreparedClient *cl, Expect *e)
{
	StmtName *nm = e->name;

	if (!nm)
		return;
	if (e->later) {
		/* A newer change replaced what this one set: it now replaces what this one found. */
		def_unref(e->later->prev);
		e->later->prev = e->prev;
	} else {
		name_set(cl, nm, e->prev);
		nm->latest = NULL;
	}
	e->prev = NULL;
	e->name = NULL;
	e->later = NULL;
	name_gc(cl, nm);
}

/* Server sets */

static ServerStmt *
server_find(const PreparedServer *srv, const PreparedDef *def)
{
	for (HashLink *l = hash_bucket(&srv->stmts, def->id); l; l = l->next) {
		ServerStmt *st = container_of(l, ServerStmt, link);

		if (st->def == def)
			return st;
	}
	return NULL;
}

static void
server_touch(PreparedServer *srv, ServerStmt *st)
{
	list_del(&st->lru);
	list_append(&srv->lru, &st->lru);
}

/* oldest puts it first in line for eviction. */
static bool
server_add(PreparedServer *srv, PreparedDef *def, uint64_t created, bool oldest)
{
	ServerStmt *st = malloc(sizeof(ServerStmt));

	if (!st)
		return false;
	st->def = def_ref(def);
	st->created = created;
	if (oldest) {
		st->lru.next = srv->lru.next;
		st->lru.prev = &srv->lru;
		srv->lru.next->prev = &st->lru;
		srv->lru.next = &st->lru;
	} else {
		list_append(&srv->lru, &st->lru);
	}
	hash_insert(&srv->stmts, &st->link, def->id);
	return true;
}

static void
server_remove(PreparedServer *srv, ServerStmt *st)
{
	hash_remove(&srv->stmts, &st->link);
	list_del(&st->lru);
	def_unref(st->def);
	free(st);
}

/* Forgets what was prepared before the message numbered seq (all of it: UINT64_MAX). */
static void
server_forget_before(PreparedServer *srv, uint64_t seq)
{
	List *it = srv->lru.next;

	while (it != &srv->lru) {
		ServerStmt *st = container_of(it, ServerStmt, lru);

		it = it->next;
		if (st->created < seq)
			server_remove(srv, st);
	}
}

/* The FIFO */

static bool
expect_reserve(PreparedServer *srv, size_t n)
{
	while (srv->nspare < n) {
		Expect *e = malloc(sizeof(Expect));

		if (!e)
			return false;
		e->next = srv->spare;
		srv->spare = e;
		srv->nspare++;
	}
	return true;
}

/* A new entry at the tail, owned by cl; NULL when out of memory. */
static Expect *
expect_push(PreparedServer *srv, PreparedClient *cl, ExpectKind kind, ExpectAction action)
{
	Expect *e;

	if (!expect_reserve(srv, 1))
		return NULL;
	e = srv->spare;
	srv->spare = e->next;
	srv->nspare--;
	memset(e, 0, sizeof(*e));
	e->seq = srv->next_seq++;
	e->kind = kind;
	e->action = action;
	if (srv->tail)
		srv->tail->next = e;
	else
		srv->head = e;
	srv->tail = e;
	srv->pending++;
	srv->client = cl;
	cl->server = srv;
	return e;
}

/* Unlinks e, which follows prev (NULL: e is the head), and recycles it; e must be settled. */
static void
expect_remove(PreparedServer *srv, Expect *prev, Expect *e)
{
	if (prev)
		prev->next = e->next;
	else
		srv->head = e->next;
	if (srv->tail == e)
		srv->tail = prev;
	srv->pending--;
	def_unref(e->def);
	def_unref(e->prev);
	free(e->duplicate);
	e->next = srv->spare;
	srv->spare = e;
	srv->nspare++;
	/* Skipping, the server stays the client's until its Sync. */
	if (!srv->head && srv->client && !srv->skipping) {
		srv->client->server = NULL;
		srv->client = NULL;
	}
}

/* The entry's message ran. */
static void
expect_succeeded(PreparedServer *srv, Expect *e)
{
	if (e->name)
		op_commit(srv->client, e);
}

/* The entry's message failed or was skipped after an error. */
static void
expect_failed(PreparedServer *srv, Expect *e)
{
	if (e->name)
		op_undo(srv->client, e);
	if (e->kind == EXPECT_PARSE && e->def) {
		ServerStmt *st = server_find(srv, e->def);

		/* Only the statement this Parse made: a later one may have replaced it. */
		if (st && st->created == e->seq)
			server_remove(srv, st);
	} else if (e->kind == EXPECT_CLOSE && e->def && !server_find(srv, e->def)) {
		/*
		 * An eviction that did not run: the server still has the statement.
		 * Out of memory, it is lost track of, and preparing it again there
		 * would fail with "already exists".
		 */
		(void) server_add(srv, e->def, e->seq, true);
	}
}

static void
write_empty(PktBuf *pb, uint8_t type)
{
	pktbuf_start(pb, type);
	pktbuf_finish(pb);
}

/* The answers the proxy owes the client now that everything before them is answered. */
static void
emit_due(PreparedServer *srv, PktBuf *to_client)
{
	Expect *e;

	while ((e = srv->head) && e->action == EXPECT_SYNTHESIZE) {
		if (e->duplicate) {
			char msg[200];

			/* PostgreSQL's words; a name too long for them is cut, the SQLSTATE says it all. */
			snprintf(msg, sizeof(msg), "prepared statement \"%s\" already exists", e->duplicate);
			pktbuf_write_error(to_client, "ERROR", "42P05", msg, NULL, NULL);
		} else {
			write_empty(to_client, e->kind == EXPECT_PARSE ? PQMSG_PARSE_COMPLETE : PQMSG_CLOSE_COMPLETE);
		}
		expect_succeeded(srv, e);
		expect_remove(srv, NULL, e);
	}
}

/* The client is gone: its name changes stand, its answers are owed to no one. */
static void
server_detach(PreparedServer *srv)
{
	Expect *prev = NULL, *e = srv->head;
	PreparedClient *cl = srv->client;

	if (!cl)
		return;
	while (e) {
		Expect *next = e->next;

		if (e->name)
			op_commit(cl, e);
		/* Never the head (emit_due saw to that), so the FIFO does not empty here. */
		if (e->action == EXPECT_SYNTHESIZE)
			expect_remove(srv, prev, e);
		else
			prev = e;
		e = next;
	}
	cl->server = NULL;
	srv->client = NULL;
}

/* Servers */

PreparedServer *
prepared_server_new(PreparedRegistry *reg, int max_statements)
{
	PreparedServer *srv;

	if (max_statements < 1)
		return NULL;
	srv = calloc(1, sizeof(PreparedServer));
	if (!srv)
		return NULL;
	if (!hash_init(&srv->stmts)) {
		free(srv);
		return NULL;
	}
	srv->reg = reg;
	srv->max = max_statements;
	list_init(&srv->lru);
	return srv;
}

void
prepared_server_free(PreparedServer *srv)
{
	if (!srv)
		return;
	server_detach(srv);
	while (srv->head)
		expect_remove(srv, NULL, srv->head);
	server_forget_before(srv, UINT64_MAX);
	while (srv->spare) {
		Expect *e = srv->spare;

		srv->spare = e->next;
		free(e);
	}
	free(srv->stmts.buckets);
	free(srv);
}

size_t
prepared_server_count(const PreparedServer *srv)
{
	return srv->stmts.count;
}

bool
prepared_server_has(const PreparedServer *srv, const PreparedClient *cl, const char *name)
{
	PreparedDef *def = client_def(cl, name);

	return def && server_find(srv, def);
}

size_t
prepared_server_pending(const PreparedServer *srv)
{
	return srv->pending;
}

bool
prepared_server_idle(const PreparedServer *srv)
{
	return !srv->head && !srv->skipping && !srv->copy_in;
}

void
prepared_server_forget_all(PreparedServer *srv)
{
	server_forget_before(srv, UINT64_MAX);
}

void
prepared_client_free(PreparedClient *cl)
{
	if (!cl)
		return;
	if (cl->server)
		server_detach(cl->server);
	for (size_t i = 0; i < cl->names.nbuckets; i++) {
		HashLink *l = cl->names.buckets[i];

		while (l) {
			HashLink *next = l->next;
			StmtName *nm = container_of(l, StmtName, link);

			def_unref(nm->def);
			free(nm);
			l = next;
		}
	}
	free(cl->names.buckets);
	free(cl);
}

/* Client messages */

static void
write_parse(PktBuf *pb, const PreparedDef *def)
{
	pktbuf_start(pb, PQMSG_PARSE);
	pktbuf_put_string(pb, def->name);
	pktbuf_put_bytes(pb, def->query, def->query_len + 1);
	pktbuf_put_int16(pb, def->nparams);
	pktbuf_put_bytes(pb, def->param_types, (size_t) def->nparams * 4);
	pktbuf_finish(pb);
}

/* Closes least recently used statements until one more fits. */
static bool
make_room(PreparedServer *srv, PreparedClient *cl, PktBuf *to_server)
{
	while (srv->stmts.count >= (size_t) srv->max) {
		ServerStmt *st = container_of(srv->lru.next, ServerStmt, lru);
		Expect *e = expect_push(srv, cl, EXPECT_CLOSE, EXPECT_SWALLOW);

		if (!e)
			return false;
		e->def = def_ref(st->def);
		pktbuf_start(to_server, PQMSG_CLOSE);
		pktbuf_put_byte(to_server, PQTARGET_STATEMENT);
		pktbuf_put_string(to_server, st->def->name);
		pktbuf_finish(to_server);
		server_remove(srv, st);
	}
	return true;
}

/* Sends def's Parse (after making room), queued as action; the server has it from then on. */
static bool
send_parse(PreparedServer *srv, PreparedClient *cl, PreparedDef *def, ExpectAction action, PktBuf *to_server,
	   Expect **out)
{
	Expect *e;

	if (!make_room(srv, cl, to_server))
		return false;
	e = expect_push(srv, cl, EXPECT_PARSE, action);
	if (!e || !server_add(srv, def, e->seq, false))
		return false;
	e->def = def_ref(def);
	write_parse(to_server, def);
	if (out)
		*out = e;
	return true;
}

/* Makes sure the server has def before a message that uses it. */
static bool
ensure_prepared(PreparedServer *srv, PreparedClient *cl, PreparedDef *def, PktBuf *to_server)
{
	ServerStmt *st = server_find(srv, def);

	if (st) {
		server_touch(srv, st);
		return true;
	}
	return send_parse(srv, cl, def, EXPECT_SWALLOW, to_server, NULL);
}

static bool
forward(PreparedServer *srv, PreparedClient *cl, ExpectKind kind, char *err, size_t errlen)
{
	if (!expect_push(srv, cl, kind, EXPECT_FORWARD))
		return errbuf_fail(err, errlen, "out of memory");
	return true;
}

static bool
client_parse(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t avail, size_t len, PktBuf *to_server,
	     size_t *keep_from, PktBuf *to_client, char *err, size_t errlen)
{
	MsgReader r;
	const char *name;
	ProtoParse parse;
	PreparedDef *def;
	StmtName *nm;
	ServerStmt *st;
	Expect *e;
	char why[128];

	msgread_init(&r, msg + 5, avail - 5);
	if (!msgread_string(&r, &name, NULL)) {
		if (avail < len)
			return errbuf_fail(err, errlen, "Parse message of %zu bytes has no statement name", len);
		return forward(srv, cl, EXPECT_PARSE, err, errlen); /* the server will say what is wrong */
	}
	if (name[0] == '\0')
		return forward(srv, cl, EXPECT_PARSE, err, errlen);
	if (avail < len)
		return errbuf_fail(err, errlen, "Parse message of %zu bytes is too long to prepare", len);
	if (!proto_parse_parse(msg + 5, len - 5, &parse, why, sizeof(why)))
		return forward(srv, cl, EXPECT_PARSE, err, errlen);

	nm = name_find(cl, name);
	if (nm && nm->def && !nm->latest) {
		/*
		 * As PostgreSQL: an error, and the rest up to the Sync is not run,
		 * so the proxy sends none of it.  A name whose Parse is still
		 * unanswered may yet not exist: that one is replaced instead.
		 */
		e = expect_push(srv, cl, EXPECT_PARSE, EXPECT_SYNTHESIZE);
		if (!e || !(e->duplicate = strdup(name)))
			return errbuf_fail(err, errlen, "out of memory");
		*keep_from = len;
		srv->skipping = true;
		emit_due(srv, to_client);
		return true;
	}
	def = registry_intern(cl->reg, &parse);
	if (!def)
		return errbuf_fail(err, errlen, "out of memory");
	nm = name_get(cl, name);
	if (!nm) {
		def_unref(def);
		return errbuf_fail(err, errlen, "out of memory");
	}
	*keep_from = len;
	if ((st = server_find(srv, def))) {
		/* Prepared there already: the client gets its ParseComplete in turn. */
		server_touch(srv, st);
		e = expect_push(srv, cl, EXPECT_PARSE, EXPECT_SYNTHESIZE);
	} else if (!send_parse(srv, cl, def, EXPECT_FORWARD, to_server, &e)) {
		e = NULL;
	}
	if (!e) {
		def_unref(def);
		name_gc(cl, nm);
		return errbuf_fail(err, errlen, "out of memory");
	}
	op_apply(cl, nm, def, e);
	emit_due(srv, to_client);
	return true;
}

static bool
client_bind(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t avail, size_t len, PktBuf *to_server,
	    size_t *keep_from, char *err, size_t errlen)
{
	MsgReader r;
	const char *portal, *name;
	PreparedDef *def;

	msgread_init(&r, msg + 5, avail - 5);
	if (!msgread_string(&r, &portal, NULL) || !msgread_string(&r, &name, NULL)) {
		if (avail < len)
			return errbuf_fail(err, errlen,
					   "Bind message of %zu bytes has no statement name in its first %zu", len,
					   avail);
		return forward(srv, cl, EXPECT_BIND, err, errlen);
	}
	def = name[0] ? client_def(cl, name) : NULL;
	/* The unnamed statement, or a name the client never prepared: the server answers for it. */
	if (!def)
		return forward(srv, cl, EXPECT_BIND, err, errlen);
	if (!ensure_prepared(srv, cl, def, to_server) || !forward(srv, cl, EXPECT_BIND, err, errlen))
		return errbuf_fail(err, errlen, "out of memory");
	/* The new head, then the rest of the client's message as it is. */
	*keep_from = 5 + r.pos;
	pktbuf_start(to_server, PQMSG_BIND);
	pktbuf_put_string(to_server, portal);
	pktbuf_put_string(to_server, def->name);
	pktbuf_finish_with_tail(to_server, len - *keep_from);
	return true;
}

static bool
client_describe(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t len, PktBuf *to_server,
		size_t *keep_from, char *err, size_t errlen)
{
	ProtoTarget target;
	PreparedDef *def;
	char why[128];

	if (!proto_parse_describe(msg + 5, len - 5, &target, why, sizeof(why)))
		return forward(srv, cl,
			       len > 5 && msg[5] == PQTARGET_STATEMENT ? EXPECT_DESCRIBE_STMT : EXPECT_DESCRIBE_PORTAL,
			       err, errlen);
	if (target.kind == PQTARGET_PORTAL)
		return forward(srv, cl, EXPECT_DESCRIBE_PORTAL, err, errlen);
	def = target.name[0] ? client_def(cl, target.name) : NULL;
	if (!def)
		return forward(srv, cl, EXPECT_DESCRIBE_STMT, err, errlen);
	if (!ensure_prepared(srv, cl, def, to_server) || !forward(srv, cl, EXPECT_DESCRIBE_STMT, err, errlen))
		return errbuf_fail(err, errlen, "out of memory");
	*keep_from = len;
	pktbuf_start(to_server, PQMSG_DESCRIBE);
	pktbuf_put_byte(to_server, PQTARGET_STATEMENT);
	pktbuf_put_string(to_server, def->name);
	pktbuf_finish(to_server);
	return true;
}

static bool
client_close(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t len, size_t *keep_from,
	     PktBuf *to_client, char *err, size_t errlen)
{
	ProtoTarget target;
	StmtName *nm;
	Expect *e;
	char why[128];

	if (!proto_parse_close(msg + 5, len - 5, &target, why, sizeof(why)) || target.kind == PQTARGET_PORTAL ||
	    target.name[0] == '\0')
		return forward(srv, cl, EXPECT_CLOSE, err, errlen);
	/*
	 * The server's copy may serve other clients: it stays until evicted.
	 * Closing a name that does not exist is no error, as in PostgreSQL.
	 */
	nm = name_find(cl, target.name);
	e = expect_push(srv, cl, EXPECT_CLOSE, EXPECT_SYNTHESIZE);
	if (!e)
		return errbuf_fail(err, errlen, "out of memory");
	if (nm && nm->def)
		op_apply(cl, nm, NULL, e);
	*keep_from = len;
	emit_due(srv, to_client);
	return true;
}

bool
prepared_client_message(PreparedServer *srv, PreparedClient *cl, const uint8_t *msg, size_t avail, size_t len,
			PktBuf *to_server, size_t *keep_from, PktBuf *to_client, char *err, size_t errlen)
{
	uint8_t type;

	*keep_from = 0;
	if (avail < 5 || avail > len)
		return errbuf_fail(err, errlen, "message of %zu bytes with %zu at hand", len, avail);
	if (!prepared_server_idle(srv) && srv->client != cl)
		return errbuf_fail(err, errlen, "the server connection is still busy with another client");
	if (cl->server && cl->server != srv)
		return errbuf_fail(err, errlen, "the client still awaits replies from another server connection");
	if (!expect_reserve(srv, EXPECT_RESERVE))
		return errbuf_fail(err, errlen, "out of memory");
	type = msg[0];

	if (srv->copy_in) {
		/* COPY FROM STDIN reads everything until CopyDone or CopyFail, and drops Sync and Flush. */
		if (type == PQMSG_COPY_DONE || type == PQMSG_COPY_FAIL)
			srv->copy_in = false;
		return true;
	}
	if (srv->skipping) {
		/* After an error nothing runs up to a Sync: the server would drop it unread. */
		if (type != PQMSG_SYNC) {
			*keep_from = len;
			return true;
		}
		srv->skipping = false;
		return forward(srv, cl, EXPECT_SYNC, err, errlen);
	}

	switch (type) {
	case PQMSG_PARSE:
		return client_parse(srv, cl, msg, avail, len, to_server, keep_from, to_client, err, errlen);
	case PQMSG_BIND:
		return client_bind(srv, cl, msg, avail, len, to_server, keep_from, err, errlen);
	case PQMSG_DESCRIBE:
		if (avail < len)
			return errbuf_fail(err, errlen, "Describe message of %zu bytes is too long", len);
		return client_describe(srv, cl, msg, len, to_server, keep_from, err, errlen);
	case PQMSG_CLOSE:
		if (avail < len)
			return errbuf_fail(err, errlen, "Close message of %zu bytes is too long", len);
		return client_close(srv, cl, msg, len, keep_from, to_client, err, errlen);
	case PQMSG_EXECUTE:
		return forward(srv, cl, EXPECT_EXECUTE, err, errlen);
	case PQMSG_SYNC:
		return forward(srv, cl, EXPECT_SYNC, err, errlen);
	case PQMSG_QUERY:
	case PQMSG_FUNCTION_CALL:
		return forward(srv, cl, EXPECT_QUERY, err, errlen);
	default:
		/* Flush, Terminate, COPY messages outside COPY: nothing comes back. */
		return true;
	}
}

/* Server replies */

typedef enum ReplyPlace {
	REPLY_PART,  /* one of several replies to the head */
	REPLY_LAST,  /* the head's last reply */
	REPLY_ALIEN, /* no reply to the head */
} ReplyPlace;

static ReplyPlace
reply_place(ExpectKind kind, uint8_t type)
{
	switch (kind) {
	case EXPECT_PARSE:
		return type == PQMSG_PARSE_COMPLETE ? REPLY_LAST : REPLY_ALIEN;
	case EXPECT_BIND:
		return type == PQMSG_BIND_COMPLETE ? REPLY_LAST : REPLY_ALIEN;
	case EXPECT_CLOSE:
		return type == PQMSG_CLOSE_COMPLETE ? REPLY_LAST : REPLY_ALIEN;
	case EXPECT_DESCRIBE_STMT:
		if (type == PQMSG_PARAMETER_DESCRIPTION)
			return REPLY_PART;
		/* fall through */
	case EXPECT_DESCRIBE_PORTAL:
		return type == PQMSG_ROW_DESCRIPTION || type == PQMSG_NO_DATA ? REPLY_LAST : REPLY_ALIEN;
	case EXPECT_EXECUTE:
		switch (type) {
		case PQMSG_COMMAND_COMPLETE:
		case PQMSG_EMPTY_QUERY_RESPONSE:
		case PQMSG_PORTAL_SUSPENDED:
			return REPLY_LAST;
		case PQMSG_DATA_ROW:
		case PQMSG_COPY_IN_RESPONSE:
		case PQMSG_COPY_OUT_RESPONSE:
		case PQMSG_COPY_BOTH_RESPONSE:
		case PQMSG_COPY_DATA:
		case PQMSG_COPY_DONE:
			return REPLY_PART;
		default:
			return REPLY_ALIEN;
		}
	case EXPECT_SYNC:
		return type == PQMSG_READY_FOR_QUERY ? REPLY_LAST : REPLY_ALIEN;
	case EXPECT_QUERY:
		switch (type) {
		case PQMSG_READY_FOR_QUERY:
			return REPLY_LAST;
		case PQMSG_ROW_DESCRIPTION:
		case PQMSG_DATA_ROW:
		case PQMSG_COMMAND_COMPLETE:
		case PQMSG_EMPTY_QUERY_RESPONSE:
		case PQMSG_COPY_IN_RESPONSE:
		case PQMSG_COPY_OUT_RESPONSE:
		case PQMSG_COPY_BOTH_RESPONSE:
		case PQMSG_COPY_DATA:
		case PQMSG_COPY_DONE:
		case PQMSG_FUNCTION_CALL_RESPONSE:
			return REPLY_PART;
		default:
			return REPLY_ALIEN;
		}
	}
	return REPLY_ALIEN;
}

/*
 * An error answering an extended-protocol message: the server skips every
 * message up to the next Sync, so the entries up to it never run.
 */
static void
reply_error(PreparedServer *srv)
{
	PreparedClient *cl = srv->client;
	Expect *e;

	expect_failed(srv, srv->head);
	expect_remove(srv, NULL, srv->head);
	while ((e = srv->head) && e->kind != EXPECT_SYNC) {
		expect_failed(srv, e);
		expect_remove(srv, NULL, e);
	}
	if (!srv->head) {
		/* The server is the client's until it sends the Sync the server waits for. */
		srv->skipping = true;
		srv->client = cl;
		if (cl)
			cl->server = srv;
	}
}

/*
 * COPY FROM STDIN began: it drops the Syncs the client sent with the
 * command (libpq sends one after CopyDone).
 */
static void
copy_in_started(PreparedServer *srv)
{
	Expect *e;

	srv->copy_in = true;
	while ((e = srv->head->next) && e->kind == EXPECT_SYNC)
		expect_remove(srv, srv->head, e);
}

/*
 * The client's DISCARD ALL or DEALLOCATE ALL ran, with the FIFO's head: the
 * names it had then are gone, as on a server of its own.  Messages queued
 * behind it changed names afterwards: their oldest change now replaces nothing.
 */
static void
client_forget_all(PreparedServer *srv, PreparedClient *cl)
{
	for (Expect *e = srv->head; e; e = e->next) {
		if (e->name && !e->name->marked) {
			e->name->marked = true;
			def_unref(e->prev);
			e->prev = NULL;
		}
	}
	for (size_t b = 0; b < cl->names.nbuckets; b++) {
		HashLink *l = cl->names.buckets[b];

		while (l) {
			HashLink *next = l->next;
			StmtName *nm = container_of(l, StmtName, link);

			if (nm->marked) {
				nm->marked = false;
			} else {
				name_set(cl, nm, NULL);
				name_gc(cl, nm);
			}
			l = next;
		}
	}
}

/* DISCARD ALL and DEALLOCATE ALL drop every prepared statement the server had. */
static bool
drops_statements(const uint8_t *msg, size_t avail, size_t len)
{
	ProtoCommandComplete cc;
	char why[128];

	if (avail < len || !proto_parse_command_complete(msg + 5, len - 5, &cc, why, sizeof(why)))
		return false;
	return strcmp(cc.tag, "DISCARD ALL") == 0 || strcmp(cc.tag, "DEALLOCATE ALL") == 0;
}

bool
prepared_server_reply(PreparedServer *srv, const uint8_t *msg, size_t avail, size_t len, PreparedVerdict *verdict,
		      PktBuf *to_client, char *err, size_t errlen)
{
	uint8_t type;
	Expect *e;
	ReplyPlace place;

	*verdict = PREPARED_FORWARD;
	if (avail < 5 || avail > len)
		return errbuf_fail(err, errlen, "message of %zu bytes with %zu at hand", len, avail);
	type = msg[0];
	switch (type) {
	case PQMSG_NOTICE_RESPONSE:
	case PQMSG_NOTIFICATION_RESPONSE:
	case PQMSG_PARAMETER_STATUS:
		return true; /* may come at any time */
	default:
		break;
	}
	emit_due(srv, to_client);
	e = srv->head;
	if (type == PQMSG_ERROR_RESPONSE) {
		srv->copy_in = false;
		/* Nothing pending: a FATAL before the server closes.  A Query's errors are followed by its ReadyForQuery. */
		if (!e || e->kind == EXPECT_SYNC || e->kind == EXPECT_QUERY)
			return true;
		/* Even when the message was the proxy's: the client must learn why its own fail. */
		reply_error(srv);
		emit_due(srv, to_client);
		return true;
	}
	if (!e)
		return errbuf_fail(err, errlen, "server sent message type 0x%02x with no reply pending", type);
	place = reply_place(e->kind, type);
	if (place == REPLY_ALIEN)
		return errbuf_fail(err, errlen, "server sent message type 0x%02x out of turn", type);
	if (type == PQMSG_COMMAND_COMPLETE || type == PQMSG_READY_FOR_QUERY)
		srv->copy_in = false;
	/* What the server prepared before this command is gone; what the pipeline sent after it is not. */
	if (type == PQMSG_COMMAND_COMPLETE && drops_statements(msg, avail, len)) {
		server_forget_before(srv, e->seq);
		if (srv->client)
			client_forget_all(srv, srv->client);
	}
	if (place == REPLY_PART) {
		if (type == PQMSG_COPY_IN_RESPONSE)
			copy_in_started(srv);
		return true;
	}
	if (e->action == EXPECT_SWALLOW)
		*verdict = PREPARED_SWALLOW;
	expect_succeeded(srv, e);
	expect_remove(srv, NULL, e);
	emit_due(srv, to_client);
	return true;
}

/* Invariants */

/* References to def held by the objects given. */
static uint32_t
count_refs(const PreparedDef *def, PreparedServer *const *servers, size_t nservers, PreparedClient *const *clients,
	   size_t nclients)
{
	uint32_t n = 0;

	for (size_t i = 0; i < nservers; i++) {
		const PreparedServer *srv = servers[i];

		if (server_find(srv, def))
			n++;
		for (const Expect *e = srv->head; e; e = e->next)
			n += (e->def == def) + (e->name && e->prev == def);
	}
	for (size_t i = 0; i < nclients; i++) {
		for (size_t b = 0; b < clients[i]->names.nbuckets; b++)
			for (const HashLink *l = clients[i]->names.buckets[b]; l; l = l->next)
				n += container_of(l, StmtName, link)->def == def;
	}
	return n;
}

static bool
check_server(const PreparedServer *srv, char *err, size_t errlen)
{
	size_t n = 0;
	const Expect *last = NULL;

	for (const Expect *e = srv->head; e; e = e->next) {
		n++;
		last = e;
		if (e->name && !srv->client)
			return errbuf_fail(err, errlen, "a name change queued for no client");
		if (e->later && (!e->name || e->later->name != e->name))
			return errbuf_fail(err, errlen, "a name change chained to another name");
	}
	if (n != srv->pending || last != srv->tail)
		return errbuf_fail(err, errlen, "FIFO of %zu entries counted %zu", n, srv->pending);
	if (srv->head && srv->head->action == EXPECT_SYNTHESIZE)
		return errbuf_fail(err, errlen, "a synthesized reply left at the head");
	if (!srv->head && !srv->skipping && srv->client)
		return errbuf_fail(err, errlen, "an empty FIFO owned by a client");
	if (srv->client && srv->client->server != srv)
		return errbuf_fail(err, errlen, "the FIFO's client points elsewhere");
	if ((size_t) list_count(&srv->lru) != srv->stmts.count)
		return errbuf_fail(err, errlen, "LRU list and set disagree");
	return true;
}

static bool
check_client(const PreparedClient *cl, char *err, size_t errlen)
{
	size_t live = 0;

	for (size_t b = 0; b < cl->names.nbuckets; b++) {
		for (const HashLink *l = cl->names.buckets[b]; l; l = l->next) {
			const StmtName *nm = container_of(l, StmtName, link);

			live += nm->def != NULL;
			if (!nm->def && !nm->latest)
				return errbuf_fail(err, errlen, "a closed name kept for nothing");
			if (nm->latest && (nm->latest->name != nm || nm->latest->later || !cl->server))
				return errbuf_fail(err, errlen, "a name's newest change is not its last");
		}
	}
	if (live != cl->live)
		return errbuf_fail(err, errlen, "%zu names counted %zu", live, cl->live);
	return true;
}

bool
prepared_check(const PreparedRegistry *reg, PreparedServer *const *servers, size_t nservers,
	       PreparedClient *const *clients, size_t nclients, char *err, size_t errlen)
{
	for (size_t i = 0; i < nservers; i++)
		if (!check_server(servers[i], err, errlen))
			return false;
	for (size_t i = 0; i < nclients; i++)
		if (!check_client(clients[i], err, errlen))
			return false;
	for (size_t b = 0; b < reg->defs.nbuckets; b++) {
		for (const HashLink *l = reg->defs.buckets[b]; l; l = l->next) {
			const PreparedDef *def = container_of(l, PreparedDef, link);
			uint32_t n = count_refs(def, servers, nservers, clients, nclients);

			if (def->refs == 0 || n != def->refs)
				return errbuf_fail(err, errlen, "%s has %u references, %u found", def->name, def->refs,
						   n);
		}
	}
	return true;
}
