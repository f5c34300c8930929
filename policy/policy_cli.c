/* SPDX-License-Identifier: MIT */
/* nextal-policy: the administrator's tool for the integration policy, the
 * linked users, the audit trail and held mail. Exit codes are sysexits;
 * `check` alone exits 1 for a refusal. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "config.h"
#include "link_url.h"
#include "links.h"
#include "policy_link.h"
#include "log.h"
#include "policy.h"
#include "policy_edit.h"
#include "queue.h"
#include "spool.h"
#include "store.h"
#include "xalloc.h"

#define CLI_DEFAULT_CONFIG "/etc/nextal-agent/agent.ini"
#define CLI_HELD_MAX 1000   /* messages `held` lists at most */
#define CLI_REASON_MAX 1000 /* bytes of a drop reason */
#define CLI_ACTOR_MAX 64

struct cli {
  const char *config_path;
  bool json;
  bool config_loaded;
  struct config cfg;
  struct store *store;
  char actor[CLI_ACTOR_MAX]; /* the OS user, for the audit trail */
};

struct cli_command {
  const char *name;
  int (*run)(struct cli *cli, int argc, char **argv);
  const char *usage; /* arguments after the name */
  const char *help;  /* one paragraph */
};

static const struct cli_command cli_commands[];

static void cli_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void cli_error(const char *fmt, ...)
{
  va_list ap;

  fputs("nextal-policy: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* Prints a JSON value on stdout and frees it. */
static int cli_json_print(json_t *value)
{
  char *text = json_dumps(value, JSON_INDENT(2) | JSON_SORT_KEYS);

  json_decref(value);
  if (text == NULL)
    return EX_SOFTWARE;
  puts(text);
  free(text);
  return EX_OK;
}

static void cli_time_format(int64_t ms, char *out, size_t len)
{
  time_t t = (time_t) (ms / 1000);
  struct tm tm;

  if (ms <= 0 || gmtime_r(&t, &tm) == NULL) {
    snprintf(out, len, "-");
    return;
  }
  strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Loads the agent configuration and opens the database, once. */
static int cli_open(struct cli *cli)
{
  char err[512];
  int rc;

  if (cli->store != NULL)
    return EX_OK;
  if (!cli->config_loaded) {
    rc = config_load(&cli->cfg, cli->config_path, err, sizeof(err));
    if (rc < 0) {
      cli_error("%s", err);
      config_free(&cli->cfg);
      return rc == -ENOENT ? EX_NOINPUT : EX_CONFIG;
    }
    cli->config_loaded = true;
  }
  if (store_open(cli->cfg.database, &cli->store, err, sizeof(err)) < 0) {
    cli_error("%s", err);
    return EX_UNAVAILABLE;
  }
  return EX_OK;
}

static int cli_audit(struct cli *cli, const char *action, const char *detail)
{
  if (audit_record(cli->store, cli->actor, action, detail) < 0) {
    cli_error("the change was made but could not be written to the audit "
              "trail in %s",
              cli->cfg.database);
    return EX_IOERR;
  }
  return EX_OK;
}

/* Parses a subcommand's options; only --help, --json and --yes exist.
 * Returns -1 to go on, or an exit code. */
static int cli_options(struct cli *cli, const struct cli_command *cmd, int argc,
                       char **argv, bool *yes, const char **since)
{
  static const struct option opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "json", no_argument, NULL, 'j' },
    { "yes", no_argument, NULL, 'y' },
    { "since", required_argument, NULL, 's' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  optind = 0; /* GNU getopt: start over, argv[0] is the command */
  while ((c = getopt_long(argc, argv, "+hjys:", opts, NULL)) != -1) {
    switch (c) {
      case 'h':
        printf("usage: nextal-policy [--config FILE] %s %s\n\n%s\n", cmd->name,
               cmd->usage, cmd->help);
        return EX_OK;
      case 'j':
        cli->json = true;
        break;
      case 'y':
        if (yes == NULL)
          goto bad;
        *yes = true;
        break;
      case 's':
        if (since == NULL)
          goto bad;
        *since = optarg;
        break;
      default:
        goto bad;
    }
  }
  return -1;

bad:
  fprintf(stderr, "usage: nextal-policy %s %s\n", cmd->name, cmd->usage);
  return EX_USAGE;
}

/* status */

/* The policy_state row the agent maintains. */
struct cli_policy_state {
  int64_t loaded_at, error_at;
  char digest[65];
  char error[512];
};

static void cli_policy_state_get(struct cli *cli, struct cli_policy_state *ps)
{
  sqlite3_stmt *st = NULL;

  memset(ps, 0, sizeof(*ps));
  if (sqlite3_prepare_v2(cli->store->db,
                         "SELECT loaded_at, digest, error, error_at "
                         "FROM policy_state WHERE id=1",
                         -1, &st, NULL)
          == SQLITE_OK
      && sqlite3_step(st) == SQLITE_ROW) {
    ps->loaded_at = sqlite3_column_int64(st, 0);
    if (sqlite3_column_text(st, 1) != NULL)
      snprintf(ps->digest, sizeof(ps->digest), "%s",
               sqlite3_column_text(st, 1));
    if (sqlite3_column_text(st, 2) != NULL)
      snprintf(ps->error, sizeof(ps->error), "%s", sqlite3_column_text(st, 2));
    ps->error_at = sqlite3_column_int64(st, 3);
  }
  sqlite3_finalize(st);
}

/* Whether the integration is active: admin consent recorded and a token
 * obtainable; otherwise which of the two is missing. */
static const char *cli_status_active(enum tenant_consent_state consent,
                                     bool token_ok)
{
  bool consented = consent == TENANT_CONSENT_GRANTED;

  if (consented && token_ok)
    return "yes";
  if (!consented && !token_ok)
    return "no: admin consent is not recorded and no token can be obtained";
  if (!token_ok)
    return "no: no token can be obtained";
  return "no: admin consent is not recorded (nextal-policy consent-link)";
}

static int cli_status(struct cli *cli, int argc, char **argv)
{
  struct policy *policy = NULL;
  struct cli_policy_state ps;
  struct tenant_consent consent;
  char err[512] = "", when[32], token_msg[512];
  int64_t linked = 0, relink = 0, held = 0, queued = 0, failed = 0;
  bool token_ok, active;
  int rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  policy_load(cli->cfg.policy_file, &policy, err, sizeof(err));
  token_ok
      = policy_link_token_check(&cli->cfg, token_msg, sizeof(token_msg)) == 0;
  cli_policy_state_get(cli, &ps);
  if (tenant_consent_get(cli->store, &consent) < 0
      || links_count(cli->store, &linked, &relink) < 0
      || queue_count(cli->store, "held", &held) < 0
      || queue_count(cli->store, "queued", &queued) < 0
      || queue_count(cli->store, "failed", &failed) < 0) {
    cli_error("cannot read %s", cli->cfg.database);
    policy_free(policy);
    return EX_IOERR;
  }
  active = token_ok && consent.state == TENANT_CONSENT_GRANTED;

  if (cli->json) {
    json_t *o = json_pack(
        "{s:s, s:o, s:o, s:o, s:I, s:I, s:{s:s, s:s?, s:s?}, s:{s:s?, s:s?}, "
        "s:s?, s:{s:I, s:I, s:I}}",
        "policy_file", cli->cfg.policy_file, "enabled",
        policy ? json_boolean(policy->enabled) : json_null(), "mode",
        policy
            ? json_string(policy->mode == POLICY_MODE_ALL ? "all" : "specific")
            : json_null(),
        "permitted",
        policy ? json_integer((json_int_t) policy->nusers) : json_null(),
        "linked", (json_int_t) linked, "needs_relink", (json_int_t) relink,
        "consent", "state", tenant_consent_state_name(consent.state), "tenant",
        consent.tenant[0] ? consent.tenant : NULL, "error",
        consent.error[0] ? consent.error : NULL, "agent", "digest",
        ps.digest[0] ? ps.digest : NULL, "load_error",
        ps.error[0] ? ps.error : NULL, "file_error", err[0] ? err : NULL,
        "messages", "held", (json_int_t) held, "queued", (json_int_t) queued,
        "failed", (json_int_t) failed);
    json_object_set_new(
        o, "token",
        json_pack("{s:b, s:s}", "ok", token_ok, "detail", token_msg));
    json_object_set_new(o, "active", json_boolean(active));
    json_object_set_new(
        o, "link_mode",
        json_string(cli->cfg.link_mode == CONFIG_LINK_APPLICATION
                        ? "application"
                        : "delegated"));
    policy_free(policy);
    return cli_json_print(o);
  }

  if (policy != NULL) {
    printf("integration:   %s\n", policy->enabled ? "enabled" : "DISABLED");
    printf("mode:          %s\n",
           policy->mode == POLICY_MODE_ALL ? "all users" : "specific users");
    printf("permitted:     %zu listed%s\n", policy->nusers,
           policy->mode == POLICY_MODE_ALL ? " (not used in mode all)" : "");
  } else {
    printf("policy file:   INVALID: %s\n", err);
  }
  printf("linked users:  %lld linked, %lld must link again\n",
         (long long) linked, (long long) relink);
  cli_time_format(consent.at, when, sizeof(when));
  printf("admin consent: %s%s%s%s%s\n",
         tenant_consent_state_name(consent.state), consent.at ? " at " : "",
         consent.at ? when : "", consent.error[0] ? ": " : "", consent.error);
  printf("token:         %s: %s\n", token_ok ? "ok" : "NOT OBTAINED",
         token_msg);
  printf("active:        %s\n", cli_status_active(consent.state, token_ok));
  if (ps.error[0] != '\0') {
    cli_time_format(ps.error_at, when, sizeof(when));
    printf("policy error:  the agent rejected the file at %s: %s\n"
           "               (it keeps the last valid policy)\n",
           when, ps.error);
  } else {
    cli_time_format(ps.loaded_at, when, sizeof(when));
    printf("agent applied: %s%s%.12s%s\n", when, ps.digest[0] ? " (" : "",
           ps.digest, ps.digest[0] ? ")" : "");
    if (policy != NULL && ps.digest[0]
        && strcmp(ps.digest, policy->digest) != 0)
      printf("               the file has changed since; the agent applies "
             "it within a second if running\n");
  }
  printf("messages:      %lld held, %lld queued, %lld failed\n",
         (long long) held, (long long) queued, (long long) failed);
  policy_free(policy);
  return EX_OK;
}

/* enable, disable, mode */

struct cli_set {
  bool set_enabled;
  bool enabled;
  enum policy_mode mode;
};

static int cli_set_cb(struct policy_edit *edit, void *arg, bool *changed)
{
  struct cli_set *set = arg;

  if (set->set_enabled)
    return policy_edit_set_enabled(edit, set->enabled, changed);
  return policy_edit_set_mode(edit, set->mode, changed);
}

/* Applies set to the file and audits it; the agent picks it up. */
static int cli_edit(struct cli *cli, policy_edit_cb cb, void *arg,
                    const char *action, const char *detail)
{
  char err[512];
  int rc = policy_edit_file(cli->cfg.policy_file, cb, arg, err, sizeof(err));

  if (rc < 0) {
    cli_error("%s", err);
    return rc == -EINVAL ? EX_DATAERR : rc == -ENOENT ? EX_NOINPUT : EX_IOERR;
  }
  return detail ? cli_audit(cli, action, detail) : EX_OK;
}

static int cli_enable(struct cli *cli, int argc, char **argv)
{
  struct cli_set set = { .set_enabled = true, .enabled = true };
  int rc = cli_open(cli);

  if (rc == EX_OK)
    rc = cli_edit(cli, cli_set_cb, &set, "policy_enable", "enabled = true");
  if (rc == EX_OK)
    printf("The integration is enabled. Users must link their mailboxes "
           "again; held mail stays held until released.\n");
  return rc;
}

/* Asks on the terminal; false unless the person types yes. */
static bool cli_confirm(int64_t linked, int64_t queued)
{
  char answer[16];

  fprintf(stderr,
          "Switching the integration off stops every request at once.\n"
          "Every linked user (%lld now) is disconnected: their tokens are "
          "wiped and each\nmust link again after the integration is back "
          "on. Queued mail (%lld now)\nis held, not sent and not lost, "
          "until an administrator decides.\n"
          "Type \"yes\" to switch off: ",
          (long long) linked, (long long) queued);
  if (fgets(answer, sizeof(answer), stdin) == NULL)
    return false;
  answer[strcspn(answer, "\r\n")] = '\0';
  return strcasecmp(answer, "yes") == 0;
}

static int cli_disable(struct cli *cli, int argc, char **argv, bool yes)
{
  struct cli_set set = { .set_enabled = true, .enabled = false };
  int64_t linked = 0, relink = 0, queued = 0;
  char detail[128];
  int n, rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  links_count(cli->store, &linked, &relink);
  queue_count(cli->store, "queued", &queued);
  if (!yes && !isatty(STDIN_FILENO)) {
    cli_error("disable disconnects every linked user; confirm with --yes "
              "when not on a terminal");
    return EX_USAGE;
  }
  if (!yes && !cli_confirm(linked, queued)) {
    fprintf(stderr, "Nothing changed.\n");
    return EX_TEMPFAIL;
  }
  rc = cli_edit(cli, cli_set_cb, &set, "policy_disable", "enabled = false");
  if (rc != EX_OK)
    return rc;

  /* Wipe tokens now rather than when the agent applies the file, so they
   * are gone even if the agent is not running. */
  n = links_mark_all_relink(cli->store, "org_disabled");
  if (n < 0) {
    cli_error("the switch is off but stored tokens could not be wiped");
    return EX_IOERR;
  }
  snprintf(detail, sizeof(detail),
           "%d linked users disconnected, tokens wiped (org_disabled)", n);
  if (n > 0 && (rc = cli_audit(cli, "users_disconnected", detail)) != EX_OK)
    return rc;
  printf("The integration is switched off. %d linked users were "
         "disconnected; queued mail is held.\n",
         n);
  return EX_OK;
}

static int cli_mode(struct cli *cli, int argc, char **argv)
{
  struct cli_set set = { .set_enabled = false };
  char detail[32];
  int rc;

  if (argc != 1
      || (strcmp(argv[0], "all") != 0 && strcmp(argv[0], "specific") != 0)) {
    cli_error("mode takes one argument: all or specific");
    return EX_USAGE;
  }
  set.mode
      = strcmp(argv[0], "all") == 0 ? POLICY_MODE_ALL : POLICY_MODE_SPECIFIC;
  rc = cli_open(cli);
  snprintf(detail, sizeof(detail), "mode = %s", argv[0]);
  if (rc == EX_OK)
    rc = cli_edit(cli, cli_set_cb, &set, "policy_mode", detail);
  if (rc == EX_OK)
    printf("Access mode is now %s.\n",
           set.mode == POLICY_MODE_ALL ? "all users" : "specific users");
  return rc;
}

/* allow, remove */

struct cli_users {
  bool remove;
  int argc;
  char **argv;
  bool *done; /* which addresses changed the file */
};

static int cli_users_cb(struct policy_edit *edit, void *arg, bool *changed)
{
  struct cli_users *u = arg;

  *changed = false;
  for (int i = 0; i < u->argc; i++) {
    int rc = u->remove ? policy_edit_remove(edit, u->argv[i])
                       : policy_edit_allow(edit, u->argv[i]);

    u->done[i] = rc == 0;
    *changed |= rc == 0;
    if (rc == -EEXIST)
      printf("%s is already listed\n", u->argv[i]);
    else if (rc == -ENOENT)
      printf("%s is not listed\n", u->argv[i]);
  }
  return 0;
}

static int cli_users(struct cli *cli, int argc, char **argv, bool remove)
{
  struct cli_users u = { .remove = remove, .argc = argc, .argv = argv };
  char norm[POLICY_ADDRESS_MAX];
  char *detail = xstrdup("");
  int rc = EX_OK;

  if (argc == 0) {
    cli_error("give at least one address");
    free(detail);
    return EX_USAGE;
  }
  for (int i = 0; i < argc; i++) {
    if (policy_address_normalize(argv[i], norm, sizeof(norm)) < 0) {
      cli_error("\"%s\" is not a mail address; nothing changed", argv[i]);
      free(detail);
      return EX_DATAERR;
    }
  }
  rc = cli_open(cli);
  u.done = xcalloc((size_t) argc, sizeof(*u.done));
  if (rc == EX_OK)
    rc = cli_edit(cli, cli_users_cb, &u, NULL, NULL);
  for (int i = 0; rc == EX_OK && i < argc; i++) {
    char *next;

    if (!u.done[i])
      continue;
    policy_address_normalize(argv[i], norm, sizeof(norm));
    printf("%s %s\n", remove ? "removed" : "allowed", norm);
    next = xasprintf("%s%s%s", detail, detail[0] ? ", " : "", norm);
    free(detail);
    detail = next;
  }
  if (rc == EX_OK && detail[0] != '\0')
    rc = cli_audit(cli, remove ? "policy_remove" : "policy_allow", detail);
  if (rc == EX_OK && remove && detail[0] != '\0')
    printf("Their next request is refused; their queued mail is held.\n");
  free(detail);
  free(u.done);
  return rc;
}

static int cli_allow(struct cli *cli, int argc, char **argv)
{
  return cli_users(cli, argc, argv, false);
}

static int cli_remove(struct cli *cli, int argc, char **argv)
{
  return cli_users(cli, argc, argv, true);
}

/* list */

static int cli_list(struct cli *cli, int argc, char **argv)
{
  struct policy *policy = NULL;
  struct link_entry *links = NULL;
  size_t nlinks = 0;
  char err[512];
  json_t *arr;
  int rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  if (policy_load(cli->cfg.policy_file, &policy, err, sizeof(err)) < 0) {
    cli_error("%s", err);
    return EX_DATAERR;
  }
  if (links_list(cli->store, &links, &nlinks) < 0) {
    policy_free(policy);
    return EX_IOERR;
  }
  arr = json_array();
  for (size_t i = 0; i < policy->nusers; i++) {
    enum policy_link_state state = POLICY_LINK_NONE;
    const char *reason = NULL;

    for (size_t j = 0; j < nlinks; j++) {
      if (strcmp(links[j].address, policy->users[i]) == 0) {
        state = links[j].state;
        reason = links[j].reason;
      }
    }
    if (cli->json)
      json_array_append_new(
          arr, json_pack("{s:s, s:s, s:s?}", "address", policy->users[i],
                         "link", links_state_name(state), "reason", reason));
    else
      printf("%-40s %s%s%s\n", policy->users[i], links_state_name(state),
             reason ? " " : "", reason ? reason : "");
  }
  if (!cli->json && policy->mode == POLICY_MODE_ALL)
    printf("(mode is all: every user of the tenant is permitted)\n");
  links_entries_free(links, nlinks);
  policy_free(policy);
  if (cli->json)
    return cli_json_print(arr);
  json_decref(arr);
  return EX_OK;
}

/* check */

static int cli_check(struct cli *cli, int argc, char **argv)
{
  static const struct {
    const char *name;
    enum policy_request req;
  } reqs[] = {
    { "smtp", POLICY_REQUEST_SMTP },
    { "caldav", POLICY_REQUEST_CALDAV },
    { "link", POLICY_REQUEST_LINK },
  };
  struct policy *policy = NULL;
  struct policy_facts facts = { .link = POLICY_LINK_NONE };
  struct tenant_consent consent;
  char err[512], norm[POLICY_ADDRESS_MAX], reason[128] = "";
  bool all_allowed = true;
  json_t *o;
  int rc;

  if (argc != 1) {
    cli_error("check takes one address");
    return EX_USAGE;
  }
  if ((rc = cli_open(cli)) != EX_OK)
    return rc;
  if (policy_load(cli->cfg.policy_file, &policy, err, sizeof(err)) < 0) {
    cli_error("%s (the agent keeps its last valid policy)", err);
    return EX_DATAERR;
  }
  if (tenant_consent_get(cli->store, &consent) == 0)
    facts.consent_granted = consent.state == TENANT_CONSENT_GRANTED;
  if (policy_address_normalize(argv[0], norm, sizeof(norm)) == 0)
    links_get(cli->store, norm, &facts.link, reason, sizeof(reason));
  facts.link_reason = reason[0] ? reason : NULL;

  o = json_object();
  for (size_t i = 0; i < sizeof(reqs) / sizeof(*reqs); i++) {
    struct policy_decision d;

    policy_decide(policy, reqs[i].req, argv[0], &facts, &d);
    all_allowed &= d.reason == POLICY_ALLOW;
    if (cli->json)
      json_object_set_new(o, reqs[i].name,
                          json_pack("{s:b, s:s, s:s}", "allowed",
                                    d.reason == POLICY_ALLOW, "code", d.code,
                                    "sentence", d.sentence));
    else if (d.reason == POLICY_ALLOW)
      printf("%-7s allowed\n", reqs[i].name);
    else
      printf("%-7s refused: %s: %s\n", reqs[i].name, d.code, d.sentence);
  }
  policy_free(policy);
  if (cli->json)
    cli_json_print(o);
  else
    json_decref(o);
  /* Documented in --help: 0 when every kind of request passes. */
  return all_allowed ? EX_OK : 1;
}

/* validate */

static int cli_validate(struct cli *cli, int argc, char **argv)
{
  struct policy *policy = NULL;
  const char *path;
  char err[512];
  int rc;

  if (argc > 1) {
    cli_error("validate takes at most one file");
    return EX_USAGE;
  }
  if (argc == 1) {
    path = argv[0];
  } else {
    rc = config_load(&cli->cfg, cli->config_path, err, sizeof(err));
    if (rc < 0) {
      cli_error("%s", err);
      config_free(&cli->cfg);
      return EX_CONFIG;
    }
    cli->config_loaded = true;
    path = cli->cfg.policy_file;
  }
  rc = policy_load(path, &policy, err, sizeof(err));
  if (cli->json) {
    json_t *o = json_pack("{s:s, s:b, s:s?}", "file", path, "valid", rc == 0,
                          "error", rc == 0 ? NULL : err);

    cli_json_print(o);
  } else if (rc == 0) {
    printf("%s: valid: integration %s, mode %s, %zu users listed\n", path,
           policy->enabled ? "enabled" : "disabled",
           policy->mode == POLICY_MODE_ALL ? "all" : "specific",
           policy->nusers);
  } else {
    fprintf(stderr, "%s\n", err);
  }
  policy_free(policy);
  if (rc == 0)
    return EX_OK;
  return rc == -EINVAL ? EX_DATAERR : EX_NOINPUT;
}

/* unlink */

/* The common start of the one-address commands: exactly one argument,
 * a mail address (normalised into norm), and an open store. Returns EX_OK
 * or the exit status, having said what was wrong. */
static int cli_one_address(struct cli *cli, const char *verb, int argc,
                           char **argv, char norm[POLICY_ADDRESS_MAX])
{
  if (argc != 1) {
    cli_error("%s takes one address", verb);
    return EX_USAGE;
  }
  if (policy_address_normalize(argv[0], norm, POLICY_ADDRESS_MAX) < 0) {
    cli_error("\"%s\" is not a mail address", argv[0]);
    return EX_DATAERR;
  }
  return cli_open(cli);
}

static int cli_unlink(struct cli *cli, int argc, char **argv)
{
  char norm[POLICY_ADDRESS_MAX];
  char *detail = NULL;
  int rc;

  if ((rc = cli_one_address(cli, "unlink", argc, argv, norm)) != EX_OK)
    return rc;

  rc = links_unlink(cli->store, cli->actor, norm, &detail);
  if (rc == -ENOENT) {
    cli_error("%s is not linked and has no queued mail; nothing changed", norm);
    return EX_NOUSER;
  }
  if (rc < 0) {
    cli_error("cannot update %s", cli->cfg.database);
    return EX_IOERR;
  }
  printf("%s\n", detail);
  free(detail);
  return EX_OK;
}

/* audit */

/* Accepts YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS (UTC) or a duration back from
 * now: 90s, 30m, 12h, 7d. */
static int cli_parse_since(const char *text, int64_t *out)
{
  struct tm tm = { 0 };
  const char *end;
  char *unit = NULL;
  long n;

  end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == NULL || *end != '\0') {
    memset(&tm, 0, sizeof(tm));
    end = strptime(text, "%Y-%m-%d", &tm);
  }
  if (end != NULL && *end == '\0') {
    *out = (int64_t) timegm(&tm) * 1000;
    return 0;
  }
  errno = 0;
  n = strtol(text, &unit, 10);
  if (errno != 0 || unit == text || n < 0 || strlen(unit) != 1)
    return -EINVAL;
  switch (*unit) {
    case 's':
      break;
    case 'm':
      n *= 60;
      break;
    case 'h':
      n *= 3600;
      break;
    case 'd':
      n *= 86400;
      break;
    default:
      return -EINVAL;
  }
  *out = store_now_ms() - (int64_t) n * 1000;
  return 0;
}

static int cli_audit_list(struct cli *cli, const char *since)
{
  struct audit_entry *v = NULL;
  size_t n = 0;
  int64_t since_ms = 0;
  json_t *arr;
  int rc;

  if (since != NULL && cli_parse_since(since, &since_ms) < 0) {
    cli_error("--since takes YYYY-MM-DD[THH:MM:SS] (UTC) or a duration "
              "such as 30m, 12h, 7d");
    return EX_USAGE;
  }
  if ((rc = cli_open(cli)) != EX_OK)
    return rc;
  if (audit_list(cli->store, since_ms, &v, &n) < 0)
    return EX_IOERR;
  arr = json_array();
  for (size_t i = 0; i < n; i++) {
    char when[32];

    cli_time_format(v[i].at, when, sizeof(when));
    if (cli->json)
      json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s, s:s?}", "time",
                                           when, "at_ms", (json_int_t) v[i].at,
                                           "actor", v[i].actor, "action",
                                           v[i].action, "detail", v[i].detail));
    else
      printf("%s %-10s %-20s %s\n", when, v[i].actor, v[i].action,
             v[i].detail ? v[i].detail : "");
  }
  audit_entries_free(v, n);
  if (cli->json)
    return cli_json_print(arr);
  json_decref(arr);
  return EX_OK;
}

