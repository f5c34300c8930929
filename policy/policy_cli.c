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

#include "agent_heartbeat.h"
#include "audit.h"
#include "client_auth.h"
#include "config.h"
#include "link_url.h"
#include "links.h"
#include "log.h"
#include "policy.h"
#include "policy_edit.h"
#include "policy_link.h"
#include "queue.h"
#include "spool.h"
#include "store.h"
#include "token_cache.h"
#include "xalloc.h"

#define CLI_DEFAULT_CONFIG "/etc/nextal-agent/agent.ini"
#define CLI_HELD_MAX 1000   /* messages `held` lists at most */
#define CLI_REASON_MAX 1000 /* bytes of a drop reason */
#define CLI_ACTOR_MAX 128   /* "user (sudo by admin)" */

struct cli {
  const char *config_path;
  bool json;
  bool config_loaded;
  struct config cfg;
  struct store *store;
  char actor[CLI_ACTOR_MAX]; /* the OS user, for the audit trail */
  bool yes;                  /* --yes, for the commands that take it */
  const char *since;         /* --since, for audit */
};

struct cli_command {
  const char *name;
  int (*run)(struct cli *cli, int argc, char **argv);
  const char *usage; /* arguments after the name */
  const char *help;  /* one paragraph */
  unsigned opts;     /* CLI_OPT_* the command accepts besides --help/--json */
  int max_args;      /* arguments after the options; -1 for any number */
};

#define CLI_OPT_YES 1u
#define CLI_OPT_SINCE 2u

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

/* Says what is wrong with a command line, then the command's usage. */
static int cli_usage_error(const struct cli_command *cmd)
{
  fprintf(stderr, "usage: nextal-policy %s %s\n", cmd->name, cmd->usage);
  return EX_USAGE;
}

/* Parses a subcommand's options, wherever they stand after its name
 * (GNU getopt moves them before the other arguments; "--" ends them):
 * --help, --json, and --yes or --since where cmd accepts them. Refuses
 * more arguments than cmd takes, naming the first one too many. Returns
 * -1 to go on with the arguments at argv + optind, or an exit code. */
static int cli_options(struct cli *cli, const struct cli_command *cmd, int argc,
                       char **argv)
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
  while ((c = getopt_long(argc, argv, "hjys:", opts, NULL)) != -1) {
    if (c == 'h') {
      printf("usage: nextal-policy [--config FILE] %s %s\n\n%s\n", cmd->name,
             cmd->usage, cmd->help);
      return EX_OK;
    }
    if (c == 'j') {
      cli->json = true;
    } else if (c == 'y' && (cmd->opts & CLI_OPT_YES) != 0) {
      cli->yes = true;
    } else if (c == 's' && (cmd->opts & CLI_OPT_SINCE) != 0) {
      cli->since = optarg;
    } else {
      if (c == 'y' || c == 's')
        cli_error("%s does not take %s", cmd->name,
                  c == 'y' ? "--yes" : "--since");
      return cli_usage_error(cmd);
    }
  }
  if (cmd->max_args >= 0 && argc - optind > cmd->max_args) {
    if (cmd->max_args == 0)
      cli_error("%s takes no arguments; unexpected \"%s\"", cmd->name,
                argv[optind]);
    else
      cli_error("%s takes at most %d argument%s; unexpected \"%s\"", cmd->name,
                cmd->max_args, cmd->max_args == 1 ? "" : "s",
                argv[optind + cmd->max_args]);
    return cli_usage_error(cmd);
  }
  return -1;
}

/* status */

/* The policy_state row the agent maintains: the policy it applies
 * (digest empty while it has none) and the file it last rejected. */
struct cli_policy_state {
  int64_t loaded_at, error_at;
  char digest[65];
  char error[512];
  struct policy applied; /* enabled, mode and nusers; users is NULL */
  bool known; /* applied is recorded (not by an agent older than that) */
};

