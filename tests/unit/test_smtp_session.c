/* SPDX-License-Identifier: MIT */
/* Unit tests for smtp_session: the replies a client sees, the bytes the
 * owner receives and the callbacks it gets, fed through fake ops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_session.h"

#define HOST "mx.example.test"
#define GREETING "220 " HOST " ESMTP nextal-agent ready\r\n"
/* "\0svc\0secret" and friends, base64. */
#define PLAIN_GOOD "AHN2YwBzZWNyZXQ="
#define PLAIN_BAD "AHN2YwB3cm9uZw=="
#define PLAIN_AUTHZID "b3RoZXIAc3ZjAHNlY3JldA=="
#define B64_SVC "c3Zj"
#define B64_SECRET "c2VjcmV0"

/* What the fake owner saw. */
struct fake {
  struct smtp_session *s;
  char *replies; /* every reply since the last take */
  size_t rlen;
  char *data; /* bytes given to data_write in this message */
  size_t dlen;
  unsigned writes, opens, closes, aborts, data_closes, auths;
  int service_rc, sender_rc, open_rc, write_rc;
  char last_sender[300];
  char env_from[300];
  char env_rcpts[1024]; /* recipients joined by spaces */
  char env_helo[100], env_user[100];
  uint64_t env_size;
  bool done_inside_close; /* answer data_close at once */
};

static void fake_reply(void *ctx, const char *text, size_t len)
{
  struct fake *f = ctx;

  f->replies = realloc(f->replies, f->rlen + len + 1);
  memcpy(f->replies + f->rlen, text, len);
  f->rlen += len;
  f->replies[f->rlen] = '\0';
}

static int fake_authenticate(void *ctx, const char *user, const char *pass)
{
  struct fake *f = ctx;

  f->auths++;
  return strcmp(user, "svc") == 0 && strcmp(pass, "secret") == 0 ? 0 : -EACCES;
}

static int fake_check_service(void *ctx, char *reason, size_t len)
{
  struct fake *f = ctx;

  if (f->service_rc < 0)
    snprintf(reason, len, "The organisation has switched off sending");
  return f->service_rc;
}

static int fake_check_sender(void *ctx, const char *address, char *reason,
                             size_t len)
{
  struct fake *f = ctx;

  snprintf(f->last_sender, sizeof(f->last_sender), "%s", address);
  if (f->sender_rc < 0)
    snprintf(reason, len, "Sender is not a linked user\r\n250 forged");
  return f->sender_rc;
}

static int fake_data_open(void *ctx)
{
  struct fake *f = ctx;

  f->opens++;
  free(f->data);
  f->data = NULL;
  f->dlen = 0;
  return f->open_rc;
}

static int fake_data_write(void *ctx, const char *buf, size_t len)
{
  struct fake *f = ctx;

  assert_true(len > 0);
  f->writes++;
  f->data = realloc(f->data, f->dlen + len + 1);
  memcpy(f->data + f->dlen, buf, len);
  f->dlen += len;
  f->data[f->dlen] = '\0';
  return f->write_rc;
}

static void fake_data_close(void *ctx, const struct smtp_envelope *env)
{
  struct fake *f = ctx;
  size_t off = 0;

  f->data_closes++;
  snprintf(f->env_from, sizeof(f->env_from), "%s", env->mail_from);
  snprintf(f->env_helo, sizeof(f->env_helo), "%s", env->helo);
  snprintf(f->env_user, sizeof(f->env_user), "%s", env->auth_user);
  f->env_rcpts[0] = '\0';
  for (size_t i = 0; i < env->nrcpts; i++)
    off += (size_t) snprintf(f->env_rcpts + off, sizeof(f->env_rcpts) - off,
                             "%s%s", i > 0 ? " " : "", env->rcpts[i]);
  f->env_size = env->size;
  if (f->done_inside_close)
    smtp_session_data_done(f->s, 250, "2.0.0", "Q1");
}

static void fake_data_abort(void *ctx)
{
  struct fake *f = ctx;

  f->aborts++;
}

static void fake_close(void *ctx)
{
  struct fake *f = ctx;

  f->closes++;
}

static const struct smtp_session_ops fake_ops = {
  .reply = fake_reply,
  .authenticate = fake_authenticate,
  .check_service = fake_check_service,
  .check_sender = fake_check_sender,
  .data_open = fake_data_open,
  .data_write = fake_data_write,
  .data_close = fake_data_close,
  .data_abort = fake_data_abort,
  .close = fake_close,
};

static struct smtp_limits fake_limits = {
  .max_message_size = 100000,
  .max_recipients = 3,
  .max_commands = 20,
};

