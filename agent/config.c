/* SPDX-License-Identifier: MIT */
/* Reads and checks the agent's INI configuration (see include/config.h). */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <ini.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "credential.h"
#include "ini_fault.h"
#include "xalloc.h"

/* One more than the keys in config_keys (checked at compile time below). */
#define CONFIG_KEYS_MAX 64

/* Parse state shared by the line reader and the inih callback. */
struct config_parse {
  struct config *cfg;
  const char *path;
  char *base_dir; /* directory of the file, for relative paths */
  FILE *file;
  bool agent;                    /* the daemon's checks too */
  int line;                      /* line the callback is looking at */
  bool indented;                 /* that line starts with white space */
  int key_line[CONFIG_KEYS_MAX]; /* where each key was set; 0: not set */
  struct ini_fault fault;        /* the first line refused */
  char *warnings;                /* "path:line: text\n" lines, or NULL */
};

struct config_key;

/* Checks one value beyond its kind; returns 0, or -EINVAL after
 * recording why in ps->fault. */
typedef int (*config_check_fn)(struct config_parse *ps,
                               const struct config_key *k, const char *value);

enum config_kind {
  CONFIG_STRING,
  CONFIG_PATH,
  CONFIG_UINT,
  CONFIG_U64,
  CONFIG_MODE,
};

/* One recognised key; offset points into struct config. */
struct config_key {
  const char *section;
  const char *name;
  enum config_kind kind;
  size_t offset;
  uint64_t min;          /* for numbers: the smallest value that makes sense */
  uint64_t max;          /* for numbers; 0 means no upper bound */
  config_check_fn check; /* NULL: the kind says it all */
};

#define CFG(sec, key, kind, field, max) CFG_RANGE(sec, key, kind, field, 0, max)
#define CFG_RANGE(sec, key, kind, field, min, max)                             \
  {                                                                            \
    sec, key, kind, offsetof(struct config, field), min, max, NULL             \
  }
#define CFG_CHECK(sec, key, field, check)                                      \
  {                                                                            \
    sec, key, CONFIG_STRING, offsetof(struct config, field), 0, 0, check       \
  }

static int config_check_listen(struct config_parse *ps,
                               const struct config_key *k, const char *value);
static int config_check_url(struct config_parse *ps, const struct config_key *k,
                            const char *value);
static int config_check_nonempty(struct config_parse *ps,
                                 const struct config_key *k, const char *value);
static int config_check_hostname(struct config_parse *ps,
                                 const struct config_key *k, const char *value);
static int config_check_hash(struct config_parse *ps,
                             const struct config_key *k, const char *value);

