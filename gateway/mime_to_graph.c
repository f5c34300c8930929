/* SPDX-License-Identifier: MIT */
/* Translates an RFC 5322 message, parsed with libetpan, into the JSON body
 * of a Graph sendMail request (see include/mime_to_graph.h). */
#include "mime_to_graph.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <libetpan/libetpan.h>
#include <libxml/uri.h>

#include "log.h"
#include "spool.h"
#include "xalloc.h"

/* Deepest multipart nesting we follow; real mail stays under 5 levels. */
#define MIME_GRAPH_DEPTH_MAX 16
/* x- headers copied into internetMessageHeaders; the rest are dropped. */
#define MIME_GRAPH_XHEADERS_MAX 32
/* Continuation pieces of one RFC 2231 parameter (filename*0*, ...). */
#define MIME_GRAPH_RFC2231_PIECES_MAX 32
/* Attachments of one message; more is not what Nextal sends. */
#define MIME_GRAPH_PARTS_MAX 256
/* Read size when streaming the spool file. */
#define MIME_GRAPH_IO_CHUNK (64 * 1024)

/* A kept span of the skeleton: len bytes at skel in the skeleton are the
 * bytes at file in the spool file. */
struct mime_graph_piece {
  uint64_t skel;
  uint64_t file;
  uint64_t len;
};

/* The skeleton of a large message: the file with the middle lines of
 * every run of "plain" lines left out (see mime_graph_skel_build), small
 * enough for libetpan to parse whole, with the map back to the file. */
struct mime_graph_skel {
  char *data;
  size_t len;
  struct mime_graph_piece *pieces;
  size_t npieces;
  size_t cap;
  int fd; /* the spool file, for bytes the skeleton left out */
};

/* What a leaf part is, as far as the translation cares. */
enum mime_graph_kind {
  MIME_GRAPH_KIND_PLAIN,
  MIME_GRAPH_KIND_HTML,
  MIME_GRAPH_KIND_MULTIPART,
  MIME_GRAPH_KIND_MESSAGE,
  MIME_GRAPH_KIND_CALENDAR,
  MIME_GRAPH_KIND_OTHER,
};

struct mime_graph_ctx {
  const struct mime_graph_envelope *env;
  struct mime_graph_result *res;
  json_t *msg;         /* the "message" object being filled */
  json_t *attachments; /* fileAttachment objects, added at the end */
  bool *named;         /* per envelope recipient: a To or Cc header names it */
  bool *in_bcc;        /* per envelope recipient: the Bcc header names it */
  bool has_body;       /* the body part has been chosen */
  size_t budget;       /* bytes of content added so far, for an early ETOOBIG */
  bool header_extra;   /* a header names a receiver the envelope lacks */
  bool from_other;     /* From or Sender is not the linked user */
  /* Large form: parts are described, not encoded; bodies are read from
   * skel->fd through the skeleton's map. NULL otherwise. */
  const struct mime_graph_skel *skel;
  uint64_t large_total; /* estimated decoded bytes, large form */
};

/* Finds the value of a MIME parameter by name in one kind of list. */
typedef const char *mime_graph_param_find_fn(const void *src, const char *name);

static int mime_graph_walk(struct mime_graph_ctx *ctx, struct mailmime *mime,
                           int depth, bool in_related);

/* Records the sentence for the SMTP reply and returns rc, so that error
 * paths read "return mime_graph_fail(...)". */