static void fake_open(struct fake *f, bool secure)
{
  memset(f, 0, sizeof(*f));
  f->s = smtp_session_new("c1", HOST, secure, &fake_limits, &fake_ops, f);
  smtp_session_start(f->s);
}

static void fake_free(struct fake *f)
{
  smtp_session_free(f->s);
  free(f->replies);
  free(f->data);
}

/* Returns the replies gathered so far (a static copy) and forgets them. */
static const char *fake_take(struct fake *f)
{
  static char buf[65536];

  snprintf(buf, sizeof(buf), "%s", f->replies != NULL ? f->replies : "");
  f->rlen = 0;
  if (f->replies != NULL)
    f->replies[0] = '\0';
  return buf;
}

static int fake_feed(struct fake *f, const char *text)
{
  return smtp_session_feed(f->s, text, strlen(text));
}

/* Feeds text and checks the complete answer to it. */
static void fake_expect(struct fake *f, const char *text, const char *replies)
{
  fake_feed(f, text);
  assert_string_equal(fake_take(f), replies);
}

/* A secure session after EHLO and a good AUTH, replies taken. */
static void fake_open_authed(struct fake *f)
{
  fake_open(f, true);
  fake_feed(f, "EHLO client.test\r\nAUTH PLAIN " PLAIN_GOOD "\r\n");
  assert_non_null(strstr(fake_take(f), "235 2.7.0"));
}

/* An authenticated session with an open transaction for one recipient. */
static void fake_open_rcpt(struct fake *f)
{
  fake_open_authed(f);
  fake_expect(f, "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<bob@ext.test>\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n");
}

/* ---- Greeting, EHLO, small commands ---- */

static void test_greeting(void **state)
{
  struct fake f;

  fake_open(&f, false);
  assert_string_equal(fake_take(&f), GREETING);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_CONNECTED);
  fake_free(&f);
}

static void test_ehlo_secure(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_take(&f);
  fake_expect(&f, "ehlo client.test\r\n",
              "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
              "250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n"
              "250 ENHANCEDSTATUSCODES\r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);
  fake_free(&f);
}

static void test_ehlo_insecure_hides_auth(void **state)
{
  struct fake f;

  fake_open(&f, false);
  fake_take(&f);
  fake_expect(&f, "EHLO client.test\r\n",
              "250-" HOST "\r\n250-PIPELINING\r\n250-SIZE 100000\r\n"
              "250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n");
  fake_expect(&f, "EHLO\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
  fake_expect(&f, "HELO client.test\r\n", "250 " HOST "\r\n");
  fake_free(&f);
}

static void test_small_commands(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_take(&f);
  fake_expect(&f, "NOOP\r\n", "250 2.0.0 Ok\r\n");
  fake_expect(&f, "vrfy bob\r\n",
              "252 2.5.0 Cannot VRFY user, but will accept message and "
              "attempt delivery\r\n");
  fake_expect(&f, "EXPN staff\r\n", "502 5.5.1 Command not implemented\r\n");
  fake_expect(&f, "STARTTLS\r\n", "502 5.5.1 Command not implemented\r\n");
  fake_expect(&f, "FROB\r\n", "500 5.5.2 Command not recognized\r\n");
  fake_expect(&f, "\r\n", "500 5.5.2 Command not recognized\r\n");
  fake_feed(&f, "HELP\r\n");
  assert_non_null(strstr(fake_take(&f), "214 2.0.0 Commands: "));
  fake_free(&f);
}

/* ---- AUTH ---- */

static void test_auth_plain_inline(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "auth plain " PLAIN_GOOD "\r\n",
              "235 2.7.0 Authentication successful\r\n");
  assert_int_equal(f.auths, 1);
  fake_expect(&f, "AUTH PLAIN " PLAIN_GOOD "\r\n",
              "503 5.5.1 Already authenticated\r\n");
  fake_free(&f);
}

static void test_auth_plain_continuation(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH PLAIN\r\n", "334 \r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_AUTH_PLAIN);
  fake_expect(&f, PLAIN_GOOD "\r\n", "235 2.7.0 Authentication successful\r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\n", "250 2.1.0 Sender ok\r\n");
  fake_free(&f);
}

