/* SPDX-License-Identifier: MIT */
/* Dispatch of HTTP exchanges by method and path prefix (see
 * include/http_router.h). A linear table: a few dozen routes at most. */
#include "http_router.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define HTTP_ROUTER_ALLOW_MAX 512 /* bytes of the Allow header */

struct http_route {
  char *method; /* NULL: any method */
  char *prefix;
  size_t prefix_len;
  http_server_handler_cb handler;
  void *arg;
};

struct http_router {
  struct http_route routes[HTTP_ROUTER_MAX_ROUTES];
  size_t nroutes;
};

struct http_router *http_router_new(void)
{
  return xcalloc(1, sizeof(struct http_router));
}

void http_router_free(struct http_router *router)
{
  if (router == NULL)
    return;
  for (size_t i = 0; i < router->nroutes; i++) {
    free(router->routes[i].method);
    free(router->routes[i].prefix);
  }
  free(router);
}

static bool http_route_same_method(const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp(a, b) == 0;
}

int http_router_add(struct http_router *router, const char *method,
                    const char *prefix, http_server_handler_cb handler,
                    void *arg)
{
  struct http_route *r;
  size_t len = strlen(prefix);

  if (prefix[0] != '/')
    return -EINVAL;

  /* "/dav/" and "/dav" name the same subtree. */
  if (len > 1 && prefix[len - 1] == '/')
    len--;
  for (size_t i = 0; i < router->nroutes; i++) {
    r = &router->routes[i];
    if (r->prefix_len == len && memcmp(r->prefix, prefix, len) == 0
        && http_route_same_method(r->method, method))
      return -EEXIST;
  }
  if (router->nroutes == HTTP_ROUTER_MAX_ROUTES)
    return -ENOSPC;

  r = &router->routes[router->nroutes++];
  r->method = method != NULL ? xstrdup(method) : NULL;
  r->prefix = xstrndup(prefix, len);
  r->prefix_len = len;
  r->handler = handler;
  r->arg = arg;
  return 0;
}

/* True when prefix covers path on a segment boundary. */
static bool http_route_covers(const struct http_route *r, const char *path)
{
  if (r->prefix_len == 1)
    return path[0] == '/';
  return strncmp(path, r->prefix, r->prefix_len) == 0
         && (path[r->prefix_len] == '\0' || path[r->prefix_len] == '/');
}

/* The best route for the path: longest prefix, then exact method before
 * any-method. *best_len receives the longest prefix covering the path,
 * whatever its method (0 when none does). */
static const struct http_route *
http_router_find(const struct http_router *router, const char *method,
                 const char *path, size_t *best_len)
{
  const struct http_route *best = NULL;

  *best_len = 0;
  for (size_t i = 0; i < router->nroutes; i++) {
    const struct http_route *r = &router->routes[i];

    if (!http_route_covers(r, path))
      continue;
    if (r->prefix_len > *best_len)
      *best_len = r->prefix_len;
    if (r->method != NULL && strcmp(r->method, method) != 0)
      continue;
    if (best == NULL || r->prefix_len > best->prefix_len
        || (r->prefix_len == best->prefix_len && best->method == NULL))
      best = r;
  }
  return best;
}

/* 405 lists the methods of the longest prefix covering the path. */
static void http_router_refuse_method(const struct http_router *router,
                                      struct http_exchange *ex, size_t len)
{
  static const char body[] = "method not allowed on this path\n";
  const char *path = http_exchange_request(ex)->path;
  char allow[HTTP_ROUTER_ALLOW_MAX] = "Allow: ";
  size_t used = strlen(allow);
  const char *headers[]
      = { "Content-Type: text/plain; charset=utf-8", allow, NULL };

  for (size_t i = 0; i < router->nroutes; i++) {
    const struct http_route *r = &router->routes[i];
    size_t mlen;

    if (r->prefix_len != len || r->method == NULL
        || !http_route_covers(r, path))
      continue;
    mlen = strlen(r->method);
    if (used + mlen + 3 > sizeof(allow))
      break;
    if (used > strlen("Allow: ")) {
      memcpy(allow + used, ", ", 2);
      used += 2;
    }
    memcpy(allow + used, r->method, mlen + 1);
    used += mlen;
  }
  http_exchange_respond(ex, 405, headers, body, sizeof(body) - 1);
}

void http_router_dispatch(void *arg, struct http_exchange *ex)
{
  static const char not_found[] = "no such resource\n";
  static const char *const text[]
      = { "Content-Type: text/plain; charset=utf-8", NULL };
  const struct http_router *router = arg;
  const struct http_server_request *req = http_exchange_request(ex);
  size_t covered;
  const struct http_route *r
      = http_router_find(router, req->method, req->path, &covered);

  if (r != NULL) {
    r->handler(r->arg, ex);
    return;
  }
  if (covered > 0) {
    http_router_refuse_method(router, ex, covered);
    return;
  }
  http_exchange_respond(ex, 404, text, not_found, sizeof(not_found) - 1);
}