static int mime_graph_fail(struct mime_graph_ctx *ctx, int rc, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

static int mime_graph_fail(struct mime_graph_ctx *ctx, int rc, const char *fmt,
                           ...)
{
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(ctx->res->error, sizeof ctx->res->error, fmt, ap);
  va_end(ap);
  return rc;
}

/* jansson refuses strings that are not UTF-8, which makes it our
 * validator: no hand-written UTF-8 decoding. */
static bool mime_graph_utf8_valid(const char *s, size_t len)
{
  json_t *probe = json_stringn(s, len);
  bool ok = probe != NULL;

  json_decref(probe);
  return ok;
}

/* A NUL-terminated copy of len bytes that may themselves hold NUL bytes,
 * which the callers refuse: a string copy would stop at the first one and
 * leave the length pointing past the copy. */
static char *mime_graph_bytes_dup(const char *data, size_t len)
{
  char *copy = xmalloc(len + 1);

  memcpy(copy, data, len);
  copy[len] = '\0';
  return copy;
}

/* Converts len bytes from charset to a new UTF-8 string of *outlen bytes.
 * Returns 0, or MIME_GRAPH_ECHARSET when iconv does not know charset. */
static int mime_graph_charset_convert(const char *charset, const char *data,
                                      size_t len, char **out, size_t *outlen)
{
  char *conv = NULL;
  size_t convlen = 0;
  int rc;

  rc = charconv_buffer("utf-8", charset, data, len, &conv, &convlen);
  if (rc != MAIL_CHARCONV_NO_ERROR)
    return MIME_GRAPH_ECHARSET;
  *out = mime_graph_bytes_dup(conv, convlen);
  *outlen = convlen;
  charconv_buffer_free(conv);
  return 0;
}

/* Text without a usable label is UTF-8 when it is valid UTF-8, and
 * Windows-1252 otherwise (the superset of Latin-1 that mailers really
 * send). libetpan's iconv wrapper turns unmapped bytes into '?'. */
static void mime_graph_unlabelled_convert(const char *data, size_t len,
                                          char **out, size_t *outlen)
{
  int rc;

  if (mime_graph_utf8_valid(data, len)) {
    *out = mime_graph_bytes_dup(data, len);
    *outlen = len;
    return;
  }
  rc = mime_graph_charset_convert("windows-1252", data, len, out, outlen);
  if (rc < 0)
    rc = mime_graph_charset_convert("iso-8859-1", data, len, out, outlen);
  assert(rc == 0);
}

/* Converts text in the declared charset (NULL when none) to UTF-8.
 * US-ASCII and UTF-8 labels are often wrong about 8-bit bytes, so they
 * get the unlabelled rule. Returns 0 or MIME_GRAPH_ECHARSET. */
static int mime_graph_text_to_utf8(const char *charset, const char *data,
                                   size_t len, char **out, size_t *outlen)
{
  int rc;

  if (!charset || strcasecmp(charset, "us-ascii") == 0
      || strcasecmp(charset, "utf-8") == 0
      || strcasecmp(charset, "utf8") == 0) {
    mime_graph_unlabelled_convert(data, len, out, outlen);
    return 0;
  }
  rc = mime_graph_charset_convert(charset, data, len, out, outlen);
  if (rc == 0 && !mime_graph_utf8_valid(*out, *outlen)) {
    free(*out);
    rc = MIME_GRAPH_ECHARSET;
  }
  return rc;
}

/* Decodes a header value (RFC 2047 encoded words, folding, raw 8-bit
 * text by the unlabelled rule) into a new UTF-8 string; never fails. */
static char *mime_graph_header_decode(const char *raw)
{
  size_t len = strlen(raw), idx = 0, outlen;
  const char *from = mime_graph_utf8_valid(raw, len) ? "utf-8" : "windows-1252";
  char *decoded = NULL, *out;
  int rc;

  rc = mailmime_encoded_phrase_parse(from, raw, len, &idx, "utf-8", &decoded);
  if (rc == MAILIMF_NO_ERROR
      && mime_graph_utf8_valid(decoded, strlen(decoded))) {
    out = xstrdup(decoded);
    free(decoded);
    return out;
  }

  /* An encoded word in an unknown charset leaves raw bytes behind. */
  free(decoded);
  mime_graph_unlabelled_convert(raw, len, &out, &outlen);
  return out;
}

/* Sets key to the string s (taking ownership of s). */
static void mime_graph_set_string(json_t *obj, const char *key, char *s)
{
  json_t *value = json_string(s);

  assert(value); /* callers pass UTF-8 only */
  json_object_set_new(obj, key, value);
  free(s);
}

/* Appends value to the array obj[key], creating the array on first use. */
static void mime_graph_array_push(json_t *obj, const char *key, json_t *value)
{
  json_t *array = json_object_get(obj, key);

  if (!array) {
    array = json_array();
    json_object_set_new(obj, key, array);
  }
  json_array_append_new(array, value);
}

/* Builds {"emailAddress":{"name","address"}}; raw_name may be NULL or
 * RFC 2047 encoded. Returns NULL when address is not UTF-8. */
static json_t *mime_graph_recipient_new(const char *raw_name,
                                        const char *address)
{
  json_t *email, *addr = json_string(address);

  if (!addr)
    return NULL;
  email = json_object();
  if (raw_name && *raw_name)
    mime_graph_set_string(email, "name", mime_graph_header_decode(raw_name));
  json_object_set_new(email, "address", addr);
  return json_pack("{s:o}", "emailAddress", email);
}

/* Marks the envelope recipients equal to address (case-insensitively)
 * and returns the first one, or NULL when the envelope lacks it. */
static const char *mime_graph_envelope_match(struct mime_graph_ctx *ctx,
                                             const char *address)
{
  const char *found = NULL;

  for (size_t i = 0; i < ctx->env->nrcpts; i++) {
    if (strcasecmp(ctx->env->rcpts[i], address) != 0)
      continue;
    ctx->named[i] = true;
    if (!found)
      found = ctx->env->rcpts[i];
  }
  return found;
}

/* Adds one To/Cc mailbox when the envelope delivers to it. The address
 * written is the envelope's spelling, which is known to be UTF-8. */
static void mime_graph_mailbox_add(struct mime_graph_ctx *ctx, const char *key,
                                   struct mailimf_mailbox *mb)
{
  const char *rcpt = mime_graph_envelope_match(ctx, mb->mb_addr_spec);
  char esc[128];

  if (!rcpt) {
    ctx->header_extra = true;
    log_debug("- mime rcpt_dropped header=%s addr=\"%s\"", key,
              log_escape(esc, sizeof esc, mb->mb_addr_spec,
                         strlen(mb->mb_addr_spec)));
    return;
  }
  mime_graph_array_push(ctx->msg, key,
                        mime_graph_recipient_new(mb->mb_display_name, rcpt));
}

/* Calls mime_graph_mailbox_add for every mailbox of list, groups
 * included. */
static void mime_graph_address_list_add(struct mime_graph_ctx *ctx,
                                        const char *key,
                                        struct mailimf_address_list *list)
{
  for (clistiter *it = clist_begin(list->ad_list); it; it = clist_next(it)) {
    struct mailimf_address *addr = clist_content(it);
    struct mailimf_mailbox_list *group;

    if (addr->ad_type == MAILIMF_ADDRESS_MAILBOX) {
      mime_graph_mailbox_add(ctx, key, addr->ad_data.ad_mailbox);
      continue;
    }
    group = addr->ad_data.ad_group->grp_mb_list;
    if (!group)
      continue;
    for (clistiter *m = clist_begin(group->mb_list); m; m = clist_next(m))
      mime_graph_mailbox_add(ctx, key, clist_content(m));
  }
}

/* Reply-To is not a receiver, so it is copied without the envelope. */
static void mime_graph_reply_to_add(struct mime_graph_ctx *ctx,
                                    struct mailimf_mailbox *mb)
{
  json_t *rcpt
      = mime_graph_recipient_new(mb->mb_display_name, mb->mb_addr_spec);

  if (rcpt)
    mime_graph_array_push(ctx->msg, "replyTo", rcpt);
}

static void mime_graph_reply_to_list_add(struct mime_graph_ctx *ctx,
                                         struct mailimf_address_list *list)
{
  for (clistiter *it = clist_begin(list->ad_list); it; it = clist_next(it)) {
    struct mailimf_address *addr = clist_content(it);
    struct mailimf_mailbox_list *group;

    if (addr->ad_type == MAILIMF_ADDRESS_MAILBOX) {
      mime_graph_reply_to_add(ctx, addr->ad_data.ad_mailbox);
      continue;
    }
    group = addr->ad_data.ad_group->grp_mb_list;
    if (!group)
      continue;
    for (clistiter *m = clist_begin(group->mb_list); m; m = clist_next(m))
      mime_graph_reply_to_add(ctx, clist_content(m));
  }
}

/* The message is always sent as env->sender, the linked user: setting
 * "from" to another mailbox makes Graph answer ErrorSendAsDenied
 * (graph-api.md 2.5). When the header From names someone else, replies
 * should still reach that person, so the original From becomes replyTo,
 * unless the message carries its own Reply-To, which wins. */
static void mime_graph_from_apply(struct mime_graph_ctx *ctx,
                                  struct mailimf_from *from)
{
  struct mailimf_mailbox *mb;

  mb = from && from->frm_mb_list && clist_begin(from->frm_mb_list->mb_list)
           ? clist_content(clist_begin(from->frm_mb_list->mb_list))
           : NULL;
  if (!mb || strcasecmp(mb->mb_addr_spec, ctx->env->sender) != 0)
    ctx->from_other = true;
  if (!mb || json_object_get(ctx->msg, "replyTo"))
    return;
  if (strcasecmp(mb->mb_addr_spec, ctx->env->sender) != 0)
    mime_graph_reply_to_add(ctx, mb);
}

/* Envelope recipients that no To or Cc header names are blind copies. */
static void mime_graph_bcc_add(struct mime_graph_ctx *ctx)
{
  for (size_t i = 0; i < ctx->env->nrcpts; i++) {
    if (ctx->named[i])
      continue;
    mime_graph_array_push(ctx->msg, "bccRecipients",
                          mime_graph_recipient_new(NULL, ctx->env->rcpts[i]));
  }
}

/* Graph's "importance" from Importance (high/normal/low) or, failing
 * that, X-Priority (1-2 high, 3 normal, 4-5 low). */
static void mime_graph_importance_apply(struct mime_graph_ctx *ctx,
                                        const char *name, const char *value)
{
  static const char *const by_priority[]
      = { "high", "high", "normal", "low", "low" };
  const char *level = NULL;
  char *end;
  long prio;

  while (*value == ' ' || *value == '\t')
    value++;
  if (strcasecmp(name, "Importance") == 0) {
    if (strncasecmp(value, "high", 4) == 0)
      level = "high";
    else if (strncasecmp(value, "low", 3) == 0)
      level = "low";
    else if (strncasecmp(value, "normal", 6) == 0)
      level = "normal";
    if (level)
      json_object_set_new(ctx->msg, "importance", json_string(level));
    return;
  }
  prio = strtol(value, &end, 10);
  if (end != value && prio >= 1 && prio <= 5
      && !json_object_get(ctx->msg, "importance"))
    json_object_set_new(ctx->msg, "importance",
                        json_string(by_priority[prio - 1]));
}

/* Graph's internetMessageHeaders takes only names starting with x- or
 * X-; any other name fails the whole send (InvalidInternetMessageHeader,
 * graph-api.md 2.2), so other custom headers are dropped here. */
static void mime_graph_optional_add(struct mime_graph_ctx *ctx,
                                    struct mailimf_optional_field *field)
{
  json_t *headers = json_object_get(ctx->msg, "internetMessageHeaders");
  json_t *item;
  char esc[64];

  if (strcasecmp(field->fld_name, "Importance") == 0
      || strcasecmp(field->fld_name, "X-Priority") == 0)
    mime_graph_importance_apply(ctx, field->fld_name, field->fld_value);

  if (strncasecmp(field->fld_name, "x-", 2) != 0
      || (headers && json_array_size(headers) >= MIME_GRAPH_XHEADERS_MAX)) {
    log_debug(
        "- mime header_dropped name=\"%s\"",
        log_escape(esc, sizeof esc, field->fld_name, strlen(field->fld_name)));
    return;
  }
  item = json_object();
  json_object_set_new(item, "name", json_string(field->fld_name));
  mime_graph_set_string(item, "value",
                        mime_graph_header_decode(field->fld_value));
  mime_graph_array_push(ctx->msg, "internetMessageHeaders", item);
}

/* Graph documents internetMessageId as "updatable only if isDraft is
 * true" (learn.microsoft.com/en-us/graph/api/message-update); sendMail
 * first saves the message as a draft (graph-api.md 2.1, G-FLOW), so the
 * id is accepted on send and keeps Nextal's Message-ID. */
static void mime_graph_message_id_set(struct mime_graph_ctx *ctx,
                                      const char *id)
{
  json_t *value;
  char *bracketed;

  if (!id || !*id || ctx->res->message_id)
    return;
  bracketed = xasprintf("<%s>", id);
  value = json_string(bracketed);
  free(bracketed);
  if (!value)
    return;
  json_object_set_new(ctx->msg, "internetMessageId", value);
  ctx->res->message_id = xstrdup(id);
}

/* A Bcc header address: the JSON form ignores it (the envelope alone
 * decides who receives the message), but the MIME form sends the header
 * as written, so it must name envelope recipients only. */
static void mime_graph_bcc_header_add(struct mime_graph_ctx *ctx,
                                      struct mailimf_mailbox *mb)
{
  bool found = false;

  for (size_t i = 0; i < ctx->env->nrcpts; i++) {
    if (strcasecmp(ctx->env->rcpts[i], mb->mb_addr_spec) == 0) {
      ctx->in_bcc[i] = true;
      found = true;
    }
  }
  if (!found)
    ctx->header_extra = true;
}

static void mime_graph_bcc_header_walk(struct mime_graph_ctx *ctx,
                                       struct mailimf_bcc *bcc)
{
  if (!bcc || !bcc->bcc_addr_list)
    return;
  for (clistiter *it = clist_begin(bcc->bcc_addr_list->ad_list); it;
       it = clist_next(it)) {
    struct mailimf_address *addr = clist_content(it);
    struct mailimf_mailbox_list *group;

    if (addr->ad_type == MAILIMF_ADDRESS_MAILBOX) {
      mime_graph_bcc_header_add(ctx, addr->ad_data.ad_mailbox);
      continue;
    }
    group = addr->ad_data.ad_group->grp_mb_list;
    for (clistiter *m = group ? clist_begin(group->mb_list) : NULL; m;
         m = clist_next(m))
      mime_graph_bcc_header_add(ctx, clist_content(m));
  }
}

/* A Sender field other than the linked user would make the MIME form
 * send on behalf of someone, which Graph refuses (graph-api.md 2.5). */
static void mime_graph_sender_check(struct mime_graph_ctx *ctx,
                                    struct mailimf_sender *sender)
{
  if (sender && sender->snd_mb
      && strcasecmp(sender->snd_mb->mb_addr_spec, ctx->env->sender) != 0)
    ctx->from_other = true;
}

/* Dispatches one header field. In-Reply-To and References cannot go in
 * the JSON form: Graph's JSON message has no property for them and
 * internetMessageHeaders rejects names without x- (graph-api.md 2.2;
 * github.com/elie222/inbox-zero/pull/1246 reached the same conclusion).
 * They mark the message for the MIME form instead, which keeps them. */
static void mime_graph_field_add(struct mime_graph_ctx *ctx,
                                 struct mailimf_field *field)
{
  switch (field->fld_type) {
    case MAILIMF_FIELD_SUBJECT:
      mime_graph_set_string(
          ctx->msg, "subject",
          mime_graph_header_decode(field->fld_data.fld_subject->sbj_value));
      break;
    case MAILIMF_FIELD_TO:
      mime_graph_address_list_add(ctx, "toRecipients",
                                  field->fld_data.fld_to->to_addr_list);
      break;
    case MAILIMF_FIELD_CC:
      mime_graph_address_list_add(ctx, "ccRecipients",
                                  field->fld_data.fld_cc->cc_addr_list);
      break;
    case MAILIMF_FIELD_REPLY_TO:
      mime_graph_reply_to_list_add(ctx,
                                   field->fld_data.fld_reply_to->rt_addr_list);
      break;
    case MAILIMF_FIELD_MESSAGE_ID:
      mime_graph_message_id_set(ctx, field->fld_data.fld_message_id->mid_value);
      break;
    case MAILIMF_FIELD_IN_REPLY_TO:
    case MAILIMF_FIELD_REFERENCES:
      ctx->res->wants_mime = true;
      break;
    case MAILIMF_FIELD_BCC:
      mime_graph_bcc_header_walk(ctx, field->fld_data.fld_bcc);
      break;
    case MAILIMF_FIELD_SENDER:
      mime_graph_sender_check(ctx, field->fld_data.fld_sender);
      break;
    case MAILIMF_FIELD_OPTIONAL_FIELD:
      mime_graph_optional_add(ctx, field->fld_data.fld_optional_field);
      break;
    default:
      break;
  }
}

/* Translates the top-level header fields, then applies the From and
 * envelope rules that need all of them. */
static void mime_graph_headers_add(struct mime_graph_ctx *ctx,
                                   struct mailimf_fields *fields)
{
  struct mailimf_from *from = NULL;

  for (clistiter *it = clist_begin(fields->fld_list); it; it = clist_next(it)) {
    struct mailimf_field *field = clist_content(it);

    if (field->fld_type == MAILIMF_FIELD_FROM && !from)
      from = field->fld_data.fld_from;
    mime_graph_field_add(ctx, field);
  }
  mime_graph_from_apply(ctx, from);
  mime_graph_bcc_add(ctx);
}

/* Classifies a part by its Content-Type; a missing one is text/plain
 * (RFC 2045 section 5.2). */
static enum mime_graph_kind
mime_graph_kind_get(const struct mailmime_content *ct)
{
  const struct mailmime_type *type = ct ? ct->ct_type : NULL;
  int major;

  if (!type)
    return MIME_GRAPH_KIND_PLAIN;
  if (type->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE) {
    major = type->tp_data.tp_composite_type->ct_type;
    if (major == MAILMIME_COMPOSITE_TYPE_MULTIPART)
      return MIME_GRAPH_KIND_MULTIPART;
    return major == MAILMIME_COMPOSITE_TYPE_MESSAGE ? MIME_GRAPH_KIND_MESSAGE
                                                    : MIME_GRAPH_KIND_OTHER;
  }
  if (type->tp_data.tp_discrete_type->dt_type != MAILMIME_DISCRETE_TYPE_TEXT)
    return MIME_GRAPH_KIND_OTHER;
  if (strcasecmp(ct->ct_subtype, "plain") == 0)
    return MIME_GRAPH_KIND_PLAIN;
  if (strcasecmp(ct->ct_subtype, "html") == 0)
    return MIME_GRAPH_KIND_HTML;
  if (strcasecmp(ct->ct_subtype, "calendar") == 0)
    return MIME_GRAPH_KIND_CALENDAR;
  return MIME_GRAPH_KIND_OTHER;
}

/* The major type's name, for the attachment's contentType. */
static const char *mime_graph_major_name(const struct mailmime_type *type)
{
  static const char *const discrete[] = {
    [MAILMIME_DISCRETE_TYPE_TEXT] = "text",
    [MAILMIME_DISCRETE_TYPE_IMAGE] = "image",
    [MAILMIME_DISCRETE_TYPE_AUDIO] = "audio",
    [MAILMIME_DISCRETE_TYPE_VIDEO] = "video",
    [MAILMIME_DISCRETE_TYPE_APPLICATION] = "application",
  };
  const struct mailmime_discrete_type *dt;
  const struct mailmime_composite_type *ct;

  if (type->tp_type == MAILMIME_TYPE_COMPOSITE_TYPE) {
    ct = type->tp_data.tp_composite_type;
    if (ct->ct_type == MAILMIME_COMPOSITE_TYPE_MESSAGE)
      return "message";
    return ct->ct_type == MAILMIME_COMPOSITE_TYPE_MULTIPART ? "multipart"
                                                            : ct->ct_token;
  }
  dt = type->tp_data.tp_discrete_type;
  if (dt->dt_type == MAILMIME_DISCRETE_TYPE_EXTENSION)
    return dt->dt_extension;
  assert(dt->dt_type > 0 && dt->dt_type < MAILMIME_DISCRETE_TYPE_EXTENSION);
  return discrete[dt->dt_type];
}

/* "type/subtype" in a new string. */
static char *mime_graph_content_type(const struct mailmime_content *ct)
{
  if (!ct || !ct->ct_type)
    return xstrdup("text/plain");
  return xasprintf("%s/%s", mime_graph_major_name(ct->ct_type), ct->ct_subtype);
}

/* Where skeleton offset off lies in the file. An end offset (end set)
 * belongs to the piece it closes, a start offset to the piece it opens;
 * part bodies never start or end inside a left-out run, because the
 * first and last line of every run are kept. */
static uint64_t mime_graph_skel_map(const struct mime_graph_skel *sk,
                                    uint64_t off, bool end)
{
  for (size_t i = 0; i < sk->npieces; i++) {
    const struct mime_graph_piece *p = &sk->pieces[i];

    if (end ? off > p->skel && off <= p->skel + p->len
            : off >= p->skel && off < p->skel + p->len)
      return p->file + (off - p->skel);
  }
  assert(sk->npieces > 0);
  return sk->pieces[sk->npieces - 1].file + sk->pieces[sk->npieces - 1].len;
}

/* The file range [*start, *end) of a part body found in the skeleton. */
static void mime_graph_skel_range(const struct mime_graph_skel *sk,
                                  const struct mailmime_data *body,
                                  uint64_t *start, uint64_t *end)
{
  uint64_t off = (uint64_t) (body->dt_data.dt_text.dt_data - sk->data);
  size_t len = body->dt_data.dt_text.dt_length;

  *start = mime_graph_skel_map(sk, off, false);
  *end = len == 0 ? *start : mime_graph_skel_map(sk, off + len, true);
  assert(*end >= *start);
}

/* Reads len bytes at off of fd into a new NUL-terminated buffer. */
static char *mime_graph_pread_all(int fd, uint64_t off, size_t len)
{
  char *buf = xmalloc(len + 1);
  size_t got = 0;

  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, (off_t) (off + got));

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t) n;
  }
  buf[got] = '\0';
  if (got < len)
    log_warn("- mime short_read want=%zu got=%zu", len, got);
  return buf;
}

