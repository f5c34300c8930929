/* SPDX-License-Identifier: MIT */
/* WebDAV XML with libxml2: PROPFIND and REPORT bodies read without network
 * access, entity expansion or DTDs (a DOCTYPE is refused outright), and
 * 207 multistatus documents built with one propstat per status. */
#ifndef NX_WEBDAV_XML_H
#define NX_WEBDAV_XML_H

#include <libxml/tree.h>
#include <stddef.h>

#define WEBDAV_NS_DAV "DAV:"
#define WEBDAV_NS_CALDAV "urn:ietf:params:xml:ns:caldav"
#define WEBDAV_NS_CALSERVER "http://calendarserver.org/ns/"
#define WEBDAV_NS_ICAL "http://apple.com/ns/ical/"

#define WEBDAV_MAX_PROPS 256 /* properties named in one request */

/* What one request body may hold, checked while libxml2 reads it so that
 * its cost stays linear in the body's size: libxml2 2.9 compares each
 * attribute and namespace declaration of a start tag with the tag's
 * others, and looks every prefix up through all the declarations in
 * scope, so 100,000 declarations stall the loop for seconds. A
 * calendar-multiget of CALDAV_OBJECTS_MAX (2000) hrefs, each declaring its
 * own namespace, stays well inside these. */
#define WEBDAV_MAX_DEPTH 32      /* elements nested in one another */
#define WEBDAV_MAX_ELEMENTS 8192 /* elements in the whole body */
#define WEBDAV_MAX_NAMESPACES 64 /* declarations in scope at one element */
#define WEBDAV_MAX_ATTRIBUTES 64 /* attributes and declarations of a tag */

/* Why webdav_request_parse() refused a body, beyond the errno codes it
 * also returns; each names the limit above that the body went past. */
enum webdav_error {
  WEBDAV_EDEPTH = -1001,      /* deeper than WEBDAV_MAX_DEPTH */
  WEBDAV_EELEMENTS = -1002,   /* more than WEBDAV_MAX_ELEMENTS */
  WEBDAV_ENAMESPACES = -1003, /* more than WEBDAV_MAX_NAMESPACES */
  WEBDAV_EATTRIBUTES = -1004, /* more than WEBDAV_MAX_ATTRIBUTES */
};

/* What a PROPFIND asks for (RFC 4918 9.1); REPORTs use PROP or ALLPROP. */
enum webdav_propfind_kind {
  WEBDAV_PROPFIND_ALLPROP,  /* <allprop/>, or an empty body */
  WEBDAV_PROPFIND_PROPNAME, /* <propname/> */
  WEBDAV_PROPFIND_PROP,     /* <prop> with the names in props */
};

/* A property name: namespace URI ("" for none) and local name. */
struct webdav_prop {
  const char *ns;
  const char *name;
};

/* A parsed request body. The strings and nodes belong to it. */
struct webdav_request {
  xmlDocPtr doc;         /* NULL for an empty body */
  xmlNodePtr root;       /* document element, NULL for an empty body */
  const char *root_ns;   /* its namespace URI, "" for none */
  const char *root_name; /* "propfind", "calendar-query", ... */
  enum webdav_propfind_kind kind;
  struct webdav_prop *props; /* children of the root's DAV:prop */
  size_t nprops;
};

/* Parses a PROPFIND or REPORT body of len bytes (len 0 means allprop, as
 * RFC 4918 says for PROPFIND), read as UTF-8 whatever its XML declaration
 * says. On success stores a new request in *out, which the caller frees
 * with webdav_request_free(). Returns -EINVAL for malformed XML (or a body
 * that is not UTF-8: a NUL byte, or not starting with '<'), -EPERM for a
 * document with a DOCTYPE (no entity is ever defined or expanded), -E2BIG
 * beyond WEBDAV_MAX_PROPS properties, or a webdav_error for a body past
 * one of the limits above. The caller bounds len itself. */
int webdav_request_parse(const char *body, size_t len,
                         struct webdav_request **out);

void webdav_request_free(struct webdav_request *req);

/* True when node is the element ns:name (ns "" for no namespace). */
int webdav_node_is(const xmlNode *node, const char *ns, const char *name);

/* The first child element ns:name of parent, or NULL. */
xmlNodePtr webdav_node_child(const xmlNode *parent, const char *ns,
                             const char *name);

struct webdav_multistatus;
struct webdav_response;

/* Starts an empty <D:multistatus> document. */
struct webdav_multistatus *webdav_multistatus_new(void);

void webdav_multistatus_free(struct webdav_multistatus *ms);

/* Adds a <D:response> for href (already percent-encoded as the client
 * should see it). The response belongs to ms. */
struct webdav_response *webdav_multistatus_add(struct webdav_multistatus *ms,
                                               const char *href);

/* Gives the response a status of its own instead of propstats (such as
 * 404 for an unknown href in a multiget). */
void webdav_response_set_status(struct webdav_response *resp, int status);

/* Adds the property ns:name under the propstat for status, with text as
 * its content (escaped here) or empty when text is NULL. Returns the
 * property element so that callers can add child elements (resourcetype,
 * href lists) with webdav_node_add(). */
xmlNodePtr webdav_response_prop(struct webdav_response *resp, const char *ns,
                                const char *name, int status, const char *text);

/* Adds a child element ns:name with optional text to a node of the same
 * document and returns it. */
xmlNodePtr webdav_node_add(struct webdav_response *resp, xmlNodePtr parent,
                           const char *ns, const char *name, const char *text);

/* Serialises the document (UTF-8, with XML declaration) into a new
 * buffer in *out (caller frees with free()) of *len bytes. Returns 0. */
int webdav_multistatus_dump(struct webdav_multistatus *ms, char **out,
                            size_t *len);

#endif
