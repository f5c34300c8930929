/* SPDX-License-Identifier: MIT */
/* The SMTP protocol state machine (see include/smtp_session.h): command
 * lines, AUTH, the envelope, and the DATA byte stream with dot-unstuffing
 * and end-of-data detection across arbitrary input chunks. No I/O here. */
#include "smtp_session.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>

#include "log.h"
#include "mime_to_graph.h"
#include "xalloc.h"

#define SMTP_REPLY_MAX 512   /* one reply line with CRLF, RFC 5321 4.5.3.1.5 */
#define SMTP_REASON_MAX 256  /* refusal sentence from a callback */
#define SMTP_DATA_CHUNK 4096 /* unstuffed bytes per data_write() call */
#define SMTP_LOCAL_PART_MAX 64 /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255    /* RFC 5321 4.5.3.1.2 */
#define SMTP_LABEL_MAX 63      /* RFC 1035 2.3.4 */
#define SMTP_LOG_TEXT_MAX 160  /* escaped client text on one log line */

/* Where the data scanner stands relative to the end-of-data sequence. The
 * CRLF before the final "." ends the last line and is message data, so
 * only ".CRLF" at the start of a line is ever held back. */
enum smtp_scan {
  SMTP_SCAN_LINE_START, /* after CRLF, or right after the 354 */
  SMTP_SCAN_DOT,        /* a "." opened the line and is held back */
  SMTP_SCAN_DOT_CR,     /* ".CR" opened the line and is held back */
  SMTP_SCAN_TEXT,       /* inside a line */
  SMTP_SCAN_CR,         /* after a CR inside a line */
  SMTP_SCAN_END,        /* ".CRLF" seen at the start of a line */
  SMTP_SCAN_LF_START,   /* after a bare LF: may begin a stuffed line */
  SMTP_SCAN_LF_DOT,     /* a "." after a bare LF is held back */
};

struct smtp_session {
  char *id;
  char *hostname;
  bool secure; /* AUTH allowed */
  struct smtp_limits limits;
  const struct smtp_session_ops *ops;
  void *ctx;
  enum smtp_state state;

  char line[SMTP_COMMAND_LINE_MAX]; /* command line being assembled */
  size_t linelen;
  bool line_overflow; /* discarding a too long line up to its LF */
  unsigned ncommands; /* lines counted against limits.max_commands */

  char *helo;
  char *auth_user;  /* NULL until AUTH succeeds */
  char *login_user; /* AUTH LOGIN: the user name while asking the password */

  char *mail_from; /* NULL outside a transaction */
  char **rcpts;
  size_t nrcpts;
  unsigned nrefused;     /* RCPT refused in this transaction (RFC 2920) */
  unsigned limit_logged; /* recipient limit already logged this time */

  enum smtp_scan scan;
  uint64_t data_size; /* message bytes after unstuffing */
  bool data_too_big;
  int data_error;            /* what data_write() refused with, or 0 */
  char out[SMTP_DATA_CHUNK]; /* unstuffed bytes not yet written */
  size_t outlen;

  char *held; /* input received while committing */
  size_t heldlen;
  bool stopping; /* shutdown while committing: answer, then 421 */
};

static const char *const smtp_state_names[] = {
  [SMTP_STATE_CONNECTED] = "connected",
  [SMTP_STATE_READY] = "ready",
  [SMTP_STATE_AUTH_PLAIN] = "auth-plain",
  [SMTP_STATE_AUTH_LOGIN_USER] = "auth-login-user",
  [SMTP_STATE_AUTH_LOGIN_PASS] = "auth-login-pass",
  [SMTP_STATE_MAIL] = "mail",
  [SMTP_STATE_RCPT] = "rcpt",
  [SMTP_STATE_DATA] = "data",
  [SMTP_STATE_COMMITTING] = "committing",
  [SMTP_STATE_CLOSING] = "closing",
};

static void smtp_session_process(struct smtp_session *s, const char *buf,
                                 size_t len);

const char *smtp_state_name(enum smtp_state state)
{
  size_t n = sizeof(smtp_state_names) / sizeof(*smtp_state_names);

  if ((size_t) state >= n || smtp_state_names[state] == NULL)
    return "unknown";
  return smtp_state_names[state];
}

enum smtp_state smtp_session_state(const struct smtp_session *s)
{
  return s->state;
}

bool smtp_session_authenticated(const struct smtp_session *s)
{
  return s->auth_user != NULL;
}

/* Every state change passes here so that a trace shows the whole story. */
static void smtp_session_enter_state(struct smtp_session *s,
                                     enum smtp_state state)
{
  assert(s->state != SMTP_STATE_CLOSING);
  if (state == s->state)
    return;
  log_trace(LOG_TRACE_SMTP, "%s smtp state from=%s to=%s", s->id,
            smtp_state_name(s->state), smtp_state_name(state));
  s->state = state;
}

/* Escapes client text for one log line; returns buf. */
static char *smtp_log_text(char buf[SMTP_LOG_TEXT_MAX], const char *text)
{
  return log_escape(buf, SMTP_LOG_TEXT_MAX, text, strlen(text));
}

/* ---- Replies ---- */

/* Reply text may come from callbacks; a CR or LF in it would forge a reply
 * line, so control bytes become spaces. */
static void smtp_text_sanitize(char *text)
{
  for (char *p = text; *p != '\0'; p++) {
    if ((unsigned char) *p < 0x20 || *p == 0x7f)
      *p = ' ';
  }
}

static void smtp_session_send(struct smtp_session *s, const char *text)
{
  s->ops->reply(s->ctx, text, strlen(text));
}