/* The encoded bytes of a part body: in the parsed buffer, or in the
 * large form read back from the spool file (a body text is at most
 * MIME_GRAPH_REQUEST_MAX long there, checked by the caller). *owned is
 * what the caller frees. */
static void mime_graph_part_raw(const struct mime_graph_ctx *ctx,
                                const struct mailmime_data *body,
                                const char **data, size_t *len, char **owned)
{
  uint64_t start, end;

  *owned = NULL;
  *data = body->dt_data.dt_text.dt_data;
  *len = body->dt_data.dt_text.dt_length;
  if (!ctx->skel)
    return;
  mime_graph_skel_range(ctx->skel, body, &start, &end);
  *owned = mime_graph_pread_all(ctx->skel->fd, start, (size_t) (end - start));
  *data = *owned;
  *len = (size_t) (end - start);
}

static bool mime_graph_b64_char(char c);

static bool mime_graph_is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Why the transfer-encoded text cannot be decoded faithfully, or NULL.
 * libetpan decodes leniently (a stray byte in base64 is skipped, "=b&"
 * in quoted-printable becomes a byte), which would send other text than
 * the sender wrote: such a part is refused instead. Only the characters
 * are checked here; libetpan still does the decoding. */
static const char *mime_graph_encoding_check(int encoding, const char *raw,
                                             size_t len)
{
  bool padded = false;

  for (size_t i = 0; i < len; i++) {
    char c = raw[i];

    if (encoding == MAILMIME_MECHANISM_BASE64) {
      if (mime_graph_is_space(c))
        continue;
      if (!mime_graph_b64_char(c) || (padded && c != '='))
        return "invalid base64 (RFC 2045 section 6.8)";
      padded = c == '=';
    } else if (encoding == MAILMIME_MECHANISM_QUOTED_PRINTABLE && c == '=') {
      size_t j = i + 1;

      if (j + 1 < len && isxdigit((unsigned char) raw[j])
          && isxdigit((unsigned char) raw[j + 1]))
        continue;
      /* A soft line break: '=' right before the line end. (RFC 2045
       * lets blanks stand between them, but libetpan decodes "= " as an
       * escape, so those are refused too rather than altered.) */
      if (j < len && raw[j] != '\r' && raw[j] != '\n')
        return "invalid quoted-printable: an '=' not followed by two hex "
               "digits or a line end (RFC 2045 section 6.7)";
    }
  }
  return NULL;
}