static void test_auth_login(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n");
  fake_expect(&f, B64_SVC "\r\n", "334 UGFzc3dvcmQ6\r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_AUTH_LOGIN_PASS);
  fake_expect(&f, B64_SECRET "\r\n", "235 2.7.0 Authentication successful\r\n");
  fake_free(&f);

  /* The user name may come as an initial response. */
  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH LOGIN " B64_SVC "\r\n", "334 UGFzc3dvcmQ6\r\n");
  fake_expect(&f, B64_SECRET "\r\n", "235 2.7.0 Authentication successful\r\n");
  fake_free(&f);
}

static void test_auth_bad_password(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH PLAIN " PLAIN_BAD "\r\n",
              "535 5.7.8 Authentication credentials invalid\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\n",
              "530 5.7.0 Authentication required\r\n");

  /* Someone else's authorisation identity fails the same way. */
  fake_expect(&f, "AUTH PLAIN " PLAIN_AUTHZID "\r\n",
              "535 5.7.8 Authentication credentials invalid\r\n");
  fake_expect(&f, "AUTH LOGIN\r\n" B64_SVC "\r\nd3Jvbmc=\r\n",
              "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
              "535 5.7.8 Authentication credentials invalid\r\n");

  /* A later attempt may still succeed. */
  fake_expect(&f, "AUTH PLAIN " PLAIN_GOOD "\r\n",
              "235 2.7.0 Authentication successful\r\n");
  fake_free(&f);
}

static void test_auth_cancel_and_garbage(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH PLAIN\r\n*\r\n",
              "334 \r\n501 5.0.0 Authentication cancelled\r\n");
  fake_expect(&f, "AUTH LOGIN\r\n" B64_SVC "\r\n*\r\n",
              "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n"
              "501 5.0.0 Authentication cancelled\r\n");
  fake_expect(&f, "AUTH PLAIN !!notbase64\r\n",
              "501 5.5.2 Cannot decode response\r\n");
  fake_expect(&f, "AUTH PLAIN c3Zj\r\n",
              "501 5.5.2 Cannot decode response\r\n");
  fake_expect(&f, "AUTH CRAM-MD5\r\n",
              "504 5.5.4 Unrecognized authentication type\r\n");
  assert_int_equal(f.auths, 0);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);
  fake_free(&f);
}

static void test_auth_needs_security_and_ehlo(void **state)
{
  struct fake f;

  fake_open(&f, false);
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "AUTH PLAIN " PLAIN_GOOD "\r\n",
              "538 5.7.11 Encryption required for requested authentication "
              "mechanism\r\n");
  assert_int_equal(f.auths, 0);
  fake_free(&f);

  fake_open(&f, true);
  fake_take(&f);
  fake_expect(&f, "AUTH PLAIN " PLAIN_GOOD "\r\n",
              "503 5.5.1 Send EHLO first\r\n");
  fake_free(&f);
}

/* ---- MAIL and RCPT ---- */

static void test_mail_without_auth(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_take(&f);
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\n",
              "530 5.7.0 Authentication required\r\n");
  fake_feed(&f, "EHLO client.test\r\n");
  fake_take(&f);
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\n",
              "530 5.7.0 Authentication required\r\n");
  assert_string_equal(f.last_sender, "");
  fake_free(&f);
}

static void test_mail_sender_refused(void **state)
{
  struct fake f;

  fake_open_authed(&f);
  f.sender_rc = -EPERM;

  /* The reason's CRLF must not forge a second reply line. */
  fake_expect(&f, "MAIL FROM:<eve@corp.test>\r\n",
              "550 5.7.1 Sender is not a linked user  250 forged\r\n");
  assert_string_equal(f.last_sender, "eve@corp.test");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);
  fake_expect(&f, "RCPT TO:<bob@ext.test>\r\n",
              "503 5.5.1 Need MAIL command\r\n");
  fake_free(&f);
}

