#include "cli.h"

#include "keel/factory.h"

#include <getopt.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_fail(const char *cmd, keel_status_t st)
{
    const char *msg = keel_error_message();
    fprintf(stderr, "keel: %s: %s\n", cmd, msg[0] ? msg : keel_status_str(st));
    return st == KEEL_ERR_ARG || st == KEEL_ERR_CONFIG ? CLI_USAGE : CLI_FAILED;
}

/* In parentheses: not the analyzer's macro of cli.h. */
int(cli_usage)(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "keel: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'keel %s --help')\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

void cli_progress(void *arg, unsigned done, unsigned total)
{
    (void)arg;
    if (!isatty(STDERR_FILENO) || total == 0)
        return;
    enum { WIDTH = 40 };
    unsigned fill = (unsigned)((unsigned long)done * WIDTH / total);
    char bar[WIDTH + 1];
    for (unsigned i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r  [%s] %u/%u devices", bar, done, total);
    if (done == total)
        fputc('\n', stderr);
}

int cli_print_json(json_t *j)
{
    if (j == NULL || json_dumpf(j, stdout, JSON_INDENT(2)) != 0) {
        fprintf(stderr, "keel: could not write JSON output\n");
        return CLI_FAILED;
    }
    fputc('\n', stdout);
    return CLI_OK;
}

int cli_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return 0;
    *out = v;
    return 1;
}

int cli_bad_option(const char *cmd, int c, char **argv)
{
    if (c == ':')
        return cli_usage(cmd, "option %s needs a value", argv[optind - 1]);
    return cli_usage(cmd, "unknown option %s", argv[optind - 1]);
}

int cli_want_help(int argc, char **argv, const char *text)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(text, stdout);
            return 1;
        }
    return 0;
}

keel_status_t cli_load_factory(const char *dir, unsigned need, const char *pfile, const char *penv,
                               keel_factory_t **out)
{
    char pass[KEEL_PASSPHRASE_MAX + 1];
    size_t passlen = 0;
    keel_status_t st = KEEL_OK;
    if (pfile != NULL || penv != NULL)
        st = keel_secret_read(pfile, penv, pass, sizeof pass, &passlen);
    if (st == KEEL_OK)
        st = keel_factory_load(dir, need, passlen ? pass : NULL, out);
    keel_wipe(pass, sizeof pass);
    return st;
}

/* Bundle text comes from outside: no terminal control sequences on the way out. */
void cli_print_text(const char *label, const char *s)
{
    printf("  %-17s", label);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n' && s[1] != '\0')
            printf("\n  %-17s", "");
        else if (c == '\n')
            continue;
        else
            putchar(c == '\t' || (c >= 0x20 && c != 0x7f) ? c : '?');
    }
    putchar('\n');
}


int cli_issue(const char *cmd, int argc, char **argv, unsigned need, cli_issue_fn fn, cli_issued_t *out)
{
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"name", required_argument, NULL, 'n'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"passphrase-file", required_argument, NULL, 'f'},
                                         {"passphrase-env", required_argument, NULL, 'e'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = NULL, *pfile = NULL, *penv = NULL;
    int c;
    memset(out, 0, sizeof *out);
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'n': out->name = optarg; break;
        case 'o': out->out = optarg; break;
        case 'f': pfile = optarg; break;
        case 'e': penv = optarg; break;
        case 'j': out->json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (dir == NULL || out->name == NULL || out->out == NULL)
        return cli_usage(cmd, "--dir, --name and --out are required");
    keel_factory_t *f = NULL;
    keel_status_t st = cli_load_factory(dir, need, pfile, penv, &f);
    if (st == KEEL_OK)
        st = fn(f, out->name, out->out);
    keel_factory_free(f);
    return st == KEEL_OK ? -1 : cli_fail(cmd, st);
}

int cli_dispatch(const char *group, const char *usage, const cli_sub_t *subs, size_t n, int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(sub, subs[i].name) != 0)
            continue;
        if (subs[i].help != NULL && cli_want_help(argc - 1, argv + 1, subs[i].help))
            return CLI_OK;
        optind = 1;
        opterr = 0;
        return subs[i].fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "keel: %s: unknown subcommand '%s'\n\n%s", group, sub, usage);
    return CLI_USAGE;
}

time_t cli_parse_day(const char *s)
{
    int y, m, d;
    char tail;
    /* NOLINTNEXTLINE(cert-err34-c): the widths cap each number at 4 digits, it cannot overflow */
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || s[4] != '-' || s[7] != '-' ||
        y < 1970 || m < 1 || m > 12 || d < 1 || d > 31)
        return (time_t)-1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    struct tm back;
    /* 2031-02-31 normalises to March: not a date */
    if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_mday != d || back.tm_mon != m - 1)
        return (time_t)-1;
    return t;
}
