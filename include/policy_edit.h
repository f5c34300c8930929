/* SPDX-License-Identifier: MIT */
/* Edits the policy file the way a person would: in place, keeping every
 * comment, blank line and the order written, under a lock, and replacing
 * the file atomically only with text that passes policy_parse. */
#ifndef NX_POLICY_EDIT_H
#define NX_POLICY_EDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

#define POLICY_EDIT_LINES_MAX (POLICY_USERS_MAX + 1000)

/* The file as lines, as written. */
struct policy_edit;

/* Splits text into lines; returns 0 or -EFBIG past POLICY_EDIT_LINES_MAX. */
int policy_edit_parse(const char *text, size_t len, struct policy_edit **out);

/* The edited text, in a new NUL-terminated buffer the caller frees. */
char *policy_edit_text(const struct policy_edit *edit, size_t *len);

void policy_edit_free(struct policy_edit *edit);

/* Sets [integration] enabled (or mode), rewriting only the value on its
 * line, or adding the line after the section header. A value already
 * meaning the same ("yes" for true, any case) is left as written.
 * *changed says whether the text differs afterwards. Return 0. */
int policy_edit_set_enabled(struct policy_edit *edit, bool enabled,
                            bool *changed);
int policy_edit_set_mode(struct policy_edit *edit, enum policy_mode mode,
                         bool *changed);

/* Adds "user = ADDRESS" (normalised) after the last user line of [users],
 * creating the section at the end if needed. Returns 0, -EEXIST if the
 * address is already listed, or -EINVAL if it is not an address. */
int policy_edit_allow(struct policy_edit *edit, const char *address);

/* Removes the user lines naming address. Returns 0, -ENOENT if it is not
 * listed, or -EINVAL if it is not an address. */
int policy_edit_remove(struct policy_edit *edit, const char *address);

/* Called with the file's lines under the lock; returns a negative errno to
 * abandon the edit, else sets *changed. */
typedef int (*policy_edit_cb)(struct policy_edit *edit, void *arg,
                              bool *changed);

/* Locks path (flock on path.lock), reads it, lets cb edit it, checks the
 * result with policy_parse, then writes a temporary file, fsyncs it,
 * renames it over path and fsyncs the directory. The file keeps its mode.
 * Returns 0 (also when cb changed nothing) or a negative errno with a
 * sentence in err; on error the file is untouched. */
int policy_edit_file(const char *path, policy_edit_cb cb, void *arg, char *err,
                     size_t errlen);

#endif