static void test_mail_syntax_and_params(void **state)
{
  struct fake f;
  char line[400];

  fake_open_authed(&f);
  fake_expect(&f, "MAIL FROM:<>\r\n",
              "550 5.7.1 A linked user must be the sender\r\n");
  fake_expect(&f, "MAIL FROM:ann@corp.test\r\n",
              "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  fake_expect(&f, "MAIL TO:<ann@corp.test>\r\n",
              "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
  fake_expect(&f, "MAIL FROM:<ann@@corp>\r\n",
              "501 5.1.7 Bad sender address syntax\r\n");
  fake_expect(&f, "MAIL FROM:<ann.@corp.test>\r\n",
              "501 5.1.7 Bad sender address syntax\r\n");
  snprintf(line, sizeof(line), "MAIL FROM:<%0260d@corp.test>\r\n", 0);
  fake_expect(&f, line, "501 5.1.7 Bad sender address syntax\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SIZE=100001\r\n",
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
  /* Beyond 64 bits is still a number, and over the limit. */
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SIZE=99999999999999999999999\r\n",
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SIZE=12x\r\n",
              "501 5.5.4 Invalid SIZE parameter\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SIZE=-1\r\n",
              "501 5.5.4 Invalid SIZE parameter\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SIZE=\r\n",
              "501 5.5.4 Invalid SIZE parameter\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> SMTPUTF8\r\n",
              "555 5.5.4 SMTPUTF8 is not supported\r\n");
  fake_expect(&f, "MAIL FROM:<ann\xc3\xa9@corp.test>\r\n",
              "553 5.6.7 Non-ASCII addresses are not supported here (no "
              "SMTPUTF8)\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> RET=HDRS\r\n",
              "555 5.5.4 Unsupported parameter\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test> BODY=BINARYMIME\r\n",
              "555 5.5.4 Unsupported parameter\r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);

  fake_expect(&f,
              "mail from: <ann@corp.test> SIZE=100000 body=8bitmime "
              "AUTH=<>\r\n",
              "250 2.1.0 Sender ok\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\n",
              "503 5.5.1 Nested MAIL command\r\n");
  fake_expect(&f, "RCPT TO:<bob>\r\n",
              "501 5.1.3 Bad destination mailbox address syntax\r\n");
  fake_expect(&f, "RCPT TO:<bob@-ext.test>\r\n",
              "501 5.1.3 Bad destination mailbox address syntax\r\n");
  fake_expect(&f, "RCPT TO:<bob@ext.test> NOTIFY=NEVER\r\n",
              "555 5.5.4 Unsupported parameter\r\n");
  /* Valid syntax, but not an address Graph can send to. */
  fake_expect(&f, "rcpt to:<\"b b\"@[192.0.2.1]>\r\n",
              "553 5.1.3 Graph cannot send to a quoted local part\r\n");
  fake_free(&f);
}

static void test_rcpt_limit_and_duplicates(void **state)
{
  struct fake f;

  fake_open_rcpt(&f);
  fake_expect(&f,
              "RCPT TO:<BOB@ext.test>\r\nRCPT TO:<c@ext.test>\r\n"
              "RCPT TO:<d@ext.test>\r\nRCPT TO:<e@ext.test>\r\n"
              "RCPT TO:<c@ext.test>\r\n",
              "250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n"
              "250 2.1.5 Recipient ok\r\n452 4.5.3 Too many recipients\r\n"
              "250 2.1.5 Recipient ok\r\n");
  f.done_inside_close = true;
  fake_expect(&f, "DATA\r\nhi\r\n.\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued as Q1\r\n");
  assert_string_equal(f.env_rcpts, "bob@ext.test c@ext.test d@ext.test");
  fake_free(&f);
}

static void test_pipelined_refused_recipient(void **state)
{
  struct fake f;

  fake_open_authed(&f);
  fake_expect(&f,
              "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<bob@ext.test>\r\n"
              "RCPT TO:<not an address>\r\nRCPT TO:<cy@ext.test>\r\n"
              "DATA\r\nHello\r\n.\r\nQUIT\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
              "501 5.1.3 Bad destination mailbox address syntax\r\n"
              "250 2.1.5 Recipient ok\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n");

  /* QUIT waits for the commit. */
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_COMMITTING);
  assert_int_equal(f.closes, 0);
  assert_string_equal(f.env_from, "ann@corp.test");
  assert_string_equal(f.env_rcpts, "bob@ext.test cy@ext.test");
  assert_string_equal(f.env_helo, "client.test");
  assert_string_equal(f.env_user, "svc");
  assert_int_equal(f.env_size, 7);
  assert_string_equal(f.data, "Hello\r\n");

  smtp_session_data_done(f.s, 250, "2.0.0", "Q42");
  assert_string_equal(fake_take(&f),
                      "250 2.0.0 Ok: queued as Q42\r\n221 2.0.0 Bye\r\n");
  assert_int_equal(f.closes, 1);
  fake_free(&f);
}

/* Recipients valid in SMTP but not to Graph are refused at RCPT, not with
 * the whole message after DATA; a source route is accepted and ignored
 * (RFC 5321 3.6.1, C). */
static void test_rcpt_graph_cannot_address(void **state)
{
  struct fake f;

  fake_open_authed(&f);
  fake_expect(&f,
              "MAIL FROM:<ann@corp.test>\r\n"
              "RCPT TO:<\"a b\"@example.net>\r\n"
              "RCPT TO:<a@[127.0.0.1]>\r\n"
              "RCPT TO:<@route.test:a@example.net>\r\n"
              "RCPT TO:<@r1.test,@r2.test:b@example.net>\r\n"
              "DATA\r\nHello\r\n.\r\n",
              "250 2.1.0 Sender ok\r\n"
              "553 5.1.3 Graph cannot send to a quoted local part\r\n"
              "553 5.1.3 Graph cannot send to an address literal\r\n"
              "250 2.1.5 Recipient ok\r\n250 2.1.5 Recipient ok\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n");
  assert_string_equal(f.env_rcpts, "a@example.net b@example.net");
  smtp_session_data_done(f.s, 250, "2.0.0", "Q1");
  fake_free(&f);
}

static void test_data_without_valid_recipients(void **state)
{
  struct fake f;

  fake_open_authed(&f);
  fake_expect(&f, "DATA\r\n", "503 5.5.1 Need MAIL command\r\n");
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\nDATA\r\n",
              "250 2.1.0 Sender ok\r\n503 5.5.1 Need RCPT command\r\n");
  fake_expect(&f, "RCPT TO:<x>\r\nDATA\r\n",
              "501 5.1.3 Bad destination mailbox address syntax\r\n"
              "554 5.5.1 No valid recipients\r\n");
  assert_int_equal(f.opens, 0);

  /* RSET forgets the transaction and its refusals. */
  fake_expect(&f, "RSET\r\nDATA\r\n",
              "250 2.0.0 Ok\r\n503 5.5.1 Need MAIL command\r\n");
  fake_free(&f);
}