/* Undoes the part's Content-Transfer-Encoding (base64, quoted-printable)
 * with libetpan into *out, a new buffer of *len bytes. Returns 0, or
 * MIME_GRAPH_EPARSE with the reason in ctx when the encoded text is not
 * valid (see mime_graph_encoding_check). */
static int mime_graph_part_decode(struct mime_graph_ctx *ctx,
                                  const struct mailmime *mime, char **out,
                                  size_t *len)
{
  const struct mailmime_data *body = mime->mm_body;
  char *decoded = NULL, *owned;
  const char *raw, *why;
  size_t idx = 0, rawlen;
  int rc;

  *len = 0;
  *out = NULL;
  if (!body || body->dt_type != MAILMIME_DATA_TEXT) {
    *out = xstrdup("");
    return 0;
  }
  mime_graph_part_raw(ctx, body, &raw, &rawlen, &owned);
  if (!body->dt_encoded) {
    *len = rawlen;
    *out = owned ? owned : xstrndup(raw, rawlen);
    return 0;
  }
  why = mime_graph_encoding_check(body->dt_encoding, raw, rawlen);
  if (why != NULL) {
    free(owned);
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "A part of the message has %s; it is refused "
                           "rather than sent altered.",
                           why);
  }
  rc = mailmime_part_parse(raw, rawlen, &idx, body->dt_encoding, &decoded, len);
  free(owned);
  if (rc != MAILIMF_NO_ERROR) {
    *len = 0;
    *out = xstrdup("");
    return 0;
  }
  *out = mime_graph_bytes_dup(decoded, *len);
  mmap_string_unref(decoded);
  return 0;
}

/* Counts content toward the request limit so that a huge message fails
 * before the whole of it has been base64-encoded. */
static int mime_graph_budget_add(struct mime_graph_ctx *ctx, size_t bytes)
{
  ctx->budget += bytes;
  if (ctx->budget <= MIME_GRAPH_REQUEST_MAX)
    return 0;
  return mime_graph_fail(ctx, MIME_GRAPH_ETOOBIG,
                         "The message is too large to send through Graph in "
                         "one request (limit %d bytes once encoded).",
                         MIME_GRAPH_REQUEST_MAX);
}

/* In the large form the body text goes in the draft's JSON, which must
 * stay under Graph's request limit. */
static int mime_graph_large_text_check(struct mime_graph_ctx *ctx,
                                       const struct mailmime *mime)
{
  const struct mailmime_data *body = mime->mm_body;
  uint64_t start, end;

  if (!ctx->skel || !body || body->dt_type != MAILMIME_DATA_TEXT)
    return 0;
  mime_graph_skel_range(ctx->skel, body, &start, &end);
  if (end - start <= MIME_GRAPH_REQUEST_MAX / 2)
    return 0;
  return mime_graph_fail(ctx, MIME_GRAPH_ETOOBIG,
                         "The message text is too long for Graph (%llu "
                         "bytes, limit %d).",
                         (unsigned long long) (end - start),
                         MIME_GRAPH_REQUEST_MAX / 2);
}

/* Makes a text/plain or text/html part the message body, converted to
 * UTF-8. */
static int mime_graph_body_set(struct mime_graph_ctx *ctx,
                               struct mailmime *mime,
                               const struct mailmime_single_fields *sf,
                               enum mime_graph_kind kind)
{
  size_t len, utf8len;
  char *raw, *utf8 = NULL;
  int rc;

  rc = mime_graph_large_text_check(ctx, mime);
  if (rc < 0)
    return rc;
  rc = mime_graph_part_decode(ctx, mime, &raw, &len);
  if (rc < 0)
    return rc;
  rc = mime_graph_text_to_utf8(sf->fld_content_charset, raw, len, &utf8,
                               &utf8len);
  free(raw);
  if (rc < 0)
    return mime_graph_fail(ctx, rc,
                           "The message text uses the character set "
                           "\"%.40s\", which cannot be converted to UTF-8.",
                           sf->fld_content_charset);
  /* RFC 5322 2.3 allows no NUL in text, and Graph would store a body cut
   * at it: refuse rather than lose the rest of the text. */
  if (memchr(utf8, '\0', utf8len) != NULL) {
    free(utf8);
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message text contains a NUL byte, which mail "
                           "text may not carry (RFC 5322 section 2.3); a "
                           "quoted-printable escape such as =00 or an "
                           "invalid one such as =ZZ decodes to it.");
  }
  json_object_set_new(ctx->msg, "body",
                      json_pack("{s:s, s:s%}", "contentType",
                                kind == MIME_GRAPH_KIND_HTML ? "html" : "text",
                                "content", utf8, utf8len));
  free(utf8);
  ctx->has_body = true;
  return mime_graph_budget_add(ctx, utf8len);
}

static const char *mime_graph_ct_param_find(const void *src, const char *name)
{
  const struct mailmime_content *ct = src;

  if (!ct || !ct->ct_parameters)
    return NULL;
  for (clistiter *it = clist_begin(ct->ct_parameters); it;
       it = clist_next(it)) {
    const struct mailmime_parameter *p = clist_content(it);

    if (strcasecmp(p->pa_name, name) == 0)
      return p->pa_value;
  }
  return NULL;
}

static const char *mime_graph_dsp_param_find(const void *src, const char *name)
{
  const struct mailmime_disposition *dsp = src;

  if (!dsp || !dsp->dsp_parms)
    return NULL;
  for (clistiter *it = clist_begin(dsp->dsp_parms); it; it = clist_next(it)) {
    const struct mailmime_disposition_parm *p = clist_content(it);

    if (p->pa_type == MAILMIME_DISPOSITION_PARM_PARAMETER
        && strcasecmp(p->pa_data.pa_parameter->pa_name, name) == 0)
      return p->pa_data.pa_parameter->pa_value;
  }
  return NULL;
}

/* Appends one RFC 2231 piece to out; an encoded piece is percent-decoded
 * by libxml2, and the first one also yields the charset. */
static void mime_graph_rfc2231_piece(FILE *out, const char *value, bool encoded,
                                     bool first, char **charset)
{
  const char *q1, *q2;
  char *bytes;

  if (!encoded) {
    fputs(value, out);
    return;
  }
  q1 = first ? strchr(value, '\'') : NULL;
  q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
  if (q2) {
    if (q1 > value)
      *charset = xstrndup(value, (size_t) (q1 - value));
    value = q2 + 1;
  }
  bytes = xmlURIUnescapeString(value, 0, NULL);
  if (bytes)
    fputs(bytes, out);
  xmlFree(bytes);
}

/* Looks up piece n of an RFC 2231 parameter: "base*n*" (percent-encoded,
 * *encoded set) or "base*n" (literal). Returns NULL when there is none. */
