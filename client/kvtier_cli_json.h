/*
 * kvtier_cli_json.h - a small, strict JSON reader for the kvtier tool.
 *
 * Just enough to read the daemon's STATS document: check that a text is one
 * well-formed JSON value (RFC 8259: objects, arrays, strings, numbers, true,
 * false, null; UTF-8), then look values up by a dotted path of member names
 * ("l1.entries").  Nothing is allocated; lookups re-scan the text, which is
 * fine for documents of a few kilobytes read a few dozen times.
 *
 * Lookups assume the text passed kvt_json_check(); on text that did not,
 * they return KVT_EPROTO rather than misbehave.  Where a member name occurs
 * twice, the first occurrence wins.
 */
#ifndef KVTIER_CLI_JSON_H
#define KVTIER_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Deepest nesting of objects and arrays accepted. */
#define KVT_JSON_MAX_DEPTH 64

/*
 * Returns 0 if text[0..len) is exactly one JSON value, with optional
 * surrounding whitespace, else KVT_EPROTO.
 */
int kvt_json_check(const char *text, size_t len);

/*
 * Finds the value at path: member names separated by '.', each step going
 * into an object.  "" is the whole document.  On 0, *val and *vlen give the
 * value's text (for a string, with its quotes).  Returns 0, KVT_ENOTFOUND
 * if a member is missing or a step is not an object, or KVT_EPROTO.
 */
int kvt_json_find(const char *text, size_t len, const char *path,
		  const char **val, size_t *vlen);

/*
 * Reads the value at path as a non-negative integer (digits only, no
 * fraction or exponent, at most 2^64-1).  Returns 0, KVT_ENOTFOUND (absent,
 * or null), KVT_EINVAL (another kind of value, or out of range), KVT_EPROTO.
 */
int kvt_json_get_u64(const char *text, size_t len, const char *path,
		     uint64_t *out);

/* Like kvt_json_get_u64() for any JSON number. */
int kvt_json_get_double(const char *text, size_t len, const char *path,
			double *out);

/*
 * Reads the string at path, unescaped, into buf of capacity cap
 * (NUL-terminated).  Returns 0, KVT_ENOTFOUND (absent or null), KVT_EINVAL
 * (not a string), KVT_ERANGE (does not fit; buf holds a truncated copy when
 * cap > 0), KVT_EPROTO.
 */
int kvt_json_get_string(const char *text, size_t len, const char *path,
			char *buf, size_t cap);

#endif /* KVTIER_CLI_JSON_H */
