/* SPDX-License-Identifier: MIT */
/* Unit tests for mime_to_graph: sample messages under data/mime are
 * translated and the Graph sendMail JSON is checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <jansson.h>

#include "mime_to_graph.h"
#include "xalloc.h"

#define SENDER "linked@nextal.example"

/* Reads data/mime/name and turns bare LF into CRLF, as SMTP delivers
 * it. Returns a new buffer of *len bytes. */
static char *sample_load(const char *name, size_t *len)
{
  const char *dir = getenv("NX_TEST_DATA");
  char *path, *raw, *out;
  size_t n = 0, cap = 1 << 16, o = 0;
  FILE *f;
  int c;

  assert_non_null(dir);
  path = xasprintf("%s/mime/%s", dir, name);
  f = fopen(path, "rb");
  free(path);
  assert_non_null(f);
  raw = xmalloc(cap);
  while ((c = fgetc(f)) != EOF) {
    if (n + 1 >= cap)
      raw = xrealloc(raw, cap *= 2);
    raw[n++] = (char) c;
  }
  fclose(f);
  out = xmalloc(2 * n + 1);
  for (size_t i = 0; i < n; i++) {
    if (raw[i] == '\n' && (i == 0 || raw[i - 1] != '\r'))
      out[o++] = '\r';
    out[o++] = raw[i];
  }
  free(raw);
  *len = o;
  return out;
}

/* Translates data for the envelope recipients in ap (NULL-ended). */
static int translate_va(const char *data, size_t len,
                        struct mime_graph_result *res, va_list ap)
{
  const char *rcpts[16];
  struct mime_graph_envelope env = { SENDER, rcpts, 0, NULL };
  const char *r;

  while ((r = va_arg(ap, const char *)) != NULL && env.nrcpts < 16)
    rcpts[env.nrcpts++] = r;
  return mime_to_graph(data, len, &env, res);
}

static int translate_buf(const char *data, size_t len,
                         struct mime_graph_result *res, ...)
{
  va_list ap;
  int rc;

  va_start(ap, res);
  rc = translate_va(data, len, res, ap);
  va_end(ap);
  return rc;
}

/* Translates sample name; the recipients end with NULL. */
static int translate(const char *name, struct mime_graph_result *res, ...)
{
  size_t len;
  char *data = sample_load(name, &len);
  va_list ap;
  int rc;

  va_start(ap, res);
  rc = translate_va(data, len, res, ap);
  va_end(ap);
  free(data);
  return rc;
}

static json_t *msg_of(struct mime_graph_result *res)
{
  json_t *msg = json_object_get(res->request, "message");

  assert_non_null(msg);
  return msg;
}

static const char *str_at(json_t *obj, const char *key)
{
  json_t *v = json_object_get(obj, key);

  assert_true(json_is_string(v));
  return json_string_value(v);
}

/* The address of recipient i of array key. */
static const char *rcpt_addr(json_t *msg, const char *key, size_t i)
{
  json_t *r = json_array_get(json_object_get(msg, key), i);

  assert_non_null(r);
  return str_at(json_object_get(r, "emailAddress"), "address");
}

static const char *rcpt_name(json_t *msg, const char *key, size_t i)
{
  json_t *r = json_array_get(json_object_get(msg, key), i);

  assert_non_null(r);
  return str_at(json_object_get(r, "emailAddress"), "name");
}

/* Decodes an attachment's contentBytes with GnuTLS. */
static gnutls_datum_t content_bytes(json_t *att)
{
  const char *b64 = str_at(att, "contentBytes");
  gnutls_datum_t in = { (unsigned char *) b64, (unsigned) strlen(b64) };
  gnutls_datum_t out = { NULL, 0 };

  if (in.size == 0)
    return out;
  assert_int_equal(gnutls_base64_decode2(&in, &out), 0);
  return out;
}

static json_t *attachment(json_t *msg, size_t i)
{
  json_t *att = json_array_get(json_object_get(msg, "attachments"), i);

  assert_non_null(att);
  assert_string_equal(str_at(att, "@odata.type"),
                      "#microsoft.graph.fileAttachment");
  return att;
}

