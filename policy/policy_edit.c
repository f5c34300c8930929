/* SPDX-License-Identifier: MIT */
/* In-place edits of the policy file that keep what a person wrote, and the
 * locked, atomic replacement of the file (see include/policy_edit.h). */
#include "policy_edit.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xalloc.h"

struct policy_edit {
  char **lines; /* without their newline */
  size_t nlines;
  bool final_newline; /* the last line ended with one */
};

enum policy_line_kind {
  POLICY_LINE_BLANK,
  POLICY_LINE_COMMENT,
  POLICY_LINE_SECTION,
  POLICY_LINE_KEY,
};

/* Where the parts of one line are, as inih would read it: whole-line
 * comments start with ; or #, inline comments with whitespace then ;. */
struct policy_line {
  enum policy_line_kind kind;
  char name[64];                 /* section or key name */
  size_t value_start, value_end; /* the value, trimmed, in the line */
};

static bool policy_edit_space(char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

static void policy_line_classify(const char *line, struct policy_line *out)
{
  size_t i = 0, end;
  const char *eq;

  memset(out, 0, sizeof(*out));
  while (policy_edit_space(line[i]))
    i++;
  if (line[i] == '\0') {
    out->kind = POLICY_LINE_BLANK;
    return;
  }
  if (line[i] == ';' || line[i] == '#') {
    out->kind = POLICY_LINE_COMMENT;
    return;
  }
  if (line[i] == '[') {
    const char *close = strchr(line + i, ']');

    out->kind = POLICY_LINE_SECTION;
    if (close != NULL)
      snprintf(out->name, sizeof(out->name), "%.*s",
               (int) (close - line - i - 1), line + i + 1);
    return;
  }

  out->kind = POLICY_LINE_KEY;
  eq = line + i + strcspn(line + i, "=:");
  end = (size_t) (eq - line);
  while (end > i && policy_edit_space(line[end - 1]))
    end--;
  snprintf(out->name, sizeof(out->name), "%.*s", (int) (end - i), line + i);
  if (*eq == '\0') {
    out->value_start = out->value_end = (size_t) (eq - line);
    return;
  }
  i = (size_t) (eq - line) + 1;
  while (policy_edit_space(line[i]))
    i++;
  out->value_start = i;
  for (end = i; line[end] != '\0'; end++)
    if (line[end] == ';' && end > 0 && policy_edit_space(line[end - 1]))
      break;
  while (end > i && policy_edit_space(line[end - 1]))
    end--;
  out->value_end = end;
}

int policy_edit_parse(const char *text, size_t len, struct policy_edit **out)
{
  struct policy_edit *edit = xcalloc(1, sizeof(*edit));
  size_t pos = 0;

  while (pos < len) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t n = nl ? (size_t) (nl - text - pos) : len - pos;

    if (edit->nlines >= POLICY_EDIT_LINES_MAX) {
      policy_edit_free(edit);
      return -EFBIG;
    }
    edit->lines
        = xrealloc(edit->lines, (edit->nlines + 1) * sizeof(*edit->lines));
    edit->lines[edit->nlines++] = xstrndup(text + pos, n);
    edit->final_newline = nl != NULL;
    pos += n + (nl != NULL);
  }
  *out = edit;
  return 0;
}

char *policy_edit_text(const struct policy_edit *edit, size_t *len)
{
  size_t total = 1;
  size_t pos = 0;
  char *text;

  for (size_t i = 0; i < edit->nlines; i++)
    total += strlen(edit->lines[i]) + 1;
  text = xmalloc(total);
  for (size_t i = 0; i < edit->nlines; i++) {
    size_t n = strlen(edit->lines[i]);

    memcpy(text + pos, edit->lines[i], n);
    pos += n;
    if (i + 1 < edit->nlines || edit->final_newline)
      text[pos++] = '\n';
  }
  text[pos] = '\0';
  *len = pos;
  return text;
}

void policy_edit_free(struct policy_edit *edit)
{
  if (edit == NULL)
    return;
  for (size_t i = 0; i < edit->nlines; i++)
    free(edit->lines[i]);
  free(edit->lines);
  free(edit);
}

static void policy_edit_insert(struct policy_edit *edit, size_t at, char *line)
{
  edit->lines
      = xrealloc(edit->lines, (edit->nlines + 1) * sizeof(*edit->lines));
  memmove(edit->lines + at + 1, edit->lines + at,
          (edit->nlines - at) * sizeof(*edit->lines));
  edit->lines[at] = line;
  edit->nlines++;
  /* A file that ended without a newline gains one between its old last
   * line and what follows. */
  if (at == edit->nlines - 1)
    edit->final_newline = true;
}

static void policy_edit_delete(struct policy_edit *edit, size_t at)
{
  free(edit->lines[at]);
  memmove(edit->lines + at, edit->lines + at + 1,
          (edit->nlines - at - 1) * sizeof(*edit->lines));
  edit->nlines--;
}

