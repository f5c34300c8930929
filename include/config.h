/* SPDX-License-Identifier: MIT */
/* The agent's configuration file: INI read with inih, every key checked,
 * errors reported with the line they stand on. */
#ifndef NX_CONFIG_H
#define NX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum config_link_mode {
  CONFIG_LINK_DELEGATED,   /* each user signs in (authorization code) */
  CONFIG_LINK_APPLICATION, /* client credentials for every mailbox */
};

struct config {
  /* [agent] */
  char *database;  /* SQLite file */
  char *spool_dir; /* accepted message bodies */
  char *policy_file;
  char *log_level;
  char *trace;    /* comma list of trace categories */
  char *key_file; /* encrypts refresh tokens; default "<database>.key" */

  /* [smtp] */
  char *smtp_listen;              /* host:port */
  uint64_t smtp_max_message_size; /* bytes, advertised in SIZE */
  unsigned smtp_max_recipients;
  unsigned smtp_max_connections;
  unsigned smtp_max_commands; /* before MAIL, and between transactions */
  unsigned smtp_idle_timeout; /* seconds waiting for a command */
  unsigned smtp_auth_timeout; /* seconds from connect to AUTH; 0: none */
  unsigned smtp_data_timeout; /* seconds waiting for message data */
  char *smtp_hostname;        /* greeting and Received header */

  /* [http] */
  char *http_listen;
  char *http_public_url;         /* how browsers reach the HTTP listener */
  uint64_t http_max_body;        /* bytes */
  unsigned http_max_connections; /* open at once; 503 beyond */
  unsigned http_request_timeout; /* seconds to receive a request: 408 */
  unsigned http_idle_timeout;    /* seconds an idle connection is kept */

  /* [service]: Nextal's own credential for SMTP AUTH and HTTP Basic. */
  char *service_user;
  char *service_password_hash; /* see credential.h */

  /* [microsoft] */
  char *tenant;
  char *client_id;
  char *client_secret; /* read from client_secret_file when given */
  char *client_secret_file;
  char *client_certificate; /* PEM; with client_key replaces the secret */
  char *client_key;         /* PEM, unencrypted RSA private key */
  char *login_base_url;
  char *graph_base_url;
  enum config_link_mode link_mode;
  char *link_secret; /* signs Nextal's start links */

  /* [delivery] */
  unsigned delivery_max_in_flight; /* per mailbox, Graph allows 4 */
  unsigned delivery_max_attempts;
  unsigned delivery_max_age; /* seconds before a transient failure is final */
  unsigned delivery_recovery_delay; /* seconds before an unknown outcome is
                                     * looked up in Sent Items */
  unsigned delivery_dedup_window;   /* seconds a resubmission is recognised */
  unsigned delivery_keep_sent;      /* seconds a sent message stays queryable */
  unsigned delivery_keep_failed;    /* seconds a failure stays queryable */
  unsigned delivery_max_per_minute; /* sends a mailbox starts per minute */
  unsigned delivery_max_rcpts_per_day; /* recipients per mailbox, 24 h */

  /* "path:line: text" lines about accepted but risky values (plain http
   * to another machine), or NULL; printed by --check-config, logged at
   * start. */
  char *warnings;
};

/* Loads path into cfg (which it initialises with defaults first). On error
 * returns a negative errno and writes "path:line: what is wrong" to err.
 * Relative paths inside the file are resolved against its directory. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Like config_load, and also refuses what only the daemon uses: a
 * [service] password_hash that credential_new cannot read. nextal-agent
 * loads with this at start, for --check-config and on SIGHUP, so that the
 * three never disagree. */
int config_load_agent(struct config *cfg, const char *path, char *err,
                      size_t errlen);

/* Fills cfg with the built-in defaults only. */
void config_defaults(struct config *cfg);

/* Frees every string cfg owns; cfg may be loaded again afterwards. */
void config_free(struct config *cfg);

/* Splits "host:port" (or "[v6]:port") into a newly allocated host and a
 * port; returns 0 or -EINVAL. */
int config_parse_hostport(const char *text, char **host, int *port);

#endif
