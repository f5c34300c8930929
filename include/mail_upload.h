/* SPDX-License-Identifier: MIT */
/* Large mail through Graph: a draft, its attachments one by one (a POST
 * under 3 MB, an upload session of ordered chunks streamed from disk
 * above), then send (graph-api.md 2.4). The draft id is kept in the
 * message's queue row, so a retry resumes the same draft instead of
 * making a second one. */
#ifndef NX_MAIL_UPLOAD_H
#define NX_MAIL_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "graph_client.h"
#include "mime_to_graph.h"
#include "store.h"

/* Bytes per PUT: at most 4 MB (Graph's limit) and a multiple of 320 KiB,
 * which OneDrive requires and Outlook may (tests/graphsim/drafts.py). */
#define MAIL_UPLOAD_CHUNK_SIZE (10u * 320 * 1024)

/* One attachment decoded into a temporary file. */
struct mail_upload_file {
  char *path; /* removed by mail_upload_files_free */
  uint64_t size;
  char *name;
  char *content_type;
  char *content_id; /* or NULL */
  bool is_inline;
};

/* Decodes every attachment the large form of res describes from the spool
 * file into a temporary file beside it (<spool dir>/tmp/<queue id>.<n>),
 * piece by piece. Runs on a worker thread. Returns 0 with *files, or a
 * negative errno with a sentence in err (and nothing left on disk). */
int mail_upload_prepare(const char *spool_path, const char *queue_id,
                        const struct mime_graph_result *res,
                        struct mail_upload_file **files, size_t *nfiles,
                        char *err, size_t errlen);

/* Removes the temporary files and frees the array; NULL is allowed. */
void mail_upload_files_free(struct mail_upload_file *files, size_t nfiles);

/* The end of an upload: resp is Graph's 202 to the send when all went
 * well (or a made-up 202 when the draft turned out to be sent already),
 * else the response of the step that failed. at_send tells whether that
 * step was the send itself, the only one whose lost answer leaves the
 * message's fate unknown. */
typedef void (*mail_upload_done_cb)(void *arg,
                                    const struct graph_response *resp,
                                    bool at_send);

struct mail_upload_spec {
  struct graph_client *graph;
  struct store *store;    /* the loop's connection: the draft id is kept */
  int64_t rowid;          /* the message's queue row */
  const char *queue_id;   /* for log lines */
  const char *mailbox;    /* the linked user */
  const char *draft_json; /* the message without attachments */
  const struct mail_upload_file *files; /* borrowed until done runs */
  size_t nfiles;
  /* Asked before every request after the first: false stops the upload
   * (the switch was turned off meanwhile), and done then gets a response
   * with status 0 and error_code MAIL_UPLOAD_STOPPED. NULL: never stop. */
  bool (*may_continue)(void *arg);
};

#define MAIL_UPLOAD_STOPPED "upload_stopped"

/* Starts (or resumes, when the row has a draft id) the upload; done runs
 * exactly once, on the loop, never from inside this call. The spec's
 * strings are copied; files must live until done. */
void mail_upload_start(const struct mail_upload_spec *spec,
                       mail_upload_done_cb done, void *arg);

#endif
