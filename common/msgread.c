/*
 * Bounds-checked reading of wire messages.  Every read checks the bytes it
 * needs against what is left, never against a length taken from the data.
 */
#include "common/msgread.h"

#include <string.h>

void
msgread_init(MsgReader *r, const void *data, size_t len)
{
	/* An empty range may come as NULL; arithmetic on NULL is undefined. */
	static const uint8_t empty[1];

	r->data = data ? data : empty;
	r->len = data ? len : 0;
	r->pos = 0;
	r->failed = false;
}

size_t
msgread_remaining(const MsgReader *r)
{
	return r->failed ? 0 : r->len - r->pos;
}

bool
msgread_end(const MsgReader *r)
{
	return !r->failed && r->pos == r->len;
}

/*
 * Claims n bytes and returns where they start, or NULL (and marks the reader
 * failed) when fewer are left.  Comparing n with what is left, rather than
 * pos + n with len, cannot overflow.
 */
static const uint8_t *
msgread_take(MsgReader *r, size_t n)
{
	const uint8_t *p;

	if (r->failed || n > r->len - r->pos) {
		r->failed = true;
		return NULL;
	}
	p = r->data + r->pos;
	r->pos += n;
	return p;
}

bool
msgread_byte(MsgReader *r, uint8_t *out)
{
	const uint8_t *p = msgread_take(r, 1);

	if (!p)
		return false;
	*out = p[0];
	return true;
}

bool
msgread_uint16(MsgReader *r, uint16_t *out)
{
	const uint8_t *p = msgread_take(r, 2);

	if (!p)
		return false;
	*out = (uint16_t) ((p[0] << 8) | p[1]);
	return true;
}

bool
msgread_int16(MsgReader *r, int16_t *out)
{
	uint16_t v;

	if (!msgread_uint16(r, &v))
		return false;
	/* Conversion of an out-of-range value is implementation-defined; memcpy is not. */
	memcpy(out, &v, sizeof(v));
	return true;
}

bool
msgread_uint32(MsgReader *r, uint32_t *out)
{
	const uint8_t *p = msgread_take(r, 4);

	if (!p)
		return false;
	*out = ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | (uint32_t) p[3];
	return true;
}

bool
msgread_int32(MsgReader *r, int32_t *out)
{
	uint32_t v;

	if (!msgread_uint32(r, &v))
		return false;
	memcpy(out, &v, sizeof(v));
	return true;
}

bool
msgread_int64(MsgReader *r, int64_t *out)
{
	uint32_t hi, lo;
	uint64_t v;

	if (!msgread_uint32(r, &hi) || !msgread_uint32(r, &lo))
		return false;
	v = ((uint64_t) hi << 32) | lo;
	memcpy(out, &v, sizeof(v));
	return true;
}

bool
msgread_string(MsgReader *r, const char **out, size_t *len_out)
{
	const uint8_t *start, *nul;
	size_t n;

	if (r->failed)
		return false;
	start = r->data + r->pos;
	nul = memchr(start, '\0', r->len - r->pos);
	if (!nul) {
		r->failed = true;
		return false;
	}
	n = (size_t) (nul - start);
	r->pos += n + 1;
	*out = (const char *) start;
	if (len_out)
		*len_out = n;
	return true;
}

bool
msgread_bytes(MsgReader *r, size_t n, const uint8_t **out)
{
	const uint8_t *p = msgread_take(r, n);

	if (!p)
		return false;
	*out = p;
	return true;
}

bool
msgread_copy_bytes(MsgReader *r, void *dst, size_t n)
{
	const uint8_t *p = msgread_take(r, n);

	if (!p)
		return false;
	if (n > 0)
		memcpy(dst, p, n);
	return true;
}
