/*
 * kvtier_cli_json.c - a small, strict JSON reader (see kvtier_cli_json.h).
 *
 * A recursive-descent scanner over the text, without a tree: the stats
 * table looks up a few dozen numbers once, so re-scanning is cheaper to
 * write and to trust than building and freeing a document.  It is strict
 * (RFC 8259 grammar, UTF-8 validated, surrogates paired) because a reader
 * that accepts anything makes a daemon bug look like a zero.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier_cli_json.h"
#include "kvtier_errors.h"

struct jp {
	const char *p;
	const char *end;
	int depth;
};

/* Where a decoded string goes; len counts every byte, stored or not. */
struct jstr {
	char *buf;
	size_t cap;
	size_t len;
};

static int parse_value(struct jp *j);

static int peek(const struct jp *j)
{
	return j->p < j->end ? (unsigned char)*j->p : -1;
}

static void skip_ws(struct jp *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static void out_byte(struct jstr *s, unsigned b)
{
	if (!s)
		return;
	if (s->cap > 0 && s->len < s->cap - 1)
		s->buf[s->len] = (char)b;
	s->len++;
}

static void out_utf8(struct jstr *s, uint32_t cp)
{
	if (cp < 0x80) {
		out_byte(s, cp);
	} else if (cp < 0x800) {
		out_byte(s, 0xc0 | cp >> 6);
		out_byte(s, 0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		out_byte(s, 0xe0 | cp >> 12);
		out_byte(s, 0x80 | (cp >> 6 & 0x3f));
		out_byte(s, 0x80 | (cp & 0x3f));
	} else {
		out_byte(s, 0xf0 | cp >> 18);
		out_byte(s, 0x80 | (cp >> 12 & 0x3f));
		out_byte(s, 0x80 | (cp >> 6 & 0x3f));
		out_byte(s, 0x80 | (cp & 0x3f));
	}
}

/* Reads 4 hex digits at j->p. */
static int hex4(struct jp *j, uint32_t *out)
{
	uint32_t v = 0;

	if (j->end - j->p < 4)
		return KVT_EPROTO;
	for (int i = 0; i < 4; i++) {
		char ch = *j->p++;

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (uint32_t)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (uint32_t)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			v |= (uint32_t)(ch - 'A' + 10);
		else
			return KVT_EPROTO;
	}
	*out = v;
	return 0;
}

/*
 * Length of the well-formed UTF-8 sequence at p (RFC 3629 table 3-7: no
 * overlongs, no surrogates, nothing past U+10FFFF), or 0.
 */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned lo = 0x80, hi = 0xbf;
	size_t n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;
		else if (p[0] == 0xed)
			hi = 0x9f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Parses the string at j->p (which is '"'), decoding it into s if set. */
static int parse_string(struct jp *j, struct jstr *s)
{
	uint32_t cp, lo;
	size_t n;

	if (peek(j) != '"')
		return KVT_EPROTO;
	j->p++;
	while (j->p < j->end) {
		unsigned char ch = (unsigned char)*j->p;

		if (ch == '"') {
			j->p++;
			if (s && s->cap > 0)
				s->buf[s->len < s->cap ? s->len : s->cap - 1] =
					'\0';
			return 0;
		}
		if (ch < 0x20)
			return KVT_EPROTO;
		if (ch >= 0x80) {
			n = utf8_len((const unsigned char *)j->p,
				     (const unsigned char *)j->end);
			if (n == 0)
				return KVT_EPROTO;
			for (size_t i = 0; i < n; i++)
				out_byte(s, (unsigned char)j->p[i]);
			j->p += n;
			continue;
		}
		j->p++;
		if (ch != '\\') {
			out_byte(s, ch);
			continue;
		}
		if (j->p >= j->end)
			return KVT_EPROTO;
		switch (*j->p++) {
		case '"':
			out_byte(s, '"');
			break;
		case '\\':
			out_byte(s, '\\');
			break;
		case '/':
			out_byte(s, '/');
			break;
		case 'b':
			out_byte(s, '\b');
			break;
		case 'f':
			out_byte(s, '\f');
			break;
		case 'n':
			out_byte(s, '\n');
			break;
		case 'r':
			out_byte(s, '\r');
			break;
		case 't':
			out_byte(s, '\t');
			break;
		case 'u':
			if (hex4(j, &cp) < 0)
				return KVT_EPROTO;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return KVT_EPROTO; /* lone low surrogate */
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (j->end - j->p < 2 || j->p[0] != '\\' ||
				    j->p[1] != 'u')
					return KVT_EPROTO;
				j->p += 2;
				if (hex4(j, &lo) < 0 || lo < 0xdc00 ||
				    lo > 0xdfff)
					return KVT_EPROTO;
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			out_utf8(s, cp);
			break;
		default:
			return KVT_EPROTO;
		}
	}
	return KVT_EPROTO; /* unterminated */
}

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(struct jp *j)
{
	if (peek(j) == '-')
		j->p++;
	if (peek(j) == '0') {
		j->p++;
	} else if (is_digit(peek(j))) {
		while (is_digit(peek(j)))
			j->p++;
	} else {
		return KVT_EPROTO;
	}
	if (peek(j) == '.') {
		j->p++;
		if (!is_digit(peek(j)))
			return KVT_EPROTO;
		while (is_digit(peek(j)))
			j->p++;
	}
	if (peek(j) == 'e' || peek(j) == 'E') {
		j->p++;
		if (peek(j) == '+' || peek(j) == '-')
			j->p++;
		if (!is_digit(peek(j)))
			return KVT_EPROTO;
		while (is_digit(peek(j)))
			j->p++;
	}
	return 0;
}

static int parse_literal(struct jp *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return KVT_EPROTO;
	j->p += n;
	return 0;
}

/* Parses '{' ... '}' or '[' ... ']' at j->p. */
static int parse_container(struct jp *j, char close)
{
	bool object = close == '}';
	int rc;

	if (++j->depth > KVT_JSON_MAX_DEPTH)
		return KVT_EPROTO;
	j->p++;
	skip_ws(j);
	if (peek(j) == close) {
		j->p++;
		j->depth--;
		return 0;
	}
	for (;;) {
		if (object) {
			skip_ws(j);
			rc = parse_string(j, NULL);
			if (rc < 0)
				return rc;
			skip_ws(j);
			if (peek(j) != ':')
				return KVT_EPROTO;
			j->p++;
		}
		rc = parse_value(j);
		if (rc < 0)
			return rc;
		skip_ws(j);
		if (peek(j) == ',') {
			j->p++;
			continue;
		}
		if (peek(j) != close)
			return KVT_EPROTO;
		j->p++;
		j->depth--;
		return 0;
	}
}

/* Parses one value, with leading whitespace, at j->p. */
static int parse_value(struct jp *j)
{
	skip_ws(j);
	switch (peek(j)) {
	case '{':
		return parse_container(j, '}');
	case '[':
		return parse_container(j, ']');
	case '"':
		return parse_string(j, NULL);
	case 't':
		return parse_literal(j, "true");
	case 'f':
		return parse_literal(j, "false");
	case 'n':
		return parse_literal(j, "null");
	default:
		return parse_number(j);
	}
}

int kvt_json_check(const char *text, size_t len)
{
	struct jp j = { .p = text, .end = text + len };

	if (!text)
		return KVT_EPROTO;
	if (parse_value(&j) < 0)
		return KVT_EPROTO;
	skip_ws(&j);
	return j.p == j.end ? 0 : KVT_EPROTO;
}

/*
 * With j->p on an object, moves it to the value of member name[0..nlen).
 * Returns 0, KVT_ENOTFOUND or KVT_EPROTO.
 */
static int enter_member(struct jp *j, const char *name, size_t nlen)
{
	/* A member name longer than any path component cannot match. */
	char buf[256];
	struct jstr s;
	int rc;

	if (peek(j) != '{')
		return KVT_ENOTFOUND;
	j->p++;
	skip_ws(j);
	if (peek(j) == '}')
		return KVT_ENOTFOUND;
	for (;;) {
		s = (struct jstr){ .buf = buf, .cap = sizeof(buf) };
		skip_ws(j);
		rc = parse_string(j, &s);
		if (rc < 0)
			return rc;
		skip_ws(j);
		if (peek(j) != ':')
			return KVT_EPROTO;
		j->p++;
		skip_ws(j);
		if (s.len == nlen && nlen < sizeof(buf) &&
		    memcmp(buf, name, nlen) == 0)
			return 0;
		rc = parse_value(j);
		if (rc < 0)
			return rc;
		skip_ws(j);
		if (peek(j) == ',') {
			j->p++;
			continue;
		}
		return peek(j) == '}' ? KVT_ENOTFOUND : KVT_EPROTO;
	}
}

int kvt_json_find(const char *text, size_t len, const char *path,
		  const char **val, size_t *vlen)
{
	struct jp j = { .p = text, .end = text + len };
	const char *start;
	int rc;

	if (!text || !path || !val || !vlen)
		return KVT_EINVAL;
	skip_ws(&j);
	while (*path) {
		const char *dot = strchr(path, '.');
		size_t n = dot ? (size_t)(dot - path) : strlen(path);

		rc = enter_member(&j, path, n);
		if (rc < 0)
			return rc;
		path += n;
		if (*path == '.')
			path++;
	}
	start = j.p;
	rc = parse_value(&j);
	if (rc < 0)
		return rc;
	*val = start;
	*vlen = (size_t)(j.p - start);
	return 0;
}

/*
 * Finds a number at path and copies its text, NUL-terminated, into
 * buf[cap].  Longer tokens than any sane counter are refused.
 */
static int find_number(const char *text, size_t len, const char *path,
		       char *buf, size_t cap)
{
	const char *v;
	size_t vlen;
	int rc;

	rc = kvt_json_find(text, len, path, &v, &vlen);
	if (rc < 0)
		return rc;
	if (vlen == 4 && memcmp(v, "null", 4) == 0)
		return KVT_ENOTFOUND;
	if (!(v[0] == '-' || is_digit((unsigned char)v[0])))
		return KVT_EINVAL;
	if (vlen >= cap)
		return KVT_EINVAL;
	memcpy(buf, v, vlen);
	buf[vlen] = '\0';
	return 0;
}

int kvt_json_get_u64(const char *text, size_t len, const char *path,
		     uint64_t *out)
{
	char buf[32];
	unsigned long long v;
	char *end;
	int rc;

	rc = find_number(text, len, path, buf, sizeof(buf));
	if (rc < 0)
		return rc;
	for (const char *p = buf; *p; p++)
		if (!is_digit((unsigned char)*p))
			return KVT_EINVAL;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || *end)
		return KVT_EINVAL;
	*out = (uint64_t)v;
	return 0;
}

int kvt_json_get_double(const char *text, size_t len, const char *path,
			double *out)
{
	char buf[64];
	char *end;
	double v;
	int rc;

	rc = find_number(text, len, path, buf, sizeof(buf));
	if (rc < 0)
		return rc;
	v = strtod(buf, &end);
	if (*end)
		return KVT_EINVAL;
	*out = v;
	return 0;
}

int kvt_json_get_string(const char *text, size_t len, const char *path,
			char *buf, size_t cap)
{
	struct jp j;
	struct jstr s = { .buf = buf, .cap = cap };
	const char *v;
	size_t vlen;
	int rc;

	if (cap > 0)
		buf[0] = '\0';
	rc = kvt_json_find(text, len, path, &v, &vlen);
	if (rc < 0)
		return rc;
	if (vlen == 4 && memcmp(v, "null", 4) == 0)
		return KVT_ENOTFOUND;
	if (v[0] != '"')
		return KVT_EINVAL;
	j = (struct jp){ .p = v, .end = v + vlen };
	rc = parse_string(&j, &s);
	if (rc < 0)
		return rc;
	return cap > 0 && s.len < cap ? 0 : KVT_ERANGE;
}
