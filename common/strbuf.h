/*
 * A growable, always NUL-terminated string.  Appends never fail loudly: an
 * allocation failure sets the sticky `failed` flag, which the owner checks
 * once when the string is complete.
 */
#ifndef PGHANDOFF_COMMON_STRBUF_H
#define PGHANDOFF_COMMON_STRBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdarg.h>

typedef struct StrBuf {
	char *data;
	size_t len;
	size_t cap;
	bool failed;
} StrBuf;

void strbuf_init(StrBuf *sb);
void strbuf_free(StrBuf *sb);
void strbuf_reset(StrBuf *sb);
void strbuf_append(StrBuf *sb, const char *s);
void strbuf_append_len(StrBuf *sb, const char *s, size_t len);
void strbuf_append_char(StrBuf *sb, char c);
void strbuf_appendf(StrBuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_vappendf(StrBuf *sb, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends s as a JSON string literal, quotes included. */
void strbuf_append_json(StrBuf *sb, const char *s);
/*
 * Appends len bytes of s for a line of text: \n, \r and \t become those two
 * characters, any other control character (and DEL) \xNN, so that bytes from
 * a client can never end a line or drive a terminal.  Backslashes and bytes
 * from 0x80 up stay as they are.
 */
void strbuf_append_escaped(StrBuf *sb, const char *s, size_t len);

/* Returns the string, or "" when empty; never NULL. */
const char *strbuf_str(const StrBuf *sb);

#endif