/* consent-link */

static int cli_consent_link(struct cli *cli, int argc, char **argv)
{
  unsigned char rnd[16];
  char state[33];
  char *tenant = NULL, *client = NULL, *redirect = NULL, *url = NULL;
  char *redirect_raw = NULL;
  CURL *curl = NULL;
  int rc = EX_SOFTWARE;

  if ((rc = cli_open(cli)) != EX_OK)
    return rc;
  rc = EX_SOFTWARE;
  if (gnutls_rnd(GNUTLS_RND_NONCE, rnd, sizeof(rnd)) < 0)
    goto out;
  for (size_t i = 0; i < sizeof(rnd); i++)
    snprintf(state + 2 * i, 3, "%02x", rnd[i]);
  /* The agent accepts Microsoft's answer only with a state it issued. */
  if (links_pending_put(cli->store, state, "", LINKS_CONSENT_MARKER,
                        LINKS_CONSENT_LIFETIME_S)
      < 0) {
    cli_error("cannot record the consent link in %s", cli->cfg.database);
    return EX_IOERR;
  }
  curl = curl_easy_init();
  if (curl == NULL)
    goto out;
  redirect_raw = xasprintf("%s/oauth/consent", cli->cfg.http_public_url);
  tenant = curl_easy_escape(curl, cli->cfg.tenant, 0);
  client = curl_easy_escape(curl, cli->cfg.client_id, 0);
  redirect = curl_easy_escape(curl, redirect_raw, 0);
  if (tenant == NULL || client == NULL || redirect == NULL)
    goto out;
  url = xasprintf("%s/%s/v2.0/adminconsent?client_id=%s&scope="
                  "https%%3A%%2F%%2Fgraph.microsoft.com%%2F.default"
                  "&redirect_uri=%s&state=%s",
                  cli->cfg.login_base_url, tenant, client, redirect, state);
  if (cli->json) {
    rc = cli_json_print(json_pack("{s:s}", "url", url));
  } else {
    printf("%s\n", url);
    rc = EX_OK;
  }

out:
  if (rc == EX_SOFTWARE)
    cli_error("cannot build the consent URL");
  free(url);
  free(redirect_raw);
  curl_free(tenant);
  curl_free(client);
  curl_free(redirect);
  curl_easy_cleanup(curl);
  return rc;
}

