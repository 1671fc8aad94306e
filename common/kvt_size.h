/*
 * kvt_size.h - byte sizes as people write them: "64M", "2G", "512K", "1000".
 * Suffixes K, M, G, T are powers of 1024, case-insensitive, optionally
 * followed by "B" or "iB" ("64MiB", "64mb").  Pure functions.
 */
#ifndef KVT_SIZE_H
#define KVT_SIZE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Parses s into *out.  Returns 0, KVT_EINVAL for an empty string, a
 * negative or malformed number or an unknown suffix, KVT_ETOOBIG on
 * overflow of 64 bits.
 */
int kvt_size_parse(const char *s, uint64_t *out);

/*
 * Formats n for people ("64.0 MiB", "512 B") into buf of capacity cap,
 * always NUL-terminated when cap > 0.  Returns buf.
 */
char *kvt_size_format(uint64_t n, char *buf, size_t cap);

#endif /* KVT_SIZE_H */
