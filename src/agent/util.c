/*
 * util.c -- logging, clocks and text helpers of parflow-agent.
 *
 * Owns the log line format (`<ISO time> parflow-agent[<worker>] task=<id>
 * stage=<name> attempt=<n> <event>` on stderr), the monotonic clock every
 * timer uses, allocation that dies on exhaustion, and the small text tools the
 * protocol needs without a JSON library: making arbitrary bytes valid UTF-8,
 * escaping a JSON string, and scanning a notification payload for its "kind"
 * and "task".
 */
#include "agent.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Write one log line if the verbosity shows LEVEL. */
void
agent_log(LogLevel level, const Task *t, const char *fmt,...)
{
	struct timespec ts;
	struct tm   tm;
	char        stamp[40];
	va_list     ap;

	if ((int) level > opt.verbosity)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03dZ parflow-agent[%s] ", stamp,
			(int) (ts.tv_nsec / 1000000), opt.worker ? opt.worker : "?");
	if (t)
		fprintf(stderr, "task=%lld stage=%s attempt=%d ", t->id,
				t->stage ? t->stage : "?", t->attempt);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

/* Print "parflow-agent: <message>" and exit with CODE. */
void
die(int code, const char *fmt,...)
{
	va_list     ap;

	fputs("parflow-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* Milliseconds on the monotonic clock. */
double
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

void *
xmalloc(size_t n)
{
	void       *p = malloc(n ? n : 1);

	if (p == NULL)
		die(1, "out of memory");
	return p;
}

char *
xstrdup(const char *s)
{
	size_t      n = strlen(s);
	char       *p = xmalloc(n + 1);

	memcpy(p, s, n + 1);
	return p;
}

/* A malloc'ed string formatted as by printf. */
char *
xprintf(const char *fmt,...)
{
	va_list     ap;
	int         n;
	char       *p;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		die(1, "could not format a string");
	p = xmalloc((size_t) n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t) n + 1, fmt, ap);
	va_end(ap);
	return p;
}

void
buf_append(Buf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t      cap = b->cap ? b->cap : 256;
		char       *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->data, cap);
		if (p == NULL)
			die(1, "out of memory");
		b->data = p;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Length of the valid UTF-8 sequence at S (N bytes left), 0 if invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	size_t      len,
				i;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	else if (s[0] >= 0xC2 && s[0] <= 0xDF)
		len = 2, cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		len = 3, cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		(cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
		return 0;
	return len;
}

/*
 * A malloc'ed copy of N bytes at S that the server accepts as text: NUL bytes
 * dropped, bytes that are not valid UTF-8 replaced by '?' (the connection's
 * client_encoding is UTF8).
 */
char *
utf8_clean(const char *s, size_t n)
{
	char       *out = xmalloc(n + 1);
	size_t      i = 0,
				o = 0;

	while (i < n)
	{
		size_t      len = utf8_seq((const unsigned char *) s + i, n - i);

		if (s[i] == '\0')
			i++;
		else if (len == 0)
		{
			out[o++] = '?';
			i++;
		}
		else
		{
			memcpy(out + o, s + i, len);
			o += len;
			i += len;
		}
	}
	out[o] = '\0';
	return out;
}

/* Append S (valid UTF-8) to B as a JSON string literal, quotes included. */
void
json_escape(Buf *b, const char *s)
{
	const unsigned char *p;
	char        esc[8];

	buf_append(b, "\"", 1);
	for (p = (const unsigned char *) s; *p; p++)
	{
		switch (*p)
		{
			case '"':
				buf_append(b, "\\\"", 2);
				break;
			case '\\':
				buf_append(b, "\\\\", 2);
				break;
			case '\n':
				buf_append(b, "\\n", 2);
				break;
			case '\r':
				buf_append(b, "\\r", 2);
				break;
			case '\t':
				buf_append(b, "\\t", 2);
				break;
			default:
				if (*p < 0x20)
				{
					snprintf(esc, sizeof(esc), "\\u%04x", *p);
					buf_append(b, esc, 6);
				}
				else
					buf_append(b, (const char *) p, 1);
		}
	}
	buf_append(b, "\"", 1);
}

/*
 * Find key KEY (quoted, e.g. "\"kind\"") followed by ':' in the JSON object
 * text P, and return a pointer to its value (blanks skipped), or NULL.  A
 * match that is a string value rather than a key is skipped.
 */
static const char *
payload_value(const char *p, const char *key)
{
	const char *hit;

	while ((hit = strstr(p, key)) != NULL)
	{
		const char *v = hit + strlen(key);

		while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
			v++;
		if (*v == ':')
		{
			v++;
			while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')
				v++;
			return v;
		}
		p = hit + 1;
	}
	return NULL;
}

/*
 * Scan a notification payload like {"kind":"dispatch","task":123,...} for its
 * kind (copied into KIND, at most KINDSIZE-1 bytes) and task (0 if absent).
 * Returns false if there is no "kind" string.
 */
bool
payload_scan(const char *payload, char *kind, size_t kindsize, long long *task)
{
	const char *v;
	size_t      n = 0;

	*task = 0;
	kind[0] = '\0';
	v = payload_value(payload, "\"kind\"");
	if (v == NULL || *v != '"')
		return false;
	for (v++; *v && *v != '"'; v++)
	{
		if (*v == '\\' && v[1])
			v++;
		if (n + 1 < kindsize)
			kind[n++] = *v;
	}
	kind[n] = '\0';
	v = payload_value(payload, "\"task\"");
	if (v)
	{
		char       *end;
		long long   id;

		if (*v == '"')          /* tolerate a quoted number */
			v++;
		errno = 0;
		id = strtoll(v, &end, 10);
		if (end != v && errno == 0)
			*task = id;
	}
	return true;
}
