#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_fail(const char *cmd, keel_status_t st)
{
    const char *msg = keel_error_message();
    fprintf(stderr, "keel: %s: %s\n", cmd, msg[0] ? msg : keel_status_str(st));
    return st == KEEL_ERR_ARG ? CLI_USAGE : CLI_FAILED;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "keel: %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'keel %s --help')\n", cmd);
    va_end(ap);
    return CLI_USAGE;
}

keel_status_t cli_read_secret(const char *file, const char *env, char *out, size_t cap, size_t *len)
{
    if (file != NULL && env != NULL)
        return keel_errorf(KEEL_ERR_ARG, "give the secret by file or by environment variable, not both");
    const char *src = NULL;
    keel_buf_t b;
    keel_buf_init(&b, 0);
    if (file != NULL) {
        keel_status_t st = keel_file_read(file, cap, &b);
        if (st != KEEL_OK)
            return st;
        src = (const char *)b.data;
    } else if (env != NULL) {
        src = getenv(env);
        if (src == NULL)
            return keel_errorf(KEEL_ERR_ARG, "environment variable %s is not set", env);
    } else {
        return keel_errorf(KEEL_ERR_ARG, "no secret source");
    }
    size_t n = strcspn(src, "\r\n");
    keel_status_t st = KEEL_OK;
    if (n == 0)
        st = keel_errorf(KEEL_ERR_ARG, "the secret is empty");
    else if (n >= cap)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "the secret is longer than %zu bytes", cap - 1);
    else {
        memcpy(out, src, n);
        out[n] = '\0';
        *len = n;
    }
    keel_buf_free(&b);
    return st;
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
