/*
 * keel-fleetd token: the operators' tokens (docs/internals/fleet-admin.md).
 *
 *   keel-fleetd token add NAME [--read-only] --config FILE
 *   keel-fleetd token list --config FILE
 *   keel-fleetd token remove NAME --config FILE
 *
 * A token is "kft_" and 32 random bytes in base64url. It is printed once on
 * stdout and never stored: the tokens file ([admin] tokens, 0600) holds
 * "NAME ROLE SHA256HEX" lines, and the running service rereads it when it
 * changes, so adding or removing a token needs no restart.
 */
#define _GNU_SOURCE
#include "admin_logic.h"
#include "fleetd.h"

#include "keel/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { TOK_OK = 0, TOK_FAIL = 1, TOK_USAGE = 2 };

static const char token_usage[] =
    "usage: keel-fleetd token add NAME [--read-only] --config FILE\n"
    "       keel-fleetd token list --config FILE\n"
    "       keel-fleetd token remove NAME --config FILE\n"
    "\n"
    "add     makes a token for NAME ([A-Za-z0-9._@-], up to 64) and prints it once on\n"
    "        stdout; only its SHA-256 goes to the tokens file ([admin] tokens, 0600).\n"
    "        --read-only: the token may only read (GET: the dashboard, status, lists).\n"
    "list    the names and roles in the tokens file (never a token).\n"
    "remove  deletes NAME's line: its token stops working at the service's next request.\n"
    "\n"
    "Exit status: 0 done, 1 failed, 2 usage.\n";

/* The tokens file's text ("" when it does not exist yet), checked to parse. */
static keel_status_t tokens_load(const char *path, keel_buf_t *b, fleetd_token_t *v, size_t *n)
{
    int fd = -1;
    keel_status_t st = keel_file_open_private(path, &fd);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        keel_buf_init(b, FLEETD_TOKENS_FILE_MAX);
        *n = 0;
        return keel_buf_append(b, "", 0);
    }
    if (st != KEEL_OK)
        return st;
    st = keel_fd_read(fd, path, FLEETD_TOKENS_FILE_MAX, b);
    close(fd);
    if (st != KEEL_OK)
        return st;
    st = fleetd_tokens_parse((const char *)b->data, b->len, v, FLEETD_TOKENS_MAX, n);
    if (st != KEEL_OK) {
        keel_buf_free(b);
        return keel_errorf(st, "%s: %s", path, keel_error_message());
    }
    return KEEL_OK;
}

static int fail(const char *what)
{
    fprintf(stderr, "keel-fleetd: token %s: %s\n", what, keel_error_message());
    keel_error_clear();
    return TOK_FAIL;
}

static int token_add(const char *name, bool read_only, const char *path)
{
    static fleetd_token_t v[FLEETD_TOKENS_MAX];
    size_t n = 0;
    keel_buf_t b;
    if (!fleetd_token_name_ok(name)) {
        fprintf(stderr, "keel-fleetd: token add: a name is 1..%d of [A-Za-z0-9._@-], not starting with '.'\n",
                FLEETD_TOKEN_NAME_MAX);
        return TOK_USAGE;
    }
    if (tokens_load(path, &b, v, &n) != KEEL_OK)
        return fail("add");
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0) {
            keel_buf_free(&b);
            keel_errorf(KEEL_ERR_EXISTS, "%s already has a token named %s (remove it first)", path, name);
            return fail("add");
        }
    uint8_t rnd[FLEETD_TOKEN_RANDOM];
    char tok[FLEETD_TOKEN_LEN + 1], line[FLEETD_TOKEN_LINE_MAX];
    keel_random_bytes(rnd, sizeof rnd);
    fleetd_role_t role = read_only ? FLEETD_ROLE_READ : FLEETD_ROLE_ADMIN;
    keel_status_t st = fleetd_token_make(rnd, name, role, tok, line);
    keel_wipe(rnd, sizeof rnd);
    if (st == KEEL_OK && b.len > 0 && b.data[b.len - 1] != '\n')
        st = keel_buf_append(&b, "\n", 1);
    if (st == KEEL_OK)
        st = keel_buf_append(&b, line, strlen(line));
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, b.data, b.len, 0600);
    keel_buf_free(&b);
    if (st != KEEL_OK) {
        keel_wipe(tok, sizeof tok);
        return fail("add");
    }
    /* The only time the token exists outside the operator's hands. */
    int rc = printf("%s\n", tok) < 0 || fflush(stdout) != 0 ? TOK_FAIL : TOK_OK;
    keel_wipe(tok, sizeof tok);
    fprintf(stderr, "keel-fleetd: token %s (%s) added to %s; it is shown once, above\n", name, fleetd_role_name(role),
            path);
    return rc;
}

