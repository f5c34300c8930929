/* SPDX-License-Identifier: MIT */
/* The agent's heartbeat file, written by the agent and read by
 * nextal-policy status (see include/agent_heartbeat.h). */
#include "agent_heartbeat.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "xalloc.h"

#define AGENT_HEARTBEAT_FILE_MAX 1024 /* bytes read; the file holds ~120 */

struct agent_heartbeat {
  uv_timer_t timer;
  char *path;
  char *tmp_path; /* written, then renamed over path */
  struct agent_heartbeat_record rec;
  bool failing; /* the last write failed and was logged */
};

char *agent_heartbeat_path(const char *database)
{
  return xasprintf("%s.heartbeat", database);
}

/* Replaces the file with rec in one rename, so a reader never sees half of
 * it. Not synced: after a power cut the agent is not running anyway. */
static int agent_heartbeat_write(struct agent_heartbeat *hb)
{
  char text[256];
  int n, fd, rc = 0;

  n = snprintf(text, sizeof(text),
               "pid=%lld\nversion=%s\nstarted_at=%lld\nseen_at=%lld\n"
               "stopped_at=%lld\n",
               (long long) hb->rec.pid, hb->rec.version,
               (long long) hb->rec.started_at, (long long) hb->rec.seen_at,
               (long long) hb->rec.stopped_at);
  if (n < 0 || (size_t) n >= sizeof(text))
    return -EOVERFLOW;

  fd = open(hb->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
            0644);
  if (fd < 0)
    return -errno;
  errno = 0;
  if (write(fd, text, (size_t) n) != n)
    rc = errno ? -errno : -EIO;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(hb->tmp_path, hb->path) < 0)
    rc = -errno;
  if (rc < 0)
    unlink(hb->tmp_path);
  return rc;
}

/* Writes and says so in the log on the first failure and on recovery, not
 * every beat. */
static void agent_heartbeat_record_now(struct agent_heartbeat *hb)
{
  int rc;

  hb->rec.seen_at = store_now_ms();
  rc = agent_heartbeat_write(hb);
  if (rc < 0 && !hb->failing)
    log_warn("- agent heartbeat_failed path=%s error=\"%s\" (nextal-policy "
             "status cannot tell that the agent runs)",
             hb->path, strerror(-rc));
  else if (rc == 0 && hb->failing)
    log_info("- agent heartbeat_recovered path=%s", hb->path);
  hb->failing = rc < 0;
}

static void agent_heartbeat_on_timer(uv_timer_t *timer)
{
  agent_heartbeat_record_now(timer->data);
}

int agent_heartbeat_start(uv_loop_t *loop, const char *database,
                          struct agent_heartbeat **out)
{
  struct agent_heartbeat *hb = xcalloc(1, sizeof(*hb));

  hb->path = agent_heartbeat_path(database);
  hb->tmp_path = xasprintf("%s.tmp", hb->path);
  hb->rec.pid = (int64_t) getpid();
  snprintf(hb->rec.version, sizeof(hb->rec.version), "%s", NEXTAL_VERSION);
  hb->rec.started_at = store_now_ms();
  agent_heartbeat_record_now(hb);

  uv_timer_init(loop, &hb->timer);
  hb->timer.data = hb;
  uv_timer_start(&hb->timer, agent_heartbeat_on_timer,
                 AGENT_HEARTBEAT_INTERVAL_MS, AGENT_HEARTBEAT_INTERVAL_MS);
  *out = hb;
  return 0;
}

static void agent_heartbeat_on_close(uv_handle_t *handle)
{
  struct agent_heartbeat *hb = handle->data;

  free(hb->path);
  free(hb->tmp_path);
  free(hb);
}

void agent_heartbeat_stop(struct agent_heartbeat *hb)
{
  if (hb == NULL)
    return;
  uv_timer_stop(&hb->timer);
  hb->rec.stopped_at = store_now_ms();
  agent_heartbeat_record_now(hb);
  uv_close((uv_handle_t *) &hb->timer, agent_heartbeat_on_close);
}

static int agent_heartbeat_parse_int(const char *value, int64_t *out)
{
  char *end;
  long long v;

  errno = 0;
  v = strtoll(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < 0)
    return -EINVAL;
  *out = (int64_t) v;
  return 0;
}

/* Parses one "key=value" line into rec; unknown keys are skipped, so that
 * a later agent may add some. Returns 0 or -EINVAL. */
static int agent_heartbeat_parse_line(char *line,
                                      struct agent_heartbeat_record *rec)
{
  char *value = strchr(line, '=');

  if (value == NULL)
    return -EINVAL;
  *value++ = '\0';
  if (strcmp(line, "version") == 0) {
    snprintf(rec->version, sizeof(rec->version), "%s", value);
    return 0;
  }
  if (strcmp(line, "pid") == 0)
    return agent_heartbeat_parse_int(value, &rec->pid);
  if (strcmp(line, "started_at") == 0)
    return agent_heartbeat_parse_int(value, &rec->started_at);
  if (strcmp(line, "seen_at") == 0)
    return agent_heartbeat_parse_int(value, &rec->seen_at);
  if (strcmp(line, "stopped_at") == 0)
    return agent_heartbeat_parse_int(value, &rec->stopped_at);
  return 0;
}

int agent_heartbeat_read(const char *path, struct agent_heartbeat_record *rec)
{
  char text[AGENT_HEARTBEAT_FILE_MAX];
  char *line, *save = NULL;
  FILE *f = fopen(path, "re");
  size_t n;
  int rc = 0;

  memset(rec, 0, sizeof(*rec));
  if (f == NULL)
    return errno == ENOENT ? -ENOENT : -EINVAL;
  n = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[n] = '\0';

  for (line = strtok_r(text, "\n", &save); line != NULL && rc == 0;
       line = strtok_r(NULL, "\n", &save))
    rc = agent_heartbeat_parse_line(line, rec);
  if (rc == 0
      && (rec->pid <= 0 || rec->pid > INT32_MAX || rec->started_at <= 0))
    rc = -EINVAL;
  if (rc < 0)
    memset(rec, 0, sizeof(*rec));
  return rc;
}

enum agent_heartbeat_state
agent_heartbeat_judge(const struct agent_heartbeat_record *rec, int64_t now,
                      bool *pid_alive)
{
  if (rec->pid <= 0)
    return AGENT_HEARTBEAT_NONE;
  if (rec->stopped_at > 0)
    return AGENT_HEARTBEAT_STOPPED;
  if (now - rec->seen_at <= AGENT_HEARTBEAT_STALE_MS)
    return AGENT_HEARTBEAT_RUNNING;

  /* EPERM: it exists, as another user. */
  *pid_alive = kill((pid_t) rec->pid, 0) == 0 || errno == EPERM;
  return AGENT_HEARTBEAT_NOT_RESPONDING;
}
