/* SPDX-License-Identifier: MIT */
/* nextal-agent: the daemon. Wires the modules together on one libuv loop
 * and handles signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the
 * configuration's limits and the policy. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

#include "agent.h"
#include "config.h"
#include "credential.h"
#include "log.h"
#include "xalloc.h"

#define AGENT_DEFAULT_CONFIG "/etc/nextal-agent/agent.ini"
#define AGENT_PASSWORD_MAX 1024
#define AGENT_THREADPOOL_SIZE "16" /* libuv worker threads, unless set */

static void agent_usage(FILE *out)
{
  fprintf(out,
          "Usage: nextal-agent [OPTIONS]\n"
          "\n"
          "Office 365 sync agent for Nextal: accepts mail over SMTP and\n"
          "interviews over CalDAV, and carries them to Microsoft Graph as\n"
          "each linked user.\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE    configuration file (default: "
          "$NEXTAL_AGENT_CONFIG,\n"
          "                       else " AGENT_DEFAULT_CONFIG ")\n"
          "      --check-config   validate the configuration and exit\n"
          "      --hash-password  read a password on standard input and "
          "print\n"
          "                       the hash for [service] password_hash\n"
          "  -l, --log-level L    error, warn, info or debug\n"
          "  -t, --trace LIST     trace categories: smtp,caldav,graph,store,\n"
          "                       policy,http or all\n"
          "  -h, --help           show this help\n"
          "  -V, --version        show the version\n"
          "\n"
          "Exit status:\n"
          "   0  clean stop, or --help, --version, --check-config and\n"
          "      --hash-password succeeded\n"
          "  64  usage error (unknown option or argument)\n"
          "  65  --hash-password read no password on standard input\n"
          "  69  the database, the spool or a listener could not be opened\n"
          "  70  internal error\n"
          "  78  configuration refused: the file, a log level or trace\n"
          "      category, password_hash, key_file or client certificate\n");
}

/* Reads one line of password from standard input into line; on a
 * terminal, without echoing it. Returns its length, or -1 when there is
 * none or it does not fit. */
static int agent_password_read(char *line, size_t size)
{
  struct termios saved, quiet;
  int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
  char *got;
  size_t len;

  /* Echo goes off before the prompt shows, and nothing typed is
   * discarded (TCSADRAIN, not TCSAFLUSH): a fast typist loses nothing. */
  if (tty) {
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t) ECHO;
    tcsetattr(STDIN_FILENO, TCSADRAIN, &quiet);
    fprintf(stderr, "Password: ");
  }
  got = fgets(line, (int) size, stdin);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSADRAIN, &saved);
    fputc('\n', stderr);
  }
  if (got == NULL)
    return -1;
  len = strcspn(line, "\r\n");
  /* No line end within the buffer: a longer password would be cut. */
  if (line[len] == '\0' && !feof(stdin))
    return -1;
  line[len] = '\0';
  return (int) len;
}

static int agent_hash_password(void)
{
  char line[AGENT_PASSWORD_MAX];
  char *hash = NULL;
  int len = agent_password_read(line, sizeof(line));

  if (len < 0 && !feof(stdin)) {
    fprintf(stderr,
            "nextal-agent: the password is longer than %d bytes; "
            "choose a shorter one\n",
            AGENT_PASSWORD_MAX - 2);
    return EX_DATAERR;
  }
  if (len <= 0) {
    fprintf(stderr, "nextal-agent: no password given on standard input\n");
    return EX_DATAERR;
  }
  if (credential_hash(line, &hash) < 0) {
    fprintf(stderr, "nextal-agent: cannot hash the password\n");
    return EX_SOFTWARE;
  }
  printf("%s\n", hash);
  free(hash);
  return EX_OK;
}

struct agent_args {
  const char *config_path;
  const char *log_level;
  const char *trace;
  int check_only;
  int hash_password;
};

/* Returns -1 to go on, or an exit status. */
static int agent_parse_args(int argc, char **argv, struct agent_args *args)
{
  static const struct option options[] = {
    { "config", required_argument, NULL, 'c' },
    { "check-config", no_argument, NULL, 'C' },
    { "hash-password", no_argument, NULL, 'H' },
    { "log-level", required_argument, NULL, 'l' },
    { "trace", required_argument, NULL, 't' },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  int c;

  args->config_path = getenv("NEXTAL_AGENT_CONFIG");
  if (args->config_path == NULL || args->config_path[0] == '\0')
    args->config_path = AGENT_DEFAULT_CONFIG;
  while ((c = getopt_long(argc, argv, "c:l:t:hV", options, NULL)) != -1) {
    switch (c) {
      case 'c':
        args->config_path = optarg;
        break;
      case 'C':
        args->check_only = 1;
        break;
      case 'H':
        args->hash_password = 1;
        break;
      case 'l':
        args->log_level = optarg;
        break;
      case 't':
        args->trace = optarg;
        break;
      case 'h':
        agent_usage(stdout);
        return EX_OK;
      case 'V':
        printf("nextal-agent %s\n", NEXTAL_VERSION);
        return EX_OK;
      default:
        agent_usage(stderr);
        return EX_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "nextal-agent: unexpected argument \"%s\"\n", argv[optind]);
    return EX_USAGE;
  }
  return -1;
}

static int agent_apply_logging(const struct config *cfg,
                               const struct agent_args *args)
{
  const char *level = args->log_level ? args->log_level : cfg->log_level;
  const char *trace = args->trace ? args->trace : cfg->trace;
  enum log_level parsed;

  if (log_level_parse(level, &parsed) < 0) {
    fprintf(stderr, "nextal-agent: unknown log level \"%s\"\n", level);
    return -EINVAL;
  }
  log_set_level(parsed);
  if (log_trace_enable(trace) < 0) {
    fprintf(stderr, "nextal-agent: unknown trace category in \"%s\"\n", trace);
    return -EINVAL;
  }
  return 0;
}

/* Writes each "path:line: text" line of warnings to standard error. */
static void agent_print_warnings(const char *warnings)
{
  const char *p = warnings;

  while (*p != '\0') {
    size_t n = strcspn(p, "\n");

    fprintf(stderr, "nextal-agent: warning: %.*s\n", (int) n, p);
    p += n + (p[n] == '\n');
  }
}

int main(int argc, char **argv)
{
  struct agent_args args = { 0 };
  struct config cfg;
  char err[1024];
  int status;

  status = agent_parse_args(argc, argv, &args);
  if (status >= 0)
    return status;
  if (args.hash_password)
    return agent_hash_password();
  if (config_load_agent(&cfg, args.config_path, err, sizeof(err)) < 0) {
    fprintf(stderr, "nextal-agent: %s\n", err);
    config_free(&cfg);
    return EX_CONFIG;
  }
  if (agent_apply_logging(&cfg, &args) < 0) {
    config_free(&cfg);
    return EX_CONFIG;
  }
  if (args.check_only) {
    if (cfg.warnings != NULL)
      agent_print_warnings(cfg.warnings);
    printf("%s: configuration is valid\n", args.config_path);
    config_free(&cfg);
    return EX_OK;
  }
  /* Intake's workers mostly wait in fsync, and rows committed together
   * share one sync (bench/README.md, figure 1): libuv's default of 4
   * threads leaves syncs that could overlap waiting in line. Read by libuv
   * when the pool first starts; an operator's own setting wins. */
  setenv("UV_THREADPOOL_SIZE", AGENT_THREADPOOL_SIZE, 0);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  status = agent_run(&cfg, args.config_path);
  curl_global_cleanup();
  config_free(&cfg);
  return status;
}