static const struct config_key config_keys[] = {
  CFG("agent", "database", CONFIG_PATH, database, 0),
  CFG("agent", "spool", CONFIG_PATH, spool_dir, 0),
  CFG("agent", "policy_file", CONFIG_PATH, policy_file, 0),
  CFG("agent", "log_level", CONFIG_STRING, log_level, 0),
  CFG("agent", "trace", CONFIG_STRING, trace, 0),
  CFG("agent", "key_file", CONFIG_PATH, key_file, 0),
  CFG_CHECK("smtp", "listen", smtp_listen, config_check_listen),
  CFG_CHECK("smtp", "hostname", smtp_hostname, config_check_hostname),
  /* The [smtp] limits are at least 1: with 0 every message, recipient,
   * connection or command would be refused, and a 0 s timer fires at
   * once. auth_timeout 0 means no deadline (docs/configuration.md). */
  CFG_RANGE("smtp", "max_message_size", CONFIG_U64, smtp_max_message_size, 1,
            (uint64_t) 150 << 20),
  CFG_RANGE("smtp", "max_recipients", CONFIG_UINT, smtp_max_recipients, 1, 500),
  CFG_RANGE("smtp", "max_connections", CONFIG_UINT, smtp_max_connections, 1,
            100000),
  CFG_RANGE("smtp", "max_commands", CONFIG_UINT, smtp_max_commands, 1, 100000),
  CFG_RANGE("smtp", "idle_timeout", CONFIG_UINT, smtp_idle_timeout, 1, 86400),
  CFG("smtp", "auth_timeout", CONFIG_UINT, smtp_auth_timeout, 86400),
  CFG_RANGE("smtp", "data_timeout", CONFIG_UINT, smtp_data_timeout, 1, 86400),
  CFG_CHECK("http", "listen", http_listen, config_check_listen),
  CFG_CHECK("http", "public_url", http_public_url, config_check_url),
  /* At least 1: with 0 every request with a body would get 413. */
  CFG_RANGE("http", "max_body", CONFIG_U64, http_max_body, 1,
            (uint64_t) 150 << 20),
  /* At least 1: with 0 every connection would be refused. */
  CFG_RANGE("http", "max_connections", CONFIG_UINT, http_max_connections, 1,
            100000),
  /* Seconds, at least 1: with 0 every connection would time out at once. */
  CFG_RANGE("http", "request_timeout", CONFIG_UINT, http_request_timeout, 1,
            3600),
  CFG_RANGE("http", "idle_timeout", CONFIG_UINT, http_idle_timeout, 1, 3600),
  CFG_CHECK("service", "username", service_user, config_check_nonempty),
  CFG_CHECK("service", "password_hash", service_password_hash,
            config_check_hash),
  CFG_CHECK("microsoft", "tenant", tenant, config_check_nonempty),
  CFG_CHECK("microsoft", "client_id", client_id, config_check_nonempty),
  CFG_CHECK("microsoft", "client_secret", client_secret, config_check_nonempty),
  CFG("microsoft", "client_secret_file", CONFIG_PATH, client_secret_file, 0),
  CFG("microsoft", "client_certificate", CONFIG_PATH, client_certificate, 0),
  CFG("microsoft", "client_key", CONFIG_PATH, client_key, 0),
  CFG_CHECK("microsoft", "login_base_url", login_base_url, config_check_url),
  CFG_CHECK("microsoft", "graph_base_url", graph_base_url, config_check_url),
  CFG("microsoft", "link_mode", CONFIG_MODE, link_mode, 0),
  CFG("microsoft", "link_secret", CONFIG_STRING, link_secret, 0),
  /* At least 1: with 0 in flight nothing is ever sent, and 0 attempts
   * would read as "none" but still makes the first one. The other
   * [delivery] numbers take 0 on purpose (off, or at once). */
  CFG_RANGE("delivery", "max_in_flight_per_mailbox", CONFIG_UINT,
            delivery_max_in_flight, 1, 4),
  CFG_RANGE("delivery", "max_attempts", CONFIG_UINT, delivery_max_attempts, 1,
            1000),
  CFG("delivery", "max_age", CONFIG_UINT, delivery_max_age, 30 * 86400),
  CFG("delivery", "recovery_delay", CONFIG_UINT, delivery_recovery_delay, 3600),
  CFG("delivery", "dedup_window", CONFIG_UINT, delivery_dedup_window,
      30 * 86400),
  CFG("delivery", "keep_sent", CONFIG_UINT, delivery_keep_sent, 366 * 86400),
  CFG("delivery", "keep_failed", CONFIG_UINT, delivery_keep_failed,
      366 * 86400),
  CFG("delivery", "max_per_minute", CONFIG_UINT, delivery_max_per_minute,
      100000),
  CFG("delivery", "max_recipients_per_day", CONFIG_UINT,
      delivery_max_rcpts_per_day, 10000000),
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(*config_keys))
_Static_assert(CONFIG_NKEYS < CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");

/* Adds "path:line: text" to the warnings config_load hands back. */
static void config_parse_warn(struct config_parse *ps, const char *text)
{
  char *more = xasprintf("%s%s:%d: %s\n", ps->warnings ? ps->warnings : "",
                         ps->path, ps->line, text);

  free(ps->warnings);
  ps->warnings = more;
}

/* A listener binds exactly one socket, so its address must be exactly
 * one: an IP literal. A host name could resolve to several addresses, or
 * to a different one after a change to /etc/hosts or DNS. */
static int config_check_listen(struct config_parse *ps,
                               const struct config_key *k, const char *value)
{
  unsigned char addr[sizeof(struct in6_addr)];
  char *host = NULL;
  int port = 0;
  int ok = 0;

  if (config_parse_hostport(value, &host, &port) == 0)
    ok = inet_pton(AF_INET, host, addr) == 1
         || (value[0] == '[' && inet_pton(AF_INET6, host, addr) == 1);
  free(host);
  if (ok)
    return 0;
  ini_fault_set(&ps->fault, ps->line,
                "%s must be an IP address and port such as "
                "127.0.0.1:2525 or [::1]:2525, not \"%s\" (host names "
                "are not resolved)",
                k->name, value);
  return -EINVAL;
}

/* True for a host name curl_url() gave back that reaches only this
 * machine: "localhost", 127.0.0.0/8 or [::1]. */
static bool config_host_is_loopback(const char *host)
{
  struct in_addr v4;

  if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
    return true;
  return inet_pton(AF_INET, host, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127;
}

/* An http or https URL, parsed by libcurl, which sends to it. Plain http
 * to another machine works but carries tokens, secrets or passwords in
 * clear text: a warning, since a test bench or a TLS proxy on the path
 * may be meant. */
static int config_check_url(struct config_parse *ps, const struct config_key *k,
                            const char *value)
{
  CURLU *url = curl_url();
  char *scheme = NULL;
  char *host = NULL;
  int rc = -EINVAL;

  if (url == NULL)
    abort(); /* out of memory, as xalloc would */
  if (curl_url_set(url, CURLUPART_URL, value, CURLU_NON_SUPPORT_SCHEME) != 0
      || curl_url_get(url, CURLUPART_SCHEME, &scheme, 0) != 0
      || curl_url_get(url, CURLUPART_HOST, &host, 0) != 0
      || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
    ini_fault_set(&ps->fault, ps->line,
                  "%s must be an http:// or https:// URL, not \"%s\"", k->name,
                  value);
    goto out;
  }
  if (strcmp(scheme, "http") == 0 && !config_host_is_loopback(host)) {
    char text[512];

    snprintf(text, sizeof(text),
             "%s \"%s\" is plain http to another machine: what it carries "
             "can be read on the way (use https)",
             k->name, value);
    config_parse_warn(ps, text);
  }
  rc = 0;

out:
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(url);
  return rc;
}

/* The name the agent greets with and says in EHLO (RFC 5321 4.1.3): a
 * domain name, letters, digits, '-' and '.', of at most 253 bytes. */
static int config_check_hostname(struct config_parse *ps,
                                 const struct config_key *k, const char *value)
{
  size_t len = strlen(value);
  size_t ok = strspn(value, "abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");

  if (len > 0 && len <= 253 && ok == len)
    return 0;
  ini_fault_set(&ps->fault, ps->line,
                "%s must be a domain name such as mail.example.com (letters, "
                "digits, '-' and '.'), not \"%s\"",
                k->name, value);
  return -EINVAL;
}

static int config_check_nonempty(struct config_parse *ps,
                                 const struct config_key *k, const char *value)
{
  if (value[0] != '\0')
    return 0;
  ini_fault_set(&ps->fault, ps->line, "%s must not be empty", k->name);
  return -EINVAL;
}

/* The daemon's own parser decides (credential.c), so that a hash this
 * accepts is one the agent can use. Only nextal-agent checks it:
 * nextal-policy never authenticates anyone. */
static int config_check_hash(struct config_parse *ps,
                             const struct config_key *k, const char *value)
{
  struct credential *cred = NULL;

  if (!ps->agent)
    return 0;
  if (credential_new("", value, &cred) == 0) {
    credential_free(cred);
    return 0;
  }
  ini_fault_set(&ps->fault, ps->line,
                "%s is not a hash from nextal-agent --hash-password", k->name);
  return -EINVAL;
}

static void config_set_string(char **slot, const char *value)
{
  free(*slot);
  *slot = xstrdup(value);
}

void config_defaults(struct config *cfg)
{
  memset(cfg, 0, sizeof(*cfg));
  cfg->database = xstrdup("/var/lib/nextal-agent/agent.db");
  cfg->spool_dir = xstrdup("/var/lib/nextal-agent/spool");
  cfg->policy_file = xstrdup("/etc/nextal-agent/policy.ini");
  cfg->log_level = xstrdup("info");
  cfg->trace = xstrdup("");
  cfg->smtp_listen = xstrdup("127.0.0.1:2525");
  cfg->smtp_hostname = xstrdup("localhost");
  /* Exchange Online's default maximum message size is 35 MB. */
  cfg->smtp_max_message_size = 35u << 20;
  cfg->smtp_max_recipients = 500; /* Exchange: 500 recipients a message */
  cfg->smtp_max_connections = 200;
  cfg->smtp_max_commands = 100;
  cfg->smtp_idle_timeout = 300; /* RFC 5321 4.5.3.2.7: at least 5 min */
  cfg->smtp_auth_timeout = 60;  /* a connection that never logs in */
  cfg->smtp_data_timeout = 600;
  cfg->http_listen = xstrdup("127.0.0.1:8025");
  cfg->http_public_url = xstrdup("http://127.0.0.1:8025");
  cfg->http_max_body = 4u << 20;
  /* Each HTTP request holds its whole body in memory (up to max_body),
   * unlike SMTP, which spools: the lower count bounds that memory. */
  cfg->http_max_connections = 64;
  cfg->http_request_timeout = 30; /* first byte to last of a request */
  cfg->http_idle_timeout = 60;    /* keep-alive wait for the next one */
  cfg->service_user = xstrdup("nextal");
  cfg->login_base_url = xstrdup("https://login.microsoftonline.com");
  cfg->graph_base_url = xstrdup("https://graph.microsoft.com");
  cfg->link_mode = CONFIG_LINK_DELEGATED;
  cfg->delivery_max_in_flight = 4;
  cfg->delivery_max_attempts = 50;
  cfg->delivery_max_age = 2 * 86400;
  /* Longer than a request may take (60 s), so that a send the previous
   * process started has finished before we look for it. */
  cfg->delivery_recovery_delay = 90;
  cfg->delivery_dedup_window = 86400;
  cfg->delivery_keep_sent = 7 * 86400;
  cfg->delivery_keep_failed = 30 * 86400;
  /* Exchange Online: 30 messages a minute and 10,000 recipients a day per
   * mailbox (graph-api.md 4.4); pacing keeps below them, not at them. */
  cfg->delivery_max_per_minute = 30;
  cfg->delivery_max_rcpts_per_day = 10000;
}

void config_free(struct config *cfg)
{
  for (size_t i = 0; i < CONFIG_NKEYS; i++) {
    const struct config_key *k = &config_keys[i];

    if (k->kind == CONFIG_STRING || k->kind == CONFIG_PATH) {
      char **slot = (char **) ((char *) cfg + k->offset);

      free(*slot);
      *slot = NULL;
    }
  }
  free(cfg->warnings);
  cfg->warnings = NULL;
}

/* Reads a decimal number in [min, max] (max 0: no upper bound). Returns 0,
 * -EINVAL when it is not a number, or -ERANGE when it is out of range
 * (*out then holds it too, for the message). */
static int config_parse_number(const char *value, uint64_t min, uint64_t max,
                               uint64_t *out)
{
  char *end = NULL;
  unsigned long long n;

  /* Digits only: strtoull alone would also take "+5", " 5" and "-5". */
  if (!isdigit((unsigned char) *value))
    return -EINVAL;
  errno = 0;
  n = strtoull(value, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  *out = n;
  if (n < min || (max != 0 && n > max))
    return -ERANGE;
  return 0;
}

static char *config_resolve_path(const char *base_dir, const char *value)
{
  if (value[0] == '/' || value[0] == '\0')
    return xstrdup(value);
  return xasprintf("%s/%s", base_dir, value);
}

static int config_apply(struct config_parse *ps, const struct config_key *k,
                        const char *value)
{
  void *slot = (char *) ps->cfg + k->offset;
  uint64_t n = 0;
  int rc;

  switch (k->kind) {
    case CONFIG_STRING:
      if (k->check != NULL && k->check(ps, k, value) < 0)
        return -EINVAL;
      config_set_string(slot, value);
      return 0;
    case CONFIG_PATH:
      free(*(char **) slot);
      *(char **) slot = config_resolve_path(ps->base_dir, value);
      return 0;
    case CONFIG_MODE:
      if (strcasecmp(value, "delegated") == 0)
        *(enum config_link_mode *) slot = CONFIG_LINK_DELEGATED;
      else if (strcasecmp(value, "application") == 0)
        *(enum config_link_mode *) slot = CONFIG_LINK_APPLICATION;
      else {
        ini_fault_set(&ps->fault, ps->line,
                      "%s must be \"delegated\" or \"application\", not \"%s\"",
                      k->name, value);
        return -EINVAL;
      }
      return 0;
    case CONFIG_UINT:
    case CONFIG_U64:
      rc = config_parse_number(value, k->min, k->max, &n);
      if (rc < 0) {
        if (rc == -ERANGE && n < k->min)
          ini_fault_set(&ps->fault, ps->line,
                        "%s is %s, below its minimum of %llu", k->name, value,
                        (unsigned long long) k->min);
        else if (rc == -ERANGE)
          ini_fault_set(&ps->fault, ps->line,
                        "%s is %s, above its maximum of %llu", k->name, value,
                        (unsigned long long) k->max);
        else
          ini_fault_set(&ps->fault, ps->line,
                        "%s must be a whole number, not \"%s\"", k->name,
                        value);
        return rc;
      }
      if (k->kind == CONFIG_UINT)
        *(unsigned *) slot = (unsigned) n;
      else
        *(uint64_t *) slot = n;
      return 0;
  }
  return -EINVAL;
}

/* A misspelt section is named as such, not as its first key. An empty
 * one never reaches the callback (inih calls it per key) and does no
 * harm. */
static int config_section_known(const char *section)
{
  for (size_t i = 0; i < CONFIG_NKEYS; i++) {
    if (strcmp(section, config_keys[i].section) == 0)
      return 1;
  }
  return 0;
}

/* inih callback. It always returns 1 and keeps its own first error with
 * its line (see config_parse_reader). A key set twice is refused: which of
 * the two was meant is for the person who wrote them to say. */
static int config_handler(void *user, const char *section, const char *name,
                          const char *value)
{
  struct config_parse *ps = user;

  for (size_t i = 0; i < CONFIG_NKEYS; i++) {
    const struct config_key *k = &config_keys[i];

    if (strcmp(section, k->section) != 0 || strcmp(name, k->name) != 0)
      continue;
    /* inih reads an indented line after a key as more of its value and
     * calls again with the same name. */
    if (ps->key_line[i] != 0 && ps->indented) {
      ini_fault_set(&ps->fault, ps->line,
                    "an indented line continues %s from line %d; write "
                    "the value on one line",
                    name, ps->key_line[i]);
      return 1;
    }
    if (ps->key_line[i] != 0) {
      ini_fault_set(&ps->fault, ps->line,
                    "%s is set twice in [%s] (first on line %d)", name, section,
                    ps->key_line[i]);
      return 1;
    }
    ps->key_line[i] = ps->line;
    config_apply(ps, k, value);
    return 1;
  }
  if (section[0] == '\0')
    ini_fault_set(&ps->fault, ps->line,
                  "%s stands before any [section]; every key belongs to one",
                  name);
  else if (!config_section_known(section))
    ini_fault_set(&ps->fault, ps->line, "unknown section [%s]", section);
  else
    ini_fault_set(&ps->fault, ps->line, "unknown key \"%s\" in [%s]", name,
                  section);
  return 1;
}

/* inih line reader, so that the callback knows the line it is called for
 * (the Debian build of inih passes none). inih counts one line per call,
 * as this does. */
static char *config_parse_reader(char *str, int num, void *stream)
{
  struct config_parse *ps = stream;
  size_t n;

  if (fgets(str, num, ps->file) == NULL)
    return NULL;
  ps->line++;
  ps->indented = str[0] == ' ' || str[0] == '\t';
  n = strlen(str);
  if (n > 0 && str[n - 1] != '\n' && !feof(ps->file))
    ini_fault_set(&ps->fault, ps->line, "line is longer than %d characters",
                  num - 2);
  return str;
}

static int config_read_secret_file(struct config *cfg, char *err, size_t errlen)
{
  char buf[1024];
  FILE *f = fopen(cfg->client_secret_file, "r");
  size_t n;

  if (f == NULL) {
    snprintf(err, errlen, "%s: cannot read client_secret_file: %s",
             cfg->client_secret_file, strerror(errno));
    return -errno;
  }
  n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  buf[strcspn(buf, "\r\n")] = '\0';
  if (buf[0] == '\0') {
    snprintf(err, errlen, "%s: client_secret_file is empty",
             cfg->client_secret_file);
    return -EINVAL;
  }
  config_set_string(&cfg->client_secret, buf);
  return 0;
}

/* Checks what no single key can: required keys and combinations. */
static int config_validate(struct config *cfg, const char *path, char *err,
                           size_t errlen)
{
  if (cfg->tenant == NULL || cfg->client_id == NULL) {
    snprintf(err, errlen, "%s: [microsoft] needs tenant and client_id", path);
    return -EINVAL;
  }
  if (cfg->client_secret_file != NULL && cfg->client_secret == NULL
      && config_read_secret_file(cfg, err, errlen) < 0)
    return -EINVAL;
  if ((cfg->client_certificate == NULL) != (cfg->client_key == NULL)) {
    snprintf(err, errlen,
             "%s: [microsoft] client_certificate and client_key go together",
             path);
    return -EINVAL;
  }
  if (cfg->client_secret == NULL && cfg->client_certificate == NULL) {
    snprintf(err, errlen,
             "%s: [microsoft] needs client_secret, client_secret_file, or "
             "client_certificate and client_key",
             path);
    return -EINVAL;
  }
  if (cfg->service_password_hash == NULL) {
    snprintf(err, errlen,
             "%s: [service] needs password_hash (make one with "
             "nextal-agent --hash-password)",
             path);
    return -EINVAL;
  }
  /* Port 0 asks the kernel for a free port, different for each. */
  if (strcmp(cfg->smtp_listen, cfg->http_listen) == 0
      && strcmp(strrchr(cfg->smtp_listen, ':'), ":0") != 0) {
    snprintf(err, errlen,
             "%s: [smtp] listen and [http] listen are both %s; they need "
             "different ports",
             path, cfg->smtp_listen);
    return -EINVAL;
  }
  /* The token key lives next to the database unless placed elsewhere. */
  if (cfg->key_file == NULL)
    cfg->key_file = xasprintf("%s.key", cfg->database);
  return 0;
}

/* Reads path into cfg; agent adds the checks only the daemon needs. */
static int config_load_as(struct config *cfg, const char *path, bool agent,
                          char *err, size_t errlen)
{
  struct config_parse ps = { .cfg = cfg, .path = path, .agent = agent };
  char *copy = xstrdup(path);
  int line;
  int rc = 0;

  config_defaults(cfg);
  ps.base_dir = xstrdup(dirname(copy));
  ps.file = fopen(path, "r");
  if (ps.file == NULL) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    rc = -ENOENT;
    goto out;
  }
  line = ini_parse_stream(config_parse_reader, &ps, config_handler, &ps);
  /* inih's own refusals (a line without '=', a bad [section) come back as
   * its first bad line; ours are kept in ps. The earlier one is named. */
  ini_fault_inih(&ps.fault, line, "not a key = value line");
  if (ps.fault.line != 0) {
    snprintf(err, errlen, "%s:%d: %s", path, ps.fault.line, ps.fault.text);
    rc = -EINVAL;
    goto out;
  }
  rc = config_validate(cfg, path, err, errlen);
  if (rc == 0) {
    cfg->warnings = ps.warnings;
    ps.warnings = NULL;
  }

out:
  if (ps.file != NULL)
    fclose(ps.file);
  free(ps.warnings);
  free(ps.base_dir);
  free(copy);
  return rc;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
  return config_load_as(cfg, path, false, err, errlen);
}

int config_load_agent(struct config *cfg, const char *path, char *err,
                      size_t errlen)
{
  return config_load_as(cfg, path, true, err, errlen);
}

int config_parse_hostport(const char *text, char **host, int *port)
{
  const char *colon;
  const char *h = text;
  size_t hlen;
  uint64_t n;

  if (text[0] == '[') {
    const char *close = strchr(text, ']');

    if (close == NULL || close[1] != ':')
      return -EINVAL;
    h = text + 1;
    hlen = (size_t) (close - h);
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (colon == NULL)
      return -EINVAL;
    hlen = (size_t) (colon - text);
  }
  if (hlen == 0 || config_parse_number(colon + 1, 0, 65535, &n) < 0)
    return -EINVAL;
  *host = xstrndup(h, hlen);
  *port = (int) n;
  return 0;
}