/* held */

static int cli_held(struct cli *cli, int argc, char **argv)
{
  static const char *const states[] = { "held", "failed" };
  json_t *arr = json_array();
  int rc = cli_open(cli);

  for (size_t s = 0; rc == EX_OK && s < 2; s++) {
    struct queue_entry *v = NULL;
    int n = queue_list(cli->store, states[s], &v, CLI_HELD_MAX);

    if (n < 0) {
      rc = EX_IOERR;
      break;
    }
    for (int i = 0; i < n; i++) {
      char when[32];

      cli_time_format(v[i].created_at, when, sizeof(when));
      if (cli->json)
        json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?}", "queue_id",
                           v[i].queue_id, "state", states[s], "sender",
                           v[i].sender, "created", when, "code",
                           v[i].error_code, "text", v[i].error_text));
      else
        printf("%-22s %-6s %s %s %s%s%s\n", v[i].queue_id, states[s], when,
               v[i].sender, v[i].error_code ? v[i].error_code : "",
               v[i].error_text ? ": " : "",
               v[i].error_text ? v[i].error_text : "");
    }
    queue_entries_free(v, (size_t) n);
  }
  if (rc == EX_OK && cli->json)
    return cli_json_print(arr);
  json_decref(arr);
  return rc;
}

/* retry and drop */