static void smtp_session_reply(struct smtp_session *s, int code,
                               const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sends one reply line "<code> <enhanced> <text>". enhanced is NULL only
 * for the replies RFC 2034 exempts: the greeting, HELO and the 354. */
static void smtp_session_reply(struct smtp_session *s, int code,
                               const char *enhanced, const char *fmt, ...)
{
  char text[SMTP_REPLY_MAX];
  char line[SMTP_REPLY_MAX];
  va_list ap;
  int n;

  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  smtp_text_sanitize(text);

  /* Keep the whole line, CRLF included, within the RFC reply limit. */
  if (enhanced != NULL)
    n = snprintf(line, sizeof(line) - 2, "%03d %s %s", code, enhanced, text);
  else
    n = snprintf(line, sizeof(line) - 2, "%03d %s", code, text);
  assert(n > 0);
  if ((size_t) n > sizeof(line) - 3)
    n = (int) sizeof(line) - 3;
  memcpy(line + n, "\r\n", 3);
  smtp_session_send(s, line);
}

/* ---- Closing ---- */

/* Ends the session: aborts a message being received, drops held input and
 * tells the owner to flush and close. */
static void smtp_session_close(struct smtp_session *s)
{
  if (s->state == SMTP_STATE_CLOSING)
    return;
  if (s->state == SMTP_STATE_DATA)
    s->ops->data_abort(s->ctx);
  free(s->held);
  s->held = NULL;
  s->heldlen = 0;
  smtp_session_enter_state(s, SMTP_STATE_CLOSING);
  /* The owner logs the disconnect, once, whoever ends the connection. */
  s->ops->close(s->ctx);
}

/* ---- The transaction ---- */

static void smtp_session_transaction_reset(struct smtp_session *s)
{
  for (size_t i = 0; i < s->nrcpts; i++)
    free(s->rcpts[i]);
  free(s->rcpts);
  free(s->mail_from);
  s->rcpts = NULL;
  s->nrcpts = 0;
  s->mail_from = NULL;
  s->nrefused = 0;
  s->limit_logged = 0;
}

/* Back to READY after a transaction or RSET (CONNECTED if no EHLO yet). */
static void smtp_session_transaction_end(struct smtp_session *s)
{
  smtp_session_transaction_reset(s);
  smtp_session_enter_state(s, s->helo != NULL ? SMTP_STATE_READY
                                              : SMTP_STATE_CONNECTED);
}

static bool smtp_session_has_rcpt(const struct smtp_session *s,
                                  const char *address)
{
  for (size_t i = 0; i < s->nrcpts; i++) {
    if (strcasecmp(s->rcpts[i], address) == 0)
      return true;
  }
  return false;
}

/* ---- Address syntax (RFC 5321 4.1.2, without SMTPUTF8) ---- */

static bool smtp_char_is_atext(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
         || (c >= '0' && c <= '9')
         || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* A quoted local part: printable ASCII, backslash pairs allowed. */
static bool smtp_local_quoted_valid(const char *p, size_t len)
{
  if (len < 2 || p[0] != '"' || p[len - 1] != '"')
    return false;
  for (size_t i = 1; i < len - 1; i++) {
    if (p[i] < 0x20 || p[i] > 0x7e)
      return false;
    if (p[i] == '\\' && ++i >= len - 1)
      return false;
    if (p[i] == '"' && p[i - 1] != '\\')
      return false;
  }
  return true;
}

static bool smtp_local_valid(const char *p, size_t len)
{
  if (len == 0 || len > SMTP_LOCAL_PART_MAX)
    return false;
  if (p[0] == '"')
    return smtp_local_quoted_valid(p, len);

  /* Dot-string: atoms joined by single dots. */
  if (p[0] == '.' || p[len - 1] == '.')
    return false;
  for (size_t i = 0; i < len; i++) {
    if (p[i] == '.' && p[i + 1] == '.')
      return false;
    if (p[i] != '.' && !smtp_char_is_atext(p[i]))
      return false;
  }
  return true;
}

static bool smtp_label_valid(const char *p, size_t len)
{
  if (len == 0 || len > SMTP_LABEL_MAX || p[0] == '-' || p[len - 1] == '-')
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = p[i];

    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
          || (c >= '0' && c <= '9') || c == '-'))
      return false;
  }
  return true;
}

static bool smtp_domain_valid(const char *p)
{
  size_t len = strlen(p);

  if (len == 0 || len > SMTP_DOMAIN_MAX)
    return false;

  /* An address literal is taken loosely: brackets around printable text. */
  if (p[0] == '[')
    return len > 2 && p[len - 1] == ']' && strcspn(p + 1, "[]\\ ") == len - 2;

  while (true) {
    size_t label = strcspn(p, ".");

    if (!smtp_label_valid(p, label))
      return false;
    if (p[label] == '\0')
      return true;
    p += label + 1;
  }
}

/* Non-ASCII addresses need SMTPUTF8 (RFC 6531), which is not offered:
 * such an address is refused with the code RFC 6531 section 3.5 gives. */
#define SMTP_UTF8_ADDRESS_REFUSED                                              \
  "Non-ASCII addresses are not supported here (no SMTPUTF8)"

static bool smtp_address_is_utf8(const char *address)
{
  for (const unsigned char *p = (const unsigned char *) address; *p; p++) {
    if (*p >= 0x80)
      return true;
  }
  return false;
}

/* Checks local@domain; the last "@" splits, since a quoted local part may
 * hold one. */
static bool smtp_address_valid(const char *address)
{
  const char *at = strrchr(address, '@');

  if (at == NULL || strlen(address) + 2 > SMTP_ADDRESS_MAX)
    return false;
  return smtp_local_valid(address, (size_t) (at - address))
         && smtp_domain_valid(at + 1);
}

/* Splits "<path> params" after "FROM:" or "TO:". On success *path points
 * at the address without brackets (a source route is dropped, RFC 5321
 * C) and *params at the parameters ("" when none). Returns 0 or -EINVAL. */
static int smtp_path_parse(char *arg, char **path, char **params)
{
  char *end;

  arg += strspn(arg, " ");
  if (*arg != '<')
    return -EINVAL;
  end = strchr(arg, '>');
  if (end == NULL || (end[1] != '\0' && end[1] != ' '))
    return -EINVAL;
  *end = '\0';
  *params = end + 1 + strspn(end + 1, " ");
  arg++;
  if (*arg == '@') {
    arg = strchr(arg, ':');
    if (arg == NULL)
      return -EINVAL;
    arg++;
  }
  *path = arg;
  return 0;
}

/* Returns the argument after a case-insensitive keyword such as "FROM:",
 * or NULL when it is missing. */
