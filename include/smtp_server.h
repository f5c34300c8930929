/* SPDX-License-Identifier: MIT */
/* The SMTP listener: accepts connections on the libuv loop and joins each
 * smtp_session to the network, the credential, the policy gate and the
 * intake. */
#ifndef NX_SMTP_SERVER_H
#define NX_SMTP_SERVER_H

#include <uv.h>

#include "config.h"
#include "credential.h"
#include "policy_gate.h"
#include "smtp_intake.h"

struct smtp_server;

struct smtp_server_deps {
  struct credential *credential;
  struct policy_gate *gate;
  struct smtp_intake *intake;
};

/* Binds cfg->smtp_listen and starts accepting. The limits in cfg are
 * copied; deps must outlive the server. */
int smtp_server_new(uv_loop_t *loop, const struct config *cfg,
                    const struct smtp_server_deps *deps,
                    struct smtp_server **out);

/* Applies new limits and timeouts to connections accepted from now on. */
void smtp_server_set_limits(struct smtp_server *server,
                            const struct config *cfg);

/* The bound port (useful with port 0). */
int smtp_server_port(const struct smtp_server *server);

/* Stops accepting, answers 421 on every open session, and calls done once
 * every handle is closed; the server is then freed. A session whose
 * message is being committed first gets the commit's own answer (250 with
 * the queue id, or the failure), so a 421 always means nothing was
 * queued; the wait is bounded by the commit (a few fsyncs). */
void smtp_server_close(struct smtp_server *server, void (*done)(void *arg),
                       void *arg);

#endif