static void cli_policy_state_get(struct cli *cli, struct cli_policy_state *ps)
{
  sqlite3_stmt *st = NULL;
  const unsigned char *mode;

  memset(ps, 0, sizeof(*ps));
  if (sqlite3_prepare_v2(cli->store->db,
                         "SELECT loaded_at, digest, error, error_at, enabled,"
                         " mode, users FROM policy_state WHERE id=1",
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
    ps->applied.enabled = sqlite3_column_int(st, 4) != 0;
    mode = sqlite3_column_text(st, 5);
    ps->applied.mode = mode != NULL && strcmp((const char *) mode, "all") == 0
                           ? POLICY_MODE_ALL
                           : POLICY_MODE_SPECIFIC;
    ps->applied.nusers = (size_t) sqlite3_column_int64(st, 6);
    ps->known
        = ps->digest[0] == '\0' || sqlite3_column_type(st, 4) != SQLITE_NULL;
    snprintf(ps->applied.digest, sizeof(ps->applied.digest), "%s", ps->digest);
  }
  sqlite3_finalize(st);
}

/* What the agent's heartbeat file says (see include/agent_heartbeat.h). */
struct cli_agent_state {
  enum agent_heartbeat_state state;
  struct agent_heartbeat_record rec;
  bool pid_alive; /* looked at only when NOT_RESPONDING */
  bool unreadable;
  int64_t now;
  char *path;
};

static void cli_agent_state_get(struct cli *cli, struct cli_agent_state *as)
{
  int rc;

  memset(as, 0, sizeof(*as));
  as->path = agent_heartbeat_path(cli->cfg.database);
  as->now = store_now_ms();
  rc = agent_heartbeat_read(as->path, &as->rec);
  as->unreadable = rc < 0 && rc != -ENOENT;
  as->state = agent_heartbeat_judge(&as->rec, as->now, &as->pid_alive);
}

static const char *cli_agent_state_name(enum agent_heartbeat_state state)
{
  switch (state) {
    case AGENT_HEARTBEAT_RUNNING:
      return "running";
    case AGENT_HEARTBEAT_STOPPED:
      return "stopped";
    case AGENT_HEARTBEAT_NOT_RESPONDING:
      return "not_responding";
    case AGENT_HEARTBEAT_NONE:
      break;
  }
  return "unknown";
}

/* "12 s", "5 min", "2 h", "3 days": one unit, rounded down. */
static void cli_duration_format(int64_t ms, char *out, size_t len)
{
  int64_t s = ms > 0 ? ms / 1000 : 0;

  if (s < 120)
    snprintf(out, len, "%lld s", (long long) s);
  else if (s < 120 * 60)
    snprintf(out, len, "%lld min", (long long) (s / 60));
  else if (s < 48 * 3600)
    snprintf(out, len, "%lld h", (long long) (s / 3600));
  else
    snprintf(out, len, "%lld days", (long long) (s / 86400));
}

static void cli_agent_state_print(const struct cli_agent_state *as)
{
  char up[32], seen[32], when[32];

  cli_duration_format(as->now - as->rec.started_at, up, sizeof(up));
  cli_duration_format(as->now - as->rec.seen_at, seen, sizeof(seen));
  cli_time_format(as->rec.stopped_at, when, sizeof(when));
  switch (as->state) {
    case AGENT_HEARTBEAT_RUNNING:
      printf("agent:         running (pid %lld, up %s, last seen %s ago)\n",
             (long long) as->rec.pid, up, seen);
      break;
    case AGENT_HEARTBEAT_STOPPED:
      printf("agent:         not running (stopped cleanly at %s)\n", when);
      break;
    case AGENT_HEARTBEAT_NOT_RESPONDING:
      printf("agent:         not responding (last seen %s ago; pid %lld %s)\n",
             seen, (long long) as->rec.pid,
             as->pid_alive ? "alive but silent" : "not alive");
      break;
    case AGENT_HEARTBEAT_NONE:
      if (as->unreadable)
        printf("agent:         unknown (%s cannot be read)\n", as->path);
      else
        printf("agent:         not running (never started on this database: "
               "no %s)\n",
               as->path);
      break;
  }
}

/* Adds what the heartbeat says to the "agent" object of status --json. */
static void cli_agent_state_json(const struct cli_agent_state *as, json_t *o)
{
  char started[32], seen[32], stopped[32];
  bool known = as->state != AGENT_HEARTBEAT_NONE;

  cli_time_format(as->rec.started_at, started, sizeof(started));
  cli_time_format(as->rec.seen_at, seen, sizeof(seen));
  cli_time_format(as->rec.stopped_at, stopped, sizeof(stopped));
  json_object_set_new(o, "state", json_string(cli_agent_state_name(as->state)));
  json_object_set_new(o, "running",
                      json_boolean(as->state == AGENT_HEARTBEAT_RUNNING));
  json_object_set_new(
      o, "pid", known ? json_integer((json_int_t) as->rec.pid) : json_null());
  json_object_set_new(o, "version",
                      known ? json_string(as->rec.version) : json_null());
  json_object_set_new(o, "started_at",
                      known ? json_string(started) : json_null());
  json_object_set_new(o, "last_seen", known ? json_string(seen) : json_null());
  json_object_set_new(
      o, "last_seen_s",
      known ? json_integer((json_int_t) ((as->now - as->rec.seen_at) / 1000))
            : json_null());
  json_object_set_new(o, "stopped_at",
                      as->rec.stopped_at > 0 ? json_string(stopped)
                                             : json_null());
  json_object_set_new(o, "pid_alive",
                      as->state == AGENT_HEARTBEAT_NOT_RESPONDING
                          ? json_boolean(as->pid_alive)
                          : json_null());
  json_object_set_new(o, "heartbeat_file", json_string(as->path));
}

/* Whether the integration is active: the agent running with a valid
 * policy that has the switch on, admin consent recorded and a token
 * obtainable. *why says what is missing ("yes" when nothing is). With the
 * agent down, the token and consent lines are this tool's own checks, and
 * whether the agent would deliver cannot be checked at all. */
static bool cli_status_active(const struct cli_agent_state *as,
                              const struct policy *policy,
                              const struct cli_policy_state *ps,
                              enum tenant_consent_state consent, bool token_ok,
                              const char **why)
{
  bool consented = consent == TENANT_CONSENT_GRANTED;

  if (as->state == AGENT_HEARTBEAT_NOT_RESPONDING)
    *why = "no: the agent is not responding, so whether it delivers cannot\n"
           "               be checked; token and admin consent above are "
           "this tool's checks";
  else if (as->state != AGENT_HEARTBEAT_RUNNING)
    *why = "no: the agent is not running, so whether it delivers cannot be\n"
           "               checked; token and admin consent above are this "
           "tool's checks";
  else if (policy != NULL && !policy->enabled)
    *why = "no: the integration is switched off (org_disabled); "
           "nextal-policy enable";
  else if (policy == NULL && ps->digest[0] == '\0')
    *why = "no: the agent has no valid policy, so it refuses everything";
  else if (!consented && !token_ok)
    *why = "no: admin consent is not recorded and no token can be obtained";
  else if (!token_ok)
    *why = "no: no token can be obtained";
  else if (!consented)
    *why = "no: admin consent is not recorded (nextal-policy consent-link)";
  else
    *why = "yes";
  return strcmp(*why, "yes") == 0;
}

/* Users past this many are summed up in status's text (--json lists
 * every one): a switch-off marks the whole organisation at once. */
#define CLI_STATUS_RELINK_SHOWN 50

/* The users who must link again, with why, for status: a JSON array of
 * {address, reason}, or lines under "linked users:". Mode all lists no
 * users, so no other command names them. Returns 0 or -EIO. */
static int cli_status_relink(struct cli *cli, json_t *arr)
{
  struct link_entry *links = NULL;
  size_t nlinks = 0, shown = 0;

  if (links_list(cli->store, &links, &nlinks) < 0)
    return -EIO;
  for (size_t i = 0; i < nlinks; i++) {
    const struct link_entry *e = &links[i];

    if (e->state != POLICY_LINK_NEEDS_RELINK)
      continue;
    if (arr != NULL)
      json_array_append_new(arr, json_pack("{s:s, s:s?}", "address", e->address,
                                           "reason", e->reason));
    else if (shown++ < CLI_STATUS_RELINK_SHOWN)
      printf("  must link again: %s (%s)\n", e->address,
             e->reason ? e->reason : "no reason recorded");
  }
  if (arr == NULL && shown > CLI_STATUS_RELINK_SHOWN)
    printf("  ... and %zu more (status --json lists all)\n",
           shown - CLI_STATUS_RELINK_SHOWN);
  links_entries_free(links, nlinks);
  return 0;
}

/* The policy status describes: with the agent running, the one it
 * applies (NULL while it has none); else the file's, which the agent
 * applies when it starts (NULL when invalid). *source names which:
 * "agent", "file" or "none". */
static const struct policy *cli_status_policy(const struct cli_agent_state *as,
                                              const struct cli_policy_state *ps,
                                              const struct policy *file,
                                              const char **source)
{
  if (as->state == AGENT_HEARTBEAT_RUNNING && ps->known) {
    *source = ps->digest[0] != '\0' ? "agent" : "none";
    return ps->digest[0] != '\0' ? &ps->applied : NULL;
  }
  *source = file != NULL ? "file" : "none";
  return file;
}

/* What the agent does about the policy, for a person: what it applied
 * and when, and what becomes of a file that is invalid or not yet
 * applied. file is NULL when the file is invalid. */
static void cli_status_applied_print(const struct cli_agent_state *as,
                                     const struct cli_policy_state *ps,
                                     const struct policy *file)
{
  bool running = as->state == AGENT_HEARTBEAT_RUNNING;
  char when[32];

  if (ps->error[0] != '\0') {
    cli_time_format(ps->error_at, when, sizeof(when));
    printf("policy error:  the agent rejected the file at %s: %s\n", when,
           ps->error);
  }
  if (running && ps->known && ps->digest[0] == '\0') {
    printf("agent applied: NONE: the agent has no valid policy, so it refuses "
           "every\n               request (no_policy) %s\n",
           file != NULL ? "until it reads the file, within a second"
                        : "until the file is fixed");
    return;
  }
  cli_time_format(ps->loaded_at, when, sizeof(when));
  printf("agent applied: %s%s%.12s%s\n", when, ps->digest[0] ? " (" : "",
         ps->digest, ps->digest[0] ? ")" : "");
  if (file == NULL && running)
    printf("               the file is invalid: the agent keeps the last valid "
           "policy,\n               applied then, until the file is fixed\n");
  else if (file == NULL)
    printf("               the file is invalid: an agent starting now has no "
           "valid\n               policy and refuses every request "
           "(no_policy)\n");
  else if (ps->digest[0] && strcmp(ps->digest, file->digest) != 0)
    printf("               the file has changed since; the agent applies "
           "it %s\n",
           running ? "within a second" : "when it starts");
}

/* The switch, mode and list lines of status, for the policy in force. */
static void cli_status_policy_print(const struct policy *policy,
                                    const char *source, const char *file_err)
{
  if (policy != NULL) {
    printf("integration:   %s\n", policy->enabled ? "enabled" : "DISABLED");
    printf("mode:          %s\n",
           policy->mode == POLICY_MODE_ALL ? "all users" : "specific users");
    printf("permitted:     %zu listed%s\n", policy->nusers,
           policy->mode == POLICY_MODE_ALL ? " (not used in mode all)" : "");
  } else if (strcmp(source, "none") == 0 && file_err[0] == '\0') {
    printf("integration:   NO POLICY: every request is refused (no_policy)\n");
  }
  if (file_err[0] != '\0')
    printf("policy file:   INVALID: %s\n", file_err);
}

/* status --json: the switch, mode and list of the policy in force (null
 * without one), where it comes from, and the file's own verdict. */
static void cli_status_policy_json(json_t *o, const struct policy *policy,
                                   const char *source,
                                   const struct cli_policy_state *ps,
                                   const char *file_err)
{
  char when[32];
  json_t *agent = json_object_get(o, "agent");

  json_object_set_new(o, "enabled",
                      policy ? json_boolean(policy->enabled) : json_null());
  json_object_set_new(
      o, "mode",
      policy ? json_string(policy->mode == POLICY_MODE_ALL ? "all" : "specific")
             : json_null());
  json_object_set_new(o, "permitted",
                      policy ? json_integer((json_int_t) policy->nusers)
                             : json_null());
  json_object_set_new(o, "policy_source", json_string(source));
  json_object_set_new(o, "file_valid", json_boolean(file_err[0] == '\0'));
  cli_time_format(ps->loaded_at, when, sizeof(when));
  json_object_set_new(agent, "applied_at",
                      ps->digest[0] ? json_string(when) : json_null());
}

static int cli_status(struct cli *cli, int argc, char **argv)
{
  struct policy *file = NULL;
  const struct policy *policy;
  struct cli_policy_state ps;
  struct cli_agent_state as;
  struct tenant_consent consent;
  char err[512] = "", when[32], token_msg[512];
  int64_t linked = 0, relink = 0, held = 0, queued = 0, failed = 0;
  bool token_ok, active;
  const char *active_why, *source;
  int rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  if (policy_load(cli->cfg.policy_file, &file, err, sizeof(err)) == 0)
    err[0] = '\0';
  token_ok
      = policy_link_token_check(&cli->cfg, token_msg, sizeof(token_msg)) == 0;
  cli_policy_state_get(cli, &ps);
  cli_agent_state_get(cli, &as);
  if (tenant_consent_get(cli->store, &consent) < 0
      || links_count(cli->store, &linked, &relink) < 0
      || queue_count(cli->store, "held", &held) < 0
      || queue_count(cli->store, "queued", &queued) < 0
      || queue_count(cli->store, "failed", &failed) < 0) {
    cli_error("cannot read %s", cli->cfg.database);
    policy_free(file);
    free(as.path);
    return EX_IOERR;
  }
  policy = cli_status_policy(&as, &ps, file, &source);
  active = cli_status_active(&as, policy, &ps, consent.state, token_ok,
                             &active_why);

  if (cli->json) {
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:{s:s, s:s?, s:s?}, s:{s:s?, s:s?}, "
        "s:s?, s:{s:I, s:I, s:I}}",
        "policy_file", cli->cfg.policy_file, "linked", (json_int_t) linked,
        "needs_relink", (json_int_t) relink, "consent", "state",
        tenant_consent_state_name(consent.state), "tenant",
        consent.tenant[0] ? consent.tenant : NULL, "error",
        consent.error[0] ? consent.error : NULL, "agent", "digest",
        ps.digest[0] ? ps.digest : NULL, "load_error",
        ps.error[0] ? ps.error : NULL, "file_error", err[0] ? err : NULL,
        "messages", "held", (json_int_t) held, "queued", (json_int_t) queued,
        "failed", (json_int_t) failed);
    cli_status_policy_json(o, policy, source, &ps, err);
    json_object_set_new(
        o, "token",
        json_pack("{s:b, s:s}", "ok", token_ok, "detail", token_msg));
    json_object_set_new(o, "active", json_boolean(active));
    json_object_set_new(o, "relink", json_array());
    if (cli_status_relink(cli, json_object_get(o, "relink")) < 0) {
      cli_error("cannot read %s", cli->cfg.database);
      json_decref(o);
      policy_free(file);
      free(as.path);
      return EX_IOERR;
    }
    cli_agent_state_json(&as, json_object_get(o, "agent"));
    json_object_set_new(
        o, "link_mode",
        json_string(cli->cfg.link_mode == CONFIG_LINK_APPLICATION
                        ? "application"
                        : "delegated"));
    policy_free(file);
    free(as.path);
    return cli_json_print(o);
  }

  cli_agent_state_print(&as);
  cli_status_policy_print(policy, source, err);
  printf("linked users:  %lld linked, %lld must link again\n",
         (long long) linked, (long long) relink);
  if (relink > 0 && cli_status_relink(cli, NULL) < 0)
    printf("  (cannot read who must link again)\n");
  cli_time_format(consent.at, when, sizeof(when));
  printf("admin consent: %s%s%s%s%s\n",
         tenant_consent_state_name(consent.state), consent.at ? " at " : "",
         consent.at ? when : "", consent.error[0] ? ": " : "", consent.error);
  printf("token:         %s: %s\n", token_ok ? "ok" : "NOT OBTAINED",
         token_msg);
  printf("active:        %s\n", active_why);
  cli_status_applied_print(&as, &ps, file);
  printf("messages:      %lld held, %lld queued, %lld failed\n",
         (long long) held, (long long) queued, (long long) failed);
  policy_free(file);
  free(as.path);
  return EX_OK;
}

