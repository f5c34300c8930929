/* SPDX-License-Identifier: MIT */
/* Reads the policy file (INI, parsed by inih) into a struct policy, checking
 * every line and naming the first bad one. The format is in docs/policy.md. */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ini.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ini_fault.h"
#include "xalloc.h"

#define POLICY_LOCAL_MAX 64   /* RFC 5321 4.5.3.1.1 */
#define POLICY_DOMAIN_MAX 255 /* RFC 5321 4.5.3.1.2 */

/* One listed address and the line it stands on, until the list is sorted
 * and checked for duplicates. */
struct policy_entry {
  char *address;
  int line;
};

/* Parse state shared by the line reader and the inih handler. */
struct policy_parse {
  const char *text; /* the whole file */
  size_t len;
  size_t pos;     /* next byte the reader hands to inih */
  int line;       /* line the handler is looking at */
  bool after_key; /* a key was read since the last [section] line */
  bool have_enabled, have_mode;
  bool enabled;
  enum policy_mode mode;
  struct policy_entry *entries;
  size_t nentries;
  struct ini_fault fault; /* the first line we refused */
};

static bool policy_address_is_ascii(const char *address)
{
  for (const unsigned char *p = (const unsigned char *) address; *p; p++) {
    if (*p >= 0x80)
      return false;
  }
  return true;
}

int policy_address_normalize(const char *in, char *out, size_t outlen)
{
  size_t len = strlen(in);
  const char *at;
  size_t local;

  /* "<alice@example>" is accepted as alice@example, the way mail people
   * often write it. */
  if (len >= 2 && in[0] == '<' && in[len - 1] == '>') {
    in++;
    len -= 2;
  }
  if (len == 0 || len >= POLICY_ADDRESS_MAX || len >= outlen)
    return -EINVAL;
  at = memchr(in, '@', len);
  if (at == NULL || memchr(at + 1, '@', len - (size_t) (at - in) - 1))
    return -EINVAL;
  local = (size_t) (at - in);
  if (local == 0 || local > POLICY_LOCAL_MAX || len - local - 1 == 0
      || len - local - 1 > POLICY_DOMAIN_MAX)
    return -EINVAL;

  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char) in[i];

    /* Printable ASCII without the characters that cannot stand unquoted
     * in an address; UTF-8 bytes are allowed for internationalised mail. */
    if (c <= 0x20 || c == 0x7f || strchr("\"(),:;<>[\\]", c) != NULL)
      return -EINVAL;
    out[i] = (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : (char) c;
  }
  out[len] = '\0';

  /* Dots separate labels: none may be empty. */
  if (out[0] == '.' || out[local - 1] == '.' || out[local + 1] == '.'
      || out[len - 1] == '.' || strstr(out, "..") != NULL)
    return -EINVAL;
  return 0;
}