static const char *mime_graph_rfc2231_piece_find(mime_graph_param_find_fn *find,
                                                 const void *src,
                                                 const char *base, int n,
                                                 bool *encoded)
{
  const char *value;
  char name[64];

  snprintf(name, sizeof name, "%s*%d*", base, n);
  value = find(src, name);
  *encoded = value != NULL;
  if (value)
    return value;
  snprintf(name, sizeof name, "%s*%d", base, n);
  return find(src, name);
}

/* Joins the RFC 2231 form of parameter base ("base*" or the pieces
 * "base*0*", "base*1", ...) into raw bytes in *raw; returns false when the
 * parameter has no such form. */
static bool mime_graph_rfc2231_join(mime_graph_param_find_fn *find,
                                    const void *src, const char *base,
                                    char **raw, char **charset)
{
  size_t size;
  FILE *out = open_memstream(raw, &size);
  const char *value;
  char name[64];
  bool encoded;
  int n = 0;

  assert(out);
  snprintf(name, sizeof name, "%s*", base);
  value = find(src, name);
  if (value) {
    mime_graph_rfc2231_piece(out, value, true, true, charset);
    n = 1;
  }
  for (; !value && n < MIME_GRAPH_RFC2231_PIECES_MAX; n++) {
    const char *piece
        = mime_graph_rfc2231_piece_find(find, src, base, n, &encoded);

    if (!piece)
      break;
    mime_graph_rfc2231_piece(out, piece, encoded, n == 0, charset);
  }
  fclose(out);
  return n > 0;
}

/* The UTF-8 value of an RFC 2231 parameter, or NULL when absent. A piece
 * in an unknown charset falls back to the unlabelled rule. */
static char *mime_graph_rfc2231_get(mime_graph_param_find_fn *find,
                                    const void *src, const char *base)
{
  char *raw = NULL, *charset = NULL, *utf8 = NULL;
  size_t utf8len;

  if (!mime_graph_rfc2231_join(find, src, base, &raw, &charset)) {
    free(raw);
    return NULL;
  }
  if (mime_graph_text_to_utf8(charset, raw, strlen(raw), &utf8, &utf8len) < 0)
    mime_graph_unlabelled_convert(raw, strlen(raw), &utf8, &utf8len);
  free(raw);
  free(charset);
  return utf8;
}

/* A name for an attachment. Graph requires one, so a part without a
 * file name gets a generic name that keeps its type recognisable. */
static char *mime_graph_fallback_name(enum mime_graph_kind kind)
{
  if (kind == MIME_GRAPH_KIND_MESSAGE)
    return xstrdup("message.eml");
  if (kind == MIME_GRAPH_KIND_CALENDAR)
    return xstrdup("invite.ics");
  return xstrdup("attachment");
}

/* The attachment name, in UTF-8: Content-Disposition filename, then
 * Content-Type name, each in RFC 2231 form first, then plain or RFC 2047
 * (libetpan decodes some encoded words itself; decoding again is
 * harmless on UTF-8 text). */
static char *mime_graph_part_name(const struct mailmime_single_fields *sf,
                                  enum mime_graph_kind kind)
{
  char *name;

  name = mime_graph_rfc2231_get(mime_graph_dsp_param_find, sf->fld_disposition,
                                "filename");
  if (!name)
    name = mime_graph_rfc2231_get(mime_graph_ct_param_find, sf->fld_content,
                                  "name");
  if (!name && sf->fld_disposition_filename)
    name = mime_graph_header_decode(sf->fld_disposition_filename);
  if (!name && sf->fld_content_name)
    name = mime_graph_header_decode(sf->fld_content_name);
  if (name && *name)
    return name;
  free(name);
  return mime_graph_fallback_name(kind);
}

/* base64 of len bytes via GnuTLS, as a JSON string. */
static json_t *mime_graph_base64(const char *data, size_t len)
{
  gnutls_datum_t in = { (unsigned char *) data, (unsigned) len };
  gnutls_datum_t out = { NULL, 0 };
  json_t *value;

  if (len == 0)
    return json_string("");
  if (gnutls_base64_encode2(&in, &out) < 0) {
    log_error("- mime base64_failed len=%zu", len);
    abort(); /* only on out of memory, which is fatal here */
  }
  value = json_stringn((const char *) out.data, out.size);
  gnutls_free(out.data);
  return value;
}

/* The Content-ID without angle brackets, or NULL. */
static char *mime_graph_content_id(const char *id)
{
  size_t len;

  if (!id || !*id)
    return NULL;
  if (*id == '<')
    id++;
  len = strlen(id);
  if (len > 0 && id[len - 1] == '>')
    len--;
  return len > 0 ? xstrndup(id, len) : NULL;
}

/* Large form: records where the part's bytes are instead of encoding
 * them; its decoded size is estimated (base64 makes 4 characters of 3
 * bytes; other encodings are counted as they stand). */
static int mime_graph_part_describe(struct mime_graph_ctx *ctx,
                                    struct mailmime *mime,
                                    const struct mailmime_single_fields *sf,
                                    enum mime_graph_kind kind, bool in_related)
{
  struct mime_graph_result *res = ctx->res;
  const struct mailmime_data *body = mime->mm_body;
  struct mime_graph_part *part;
  uint64_t start = 0, end = 0;
  char *cid;

  if (res->nparts >= MIME_GRAPH_PARTS_MAX)
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message has more than %d attachments.",
                           MIME_GRAPH_PARTS_MAX);
  res->parts = xrealloc(res->parts, (res->nparts + 1) * sizeof *res->parts);
  part = &res->parts[res->nparts++];
  memset(part, 0, sizeof *part);
  if (body && body->dt_type == MAILMIME_DATA_TEXT)
    mime_graph_skel_range(ctx->skel, body, &start, &end);
  part->offset = start;
  part->length = end - start;
  part->encoding = body && body->dt_encoded ? body->dt_encoding : 0;
  part->size_estimate = part->encoding == MAILMIME_MECHANISM_BASE64
                            ? part->length / 4 * 3
                            : part->length;
  part->name = mime_graph_part_name(sf, kind);
  part->content_type = mime_graph_content_type(mime->mm_content_type);
  cid = mime_graph_content_id(sf->fld_id);
  part->is_inline = in_related && cid;
  if (cid && mime_graph_utf8_valid(cid, strlen(cid)))
    part->content_id = cid;
  else
    free(cid);

  ctx->large_total += part->size_estimate;
  if (ctx->large_total > MIME_GRAPH_MESSAGE_MAX)
    return mime_graph_fail(ctx, MIME_GRAPH_ETOOBIG,
                           "The message is larger than Graph accepts "
                           "(limit %llu bytes of content).",
                           (unsigned long long) MIME_GRAPH_MESSAGE_MAX);
  return 0;
}

/* Adds the part as a fileAttachment; inline when it sits in
 * multipart/related with a Content-ID (an image the HTML refers to). */
static int mime_graph_attachment_add(struct mime_graph_ctx *ctx,
                                     struct mailmime *mime,
                                     const struct mailmime_single_fields *sf,
                                     enum mime_graph_kind kind, bool in_related)
{
  size_t len;
  char *data, *cid;
  json_t *att;
  int rc;

  if (ctx->skel)
    return mime_graph_part_describe(ctx, mime, sf, kind, in_related);
  rc = mime_graph_part_decode(ctx, mime, &data, &len);
  if (rc < 0)
    return rc;
  /* Count the base64 size before encoding, so that a huge part is
   * refused without being encoded first. */
  rc = mime_graph_budget_add(ctx, (len + 2) / 3 * 4);
  if (rc < 0) {
    free(data);
    return rc;
  }
  att = json_object();
  json_object_set_new(att, "@odata.type",
                      json_string("#microsoft.graph.fileAttachment"));
  mime_graph_set_string(att, "name", mime_graph_part_name(sf, kind));
  mime_graph_set_string(att, "contentType",
                        mime_graph_content_type(mime->mm_content_type));
  json_object_set_new(att, "contentBytes", mime_graph_base64(data, len));
  free(data);

  cid = mime_graph_content_id(sf->fld_id);
  json_object_set_new(att, "isInline", json_boolean(in_related && cid));
  if (cid && mime_graph_utf8_valid(cid, strlen(cid)))
    json_object_set_new(att, "contentId", json_string(cid));
  free(cid);
  json_array_append_new(ctx->attachments, att);
  return 0;
}

static bool mime_graph_is_attachment(const struct mailmime_single_fields *sf)
{
  const struct mailmime_disposition *dsp = sf->fld_disposition;

  return dsp && dsp->dsp_type
         && dsp->dsp_type->dsp_type == MAILMIME_DISPOSITION_TYPE_ATTACHMENT;
}