/* ---- DATA ---- */

/* Sends DATA, then input cut at the given offsets, then "NOOP"; checks
 * what the owner received and the replies. */
static void data_run(const char *input, const size_t *cuts, size_t ncuts,
                     const char *expected)
{
  struct fake f;
  size_t len = strlen(input), at = 0;

  fake_open_rcpt(&f);
  f.done_inside_close = true;
  fake_expect(&f, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : len;

    assert_int_equal(smtp_session_feed(f.s, input + at, end - at), 0);
    at = end;
  }
  fake_feed(&f, "NOOP\r\n");
  assert_string_equal(fake_take(&f),
                      "250 2.0.0 Ok: queued as Q1\r\n250 2.0.0 Ok\r\n");
  assert_int_equal(f.data_closes, 1);
  assert_int_equal(f.dlen, strlen(expected));
  assert_memory_equal(f.data != NULL ? f.data : "", expected, f.dlen);
  assert_int_equal(f.env_size, strlen(expected));
  fake_free(&f);
}

static const char data_input[] = "Subject: x\r\n\r\n..dot\r\n.x\r\nbare\n.\n"
                                 "cr\r.\r\n\r\nlast\r\n.\r\n";
static const char data_expected[] = "Subject: x\r\n\r\n.dot\r\nx\r\nbare\n.\n"
                                    "cr\r.\r\n\r\nlast\r\n";

static void test_data_split_everywhere(void **state)
{
  size_t len = strlen(data_input);
  size_t cuts[2];

  for (cuts[0] = 0; cuts[0] <= len; cuts[0]++) {
    for (cuts[1] = cuts[0]; cuts[1] <= len; cuts[1]++)
      data_run(data_input, cuts, 2, data_expected);
  }
}

static void test_data_byte_by_byte(void **state)
{
  size_t len = strlen(data_input);
  size_t *cuts = calloc(len, sizeof(*cuts));

  for (size_t i = 0; i < len; i++)
    cuts[i] = i + 1;
  data_run(data_input, cuts, len, data_expected);
  free(cuts);
}

static void test_data_first_line(void **state)
{
  /* The data begins after an implicit CRLF. */
  data_run(".\r\n", NULL, 0, "");
  data_run("..\r\n.\r\n", NULL, 0, ".\r\n");
  data_run("..From\r\n.\r\n", NULL, 0, ".From\r\n");
  data_run(".x\r\n.\r\n", NULL, 0, "x\r\n");
  data_run(".\rx\r\n.\r\n", NULL, 0, "\rx\r\n");
}

static void test_data_bare_lf_and_cr(void **state)
{
  data_run(".\n.\r\n.\r\n", NULL, 0, "\n.\r\n");
  data_run("a\n.\n\r\n.\r\n", NULL, 0, "a\n.\n\r\n");
  data_run("a\r.\r\n.\r\n", NULL, 0, "a\r.\r\n");
  data_run("a\n.\r\n.\r\n", NULL, 0, "a\n.\r\n");
  data_run("a\r\n.\r.\r\n.\r\n", NULL, 0, "a\r\n\r.\r\n");
  /* A dot stuffed after a bare LF is removed; a lone one stays. */
  data_run("a\n..b\r\n.\r\n", NULL, 0, "a\n.b\r\n");
  data_run("a\n.b\n...\r\n.\r\n", NULL, 0, "a\n.b\n..\r\n");
  data_run("a\n.\n.\r\n.\r\n", NULL, 0, "a\n.\n.\r\n");
}