/* Finds [name]: sets *header to its line and *end to the line after its
 * last. Returns false if there is no such section. */
static bool policy_edit_section(const struct policy_edit *edit,
                                const char *name, size_t *header, size_t *end)
{
  struct policy_line pl;
  size_t i;

  for (i = 0; i < edit->nlines; i++) {
    policy_line_classify(edit->lines[i], &pl);
    if (pl.kind == POLICY_LINE_SECTION && strcmp(pl.name, name) == 0)
      break;
  }
  if (i == edit->nlines)
    return false;
  *header = i;
  for (i++; i < edit->nlines; i++) {
    policy_line_classify(edit->lines[i], &pl);
    if (pl.kind == POLICY_LINE_SECTION)
      break;
  }
  *end = i;
  return true;
}

/* Whether the value written from start to end is one of same (any case):
 * "yes" already says what "true" would. */
static bool policy_edit_value_is(const char *line, size_t start, size_t end,
                                 const char *const *same)
{
  for (; *same != NULL; same++) {
    size_t len = strlen(*same);

    if (end - start == len && strncasecmp(line + start, *same, len) == 0)
      return true;
  }
  return false;
}

/* Sets key in [integration] to same[0], in place when the line exists and
 * leaving it alone when it holds any of same already. */
static void policy_edit_set_key(struct policy_edit *edit, const char *key,
                                const char *const *same, bool *changed)
{
  const char *value = same[0];
  size_t header, end;
  struct policy_line pl;

  *changed = false;
  if (!policy_edit_section(edit, "integration", &header, &end)) {
    /* Put a missing section before the first one, after any header
     * comment a person wrote. */
    for (header = 0; header < edit->nlines; header++) {
      policy_line_classify(edit->lines[header], &pl);
      if (pl.kind == POLICY_LINE_SECTION || pl.kind == POLICY_LINE_KEY)
        break;
    }
    policy_edit_insert(edit, header, xstrdup("[integration]"));
    end = header + 1;
  }
  for (size_t i = header + 1; i < end; i++) {
    char *line = edit->lines[i];

    policy_line_classify(line, &pl);
    if (pl.kind != POLICY_LINE_KEY || strcmp(pl.name, key) != 0)
      continue;
    if (policy_edit_value_is(line, pl.value_start, pl.value_end, same))
      return;
    edit->lines[i] = xasprintf("%.*s%s%s", (int) pl.value_start, line, value,
                               line + pl.value_end);
    free(line);
    *changed = true;
    return;
  }
  policy_edit_insert(edit, header + 1, xasprintf("%s = %s", key, value));
  *changed = true;
}

int policy_edit_set_enabled(struct policy_edit *edit, bool enabled,
                            bool *changed)
{
  /* The spellings policy_parse accepts for each. */
  static const char *const on[] = { "true", "yes", "on", "1", NULL };
  static const char *const off[] = { "false", "no", "off", "0", NULL };

  policy_edit_set_key(edit, "enabled", enabled ? on : off, changed);
  return 0;
}

int policy_edit_set_mode(struct policy_edit *edit, enum policy_mode mode,
                         bool *changed)
{
  static const char *const all[] = { "all", NULL };
  static const char *const specific[] = { "specific", NULL };

  policy_edit_set_key(edit, "mode", mode == POLICY_MODE_ALL ? all : specific,
                      changed);
  return 0;
}

/* Whether line i is a user line naming norm. */
static bool policy_edit_names(const struct policy_edit *edit, size_t i,
                              const char *norm, struct policy_line *pl)
{
  char value[POLICY_ADDRESS_MAX + 8];
  char other[POLICY_ADDRESS_MAX];
  const char *line = edit->lines[i];

  policy_line_classify(line, pl);
  if (pl->kind != POLICY_LINE_KEY || strcmp(pl->name, "user") != 0)
    return false;
  snprintf(value, sizeof(value), "%.*s",
           (int) (pl->value_end - pl->value_start), line + pl->value_start);
  return policy_address_normalize(value, other, sizeof(other)) == 0
         && strcmp(other, norm) == 0;
}

int policy_edit_allow(struct policy_edit *edit, const char *address)
{
  char norm[POLICY_ADDRESS_MAX];
  size_t header, end, last;
  struct policy_line pl;

  if (policy_address_normalize(address, norm, sizeof(norm)) < 0)
    return -EINVAL;
  if (!policy_edit_section(edit, "users", &header, &end)) {
    if (edit->nlines > 0 && edit->lines[edit->nlines - 1][0] != '\0')
      policy_edit_insert(edit, edit->nlines, xstrdup(""));
    policy_edit_insert(edit, edit->nlines, xstrdup("[users]"));
    header = edit->nlines - 1;
    end = edit->nlines;
  }
  last = header;
  for (size_t i = header + 1; i < end; i++) {
    if (policy_edit_names(edit, i, norm, &pl))
      return -EEXIST;
    if (pl.kind == POLICY_LINE_KEY)
      last = i;
  }
  policy_edit_insert(edit, last + 1, xasprintf("user = %s", norm));
  return 0;
}

