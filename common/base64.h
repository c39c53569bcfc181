/*
 * Strict standard base64 (RFC 4648 section 4, with '=' padding), as used by
 * SCRAM attributes and PostgreSQL's SCRAM verifiers.
 *
 * We carry our own codec instead of EVP_EncodeBlock/EVP_DecodeBlock because
 * those skip whitespace and report padding bytes as decoded output; SCRAM
 * needs exact lengths and rejects anything that is not canonical base64.
 * Every function takes the output buffer size and fails rather than
 * truncating.
 */
#ifndef PGHANDOFF_COMMON_BASE64_H
#define PGHANDOFF_COMMON_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes, not counting the terminating NUL. */
#define BASE64_ENCODED_LEN(n) ((((n) + 2) / 3) * 4)

/* Upper bound of the bytes that n base64 characters decode to. */
#define BASE64_DECODED_MAX(n) (((n) / 4) * 3)

/*
 * Encode srclen bytes into dst, NUL-terminated.  dstsize must be at least
 * BASE64_ENCODED_LEN(srclen) + 1.  *outlen (if not NULL) gets the length
 * without the NUL.  Returns false only if dst is too small.
 */
bool base64_encode(const uint8_t *src, size_t srclen, char *dst, size_t dstsize, size_t *outlen)
	__attribute__((warn_unused_result));

/*
 * Decode exactly srclen characters of src (no NUL needed) into dst.
 * Input must be a multiple of 4 characters from the standard alphabet,
 * with at most two '=' only at the very end; whitespace is an error.
 * Returns false on malformed input or if dst (dstsize bytes) is too small.
 */
bool base64_decode(const char *src, size_t srclen, uint8_t *dst, size_t dstsize, size_t *outlen)
	__attribute__((warn_unused_result));

#endif /* PGHANDOFF_COMMON_BASE64_H */
