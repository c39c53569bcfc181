/*
 * Strict base64 codec for SCRAM messages and verifiers.
 *
 * Input from the network goes through base64_decode, so it checks every
 * character and every length before writing, and never reads past srclen.
 */
#include "common/base64.h"

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of a base64 character, or -1 if it is not in the alphabet. */
static int
b64_value(char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

bool
base64_encode(const uint8_t *src, size_t srclen, char *dst, size_t dstsize, size_t *outlen)
{
	size_t need;
	size_t i;
	size_t o = 0;

	/* Keep BASE64_ENCODED_LEN from overflowing. */
	if (srclen > (SIZE_MAX / 4) * 3 - 3)
		return false;
	need = BASE64_ENCODED_LEN(srclen);
	if (dst == NULL || dstsize < need + 1)
		return false;

	for (i = 0; i + 3 <= srclen; i += 3) {
		uint32_t v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8) | src[i + 2];

		dst[o++] = b64_alphabet[(v >> 18) & 0x3F];
		dst[o++] = b64_alphabet[(v >> 12) & 0x3F];
		dst[o++] = b64_alphabet[(v >> 6) & 0x3F];
		dst[o++] = b64_alphabet[v & 0x3F];
	}
	if (srclen - i == 1) {
		uint32_t v = (uint32_t) src[i] << 16;

		dst[o++] = b64_alphabet[(v >> 18) & 0x3F];
		dst[o++] = b64_alphabet[(v >> 12) & 0x3F];
		dst[o++] = '=';
		dst[o++] = '=';
	} else if (srclen - i == 2) {
		uint32_t v = ((uint32_t) src[i] << 16) | ((uint32_t) src[i + 1] << 8);

		dst[o++] = b64_alphabet[(v >> 18) & 0x3F];
		dst[o++] = b64_alphabet[(v >> 12) & 0x3F];
		dst[o++] = b64_alphabet[(v >> 6) & 0x3F];
		dst[o++] = '=';
	}
	dst[o] = '\0';
	if (outlen)
		*outlen = o;
	return true;
}

bool
base64_decode(const char *src, size_t srclen, uint8_t *dst, size_t dstsize, size_t *outlen)
{
	size_t pad = 0;
	size_t need;
	size_t i;
	size_t o = 0;

	if (srclen % 4 != 0)
		return false;
	if (srclen > 0 && src[srclen - 1] == '=') {
		pad++;
		if (src[srclen - 2] == '=')
			pad++;
	}
	need = srclen / 4 * 3 - pad;
	if (need > dstsize || (need > 0 && dst == NULL))
		return false;

	for (i = 0; i < srclen; i += 4) {
		bool last = (i + 4 == srclen);
		int a = b64_value(src[i]);
		int b = b64_value(src[i + 1]);
		int c;
		int d;
		uint32_t v;

		/* '=' is only allowed as the final one or two characters. */
		c = (last && pad == 2) ? 0 : b64_value(src[i + 2]);
		d = (last && pad >= 1) ? 0 : b64_value(src[i + 3]);
		if (a < 0 || b < 0 || c < 0 || d < 0)
			return false;

		v = ((uint32_t) a << 18) | ((uint32_t) b << 12) | ((uint32_t) c << 6) | (uint32_t) d;
		dst[o++] = (uint8_t) (v >> 16);
		if (!(last && pad == 2))
			dst[o++] = (uint8_t) (v >> 8);
		if (!(last && pad >= 1))
			dst[o++] = (uint8_t) v;
	}
	if (outlen)
		*outlen = o;
	return true;
}
