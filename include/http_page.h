/* SPDX-License-Identifier: MIT */
/* Small HTML pages for people who land on the agent in a browser (admin
 * consent, user linking): a title and one paragraph, escaped by libxml2. */
#ifndef NX_HTTP_PAGE_H
#define NX_HTTP_PAGE_H

#include "http_server.h"

/* Answers ex with status and a page holding title and text (plain text,
 * escaped here). Not cached. */
void http_page_respond(struct http_exchange *ex, int status, const char *title,
                       const char *text);

#endif
