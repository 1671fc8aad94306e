/* kvt_log.c - see kvt_log.h. */
#include "kvt_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int kvt_log_level = KVT_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

int kvt_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, level_names[i]) == 0)
			return i;
	if (strcasecmp(s, "warning") == 0)
		return KVT_LOG_WARN;
	return -1;
}

const char *kvt_log_level_name(int level)
{
	return level >= 0 && level < 4 ? level_names[level] : "?";
}

void kvt_log_write(int level, const char *fmt, ...)
{
	/*
	 * Format the whole line first and emit it with one write so lines from
	 * a future worker thread never interleave mid-line.
	 */
	char line[2048];
	struct timespec ts;
	struct tm tm;
	size_t n;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s ",
			      ts.tv_nsec / 1000000L, kvt_log_level_name(level));
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	fwrite(line, 1, n, stderr);
}
