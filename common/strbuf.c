/*
 * Growable strings for log lines, reports and generated SQL.
 */
#include "common/strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
strbuf_init(StrBuf *sb)
{
	sb->data = NULL;
	sb->len = 0;
	sb->cap = 0;
	sb->failed = false;
}

void
strbuf_free(StrBuf *sb)
{
	free(sb->data);
	strbuf_init(sb);
}

void
strbuf_reset(StrBuf *sb)
{
	sb->len = 0;
	if (sb->data)
		sb->data[0] = '\0';
}

static bool
strbuf_reserve(StrBuf *sb, size_t extra)
{
	size_t need, cap;
	char *data;

	if (sb->failed)
		return false;
	if (extra > SIZE_MAX / 2 - sb->len) {
		sb->failed = true;
		return false;
	}
	need = sb->len + extra + 1;
	if (need <= sb->cap)
		return true;
	cap = sb->cap ? sb->cap : 64;
	while (cap < need)
		cap *= 2;
	data = realloc(sb->data, cap);
	if (!data) {
		sb->failed = true;
		return false;
	}
	sb->data = data;
	sb->cap = cap;
	return true;
}

void
strbuf_append_len(StrBuf *sb, const char *s, size_t len)
{
	if (!strbuf_reserve(sb, len))
		return;
	memcpy(sb->data + sb->len, s, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

void
strbuf_append(StrBuf *sb, const char *s)
{
	strbuf_append_len(sb, s, strlen(s));
}

void
strbuf_append_char(StrBuf *sb, char c)
{
	strbuf_append_len(sb, &c, 1);
}

void
strbuf_vappendf(StrBuf *sb, const char *fmt, va_list ap)
{
	va_list again;
	int n;

	va_copy(again, ap);
	n = vsnprintf(NULL, 0, fmt, ap);
	if (n < 0) {
		sb->failed = true;
	} else if (strbuf_reserve(sb, (size_t) n)) {
		vsnprintf(sb->data + sb->len, (size_t) n + 1, fmt, again);
		sb->len += (size_t) n;
	}
	va_end(again);
}

void
strbuf_appendf(StrBuf *sb, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	strbuf_vappendf(sb, fmt, ap);
	va_end(ap);
}

void
strbuf_append_json(StrBuf *sb, const char *s)
{
	const unsigned char *p;

	strbuf_append_char(sb, '"');
	for (p = (const unsigned char *) s; *p; p++) {
		switch (*p) {
		case '"':
			strbuf_append(sb, "\\\"");
			break;
		case '\\':
			strbuf_append(sb, "\\\\");
			break;
		case '\n':
			strbuf_append(sb, "\\n");
			break;
		case '\r':
			strbuf_append(sb, "\\r");
			break;
		case '\t':
			strbuf_append(sb, "\\t");
			break;
		default:
			if (*p < 0x20)
				strbuf_appendf(sb, "\\u%04x", *p);
			else
				strbuf_append_char(sb, (char) *p);
		}
	}
	strbuf_append_char(sb, '"');
}

void
strbuf_append_escaped(StrBuf *sb, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t i, run = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = p[i];

		if (c >= 0x20 && c != 0x7f) {
			run++;
			continue;
		}
		/* Plain bytes go in runs; only the control character is spelled out. */
		strbuf_append_len(sb, s + i - run, run);
		run = 0;
		if (c == '\n')
			strbuf_append(sb, "\\n");
		else if (c == '\r')
			strbuf_append(sb, "\\r");
		else if (c == '\t')
			strbuf_append(sb, "\\t");
		else
			strbuf_appendf(sb, "\\x%02x", c);
	}
	strbuf_append_len(sb, s + len - run, run);
}

const char *
strbuf_str(const StrBuf *sb)
{
	return sb->data ? sb->data : "";
}