static void test_data_long_line_streams(void **state)
{
  char *input = malloc(5000 + 8);
  char *expected = malloc(5000 + 8);
  struct fake f;

  memset(input, 'a', 5000);
  memcpy(input + 5000, "\r\n.\r\n", 6);
  memcpy(expected, input, 5002);
  expected[5002] = '\0';
  data_run(input, NULL, 0, expected);

  /* The bytes go out before the end of data arrives. */
  fake_open_rcpt(&f);
  fake_feed(&f, "DATA\r\n");
  smtp_session_feed(f.s, input, 5000);
  assert_int_equal(f.dlen, 5000);
  assert_true(f.writes >= 2);
  assert_int_equal(f.data_closes, 0);
  fake_free(&f);
  assert_int_equal(f.aborts, 1);
  free(input);
  free(expected);
}

static void test_data_size_exceeded(void **state)
{
  struct smtp_limits saved = fake_limits;
  struct fake f;

  fake_limits.max_message_size = 10;
  fake_open_rcpt(&f);
  fake_feed(&f, "DATA\r\n");
  fake_take(&f);
  fake_feed(&f, "0123456789\r\n");
  fake_feed(&f, "more text that goes beyond the limit\r\n");
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_DATA);
  fake_expect(&f, ".\r\nNOOP\r\n",
              "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
              "250 2.0.0 Ok\r\n");
  assert_int_equal(f.aborts, 1);
  assert_int_equal(f.data_closes, 0);
  assert_true(f.dlen <= 10);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_READY);

  /* Exactly at the limit is fine. */
  f.done_inside_close = true;
  fake_expect(&f,
              "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<b@ext.test>\r\n"
              "DATA\r\n01234567\r\n.\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "250 2.0.0 Ok: queued as Q1\r\n");
  assert_string_equal(f.data, "01234567\r\n");
  fake_free(&f);
  fake_limits = saved;
}