static char *smtp_arg_after(char *args, const char *keyword)
{
  size_t n = strlen(keyword);

  if (strncasecmp(args, keyword, n) != 0)
    return NULL;
  return args + n;
}

/* ---- Limits and checks shared by commands ---- */

/* Counts one line against max_commands; at the limit answers 421 and
 * closes. Returns 0, or -1 when the session closed. */
static int smtp_session_count(struct smtp_session *s)
{
  if (++s->ncommands <= s->limits.max_commands)
    return 0;
  log_warn("%s smtp command limit reached limit=%u", s->id,
           s->limits.max_commands);
  smtp_session_reply(s, 421, "4.7.0", "Too many commands, closing connection");
  smtp_session_close(s);
  return -1;
}

/* The organisation switch. Returns 0, or -1 after answering 550. */
static int smtp_session_check_service(struct smtp_session *s)
{
  char reason[SMTP_REASON_MAX] = "";
  char esc[SMTP_LOG_TEXT_MAX];

  if (s->ops->check_service == NULL
      || s->ops->check_service(s->ctx, reason, sizeof(reason)) == 0)
    return 0;

  reason[sizeof(reason) - 1] = '\0';
  if (reason[0] == '\0')
    snprintf(reason, sizeof(reason), "Service not available");
  log_warn("%s smtp service refused reason=\"%s\"", s->id,
           smtp_log_text(esc, reason));
  smtp_session_reply(s, 550, "5.7.1", "%s", reason);
  return -1;
}

/* ---- EHLO, HELO and the small commands ---- */

/* Takes the client's name from an EHLO/HELO argument. Returns 0, or -1
 * after answering 501. */
static int smtp_session_set_helo(struct smtp_session *s, char *args,
                                 const char *verb)
{
  size_t n = strcspn(args, " ");

  if (n == 0) {
    smtp_session_reply(s, 501, "5.5.4", "Syntax: %s hostname", verb);
    return -1;
  }
  free(s->helo);
  s->helo = xstrndup(args, n);
  smtp_session_transaction_end(s);
  return 0;
}

static void smtp_cmd_ehlo(struct smtp_session *s, char *args)
{
  char *text;

  if (smtp_session_set_helo(s, args, "EHLO") < 0)
    return;

  /* RFC 2034 exempts the EHLO reply from enhanced status codes. */
  text = xasprintf("250-%s\r\n"
                   "250-PIPELINING\r\n"
                   "250-SIZE %" PRIu64 "\r\n"
                   "250-8BITMIME\r\n"
                   "%s"
                   "250 ENHANCEDSTATUSCODES\r\n",
                   s->hostname, s->limits.max_message_size,
                   s->secure ? "250-AUTH PLAIN LOGIN\r\n" : "");
  smtp_session_send(s, text);
  free(text);
}

static void smtp_cmd_helo(struct smtp_session *s, char *args)
{
  if (smtp_session_set_helo(s, args, "HELO") < 0)
    return;
  smtp_session_reply(s, 250, NULL, "%s", s->hostname);
}

static void smtp_cmd_rset(struct smtp_session *s, char *args)
{
  smtp_session_transaction_end(s);
  smtp_session_reply(s, 250, "2.0.0", "Ok");
}

static void smtp_cmd_noop(struct smtp_session *s, char *args)
{
  smtp_session_reply(s, 250, "2.0.0", "Ok");
}

static void smtp_cmd_quit(struct smtp_session *s, char *args)
{
  smtp_session_reply(s, 221, "2.0.0", "Bye");
  smtp_session_close(s);
}

static void smtp_cmd_vrfy(struct smtp_session *s, char *args)
{
  smtp_session_reply(s, 252, "2.5.0",
                     "Cannot VRFY user, but will accept message and attempt "
                     "delivery");
}

static void smtp_cmd_help(struct smtp_session *s, char *args)
{
  smtp_session_reply(s, 214, "2.0.0",
                     "Commands: EHLO HELO AUTH MAIL RCPT DATA RSET NOOP QUIT "
                     "VRFY HELP");
}

/* EXPN, and STARTTLS which is recognised but not offered (RFC 5321 4.2.4:
 * 502 for a command not implemented). */
static void smtp_cmd_not_implemented(struct smtp_session *s, char *args)
{
  smtp_session_reply(s, 502, "5.5.1", "Command not implemented");
}

/* ---- AUTH (RFC 4954, 4616) ---- */

/* Decodes base64 client text into a new NUL-terminated string; *len gets
 * the decoded length. Returns 0 or -EINVAL. */
static int smtp_base64_decode(const char *text, char **out, size_t *len)
{
  gnutls_datum_t in = { (unsigned char *) text, (unsigned) strlen(text) };
  gnutls_datum_t res = { NULL, 0 };

  if (in.size > 0 && gnutls_base64_decode2(&in, &res) < 0)
    return -EINVAL;
  *out = xmalloc(res.size + 1);
  if (res.size > 0)
    memcpy(*out, res.data, res.size);
  (*out)[res.size] = '\0';
  *len = res.size;
  if (res.data != NULL) {
    explicit_bzero(res.data, res.size);
    gnutls_free(res.data);
  }
  return 0;
}

static void smtp_secret_free(char *secret, size_t len)
{
  if (secret == NULL)
    return;
  explicit_bzero(secret, len);
  free(secret);
}

static void smtp_auth_fail(struct smtp_session *s, const char *mech,
                           const char *user)
{
  char esc[SMTP_LOG_TEXT_MAX];

  log_warn("%s smtp auth failed mech=%s user=\"%s\"", s->id, mech,
           smtp_log_text(esc, user));
  smtp_session_reply(s, 535, "5.7.8", "Authentication credentials invalid");
}

/* Checks user and password with the owner and answers 235 or 535. */
static void smtp_auth_check(struct smtp_session *s, const char *mech,
                            const char *user, const char *password)
{
  char esc[SMTP_LOG_TEXT_MAX];

  smtp_session_enter_state(s, SMTP_STATE_READY);
  if (s->ops->authenticate(s->ctx, user, password) < 0) {
    smtp_auth_fail(s, mech, user);
    return;
  }
  s->auth_user = xstrdup(user);
  log_info("%s smtp auth ok mech=%s user=\"%s\"", s->id, mech,
           smtp_log_text(esc, user));
  smtp_session_reply(s, 235, "2.7.0", "Authentication successful");
}

