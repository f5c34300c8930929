/* SPDX-License-Identifier: MIT */
/* SMTP load client for the benchmarks: C threads with blocking sockets, so
 * that the client costs little CPU beside the server it measures. */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Longest SMTP reply line kept; RFC 5321 allows 512 octets. */
#define LOAD_LINE_MAX 1024
/* Most concurrent clients one run may start. */
#define LOAD_CLIENTS_MAX 1000

struct load_opts {
  const char *host;
  int port;
  int clients;
  long messages;
  long size;
  long per_conn; /* messages per connection before QUIT */
  const char *from;
  const char *to;
  const char *auth; /* base64 of "\0user\0pass", or NULL */
};

struct load_conn {
  int fd;
  char buf[LOAD_LINE_MAX * 4];
  size_t have;
};

struct load_thread {
  pthread_t tid;
  int index;
  long sent;
  long failed;
  double *lat; /* seconds per transaction, one per message sent */
  long nlat;
  long cap;
  char last_error[256];
};

static struct load_opts opts;
static atomic_long next_message;
static char *body; /* the message after its Message-ID line */
static size_t body_len;

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int conn_write(struct load_conn *c, const char *data, size_t len)
{
  while (len > 0) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    data += n;
    len -= (size_t) n;
  }
  return 0;
}

/* Reads one whole reply (the last line of a multi-line reply) and returns
 * its code, or a negative errno. */
static int conn_reply(struct load_conn *c, char *line, size_t linesz)
{
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->have);
    if (nl != NULL) {
      size_t len = (size_t) (nl - c->buf) + 1;
      size_t keep = len < linesz ? len : linesz - 1;
      memcpy(line, c->buf, keep);
      line[keep] = '\0';
      memmove(c->buf, c->buf + len, c->have - len);
      c->have -= len;
      if (len >= 4 && line[3] == '-')
        continue;
      if (len < 3)
        return -EPROTO;
      return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    }
    if (c->have == sizeof(c->buf))
      return -EPROTO;
    ssize_t n = recv(c->fd, c->buf + c->have, sizeof(c->buf) - c->have, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return n == 0 ? -ECONNRESET : -errno;
    c->have += (size_t) n;
  }
}

static int conn_cmd(struct load_conn *c, const char *cmd, int want, char *line,
                    size_t linesz)
{
  int rc = conn_write(c, cmd, strlen(cmd));
  if (rc < 0)
    return rc;
  rc = conn_reply(c, line, linesz);
  if (rc < 0)
    return rc;
  return rc == want ? 0 : -EBADMSG;
}

static int conn_open(struct load_conn *c, char *line, size_t linesz)
{
  struct sockaddr_in sa
      = { .sin_family = AF_INET, .sin_port = htons((uint16_t) opts.port) };
  char cmd[512];
  int one = 1;
  int rc;

  if (inet_pton(AF_INET, opts.host, &sa.sin_addr) != 1)
    return -EINVAL;
  c->have = 0;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -errno;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
    rc = -errno;
    goto out;
  }
  rc = conn_reply(c, line, linesz);
  if (rc != 220) {
    rc = rc < 0 ? rc : -EBADMSG;
    goto out;
  }
  rc = conn_cmd(c, "EHLO bench.invalid\r\n", 250, line, linesz);
  if (rc < 0 || opts.auth == NULL)
    goto out;
  snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", opts.auth);
  rc = conn_cmd(c, cmd, 235, line, linesz);
out:
  if (rc < 0) {
    close(c->fd);
    c->fd = -1;
  }
  return rc;
}

static int conn_send_one(struct load_conn *c, long id, int thread, char *line,
                         size_t linesz)
{
  char cmd[512];
  int rc;

  snprintf(cmd, sizeof(cmd), "MAIL FROM:<%s> SIZE=%ld\r\n", opts.from,
           opts.size);
  if ((rc = conn_cmd(c, cmd, 250, line, linesz)) < 0)
    return rc;
  snprintf(cmd, sizeof(cmd), "RCPT TO:<%s>\r\n", opts.to);
  if ((rc = conn_cmd(c, cmd, 250, line, linesz)) < 0)
    return rc;
  if ((rc = conn_cmd(c, "DATA\r\n", 354, line, linesz)) < 0)
    return rc;
  snprintf(cmd, sizeof(cmd), "Message-ID: <bench-%ld-%d-%ld@bench.invalid>\r\n",
           (long) getpid(), thread, id);
  if ((rc = conn_write(c, cmd, strlen(cmd))) < 0)
    return rc;
  if ((rc = conn_write(c, body, body_len)) < 0)
    return rc;
  rc = conn_write(c, ".\r\n", 3);
  if (rc < 0)
    return rc;
  rc = conn_reply(c, line, linesz);
  if (rc < 0)
    return rc;
  return rc == 250 ? 0 : -EBADMSG;
}

