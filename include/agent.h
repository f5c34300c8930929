/* SPDX-License-Identifier: MIT */
/* The running daemon: every module joined on one libuv loop. */
#ifndef NX_AGENT_H
#define NX_AGENT_H

#include "config.h"

/* Runs the agent with cfg until SIGTERM or SIGINT; config_path is reread
 * on SIGHUP. Returns a sysexits status. */
int agent_run(struct config *cfg, const char *config_path);

#endif