/* Leaves the AUTH exchange without a result. */
static void smtp_auth_reset(struct smtp_session *s)
{
  free(s->login_user);
  s->login_user = NULL;
  smtp_session_enter_state(s, SMTP_STATE_READY);
}

static void smtp_auth_malformed(struct smtp_session *s)
{
  smtp_auth_reset(s);
  smtp_session_reply(s, 501, "5.5.2", "Cannot decode response");
}

/* Splits a PLAIN message "authzid NUL authcid NUL password". Returns 0, or
 * -EINVAL when it is not made of exactly three parts with a user. */
static int smtp_plain_split(char *buf, size_t len, char **user, char **pass)
{
  char *end = buf + len;

  *user = memchr(buf, '\0', len);
  if (*user == NULL)
    return -EINVAL;
  (*user)++;
  *pass = memchr(*user, '\0', (size_t) (end - *user));
  if (*pass == NULL)
    return -EINVAL;
  (*pass)++;
  if (memchr(*pass, '\0', (size_t) (end - *pass)) != NULL || **user == '\0')
    return -EINVAL;
  return 0;
}

/* PLAIN. We act for no one else, so an authorisation identity must be
 * empty or the user itself. */
static void smtp_auth_plain(struct smtp_session *s, const char *response)
{
  char *buf = NULL, *user, *pass;
  size_t len = 0;

  if (smtp_base64_decode(response, &buf, &len) < 0
      || smtp_plain_split(buf, len, &user, &pass) < 0) {
    smtp_auth_malformed(s);
  } else if (buf[0] != '\0' && strcmp(buf, user) != 0) {
    smtp_auth_reset(s);
    smtp_auth_fail(s, "PLAIN", user);
  } else {
    smtp_auth_check(s, "PLAIN", user, pass);
  }
  smtp_secret_free(buf, len);
}

/* LOGIN, first answer: the user name, then ask for the password. */
static void smtp_auth_login_user(struct smtp_session *s, const char *response)
{
  char *user = NULL;
  size_t len = 0;

  if (smtp_base64_decode(response, &user, &len) < 0 || len == 0
      || strlen(user) != len) {
    free(user);
    smtp_auth_malformed(s);
    return;
  }
  free(s->login_user);
  s->login_user = user;
  smtp_session_enter_state(s, SMTP_STATE_AUTH_LOGIN_PASS);
  smtp_session_send(s, "334 UGFzc3dvcmQ6\r\n");
}

static void smtp_auth_login_pass(struct smtp_session *s, const char *response)
{
  char *pass = NULL;
  size_t len = 0;

  if (smtp_base64_decode(response, &pass, &len) < 0 || strlen(pass) != len)
    smtp_auth_malformed(s);
  else
    smtp_auth_check(s, "LOGIN", s->login_user, pass);
  smtp_secret_free(pass, len);
  free(s->login_user);
  s->login_user = NULL;
}

/* A line received in one of the AUTH states: the client's response. */
static void smtp_session_auth_line(struct smtp_session *s, const char *line)
{
  enum smtp_state state = s->state;

  if (strcmp(line, "*") == 0) {
    smtp_auth_reset(s);
    smtp_session_reply(s, 501, "5.0.0", "Authentication cancelled");
    return;
  }
  if (state == SMTP_STATE_AUTH_PLAIN)
    smtp_auth_plain(s, line);
  else if (state == SMTP_STATE_AUTH_LOGIN_USER)
    smtp_auth_login_user(s, line);
  else
    smtp_auth_login_pass(s, line);
}

/* Refuses AUTH where it is out of place. Returns 0, or -1 after
 * answering. */
static int smtp_auth_allowed(struct smtp_session *s)
{
  if (!s->secure) {
    smtp_session_reply(s, 538, "5.7.11",
                       "Encryption required for requested authentication "
                       "mechanism");
  } else if (s->state == SMTP_STATE_CONNECTED) {
    smtp_session_reply(s, 503, "5.5.1", "Send EHLO first");
  } else if (s->auth_user != NULL) {
    smtp_session_reply(s, 503, "5.5.1", "Already authenticated");
  } else if (s->mail_from != NULL) {
    smtp_session_reply(s, 503, "5.5.1", "AUTH not allowed in a transaction");
  } else {
    return 0;
  }
  return -1;
}

/* AUTH <mechanism> [initial-response]; "=" is an empty initial response. */
static void smtp_cmd_auth(struct smtp_session *s, char *args)
{
  char *initial = NULL;
  size_t n = strcspn(args, " ");

  if (smtp_auth_allowed(s) < 0)
    return;
  if (args[n] == ' ') {
    args[n] = '\0';
    initial = args + n + 1 + strspn(args + n + 1, " ");
    if (strcmp(initial, "=") == 0)
      initial[0] = '\0';
  }

  if (strcasecmp(args, "PLAIN") == 0 && initial != NULL) {
    smtp_auth_plain(s, initial);
  } else if (strcasecmp(args, "PLAIN") == 0) {
    smtp_session_enter_state(s, SMTP_STATE_AUTH_PLAIN);
    smtp_session_send(s, "334 \r\n");
  } else if (strcasecmp(args, "LOGIN") == 0 && initial != NULL) {
    smtp_auth_login_user(s, initial);
  } else if (strcasecmp(args, "LOGIN") == 0) {
    smtp_session_enter_state(s, SMTP_STATE_AUTH_LOGIN_USER);
    smtp_session_send(s, "334 VXNlcm5hbWU6\r\n");
  } else if (args[0] == '\0') {
    smtp_session_reply(s, 501, "5.5.4",
                       "AUTH needs a mechanism: PLAIN or LOGIN");
  } else {
    smtp_session_reply(s, 504, "5.5.4", "Unrecognized authentication type");
  }
}

/* ---- MAIL and RCPT ---- */

/* Parses a SIZE= value against the limit. Digits only (RFC 1870 3); a
 * number too large for 64 bits is well formed, merely over any limit.
 * Returns 0, or -1 after answering. */
