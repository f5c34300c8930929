/* SPDX-License-Identifier: MIT */
/* WebDAV request bodies read safely and 207 multistatus documents built
 * with libxml2 (see include/webdav_xml.h). */
#include "webdav_xml.h"

#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/uri.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define WEBDAV_MAX_PROPSTATS 8 /* distinct statuses within one response */

/* ---- reading ------------------------------------------------------ */

int webdav_node_is(const xmlNode *node, const char *ns, const char *name)
{
  const char *href;

  if (node == NULL || node->type != XML_ELEMENT_NODE)
    return 0;
  href = node->ns != NULL ? (const char *) node->ns->href : "";
  return strcmp(href, ns) == 0 && strcmp((const char *) node->name, name) == 0;
}

xmlNodePtr webdav_node_child(const xmlNode *parent, const char *ns,
                             const char *name)
{
  for (xmlNodePtr c = parent->children; c != NULL; c = c->next) {
    if (webdav_node_is(c, ns, name))
      return c;
  }
  return NULL;
}

/* What the SAX hooks below watch while libxml2 reads one body. */
struct webdav_guard {
  int rc;            /* why the parser was stopped, 0 while it goes on */
  size_t depth;      /* elements open */
  size_t elements;   /* elements started */
  size_t namespaces; /* declarations in scope */
  unsigned char declared[WEBDAV_MAX_DEPTH]; /* by each open element */
  startElementNsSAX2Func start;             /* libxml2's own tree builders */
  endElementNsSAX2Func end;
};

static void webdav_guard_stop(xmlParserCtxtPtr ctxt, int rc)
{
  struct webdav_guard *g = ctxt->_private;

  if (g->rc == 0)
    g->rc = rc;
  xmlStopParser(ctxt);
}

/* SAX hook for "<!DOCTYPE": WebDAV bodies never need one, and refusing it
 * before its internal subset is read leaves no entity to define or expand
 * (XXE, billion laughs). */
static void webdav_refuse_doctype(void *ctx, const xmlChar *name,
                                  const xmlChar *external_id,
                                  const xmlChar *system_id)
{
  webdav_guard_stop(ctx, -EPERM);
}

/* SAX hook for each start tag, before libxml2 adds it to the tree: counts
 * it, its depth and the namespaces in scope, and stops the parser past a
 * limit. The tag itself was bounded by webdav_body_precheck(). */
static void webdav_guard_start(void *ctx, const xmlChar *localname,
                               const xmlChar *prefix, const xmlChar *uri,
                               int nb_namespaces, const xmlChar **namespaces,
                               int nb_attributes, int nb_defaulted,
                               const xmlChar **attributes)
{
  xmlParserCtxtPtr ctxt = ctx;
  struct webdav_guard *g = ctxt->_private;

  if (g->depth == WEBDAV_MAX_DEPTH) {
    webdav_guard_stop(ctxt, WEBDAV_EDEPTH);
    return;
  }
  if (++g->elements > WEBDAV_MAX_ELEMENTS) {
    webdav_guard_stop(ctxt, WEBDAV_EELEMENTS);
    return;
  }
  g->namespaces += (size_t) nb_namespaces;
  if (nb_namespaces > WEBDAV_MAX_NAMESPACES
      || g->namespaces > WEBDAV_MAX_NAMESPACES) {
    webdav_guard_stop(ctxt, WEBDAV_ENAMESPACES);
    return;
  }
  g->declared[g->depth++] = (unsigned char) nb_namespaces;
  g->start(ctx, localname, prefix, uri, nb_namespaces, namespaces,
           nb_attributes, nb_defaulted, attributes);
}

static void webdav_guard_end(void *ctx, const xmlChar *localname,
                             const xmlChar *prefix, const xmlChar *uri)
{
  xmlParserCtxtPtr ctxt = ctx;
  struct webdav_guard *g = ctxt->_private;

  assert(g->depth > 0);
  g->namespaces -= g->declared[--g->depth];
  g->end(ctx, localname, prefix, uri);
}

