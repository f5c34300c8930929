/* SPDX-License-Identifier: MIT */
/* Translates an RFC 5322 message, parsed with libetpan, into the JSON body
 * of a Microsoft Graph sendMail request for the linked user. */
#ifndef NX_MIME_TO_GRAPH_H
#define NX_MIME_TO_GRAPH_H

#include <jansson.h>
#include <stddef.h>

/* Graph refuses requests over 4 MB (graph-api.md section 2.3). */
#define MIME_GRAPH_REQUEST_MAX 4194304

struct mime_graph_envelope {
  const char *sender; /* the linked user the message is sent as */
  const char *const *rcpts; /* envelope recipients: the only receivers */
  size_t nrcpts;
};

/* Why a translation failed, mapped by the caller to an SMTP reply. */
enum mime_graph_error {
  MIME_GRAPH_OK = 0,
  MIME_GRAPH_EPARSE = -1, /* not a message libetpan can read: 554 5.6.0 */
  MIME_GRAPH_ECHARSET = -2, /* a text part we cannot convert: 554 5.6.3 */
  MIME_GRAPH_ETOOBIG = -3, /* request over MIME_GRAPH_REQUEST_MAX: 552 */
  MIME_GRAPH_ERECIPIENT = -4, /* an envelope recipient is unusable: 553 */
};

struct mime_graph_result {
  json_t *request; /* {"message": {...}, "saveToSentItems": true} */
  char *message_id; /* Message-ID without brackets, or NULL */
  size_t request_size; /* bytes of the compact JSON encoding */
  char error[256]; /* sentence for the SMTP reply when translation failed */
};

/* Parses data (len bytes of a whole message) and builds the sendMail
 * request. The envelope decides who receives the message: header
 * addresses that are not envelope recipients are dropped, envelope
 * recipients that no header names become bccRecipients. Returns
 * MIME_GRAPH_OK and fills res (free with mime_graph_result_free), or a
 * negative mime_graph_error with res->error set. */
int mime_to_graph(const char *data, size_t len,
                  const struct mime_graph_envelope *env,
                  struct mime_graph_result *res);

void mime_graph_result_free(struct mime_graph_result *res);

#endif