static int smtp_mail_param_size(struct smtp_session *s, const char *value)
{
  unsigned long long size;

  if (value[0] == '\0' || value[strspn(value, "0123456789")] != '\0') {
    smtp_session_reply(s, 501, "5.5.4", "Invalid SIZE parameter");
    return -1;
  }
  errno = 0;
  size = strtoull(value, NULL, 10);
  if (errno == ERANGE || size > s->limits.max_message_size) {
    smtp_session_reply(s, 552, "5.3.4",
                       "Message size exceeds fixed maximum message size");
    return -1;
  }
  return 0;
}

/* Checks one ESMTP parameter of MAIL FROM. AUTH= is accepted and ignored
 * as RFC 4954 5 requires of a server that offers AUTH. Returns 0, or -1
 * after answering. */
static int smtp_mail_param(struct smtp_session *s, char *param)
{
  char *value = strchr(param, '=');

  if (value != NULL)
    *value++ = '\0';
  if (strcasecmp(param, "SIZE") == 0 && value != NULL)
    return smtp_mail_param_size(s, value);
  if (strcasecmp(param, "BODY") == 0 && value != NULL
      && (strcasecmp(value, "8BITMIME") == 0 || strcasecmp(value, "7BIT") == 0))
    return 0;
  if (strcasecmp(param, "AUTH") == 0 && value != NULL)
    return 0;
  if (strcasecmp(param, "SMTPUTF8") == 0) {
    smtp_session_reply(s, 555, "5.5.4", "SMTPUTF8 is not supported");
    return -1;
  }
  smtp_session_reply(s, 555, "5.5.4", "Unsupported parameter");
  return -1;
}

/* Walks the space-separated parameters with check. Returns 0, or -1 after
 * the check answered. */
static int smtp_params_check(struct smtp_session *s, char *params,
                             int (*check)(struct smtp_session *, char *))
{
  char *save = NULL;

  for (char *p = strtok_r(params, " ", &save); p != NULL;
       p = strtok_r(NULL, " ", &save)) {
    if (check(s, p) < 0)
      return -1;
  }
  return 0;
}

/* No RCPT parameter is offered (no DSN extension). */
static int smtp_rcpt_param(struct smtp_session *s, char *param)
{
  smtp_session_reply(s, 555, "5.5.4", "Unsupported parameter");
  return -1;
}

/* Asks the owner whether the linked user may send. Returns 0, or -1 after
 * answering 550. */
static int smtp_mail_check_sender(struct smtp_session *s, const char *path)
{
  char reason[SMTP_REASON_MAX] = "";
  char esc[SMTP_LOG_TEXT_MAX], esc2[SMTP_LOG_TEXT_MAX];

  if (s->ops->check_sender(s->ctx, path, reason, sizeof(reason)) == 0)
    return 0;
  reason[sizeof(reason) - 1] = '\0';
  if (reason[0] == '\0')
    snprintf(reason, sizeof(reason), "Sender refused");
  log_warn("%s smtp sender refused from=\"%s\" reason=\"%s\"", s->id,
           smtp_log_text(esc, path), smtp_log_text(esc2, reason));
  smtp_session_reply(s, 550, "5.7.1", "%s", reason);
  return -1;
}

/* Answers a refused MAIL and logs it once, with the client's words
 * (escaped) as they came, since the path may not have parsed. */
static void smtp_mail_refuse(struct smtp_session *s, const char *words,
                             const char *why, int code, const char *enhanced,
                             const char *text)
{
  char esc[SMTP_LOG_TEXT_MAX];

  log_warn("%s smtp mail refused reason=%s args=\"%s\"", s->id, why,
           smtp_log_text(esc, words));
  smtp_session_reply(s, code, enhanced, "%s", text);
}

static void smtp_cmd_mail(struct smtp_session *s, char *args)
{
  char *path, *params, *arg = smtp_arg_after(args, "FROM:");
  char esc[SMTP_LOG_TEXT_MAX];
  char *words = xstrdup(args); /* parsing writes into args */

  if (s->auth_user == NULL) {
    smtp_mail_refuse(s, words, "auth-required", 530, "5.7.0",
                     "Authentication required");
    goto out;
  }
  if (s->mail_from != NULL) {
    smtp_mail_refuse(s, words, "nested", 503, "5.5.1", "Nested MAIL command");
    goto out;
  }
  if (arg == NULL || smtp_path_parse(arg, &path, &params) < 0) {
    smtp_mail_refuse(s, words, "syntax", 501, "5.5.4",
                     "Syntax: MAIL FROM:<address>");
    goto out;
  }
  if (path[0] == '\0') {
    smtp_mail_refuse(s, words, "null-sender", 550, "5.7.1",
                     "A linked user must be the sender");
    goto out;
  }
  if (smtp_address_is_utf8(path)) {
    smtp_mail_refuse(s, words, "utf8-address", 553, "5.6.7",
                     SMTP_UTF8_ADDRESS_REFUSED);
    goto out;
  }
  if (!smtp_address_valid(path)) {
    smtp_mail_refuse(s, words, "address-syntax", 501, "5.1.7",
                     "Bad sender address syntax");
    goto out;
  }
  if (smtp_params_check(s, params, smtp_mail_param) < 0) {
    log_warn("%s smtp mail refused reason=parameter args=\"%s\"", s->id,
             smtp_log_text(esc, words));
    goto out;
  }
  /* Logs its own refusal, with the policy's reason. */
  if (smtp_mail_check_sender(s, path) < 0)
    goto out;

  s->mail_from = xstrdup(path);
  smtp_session_enter_state(s, SMTP_STATE_MAIL);
  log_info("%s smtp mail accepted from=\"%s\"", s->id,
           smtp_log_text(esc, path));
  smtp_session_reply(s, 250, "2.1.0", "Sender ok");

out:
  free(words);
}

/* Validates one RCPT TO. Returns 0 with *path set, or -1 after
 * answering. */
