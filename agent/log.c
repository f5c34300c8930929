/* SPDX-License-Identifier: MIT */
/* The operator log (see include/log.h). */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum log_level log_current_level = LOG_LEVEL_INFO;
unsigned log_current_traces;

static const char *const log_level_names[] = {
  [LOG_LEVEL_ERROR] = "error",
  [LOG_LEVEL_WARN] = "warn",
  [LOG_LEVEL_INFO] = "info",
  [LOG_LEVEL_DEBUG] = "debug",
};

static const struct {
  const char *name;
  unsigned bit;
} log_trace_names[] = {
  { "smtp", LOG_TRACE_SMTP },     { "caldav", LOG_TRACE_CALDAV },
  { "graph", LOG_TRACE_GRAPH },   { "store", LOG_TRACE_STORE },
  { "policy", LOG_TRACE_POLICY }, { "http", LOG_TRACE_HTTP },
};

void log_set_level(enum log_level level)
{
  log_current_level = level;
}

int log_level_parse(const char *name, enum log_level *out)
{
  for (size_t i = 0; i < sizeof(log_level_names) / sizeof(*log_level_names);
       i++) {
    if (strcasecmp(name, log_level_names[i]) == 0) {
      *out = (enum log_level) i;
      return 0;
    }
  }
  return -EINVAL;
}

static int log_trace_enable_one(const char *name, size_t len)
{
  size_t n = sizeof(log_trace_names) / sizeof(*log_trace_names);

  if (len == 3 && strncasecmp(name, "all", 3) == 0) {
    log_current_traces = ~0u;
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (strlen(log_trace_names[i].name) == len
        && strncasecmp(name, log_trace_names[i].name, len) == 0) {
      log_current_traces |= log_trace_names[i].bit;
      return 0;
    }
  }
  return -EINVAL;
}

int log_trace_enable(const char *list)
{
  const char *p = list;

  while (*p != '\0') {
    size_t len = strcspn(p, ",");

    if (len > 0 && log_trace_enable_one(p, len) < 0)
      return -EINVAL;
    p += len;
    if (*p == ',')
      p++;
  }
  return 0;
}

void log_write(enum log_level level, const char *fmt, ...)
{
  char stamp[32];
  struct timespec now;
  struct tm tm;
  va_list ap;

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

  /* One fprintf per part is fine: stderr is unbuffered but lines from one
   * thread never interleave, and the daemon logs from one thread. */
  flockfile(stderr);
  fprintf(stderr, "%s.%03ldZ %s ", stamp, now.tv_nsec / 1000000,
          log_level_names[level]);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  funlockfile(stderr);
}

char *log_escape(char *buf, size_t size, const char *text, size_t len)
{
  static const char hex[] = "0123456789abcdef";
  size_t out = 0;

  if (size == 0)
    return buf;
  for (size_t i = 0; i < len && out + 5 < size; i++) {
    unsigned char c = (unsigned char) text[i];

    if (c < 0x20 || c >= 0x7f || c == '\\' || c == '"') {
      buf[out++] = '\\';
      buf[out++] = 'x';
      buf[out++] = hex[c >> 4];
      buf[out++] = hex[c & 0xf];
    } else {
      buf[out++] = (char) c;
    }
  }
  buf[out] = '\0';
  return buf;
}
