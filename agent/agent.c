/* SPDX-License-Identifier: MIT */
/* Starting, reloading and stopping the daemon (see include/agent.h). */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <uv.h>

#include "agent_heartbeat.h"
#include "caldav.h"
#include "client_auth.h"
#include "credential.h"
#include "delivery.h"
#include "graph_client.h"
#include "http_router.h"
#include "http_server.h"
#include "http_client.h"
#include "links.h"
#include "log.h"
#include "mail_status.h"
#include "oauth_consent.h"
#include "policy_gate.h"
#include "smtp_intake.h"
#include "smtp_server.h"
#include "store.h"
#include "token_cache.h"
#include "token_crypt.h"
#include "user_link.h"
#include "xalloc.h"

#define AGENT_STOP_GRACE_MS 10000 /* for Graph sends in progress */

struct agent {
  uv_loop_t *loop;
  struct config *cfg;
  const char *config_path;
  struct store *store;
  struct credential *credential;
  struct http_client *http;
  struct token_crypt *crypt;
  struct token_cache *tokens;
  struct graph_client *graph;
  struct policy_gate *gate;
  struct smtp_intake *intake;
  struct smtp_server *smtp;
  struct http_router *router;
  struct caldav_deps caldav;           /* the CalDAV handlers' argument */
  struct user_link_deps user_link;     /* the linking handlers' argument */
  struct mail_status_deps mail_status; /* the status API's argument */
  struct http_server *http_server;
  struct delivery *delivery;
  struct agent_heartbeat *heartbeat; /* from ready until stopped */
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_signal_t sighup;
  uv_timer_t grace;
  int stopping;
};

static void agent_on_queued(void *arg)
{
  struct agent *agent = arg;

  if (agent->delivery != NULL)
    delivery_kick(agent->delivery);
}

static void agent_on_policy_change(void *arg)
{
  struct agent *agent = arg;

  if (agent->delivery != NULL)
    delivery_policy_changed(agent->delivery);
}

/* Loads (or on first start creates) the key that encrypts refresh tokens;
 * refuses to go on with a loose or lost key. */
static int agent_open_key(struct agent *agent)
{
  char err[1024];
  int64_t tokens = 0;

  if (links_token_count(agent->store, &tokens) < 0
      || token_crypt_open(agent->cfg->key_file, tokens > 0, &agent->crypt, err,
                          sizeof(err))
             < 0) {
    log_error("- agent key_file_refused error=\"%s\"", err);
    return -EPERM;
  }
  return 0;
}

/* Opens everything that does not listen yet; logs what failed. */
static int agent_open_core(struct agent *agent)
{
  struct config *cfg = agent->cfg;
  char err[1024];

  if (store_open(cfg->database, &agent->store, err, sizeof(err)) < 0) {
    log_error("- store open_failed error=\"%s\"", err);
    return EX_UNAVAILABLE;
  }
  if (credential_new(cfg->service_user, cfg->service_password_hash,
                     &agent->credential)
      < 0) {
    log_error("- agent config_invalid key=password_hash reason=\"not a "
              "hash from nextal-agent --hash-password\"");
    return EX_CONFIG;
  }
  if (agent_open_key(agent) < 0)
    return EX_CONFIG;
  if (client_auth_check(cfg, err, sizeof(err)) < 0) {
    log_error("- agent client_certificate_refused error=\"%s\"", err);
    return EX_CONFIG;
  }
  /* Each exit 70 (EX_SOFTWARE) below names the part that failed: the
   * configuration was checked already, so this is ours to fix. */
  if (http_client_new(agent->loop, &agent->http) < 0) {
    log_error("- agent start_failed part=http_client");
    return EX_SOFTWARE;
  }
  if (token_cache_new(agent->loop, agent->http, cfg, agent->store, agent->crypt,
                      &agent->tokens)
      < 0) {
    log_error("- agent start_failed part=token_cache");
    return EX_SOFTWARE;
  }
  if (graph_client_new(agent->loop, agent->http, agent->tokens,
                       cfg->graph_base_url, cfg->delivery_max_in_flight,
                       &agent->graph)
      < 0) {
    log_error("- agent start_failed part=graph_client graph_base_url=%s "
              "max_in_flight_per_mailbox=%u",
              cfg->graph_base_url, cfg->delivery_max_in_flight);
    return EX_SOFTWARE;
  }
  if (policy_gate_new(agent->loop, agent->store, cfg->policy_file,
                      agent_on_policy_change, agent, &agent->gate)
      < 0) {
    log_error("- agent start_failed part=policy_gate policy_file=%s",
              cfg->policy_file);
    return EX_SOFTWARE;
  }
  return 0;
}