static int smtp_rcpt_parse(struct smtp_session *s, char *args, char **path)
{
  char *params, *arg = smtp_arg_after(args, "TO:");
  char why[SMTP_REASON_MAX];

  if (s->mail_from == NULL) {
    smtp_session_reply(s, 503, "5.5.1", "Need MAIL command");
    return -1;
  }
  if (arg == NULL || smtp_path_parse(arg, path, &params) < 0) {
    smtp_session_reply(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
    return -1;
  }
  if (smtp_address_is_utf8(*path)) {
    smtp_session_reply(s, 553, "5.6.7", SMTP_UTF8_ADDRESS_REFUSED);
    return -1;
  }
  if (!smtp_address_valid(*path)) {
    smtp_session_reply(s, 501, "5.1.3",
                       "Bad destination mailbox address syntax");
    return -1;
  }
  /* Valid SMTP that Graph cannot send to would fail the whole message at
   * the end of data; refused here, it costs only this recipient. */
  if (mime_graph_address_check(*path, why, sizeof(why)) < 0) {
    smtp_session_reply(s, 553, "5.1.3", "%s", why);
    return -1;
  }
  return smtp_params_check(s, params, smtp_rcpt_param);
}

static void smtp_cmd_rcpt(struct smtp_session *s, char *args)
{
  char *path;
  char esc[SMTP_LOG_TEXT_MAX];

  if (smtp_rcpt_parse(s, args, &path) < 0) {
    if (s->mail_from != NULL)
      s->nrefused++;
    return;
  }

  /* A repeated recipient is accepted but delivered once. */
  if (smtp_session_has_rcpt(s, path)) {
    smtp_session_reply(s, 250, "2.1.5", "Recipient ok");
    return;
  }
  if (s->nrcpts >= s->limits.max_recipients) {
    /* One warning per transaction, not one per refused recipient. */
    s->nrefused++;
    if (!s->limit_logged++)
      log_warn("%s smtp recipient limit reached to=\"%s\" limit=%u", s->id,
               smtp_log_text(esc, path), s->limits.max_recipients);
    smtp_session_reply(s, 452, "4.5.3", "Too many recipients");
    return;
  }
  s->rcpts = xrealloc(s->rcpts, (s->nrcpts + 1) * sizeof(*s->rcpts));
  s->rcpts[s->nrcpts++] = xstrdup(path);
  if (s->state != SMTP_STATE_RCPT)
    smtp_session_enter_state(s, SMTP_STATE_RCPT);
  smtp_session_reply(s, 250, "2.1.5", "Recipient ok");
}

/* ---- DATA ---- */

static void smtp_cmd_data(struct smtp_session *s, char *args)
{
  if (args[0] != '\0') {
    smtp_session_reply(s, 501, "5.5.4", "Syntax: DATA");
  } else if (s->mail_from == NULL) {
    smtp_session_reply(s, 503, "5.5.1", "Need MAIL command");
  } else if (s->nrcpts == 0 && s->nrefused > 0) {
    /* RFC 2920 3.1: every pipelined RCPT was refused. */
    smtp_session_reply(s, 554, "5.5.1", "No valid recipients");
  } else if (s->nrcpts == 0) {
    smtp_session_reply(s, 503, "5.5.1", "Need RCPT command");
  } else if (s->ops->data_open(s->ctx) < 0) {
    smtp_session_reply(s, 451, "4.3.0", "Cannot accept message now");
  } else {
    s->scan = SMTP_SCAN_LINE_START;
    s->data_size = 0;
    s->data_too_big = false;
    s->data_error = 0;
    s->outlen = 0;
    smtp_session_enter_state(s, SMTP_STATE_DATA);
    smtp_session_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
  }
}

/* Hands the unstuffed bytes gathered so far to the owner. */
static void smtp_data_flush(struct smtp_session *s)
{
  if (s->outlen > 0 && !s->data_too_big && s->data_error == 0) {
    int rc = s->ops->data_write(s->ctx, s->out, s->outlen);

    if (rc < 0)
      s->data_error = rc;
  }
  s->outlen = 0;
}

/* One message byte. Past the size limit bytes are counted, not kept. */
static void smtp_data_emit(struct smtp_session *s, char c)
{
  if (++s->data_size > s->limits.max_message_size)
    s->data_too_big = true;
  if (s->data_too_big || s->data_error != 0)
    return;
  s->out[s->outlen++] = c;
  if (s->outlen == sizeof(s->out))
    smtp_data_flush(s);
}

/* Advances the scanner by one received byte (RFC 5321 4.1.1.4, 4.5.2).
 * Only CRLF can lead to the end: a bare CR or LF never does, though a dot
 * stuffed after a bare LF is removed as the client meant. */
static void smtp_data_byte(struct smtp_session *s, char c)
{
  switch (s->scan) {
    case SMTP_SCAN_LINE_START:
      if (c == '.') {
        s->scan = SMTP_SCAN_DOT;
        return;
      }
      break;
    case SMTP_SCAN_DOT:
      /* Otherwise the held dot was stuffing and is dropped. */
      if (c == '\r') {
        s->scan = SMTP_SCAN_DOT_CR;
        return;
      }
      break;
    case SMTP_SCAN_DOT_CR:
      if (c == '\n') {
        s->scan = SMTP_SCAN_END;
        return;
      }
      smtp_data_emit(s, '\r');
      s->scan = SMTP_SCAN_CR;
      break;
    case SMTP_SCAN_LF_START:
      if (c == '.') {
        s->scan = SMTP_SCAN_LF_DOT;
        return;
      }
      break;
    case SMTP_SCAN_LF_DOT:
      /* Clients that write bare LF line ends (Python's smtplib given a
       * message with LF endings) also stuff the dots after them: ".."
       * loses one dot. Anything else keeps the dot, and a bare LF never
       * leads to the end of data. */
      if (c != '.')
        smtp_data_emit(s, '.');
      break;
    case SMTP_SCAN_TEXT:
    case SMTP_SCAN_CR:
      break;
    case SMTP_SCAN_END:
      assert(!"data byte after the end of data");
      return;
  }

  smtp_data_emit(s, c);
  if (c == '\r')
    s->scan = SMTP_SCAN_CR;
  else if (c == '\n' && s->scan == SMTP_SCAN_CR)
    s->scan = SMTP_SCAN_LINE_START;
  else if (c == '\n')
    s->scan = SMTP_SCAN_LF_START;
  else
    s->scan = SMTP_SCAN_TEXT;
}

/* A message was received but is not kept: the transaction ends here. */
static void smtp_data_refuse(struct smtp_session *s)
{
  s->ops->data_abort(s->ctx);
  if (s->data_too_big) {
    log_warn("%s smtp message refused reason=size size=%" PRIu64
             " limit=%" PRIu64,
             s->id, s->data_size, s->limits.max_message_size);
    smtp_session_reply(s, 552, "5.3.4",
                       "Message size exceeds fixed maximum message size");
  } else if (s->data_error == -ENOSPC || s->data_error == -EDQUOT) {
    log_warn("%s smtp message refused reason=spool-full", s->id);
    smtp_session_reply(s, 452, "4.3.1", "Insufficient system storage");
  } else {
    log_warn("%s smtp message refused reason=write-failed", s->id);
    smtp_session_reply(s, 451, "4.3.0", "Cannot accept message now");
  }
  s->ncommands = 0;
  smtp_session_transaction_end(s);
}

/* End of data: hand the envelope over and wait for data_done(). The
 * envelope stays valid until then. data_done() may run inside
 * data_close(), so nothing may follow that call. */
static void smtp_data_end(struct smtp_session *s)
{
  struct smtp_envelope env = {
    .helo = s->helo,
    .auth_user = s->auth_user,
    .mail_from = s->mail_from,
    .rcpts = (const char *const *) s->rcpts,
    .nrcpts = s->nrcpts,
    .size = s->data_size,
  };

  if (s->data_too_big || s->data_error != 0) {
    smtp_data_refuse(s);
    return;
  }
  smtp_session_enter_state(s, SMTP_STATE_COMMITTING);
  s->ops->data_close(s->ctx, &env);
}

/* Consumes message bytes up to and including the end of data. Returns the
 * number of bytes used. */
static size_t smtp_session_data(struct smtp_session *s, const char *buf,
                                size_t len)
{
  size_t i;

  for (i = 0; i < len && s->scan != SMTP_SCAN_END; i++)
    smtp_data_byte(s, buf[i]);
  smtp_data_flush(s);
  if (s->scan == SMTP_SCAN_END)
    smtp_data_end(s);
  return i;
}

/* ---- Command lines ---- */

enum smtp_command_flags {
  SMTP_CMD_TRANSACTION = 1 << 0, /* not counted against max_commands */
  SMTP_CMD_ALWAYS = 1 << 1,      /* not subject to check_service */
};

struct smtp_command {
  const char *verb;
  void (*run)(struct smtp_session *s, char *args);
  unsigned flags;
};

/* Greeting and authentication stay possible while the service is switched
 * off, so that a client reaches MAIL and reads the reason there instead of
 * failing its handshake. */
static const struct smtp_command smtp_commands[] = {
  { "EHLO", smtp_cmd_ehlo, SMTP_CMD_ALWAYS },
  { "HELO", smtp_cmd_helo, SMTP_CMD_ALWAYS },
  { "AUTH", smtp_cmd_auth, SMTP_CMD_ALWAYS },
  { "MAIL", smtp_cmd_mail, SMTP_CMD_TRANSACTION },
  { "RCPT", smtp_cmd_rcpt, SMTP_CMD_TRANSACTION },
  { "DATA", smtp_cmd_data, SMTP_CMD_TRANSACTION },
  { "RSET", smtp_cmd_rset, SMTP_CMD_ALWAYS },
  { "NOOP", smtp_cmd_noop, SMTP_CMD_ALWAYS },
  { "QUIT", smtp_cmd_quit, SMTP_CMD_ALWAYS },
  { "VRFY", smtp_cmd_vrfy, 0 },
  { "HELP", smtp_cmd_help, 0 },
  { "EXPN", smtp_cmd_not_implemented, 0 },
  { "STARTTLS", smtp_cmd_not_implemented, 0 },
};

/* Finds the command for a line and points *args past the verb and its
 * spaces. Returns NULL for an unknown verb. */
static const struct smtp_command *smtp_command_find(char *line, char **args)
{
  size_t n = strcspn(line, " ");

  *args = line + n + strspn(line + n, " ");
  for (size_t i = 0; i < sizeof(smtp_commands) / sizeof(*smtp_commands); i++) {
    if (strlen(smtp_commands[i].verb) == n
        && strncasecmp(line, smtp_commands[i].verb, n) == 0)
      return &smtp_commands[i];
  }
  return NULL;
}

/* Runs one complete command line (CRLF removed). */
static void smtp_session_command(struct smtp_session *s, char *line)
{
  char *args;
  const struct smtp_command *cmd = smtp_command_find(line, &args);
  unsigned flags = cmd != NULL ? cmd->flags : 0;

  if (!(flags & SMTP_CMD_TRANSACTION) && smtp_session_count(s) < 0)
    return;
  if (!(flags & SMTP_CMD_ALWAYS) && smtp_session_check_service(s) < 0)
    return;
  if (cmd == NULL) {
    smtp_session_reply(s, 500, "5.5.2", "Command not recognized");
    return;
  }
  cmd->run(s, args);
}

static bool smtp_session_auth_pending(const struct smtp_session *s)
{
  return s->state == SMTP_STATE_AUTH_PLAIN
         || s->state == SMTP_STATE_AUTH_LOGIN_USER
         || s->state == SMTP_STATE_AUTH_LOGIN_PASS;
}

/* A complete input line outside DATA: a command or an AUTH response. */
static void smtp_session_line(struct smtp_session *s)
{
  bool overflow = s->line_overflow;
  size_t len = s->linelen;

  s->line_overflow = false;
  s->linelen = 0;
  if (len > 0 && s->line[len - 1] == '\r')
    len--;
  s->line[len] = '\0';

  if (overflow || memchr(s->line, '\0', len) != NULL) {
    if (smtp_session_auth_pending(s))
      smtp_auth_reset(s);
    if (smtp_session_count(s) == 0)
      smtp_session_reply(s, 500, "5.5.2",
                         overflow ? "Line too long" : "Invalid character");
  } else if (smtp_session_auth_pending(s)) {
    if (smtp_session_count(s) == 0)
      smtp_session_auth_line(s, s->line);
  } else {
    smtp_session_command(s, s->line);
  }
  /* The line may have held AUTH data. */
  explicit_bzero(s->line, len);
}

/* Gathers bytes of one command line; a line longer than
 * SMTP_COMMAND_LINE_MAX (CRLF included) is discarded up to its LF and
 * answered once. Returns the number of bytes used. */
static size_t smtp_session_take_line(struct smtp_session *s, const char *buf,
                                     size_t len)
{
  const char *lf = memchr(buf, '\n', len);
  size_t n = lf != NULL ? (size_t) (lf - buf) : len;

  if (s->line_overflow || s->linelen + n + 1 > SMTP_COMMAND_LINE_MAX) {
    s->line_overflow = true;
  } else {
    memcpy(s->line + s->linelen, buf, n);
    s->linelen += n;
  }
  if (lf == NULL)
    return len;
  smtp_session_line(s);
  return n + 1;
}

/* Keeps input that arrives while a message is being committed. */
static void smtp_session_hold(struct smtp_session *s, const char *buf,
                              size_t len)
{
  if (s->stopping)
    return; /* no command runs after the answer: the service is stopping */
  if (s->heldlen + len > SMTP_PIPELINE_BUFFER_MAX) {
    log_warn("%s smtp pipeline limit reached limit=%d", s->id,
             SMTP_PIPELINE_BUFFER_MAX);
    smtp_session_reply(s, 421, "4.5.0", "Too much pipelined input, closing");
    smtp_session_close(s);
    return;
  }
  s->held = xrealloc(s->held, s->heldlen + len);
  memcpy(s->held + s->heldlen, buf, len);
  s->heldlen += len;
}

static void smtp_session_process(struct smtp_session *s, const char *buf,
                                 size_t len)
{
  while (len > 0 && s->state != SMTP_STATE_CLOSING) {
    size_t used;

    if (s->state == SMTP_STATE_COMMITTING) {
      smtp_session_hold(s, buf, len);
      return;
    }
    if (s->state == SMTP_STATE_DATA)
      used = smtp_session_data(s, buf, len);
    else
      used = smtp_session_take_line(s, buf, len);
    buf += used;
    len -= used;
  }
}

/* ---- Public interface ---- */

struct smtp_session *smtp_session_new(const char *id, const char *hostname,
                                      bool secure,
                                      const struct smtp_limits *limits,
                                      const struct smtp_session_ops *ops,
                                      void *ctx)
{
  struct smtp_session *s = xcalloc(1, sizeof(*s));

  s->id = xstrdup(id);
  s->hostname = xstrdup(hostname);
  s->secure = secure;
  s->limits = *limits;
  s->ops = ops;
  s->ctx = ctx;
  s->state = SMTP_STATE_CONNECTED;
  return s;
}

void smtp_session_free(struct smtp_session *s)
{
  if (s == NULL)
    return;
  if (s->state == SMTP_STATE_DATA)
    s->ops->data_abort(s->ctx);
  smtp_session_transaction_reset(s);
  explicit_bzero(s->line, sizeof(s->line));
  free(s->login_user);
  free(s->auth_user);
  free(s->helo);
  free(s->held);
  free(s->hostname);
  free(s->id);
  free(s);
}

void smtp_session_start(struct smtp_session *s)
{
  log_debug("%s smtp session auth=%s", s->id,
            s->secure ? "offered" : "withheld (not loopback, no TLS)");
  smtp_session_reply(s, 220, NULL, "%s ESMTP nextal-agent ready", s->hostname);
}

int smtp_session_feed(struct smtp_session *s, const char *buf, size_t len)
{
  if (s->state == SMTP_STATE_CLOSING)
    return -EPIPE;
  smtp_session_process(s, buf, len);
  return s->state == SMTP_STATE_CLOSING ? -EPIPE : 0;
}

void smtp_session_data_done(struct smtp_session *s, int code,
                            const char *enhanced, const char *text)
{
  char esc[SMTP_LOG_TEXT_MAX];
  char *held = s->held;
  size_t heldlen = s->heldlen;

  /* After a shutdown the owner still completes; there is no one to tell. */
  if (s->state == SMTP_STATE_CLOSING)
    return;
  assert(s->state == SMTP_STATE_COMMITTING);

  if (code == 250) {
    log_info("%s smtp message accepted size=%" PRIu64 " rcpts=%zu qid=%s",
             s->id, s->data_size, s->nrcpts, smtp_log_text(esc, text));
    smtp_session_reply(s, 250, enhanced, "Ok: queued as %s", text);
  } else {
    log_warn("%s smtp message refused code=%d reason=\"%s\"", s->id, code,
             smtp_log_text(esc, text));
    smtp_session_reply(s, code, enhanced, "%s", text);
  }
  s->ncommands = 0;
  smtp_session_transaction_end(s);

  /* The agent began stopping during the commit: the client has its real
   * answer, and nothing it pipelined after the data runs. */
  if (s->stopping) {
    smtp_session_shutdown(s);
    return;
  }

  /* Input held meanwhile runs now; it may be held again by a new DATA. */
  s->held = NULL;
  s->heldlen = 0;
  smtp_session_process(s, held, heldlen);
  free(held);
}

void smtp_session_timeout(struct smtp_session *s)
{
  if (s->state == SMTP_STATE_CLOSING)
    return;
  /* The owner's timer logged the timeout, with the peer. */
  smtp_session_reply(s, 421, "4.4.2", "Timeout, closing connection");
  smtp_session_close(s);
}

void smtp_session_shutdown(struct smtp_session *s)
{
  if (s->state == SMTP_STATE_CLOSING)
    return;

  /* A 421 now would hide the outcome of a commit already running: the
   * row may be durable and the message sent, and a client reading 421
   * sends it again. data_done() answers first, then shuts down. */
  if (s->state == SMTP_STATE_COMMITTING) {
    log_debug("%s smtp shutdown waits for the commit", s->id);
    s->stopping = true;
    free(s->held);
    s->held = NULL;
    s->heldlen = 0;
    return;
  }
  smtp_session_reply(s, 421, "4.3.2", "Service shutting down, closing");
  smtp_session_close(s);
}
