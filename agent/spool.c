/* SPDX-License-Identifier: MIT */
/* Durable message files (see include/spool.h). */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

static int spool_mkdir(const char *path)
{
  if (mkdir(path, 0700) < 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* Removes the files an earlier run left in tmp: message data that never
 * reached its end, and attachments decoded for an upload (decoded again
 * when the upload is retried). */
static void spool_sweep(const char *tmp)
{
  DIR *d = opendir(tmp);
  struct dirent *e;
  int n = 0;

  if (!d)
    return;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    if (unlinkat(dirfd(d), e->d_name, 0) == 0)
      n++;
  }
  closedir(d);
  if (n > 0)
    log_info("- spool swept dir=%s files=%d", tmp, n);
}

int spool_prepare(const char *dir)
{
  char *tmp = xasprintf("%s/tmp", dir);
  int rc = spool_mkdir(dir);

  if (rc == 0)
    rc = spool_mkdir(tmp);
  if (rc == 0)
    spool_sweep(tmp);
  free(tmp);
  return rc;
}

int spool_create(const char *dir, const char *id, struct spool_file **out)
{
  struct spool_file *f = xcalloc(1, sizeof(*f));

  f->tmp_path = xasprintf("%s/tmp/%s", dir, id);
  f->path = xasprintf("%s/%s.eml", dir, id);
  f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (f->fd < 0) {
    int rc = -errno;

    spool_file_free(f);
    return rc;
  }
  *out = f;
  return 0;
}

int spool_write(struct spool_file *f, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(f->fd, buf, len);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    buf += n;
    len -= (size_t) n;
    f->size += (uint64_t) n;
  }
  return 0;
}

/* fsync of the directory makes the rename itself durable. */
static int spool_sync_dir(const char *path)
{
  char *dir = xstrdup(path);
  char *slash = strrchr(dir, '/');
  int fd;
  int rc = 0;

  if (slash != NULL)
    *slash = '\0';
  fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) < 0)
    rc = -errno;
  if (fd >= 0)
    close(fd);
  free(dir);
  return rc;
}

int spool_commit(struct spool_file *f)
{
  int rc = 0;

  if (fsync(f->fd) < 0 || close(f->fd) < 0) {
    rc = -errno;
    f->fd = -1;
    return rc;
  }
  f->fd = -1;
  if (rename(f->tmp_path, f->path) < 0)
    return -errno;
  return spool_sync_dir(f->path);
}

void spool_file_free(struct spool_file *f)
{
  if (f == NULL)
    return;
  if (f->fd >= 0)
    close(f->fd);
  free(f->tmp_path);
  free(f->path);
  free(f);
}

void spool_abort(struct spool_file *f)
{
  if (f == NULL)
    return;
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
  }
  unlink(f->tmp_path);
  spool_file_free(f);
}

int spool_map(const char *path, const char **data, size_t *len)
{
  static const char empty[1];
  struct stat st;
  void *p;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int rc = 0;

  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    goto out;
  }
  if (st.st_size == 0) {
    *data = empty;
    *len = 0;
    goto out;
  }
  p = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) {
    rc = -errno;
    goto out;
  }
  *data = p;
  *len = (size_t) st.st_size;

out:
  close(fd);
  return rc;
}

void spool_unmap(const char *data, size_t len)
{
  if (len > 0)
    munmap((void *) data, len);
}

int spool_remove(const char *path)
{
  if (unlink(path) < 0 && errno != ENOENT)
    return -errno;
  return 0;
}
