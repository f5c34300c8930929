/* SPDX-License-Identifier: MIT */
/* Operator log: one line per event, "<id> <subsystem> <event> key=value ...".
 * Levels are tested before arguments are evaluated; trace categories are
 * switched on at run time. Never pass a secret or a message body. */
#ifndef NX_LOG_H
#define NX_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
  LOG_LEVEL_ERROR,
  LOG_LEVEL_WARN,
  LOG_LEVEL_INFO,
  LOG_LEVEL_DEBUG,
};

/* Trace categories, one bit each, enabled by log_trace_enable(). */
enum log_trace {
  LOG_TRACE_SMTP = 1 << 0,
  LOG_TRACE_CALDAV = 1 << 1,
  LOG_TRACE_GRAPH = 1 << 2,
  LOG_TRACE_STORE = 1 << 3,
  LOG_TRACE_POLICY = 1 << 4,
  LOG_TRACE_HTTP = 1 << 5,
};

extern enum log_level log_current_level;
extern unsigned log_current_traces;

/* Sets the threshold; lines above it are dropped without formatting. */
void log_set_level(enum log_level level);

/* Parses "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);

/* Enables trace categories from a comma list such as "smtp,graph" or
 * "all"; returns 0 or -EINVAL naming nothing (the caller reports). */
int log_trace_enable(const char *list);

/* Writes one line to stderr with a timestamp and level. */
void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Copies client-supplied text into buf so that it is safe on one log line:
 * control bytes, backslash, quote and non-ASCII become \xNN escapes; the
 * result is truncated to fit. Returns buf. */
char *log_escape(char *buf, size_t size, const char *text, size_t len);

#define LOG_AT(level, ...)                                                     \
  do {                                                                         \
    if ((level) <= log_current_level)                                          \
      log_write((level), __VA_ARGS__);                                         \
  } while (0)

#define log_error(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* Trace lines are written at debug format but gated by category only. */
#define log_trace(cat, ...)                                                    \
  do {                                                                         \
    if (log_current_traces & (cat))                                            \
      log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                 \
  } while (0)

#endif