static void test_data_open_and_write_failures(void **state)
{
  struct fake f;

  fake_open_rcpt(&f);
  f.open_rc = -EIO;
  fake_expect(&f, "DATA\r\n", "451 4.3.0 Cannot accept message now\r\n");
  f.open_rc = 0;
  f.write_rc = -EIO;
  fake_expect(&f, "DATA\r\nabc\r\n.\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "451 4.3.0 Cannot accept message now\r\n");
  assert_int_equal(f.aborts, 1);
  /* A full spool is said as such (RFC 3463 4.3.1). */
  f.write_rc = -ENOSPC;
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<bob@ext.test>\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n");
  fake_expect(&f, "DATA\r\nabc\r\n.\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n"
              "452 4.3.1 Insufficient system storage\r\n");
  assert_int_equal(f.aborts, 2);
  assert_int_equal(f.data_closes, 0);
  fake_free(&f);
}

static void test_data_done_failure_and_next_message(void **state)
{
  struct fake f;

  fake_open_rcpt(&f);
  fake_expect(&f, "DATA\r\nx\r\n.\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n");
  smtp_session_data_done(f.s, 451, "4.3.0", "Queue unavailable");
  assert_string_equal(fake_take(&f), "451 4.3.0 Queue unavailable\r\n");
  fake_expect(&f, "RCPT TO:<b@ext.test>\r\n",
              "503 5.5.1 Need MAIL command\r\n");

  /* A second message, pipelined while the first one commits. */
  fake_expect(&f,
              "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<b@ext.test>\r\n"
              "DATA\r\none\r\n.\r\nMAIL FROM:<ann@corp.test>\r\n"
              "RCPT TO:<c@ext.test>\r\nDATA\r\ntwo\r\n.\r\nNOOP\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
              "354 End data with <CR><LF>.<CR><LF>\r\n");
  assert_string_equal(f.data, "one\r\n");
  smtp_session_data_done(f.s, 250, "2.0.0", "A");
  assert_string_equal(fake_take(&f),
                      "250 2.0.0 Ok: queued as A\r\n250 2.1.0 Sender ok\r\n"
                      "250 2.1.5 Recipient ok\r\n"
                      "354 End data with <CR><LF>.<CR><LF>\r\n");
  assert_string_equal(f.data, "two\r\n");
  assert_string_equal(f.env_rcpts, "c@ext.test");
  smtp_session_data_done(f.s, 250, "2.0.0", "B");
  assert_string_equal(fake_take(&f),
                      "250 2.0.0 Ok: queued as B\r\n250 2.0.0 Ok\r\n");
  fake_free(&f);
}

static void test_pipeline_buffer_limit(void **state)
{
  struct fake f;
  char *noise = malloc(SMTP_PIPELINE_BUFFER_MAX);

  memset(noise, 'n', SMTP_PIPELINE_BUFFER_MAX);
  fake_open_rcpt(&f);
  fake_feed(&f, "DATA\r\nx\r\n.\r\nNOOP\r\n");
  fake_take(&f);
  assert_int_equal(smtp_session_feed(f.s, noise, SMTP_PIPELINE_BUFFER_MAX),
                   -EPIPE);
  assert_string_equal(fake_take(&f),
                      "421 4.5.0 Too much pipelined input, closing\r\n");
  assert_int_equal(f.closes, 1);
  assert_int_equal(f.aborts, 0); /* the owner holds the commit */

  /* The commit completing later finds a closed session. */
  smtp_session_data_done(f.s, 250, "2.0.0", "Q");
  assert_string_equal(fake_take(&f), "");
  fake_free(&f);
  free(noise);
}

/* ---- Limits, service switch, ending ---- */

static void test_line_too_long(void **state)
{
  struct fake f;
  char line[SMTP_COMMAND_LINE_MAX + 16];

  fake_open(&f, true);
  fake_take(&f);

  /* 512 bytes with CRLF is the longest line. */
  memset(line, ' ', sizeof(line));
  memcpy(line, "NOOP", 4);
  memcpy(line + SMTP_COMMAND_LINE_MAX - 2, "\r\n", 3);
  fake_expect(&f, line, "250 2.0.0 Ok\r\n");
  memcpy(line + SMTP_COMMAND_LINE_MAX - 1, "\r\n", 3);
  fake_expect(&f, line, "500 5.5.2 Line too long\r\n");

  /* The tail of a long line is not a command, even split up. */
  memset(line, 'x', sizeof(line));
  smtp_session_feed(f.s, line, 300);
  fake_feed(&f, "QUIT\r");
  smtp_session_feed(f.s, line, 230);
  fake_expect(&f, "QUIT\r\nNOOP\r\n",
              "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
  assert_int_equal(f.closes, 0);
  fake_free(&f);
}

static void test_command_limit(void **state)
{
  struct smtp_limits saved = fake_limits;
  struct fake f;

  fake_limits.max_commands = 4;
  fake_open(&f, true);
  fake_take(&f);

  /* EHLO and AUTH count; a completed transaction starts afresh. */
  f.done_inside_close = true;
  fake_feed(&f, "EHLO c.test\r\nAUTH PLAIN " PLAIN_GOOD "\r\nNOOP\r\n"
                "MAIL FROM:<a@corp.test>\r\nRCPT TO:<b@ext.test>\r\n"
                "DATA\r\nx\r\n.\r\n");
  fake_take(&f);
  fake_expect(&f, "NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n",
              "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"
              "250 2.0.0 Ok\r\n");
  assert_int_equal(fake_feed(&f, "NOOP\r\nNOOP\r\n"), -EPIPE);
  assert_string_equal(fake_take(&f),
                      "421 4.7.0 Too many commands, closing connection\r\n");
  assert_int_equal(f.closes, 1);
  fake_free(&f);
  fake_limits = saved;
}

static void test_service_refused(void **state)
{
  struct fake f;

  fake_open_authed(&f);
  f.service_rc = -EPERM;
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\nNOOP\r\nRSET\r\n",
              "550 5.7.1 The organisation has switched off sending\r\n"
              "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n");
  assert_string_equal(f.last_sender, "");
  fake_expect(&f, "VRFY ann\r\n",
              "550 5.7.1 The organisation has switched off sending\r\n");
  f.service_rc = 0;
  fake_expect(&f, "MAIL FROM:<ann@corp.test>\r\nRCPT TO:<b@ext.test>\r\n",
              "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n");
  f.service_rc = -EPERM;
  fake_expect(&f, "DATA\r\n",
              "550 5.7.1 The organisation has switched off sending\r\n");
  assert_int_equal(f.opens, 0);
  fake_expect(&f, "QUIT\r\n", "221 2.0.0 Bye\r\n");
  fake_free(&f);
}

static void test_timeout(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_take(&f);
  smtp_session_timeout(f.s);
  assert_string_equal(fake_take(&f),
                      "421 4.4.2 Timeout, closing connection\r\n");
  assert_int_equal(f.closes, 1);
  assert_int_equal(f.aborts, 0);
  fake_free(&f);

  /* In data the message is dropped. */
  fake_open_rcpt(&f);
  fake_feed(&f, "DATA\r\npartial");
  fake_take(&f);
  smtp_session_timeout(f.s);
  assert_string_equal(fake_take(&f),
                      "421 4.4.2 Timeout, closing connection\r\n");
  assert_int_equal(f.aborts, 1);
  assert_int_equal(f.data_closes, 0);
  fake_free(&f);
  assert_int_equal(f.aborts, 1);
}

static void test_shutdown(void **state)
{
  struct fake f;

  fake_open_rcpt(&f);
  fake_feed(&f, "DATA\r\npartial");
  fake_take(&f);
  smtp_session_shutdown(f.s);
  assert_string_equal(fake_take(&f),
                      "421 4.3.2 Service shutting down, closing\r\n");
  assert_int_equal(f.closes, 1);
  assert_int_equal(f.aborts, 1);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_CLOSING);
  smtp_session_shutdown(f.s);
  smtp_session_timeout(f.s);
  assert_string_equal(fake_take(&f), "");
  assert_int_equal(f.closes, 1);
  fake_free(&f);
}