/* Accepts the spellings people use for a switch. */
static int policy_parse_bool(const char *value, bool *out)
{
  static const char *const yes[] = { "true", "yes", "on", "1" };
  static const char *const no[] = { "false", "no", "off", "0" };

  for (size_t i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
    if (strcasecmp(value, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(value, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return -EINVAL;
}

static void policy_parse_integration(struct policy_parse *ps, const char *name,
                                     const char *value)
{
  if (strcmp(name, "enabled") == 0) {
    if (ps->have_enabled)
      ini_fault_set(&ps->fault, ps->line, "enabled is set twice");
    else if (policy_parse_bool(value, &ps->enabled) < 0)
      ini_fault_set(&ps->fault, ps->line,
                    "enabled must be true or false, not \"%s\"", value);
    ps->have_enabled = true;
  } else if (strcmp(name, "mode") == 0) {
    if (ps->have_mode)
      ini_fault_set(&ps->fault, ps->line, "mode is set twice");
    else if (strcasecmp(value, "all") == 0)
      ps->mode = POLICY_MODE_ALL;
    else if (strcasecmp(value, "specific") == 0)
      ps->mode = POLICY_MODE_SPECIFIC;
    else
      ini_fault_set(&ps->fault, ps->line,
                    "mode must be all or specific, not \"%s\"", value);
    ps->have_mode = true;
  } else {
    ini_fault_set(&ps->fault, ps->line, "unknown key \"%s\" in [integration]",
                  name);
  }
}

static void policy_parse_user(struct policy_parse *ps, const char *name,
                              const char *value)
{
  char address[POLICY_ADDRESS_MAX];

  if (strcmp(name, "user") != 0) {
    ini_fault_set(&ps->fault, ps->line,
                  "unknown key \"%s\" in [users] (write user = ADDRESS)", name);
    return;
  }
  if (policy_address_normalize(value, address, sizeof(address)) < 0) {
    ini_fault_set(&ps->fault, ps->line, "\"%s\" is not a mail address", value);
    return;
  }
  /* Such a sender needs SMTPUTF8, which the SMTP listener does not offer:
   * listed, the user could still never send. */
  if (!policy_address_is_ascii(address)) {
    ini_fault_set(&ps->fault, ps->line,
                  "\"%s\" has non-ASCII characters; the agent's SMTP "
                  "listener has no SMTPUTF8, so this user could never "
                  "send",
                  value);
    return;
  }
  if (ps->nentries >= POLICY_USERS_MAX) {
    ini_fault_set(&ps->fault, ps->line, "more than %d users listed",
                  POLICY_USERS_MAX);
    return;
  }
  ps->entries
      = xrealloc(ps->entries, (ps->nentries + 1) * sizeof(*ps->entries));
  ps->entries[ps->nentries].address = xstrdup(address);
  ps->entries[ps->nentries].line = ps->line;
  ps->nentries++;
}

/* inih callback. We always return 1 and keep our own first error, because
 * inih's own line count and ours agree only while we feed it lines. */
static int policy_parse_handler(void *user, const char *section,
                                const char *name, const char *value)
{
  struct policy_parse *ps = user;

  /* An unknown section was refused at its header line already (see
   * policy_parse_header); the last branch is a backstop. */
  ps->after_key = true;
  if (strcmp(section, "integration") == 0)
    policy_parse_integration(ps, name, value);
  else if (strcmp(section, "users") == 0)
    policy_parse_user(ps, name, value);
  else if (section[0] == '\0')
    ini_fault_set(&ps->fault, ps->line, "\"%s\" stands before any [section]",
                  name);
  else
    ini_fault_set(&ps->fault, ps->line, "unknown section [%s]", section);
  return 1;
}

static bool policy_section_known(const char *name, size_t len)
{
  static const char *const known[] = { "integration", "users" };

  for (size_t i = 0; i < sizeof(known) / sizeof(*known); i++) {
    if (strlen(known[i]) == len && memcmp(name, known[i], len) == 0)
      return true;
  }
  return false;
}

/* inih calls the handler for key = value lines only (this build has no
 * INI_CALL_HANDLER_ON_NEW_SECTION), so it would first see an unknown
 * section at its first key, and never an empty one. The reader checks each
 * "[section]" line itself instead, to name the header's own line. inih
 * takes a line for one when its first character after white space (and a
 * UTF-8 BOM on line 1) is '[', unless the line starts with white space
 * after a key: then it continues that key's value. A header without ']'
 * is left to inih, which refuses it. */
static void policy_parse_header(struct policy_parse *ps, const char *line,
                                size_t n)
{
  static const char space[] = " \t\r\n\v\f";
  size_t i = 0;
  const char *close;
  size_t len;

  if (ps->line == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
    i = 3;
  if (i < n && strchr(space, line[i]) != NULL && ps->after_key)
    return;
  while (i < n && strchr(space, line[i]) != NULL)
    i++;
  if (i == n || line[i] != '[')
    return;
  ps->after_key = false;
  close = memchr(line + i, ']', n - i);
  if (close == NULL)
    return;
  len = (size_t) (close - line - i - 1);
  if (policy_section_known(line + i + 1, len))
    return;
  ini_fault_set(&ps->fault, ps->line,
                "unknown section [%.*s] (section names are [integration] "
                "and [users], in lower case)",
                (int) len, line + i + 1);
}

/* inih line reader over the file in memory, so that the handler knows the
 * line number (the Debian build passes none) and the digest covers exactly
 * the bytes parsed. */
static char *policy_parse_reader(char *str, int num, void *stream)
{
  struct policy_parse *ps = stream;
  const char *start = ps->text + ps->pos;
  const char *nl;
  size_t n;

  if (ps->pos >= ps->len)
    return NULL;
  nl = memchr(start, '\n', ps->len - ps->pos);
  n = nl ? (size_t) (nl - start) + 1 : ps->len - ps->pos;
  ps->line++;
  ps->pos += n;
  if (n + 1 > (size_t) num) {
    ini_fault_set(&ps->fault, ps->line, "line is longer than %d characters",
                  num - 2);
    return NULL;
  }
  if (memchr(start, '\0', n) != NULL) {
    ini_fault_set(&ps->fault, ps->line, "line contains a NUL byte");
    return NULL;
  }
  policy_parse_header(ps, start, n);
  memcpy(str, start, n);
  str[n] = '\0';
  return str;
}

static int policy_entry_cmp(const void *a, const void *b)
{
  const struct policy_entry *x = a;
  const struct policy_entry *y = b;
  int c = strcmp(x->address, y->address);

  if (c != 0)
    return c;
  return (x->line > y->line) - (x->line < y->line);
}

/* Sorts the list and refuses a duplicate, naming its later line. */
static int policy_parse_finish_users(struct policy_parse *ps,
                                     struct policy *policy)
{
  if (ps->nentries > 1)
    qsort(ps->entries, ps->nentries, sizeof(*ps->entries), policy_entry_cmp);
  for (size_t i = 1; i < ps->nentries; i++) {
    if (strcmp(ps->entries[i].address, ps->entries[i - 1].address) == 0) {
      ps->line = ps->entries[i].line;
      ini_fault_set(&ps->fault, ps->line,
                    "%s is listed twice (first on line %d)",
                    ps->entries[i].address, ps->entries[i - 1].line);
      return -EINVAL;
    }
  }
  policy->users = xcalloc(ps->nentries, sizeof(*policy->users));
  for (size_t i = 0; i < ps->nentries; i++) {
    policy->users[i] = ps->entries[i].address;
    ps->entries[i].address = NULL;
  }
  policy->nusers = ps->nentries;
  return 0;
}

static void policy_digest(const char *text, size_t len, char out[65])
{
  unsigned char sum[32];
  static const char hex[] = "0123456789abcdef";

  gnutls_hash_fast(GNUTLS_DIG_SHA256, text, len, sum);
  for (size_t i = 0; i < sizeof(sum); i++) {
    out[2 * i] = hex[sum[i] >> 4];
    out[2 * i + 1] = hex[sum[i] & 0xf];
  }
  out[64] = '\0';
}

int policy_parse(const char *name, const char *text, size_t len,
                 struct policy **out, char *err, size_t errlen)
{
  struct policy_parse ps = { .text = text, .len = len };
  struct policy *policy = xcalloc(1, sizeof(*policy));
  int inih_line;
  int rc = -EINVAL;

  inih_line
      = ini_parse_stream(policy_parse_reader, &ps, policy_parse_handler, &ps);
  /* inih reports lines it could not read as key = value itself; ours
   * (handler and reader) are recorded with their line. */
  ini_fault_inih(&ps.fault, inih_line,
                 "not a [section], a key = value line or a comment");
  if (ps.fault.line == 0 && !ps.have_enabled)
    snprintf(ps.fault.text, sizeof(ps.fault.text),
             "[integration] needs enabled = true or false");
  else if (ps.fault.line == 0 && !ps.have_mode)
    snprintf(ps.fault.text, sizeof(ps.fault.text),
             "[integration] needs mode = all or specific");
  else if (ps.fault.line == 0 && policy_parse_finish_users(&ps, policy) == 0)
    rc = 0;
  if (rc < 0) {
    if (ps.fault.line > 0)
      snprintf(err, errlen, "%s:%d: %s", name, ps.fault.line, ps.fault.text);
    else
      snprintf(err, errlen, "%s: %s", name, ps.fault.text);
    goto out;
  }

  policy->enabled = ps.enabled;
  policy->mode = ps.mode;
  policy_digest(text, len, policy->digest);
  *out = policy;
  policy = NULL;

out:
  for (size_t i = 0; i < ps.nentries; i++)
    free(ps.entries[i].address);
  free(ps.entries);
  policy_free(policy);
  return rc;
}

/* Reads the whole file, refusing anything larger than POLICY_FILE_MAX. */
static int policy_read_file(const char *path, char **text, size_t *len,
                            char *err, size_t errlen)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  char *buf = NULL;
  size_t got = 0;
  int rc = 0;

  if (fd < 0 || fstat(fd, &st) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode) || (uint64_t) st.st_size > POLICY_FILE_MAX) {
    rc = -EFBIG;
    snprintf(err, errlen, "%s: not a regular file of at most %u bytes", path,
             POLICY_FILE_MAX);
    goto out;
  }
  buf = xmalloc((size_t) st.st_size + 1);
  while (got < (size_t) st.st_size) {
    ssize_t n = read(fd, buf + got, (size_t) st.st_size - got);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : -EIO;
      snprintf(err, errlen, "%s: cannot read: %s", path,
               n < 0 ? strerror(errno) : "file shrank while reading");
      goto out;
    }
    got += (size_t) n;
  }
  buf[got] = '\0';
  *text = buf;
  *len = got;
  buf = NULL;

out:
  free(buf);
  if (fd >= 0)
    close(fd);
  return rc;
}

int policy_load(const char *path, struct policy **out, char *err, size_t errlen)
{
  char *text = NULL;
  size_t len = 0;
  int rc;

  rc = policy_read_file(path, &text, &len, err, errlen);
  if (rc == 0)
    rc = policy_parse(path, text, len, out, err, errlen);
  free(text);
  return rc;
}

void policy_free(struct policy *policy)
{
  if (policy == NULL)
    return;
  for (size_t i = 0; i < policy->nusers; i++)
    free(policy->users[i]);
  free(policy->users);
  free(policy);
}

static int policy_user_cmp(const void *key, const void *elem)
{
  return strcmp(key, *(char *const *) elem);
}

bool policy_permits_user(const struct policy *policy, const char *address)
{
  char norm[POLICY_ADDRESS_MAX];

  if (policy == NULL
      || policy_address_normalize(address, norm, sizeof(norm)) < 0)
    return false;
  if (policy->mode == POLICY_MODE_ALL)
    return true;
  if (policy->nusers == 0)
    return false;
  return bsearch(norm, policy->users, policy->nusers, sizeof(*policy->users),
                 policy_user_cmp)
         != NULL;
}
