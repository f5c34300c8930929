/* SPDX-License-Identifier: MIT */
/* Whether the agent is running, for nextal-policy status: the running agent
 * keeps a small file beside its database ("<database>.heartbeat") with its
 * pid, version and start time, rewrites it every
 * AGENT_HEARTBEAT_INTERVAL_MS, and marks it stopped on a clean exit. A file
 * rather than a row: the write never waits for a database lock on the loop
 * thread, and the schema stays as it is. */
#ifndef NX_AGENT_HEARTBEAT_H
#define NX_AGENT_HEARTBEAT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define AGENT_HEARTBEAT_INTERVAL_MS 30000
/* Older than this (three missed beats), the agent is not responding. */
#define AGENT_HEARTBEAT_STALE_MS (3 * AGENT_HEARTBEAT_INTERVAL_MS)
#define AGENT_HEARTBEAT_VERSION_MAX 32 /* bytes of the version, with NUL */

/* What the file says; times are ms since the epoch, 0 for none. */
struct agent_heartbeat_record {
  int64_t pid;
  char version[AGENT_HEARTBEAT_VERSION_MAX];
  int64_t started_at;
  int64_t seen_at;    /* the last beat */
  int64_t stopped_at; /* set by a clean exit */
};

enum agent_heartbeat_state {
  AGENT_HEARTBEAT_NONE,           /* no file: never started here */
  AGENT_HEARTBEAT_RUNNING,        /* beat within AGENT_HEARTBEAT_STALE_MS */
  AGENT_HEARTBEAT_STOPPED,        /* exited cleanly */
  AGENT_HEARTBEAT_NOT_RESPONDING, /* no clean exit and no recent beat */
};

struct agent_heartbeat;

/* The heartbeat file of the database at path; the caller frees it. */
char *agent_heartbeat_path(const char *database);

/* Records that this process (pid, NEXTAL_VERSION, now) runs on database
 * and starts a repeating timer on loop that records each beat. A failed
 * write is logged (once until one succeeds) and never stops the agent.
 * Returns 0 and a new heartbeat. */
int agent_heartbeat_start(uv_loop_t *loop, const char *database,
                          struct agent_heartbeat **out);

/* Stops the timer, records a clean stop, and frees hb once its timer has
 * closed (so the loop must run on). NULL is allowed. */
void agent_heartbeat_stop(struct agent_heartbeat *hb);

/* Reads the file at path into rec. Returns 0, -ENOENT when there is none,
 * or -EINVAL when it does not parse. */
int agent_heartbeat_read(const char *path, struct agent_heartbeat_record *rec);

/* Judges rec at time now (ms). A stale beat without a clean stop is looked
 * at with kill(pid, 0): *pid_alive says whether the process exists (a pid
 * in another namespace reads as gone); it is left alone otherwise. */
enum agent_heartbeat_state
agent_heartbeat_judge(const struct agent_heartbeat_record *rec, int64_t now,
                      bool *pid_alive);

#endif