/* The HTTP listener: CalDAV, admin consent, per-user linking and the
 * status API for Nextal. */
static int agent_open_http(struct agent *agent)
{
  struct http_server_limits limits;
  char *host = NULL;
  int port = 0;
  int rc;

  agent->router = http_router_new();
  if (oauth_consent_register(agent->router, agent->store) < 0)
    goto refused;
  agent->caldav = (struct caldav_deps){ .store = agent->store,
                                        .graph = agent->graph,
                                        .gate = agent->gate,
                                        .credential = agent->credential,
                                        .zones = caldav_zones_new() };
  if (caldav_register(agent->router, &agent->caldav) < 0)
    goto refused;
  agent->user_link = (struct user_link_deps){ .cfg = agent->cfg,
                                              .store = agent->store,
                                              .http = agent->http,
                                              .crypt = agent->crypt,
                                              .tokens = agent->tokens,
                                              .graph = agent->graph,
                                              .gate = agent->gate,
                                              .credential = agent->credential };
  if (user_link_register(agent->router, &agent->user_link) < 0)
    goto refused;
  agent->mail_status
      = (struct mail_status_deps){ .store = agent->store,
                                   .credential = agent->credential };
  if (mail_status_register(agent->router, &agent->mail_status) < 0)
    goto refused;
  http_server_limits_defaults(&limits);
  limits.max_body_size = agent->cfg->http_max_body;
  limits.max_connections = agent->cfg->http_max_connections;
  /* config.c bounds both to an hour, well within unsigned milliseconds. */
  limits.request_timeout_ms = agent->cfg->http_request_timeout * 1000u;
  limits.idle_timeout_ms = agent->cfg->http_idle_timeout * 1000u;
  if (config_parse_hostport(agent->cfg->http_listen, &host, &port) < 0) {
    log_error("- http listen_failed address=%s error=\"not host:port\"",
              agent->cfg->http_listen);
    return -EINVAL;
  }
  rc = http_server_new(agent->loop, host, port, &limits, http_router_dispatch,
                       agent->router, &agent->http_server);
  if (rc < 0)
    log_error("- http listen_failed address=%s error=\"%s\"",
              agent->cfg->http_listen, uv_strerror(rc));
  free(host);
  return rc;

refused:
  log_error("- agent start_failed part=http_routes");
  return -EINVAL;
}

static int agent_open_endpoints(struct agent *agent)
{
  struct config *cfg = agent->cfg;
  struct smtp_server_deps deps;

  if (smtp_intake_new(agent->loop, cfg->spool_dir, cfg->database,
                      agent_on_queued, agent, &agent->intake)
      < 0)
    return EX_UNAVAILABLE;
  smtp_intake_set_dedup_window(agent->intake, cfg->delivery_dedup_window);
  deps.credential = agent->credential;
  deps.gate = agent->gate;
  deps.intake = agent->intake;
  if (smtp_server_new(agent->loop, cfg, &deps, &agent->smtp) < 0)
    return EX_UNAVAILABLE;
  if (agent_open_http(agent) < 0)
    return EX_UNAVAILABLE;
  if (delivery_new(agent->loop, agent->store, agent->graph, agent->gate, cfg,
                   &agent->delivery)
      < 0) {
    log_error("- agent start_failed part=delivery");
    return EX_SOFTWARE;
  }
  return 0;
}

/* ---- stopping ---------------------------------------------------------- */

static void agent_close_signals(struct agent *agent)
{
  uv_close((uv_handle_t *) &agent->sigterm, NULL);
  uv_close((uv_handle_t *) &agent->sigint, NULL);
  uv_close((uv_handle_t *) &agent->sighup, NULL);
  uv_close((uv_handle_t *) &agent->grace, NULL);
}

static void agent_close_clients(struct agent *agent)
{
  if (agent->graph != NULL)
    graph_client_close(agent->graph);
  agent->graph = NULL;
  if (agent->http != NULL)
    http_client_close(agent->http);
  agent->http = NULL;
}

static void agent_on_delivery_stopped(void *arg)
{
  struct agent *agent = arg;

  agent->delivery = NULL;
  uv_timer_stop(&agent->grace);
  agent_close_clients(agent);
  if (agent->gate != NULL)
    policy_gate_close(agent->gate);
  agent->gate = NULL;
  agent_heartbeat_stop(agent->heartbeat); /* a clean stop, on record */
  agent->heartbeat = NULL;
  agent_close_signals(agent);
  log_info("- agent stopped");
}

