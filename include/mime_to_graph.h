/* SPDX-License-Identifier: MIT */
/* Translates an RFC 5322 message, parsed with libetpan, into what Graph
 * needs to send it for the linked user, in one of three forms chosen per
 * message (docs/mail-forms.md): sendMail with a JSON message, sendMail with
 * the MIME message itself, or a draft whose attachments are uploaded
 * separately (large mail, read from the spool file piece by piece). */
#ifndef NX_MIME_TO_GRAPH_H
#define NX_MIME_TO_GRAPH_H

#include <jansson.h>
#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>

/* Graph refuses requests over 4 MB (graph-api.md section 2.3). */
#define MIME_GRAPH_REQUEST_MAX 4194304
/* The MIME form sends the message base64-encoded, which must stay under
 * MIME_GRAPH_REQUEST_MAX: 3,000,000 raw bytes make 4,000,000. */
#define MIME_GRAPH_MIME_RAW_MAX 3000000
/* Attachments under 3 MB go in one POST; larger ones need an upload
 * session (graph-api.md 2.3, 2.4). */
#define MIME_GRAPH_SMALL_ATTACHMENT_MAX (3u * 1024 * 1024)
/* Graph's ceiling for one message, attachments included (graph-api.md
 * 2.3); a mailbox's own limit may be lower (35 MB by default). */
#define MIME_GRAPH_MESSAGE_MAX (150ull * 1024 * 1024)
/* Longest line of a large message; longer is not mail. */
#define MIME_GRAPH_LINE_MAX (1024 * 1024)

/* How a message goes to Graph (docs/mail-forms.md). */
enum mime_graph_form {
  MIME_GRAPH_FORM_JSON,  /* POST sendMail, JSON message */
  MIME_GRAPH_FORM_MIME,  /* POST sendMail, text/plain base64 of the MIME */
  MIME_GRAPH_FORM_LARGE, /* draft, attachments one by one, then send */
};

/* One attachment of a large message: where its encoded bytes lie in the
 * spool file, and what Graph is told about it. */
struct mime_graph_part {
  uint64_t offset;        /* first byte of the encoded body in the file */
  uint64_t length;        /* encoded bytes */
  int encoding;           /* libetpan MAILMIME_MECHANISM_*, 0 when none */
  uint64_t size_estimate; /* decoded bytes, estimated from the encoding */
  char *name;             /* UTF-8 */
  char *content_type;
  char *content_id; /* without brackets, or NULL */
  bool is_inline;
};

struct mime_graph_envelope {
  const char *sender;       /* the linked user the message is sent as */
  const char *const *rcpts; /* envelope recipients: the only receivers */
  size_t nrcpts;
  /* The Message-ID (no brackets) given to a message that has none, so
   * that its send can be found in Sent Items; NULL to give none. */
  const char *message_id;
};

/* Why a translation failed, mapped by the caller to an SMTP reply. */
enum mime_graph_error {
  MIME_GRAPH_OK = 0,
  MIME_GRAPH_EPARSE = -1,     /* not a message libetpan can read: 554 5.6.0 */
  MIME_GRAPH_ECHARSET = -2,   /* a text part we cannot convert: 554 5.6.3 */
  MIME_GRAPH_ETOOBIG = -3,    /* request over MIME_GRAPH_REQUEST_MAX: 552 */
  MIME_GRAPH_ERECIPIENT = -4, /* an envelope recipient is unusable: 553 */
  MIME_GRAPH_EIO = -5,        /* the spool file cannot be read: ours, retry */
};

struct mime_graph_result {
  /* JSON form: {"message": {...}, "saveToSentItems": true}. Large form:
   * the draft message, without attachments. MIME form: NULL. */
  json_t *request;
  char *message_id;      /* Message-ID without brackets, or NULL */
  bool message_id_added; /* the envelope's: the MIME form prepends it */
  size_t request_size;   /* bytes of the compact JSON encoding */
  char error[256]; /* sentence for the SMTP reply when translation failed */
  enum mime_graph_form form; /* set by mime_to_graph_file */
  /* The message carries what only the MIME form keeps: In-Reply-To or
   * References, or a text/calendar part. */
  bool wants_mime;
  /* The MIME form would send exactly as the JSON form does: From is the
   * linked user and every To, Cc and Bcc header address is an envelope
   * recipient. */
  bool mime_safe;
  /* Envelope recipients no To, Cc or Bcc header names, as the value of a
   * Bcc field prepended in the MIME form, or NULL. */
  char *mime_bcc;
  struct mime_graph_part *parts; /* large form: the attachments, in order */
  size_t nparts;
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

/* Translates the spooled message at path and chooses its form: MIME when
 * it wants_mime, is mime_safe and its raw size (with the Bcc line) is at
 * most MIME_GRAPH_MIME_RAW_MAX; JSON when the request fits in
 * MIME_GRAPH_REQUEST_MAX; large otherwise. A large message is read line by
 * line and only its structure is parsed, so memory stays far below its
 * size. Returns MIME_GRAPH_OK or a negative mime_graph_error (ETOOBIG for
 * a message over MIME_GRAPH_MESSAGE_MAX or with a body text too long for
 * a draft; EIO when the file cannot be read). */
int mime_to_graph_file(const char *path, const struct mime_graph_envelope *env,
                       struct mime_graph_result *res);

/* The MIME form's request body: base64 of "Bcc: ..." (when res->mime_bcc)
 * and the file at path. Returns 0 and a new NUL-terminated string of
 * *len bytes, or a negative errno. */
int mime_graph_mime_body(const char *path, const struct mime_graph_result *res,
                         char **body, size_t *len);

/* Decodes part (from the large form of the file at path) into out_fd,
 * reading and decoding piece by piece. Returns 0 and the decoded size in
 * *size, or a negative errno. */
int mime_graph_part_extract(const char *path,
                            const struct mime_graph_part *part, int out_fd,
                            uint64_t *size);

/* Checks that Graph can address one envelope recipient (no brackets):
 * a single "@" between a non-empty local part and domain, no quoted local
 * part, no address literal, no space or angle bracket, valid UTF-8. The
 * translation checks every recipient this way; the SMTP session uses it
 * to refuse such a recipient at RCPT. Returns MIME_GRAPH_OK, or
 * MIME_GRAPH_ERECIPIENT with a sentence (no final stop) in why. */
int mime_graph_address_check(const char *address, char *why, size_t len);

void mime_graph_result_free(struct mime_graph_result *res);

#endif
