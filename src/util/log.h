/*
 * util/log.h — one event per line on standard error.
 *
 * Format: "2026-11-29T08:00:00.123Z level [loop] message". A line is built in
 * a stack buffer and written with one write(2), so lines from different
 * threads never interleave. The level is set once at start-up, before any
 * thread starts; it is the only process-wide setting outside the server
 * context, and it is read-only while the server runs.
 */
#ifndef IOTHUBD_UTIL_LOG_H
#define IOTHUBD_UTIL_LOG_H

#include <stdbool.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level level);
bool log_level_parse(const char *name, enum log_level *out);
bool log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