static int token_list(const char *path)
{
    static fleetd_token_t v[FLEETD_TOKENS_MAX];
    size_t n = 0;
    keel_buf_t b;
    if (tokens_load(path, &b, v, &n) != KEEL_OK)
        return fail("list");
    keel_buf_free(&b);
    for (size_t i = 0; i < n; i++)
        printf("%s %s\n", v[i].name, fleetd_role_name(v[i].role));
    return TOK_OK;
}

static int token_remove(const char *name, const char *path)
{
    static fleetd_token_t v[FLEETD_TOKENS_MAX];
    size_t n = 0;
    keel_buf_t b, out;
    if (tokens_load(path, &b, v, &n) != KEEL_OK)
        return fail("remove");
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found = found || strcmp(v[i].name, name) == 0;
    if (!found) {
        keel_buf_free(&b);
        keel_errorf(KEEL_ERR_NOT_FOUND, "%s has no token named %s", path, name);
        return fail("remove");
    }
    /* Every line but NAME's, comments and all (the file parsed, so its first field is the name). */
    keel_buf_init(&out, FLEETD_TOKENS_FILE_MAX);
    keel_status_t st = keel_buf_append(&out, "", 0);
    const char *p = (const char *)b.data, *end = p + b.len;
    size_t nl_len = strlen(name);
    while (st == KEEL_OK && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl + 1 : end;
        const char *q = p;
        while (q < le && (*q == ' ' || *q == '\t'))
            q++;
        bool drop = (size_t)(le - q) > nl_len && memcmp(q, name, nl_len) == 0 && (q[nl_len] == ' ' || q[nl_len] == '\t');
        if (!drop)
            st = keel_buf_append(&out, p, (size_t)(le - p));
        p = le;
    }
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, out.data, out.len, 0600);
    keel_buf_free(&out);
    keel_buf_free(&b);
    if (st != KEEL_OK)
        return fail("remove");
    fprintf(stderr, "keel-fleetd: token %s removed from %s\n", name, path);
    return TOK_OK;
}

/* argv[0] is "token", argv[1] the subcommand (main.c has taken --config out). */
int fleetd_token_cmd(int argc, char **argv, const char *tokens_path)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(token_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? TOK_USAGE : TOK_OK;
    }
    const char *sub = argv[1], *name = NULL;
    bool read_only = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(token_usage, stdout);
            return TOK_OK;
        }
        if (strcmp(argv[i], "--read-only") == 0 && strcmp(sub, "add") == 0 && !read_only) {
            read_only = true;
        } else if (argv[i][0] != '-' && name == NULL) {
            name = argv[i];
        } else {
            fprintf(stderr, "keel-fleetd: token %s: unexpected argument '%s'\n\n%s", sub, argv[i], token_usage);
            return TOK_USAGE;
        }
    }
    if (strcmp(sub, "list") == 0 && name == NULL)
        return token_list(tokens_path);
    if (strcmp(sub, "add") == 0 && name != NULL)
        return token_add(name, read_only, tokens_path);
    if (strcmp(sub, "remove") == 0 && name != NULL)
        return token_remove(name, tokens_path);
    fputs(token_usage, stderr);
    return TOK_USAGE;
}