/* A leaf part: the first plain or HTML text not marked as an attachment
 * is the body; everything else is an attachment. A message/rfc822 or
 * text/calendar part is, for now, an attachment too: turning invitations
 * into Graph events is a later issue. */
static int mime_graph_leaf_add(struct mime_graph_ctx *ctx,
                               struct mailmime *mime, bool in_related)
{
  struct mailmime_single_fields sf;
  enum mime_graph_kind kind = mime_graph_kind_get(mime->mm_content_type);

  mailmime_single_fields_init(&sf, mime->mm_mime_fields, mime->mm_content_type);
  if (kind == MIME_GRAPH_KIND_CALENDAR)
    ctx->res->wants_mime = true; /* only the MIME form keeps an invitation */
  if (kind == MIME_GRAPH_KIND_MULTIPART)
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message has a multipart section without a "
                           "boundary.");
  if ((kind == MIME_GRAPH_KIND_PLAIN || kind == MIME_GRAPH_KIND_HTML)
      && !ctx->has_body && !mime_graph_is_attachment(&sf))
    return mime_graph_body_set(ctx, mime, &sf, kind);
  return mime_graph_attachment_add(ctx, mime, &sf, kind, in_related);
}

/* How much multipart/alternative prefers a child: HTML, then a nested
 * multipart (usually related: HTML with images), then plain text. */
static int mime_graph_alternative_rank(const struct mailmime *child)
{
  switch (mime_graph_kind_get(child->mm_content_type)) {
    case MIME_GRAPH_KIND_HTML:
      return 3;
    case MIME_GRAPH_KIND_MULTIPART:
      return child->mm_type == MAILMIME_MULTIPLE ? 2 : 0;
    case MIME_GRAPH_KIND_PLAIN:
      return 1;
    default:
      return 0;
  }
}

/* Picks the one child of multipart/alternative that is sent: Graph takes
 * a single body, and HTML is preferred. On a tie the later child wins,
 * as RFC 2046 orders alternatives from plainest to richest. */
static struct mailmime *mime_graph_alternative_pick(clist *parts)
{
  struct mailmime *best = NULL;
  int best_rank = -1;

  for (clistiter *it = clist_begin(parts); it; it = clist_next(it)) {
    struct mailmime *child = clist_content(it);
    int rank = mime_graph_alternative_rank(child);

    if (rank > 0 && rank >= best_rank) {
      best = child;
      best_rank = rank;
    }
  }
  return best;
}

/* Walks a multipart: alternative sends one child; related marks its
 * Content-ID parts inline; mixed and the others walk every child. */
static int mime_graph_multipart_walk(struct mime_graph_ctx *ctx,
                                     struct mailmime *mime, int depth)
{
  clist *parts = mime->mm_data.mm_multipart.mm_mp_list;
  const char *subtype = mime->mm_content_type->ct_subtype;
  bool related = strcasecmp(subtype, "related") == 0;
  struct mailmime *pick;
  int rc = 0;

  if (strcasecmp(subtype, "alternative") == 0) {
    /* An iMIP invitation is a text/calendar alternative to the text: the
     * JSON form would drop it, so it marks the message for MIME. */
    for (clistiter *it = clist_begin(parts); it; it = clist_next(it)) {
      struct mailmime *child = clist_content(it);

      if (mime_graph_kind_get(child->mm_content_type)
          == MIME_GRAPH_KIND_CALENDAR)
        ctx->res->wants_mime = true;
    }
    pick = mime_graph_alternative_pick(parts);
    return pick ? mime_graph_walk(ctx, pick, depth + 1, false) : 0;
  }
  for (clistiter *it = clist_begin(parts); it && rc == 0; it = clist_next(it))
    rc = mime_graph_walk(ctx, clist_content(it), depth + 1, related);
  return rc;
}

/* Walks the MIME tree below the top-level message, at most
 * MIME_GRAPH_DEPTH_MAX levels deep. */
static int mime_graph_walk(struct mime_graph_ctx *ctx, struct mailmime *mime,
                           int depth, bool in_related)
{
  if (depth > MIME_GRAPH_DEPTH_MAX)
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message nests multipart sections deeper "
                           "than %d levels.",
                           MIME_GRAPH_DEPTH_MAX);
  if (mime->mm_type == MAILMIME_MULTIPLE)
    return mime_graph_multipart_walk(ctx, mime, depth);
  return mime_graph_leaf_add(ctx, mime, in_related);
}

int mime_graph_address_check(const char *address, char *why, size_t len)
{
  const char *at = strrchr(address, '@');

  if (address[0] == '"') {
    snprintf(why, len, "Graph cannot send to a quoted local part");
    return MIME_GRAPH_ERECIPIENT;
  }
  if (at != NULL && at[1] == '[') {
    snprintf(why, len, "Graph cannot send to an address literal");
    return MIME_GRAPH_ERECIPIENT;
  }
  if (!at || at == address || !at[1] || strchr(address, '@') != at
      || strpbrk(address, " \t\r\n<>")
      || !mime_graph_utf8_valid(address, strlen(address))) {
    snprintf(why, len, "Graph cannot send to this address");
    return MIME_GRAPH_ERECIPIENT;
  }
  return MIME_GRAPH_OK;
}

/* Every envelope recipient must be something Graph can address. */
static int mime_graph_envelope_check(struct mime_graph_ctx *ctx)
{
  const struct mime_graph_envelope *env = ctx->env;
  char why[128];

  if (env->nrcpts == 0)
    return mime_graph_fail(ctx, MIME_GRAPH_ERECIPIENT,
                           "The message has no envelope recipient.");
  for (size_t i = 0; i < env->nrcpts; i++) {
    if (mime_graph_address_check(env->rcpts[i], why, sizeof(why)) < 0)
      return mime_graph_fail(ctx, MIME_GRAPH_ERECIPIENT,
                             "Envelope recipient %zu is not a usable "
                             "address: %s.",
                             i + 1, why);
  }
  ctx->named = xcalloc(env->nrcpts, sizeof *ctx->named);
  ctx->in_bcc = xcalloc(env->nrcpts, sizeof *ctx->in_bcc);
  return 0;
}

/* Parses the whole message with libetpan. libetpan accepts nearly any
 * bytes, so a message without a single header field is refused here. */
static int mime_graph_parse(struct mime_graph_ctx *ctx, const char *data,
                            size_t len, struct mailmime **mime)
{
  struct mailimf_fields *fields;
  size_t idx = 0;

  if (len == 0)
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE, "The message is empty.");
  if (mailmime_parse(data, len, &idx, mime) != MAILIMF_NO_ERROR) {
    *mime = NULL;
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message is not valid RFC 5322.");
  }
  fields = (*mime)->mm_type == MAILMIME_MESSAGE
               ? (*mime)->mm_data.mm_message.mm_fields
               : NULL;
  if (!fields || clist_isempty(fields->fld_list))
    return mime_graph_fail(ctx, MIME_GRAPH_EPARSE,
                           "The message has no header fields.");
  return 0;
}

/* Wraps the message into the sendMail request (the bare draft message in
 * the large form) and measures it. */
static int mime_graph_request_finish(struct mime_graph_ctx *ctx)
{
  struct mime_graph_result *res = ctx->res;
  char *dump;

  if (!ctx->has_body)
    json_object_set_new(
        ctx->msg, "body",
        json_pack("{s:s, s:s}", "contentType", "text", "content", ""));
  if (json_array_size(ctx->attachments) > 0)
    json_object_set(ctx->msg, "attachments", ctx->attachments);
  if (ctx->skel)
    res->request = json_incref(ctx->msg);
  else
    res->request
        = json_pack("{s:O, s:b}", "message", ctx->msg, "saveToSentItems", 1);
  dump = json_dumps(res->request, JSON_COMPACT);
  assert(dump);
  res->request_size = strlen(dump);
  free(dump);
  if (res->request_size > MIME_GRAPH_REQUEST_MAX)
    return mime_graph_fail(ctx, MIME_GRAPH_ETOOBIG,
                           "The message is too large to send through Graph "
                           "in one request (%zu bytes, limit %d).",
                           res->request_size, MIME_GRAPH_REQUEST_MAX);
  return 0;
}

/* What the MIME form needs besides the message: whether it would send
 * to exactly the envelope, and the Bcc line for envelope-only
 * recipients. */
static void mime_graph_mime_check(struct mime_graph_ctx *ctx)
{
  struct mime_graph_result *res = ctx->res;
  size_t size = 0;
  FILE *out = NULL;
  char *list = NULL;

  res->mime_safe = !ctx->header_extra && !ctx->from_other;
  for (size_t i = 0; i < ctx->env->nrcpts; i++) {
    if (ctx->named[i] || ctx->in_bcc[i])
      continue;
    if (!out)
      out = open_memstream(&list, &size);
    assert(out);
    fprintf(out, "%s%s", ftell(out) > 0 ? ", " : "", ctx->env->rcpts[i]);
  }
  if (out) {
    fclose(out);
    res->mime_bcc = list;
  }
}