static void agent_on_grace(uv_timer_t *timer)
{
  struct agent *agent = timer->data;

  log_warn("- agent stop_grace_expired: interrupting Graph requests");
  agent_close_clients(agent);
}

static void agent_on_smtp_closed(void *arg)
{
  struct agent *agent = arg;

  agent->smtp = NULL;
  if (agent->delivery != NULL) {
    uv_timer_start(&agent->grace, agent_on_grace, AGENT_STOP_GRACE_MS, 0);
    delivery_stop(agent->delivery, agent_on_delivery_stopped, agent);
  } else {
    agent_on_delivery_stopped(agent);
  }
}

static void agent_stop(struct agent *agent)
{
  if (agent->stopping)
    return;
  agent->stopping = 1;
  log_info("- agent stopping");
  if (agent->http_server != NULL)
    http_server_close(agent->http_server);
  agent->http_server = NULL;
  if (agent->smtp != NULL)
    smtp_server_close(agent->smtp, agent_on_smtp_closed, agent);
  else
    agent_on_smtp_closed(agent);
}

/* ---- signals ----------------------------------------------------------- */

static void agent_reload(struct agent *agent)
{
  struct config fresh;
  char err[1024];
  char esc[2048];

  if (config_load_agent(&fresh, agent->config_path, err, sizeof(err)) < 0) {
    /* The reason quotes the file's own text: escaped, it stays one
     * error="..." field on one line. */
    log_error("- agent reload_failed error=\"%s\" (keeping the running "
              "configuration)",
              log_escape(esc, sizeof(esc), err, strlen(err)));
    config_free(&fresh);
  } else {
    /* Limits apply to new connections; addresses, paths and credentials
     * take a restart, which the log says. */
    if (agent->smtp != NULL)
      smtp_server_set_limits(agent->smtp, &fresh);
    log_info("- agent reloaded config=%s (listen addresses, paths and "
             "credentials change on restart)",
             agent->config_path);
    config_free(&fresh);
  }
  policy_gate_reload(agent->gate);
}

static void agent_on_signal(uv_signal_t *handle, int signum)
{
  struct agent *agent = handle->data;

  if (signum == SIGHUP) {
    agent_reload(agent);
    return;
  }
  agent_stop(agent);
}

static void agent_start_signals(struct agent *agent)
{
  uv_signal_t *handles[] = { &agent->sigterm, &agent->sigint, &agent->sighup };
  int signums[] = { SIGTERM, SIGINT, SIGHUP };

  for (size_t i = 0; i < 3; i++) {
    uv_signal_init(agent->loop, handles[i]);
    handles[i]->data = agent;
    uv_signal_start(handles[i], agent_on_signal, signums[i]);
  }
  uv_timer_init(agent->loop, &agent->grace);
  agent->grace.data = agent;
  signal(SIGPIPE, SIG_IGN);
}

static void agent_free(struct agent *agent)
{
  if (agent->router != NULL)
    http_router_free(agent->router);
  caldav_zones_free(agent->caldav.zones); /* after the router, its user */
  smtp_intake_free(agent->intake);
  if (agent->tokens != NULL)
    token_cache_free(agent->tokens);
  credential_free(agent->credential);
  token_crypt_free(agent->crypt);
  store_close(agent->store);
}

/* Logs each line of the configuration's warnings (see config.h). */
static void agent_log_warnings(const char *warnings)
{
  char esc[1024];
  const char *p = warnings;

  while (p != NULL && *p != '\0') {
    size_t n = strcspn(p, "\n");

    log_warn("- agent config_warning warning=\"%s\"",
             log_escape(esc, sizeof(esc), p, n));
    p += n + (p[n] == '\n');
  }
}

int agent_run(struct config *cfg, const char *config_path)
{
  struct agent agent = { .cfg = cfg, .config_path = config_path };
  int status;

  agent.loop = uv_default_loop();
  agent_start_signals(&agent);
  agent_log_warnings(cfg->warnings);
  status = agent_open_core(&agent);
  if (status == 0)
    status = agent_open_endpoints(&agent);
  if (status == 0) {
    log_info("- agent ready smtp=%s http=%s database=%s", cfg->smtp_listen,
             cfg->http_listen, cfg->database);
    /* Only now: an agent that failed to start (a second one on the same
     * database, say) must not claim the file. */
    agent_heartbeat_start(agent.loop, cfg->database, &agent.heartbeat);
  } else {
    agent_stop(&agent);
  }
  uv_run(agent.loop, UV_RUN_DEFAULT);
  agent_free(&agent);
  uv_loop_close(agent.loop);
  return status;
}