static void test_plain_text(void **state)
{
  struct mime_graph_result res;
  json_t *msg, *body;
  char *dump;

  assert_int_equal(translate("plain.eml", &res, "ada@example.org",
                             "charles@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_true(json_is_true(json_object_get(res.request, "saveToSentItems")));
  assert_string_equal(str_at(msg, "subject"), "Interview on Monday");
  body = json_object_get(msg, "body");
  assert_string_equal(str_at(body, "contentType"), "text");
  assert_string_equal(str_at(body, "content"),
                      "Hello Ada,\r\nsee you on Monday.\r\n");
  assert_string_equal(rcpt_addr(msg, "toRecipients", 0), "ada@example.org");
  assert_string_equal(rcpt_name(msg, "toRecipients", 0), "Ada Lovelace");
  assert_string_equal(rcpt_name(msg, "ccRecipients", 0), "Babbage, Charles");
  assert_null(json_object_get(msg, "bccRecipients"));
  assert_null(json_object_get(msg, "from"));
  assert_null(json_object_get(msg, "replyTo"));
  assert_null(json_object_get(msg, "attachments"));
  assert_string_equal(res.message_id, "interview-1@nextal.example");
  assert_string_equal(str_at(msg, "internetMessageId"),
                      "<interview-1@nextal.example>");

  dump = json_dumps(res.request, JSON_COMPACT);
  assert_int_equal(res.request_size, strlen(dump));
  free(dump);
  mime_graph_result_free(&res);
}

static void test_html_inline_image(void **state)
{
  struct mime_graph_result res;
  json_t *msg, *att;
  gnutls_datum_t bytes;

  assert_int_equal(translate("html_inline.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_string_equal(str_at(json_object_get(msg, "body"), "contentType"),
                      "html");
  assert_non_null(strstr(str_at(json_object_get(msg, "body"), "content"),
                         "cid:logo@nextal.example"));
  assert_int_equal(json_array_size(json_object_get(msg, "attachments")), 1);
  att = attachment(msg, 0);
  assert_true(json_is_true(json_object_get(att, "isInline")));
  assert_string_equal(str_at(att, "contentId"), "logo@nextal.example");
  assert_string_equal(str_at(att, "contentType"), "image/png");
  assert_string_equal(str_at(att, "name"), "logo.png");

  bytes = content_bytes(att);
  assert_int_equal(bytes.size, 264);
  for (unsigned i = 0; i < 256; i++)
    assert_int_equal(bytes.data[i], i);
  assert_memory_equal(bytes.data + 256, "\x89PNG\r\n\x1a\n", 8);
  gnutls_free(bytes.data);
  mime_graph_result_free(&res);
}

static void test_attachments(void **state)
{
  struct mime_graph_result res;
  json_t *msg, *att;
  gnutls_datum_t bytes;
  const char *qp = "caf\xc3\xa9 = tea, a soft break";

  assert_int_equal(translate("attachments.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_string_equal(str_at(json_object_get(msg, "body"), "content"),
                      "Please find the documents attached.");
  assert_int_equal(json_array_size(json_object_get(msg, "attachments")), 4);

  /* base64: every byte value, three times. */
  att = attachment(msg, 0);
  assert_string_equal(str_at(att, "name"), "blob.bin");
  assert_string_equal(str_at(att, "contentType"), "application/octet-stream");
  assert_true(json_is_false(json_object_get(att, "isInline")));
  assert_null(json_object_get(att, "contentId"));
  bytes = content_bytes(att);
  assert_int_equal(bytes.size, 768);
  for (unsigned i = 0; i < 768; i++)
    assert_int_equal(bytes.data[i], i % 256);
  gnutls_free(bytes.data);

  /* quoted-printable, with =3D and a soft line break. */
  att = attachment(msg, 1);
  assert_string_equal(str_at(att, "name"), "notes.txt");
  bytes = content_bytes(att);
  assert_int_equal(bytes.size, strlen(qp));
  assert_memory_equal(bytes.data, qp, strlen(qp));
  gnutls_free(bytes.data);

  /* Invitations and forwarded messages stay attachments for now. */
  att = attachment(msg, 2);
  assert_string_equal(str_at(att, "contentType"), "text/calendar");
  assert_string_equal(str_at(att, "name"), "invite.ics");
  att = attachment(msg, 3);
  assert_string_equal(str_at(att, "contentType"), "message/rfc822");
  assert_string_equal(str_at(att, "name"), "message.eml");
  bytes = content_bytes(att);
  assert_non_null(bytes.data);
  assert_true(bytes.size > 10);
  assert_memory_equal(bytes.data, "From: someone@example.org", 25);
  gnutls_free(bytes.data);
  mime_graph_result_free(&res);
}

static void test_non_ascii_headers(void **state)
{
  struct mime_graph_result res;
  json_t *msg;

  assert_int_equal(translate("i18n.eml", &res, "juergen@example.org",
                             "elodie@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_string_equal(str_at(msg, "subject"),
                      "Entretien \xc3\xa0 Z\xc3\xbcrich \xc3\xa0 10h");
  assert_string_equal(rcpt_name(msg, "toRecipients", 0),
                      "J\xc3\xbcrgen M\xc3\xbcller");
  assert_string_equal(rcpt_name(msg, "ccRecipients", 0),
                      "\xc3\x89lodie Dupont");
  assert_string_equal(str_at(json_object_get(msg, "body"), "content"),
                      "Gr\xc3\xbc\xc3\x9f"
                      "e\r\n");
  mime_graph_result_free(&res);
}

static void test_alternative_sends_html_only(void **state)
{
  struct mime_graph_result res;
  json_t *msg, *body;

  assert_int_equal(translate("alternative.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  body = json_object_get(msg, "body");
  assert_string_equal(str_at(body, "contentType"), "html");
  assert_string_equal(str_at(body, "content"), "<p>HTML version</p>");
  assert_null(json_object_get(msg, "attachments"));
  mime_graph_result_free(&res);
}

/* hidden@ is only in the envelope (and in a header Bcc, which does not
 * count); phantom@ is only in the header Bcc, so nobody sends to it. */
static void test_bcc_from_envelope(void **state)
{
  struct mime_graph_result res;
  json_t *msg;
  char *dump;

  assert_int_equal(translate("recipients.eml", &res, "ada@example.org",
                             "hidden@example.org", "ghost@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_int_equal(json_array_size(json_object_get(msg, "bccRecipients")), 1);
  assert_string_equal(rcpt_addr(msg, "bccRecipients", 0), "hidden@example.org");
  dump = json_dumps(res.request, JSON_COMPACT);
  assert_null(strstr(dump, "phantom"));
  free(dump);
  mime_graph_result_free(&res);
}

/* ghost@ is in the header To but not in the envelope: dropped. The Cc
 * spells ada@ in capitals and still matches the envelope. */
static void test_header_not_in_envelope_dropped(void **state)
{
  struct mime_graph_result res;
  json_t *msg;
  char *dump;

  assert_int_equal(translate("recipients.eml", &res, "Ada@Example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_int_equal(json_array_size(json_object_get(msg, "toRecipients")), 1);
  assert_string_equal(rcpt_name(msg, "toRecipients", 0), "Ada");
  assert_int_equal(json_array_size(json_object_get(msg, "ccRecipients")), 1);
  assert_null(json_object_get(msg, "bccRecipients"));
  dump = json_dumps(res.request, JSON_COMPACT);
  assert_null(strstr(dump, "ghost"));
  assert_null(strstr(dump, "phantom"));
  assert_null(strstr(dump, "hidden"));
  free(dump);
  mime_graph_result_free(&res);
}

static void test_custom_headers(void **state)
{
  struct mime_graph_result res;
  json_t *msg, *headers, *h;
  char *dump;

  assert_int_equal(translate("headers.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  headers = json_object_get(msg, "internetMessageHeaders");
  assert_int_equal(json_array_size(headers), 1);
  h = json_array_get(headers, 0);
  assert_string_equal(str_at(h, "name"), "X-Nextal-Candidate");
  assert_string_equal(str_at(h, "value"), "4711");
  assert_string_equal(str_at(msg, "importance"), "high");
  dump = json_dumps(res.request, JSON_COMPACT);
  assert_null(strstr(dump, "List-Unsubscribe"));
  assert_null(strstr(dump, "earlier@example.org"));
  free(dump);
  mime_graph_result_free(&res);
}

static void test_attachment_names(void **state)
{
  struct mime_graph_result res;
  json_t *msg;

  assert_int_equal(translate("rfc2231.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_int_equal(json_array_size(json_object_get(msg, "attachments")), 3);
  assert_string_equal(str_at(attachment(msg, 0), "name"),
                      "r\xc3\xa9sum\xc3\xa9 final.pdf");
  assert_string_equal(str_at(attachment(msg, 1), "name"), "caf\xc3\xa9.txt");
  assert_string_equal(str_at(attachment(msg, 2), "name"),
                      "r\xc3\xa9sum\xc3\xa9.doc");
  mime_graph_result_free(&res);
}

static void test_latin1_without_label(void **state)
{
  struct mime_graph_result res;
  json_t *msg;

  assert_int_equal(translate("latin1.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_string_equal(str_at(msg, "subject"), "Caf\xc3\xa9 au lait");
  assert_string_equal(str_at(json_object_get(msg, "body"), "content"),
                      "Un caf\xc3\xa9 cr\xc3\xa8me, \xe2\x82\xac 5.\r\n");
  mime_graph_result_free(&res);
}

static void test_long_line(void **state)
{
  struct mime_graph_result res;
  char line[5001], *data;
  const char *content;

  memset(line, 'a', 5000);
  line[5000] = '\0';
  data = xasprintf("From: " SENDER "\r\nTo: ada@example.org\r\n"
                   "Subject: long\r\n\r\n%s\r\nend\r\n",
                   line);
  assert_int_equal(
      translate_buf(data, strlen(data), &res, "ada@example.org", NULL),
      MIME_GRAPH_OK);
  free(data);
  content = str_at(json_object_get(msg_of(&res), "body"), "content");
  assert_int_equal(strlen(content), 5000 + 2 + 5);
  assert_memory_equal(content, line, 5000);
  mime_graph_result_free(&res);
}

static void test_from_other_user_becomes_reply_to(void **state)
{
  struct mime_graph_result res;
  json_t *msg;

  assert_int_equal(translate("from_other.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_null(json_object_get(msg, "from"));
  assert_int_equal(json_array_size(json_object_get(msg, "replyTo")), 1);
  assert_string_equal(rcpt_addr(msg, "replyTo", 0), "recruiter@agency.example");
  assert_string_equal(rcpt_name(msg, "replyTo", 0), "Recruiter");
  mime_graph_result_free(&res);

  /* An explicit Reply-To wins over the From rule. */
  assert_int_equal(
      translate("from_other_reply_to.eml", &res, "ada@example.org", NULL),
      MIME_GRAPH_OK);
  msg = msg_of(&res);
  assert_int_equal(json_array_size(json_object_get(msg, "replyTo")), 1);
  assert_string_equal(rcpt_addr(msg, "replyTo", 0), "jobs@agency.example");
  mime_graph_result_free(&res);
}

static void expect_error(const char *data, size_t len, int want)
{
  struct mime_graph_result res;

  assert_int_equal(translate_buf(data, len, &res, "ada@example.org", NULL),
                   want);
  assert_null(res.request);
  assert_null(res.message_id);
  assert_true(strlen(res.error) > 10);
  assert_non_null(strchr(res.error, '.'));
}

static void test_malformed_input(void **state)
{
  struct mime_graph_result res;
  char junk[4096], *deep, *p;
  size_t len;

  expect_error("", 0, MIME_GRAPH_EPARSE);
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (char) (0x80 + (i * 7919) % 128);
  expect_error(junk, sizeof junk, MIME_GRAPH_EPARSE);

  p = sample_load("no_boundary.eml", &len);
  expect_error(p, len, MIME_GRAPH_EPARSE);
  free(p);

  /* A NUL in text, raw, labelled UTF-8, or from base64, is refused rather
   * than cut short (this read past the copy once). */
  {
    static const char raw_nul[] = "Subject: a\r\n\r\nbody\0more text\r\n";
    static const char utf8_nul[]
        = "Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
          "x\0y\r\n";
    static const char b64_nul[]
        = "Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\nYQBi\r\n";

    /* Through iconv too: a labelled 8-bit charset once reported the
     * converted length past a copy cut at the NUL. */
    static const char latin1_qp_nul[]
        = "Subject: a\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          "Content-Transfer-Encoding: quoted-printable\r\n\r\nx=00y\r\n";
    static const char cp1252_b64_nul[]
        = "Subject: a\r\nContent-Type: text/html; charset=windows-1252\r\n"
          "Content-Transfer-Encoding: base64\r\n\r\nPGI+AABiPC9iPg==\r\n";

    expect_error(raw_nul, sizeof raw_nul - 1, MIME_GRAPH_EPARSE);
    expect_error(utf8_nul, sizeof utf8_nul - 1, MIME_GRAPH_EPARSE);
    expect_error(b64_nul, sizeof b64_nul - 1, MIME_GRAPH_EPARSE);
    expect_error(latin1_qp_nul, sizeof latin1_qp_nul - 1, MIME_GRAPH_EPARSE);
    expect_error(cp1252_b64_nul, sizeof cp1252_b64_nul - 1, MIME_GRAPH_EPARSE);
  }
  /* Encoded text libetpan would decode into something else: refused. */
  {
    static const char qp_bad[]
        = "Subject: a\r\nContent-Transfer-Encoding: quoted-printable\r\n"
          "\r\nsee https://x.example/?a=b&c=d price=5 EUR\r\n";
    static const char b64_bad[]
        = "Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\n"
          "!!!notbase64$$$===abc=\r\n";
    static const char b64_bad_attachment[]
        = "Subject: a\r\nMIME-Version: 1.0\r\n"
          "Content-Type: multipart/mixed; boundary=B\r\n\r\n"
          "--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
          "--B\r\nContent-Type: application/pdf; name=a.pdf\r\n"
          "Content-Disposition: attachment; filename=a.pdf\r\n"
          "Content-Transfer-Encoding: base64\r\n\r\n"
          "QUJD*&^%==QUJD\r\n--B--\r\n";

    expect_error(qp_bad, sizeof qp_bad - 1, MIME_GRAPH_EPARSE);
    assert_int_equal(
        translate_buf(qp_bad, sizeof qp_bad - 1, &res, "ada@example.org", NULL),
        MIME_GRAPH_EPARSE);
    assert_non_null(strstr(res.error, "invalid quoted-printable"));
    expect_error(b64_bad, sizeof b64_bad - 1, MIME_GRAPH_EPARSE);
    assert_int_equal(translate_buf(b64_bad_attachment,
                                   sizeof b64_bad_attachment - 1, &res,
                                   "ada@example.org", NULL),
                     MIME_GRAPH_EPARSE);
    assert_non_null(strstr(res.error, "invalid base64"));
  }
  /* What RFC 2045 allows stays allowed: soft line breaks, a final '='
   * line end, padding followed by a line break. */
  {
    static const char qp_ok[]
        = "Subject: a\r\nContent-Transfer-Encoding: quoted-printable\r\n"
          "\r\nprice=3D5 EUR, caf=C3=A9 =\r\nnext=\r\n";
    static const char b64_ok[]
        = "Subject: a\r\nContent-Transfer-Encoding: base64\r\n\r\n"
          "aGVs\r\nbG8=\r\n\r\n";

    assert_int_equal(
        translate_buf(qp_ok, sizeof qp_ok - 1, &res, "ada@example.org", NULL),
        MIME_GRAPH_OK);
    assert_string_equal(
        str_at(json_object_get(msg_of(&res), "body"), "content"),
        "price=5 EUR, caf\xC3\xA9 next");
    mime_graph_result_free(&res);
    assert_int_equal(
        translate_buf(b64_ok, sizeof b64_ok - 1, &res, "ada@example.org", NULL),
        MIME_GRAPH_OK);
    assert_string_equal(
        str_at(json_object_get(msg_of(&res), "body"), "content"), "hello");
    mime_graph_result_free(&res);
  }
  p = sample_load("unknown_charset.eml", &len);
  expect_error(p, len, MIME_GRAPH_ECHARSET);
  assert_int_equal(translate_buf(p, len, &res, "ada@example.org", NULL),
                   MIME_GRAPH_ECHARSET);
  assert_non_null(strstr(res.error, "x-no-such-charset"));
  free(p);

  /* Survivable damage: translated, not refused. */
  assert_int_equal(
      translate("truncated_base64.eml", &res, "ada@example.org", NULL),
      MIME_GRAPH_OK);
  mime_graph_result_free(&res);
  assert_int_equal(translate("headers_only.eml", &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  assert_string_equal(str_at(json_object_get(msg_of(&res), "body"), "content"),
                      "");
  mime_graph_result_free(&res);

  /* Multiparts nested 40 deep hit the depth limit. */
  deep = xstrdup("From: " SENDER "\r\nTo: ada@example.org\r\n");
  for (int i = 0; i < 40; i++) {
    p = xasprintf("%sContent-Type: multipart/mixed; boundary=b%d\r\n\r\n"
                  "--b%d\r\n",
                  deep, i, i);
    free(deep);
    deep = p;
  }
  p = xasprintf("%sContent-Type: text/plain\r\n\r\nx\r\n", deep);
  free(deep);
  expect_error(p, strlen(p), MIME_GRAPH_EPARSE);
  free(p);

  /* No usable envelope recipient. */
  assert_int_equal(translate("plain.eml", &res, "not-an-address", NULL),
                   MIME_GRAPH_ERECIPIENT);
}

/* A message whose base64 attachment alone exceeds the Graph limit. */
static char *big_message(size_t attachment_bytes, size_t *len)
{
  unsigned char *blob = xcalloc(1, attachment_bytes);
  gnutls_datum_t in = { blob, (unsigned) attachment_bytes }, b64;
  char *msg;

  assert_int_equal(gnutls_base64_encode2(&in, &b64), 0);
  free(blob);
  msg = xasprintf("From: " SENDER "\r\nTo: ada@example.org\r\n"
                  "Subject: big\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: multipart/mixed; boundary=B\r\n\r\n"
                  "--B\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
                  "--B\r\nContent-Type: application/octet-stream\r\n"
                  "Content-Transfer-Encoding: base64\r\n\r\n%.*s\r\n--B--\r\n",
                  (int) b64.size, b64.data);
  gnutls_free(b64.data);
  *len = strlen(msg);
  return msg;
}

static void test_too_big(void **state)
{
  struct mime_graph_result res;
  size_t len;
  char *msg = big_message(3300000, &len);

  expect_error(msg, len, MIME_GRAPH_ETOOBIG);
  free(msg);

  /* Just under the limit still passes and reports its size. */
  msg = big_message(3000000, &len);
  assert_int_equal(translate_buf(msg, len, &res, "ada@example.org", NULL),
                   MIME_GRAPH_OK);
  assert_true(res.request_size > 4000000);
  assert_true(res.request_size <= MIME_GRAPH_REQUEST_MAX);
  mime_graph_result_free(&res);
  free(msg);
}

/* Writes len bytes to a new temporary file and returns its path. */
static char *file_write(const char *data, size_t len)
{
  char tmpl[] = "/tmp/nx-mime-test-XXXXXX";
  int fd = mkstemp(tmpl);
  FILE *f;

  assert_true(fd >= 0);
  f = fdopen(fd, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
  return xstrdup(tmpl);
}

/* Appends the base64 of len bytes in 76-character lines. */
static void base64_lines(FILE *out, const unsigned char *data, size_t len)
{
  gnutls_datum_t in = { (unsigned char *) data, (unsigned) len };
  gnutls_datum_t enc = { NULL, 0 };

  assert_int_equal(gnutls_base64_encode2(&in, &enc), 0);
  for (size_t i = 0; i < enc.size; i += 76)
    fprintf(out, "%.*s\r\n", (int) (enc.size - i < 76 ? enc.size - i : 76),
            enc.data + i);
  gnutls_free(enc.data);
}

/* Decodes part of the file at path and compares it with want. */
static void expect_extracted(const char *path,
                             const struct mime_graph_part *part,
                             const void *want, size_t want_len)
{
  char tmpl[] = "/tmp/nx-mime-part-XXXXXX";
  int fd = mkstemp(tmpl);
  uint64_t size = 0;
  char *got = xmalloc(want_len + 1);

  assert_true(fd >= 0);
  assert_int_equal(mime_graph_part_extract(path, part, fd, &size), 0);
  assert_int_equal(size, want_len);
  assert_int_equal(pread(fd, got, want_len + 1, 0), (ssize_t) want_len);
  assert_memory_equal(got, want, want_len);
  close(fd);
  unlink(tmpl);
  free(got);
}

/* A message over Graph's request limit takes the large form: the draft
 * carries the text, each attachment is described by where it lies in the
 * file, and decoding it from there gives back the original bytes. */
static void test_file_large_form(void **state)
{
  size_t big_len = 5 * 1024 * 1024 + 17, len = 0;
  unsigned char *big = xmalloc(big_len);
  const char *qp_want = "caf\xc3\xa9 au lait, and a line long enough to "
                        "need a soft break in quoted-printable text.";
  struct mime_graph_envelope env;
  const char *rcpts[] = { "ada@example.org" };
  struct mime_graph_result res;
  char *msg = NULL, *path;
  json_t *body;
  FILE *out;

  (void) state;
  for (size_t i = 0; i < big_len; i++)
    big[i] = (unsigned char) ((i * 7919u) >> 3);
  out = open_memstream(&msg, &len);
  fprintf(out, "From: linked@nextal.example\r\nTo: ada@example.org\r\n"
               "Subject: Portfolio\r\nMessage-ID: <big@nextal.example>\r\n"
               "MIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
               "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               "Hello Ada,\r\nthe portfolio is attached.\r\nBest\r\n"
               "--b1\r\nContent-Type: application/pdf; name=\"cv.pdf\"\r\n"
               "Content-Disposition: attachment; filename=\"cv.pdf\"\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n");
  base64_lines(out, big, big_len);
  fprintf(out, "--b1\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n"
               "Content-Disposition: attachment; filename=\"notes.txt\"\r\n"
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
               "caf=C3=A9 au lait, and a line long enough to need a soft "
               "break in=\r\n quoted-printable text.\r\n"
               "--b1--\r\n");
  fclose(out);
  path = file_write(msg, len);
  env = (struct mime_graph_envelope){ SENDER, rcpts, 1, NULL };

  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_LARGE);
  assert_string_equal(res.message_id, "big@nextal.example");
  assert_null(json_object_get(res.request, "attachments"));
  body = json_object_get(res.request, "body");
  assert_string_equal(json_string_value(json_object_get(body, "content")),
                      "Hello Ada,\r\nthe portfolio is attached.\r\nBest");
  assert_int_equal(res.nparts, 2);
  assert_string_equal(res.parts[0].name, "cv.pdf");
  assert_string_equal(res.parts[0].content_type, "application/pdf");
  assert_true(res.parts[0].size_estimate >= big_len);
  expect_extracted(path, &res.parts[0], big, big_len);
  expect_extracted(path, &res.parts[1], qp_want, strlen(qp_want));
  mime_graph_result_free(&res);
  unlink(path);
  free(path);
  free(msg);
  free(big);
}

/* The large form over a nested message: the HTML alternative is the body
 * (read back from the file), the related image is inline with its
 * Content-ID, and a forwarded message and an 8-bit part are attachments
 * whose bytes come back as written. */
static void test_file_large_form_nested(void **state)
{
  size_t pad_len = 4600 * 1000, len = 0;
  unsigned char *pad = xmalloc(pad_len);
  const char *fwd = "From: ada@example.org\r\nSubject: earlier\r\n\r\n"
                    "Earlier text.\r\nMore of it.\r\nAnd more.";
  const char *eight = "caf\xc3\xa9\r\nligne 2\r\nligne 3";
  const char *rcpts[] = { "ada@example.org" };
  struct mime_graph_envelope env = { SENDER, rcpts, 1, NULL };
  struct mime_graph_result res;
  char *msg = NULL, *path;
  json_t *body;
  FILE *out;

  (void) state;
  for (size_t i = 0; i < pad_len; i++)
    pad[i] = (unsigned char) (i * 31u);
  out = open_memstream(&msg, &len);
  fprintf(out, "From: linked@nextal.example\r\nTo: ada@example.org\r\n"
               "Subject: nested\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n"
               "--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n"
               "\r\n--a\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
               "--a\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n"
               "--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
               "<p>logo</p>\r\n<img src=\"cid:logo@x\">\r\n"
               "--r\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n");
  base64_lines(out, pad, pad_len);
  fprintf(out,
          "--r--\r\n\r\n--a--\r\n\r\n"
          "--m\r\nContent-Type: message/rfc822\r\n\r\n%s\r\n"
          "--m\r\nContent-Type: text/plain; charset=utf-8; name=n.txt\r\n"
          "Content-Disposition: attachment; filename=n.txt\r\n"
          "Content-Transfer-Encoding: 8bit\r\n\r\n%s\r\n--m--\r\n",
          fwd, eight);
  fclose(out);
  path = file_write(msg, len);

  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_LARGE);
  body = json_object_get(res.request, "body");
  assert_string_equal(json_string_value(json_object_get(body, "contentType")),
                      "html");
  assert_string_equal(json_string_value(json_object_get(body, "content")),
                      "<p>logo</p>\r\n<img src=\"cid:logo@x\">");
  assert_int_equal(res.nparts, 3);
  assert_true(res.parts[0].is_inline);
  assert_string_equal(res.parts[0].content_id, "logo@x");
  assert_string_equal(res.parts[0].content_type, "image/png");
  expect_extracted(path, &res.parts[0], pad, pad_len);
  assert_string_equal(res.parts[1].name, "message.eml");
  assert_false(res.parts[1].is_inline);
  expect_extracted(path, &res.parts[1], fwd, strlen(fwd));
  assert_string_equal(res.parts[2].name, "n.txt");
  expect_extracted(path, &res.parts[2], eight, strlen(eight));
  mime_graph_result_free(&res);
  unlink(path);
  free(path);
  free(msg);
  free(pad);
}

static const char reply_msg[]
    = "From: linked@nextal.example\r\nTo: ada@example.org\r\n"
      "Subject: Re: Interview\r\nMessage-ID: <r2@nextal.example>\r\n"
      "In-Reply-To: <r1@example.org>\r\nReferences: <r1@example.org>\r\n"
      "\r\nSee you then.\r\n";

/* A reply keeps its threading headers through the MIME form, with
 * envelope-only recipients added as a Bcc line; a header receiver the
 * envelope lacks, or a From that is not the user, forces the JSON form. */
static void test_file_reply_form(void **state)
{
  const char *one[] = { "ada@example.org" };
  const char *two[] = { "ada@example.org", "hidden@example.org" };
  const char *other[] = { "bob@example.org" };
  struct mime_graph_envelope env = { SENDER, one, 1, NULL };
  struct mime_graph_result res;
  char *path = file_write(reply_msg, strlen(reply_msg)), *body = NULL;
  gnutls_datum_t in, raw = { NULL, 0 };
  size_t len;

  (void) state;
  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_MIME);
  assert_null(res.mime_bcc);
  mime_graph_result_free(&res);

  env.rcpts = two;
  env.nrcpts = 2;
  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_MIME);
  assert_string_equal(res.mime_bcc, "hidden@example.org");
  assert_int_equal(mime_graph_mime_body(path, &res, &body, &len), 0);
  in = (gnutls_datum_t){ (unsigned char *) body, (unsigned) len };
  assert_int_equal(gnutls_base64_decode2(&in, &raw), 0);
  assert_int_equal(raw.size, strlen(reply_msg) + 25);
  assert_memory_equal(raw.data, "Bcc: hidden@example.org\r\nFrom", 29);
  gnutls_free(raw.data);
  free(body);
  mime_graph_result_free(&res);

  env.rcpts = other;
  env.nrcpts = 1;
  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_JSON);
  assert_true(res.wants_mime);
  assert_false(res.mime_safe);
  mime_graph_result_free(&res);
  unlink(path);

  /* A spool file that cannot be read is our failure, told apart from the
   * message's own. */
  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_EIO);
  assert_non_null(strstr(res.error, "unreadable"));
  mime_graph_result_free(&res);
  free(path);
}

/* A message without a Message-ID takes the one the envelope gives, in
 * the JSON request and as a header the MIME form prepends; a message with
 * one keeps its own. */
static void test_given_message_id(void **state)
{
  static const char bare[]
      = "From: linked@nextal.example\r\nTo: ada@example.org\r\n"
        "Subject: Re: Interview\r\nIn-Reply-To: <r1@example.org>\r\n"
        "\r\nSee you then.\r\n";
  const char *one[] = { "ada@example.org" };
  struct mime_graph_envelope env = { SENDER, one, 1, "Q1@nextal.example" };
  struct mime_graph_result res;
  char *path = file_write(bare, strlen(bare)), *body = NULL;
  gnutls_datum_t in, raw = { NULL, 0 };
  size_t len;

  (void) state;
  assert_int_equal(mime_to_graph(bare, strlen(bare), &env, &res),
                   MIME_GRAPH_OK);
  assert_string_equal(res.message_id, "Q1@nextal.example");
  assert_true(res.message_id_added);
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(res.request, "message"),
                                        "internetMessageId")),
      "<Q1@nextal.example>");
  mime_graph_result_free(&res);

  assert_int_equal(mime_to_graph_file(path, &env, &res), MIME_GRAPH_OK);
  assert_int_equal(res.form, MIME_GRAPH_FORM_MIME);
  assert_int_equal(mime_graph_mime_body(path, &res, &body, &len), 0);
  in = (gnutls_datum_t){ (unsigned char *) body, (unsigned) len };
  assert_int_equal(gnutls_base64_decode2(&in, &raw), 0);
  assert_int_equal(raw.size, strlen(bare) + 33);
  assert_memory_equal(raw.data, "Message-ID: <Q1@nextal.example>\r\nFrom", 37);
  gnutls_free(raw.data);
  free(body);
  mime_graph_result_free(&res);
  unlink(path);
  free(path);

  assert_int_equal(mime_to_graph(reply_msg, strlen(reply_msg), &env, &res),
                   MIME_GRAPH_OK);
  assert_string_equal(res.message_id, "r2@nextal.example");
  assert_false(res.message_id_added);
  mime_graph_result_free(&res);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_plain_text),
    cmocka_unit_test(test_html_inline_image),
    cmocka_unit_test(test_attachments),
    cmocka_unit_test(test_non_ascii_headers),
    cmocka_unit_test(test_alternative_sends_html_only),
    cmocka_unit_test(test_bcc_from_envelope),
    cmocka_unit_test(test_header_not_in_envelope_dropped),
    cmocka_unit_test(test_custom_headers),
    cmocka_unit_test(test_attachment_names),
    cmocka_unit_test(test_latin1_without_label),
    cmocka_unit_test(test_long_line),
    cmocka_unit_test(test_from_other_user_becomes_reply_to),
    cmocka_unit_test(test_malformed_input),
    cmocka_unit_test(test_too_big),
    cmocka_unit_test(test_file_large_form),
    cmocka_unit_test(test_file_large_form_nested),
    cmocka_unit_test(test_file_reply_form),
    cmocka_unit_test(test_given_message_id),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
