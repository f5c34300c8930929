/* SPDX-License-Identifier: MIT */
/* A small dispatch table for the HTTP listener: routes by method and path
 * prefix, so the CalDAV, consent and linking handlers each own a subtree.
 * Unmatched paths answer 404; a known path with an unregistered method
 * answers 405 with an Allow header. */
#ifndef NX_HTTP_ROUTER_H
#define NX_HTTP_ROUTER_H

#include "http_server.h"

#define HTTP_ROUTER_MAX_ROUTES 64 /* routes per router */

struct http_router;

/* Creates an empty router. */
struct http_router *http_router_new(void);

/* Frees the router; the handlers' arguments stay with their owners. */
void http_router_free(struct http_router *router);

/* Routes method ("GET", "PROPFIND", ...; NULL for any method) on paths
 * under prefix to handler(arg, ex). A prefix matches whole path segments:
 * "/dav" matches "/dav" and "/dav/x" but not "/davx"; "/" matches every
 * path. The longest matching prefix wins, then an exact method before
 * NULL. Paths are compared as sent, still percent-encoded. The strings
 * are copied. Returns 0, -EINVAL when prefix does not
 * start with '/', -EEXIST for a repeated method and prefix, or -ENOSPC
 * beyond HTTP_ROUTER_MAX_ROUTES. */
int http_router_add(struct http_router *router, const char *method,
                    const char *prefix, http_server_handler_cb handler,
                    void *arg);

/* Dispatches one exchange; it has the http_server_handler_cb signature,
 * so the router itself can be given to http_server_new() with itself as
 * arg. The chosen handler owns the exchange; 404 and 405 are answered
 * here, with a text body. */
void http_router_dispatch(void *router, struct http_exchange *ex);

#endif