/* Loads the message an operator named; reports an unknown id itself. */
static int cli_message_find(struct cli *cli, const char *queue_id,
                            struct queue_entry *e)
{
  int rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  rc = queue_find(cli->store, queue_id, NULL, e);
  if (rc == -ENOENT) {
    cli_error("no message has queue id %s", queue_id);
    return EX_NOINPUT;
  }
  if (rc < 0) {
    cli_error("cannot read %s", cli->cfg.database);
    return EX_IOERR;
  }
  return EX_OK;
}

/* Applies change (queue_retry or queue_drop) and its audit record in one
 * transaction. The agent may have moved the row meanwhile: EX_TEMPFAIL. */
static int cli_message_change(struct cli *cli, const struct queue_entry *e,
                              const char *reason, const char *action,
                              const char *detail)
{
  int rc;

  if (store_begin(cli->store) < 0) {
    cli_error("cannot lock %s", cli->cfg.database);
    return EX_IOERR;
  }
  rc = reason ? queue_drop(cli->store, e->rowid, reason)
              : queue_retry(cli->store, e->rowid);
  if (rc == 0 && audit_record(cli->store, cli->actor, action, detail) < 0)
    rc = -EIO;
  if (rc < 0 || store_commit(cli->store) < 0) {
    store_rollback(cli->store);
    if (rc == -EAGAIN) {
      cli_error("%s changed state meanwhile; look again with held",
                e->queue_id);
      return EX_TEMPFAIL;
    }
    cli_error("cannot update %s", cli->cfg.database);
    return EX_IOERR;
  }
  return EX_OK;
}

