/*
 * Streamed transactions spooled to unlinked files: see spool.h.
 */
#include "replicator/spool.h"
#include "common/log.h"
#include "common/tmpfile.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written out when full, and at every Stream Stop. */
#define SPOOL_WRITE_BUF (64 * 1024)
/* Read at a time at replay; a longer record gets a buffer of its own size. */
#define SPOOL_READ_CHUNK (256 * 1024)
#define SPOOL_RECORD_HEADER 4

typedef struct SpoolSub {
	uint32_t xid;
	uint64_t offset; /* of its first change: an abort of it cuts back to here */
	int64_t count;   /* messages before it */
} SpoolSub;

struct SpoolXact {
	uint32_t xid;
	int fd;
	uint64_t flushed; /* bytes in the file; the logical end is flushed + wlen */
	uint8_t *wbuf;
	size_t wlen;
	int64_t count;
	SpoolSub *subs;
	int nsubs;
	int subcap;
};

/* Sequential reads of a spool file at replay, in chunks. */
typedef struct SpoolReader {
	int fd;
	uint64_t file_off; /* where the next read starts */
	uint64_t file_end;
	uint8_t *buf;
	size_t cap;
	size_t pos;
	size_t end;
} SpoolReader;

static void
put_length(uint8_t *p, size_t n)
{
	p[0] = (uint8_t) (n >> 24);
	p[1] = (uint8_t) (n >> 16);
	p[2] = (uint8_t) (n >> 8);
	p[3] = (uint8_t) n;
}