/* A cost guard, not parsing: libxml2 compares each attribute and namespace
 * declaration of a start tag with the tag's others before any SAX hook
 * sees the tag, so one tag with 100,000 of them costs seconds. Between one
 * '<' and the next there is at most one start tag ('<' cannot stand in an
 * attribute value), so counting the bytes '=' and "xmlns" there bounds
 * both; the same bytes in text only make the bound stricter. The counts
 * hold because the body is read as UTF-8 whatever it declares
 * (XML_PARSE_IGNORE_ENC): a NUL byte (UTF-16, UTF-32) or a first byte
 * other than '<' (EBCDIC) would let libxml2 switch encodings and is
 * refused. Returns 0 or the error to give. */
static int webdav_body_precheck(const char *body, size_t len)
{
  size_t i = 0, attributes = 0, namespaces = 0;

  while (i < len
         && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r'
             || body[i] == '\n'))
    i++;
  if (i == len || body[i] != '<' || memchr(body, '\0', len) != NULL)
    return -EINVAL;
  for (; i < len; i++) {
    if (body[i] == '<') {
      attributes = namespaces = 0;
    } else if (body[i] == '=' && ++attributes > WEBDAV_MAX_ATTRIBUTES) {
      return WEBDAV_EATTRIBUTES;
    } else if (body[i] == 'x' && len - i >= 5
               && memcmp(body + i, "xmlns", 5) == 0
               && ++namespaces > WEBDAV_MAX_NAMESPACES) {
      return WEBDAV_ENAMESPACES;
    }
  }
  return 0;
}

/* Parses the document with network access, DTD loading and entity
 * substitution all off, within the limits of include/webdav_xml.h.
 * Returns the document or NULL with rc set. */
static xmlDocPtr webdav_doc_read(const char *body, size_t len, int *rc)
{
  const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING
                      | XML_PARSE_IGNORE_ENC;
  struct webdav_guard guard = { 0 };
  xmlParserCtxtPtr ctxt;
  xmlDocPtr doc;
  bool ok;

  /* A UTF-8 byte order mark, which libxml2 skips only when it guesses. */
  if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) {
    body += 3;
    len -= 3;
  }
  *rc = len > INT_MAX ? -EINVAL : webdav_body_precheck(body, len);
  if (*rc < 0)
    return NULL;
  ctxt = xmlCreateMemoryParserCtxt(body, (int) len);
  if (ctxt == NULL) {
    *rc = -ENOMEM;
    return NULL;
  }
  xmlCtxtUseOptions(ctxt, options);
  /* Set, the encoding is not guessed from the first bytes either. */
  ctxt->encoding = xmlStrdup((const xmlChar *) "UTF-8");
  guard.start = ctxt->sax->startElementNs;
  guard.end = ctxt->sax->endElementNs;
  ctxt->sax->internalSubset = webdav_refuse_doctype;
  ctxt->sax->startElementNs = webdav_guard_start;
  ctxt->sax->endElementNs = webdav_guard_end;
  ctxt->_private = &guard;
  xmlParseDocument(ctxt);

  doc = ctxt->myDoc;
  ok = ctxt->wellFormed && guard.rc == 0 && doc != NULL
       && xmlDocGetRootElement(doc) != NULL;
  ctxt->myDoc = NULL;
  xmlFreeParserCtxt(ctxt);
  if (!ok) {
    xmlFreeDoc(doc);
    *rc = guard.rc < 0 ? guard.rc : -EINVAL;
    return NULL;
  }
  return doc;
}

/* Whether a namespace name is a URI reference (Namespaces in XML 1.0,
 * section 2.2), as libxml2's RFC 3986 parser reads it. One that is not
 * (a '<' in it, say) could not be declared again in the answer without
 * libxml2 writing it out unescaped. */
static bool webdav_ns_name_valid(const xmlNs *ns)
{
  xmlURIPtr uri;

  if (ns == NULL)
    return true;
  uri = xmlParseURI((const char *) ns->href);
  xmlFreeURI(uri);
  return uri != NULL;
}

/* Lists the property names under prop. */
static int webdav_request_props(struct webdav_request *req, xmlNodePtr prop)
{
  for (xmlNodePtr c = prop->children; c != NULL; c = c->next) {
    if (c->type != XML_ELEMENT_NODE)
      continue;
    if (req->nprops == WEBDAV_MAX_PROPS)
      return -E2BIG;
    if (!webdav_ns_name_valid(c->ns))
      return -EINVAL;
    req->props = xrealloc(req->props, (req->nprops + 1) * sizeof(*req->props));
    req->props[req->nprops++] = (struct webdav_prop){
      c->ns != NULL ? (const char *) c->ns->href : "",
      (const char *) c->name,
    };
  }
  return 0;
}