static int cli_retry(struct cli *cli, int argc, char **argv)
{
  struct queue_entry e;
  char *detail;
  int rc;

  if (argc != 1) {
    cli_error("retry takes one queue id");
    return EX_USAGE;
  }
  if ((rc = cli_message_find(cli, argv[0], &e)) != EX_OK)
    return rc;
  if (strcmp(e.state, "failed") != 0 && strcmp(e.state, "held") != 0) {
    cli_error("%s is %s; only failed or held mail can be retried", e.queue_id,
              e.state);
    queue_entry_free(&e);
    return EX_DATAERR;
  }
  if (access(e.spool_path, R_OK) < 0) {
    cli_error("%s cannot be sent again: its body is no longer kept (it "
              "failed with %s); Nextal must submit it again",
              e.queue_id, e.error_code ? e.error_code : "-");
    queue_entry_free(&e);
    return EX_NOINPUT;
  }
  detail = xasprintf("%s from %s: %s (%s) -> queued", e.queue_id, e.sender,
                     e.state, e.error_code ? e.error_code : "-");
  rc = cli_message_change(cli, &e, NULL, "mail_retry", detail);
  if (rc == EX_OK)
    printf("%s\n", detail);
  free(detail);
  queue_entry_free(&e);
  return rc;
}

static int cli_drop(struct cli *cli, const char *queue_id, const char *reason)
{
  struct queue_entry e;
  char *detail;
  int rc;

  if ((rc = cli_message_find(cli, queue_id, &e)) != EX_OK)
    return rc;
  if (strcmp(e.state, "sending") == 0) {
    cli_error("%s is being sent right now; try again in a minute", e.queue_id);
    queue_entry_free(&e);
    return EX_TEMPFAIL;
  }
  if (strcmp(e.state, "queued") != 0 && strcmp(e.state, "held") != 0) {
    cli_error("%s is %s already; only queued or held mail can be dropped",
              e.queue_id, e.state);
    queue_entry_free(&e);
    return EX_DATAERR;
  }
  detail = xasprintf("%s from %s: %s -> failed (dropped: %s)", e.queue_id,
                     e.sender, e.state, reason);
  rc = cli_message_change(cli, &e, reason, "mail_drop", detail);
  if (rc == EX_OK) {
    /* After the commit: a crash in between leaves a body that the
     * record's expiry removes, never a queued row without its body. */
    spool_remove(e.spool_path);
    printf("%s\n", detail);
  }
  free(detail);
  queue_entry_free(&e);
  return rc;
}