/* enable, disable, mode */

struct cli_set {
  bool set_enabled;
  bool enabled;
  enum policy_mode mode;
  bool changed; /* set by the edit: the file differs afterwards */
};

static int cli_set_cb(struct policy_edit *edit, void *arg, bool *changed)
{
  struct cli_set *set = arg;
  int rc;

  if (set->set_enabled)
    rc = policy_edit_set_enabled(edit, set->enabled, changed);
  else
    rc = policy_edit_set_mode(edit, set->mode, changed);
  set->changed = *changed;
  return rc;
}

/* Lets cb edit the policy file under its lock; the running agent picks a
 * change up. The caller audits what changed, and only that. */
static int cli_edit(struct cli *cli, policy_edit_cb cb, void *arg)
{
  char err[512];
  int rc = policy_edit_file(cli->cfg.policy_file, cb, arg, err, sizeof(err));

  if (rc < 0) {
    cli_error("%s", err);
    return rc == -EINVAL ? EX_DATAERR : rc == -ENOENT ? EX_NOINPUT : EX_IOERR;
  }
  return EX_OK;
}

/* What becomes of held mail, said the same way by every text. */
#define CLI_HELD_FATE                                                          \
  "Held mail is sent by itself once the integration is on and its sender "     \
  "has\nlinked again (and is listed, in mode specific), unless an "            \
  "administrator\nfails it first with: nextal-policy drop --all-held "         \
  "--reason TEXT\n"

