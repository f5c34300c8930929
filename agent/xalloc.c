/* SPDX-License-Identifier: MIT */
/* Allocation wrappers that abort on exhaustion (see include/xalloc.h). */
#include "xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void xalloc_die(size_t size)
{
  fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", size);
  abort();
}

void *xmalloc(size_t size)
{
  void *p = malloc(size ? size : 1);

  if (p == NULL)
    xalloc_die(size);
  return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
  void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

  if (p == NULL)
    xalloc_die(nmemb * size);
  return p;
}

void *xrealloc(void *ptr, size_t size)
{
  void *p = realloc(ptr, size ? size : 1);

  if (p == NULL)
    xalloc_die(size);
  return p;
}

char *xstrdup(const char *s)
{
  return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
  size_t len = strnlen(s, n);
  char *p = xmalloc(len + 1);

  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
  char *out = NULL;

  if (vasprintf(&out, fmt, ap) < 0)
    xalloc_die(strlen(fmt));
  return out;
}

char *xasprintf(const char *fmt, ...)
{
  va_list ap;
  char *out;

  va_start(ap, fmt);
  out = xvasprintf(fmt, ap);
  va_end(ap);
  return out;
}