/* The translation shared by every form; skel is NULL except for the
 * large form, where data is the skeleton. */
static int mime_graph_translate(const char *data, size_t len,
                                const struct mime_graph_envelope *env,
                                const struct mime_graph_skel *skel,
                                struct mime_graph_result *res)
{
  struct mime_graph_ctx ctx = { .env = env, .res = res, .skel = skel };
  struct mailmime *mime = NULL, *content;
  int rc;

  assert(data || len == 0);
  assert(env && env->sender && res);
  memset(res, 0, sizeof *res);

  rc = mime_graph_envelope_check(&ctx);
  if (rc < 0)
    goto out;
  rc = mime_graph_parse(&ctx, data, len, &mime);
  if (rc < 0)
    goto out;

  ctx.msg = json_object();
  ctx.attachments = json_array();
  mime_graph_headers_add(&ctx, mime->mm_data.mm_message.mm_fields);
  if (res->message_id == NULL && env->message_id != NULL) {
    mime_graph_message_id_set(&ctx, env->message_id);
    res->message_id_added = true;
  }
  content = mime->mm_data.mm_message.mm_msg_mime;
  rc = content ? mime_graph_walk(&ctx, content, 0, false) : 0;
  if (rc < 0)
    goto out;
  rc = mime_graph_request_finish(&ctx);
  if (rc == 0)
    mime_graph_mime_check(&ctx);

out:
  if (mime)
    mailmime_free(mime);
  free(ctx.named);
  free(ctx.in_bcc);
  json_decref(ctx.msg);
  json_decref(ctx.attachments);
  if (rc < 0) {
    char error[sizeof res->error];

    memcpy(error, res->error, sizeof error);
    mime_graph_result_free(res);
    memset(res, 0, sizeof *res);
    memcpy(res->error, error, sizeof error);
  }
  return rc;
}

int mime_to_graph(const char *data, size_t len,
                  const struct mime_graph_envelope *env,
                  struct mime_graph_result *res)
{
  return mime_graph_translate(data, len, env, NULL, res);
}

/* ---- the large form: a skeleton of the spool file ------------------- */

/* Appends len bytes that stand at file in the spool file. */
static void mime_graph_skel_emit(struct mime_graph_skel *sk, const char *line,
                                 size_t len, uint64_t file)
{
  struct mime_graph_piece *last
      = sk->npieces ? &sk->pieces[sk->npieces - 1] : NULL;

  if (sk->len + len + 1 > sk->cap) {
    while (sk->len + len + 1 > sk->cap)
      sk->cap = sk->cap ? sk->cap * 2 : 64 * 1024;
    sk->data = xrealloc(sk->data, sk->cap);
  }
  memcpy(sk->data + sk->len, line, len);
  if (last && last->file + last->len == file
      && last->skel + last->len == sk->len) {
    last->len += len;
  } else {
    sk->pieces = xrealloc(sk->pieces, (sk->npieces + 1) * sizeof *sk->pieces);
    sk->pieces[sk->npieces++] = (struct mime_graph_piece){ .skel = sk->len,
                                                           .file = file,
                                                           .len = len };
  }
  sk->len += len;
  sk->data[sk->len] = '\0';
}

/* A line that can be left out of the skeleton: not blank, not a
 * possible boundary ("--"), not a header or its continuation (a header
 * line has a colon, a continuation starts with white space). Lines of
 * base64 and of ordinary text are plain. */
/* Missing: a large attachment of text lines with colons (8-bit or QP) is
 * kept whole in the skeleton, since such lines could be headers. */
static bool mime_graph_line_plain(const char *line, size_t len)
{
  if (len == 0 || strchr("\r\n- \t", line[0]))
    return false;
  return memchr(line, ':', len) == NULL;
}

/* Builds the skeleton line by line: of every run of plain lines, the
 * first and the last are kept and the middle is left out, so libetpan
 * sees every header, boundary and blank line, and each part body still
 * starts and ends on bytes the map knows. */
struct mime_graph_skel_builder {
  struct mime_graph_skel *sk;
  char *pending; /* the run's latest plain line, kept if it is the last */
  size_t pending_len;
  size_t pending_cap;
  uint64_t pending_file;
  bool has_pending;
  unsigned run; /* plain lines in the current run */
};

static void mime_graph_skel_flush(struct mime_graph_skel_builder *b)
{
  if (b->has_pending)
    mime_graph_skel_emit(b->sk, b->pending, b->pending_len, b->pending_file);
  b->has_pending = false;
  b->run = 0;
}

static void mime_graph_skel_line(struct mime_graph_skel_builder *b,
                                 const char *line, size_t len, uint64_t file)
{
  if (!mime_graph_line_plain(line, len)) {
    mime_graph_skel_flush(b);
    mime_graph_skel_emit(b->sk, line, len, file);
    return;
  }
  if (b->run++ == 0) {
    mime_graph_skel_emit(b->sk, line, len, file);
    return;
  }
  if (len > b->pending_cap) {
    b->pending_cap = len;
    b->pending = xrealloc(b->pending, len);
  }
  memcpy(b->pending, line, len);
  b->pending_len = len;
  b->pending_file = file;
  b->has_pending = true;
}

/* Reads fd from the start and feeds whole lines to the builder; a line
 * longer than MIME_GRAPH_LINE_MAX fails with -E2BIG. */
static int mime_graph_skel_read(struct mime_graph_skel_builder *b, int fd)
{
  char *buf = xmalloc(MIME_GRAPH_IO_CHUNK);
  char *line = NULL; /* a line that spans reads */
  size_t line_len = 0, line_cap = 0;
  uint64_t pos = 0, line_start = 0;
  ssize_t n;
  int rc = 0;

  while ((n = read(fd, buf, MIME_GRAPH_IO_CHUNK)) != 0) {
    const char *p = buf, *end;

    if (n < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      goto out;
    }
    end = buf + n;
    while (p < end) {
      const char *nl = memchr(p, '\n', (size_t) (end - p));
      size_t take = nl ? (size_t) (nl - p) + 1 : (size_t) (end - p);

      if (line_len + take > MIME_GRAPH_LINE_MAX) {
        rc = -E2BIG;
        goto out;
      }
      if (nl && line_len == 0) {
        mime_graph_skel_line(b, p, take, pos);
        line_start = pos + take;
      } else {
        if (line_len + take > line_cap) {
          line_cap = (line_len + take) * 2;
          line = xrealloc(line, line_cap);
        }
        memcpy(line + line_len, p, take);
        line_len += take;
        if (nl) {
          mime_graph_skel_line(b, line, line_len, line_start);
          line_start = pos + take;
          line_len = 0;
        }
      }
      pos += take;
      p += take;
    }
  }
  if (line_len > 0)
    mime_graph_skel_line(b, line, line_len, line_start);
  mime_graph_skel_flush(b);

out:
  free(buf);
  free(line);
  return rc;
}

static void mime_graph_skel_free(struct mime_graph_skel *sk)
{
  free(sk->data);
  free(sk->pieces);
}

/* The spool file could not be read (err is an errno value). */
static int mime_graph_io_fail(struct mime_graph_result *res, int err)
{
  memset(res, 0, sizeof *res);
  snprintf(res->error, sizeof res->error, "spooled message unreadable: %s",
           strerror(err));
  return MIME_GRAPH_EIO;
}

/* The large form: skeleton, structure, draft and part descriptions. */
static int mime_graph_large(int fd, const struct mime_graph_envelope *env,
                            struct mime_graph_result *res)
{
  struct mime_graph_skel sk = { .fd = fd };
  struct mime_graph_skel_builder b = { .sk = &sk };
  int rc;

  rc = mime_graph_skel_read(&b, fd);
  free(b.pending);
  if (rc == -E2BIG) {
    memset(res, 0, sizeof *res);
    snprintf(res->error, sizeof res->error,
             "The message has a line longer than %d bytes.",
             MIME_GRAPH_LINE_MAX);
    rc = MIME_GRAPH_EPARSE;
    goto out;
  }
  if (rc < 0) {
    rc = mime_graph_io_fail(res, -rc);
    goto out;
  }
  rc = mime_graph_translate(sk.data ? sk.data : "", sk.len, env, &sk, res);
  if (rc == 0)
    res->form = MIME_GRAPH_FORM_LARGE;

out:
  mime_graph_skel_free(&sk);
  return rc;
}

/* What the MIME form puts before the message: a Bcc field naming the
 * envelope recipients no header names, and the Message-ID the envelope
 * gave. Returns the length of the text, which is written to out (when
 * not NULL) with its NUL. */