static int cli_enable(struct cli *cli, int argc, char **argv)
{
  struct cli_set set = { .set_enabled = true, .enabled = true };
  int rc = cli_open(cli);

  if (rc == EX_OK)
    rc = cli_edit(cli, cli_set_cb, &set);
  if (rc != EX_OK)
    return rc;
  if (!set.changed) {
    printf("The integration is already enabled; nothing changed.\n");
    return EX_OK;
  }
  rc = cli_audit(cli, "policy_enable", "enabled = true");
  if (rc == EX_OK)
    printf("The integration is enabled. Users disconnected by the switch-off "
           "must link\nagain. " CLI_HELD_FATE);
  return rc;
}

/* Says what switching off does, before anything is done. On stderr, with
 * the prompt, so that it reaches the administrator even when stdout goes
 * to a file. */
static void cli_disable_warn(int64_t linked, int64_t queued)
{
  fprintf(
      stderr,
      "Switching the integration off:\n"
      "- stops all Graph traffic at once: every SMTP, CalDAV and "
      "linking request\n  is refused;\n"
      "- disconnects every linked user (%lld now): their tokens are "
      "wiped, and each\n  must link again after the integration is "
      "back on;\n"
      "- holds queued mail (%lld now), neither sent nor lost.\n" CLI_HELD_FATE,
      (long long) linked, (long long) queued);
}