int webdav_request_parse(const char *body, size_t len,
                         struct webdav_request **out)
{
  struct webdav_request *req = xcalloc(1, sizeof(*req));
  xmlNodePtr prop;
  int rc = 0;

  req->kind = WEBDAV_PROPFIND_ALLPROP;
  req->root_ns = "";
  req->root_name = "";
  if (len == 0)
    goto out;

  req->doc = webdav_doc_read(body, len, &rc);
  if (req->doc == NULL)
    goto out;
  req->root = xmlDocGetRootElement(req->doc);
  req->root_ns
      = req->root->ns != NULL ? (const char *) req->root->ns->href : "";
  req->root_name = (const char *) req->root->name;

  /* Without allprop or propname, the request names its properties (an
   * empty list when it has no DAV:prop, as some REPORTs do). */
  if (webdav_node_child(req->root, WEBDAV_NS_DAV, "allprop") != NULL) {
    req->kind = WEBDAV_PROPFIND_ALLPROP;
  } else if (webdav_node_child(req->root, WEBDAV_NS_DAV, "propname") != NULL) {
    req->kind = WEBDAV_PROPFIND_PROPNAME;
  } else {
    req->kind = WEBDAV_PROPFIND_PROP;
    prop = webdav_node_child(req->root, WEBDAV_NS_DAV, "prop");
    if (prop != NULL)
      rc = webdav_request_props(req, prop);
  }

out:
  if (rc < 0) {
    webdav_request_free(req);
    return rc;
  }
  *out = req;
  return 0;
}

void webdav_request_free(struct webdav_request *req)
{
  if (req == NULL)
    return;
  xmlFreeDoc(req->doc);
  free(req->props);
  free(req);
}

/* ---- writing ------------------------------------------------------ */

struct webdav_propstat {
  int status;
  xmlNodePtr prop; /* the <D:prop> of this status */
};

struct webdav_response {
  struct webdav_multistatus *ms;
  struct webdav_response *next;
  xmlNodePtr node; /* <D:response> */
  struct webdav_propstat propstats[WEBDAV_MAX_PROPSTATS];
  size_t npropstats;
  bool has_status; /* a response-level status: no propstat allowed */
};

struct webdav_multistatus {
  xmlDocPtr doc;
  xmlNodePtr root;
  xmlNsPtr dav;
  struct webdav_response *responses;
  unsigned next_prefix; /* for namespaces without a usual prefix */
};

/* The prefixes clients are used to seeing; others get x1, x2, ... */
static const struct {
  const char *href;
  const char *prefix;
} webdav_prefixes[] = {
  { WEBDAV_NS_DAV, "D" },
  { WEBDAV_NS_CALDAV, "C" },
  { WEBDAV_NS_CALSERVER, "CS" },
  { WEBDAV_NS_ICAL, "ICAL" },
};

/* The namespace declared on the root for href, declared on first use;
 * NULL for the empty namespace. */
static xmlNsPtr webdav_ns(struct webdav_multistatus *ms, const char *href)
{
  const char *prefix = NULL;
  char generated[16];

  if (href[0] == '\0')
    return NULL;
  for (xmlNsPtr ns = ms->root->nsDef; ns != NULL; ns = ns->next) {
    if (strcmp((const char *) ns->href, href) == 0)
      return ns;
  }
  for (size_t i = 0; i < sizeof(webdav_prefixes) / sizeof(*webdav_prefixes);
       i++) {
    if (strcmp(webdav_prefixes[i].href, href) == 0)
      prefix = webdav_prefixes[i].prefix;
  }
  if (prefix == NULL) {
    snprintf(generated, sizeof(generated), "x%u", ++ms->next_prefix);
    prefix = generated;
  }
  return xmlNewNs(ms->root, (const xmlChar *) href, (const xmlChar *) prefix);
}

static void webdav_status_line(char *buf, size_t size, int status)
{
  snprintf(buf, size, "HTTP/1.1 %d %s", status,
           http_status_str((enum http_status) status));
}

