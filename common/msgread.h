/*
 * A bounds-checked reader over one message's bytes, for the proxy's wire
 * codec and the replicator's pgoutput decoder.  Readers return pointers into
 * the buffer; only msgread_copy_bytes copies.  Any failed read sets the
 * sticky `failed` flag, so a decoder can read a whole message and check once
 * (msgread_end also checks that nothing was left over), like PostgreSQL's
 * pq_getmsg* / pq_getmsgend.  Integers are in network byte order.
 */
#ifndef PGHANDOFF_COMMON_MSGREAD_H
#define PGHANDOFF_COMMON_MSGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct MsgReader {
	const uint8_t *data;
	size_t len;
	size_t pos;
	bool failed;
} MsgReader;

void msgread_init(MsgReader *r, const void *data, size_t len);

bool msgread_byte(MsgReader *r, uint8_t *out) __attribute__((warn_unused_result));
bool msgread_int16(MsgReader *r, int16_t *out) __attribute__((warn_unused_result));
bool msgread_uint16(MsgReader *r, uint16_t *out) __attribute__((warn_unused_result));
bool msgread_int32(MsgReader *r, int32_t *out) __attribute__((warn_unused_result));
bool msgread_uint32(MsgReader *r, uint32_t *out) __attribute__((warn_unused_result));
bool msgread_int64(MsgReader *r, int64_t *out) __attribute__((warn_unused_result));

/*
 * A NUL-terminated string: *out points into the buffer, *len_out (if not
 * NULL) gets its length without the NUL.  Fails when there is no NUL before
 * the end of the buffer.
 */
bool msgread_string(MsgReader *r, const char **out, size_t *len_out) __attribute__((warn_unused_result));

/* n bytes: *out points into the buffer. */
bool msgread_bytes(MsgReader *r, size_t n, const uint8_t **out) __attribute__((warn_unused_result));

/* n bytes copied to dst. */
bool msgread_copy_bytes(MsgReader *r, void *dst, size_t n) __attribute__((warn_unused_result));

/* Bytes left to read; 0 once the reader has failed. */
size_t msgread_remaining(const MsgReader *r);

/* True when no read failed and every byte was consumed. */
bool msgread_end(const MsgReader *r) __attribute__((warn_unused_result));

#endif /* PGHANDOFF_COMMON_MSGREAD_H */