/* Asks on the terminal; false unless the person types yes. */
static bool cli_confirm(const char *what)
{
  char answer[16];

  fprintf(stderr, "Type \"yes\" to %s: ", what);
  if (fgets(answer, sizeof(answer), stdin) == NULL)
    return false;
  answer[strcspn(answer, "\r\n")] = '\0';
  return strcasecmp(answer, "yes") == 0;
}

/* Whether the policy file already has the switch off (false if it cannot
 * be read: then the edit says what is wrong). */
static bool cli_disabled_already(struct cli *cli)
{
  struct policy *policy = NULL;
  char err[512];
  bool off = false;

  if (policy_load(cli->cfg.policy_file, &policy, err, sizeof(err)) == 0)
    off = !policy->enabled;
  policy_free(policy);
  return off;
}

static int cli_disable(struct cli *cli, int argc, char **argv)
{
  bool yes = cli->yes;
  struct cli_set set = { .set_enabled = true, .enabled = false };
  int64_t linked = 0, relink = 0, queued = 0;
  char detail[128];
  int n, rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  links_count(cli->store, &linked, &relink);
  queue_count(cli->store, "queued", &queued);
  if (linked == 0 && cli_disabled_already(cli)) {
    printf("The integration is already switched off; nothing changed.\n");
    return EX_OK;
  }
  cli_disable_warn(linked, queued);
  if (!yes && !isatty(STDIN_FILENO)) {
    cli_error("disable disconnects every linked user; confirm with --yes "
              "when not on a terminal");
    return EX_USAGE;
  }
  if (!yes && !cli_confirm("switch off")) {
    fprintf(stderr, "Nothing changed.\n");
    return EX_TEMPFAIL;
  }
  rc = cli_edit(cli, cli_set_cb, &set);
  if (rc == EX_OK && set.changed)
    rc = cli_audit(cli, "policy_disable", "enabled = false");
  if (rc != EX_OK)
    return rc;

  /* Wipe tokens now rather than when the agent applies the file, so they
   * are gone even if the agent is not running; also when the switch was
   * off already, as the agent would on its next start. */
  n = links_mark_all_relink(cli->store, "org_disabled");
  if (n < 0) {
    cli_error("the switch is off but stored tokens could not be wiped");
    return EX_IOERR;
  }
  snprintf(detail, sizeof(detail),
           "%d linked users disconnected, tokens wiped (org_disabled)", n);
  if (n > 0 && (rc = cli_audit(cli, "users_disconnected", detail)) != EX_OK)
    return rc;
  if (!set.changed && n == 0)
    printf("The integration is already switched off; nothing changed.\n");
  else
    printf("The integration is switched off%s. %d linked users were "
           "disconnected; queued mail is held.\n",
           set.changed ? "" : " (it was already)", n);
  return EX_OK;
}

