/* SPDX-License-Identifier: MIT */
/* Message bodies on disk: written as they arrive into a temporary file,
 * made durable (fsync, rename, directory fsync) before the queue row is
 * committed, mapped read-only for delivery, removed once sent. */
#ifndef NX_SPOOL_H
#define NX_SPOOL_H

#include <stddef.h>
#include <stdint.h>

struct spool_file {
  int fd;
  char *tmp_path; /* "<dir>/tmp/<id>" while being written */
  char *path;     /* "<dir>/<id>.eml" once committed */
  uint64_t size;
};

/* Creates dir and dir/tmp with owner-only permissions if missing, and
 * empties dir/tmp of what an earlier run left there: call it once, at
 * start, before anything writes to the spool. */
int spool_prepare(const char *dir);

/* Opens a new temporary file for queue id. */
int spool_create(const char *dir, const char *id, struct spool_file **out);

/* Appends bytes; returns 0 or a negative errno (disk full, ...). */
int spool_write(struct spool_file *f, const char *buf, size_t len);

/* Makes the file durable under its final name. The spool_file stays
 * valid (for its path) until spool_file_free(). */
int spool_commit(struct spool_file *f);

/* Removes an uncommitted file, and frees f; NULL is allowed. */
void spool_abort(struct spool_file *f);

/* Frees f without touching the file on disk. */
void spool_file_free(struct spool_file *f);

/* Maps a committed file read-only; unmap with spool_unmap(). An empty
 * file maps to a non-NULL empty buffer. */
int spool_map(const char *path, const char **data, size_t *len);
void spool_unmap(const char *data, size_t len);

/* Deletes a delivered message's file; a missing file is not an error. */
int spool_remove(const char *path);

#endif