static uint32_t
get_length(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

void
spool_init(Spool *sp, const char *subject)
{
	memset(sp, 0, sizeof(*sp));
	sp->subject = subject;
}

static void
xact_close(SpoolXact *x)
{
	if (x->fd >= 0)
		(void) close(x->fd);
	free(x->wbuf);
	free(x->subs);
	memset(x, 0, sizeof(*x));
	x->fd = -1;
}

void
spool_free(Spool *sp)
{
	int i;

	for (i = 0; i < sp->nxacts; i++)
		xact_close(&sp->xacts[i]);
	free(sp->xacts);
	memset(sp, 0, sizeof(*sp));
}

static SpoolXact *
find_xact(const Spool *sp, uint32_t xid)
{
	int i;

	for (i = 0; i < sp->nxacts; i++)
		if (sp->xacts[i].xid == xid)
			return &sp->xacts[i];
	return NULL;
}

/* Closes x's file and removes it from the list. */
static void
drop_xact(Spool *sp, SpoolXact *x)
{
	int i = (int) (x - sp->xacts);

	xact_close(x);
	sp->xacts[i] = sp->xacts[sp->nxacts - 1];
	sp->nxacts--;
}

static bool
write_all(Spool *sp, SpoolXact *x, const uint8_t *data, size_t len, uint64_t offset)
{
	while (len > 0) {
		ssize_t put = pwrite(x->fd, data, len, (off_t) offset);

		if (put < 0 && errno == EINTR)
			continue;
		if (put <= 0) {
			log_error(sp->subject, "could not write the spool of streamed transaction %u: %s", x->xid,
				  put < 0 ? strerror(errno) : "no space written");
			return false;
		}
		data += put;
		len -= (size_t) put;
		offset += (uint64_t) put;
	}
	return true;
}

static bool
flush_xact(Spool *sp, SpoolXact *x)
{
	if (x->wlen == 0)
		return true;
	if (!write_all(sp, x, x->wbuf, x->wlen, x->flushed))
		return false;
	x->flushed += x->wlen;
	x->wlen = 0;
	return true;
}

static bool
append_bytes(Spool *sp, SpoolXact *x, const uint8_t *data, size_t len)
{
	if (x->wlen + len > SPOOL_WRITE_BUF && !flush_xact(sp, x))
		return false;
	if (len > SPOOL_WRITE_BUF) {
		/* Larger than the buffer: straight to the file. */
		if (!write_all(sp, x, data, len, x->flushed))
			return false;
		x->flushed += len;
		return true;
	}
	memcpy(x->wbuf + x->wlen, data, len);
	x->wlen += len;
	return true;
}

static bool
append_record(Spool *sp, SpoolXact *x, const uint8_t *data, size_t len)
{
	uint8_t hdr[SPOOL_RECORD_HEADER];

	put_length(hdr, len);
	if (!append_bytes(sp, x, hdr, sizeof(hdr)) || !append_bytes(sp, x, data, len))
		return false;
	x->count++;
	return true;
}

bool
spool_start(Spool *sp, uint32_t xid, bool first_segment)
{
	SpoolXact *x = find_xact(sp, xid);
	if (!first_segment) {
		if (!x) {
			log_error(sp->subject, "a later block of streamed transaction %u arrived without its first",
				  xid);
			return false;
		}
		return true;
	}
	if (x) {
		/* Sent again from its start: what was spooled is superseded. */
		log_info(sp->subject, "streamed transaction %u starts again; its %lld spooled message(s) are dropped",
			 xid, (long long) x->count);
		drop_xact(sp, x);
	}
	if (sp->nxacts == sp->cap) {
		int cap = sp->cap ? sp->cap * 2 : 4;
		SpoolXact *xs = realloc(sp->xacts, (size_t) cap * sizeof(*xs));

		if (!xs) {
			log_error(sp->subject, "out of memory");
			return false;
		}
		sp->xacts = xs;
		sp->cap = cap;
	}
	x = &sp->xacts[sp->nxacts];
	memset(x, 0, sizeof(*x));
	x->xid = xid;
	x->wbuf = malloc(SPOOL_WRITE_BUF);
	x->fd = x->wbuf ? tmpfile_anonymous("stream", sp->subject) : -1;
	if (x->fd < 0) {
		if (!x->wbuf)
			log_error(sp->subject, "out of memory");
		free(x->wbuf);
		return false;
	}
	sp->nxacts++;
	log_debug(sp->subject, "streamed transaction %u: spooling", xid);
	return true;
}

bool
spool_append(Spool *sp, uint32_t xid, uint32_t change_xid, const uint8_t *data, size_t len)
{
	SpoolXact *x = find_xact(sp, xid);
	int i;

	if (!x) {
		log_error(sp->subject, "a change of streamed transaction %u arrived outside its block", xid);
		return false;
	}
	if (len > INT32_MAX) {
		log_error(sp->subject, "a message of streamed transaction %u is too large to spool", xid);
		return false;
	}
	if (change_xid != 0 && change_xid != xid) {
		/* The newest subtransaction is the likely one: search from the end. */
		for (i = x->nsubs - 1; i >= 0 && x->subs[i].xid != change_xid; i--)
			;
		if (i < 0) {
			if (x->nsubs == x->subcap) {
				int cap = x->subcap ? x->subcap * 2 : 8;
				SpoolSub *subs = realloc(x->subs, (size_t) cap * sizeof(*subs));

				if (!subs) {
					log_error(sp->subject, "out of memory");
					return false;
				}
				x->subs = subs;
				x->subcap = cap;
			}
			x->subs[x->nsubs].xid = change_xid;
			x->subs[x->nsubs].offset = x->flushed + x->wlen;
			x->subs[x->nsubs].count = x->count;
			x->nsubs++;
		}
	}
	return append_record(sp, x, data, len);
}

bool
spool_stop(Spool *sp, uint32_t xid)
{
	SpoolXact *x = find_xact(sp, xid);

	return !x || flush_xact(sp, x);
}

int64_t
spool_count(const Spool *sp, uint32_t xid)
{
	const SpoolXact *x = find_xact(sp, xid);

	return x ? x->count : -1;
}

/* Makes at least n bytes readable at r->buf + r->pos; false at the end of the file or on an error (errno). */
static bool
reader_need(SpoolReader *r, size_t n)
{
	if (r->end - r->pos >= n)
		return true;
	if (r->pos > 0) {
		memmove(r->buf, r->buf + r->pos, r->end - r->pos);
		r->end -= r->pos;
		r->pos = 0;
	}
	if (n > r->cap) {
		uint8_t *b = realloc(r->buf, n);

		if (!b) {
			errno = ENOMEM;
			return false;
		}
		r->buf = b;
		r->cap = n;
	}
	while (r->end < n) {
		size_t want = r->cap - r->end;
		ssize_t got;

		if (want > r->file_end - r->file_off)
			want = (size_t) (r->file_end - r->file_off);
		if (want == 0) {
			errno = 0;
			return false;
		}
		got = pread(r->fd, r->buf + r->end, want, (off_t) r->file_off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got == 0)
				errno = 0;
			return false;
		}
		r->end += (size_t) got;
		r->file_off += (uint64_t) got;
	}
	return true;
}

