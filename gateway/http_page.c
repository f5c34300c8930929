/* SPDX-License-Identifier: MIT */
/* Plain HTML answer pages (see include/http_page.h). */
#include "http_page.h"

#include <libxml/HTMLtree.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

static char *http_page_build(const char *title, const char *text)
{
  xmlDocPtr doc = htmlNewDocNoDtD(NULL, NULL);
  xmlNodePtr html = xmlNewNode(NULL, BAD_CAST "html");
  xmlNodePtr body;
  xmlChar *out = NULL;
  int len = 0;
  char *page;

  xmlDocSetRootElement(doc, html);
  xmlNewTextChild(xmlNewChild(html, NULL, BAD_CAST "head", NULL), NULL,
                  BAD_CAST "title", BAD_CAST title);
  body = xmlNewChild(html, NULL, BAD_CAST "body", NULL);
  xmlNewTextChild(body, NULL, BAD_CAST "h1", BAD_CAST title);
  xmlNewTextChild(body, NULL, BAD_CAST "p", BAD_CAST text);
  htmlDocDumpMemory(doc, &out, &len);
  page = xstrndup((const char *) out, (size_t) len);
  xmlFree(out);
  xmlFreeDoc(doc);
  return page;
}

void http_page_respond(struct http_exchange *ex, int status, const char *title,
                       const char *text)
{
  static const char *const headers[]
      = { "Content-Type: text/html; charset=utf-8", "Cache-Control: no-store",
          NULL };
  char *page = http_page_build(title, text);

  http_exchange_respond(ex, status, headers, page, strlen(page));
  free(page);
}