static int cli_link(struct cli *cli, int argc, char **argv)
{
  char norm[POLICY_ADDRESS_MAX];
  char msg[768];
  char *detail;
  int rc;

  if ((rc = cli_one_address(cli, "link", argc, argv, norm)) != EX_OK)
    return rc;
  if (cli->cfg.link_mode != CONFIG_LINK_APPLICATION) {
    cli_error("link_mode is delegated: %s links their own mailbox through "
              "the sign-in link Nextal gives them",
              norm);
    return EX_UNAVAILABLE;
  }
  rc = policy_link_application(&cli->cfg, cli->store, norm, msg, sizeof(msg));
  if (rc < 0) {
    cli_error("%s", msg);
    return rc == -EPERM    ? EX_NOPERM
           : rc == -ENOENT ? EX_NOUSER
                           : EX_UNAVAILABLE;
  }
  detail = xasprintf("%s: linked in application mode", norm);
  rc = cli_audit(cli, "link", detail);
  free(detail);
  printf("%s\n", msg);
  return rc;
}

static int cli_link_url(struct cli *cli, int argc, char **argv)
{
  char norm[POLICY_ADDRESS_MAX];
  char *url = NULL;
  int64_t exp = 0;
  int rc;

  if ((rc = cli_one_address(cli, "link-url", argc, argv, norm)) != EX_OK)
    return rc;
  rc = link_url_build(&cli->cfg, norm, (int64_t) time(NULL), &url, &exp);
  if (rc == -ENOKEY) {
    cli_error("[microsoft] link_secret is not set in %s", cli->config_path);
    return EX_CONFIG;
  }
  if (rc < 0)
    return EX_SOFTWARE;
  if (cli->json)
    rc = cli_json_print(json_pack("{s:s, s:s, s:I}", "address", norm, "url",
                                  url, "expires_at", (json_int_t) exp));
  else
    printf("%s\n", url);
  free(url);
  return rc;
}