struct webdav_multistatus *webdav_multistatus_new(void)
{
  struct webdav_multistatus *ms = xcalloc(1, sizeof(*ms));

  ms->doc = xmlNewDoc((const xmlChar *) "1.0");
  ms->root = xmlNewNode(NULL, (const xmlChar *) "multistatus");
  xmlDocSetRootElement(ms->doc, ms->root);
  ms->dav = webdav_ns(ms, WEBDAV_NS_DAV);
  xmlSetNs(ms->root, ms->dav);
  return ms;
}

void webdav_multistatus_free(struct webdav_multistatus *ms)
{
  struct webdav_response *next;

  if (ms == NULL)
    return;
  for (struct webdav_response *r = ms->responses; r != NULL; r = next) {
    next = r->next;
    free(r);
  }
  xmlFreeDoc(ms->doc);
  free(ms);
}

struct webdav_response *webdav_multistatus_add(struct webdav_multistatus *ms,
                                               const char *href)
{
  struct webdav_response *resp = xcalloc(1, sizeof(*resp));

  resp->ms = ms;
  resp->node
      = xmlNewChild(ms->root, ms->dav, (const xmlChar *) "response", NULL);
  xmlNewTextChild(resp->node, ms->dav, (const xmlChar *) "href",
                  (const xmlChar *) href);
  resp->next = ms->responses;
  ms->responses = resp;
  return resp;
}

void webdav_response_set_status(struct webdav_response *resp, int status)
{
  char line[64];

  assert(resp->npropstats == 0 && !resp->has_status);
  webdav_status_line(line, sizeof(line), status);
  xmlNewTextChild(resp->node, resp->ms->dav, (const xmlChar *) "status",
                  (const xmlChar *) line);
  resp->has_status = true;
}

/* The <D:prop> of the propstat for status, created (with its status line)
 * on first use; propstats appear in the order their statuses were first
 * used. */
static xmlNodePtr webdav_response_propstat(struct webdav_response *resp,
                                           int status)
{
  struct webdav_propstat *ps;
  xmlNodePtr node;
  char line[64];

  assert(!resp->has_status);
  for (size_t i = 0; i < resp->npropstats; i++) {
    if (resp->propstats[i].status == status)
      return resp->propstats[i].prop;
  }
  assert(resp->npropstats < WEBDAV_MAX_PROPSTATS);
  ps = &resp->propstats[resp->npropstats++];
  node = xmlNewChild(resp->node, resp->ms->dav, (const xmlChar *) "propstat",
                     NULL);
  ps->status = status;
  ps->prop = xmlNewChild(node, resp->ms->dav, (const xmlChar *) "prop", NULL);
  webdav_status_line(line, sizeof(line), status);
  xmlNewTextChild(node, resp->ms->dav, (const xmlChar *) "status",
                  (const xmlChar *) line);
  return ps->prop;
}

xmlNodePtr webdav_node_add(struct webdav_response *resp, xmlNodePtr parent,
                           const char *ns, const char *name, const char *text)
{
  xmlNodePtr node;

  if (ns[0] != '\0')
    return xmlNewTextChild(parent, webdav_ns(resp->ms, ns),
                           (const xmlChar *) name, (const xmlChar *) text);
  /* xmlNewTextChild gives a node without a namespace its parent's (DAV:
   * here); a property in no namespace must stay in none. */
  node = xmlNewDocRawNode(resp->ms->doc, NULL, (const xmlChar *) name,
                          (const xmlChar *) text);
  return xmlAddChild(parent, node);
}

xmlNodePtr webdav_response_prop(struct webdav_response *resp, const char *ns,
                                const char *name, int status, const char *text)
{
  return webdav_node_add(resp, webdav_response_propstat(resp, status), ns, name,
                         text);
}

int webdav_multistatus_dump(struct webdav_multistatus *ms, char **out,
                            size_t *len)
{
  xmlChar *mem = NULL;
  int size = 0;

  xmlDocDumpFormatMemoryEnc(ms->doc, &mem, &size, "UTF-8", 0);
  if (mem == NULL)
    return -ENOMEM;
  *out = xmalloc((size_t) size + 1);
  memcpy(*out, mem, (size_t) size);
  (*out)[size] = '\0';
  *len = (size_t) size;
  xmlFree(mem);
  return 0;
}
