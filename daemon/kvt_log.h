/*
 * kvt_log.h - the daemon's one logger.
 *
 * One line per event on stderr (journald captures it), key=value fields:
 *   2026-11-23T14:10:01.123Z level=info event=listening socket=/run/kvtier.sock
 * The level is checked before anything is formatted, so debug lines cost a
 * comparison when disabled.
 */
#ifndef KVT_LOG_H
#define KVT_LOG_H

enum kvt_log_level {
	KVT_LOG_ERROR = 0,
	KVT_LOG_WARN = 1,
	KVT_LOG_INFO = 2,
	KVT_LOG_DEBUG = 3,
};

extern int kvt_log_level;

/* Parses "error", "warn", "info", "debug"; returns the level or -1. */
int kvt_log_level_parse(const char *s);
const char *kvt_log_level_name(int level);

void kvt_log_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define kvt_log(level, ...)                                                  \
	do {                                                                 \
		if ((level) <= kvt_log_level)                                \
			kvt_log_write((level), __VA_ARGS__);                 \
	} while (0)

#endif /* KVT_LOG_H */