/* Dispatch. The option-taking commands are wrapped here. */

static int cli_disable_run(struct cli *cli, int argc, char **argv);
static int cli_audit_run(struct cli *cli, int argc, char **argv);
static int cli_drop_run(struct cli *cli, int argc, char **argv);

static const struct cli_command cli_commands[] = {
  { "status", cli_status, "[--json]",
    "Shows the switch, the access mode, how many users are permitted and\n"
    "linked, the admin consent state, the last policy file the agent\n"
    "rejected, and held, queued and failed mail." },
  { "enable", cli_enable, "",
    "Switches the integration on. Users disconnected by a switch-off must\n"
    "link again; held mail stays held until released." },
  { "disable", cli_disable_run, "[--yes]",
    "Switches the integration off: every request is refused, every linked\n"
    "user is disconnected (tokens wiped, they must link again) and queued\n"
    "mail is held. Asks for confirmation unless --yes." },
  { "mode", cli_mode, "all|specific",
    "Sets who may use the integration: all users of the tenant, or only the\n"
    "users listed in the policy file." },
  { "allow", cli_allow, "ADDRESS...",
    "Adds addresses to the list of permitted users." },
  { "remove", cli_remove, "ADDRESS...",
    "Removes addresses from the list; their next request is refused and\n"
    "their queued mail is held." },
  { "list", cli_list, "[--json]",
    "Lists the permitted users with their link state." },
  { "check", cli_check, "[--json] ADDRESS",
    "Says whether SMTP, CalDAV and linking requests for ADDRESS would pass\n"
    "now, and which rule refuses them. Exits 0 if all pass, 1 if any is\n"
    "refused." },
  { "validate", cli_validate, "[--json] [FILE]",
    "Checks a policy file (by default the configured one) without applying\n"
    "it. Exits 0 if valid, 65 (EX_DATAERR) with the line if not." },
  { "unlink", cli_unlink, "ADDRESS",
    "Offboards one user: their link and tokens are removed and their queued\n"
    "and held mail fails with reason user_unlinked. Others are untouched." },
  { "audit", cli_audit_run, "[--json] [--since TIME]",
    "Shows the audit trail. TIME is YYYY-MM-DD[THH:MM:SS] (UTC) or a\n"
    "duration back from now such as 30m, 12h or 7d." },
  { "consent-link", cli_consent_link, "[--json]",
    "Prints the tenant-wide admin consent URL to send to the tenant's IT." },
  { "held", cli_held, "[--json]", "Lists held and failed mail." },
  { "retry", cli_retry, "QUEUEID",
    "Queues a failed or held message again, now, with a fresh count of\n"
    "attempts (held mail is held again if the policy still refuses its\n"
    "sender). Exits 66 (EX_NOINPUT) for an unknown id or a message whose\n"
    "body is gone, 65 (EX_DATAERR) for one in another state." },
  { "drop", cli_drop_run, "--reason TEXT QUEUEID",
    "Gives up on a queued or held message: it fails with code dropped and\n"
    "the reason, which Nextal sees in its status, and its body is removed.\n"
    "Exits 75 (EX_TEMPFAIL) while it is being sent." },
  { "link-url", cli_link_url, "[--json] ADDRESS",
    "Prints a start link for ADDRESS, valid for ten minutes: opening it\n"
    "links the mailbox (delegated mode: after signing in as ADDRESS)." },
  { "link", cli_link, "ADDRESS",
    "Application mode only: checks that the policy lets ADDRESS link and\n"
    "that Microsoft 365 has the mailbox, then records the link." },
};