/*
 * The next record, pointing into the reader's buffer.  *done at a clean end
 * of the file; false (logged) for a short or unreadable file.
 */
static bool
reader_next(Spool *sp, SpoolReader *r, uint32_t xid, const uint8_t **data, size_t *len, bool *done)
{
	uint32_t n;

	*done = false;
	if (r->pos == r->end && r->file_off == r->file_end) {
		*done = true;
		return true;
	}
	if (!reader_need(r, SPOOL_RECORD_HEADER))
		goto failed;
	n = get_length(r->buf + r->pos);
	r->pos += SPOOL_RECORD_HEADER;
	if (!reader_need(r, n))
		goto failed;
	*data = r->buf + r->pos;
	*len = n;
	r->pos += n;
	return true;
failed:
	log_error(sp->subject, "could not read the spool of streamed transaction %u: %s", xid,
		  errno ? strerror(errno) : "it ends early");
	return false;
}

bool
spool_abort(Spool *sp, uint32_t xid, uint32_t subxid)
{
	SpoolXact *x = find_xact(sp, xid);
	int i;

	if (!x)
		return true; /* nothing of it was spooled */
	if (subxid == xid) {
		log_debug(sp->subject, "streamed transaction %u aborted: %lld spooled message(s) dropped", xid,
			  (long long) x->count);
		drop_xact(sp, x);
		return true;
	}
	for (i = 0; i < x->nsubs && x->subs[i].xid != subxid; i++)
		;
	if (i == x->nsubs)
		return true; /* the subtransaction changed nothing published */
	/*
	 * Relation messages sent inside the subtransaction go too: after any
	 * Stream Abort pgoutput forgets which tables it described in this
	 * transaction, and describes them again before their next change.
	 */
	if (!flush_xact(sp, x))
		return false;
	if (ftruncate(x->fd, (off_t) x->subs[i].offset) != 0) {
		log_error(sp->subject, "could not cut back the spool of streamed transaction %u: %s", xid,
			  strerror(errno));
		return false;
	}
	x->flushed = x->subs[i].offset;
	x->count = x->subs[i].count;
	/* Those begun after it were inside it. */
	x->nsubs = i;
	log_debug(sp->subject, "streamed transaction %u: subtransaction %u aborted, %lld message(s) kept", xid, subxid,
		  (long long) x->count);
	return true;
}

bool
spool_replay(Spool *sp, uint32_t xid, SpoolReplayFn fn, void *arg)
{
	SpoolXact *x = find_xact(sp, xid);
	SpoolReader r;
	const uint8_t *data;
	size_t len;
	bool done = false, ok;

	if (!x) {
		log_error(sp->subject, "streamed transaction %u committed, but none of it arrived", xid);
		return false;
	}
	ok = flush_xact(sp, x);
	memset(&r, 0, sizeof(r));
	r.fd = x->fd;
	r.file_end = x->flushed;
	r.buf = ok ? malloc(SPOOL_READ_CHUNK) : NULL;
	r.cap = SPOOL_READ_CHUNK;
	if (ok && !r.buf) {
		log_error(sp->subject, "out of memory");
		ok = false;
	}
	while (ok && !done) {
		ok = reader_next(sp, &r, xid, &data, &len, &done);
		if (ok && !done)
			ok = fn(arg, data, len);
	}
	free(r.buf);
	drop_xact(sp, x);
	return ok;
}
