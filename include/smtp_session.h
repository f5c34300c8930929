/* SPDX-License-Identifier: MIT */
/* The SMTP protocol state machine (RFC 5321, 4954, 3463, 1870, 2920,
 * 6152), free of any I/O: bytes go in through smtp_session_feed(), replies
 * and message data come out through the callbacks in smtp_session_ops. The
 * libuv glue lives in smtp_server.c. */
#ifndef NX_SMTP_SESSION_H
#define NX_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum smtp_state {
  SMTP_STATE_CONNECTED,       /* greeting sent, no EHLO yet */
  SMTP_STATE_READY,           /* EHLO/HELO done, no transaction */
  SMTP_STATE_AUTH_PLAIN,      /* waiting for the PLAIN response line */
  SMTP_STATE_AUTH_LOGIN_USER, /* waiting for the base64 user name */
  SMTP_STATE_AUTH_LOGIN_PASS, /* waiting for the base64 password */
  SMTP_STATE_MAIL,            /* MAIL accepted, waiting for RCPT */
  SMTP_STATE_RCPT,            /* at least one RCPT accepted */
  SMTP_STATE_DATA,            /* reading message data */
  SMTP_STATE_COMMITTING,      /* end of data seen, waiting for data_done */
  SMTP_STATE_CLOSING,         /* QUIT, fatal limit or shutdown: no more input */
};

/* Fixed by the protocol; the configurable ones are in smtp_limits. */
#define SMTP_COMMAND_LINE_MAX 512      /* RFC 5321 4.5.3.1.4, with CRLF */
#define SMTP_ADDRESS_MAX 256           /* RFC 5321 4.5.3.1.3 path length */
#define SMTP_PIPELINE_BUFFER_MAX 65536 /* input held while committing */

struct smtp_limits {
  uint64_t max_message_size; /* bytes after dot-unstuffing; SIZE value */
  unsigned max_recipients;   /* RCPT beyond this: 452 4.5.3 */
  unsigned max_commands;     /* commands outside a transaction: then 421 */
};

/* The transaction handed over at the end of data. */
struct smtp_envelope {
  const char *helo;         /* EHLO/HELO argument */
  const char *auth_user;    /* authenticated service user */
  const char *mail_from;    /* reverse path without brackets */
  const char *const *rcpts; /* forward paths without brackets */
  size_t nrcpts;
  uint64_t size; /* message bytes received */
};

/* Callbacks into the connection. ctx is the value given to
 * smtp_session_new(). None of them may free the session; to close, the
 * session calls close() and the owner frees it later. */
struct smtp_session_ops {
  /* Sends reply bytes (one or more complete CRLF-terminated lines). */
  void (*reply)(void *ctx, const char *text, size_t len);

  /* Checks the service credential: 0 accepts, negative refuses. */
  int (*authenticate)(void *ctx, const char *user, const char *password);

  /* Decides whether the service may still be used at all before each
   * command other than EHLO, HELO, AUTH, QUIT, RSET and NOOP (the organisation
   * switch). Returns 0, or negative with a sentence in reason: the command is
   * then answered 550 5.7.1 with that sentence. May be NULL. */
  int (*check_service)(void *ctx, char *reason, size_t reasonlen);

  /* Decides MAIL FROM: 0 allows, negative refuses with reason (550 5.7.1
   * "<reason>"). */
  int (*check_sender)(void *ctx, const char *address, char *reason,
                      size_t reasonlen);

  /* Starts a message on DATA, before the "354" is sent; 0, or negative to
   * answer 451 4.3.0 instead. */
  int (*data_open)(void *ctx);

  /* Message bytes, dot-stuffing removed, line endings as received; the
   * terminating ".CRLF" line is not included (the CRLF ending the last
   * message line is, RFC 5321 4.1.1.4). Negative aborts the
   * transaction with 451 4.3.0 at the end of data. */
  int (*data_write)(void *ctx, const char *buf, size_t len);

  /* End of data. The owner commits the message and later calls
   * smtp_session_data_done() (possibly from inside this callback); input is
   * held until then. env stays valid until data_done() or free(). */
  void (*data_close)(void *ctx, const struct smtp_envelope *env);

  /* The transaction ended without data_close (size exceeded, disconnect,
   * shutdown): the owner discards what data_write() gave it. */
  void (*data_abort)(void *ctx);

  /* The session is finished: flush pending replies, then close. */
  void (*close)(void *ctx);
};

struct smtp_session;

/* Creates a session. id names it in logs; hostname goes in the greeting.
 * secure says whether AUTH may be used (TLS or loopback). */
struct smtp_session *smtp_session_new(const char *id, const char *hostname,
                                      bool secure,
                                      const struct smtp_limits *limits,
                                      const struct smtp_session_ops *ops,
                                      void *ctx);

/* Frees the session; if a transaction is in data, calls data_abort(). */
void smtp_session_free(struct smtp_session *s);

/* Sends the 220 greeting. */
void smtp_session_start(struct smtp_session *s);

/* Consumes received bytes, answering every complete command; pipelined
 * commands are answered in order. Returns 0, or -EPIPE when the session
 * has closed and wants no more input. */
int smtp_session_feed(struct smtp_session *s, const char *buf, size_t len);

/* Completes a data_close(): code 250 with the queue id in text ("queued as
 * <text>"), or any failure code, enhanced code and text. Then processes
 * any pipelined input that arrived meanwhile. */
void smtp_session_data_done(struct smtp_session *s, int code,
                            const char *enhanced, const char *text);

/* The idle or data timer fired: 421 4.4.2 and close. */
void smtp_session_timeout(struct smtp_session *s);

/* The agent is stopping: 421 4.3.2 and close (aborting any data). A
 * session waiting for its commit (SMTP_STATE_COMMITTING) stays open and
 * drops held input: smtp_session_data_done() then sends the real answer,
 * the 421 after it, and closes. */
void smtp_session_shutdown(struct smtp_session *s);

enum smtp_state smtp_session_state(const struct smtp_session *s);

/* Whether the client has authenticated (AUTH succeeded). */
bool smtp_session_authenticated(const struct smtp_session *s);
const char *smtp_state_name(enum smtp_state state);

#endif