#define CLI_NCOMMANDS (sizeof(cli_commands) / sizeof(*cli_commands))

static int cli_disable_run(struct cli *cli, int argc, char **argv)
{
  bool yes = false;
  int rc = cli_options(cli, &cli_commands[2], argc, argv, &yes, NULL);

  if (rc >= 0)
    return rc;
  return cli_disable(cli, argc - optind, argv + optind, yes);
}

static int cli_audit_run(struct cli *cli, int argc, char **argv)
{
  const char *since = NULL;
  int rc = cli_options(cli, &cli_commands[10], argc, argv, NULL, &since);

  if (rc >= 0)
    return rc;
  if (argc != optind) {
    cli_error("audit takes no arguments");
    return EX_USAGE;
  }
  return cli_audit_list(cli, since);
}

/* drop has its own option, --reason. */
static int cli_drop_run(struct cli *cli, int argc, char **argv)
{
  static const struct option opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "reason", required_argument, NULL, 'r' },
    { NULL, 0, NULL, 0 },
  };
  const struct cli_command *cmd = NULL;
  const char *reason = NULL;
  int c;

  for (size_t i = 0; cmd == NULL; i++) {
    if (cli_commands[i].run == cli_drop_run)
      cmd = &cli_commands[i];
  }
  optind = 0; /* GNU getopt: start over, argv[0] is the command */
  while ((c = getopt_long(argc, argv, "+hr:", opts, NULL)) != -1) {
    if (c == 'h') {
      printf("usage: nextal-policy [--config FILE] %s %s\n\n%s\n", cmd->name,
             cmd->usage, cmd->help);
      return EX_OK;
    }
    if (c != 'r') {
      fprintf(stderr, "usage: nextal-policy %s %s\n", cmd->name, cmd->usage);
      return EX_USAGE;
    }
    reason = optarg;
  }
  if (argc - optind != 1 || reason == NULL || reason[0] == '\0') {
    cli_error("drop takes --reason TEXT and one queue id");
    return EX_USAGE;
  }
  if (strlen(reason) > CLI_REASON_MAX) {
    cli_error("the reason is longer than %d bytes", CLI_REASON_MAX);
    return EX_USAGE;
  }
  return cli_drop(cli, argv[optind], reason);
}

static void cli_usage(FILE *f)
{
  fprintf(f,
          "usage: nextal-policy [--config FILE] [--json] COMMAND "
          "[ARGS]\n\n"
          "The agent configuration is FILE, $NEXTAL_AGENT_CONFIG or "
          "%s.\nCommands (each takes --help):\n",
          CLI_DEFAULT_CONFIG);
  for (size_t i = 0; i < CLI_NCOMMANDS; i++)
    fprintf(f, "  %-13s %s\n", cli_commands[i].name, cli_commands[i].usage);
}

static void cli_actor_init(struct cli *cli)
{
  struct passwd *pw = getpwuid(getuid());

  if (pw != NULL)
    snprintf(cli->actor, sizeof(cli->actor), "%s", pw->pw_name);
  else
    snprintf(cli->actor, sizeof(cli->actor), "uid:%u", (unsigned) getuid());
}

static int cli_dispatch(struct cli *cli, int argc, char **argv)
{
  for (size_t i = 0; i < CLI_NCOMMANDS; i++) {
    const struct cli_command *cmd = &cli_commands[i];
    int rc;

    if (strcmp(argv[0], cmd->name) != 0)
      continue;
    if (cmd->run == cli_disable_run || cmd->run == cli_audit_run
        || cmd->run == cli_drop_run)
      return cmd->run(cli, argc, argv);
    rc = cli_options(cli, cmd, argc, argv, NULL, NULL);
    if (rc >= 0)
      return rc;
    return cmd->run(cli, argc - optind, argv + optind);
  }
  cli_error("unknown command \"%s\"", argv[0]);
  cli_usage(stderr);
  return EX_USAGE;
}

int main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "config", required_argument, NULL, 'c' },
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct cli cli = { .config_path = getenv("NEXTAL_AGENT_CONFIG") };
  int c, rc;

  if (cli.config_path == NULL || cli.config_path[0] == '\0')
    cli.config_path = CLI_DEFAULT_CONFIG;
  while ((c = getopt_long(argc, argv, "+c:jh", opts, NULL)) != -1) {
    switch (c) {
      case 'c':
        cli.config_path = optarg;
        break;
      case 'j':
        cli.json = true;
        break;
      case 'h':
        cli_usage(stdout);
        return EX_OK;
      default:
        cli_usage(stderr);
        return EX_USAGE;
    }
  }
  if (optind >= argc) {
    cli_usage(stderr);
    return EX_USAGE;
  }
  /* The library logs errors to stderr; the CLI reports them itself. */
  log_set_level(LOG_LEVEL_ERROR);
  cli_actor_init(&cli);
  rc = cli_dispatch(&cli, argc - optind, argv + optind);
  store_close(cli.store);
  if (cli.config_loaded)
    config_free(&cli.cfg);
  return rc;
}