static void *thread_main(void *arg)
{
  struct load_thread *t = arg;
  struct load_conn c = { .fd = -1 };
  char line[LOAD_LINE_MAX];
  long on_conn = 0;

  for (;;) {
    long id = atomic_fetch_add(&next_message, 1);
    if (id >= opts.messages)
      break;
    if (c.fd < 0) {
      int rc = conn_open(&c, line, sizeof(line));
      if (rc < 0) {
        t->failed++;
        snprintf(t->last_error, sizeof(t->last_error), "connect: %s %.200s",
                 strerror(-rc), rc == -EBADMSG ? line : "");
        usleep(10000);
        continue;
      }
      on_conn = 0;
    }
    double start = now_s();
    int rc = conn_send_one(&c, id, t->index, line, sizeof(line));
    if (rc < 0) {
      t->failed++;
      snprintf(t->last_error, sizeof(t->last_error), "send: %s %.200s",
               strerror(-rc), rc == -EBADMSG ? line : "");
      close(c.fd);
      c.fd = -1;
      continue;
    }
    if (t->nlat == t->cap) {
      t->cap = t->cap ? t->cap * 2 : 1024;
      t->lat = realloc(t->lat, (size_t) t->cap * sizeof(double));
      if (t->lat == NULL)
        abort();
    }
    t->lat[t->nlat++] = now_s() - start;
    t->sent++;
    if (++on_conn >= opts.per_conn) {
      conn_cmd(&c, "QUIT\r\n", 221, line, sizeof(line));
      close(c.fd);
      c.fd = -1;
    }
  }
  if (c.fd >= 0) {
    conn_cmd(&c, "QUIT\r\n", 221, line, sizeof(line));
    close(c.fd);
  }
  return NULL;
}

static void body_build(void)
{
  static const char line76[] = "Lorem ipsum dolor sit amet, consectetur "
                               "adipiscing elit, sed do eiusmod tempor";
  char head[512];
  int hl = snprintf(head, sizeof(head),
                    "From: <%s>\r\nTo: <%s>\r\nSubject: bench message\r\n"
                    "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                    opts.from, opts.to);
  size_t cap = (size_t) opts.size + sizeof(line76) + 600;

  body = malloc(cap);
  if (body == NULL)
    abort();
  memcpy(body, head, (size_t) hl);
  body_len = (size_t) hl;
  /* 56 bytes for the Message-ID line written per message. */
  while (body_len + 56 + sizeof(line76) + 1 < (size_t) opts.size) {
    memcpy(body + body_len, line76, sizeof(line76) - 1);
    body_len += sizeof(line76) - 1;
    memcpy(body + body_len, "\r\n", 2);
    body_len += 2;
  }
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static void usage(void)
{
  fprintf(stderr,
          "usage: smtp_load -H host -p port [-c clients] [-n messages]\n"
          "       [-s size] [-k per_conn] [-f from] [-t to] [-a authplain]\n"
          "Prints one JSON line: sent, failed, seconds, rate, p50/p99.\n");
  exit(2);
}

int main(int argc, char **argv)
{
  int ch;
  opts = (struct load_opts){ .host = "127.0.0.1",
                             .clients = 50,
                             .messages = 10000,
                             .size = 10240,
                             .per_conn = 100,
                             .from = "alice@contoso.example",
                             .to = "jordan@example.net" };
  while ((ch = getopt(argc, argv, "H:p:c:n:s:k:f:t:a:")) != -1) {
    switch (ch) {
      case 'H':
        opts.host = optarg;
        break;
      case 'p':
        opts.port = (int) strtol(optarg, NULL, 10);
        break;
      case 'c':
        opts.clients = (int) strtol(optarg, NULL, 10);
        break;
      case 'n':
        opts.messages = strtol(optarg, NULL, 10);
        break;
      case 's':
        opts.size = strtol(optarg, NULL, 10);
        break;
      case 'k':
        opts.per_conn = strtol(optarg, NULL, 10);
        break;
      case 'f':
        opts.from = optarg;
        break;
      case 't':
        opts.to = optarg;
        break;
      case 'a':
        opts.auth = optarg;
        break;
      default:
        usage();
    }
  }
  if (opts.port <= 0 || opts.clients <= 0 || opts.clients > LOAD_CLIENTS_MAX
      || opts.messages <= 0 || opts.size < 1024 || opts.per_conn <= 0)
    usage();
  body_build();

  struct load_thread *t = calloc((size_t) opts.clients, sizeof(*t));
  if (t == NULL)
    abort();
  double start = now_s();
  for (int i = 0; i < opts.clients; i++) {
    t[i].index = i;
    pthread_create(&t[i].tid, NULL, thread_main, &t[i]);
  }
  long sent = 0, failed = 0, n = 0;
  const char *err = "";
  for (int i = 0; i < opts.clients; i++) {
    pthread_join(t[i].tid, NULL);
    sent += t[i].sent;
    failed += t[i].failed;
    n += t[i].nlat;
    if (t[i].last_error[0])
      err = t[i].last_error;
  }
  double secs = now_s() - start;
  double *all = malloc((size_t) (n ? n : 1) * sizeof(double));
  long k = 0;
  for (int i = 0; i < opts.clients; i++)
    for (long j = 0; j < t[i].nlat; j++)
      all[k++] = t[i].lat[j];
  qsort(all, (size_t) n, sizeof(double), cmp_double);
  double p50 = n ? all[n / 2] : 0, p99 = n ? all[(n * 99) / 100] : 0;
  char esc[300];
  size_t e = 0;
  for (const char *p = err; *p && e + 2 < sizeof(esc); p++)
    if (*p >= 0x20 && *p != '"' && *p != '\\')
      esc[e++] = *p;
  esc[e] = '\0';
  printf("{\"sent\": %ld, \"failed\": %ld, \"seconds\": %.3f, "
         "\"rate\": %.1f, \"p50_ms\": %.2f, \"p99_ms\": %.2f, "
         "\"last_error\": \"%s\"}\n",
         sent, failed, secs, secs > 0 ? sent / secs : 0, p50 * 1000, p99 * 1000,
         esc);
  return failed > 0 && sent == 0;
}