int policy_edit_remove(struct policy_edit *edit, const char *address)
{
  char norm[POLICY_ADDRESS_MAX];
  size_t header, end;
  struct policy_line pl;
  int rc = -ENOENT;

  if (policy_address_normalize(address, norm, sizeof(norm)) < 0)
    return -EINVAL;
  if (!policy_edit_section(edit, "users", &header, &end))
    return -ENOENT;
  for (size_t i = end; i > header + 1; i--) {
    if (policy_edit_names(edit, i - 1, norm, &pl)) {
      policy_edit_delete(edit, i - 1);
      rc = 0;
    }
  }
  return rc;
}

/* Writes text to a new file beside path and renames it over path, so a
 * reader sees the old file or the new one, never a mixture. */
static int policy_edit_replace(const char *path, const char *text, size_t len,
                               mode_t mode, char *err, size_t errlen)
{
  char *tmp = xasprintf("%s.tmp.XXXXXX", path);
  char *copy = xstrdup(path);
  int fd = mkstemp(tmp);
  int dirfd = -1;
  size_t done = 0;
  int rc = 0;

  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    goto out;
  }
  while (done < len && rc == 0) {
    ssize_t n = write(fd, text + done, len - done);

    if (n < 0 && errno != EINTR)
      rc = -errno;
    else if (n > 0)
      done += (size_t) n;
  }
  if (rc == 0 && (fchmod(fd, mode & 07777) < 0 || fsync(fd) < 0))
    rc = -errno;
  if (close(fd) < 0 && rc == 0)
    rc = -errno;
  fd = -1;
  if (rc == 0 && rename(tmp, path) < 0)
    rc = -errno;
  if (rc < 0) {
    snprintf(err, errlen, "%s: cannot write: %s", path, strerror(-rc));
    unlink(tmp);
    goto out;
  }

  /* The rename is durable only once the directory is. */
  dirfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0 || fsync(dirfd) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot sync its directory: %s", path,
             strerror(errno));
  }

out:
  if (dirfd >= 0)
    close(dirfd);
  free(copy);
  free(tmp);
  return rc;
}

/* Reads the whole file from an open descriptor into a new buffer. */
static int policy_edit_slurp(int fd, char **text, size_t *len)
{
  char *buf = NULL;
  size_t n = 0, cap = 0;

  for (;;) {
    ssize_t got;

    if (n + 4096 > cap) {
      cap = cap ? cap * 2 : 8192;
      if (cap > (size_t) POLICY_FILE_MAX + 8192) {
        free(buf);
        return -EFBIG;
      }
      buf = xrealloc(buf, cap);
    }
    got = read(fd, buf + n, cap - n - 1);
    if (got < 0 && errno == EINTR)
      continue;
    if (got < 0) {
      free(buf);
      return -errno;
    }
    if (got == 0)
      break;
    n += (size_t) got;
  }
  buf[n] = '\0';
  *text = buf;
  *len = n;
  return 0;
}

int policy_edit_file(const char *path, policy_edit_cb cb, void *arg, char *err,
                     size_t errlen)
{
  char *lockpath = xasprintf("%s.lock", path);
  struct policy_edit *edit = NULL;
  struct policy *check = NULL;
  char *text = NULL, *out = NULL;
  size_t len = 0, outlen = 0;
  bool changed = false;
  struct stat st;
  int lockfd, fd = -1;
  int rc = 0;

  /* The lock lives beside the file, not on it: the file is replaced by
   * rename, and a lock on a replaced inode would protect nothing. */
  lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lockfd < 0 || flock(lockfd, LOCK_EX) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot lock: %s", lockpath, strerror(errno));
    goto out;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) < 0
      || (rc = policy_edit_slurp(fd, &text, &len)) < 0) {
    rc = rc < 0 ? rc : -errno;
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
    goto out;
  }
  if ((rc = policy_edit_parse(text, len, &edit)) < 0) {
    snprintf(err, errlen, "%s: too many lines", path);
    goto out;
  }
  rc = cb(edit, arg, &changed);
  if (rc < 0)
    snprintf(err, errlen, "%s: edit abandoned, file unchanged", path);
  if (rc < 0 || !changed)
    goto out;

  /* Never write a file the agent would reject. */
  out = policy_edit_text(edit, &outlen);
  rc = policy_parse(path, out, outlen, &check, err, errlen);
  if (rc == 0)
    rc = policy_edit_replace(path, out, outlen, st.st_mode, err, errlen);

out:
  policy_free(check);
  policy_edit_free(edit);
  free(out);
  free(text);
  if (fd >= 0)
    close(fd);
  if (lockfd >= 0)
    close(lockfd);
  free(lockpath);
  return rc;
}