static size_t mime_graph_mime_prefix(const struct mime_graph_result *res,
                                     char *out, size_t size)
{
  char *text = xasprintf("%s%s%s%s%s%s", res->mime_bcc ? "Bcc: " : "",
                         res->mime_bcc ? res->mime_bcc : "",
                         res->mime_bcc ? "\r\n" : "",
                         res->message_id_added ? "Message-ID: <" : "",
                         res->message_id_added ? res->message_id : "",
                         res->message_id_added ? ">\r\n" : "");
  size_t len = strlen(text);

  if (out != NULL)
    snprintf(out, size, "%s", text);
  free(text);
  return len;
}

static size_t mime_graph_mime_prefix_size(const struct mime_graph_result *res)
{
  return mime_graph_mime_prefix(res, NULL, 0);
}

/* Small messages: the whole translation in memory, then the form. */
static int mime_graph_small(const char *path, uint64_t size,
                            const struct mime_graph_envelope *env,
                            struct mime_graph_result *res)
{
  const char *data = NULL;
  size_t len = 0;
  int rc;

  rc = spool_map(path, &data, &len);
  if (rc < 0)
    return mime_graph_io_fail(res, -rc);
  rc = mime_to_graph(data, len, env, res);
  spool_unmap(data, len);
  if (rc < 0)
    return rc;
  if (res->wants_mime && res->mime_safe
      && size + mime_graph_mime_prefix_size(res) <= MIME_GRAPH_MIME_RAW_MAX)
    res->form = MIME_GRAPH_FORM_MIME;
  else
    res->form = MIME_GRAPH_FORM_JSON;
  return 0;
}

int mime_to_graph_file(const char *path, const struct mime_graph_envelope *env,
                       struct mime_graph_result *res)
{
  struct stat st;
  int fd, rc;

  memset(res, 0, sizeof *res);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return mime_graph_io_fail(res, errno);
  if (fstat(fd, &st) < 0) {
    rc = mime_graph_io_fail(res, errno);
    goto out;
  }
  /* A message over Graph's request limit cannot fit in one request in
   * any form, and is never read whole. */
  if ((uint64_t) st.st_size <= MIME_GRAPH_REQUEST_MAX) {
    rc = mime_graph_small(path, (uint64_t) st.st_size, env, res);
    if (rc != MIME_GRAPH_ETOOBIG)
      goto out;
  }
  rc = mime_graph_large(fd, env, res);

out:
  close(fd);
  return rc;
}

/* ---- reading the spool file for the MIME and large forms ------------ */

static int mime_graph_write_all(int fd, const void *data, size_t len)
{
  const char *p = data;

  while (len > 0) {
    ssize_t n = write(fd, p, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    p += n;
    len -= (size_t) n;
  }
  return 0;
}

int mime_graph_mime_body(const char *path, const struct mime_graph_result *res,
                         char **body, size_t *len)
{
  const char *data = NULL;
  size_t size = 0, prefix;
  gnutls_datum_t in, out = { NULL, 0 };
  char *raw;
  int rc;

  rc = spool_map(path, &data, &size);
  if (rc < 0)
    return rc;
  prefix = mime_graph_mime_prefix_size(res);
  raw = xmalloc(prefix + size + 1);
  mime_graph_mime_prefix(res, raw, prefix + 1);
  memcpy(raw + prefix, data, size);
  spool_unmap(data, size);
  in = (gnutls_datum_t){ (unsigned char *) raw, (unsigned) (prefix + size) };
  if (gnutls_base64_encode2(&in, &out) < 0) {
    log_error("- mime base64_failed len=%zu", prefix + size);
    abort(); /* only on out of memory, which is fatal here */
  }
  free(raw);
  *body = xstrndup((const char *) out.data, out.size);
  *len = out.size;
  gnutls_free(out.data);
  return 0;
}

/* Decodes the whole groups of four base64 characters in carry (which
 * holds only alphabet characters) to out_fd, keeping the rest. */
static int mime_graph_b64_flush(char *carry, size_t *n, int out_fd,
                                uint64_t *size)
{
  size_t whole = *n / 4 * 4;
  gnutls_datum_t in = { (unsigned char *) carry, (unsigned) whole };
  gnutls_datum_t out = { NULL, 0 };
  int rc;

  if (whole == 0)
    return 0;
  if (gnutls_base64_decode2(&in, &out) < 0)
    return -EINVAL;
  rc = mime_graph_write_all(out_fd, out.data, out.size);
  *size += out.size;
  gnutls_free(out.data);
  memmove(carry, carry + whole, *n - whole);
  *n -= whole;
  return rc;
}

/* Whether c belongs to the base64 alphabet (with the padding '='). */
static bool mime_graph_b64_char(char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
         || (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
}

/* Filters one read of base64 text (white space goes) and decodes it with
 * GnuTLS. A byte outside the alphabet is -EINVAL, as at intake (see
 * mime_graph_encoding_check): skipping it would send other bytes than
 * the sender's.
 * Missing: a large message's attachments are checked only here, at
 * delivery, since intake reads only their structure; such a message
 * fails after its 250 instead of being refused at the end of data. */
static int mime_graph_b64_feed(char *carry, size_t *n, const char *in,
                               size_t len, int out_fd, uint64_t *size)
{
  for (size_t i = 0; i < len; i++) {
    if (mime_graph_b64_char(in[i]))
      carry[(*n)++] = in[i];
    else if (!mime_graph_is_space(in[i]))
      return -EINVAL;
  }
  return mime_graph_b64_flush(carry, n, out_fd, size);
}

/* Decodes quoted-printable text up to its last complete line (a soft
 * break never spans the cut) with libetpan. */
static int mime_graph_qp_feed(char *carry, size_t *n, bool final, int out_fd,
                              uint64_t *size)
{
  const char *nl = final ? carry + *n - 1 : memrchr(carry, '\n', *n);
  size_t upto = nl ? (size_t) (nl - carry) + 1 : 0, idx = 0, dlen = 0;
  char *decoded = NULL;
  int rc;

  if (upto == 0 || *n == 0)
    return 0;
  if (mailmime_part_parse(carry, upto, &idx,
                          MAILMIME_MECHANISM_QUOTED_PRINTABLE, &decoded, &dlen)
      != MAILIMF_NO_ERROR)
    return -EINVAL;
  rc = mime_graph_write_all(out_fd, decoded, dlen);
  *size += dlen;
  mmap_string_unref(decoded);
  memmove(carry, carry + upto, *n - upto);
  *n -= upto;
  return rc;
}

int mime_graph_part_extract(const char *path,
                            const struct mime_graph_part *part, int out_fd,
                            uint64_t *size)
{
  /* carry holds at most one read plus an unfinished line or quartet. */
  size_t cap = 2 * MIME_GRAPH_IO_CHUNK + MIME_GRAPH_LINE_MAX, n = 0;
  char *carry = xmalloc(cap);
  char *buf = xmalloc(MIME_GRAPH_IO_CHUNK);
  uint64_t pos = part->offset, end = part->offset + part->length;
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

  *size = 0;
  if (fd < 0) {
    rc = -errno;
    goto out;
  }
  while (pos < end && rc == 0) {
    size_t want = end - pos < MIME_GRAPH_IO_CHUNK ? (size_t) (end - pos)
                                                  : MIME_GRAPH_IO_CHUNK;
    ssize_t got = pread(fd, buf, want, (off_t) pos);

    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0) {
      rc = got < 0 ? -errno : -EIO;
      break;
    }
    pos += (uint64_t) got;
    if (part->encoding == MAILMIME_MECHANISM_BASE64) {
      rc = mime_graph_b64_feed(carry, &n, buf, (size_t) got, out_fd, size);
    } else if (part->encoding == MAILMIME_MECHANISM_QUOTED_PRINTABLE) {
      memcpy(carry + n, buf, (size_t) got);
      n += (size_t) got;
      rc = n > cap - MIME_GRAPH_IO_CHUNK
               ? -E2BIG
               : mime_graph_qp_feed(carry, &n, false, out_fd, size);
    } else {
      rc = mime_graph_write_all(out_fd, buf, (size_t) got);
      *size += (uint64_t) got;
    }
  }
  if (rc == 0 && part->encoding == MAILMIME_MECHANISM_QUOTED_PRINTABLE)
    rc = mime_graph_qp_feed(carry, &n, true, out_fd, size);
  /* Leftover base64 characters (fewer than four) are not data. */

out:
  if (fd >= 0)
    close(fd);
  free(carry);
  free(buf);
  return rc;
}

void mime_graph_result_free(struct mime_graph_result *res)
{
  if (!res)
    return;
  json_decref(res->request);
  free(res->message_id);
  free(res->mime_bcc);
  for (size_t i = 0; i < res->nparts; i++) {
    free(res->parts[i].name);
    free(res->parts[i].content_type);
    free(res->parts[i].content_id);
  }
  free(res->parts);
  res->request = NULL;
  res->message_id = NULL;
  res->mime_bcc = NULL;
  res->parts = NULL;
  res->nparts = 0;
}
