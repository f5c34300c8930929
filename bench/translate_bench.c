/* SPDX-License-Identifier: MIT */
/* Translation throughput: mime_to_graph() and ical_graph_from_ical() in a
 * loop over one input file, and mime_to_graph_file() with every attachment
 * decoded as the delivery of a large message does, timed with the
 * monotonic clock. */

#include "ical_graph.h"
#include "mime_to_graph.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Largest input file read, in bytes. */
#define TRANSLATE_BENCH_INPUT_MAX (64u << 20)

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static char *file_read(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t cap = 0, have = 0, n;

  if (f == NULL)
    return NULL;
  do {
    if (have == cap) {
      cap = cap ? cap * 2 : 1 << 20;
      if (cap > TRANSLATE_BENCH_INPUT_MAX)
        break;
      buf = realloc(buf, cap + 1);
      if (buf == NULL)
        abort();
    }
    n = fread(buf + have, 1, cap - have, f);
    have += n;
  } while (n > 0);
  fclose(f);
  buf[have] = '\0';
  *len = have;
  return buf;
}

/* Runs mime_to_graph over data for at least min_s seconds; prints JSON. */
static int bench_mime(const char *data, size_t len, double min_s)
{
  static const char *const rcpts[] = { "jordan@example.net" };
  struct mime_graph_envelope env
      = { .sender = "alice@contoso.example", .rcpts = rcpts, .nrcpts = 1 };
  struct mime_graph_result res;
  double start = now_s(), el;
  long n = 0;
  size_t req = 0;

  do {
    memset(&res, 0, sizeof(res));
    int rc = mime_to_graph(data, len, &env, &res);
    if (rc != 0) {
      fprintf(stderr, "mime_to_graph: %d %s\n", rc, res.error);
      mime_graph_result_free(&res);
      return 1;
    }
    /* The daemon serialises the request; count that too. */
    char *text = json_dumps(res.request, JSON_COMPACT);
    req = strlen(text);
    free(text);
    mime_graph_result_free(&res);
    n++;
    el = now_s() - start;
  } while (el < min_s);
  printf("{\"what\": \"mime\", \"input_bytes\": %zu, \"request_bytes\": %zu, "
         "\"iterations\": %ld, \"seconds\": %.3f, \"mb_per_s\": %.1f, "
         "\"ms_per_message\": %.2f}\n",
         len, req, n, el, (double) len * n / el / 1e6, el * 1000 / n);
  return 0;
}

/* Runs what delivery does with a spooled message too large for one
 * request, for at least min_s seconds: mime_to_graph_file, which reads
 * the file line by line, then each attachment decoded from the file (to
 * /dev/null here; to a file beside the spool in the daemon). */
static int bench_mime_file(const char *path, double min_s)
{
  static const char *const rcpts[] = { "jordan@example.net" };
  struct mime_graph_envelope env
      = { .sender = "alice@contoso.example", .rcpts = rcpts, .nrcpts = 1 };
  struct mime_graph_result res;
  double start = now_s(), el;
  uint64_t input = 0, decoded = 0, size;
  long n = 0;
  int fd = open("/dev/null", O_WRONLY);

  if (fd < 0)
    return 1;
  do {
    memset(&res, 0, sizeof(res));
    int rc = mime_to_graph_file(path, &env, &res);
    if (rc != 0 || res.form != MIME_GRAPH_FORM_LARGE) {
      fprintf(stderr, "mime_to_graph_file: %d form %d %s\n", rc, (int) res.form,
              res.error);
      mime_graph_result_free(&res);
      close(fd);
      return 1;
    }
    decoded = 0;
    for (size_t i = 0; i < res.nparts; i++) {
      if (mime_graph_part_extract(path, &res.parts[i], fd, &size) < 0) {
        fprintf(stderr, "mime_graph_part_extract failed\n");
        mime_graph_result_free(&res);
        close(fd);
        return 1;
      }
      decoded += size;
    }
    mime_graph_result_free(&res);
    n++;
    el = now_s() - start;
  } while (el < min_s);
  close(fd);
  {
    FILE *f = fopen(path, "rb");

    if (f != NULL && fseek(f, 0, SEEK_END) == 0)
      input = (uint64_t) ftell(f);
    if (f != NULL)
      fclose(f);
  }
  printf("{\"what\": \"mime_file\", \"input_bytes\": %llu, "
         "\"decoded_bytes\": %llu, \"iterations\": %ld, \"seconds\": %.3f, "
         "\"mb_per_s\": %.1f, \"ms_per_message\": %.2f}\n",
         (unsigned long long) input, (unsigned long long) decoded, n, el,
         (double) input * n / el / 1e6, el * 1000 / n);
  return 0;
}

/* Runs ical_graph_from_ical over data for at least min_s seconds. */
static int bench_ical(const char *data, size_t len, double min_s)
{
  struct ical_graph_options opt
      = { .user = "alice@contoso.example", .default_zone = "Europe/Berlin" };
  struct ical_graph_result res;
  double start = now_s(), el;
  long n = 0;

  do {
    memset(&res, 0, sizeof(res));
    int rc = ical_graph_from_ical(data, len, &opt, &res);
    if (rc != 0) {
      fprintf(stderr, "ical_graph_from_ical: %d %s\n", rc, res.error);
      ical_graph_result_free(&res);
      return 1;
    }
    char *text = json_dumps(res.event, JSON_COMPACT);
    free(text);
    ical_graph_result_free(&res);
    n++;
    el = now_s() - start;
  } while (el < min_s);
  printf("{\"what\": \"ical\", \"input_bytes\": %zu, \"iterations\": %ld, "
         "\"seconds\": %.3f, \"events_per_s\": %.0f, \"us_per_event\": %.1f}\n",
         len, n, el, n / el, el * 1e6 / n);
  return 0;
}

int main(int argc, char **argv)
{
  size_t len = 0;
  char *data;
  double min_s = 3.0;
  int rc;

  if (argc < 3
      || (strcmp(argv[1], "mime") != 0 && strcmp(argv[1], "ical") != 0
          && strcmp(argv[1], "mime-file") != 0)) {
    fprintf(stderr,
            "usage: translate_bench mime|mime-file|ical FILE [SECONDS]\n");
    return 2;
  }
  if (argc > 3) {
    char *end;
    errno = 0;
    min_s = strtod(argv[3], &end);
    if (errno != 0 || *end != '\0' || min_s <= 0) {
      fprintf(stderr, "translate_bench: bad SECONDS %s\n", argv[3]);
      return 2;
    }
  }
  if (strcmp(argv[1], "mime-file") == 0)
    return bench_mime_file(argv[2], min_s);
  data = file_read(argv[2], &len);
  if (data == NULL) {
    fprintf(stderr, "translate_bench: cannot read %s\n", argv[2]);
    return 2;
  }
  if (strcmp(argv[1], "mime") == 0)
    rc = bench_mime(data, len, min_s);
  else
    rc = bench_ical(data, len, min_s);
  free(data);
  return rc;
}