/* A stop while the message commits must not hide the outcome: a 421 there
 * makes the client send again a message that was queued. */
static void test_shutdown_while_committing(void **state)
{
  struct fake f;

  fake_open_rcpt(&f);
  fake_expect(&f, "DATA\r\nhi\r\n.\r\nMAIL FROM:<ann@corp.test>\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n");
  smtp_session_shutdown(f.s);
  assert_string_equal(fake_take(&f), "");
  assert_int_equal(f.closes, 0);
  assert_int_equal(f.aborts, 0);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_COMMITTING);

  /* Input after the stop is dropped, not run after the answer. */
  fake_feed(&f, "RCPT TO:<c@ext.test>\r\n");
  smtp_session_data_done(f.s, 250, "2.0.0", "Q7");
  assert_string_equal(fake_take(&f),
                      "250 2.0.0 Ok: queued as Q7\r\n"
                      "421 4.3.2 Service shutting down, closing\r\n");
  assert_int_equal(f.closes, 1);
  assert_int_equal(smtp_session_state(f.s), SMTP_STATE_CLOSING);
  fake_free(&f);

  /* A failed commit is reported the same way. */
  fake_open_rcpt(&f);
  fake_expect(&f, "DATA\r\nhi\r\n.\r\n",
              "354 End data with <CR><LF>.<CR><LF>\r\n");
  smtp_session_shutdown(f.s);
  smtp_session_data_done(f.s, 451, "4.3.0", "Queue unavailable");
  assert_string_equal(fake_take(&f),
                      "451 4.3.0 Queue unavailable\r\n"
                      "421 4.3.2 Service shutting down, closing\r\n");
  assert_int_equal(f.closes, 1);
  fake_free(&f);
}

static void test_quit_and_after_close(void **state)
{
  struct fake f;

  fake_open(&f, true);
  fake_take(&f);
  assert_int_equal(fake_feed(&f, "QUIT\r\nNOOP\r\n"), -EPIPE);
  assert_string_equal(fake_take(&f), "221 2.0.0 Bye\r\n");
  assert_int_equal(f.closes, 1);
  assert_int_equal(fake_feed(&f, "NOOP\r\n"), -EPIPE);
  assert_string_equal(fake_take(&f), "");
  assert_string_equal(smtp_state_name(smtp_session_state(f.s)), "closing");
  fake_free(&f);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_greeting),
    cmocka_unit_test(test_ehlo_secure),
    cmocka_unit_test(test_ehlo_insecure_hides_auth),
    cmocka_unit_test(test_small_commands),
    cmocka_unit_test(test_auth_plain_inline),
    cmocka_unit_test(test_auth_plain_continuation),
    cmocka_unit_test(test_auth_login),
    cmocka_unit_test(test_auth_bad_password),
    cmocka_unit_test(test_auth_cancel_and_garbage),
    cmocka_unit_test(test_auth_needs_security_and_ehlo),
    cmocka_unit_test(test_mail_without_auth),
    cmocka_unit_test(test_mail_sender_refused),
    cmocka_unit_test(test_mail_syntax_and_params),
    cmocka_unit_test(test_rcpt_limit_and_duplicates),
    cmocka_unit_test(test_pipelined_refused_recipient),
    cmocka_unit_test(test_rcpt_graph_cannot_address),
    cmocka_unit_test(test_data_without_valid_recipients),
    cmocka_unit_test(test_data_split_everywhere),
    cmocka_unit_test(test_data_byte_by_byte),
    cmocka_unit_test(test_data_first_line),
    cmocka_unit_test(test_data_bare_lf_and_cr),
    cmocka_unit_test(test_data_long_line_streams),
    cmocka_unit_test(test_data_size_exceeded),
    cmocka_unit_test(test_data_open_and_write_failures),
    cmocka_unit_test(test_data_done_failure_and_next_message),
    cmocka_unit_test(test_pipeline_buffer_limit),
    cmocka_unit_test(test_line_too_long),
    cmocka_unit_test(test_command_limit),
    cmocka_unit_test(test_service_refused),
    cmocka_unit_test(test_timeout),
    cmocka_unit_test(test_shutdown),
    cmocka_unit_test(test_shutdown_while_committing),
    cmocka_unit_test(test_quit_and_after_close),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