static int cli_mode(struct cli *cli, int argc, char **argv)
{
  struct cli_set set = { .set_enabled = false };
  const char *name;
  char detail[32];
  int rc;

  if (argc != 1) {
    cli_error("mode takes one argument: all or specific");
    return EX_USAGE;
  }
  if (strcmp(argv[0], "all") != 0 && strcmp(argv[0], "specific") != 0) {
    cli_error("mode is all or specific (in lower case), not \"%s\"", argv[0]);
    return EX_USAGE;
  }
  set.mode
      = strcmp(argv[0], "all") == 0 ? POLICY_MODE_ALL : POLICY_MODE_SPECIFIC;
  name = set.mode == POLICY_MODE_ALL ? "all users" : "specific users";
  rc = cli_open(cli);
  if (rc == EX_OK)
    rc = cli_edit(cli, cli_set_cb, &set);
  if (rc != EX_OK)
    return rc;
  if (!set.changed) {
    printf("Access mode is already %s; nothing changed.\n", name);
    return EX_OK;
  }
  snprintf(detail, sizeof(detail), "mode = %s", argv[0]);
  rc = cli_audit(cli, "policy_mode", detail);
  if (rc == EX_OK)
    printf("Access mode is now %s.\n", name);
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

static bool cli_address_is_ascii(const char *address)
{
  for (const unsigned char *p = (const unsigned char *) address; *p; p++) {
    if (*p >= 0x80)
      return false;
  }
  return true;
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
    /* The policy file refuses it too; saying so here names the address
     * rather than a line of a file that was never written. */
    if (!remove && !cli_address_is_ascii(norm)) {
      cli_error("\"%s\" has non-ASCII characters; the agent's SMTP "
                "listener has no SMTPUTF8, so this user could never send; "
                "nothing changed",
                argv[i]);
      free(detail);
      return EX_DATAERR;
    }
  }
  rc = cli_open(cli);
  u.done = xcalloc((size_t) argc, sizeof(*u.done));
  if (rc == EX_OK)
    rc = cli_edit(cli, cli_users_cb, &u);
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
    cli_error("%s\n(a running agent keeps the last valid policy it applied, or "
              "refuses\nevery request with no_policy if it has none: "
              "nextal-policy status says which)",
              err);
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

/* Accepts YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS with or without the "Z" that
 * audit prints (UTC either way) or a duration back from now: 90s, 30m,
 * 12h, 7d. */
static int cli_parse_since(const char *text, int64_t *out)
{
  struct tm tm = { 0 };
  const char *end;
  char *unit = NULL;
  long n;

  end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end != NULL && strcmp(end, "Z") == 0)
    end++;
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

static int cli_audit_list(struct cli *cli, int argc, char **argv)
{
  const char *since = cli->since;
  struct audit_entry *v = NULL;
  size_t n = 0;
  int64_t since_ms = 0;
  json_t *arr;
  int rc;

  if (since != NULL && cli_parse_since(since, &since_ms) < 0) {
    cli_error("--since takes YYYY-MM-DD[THH:MM:SS[Z]] (UTC) or a duration "
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
  char *tenant = NULL, *redirect = NULL, *query = NULL, *url = NULL;
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
  tenant = curl_easy_escape(NULL, cli->cfg.tenant, 0);
  if (tenant == NULL)
    goto out;
  redirect = xasprintf("%s/oauth/consent", cli->cfg.http_public_url);
  client_auth_form_field(&query, "client_id", cli->cfg.client_id);
  client_auth_form_field(&query, "scope", TOKEN_CACHE_SCOPE);
  client_auth_form_field(&query, "redirect_uri", redirect);
  client_auth_form_field(&query, "state", state);
  url = xasprintf("%s/%s/v2.0/adminconsent?%s", cli->cfg.login_base_url, tenant,
                  query);
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
  free(query);
  free(redirect);
  curl_free(tenant);
  return rc;
}

/* held */

static int cli_held(struct cli *cli, int argc, char **argv)
{
  static const char *const states[] = { "held", "failed" };
  json_t *arr = json_array();
  int rc = cli_open(cli);
  int listed = 0;

  for (size_t s = 0; rc == EX_OK && s < 2; s++) {
    struct queue_entry *v = NULL;
    int n = queue_list(cli->store, states[s], &v, CLI_HELD_MAX);

    if (n < 0) {
      rc = EX_IOERR;
      break;
    }
    listed += n;
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
  /* JSON says "none" with an empty list, a person with a sentence. */
  if (rc == EX_OK && cli->json)
    return cli_json_print(arr);
  if (rc == EX_OK && listed == 0)
    printf("No held or failed mail.\n");
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

/* A message drop --all-held failed, for the report after the commit. */
struct cli_dropped {
  char queue_id[QUEUE_ID_SIZE];
  char *sender;
  char *spool_path;
};

static void cli_dropped_free(struct cli_dropped *v, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    free(v[i].sender);
    free(v[i].spool_path);
  }
  free(v);
}

/* Fails every held message in one transaction with one audit record, so
 * that the administrator's decision is taken whole or not at all; the
 * agent cannot release a row meanwhile, as the transaction holds the
 * write lock. Returns 0 with the failed messages in *out (the caller
 * removes their bodies), or -EIO with nothing changed. */
static int cli_drop_held_all(struct cli *cli, const char *reason,
                             struct cli_dropped **out, size_t *nout)
{
  struct cli_dropped *done = NULL;
  struct queue_entry *v = NULL;
  size_t ndone = 0;
  char *detail = NULL;
  int n, rc = -EIO;

  if (store_begin(cli->store) < 0)
    return -EIO;
  /* Each batch leaves state held, so the next one reads the rest. */
  while ((n = queue_list(cli->store, "held", &v, CLI_HELD_MAX)) > 0) {
    int i = 0;

    done = xrealloc(done, sizeof(*done) * (ndone + (size_t) n));
    for (; i < n && queue_drop(cli->store, v[i].rowid, reason) == 0; i++) {
      struct cli_dropped *d = &done[ndone++];

      memcpy(d->queue_id, v[i].queue_id, sizeof(d->queue_id));
      d->sender = xstrdup(v[i].sender);
      d->spool_path = xstrdup(v[i].spool_path);
    }
    queue_entries_free(v, (size_t) n);
    if (i < n)
      goto out;
  }
  if (n < 0)
    goto out;
  if (ndone == 0) {
    /* The agent released the last of it meanwhile: nothing to record. */
    store_rollback(cli->store);
    *out = NULL;
    *nout = 0;
    return 0;
  }
  detail
      = xasprintf("%zu held messages -> failed (dropped: %s)", ndone, reason);
  if (audit_record(cli->store, cli->actor, "mail_drop_held", detail) == 0
      && store_commit(cli->store) == 0)
    rc = 0;

out:
  free(detail);
  if (rc < 0) {
    store_rollback(cli->store);
    cli_dropped_free(done, ndone);
    return rc;
  }
  *out = done;
  *nout = ndone;
  return 0;
}

static int cli_drop_all(struct cli *cli, const char *reason, bool yes)
{
  struct cli_dropped *done = NULL;
  size_t ndone = 0;
  int64_t held = 0;
  int rc = cli_open(cli);

  if (rc != EX_OK)
    return rc;
  if (queue_count(cli->store, "held", &held) < 0) {
    cli_error("cannot read %s", cli->cfg.database);
    return EX_IOERR;
  }
  if (held == 0) {
    printf("No mail is held; nothing changed.\n");
    return EX_OK;
  }
  fprintf(stderr,
          "Every held message (%lld now) fails with code dropped and the "
          "reason \"%s\",\nwhich Nextal sees in its status; none of them "
          "is sent and their bodies are\nremoved.\n",
          (long long) held, reason);
  if (!yes && !isatty(STDIN_FILENO)) {
    cli_error("drop --all-held fails mail for good; confirm with --yes "
              "when not on a terminal");
    return EX_USAGE;
  }
  if (!yes && !cli_confirm("fail the held mail")) {
    fprintf(stderr, "Nothing changed.\n");
    return EX_TEMPFAIL;
  }

  if (cli_drop_held_all(cli, reason, &done, &ndone) < 0) {
    cli_error("cannot update %s; nothing changed", cli->cfg.database);
    return EX_IOERR;
  }
  if (ndone == 0) {
    printf("No mail is held any more; nothing changed.\n");
    return EX_OK;
  }
  /* After the commit, as for one message. */
  for (size_t i = 0; i < ndone; i++) {
    spool_remove(done[i].spool_path);
    printf("%s from %s: held -> failed (dropped: %s)\n", done[i].queue_id,
           done[i].sender, reason);
  }
  printf("%zu held messages failed (dropped: %s).\n", ndone, reason);
  cli_dropped_free(done, ndone);
  return EX_OK;
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

/* Dispatch. drop parses its own options; the others share cli_options. */

static int cli_drop_run(struct cli *cli, int argc, char **argv);

static const struct cli_command cli_commands[] = {
  { "status", cli_status, "[--json]",
    "Shows the switch, the access mode and how many users are permitted\n"
    "in the policy the running agent applies (the file's when it is not\n"
    "running), whether the file is valid and what the agent does if not,\n"
    "how many users are linked, who must link again and why (every mode;\n"
    "the text shows the first 50, --json all), the admin consent state,\n"
    "the last policy file the agent rejected, and held, queued and failed\n"
    "mail.",
    0, 0 },
  { "enable", cli_enable, "",
    "Switches the integration on. Users disconnected by a switch-off must\n"
    "link again. Held mail is sent by itself once its sender has linked\n"
    "again (and is listed, in mode specific), unless drop --all-held\n"
    "--reason TEXT fails it first. Changes nothing, and says so, if the\n"
    "integration is on already.",
    0, 0 },
  { "disable", cli_disable, "[--yes]",
    "Switches the integration off: every request is refused, every linked\n"
    "user is disconnected (tokens wiped, they must link again) and queued\n"
    "mail is held. Says all this first, then asks for confirmation unless\n"
    "--yes.",
    CLI_OPT_YES, 0 },
  { "mode", cli_mode, "all|specific",
    "Sets who may use the integration: all users of the tenant, or only the\n"
    "users listed in the policy file.",
    0, 1 },
  { "allow", cli_allow, "ADDRESS...",
    "Adds addresses to the list of permitted users.", 0, -1 },
  { "remove", cli_remove, "ADDRESS...",
    "Removes addresses from the list; their next request is refused and\n"
    "their queued mail is held.",
    0, -1 },
  { "list", cli_list, "[--json]",
    "Lists the permitted users with their link state.", 0, 0 },
  { "check", cli_check, "[--json] ADDRESS",
    "Says whether SMTP, CalDAV and linking requests for ADDRESS would pass\n"
    "now, and which rule refuses them. Exits 0 if all pass, 1 if any is\n"
    "refused.",
    0, 1 },
  { "validate", cli_validate, "[--json] [FILE]",
    "Checks a policy file (by default the configured one) without applying\n"
    "it. Exits 0 if valid, 65 (EX_DATAERR) with the line if not.",
    0, 1 },
  { "unlink", cli_unlink, "ADDRESS",
    "Offboards one user: their link and tokens are removed and their queued\n"
    "and held mail fails with reason user_unlinked. Others are untouched.",
    0, 1 },
  { "audit", cli_audit_list, "[--json] [--since TIME]",
    "Shows the audit trail. TIME is YYYY-MM-DD[THH:MM:SS[Z]] (UTC) or a\n"
    "duration back from now such as 30m, 12h or 7d.",
    CLI_OPT_SINCE, 0 },
  { "consent-link", cli_consent_link, "[--json]",
    "Prints the tenant-wide admin consent URL to send to the tenant's IT.", 0,
    0 },
  { "held", cli_held, "[--json]", "Lists held and failed mail.", 0, 0 },
  { "retry", cli_retry, "QUEUEID",
    "Queues a failed or held message again, now, with a fresh count of\n"
    "attempts (held mail is held again if the policy still refuses its\n"
    "sender). Exits 66 (EX_NOINPUT) for an unknown id or a message whose\n"
    "body is gone, 65 (EX_DATAERR) for one in another state.",
    0, 1 },
  { "drop", cli_drop_run,
    "--reason TEXT QUEUEID | --all-held --reason TEXT "
    "[--yes]",
    "Gives up on a queued or held message: it fails with code dropped and\n"
    "the reason, which Nextal sees in its status, and its body is removed.\n"
    "Exits 75 (EX_TEMPFAIL) while it is being sent. With --all-held, every\n"
    "held message of the organisation fails so, in one step with one audit\n"
    "record; it asks for confirmation unless --yes.",
    0, -1 },
  { "link-url", cli_link_url, "[--json] ADDRESS",
    "Prints a start link for ADDRESS, valid for ten minutes: opening it\n"
    "links the mailbox (delegated mode: after signing in as ADDRESS).",
    0, 1 },
  { "link", cli_link, "ADDRESS",
    "Application mode only: checks that the policy lets ADDRESS link and\n"
    "that Microsoft 365 has the mailbox, then records the link.",
    0, 1 },
};

#define CLI_NCOMMANDS (sizeof(cli_commands) / sizeof(*cli_commands))

/* drop has its own options: --reason, --all-held and --yes. */
static int cli_drop_run(struct cli *cli, int argc, char **argv)
{
  static const struct option opts[] = {
    { "help", no_argument, NULL, 'h' },
    { "reason", required_argument, NULL, 'r' },
    { "all-held", no_argument, NULL, 'a' },
    { "yes", no_argument, NULL, 'y' },
    { NULL, 0, NULL, 0 },
  };
  const struct cli_command *cmd = NULL;
  const char *reason = NULL;
  bool all = false, yes = false;
  int c;

  for (size_t i = 0; cmd == NULL; i++) {
    if (cli_commands[i].run == cli_drop_run)
      cmd = &cli_commands[i];
  }
  optind = 0; /* GNU getopt: start over, argv[0] is the command */
  while ((c = getopt_long(argc, argv, "hr:ay", opts, NULL)) != -1) {
    if (c == 'h') {
      printf("usage: nextal-policy [--config FILE] %s %s\n\n%s\n", cmd->name,
             cmd->usage, cmd->help);
      return EX_OK;
    }
    if (c == 'r') {
      reason = optarg;
    } else if (c == 'a') {
      all = true;
    } else if (c == 'y') {
      yes = true;
    } else {
      return cli_usage_error(cmd);
    }
  }
  if (argc - optind > (all ? 0 : 1)) {
    cli_error("drop %s; unexpected \"%s\"",
              all ? "--all-held takes no queue id" : "takes one queue id",
              argv[optind + (all ? 0 : 1)]);
    return cli_usage_error(cmd);
  }
  if (argc - optind != (all ? 0 : 1) || reason == NULL || reason[0] == '\0'
      || (yes && !all)) {
    cli_error("drop takes --reason TEXT and one queue id, or --all-held "
              "--reason TEXT [--yes]");
    return EX_USAGE;
  }
  if (strlen(reason) > CLI_REASON_MAX) {
    cli_error("the reason is longer than %d bytes", CLI_REASON_MAX);
    return EX_USAGE;
  }
  if (all)
    return cli_drop_all(cli, reason, yes);
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

/* The OS user running the CLI, and under sudo the administrator behind
 * it, e.g. "root (sudo by alice)". SUDO_USER comes from the environment,
 * so it is kept beside the real user, never in its place. */
static void cli_actor_init(struct cli *cli)
{
  struct passwd *pw = getpwuid(getuid());
  const char *sudo_user = getenv("SUDO_USER");
  char name[CLI_ACTOR_MAX / 2];

  if (pw != NULL)
    snprintf(name, sizeof(name), "%s", pw->pw_name);
  else
    snprintf(name, sizeof(name), "uid:%u", (unsigned) getuid());
  if (sudo_user != NULL && sudo_user[0] != '\0' && strcmp(sudo_user, name) != 0)
    snprintf(cli->actor, sizeof(cli->actor), "%s (sudo by %.*s)", name,
             CLI_ACTOR_MAX / 3, sudo_user);
  else
    snprintf(cli->actor, sizeof(cli->actor), "%s", name);

  /* The audit listing prints the actor as it is. */
  for (char *p = cli->actor; *p != '\0'; p++) {
    if ((unsigned char) *p < 0x20 || *p == 0x7f)
      *p = '?';
  }
}

static int cli_dispatch(struct cli *cli, int argc, char **argv)
{
  for (size_t i = 0; i < CLI_NCOMMANDS; i++) {
    const struct cli_command *cmd = &cli_commands[i];
    int rc;

    if (strcmp(argv[0], cmd->name) != 0)
      continue;
    if (cmd->run == cli_drop_run)
      return cmd->run(cli, argc, argv);
    rc = cli_options(cli, cmd, argc, argv);
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
