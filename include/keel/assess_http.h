/*
 * keel/assess_http.h - HTTP(S) for `keel assess`: one thin wrapper of
 * libcurl (the session every HTTP-speaking probe uses: the HTTP probe, the
 * update probe, the publication checks), the login kinds a lab meets, and the
 * HTTP probe itself (test units http.*). In the keelassess library.
 *
 * The session never verifies the device's certificate unless given a CA file:
 * the tls unit judges certificates; an HTTP probe must still reach a device
 * with a self-signed one. Paths are sent as given (no normalisation), so the
 * probes can send what a careless server mishandles.
 */
#ifndef KEEL_ASSESS_HTTP_H
#define KEEL_ASSESS_HTTP_H

#include "keel/base.h"

#include <jansson.h>

#define KEEL_HTTP_BODY_MAX (64u * 1024u)   /* response body kept by default */
#define KEEL_HTTP_HEADERS_MAX (16u * 1024u) /* response header bytes kept */

/* ---- session ---------------------------------------------------------------------- */

typedef struct keel_http keel_http_t;

typedef struct {
    const char *host;     /* literal or name */
    unsigned port;
    int tls;              /* https */
    unsigned timeout_ms;  /* per request, connect included; 0 = 5000 */
    size_t body_max;      /* response body bytes kept; 0 = KEEL_HTTP_BODY_MAX */
    const char *ca_file;  /* verify the peer against this CA (and its name); NULL = do not verify */
} keel_http_opts_t;

keel_status_t keel_http_open(const keel_http_opts_t *o, keel_http_t **out) KEEL_MUST_CHECK;
/* Wipes the credentials the session holds. NULL is fine. */
void keel_http_close(keel_http_t *h);
/* "https://127.0.0.1:8443" (IPv6 literals bracketed), for evidence. */
const char *keel_http_base(const keel_http_t *h);

typedef struct {
    long status;           /* 0 when there was no HTTP answer; err says why */
    keel_buf_t headers;    /* the final response's header block, capped at KEEL_HTTP_HEADERS_MAX */
    keel_buf_t body;       /* capped at body_max */
    int body_truncated;
    long long duration_us; /* request sent to answer complete */
    char err[256];         /* libcurl's reason when status == 0 */
} keel_http_resp_t;

void keel_http_resp_init(keel_http_resp_t *r);
void keel_http_resp_free(keel_http_resp_t *r);

typedef struct {
    const char *method;        /* "GET" when NULL; any token, sent as given */
    const char *path;          /* from "/", sent as given (CURLOPT_PATH_AS_IS) */
    const char *content_type;  /* with a body; NULL = none */
    const void *body;          /* NULL = no body */
    size_t body_len;
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated, or NULL */
    int anonymous;             /* 1: without the session's credentials, token and cookies */
} keel_http_req_t;

/*
 * Sends one request and reads the answer into `r` (reset first). KEEL_OK also
 * for a transport failure (status 0, err set: refused, reset, timeout, TLS
 * failure); KEEL_ERR_ARG / KEEL_ERR_NOMEM otherwise.
 */
keel_status_t keel_http_do(keel_http_t *h, const keel_http_req_t *q, keel_http_resp_t *r) KEEL_MUST_CHECK;

/* The value of the first header `name` (case-insensitive) of `r` into out
 * (trimmed, truncated to cap-1); 1 when found, 0 otherwise. */
int keel_http_header(const keel_http_resp_t *r, const char *name, char *out, size_t cap);

/* ---- login ------------------------------------------------------------------------- */

typedef enum {
    KEEL_HTTP_LOGIN_NONE,
    KEEL_HTTP_LOGIN_BASIC, /* HTTP Basic on `path` (GET): 2xx = accepted, 401/403 = refused */
    KEEL_HTTP_LOGIN_JSON,  /* POST {user_field: user, password_field: password} to `path`: 2xx = accepted;
                              a "token" field in the answer becomes a bearer token, a "csrf" field the
                              X-CSRF-Token header; cookies are kept */
    KEEL_HTTP_LOGIN_FORM,  /* POST application/x-www-form-urlencoded: 2xx or 3xx with a new cookie = accepted */
} keel_http_login_kind_t;

typedef struct {
    keel_http_login_kind_t kind;
    const char *path;
    const char *user_field;     /* JSON/FORM; "username" when NULL */
    const char *password_field; /* JSON/FORM; "password" when NULL */
} keel_http_login_t;

/* "none", "basic", "json", "form" and back; KEEL_ERR_ARG for an unknown name. */
const char *keel_http_login_kind_name(keel_http_login_kind_t k);
keel_status_t keel_http_login_kind_parse(const char *name, keel_http_login_kind_t *out) KEEL_MUST_CHECK;

/*
 * Tries one user/password with `l`. *accepted = 1 when the device took it; the
 * session then carries the credential for later requests (Basic: the pair;
 * JSON: the bearer token and CSRF header; any: cookies). *accepted = 0
 * otherwise, and the session's credentials are unchanged. `r` (may be NULL)
 * receives the answer, with the password never in it (only the device's
 * answer is kept). The password is wiped from every buffer of ours.
 */
keel_status_t keel_http_login(keel_http_t *h, const keel_http_login_t *l, const char *user, const char *password,
                              int *accepted, keel_http_resp_t *r) KEEL_MUST_CHECK;
/* Forgets the session's credential, token, CSRF header and cookies. */
void keel_http_forget(keel_http_t *h);

/* ---- the HTTP probe (test units http.*) -------------------------------------------- */

typedef struct {
    const char *method; /* "GET", "PUT", ... */
    const char *path;
    int needs_auth;      /* the IXIT says it answers only after authentication */
    int security_relevant; /* it reads or changes a security-relevant setting (5.5-5) */
} keel_http_route_t;

typedef struct {
    keel_http_login_kind_t kind; /* JSON or FORM; NONE = not declared */
    const char *path;
    const char *current_field;  /* "current" when NULL */
    const char *new_field;      /* "new" when NULL */
} keel_http_pwchange_t;

typedef struct {
    keel_http_opts_t http;              /* the target port */
    const keel_http_route_t *routes;    /* declared routes (IXIT), may be NULL */
    size_t routes_len;
    keel_http_login_t login;            /* declared login; kind NONE = discover (Basic challenges, common
                                           login paths and forms) */
    keel_http_pwchange_t password_change; /* declared; kind NONE = http.password_change not applicable */
    const char *user;                   /* lab credentials (IXIT lab_credentials); NULL = none */
    const char *password;               /* secret: never stored in the observation; the caller wipes it */
    unsigned bruteforce_max;            /* wrong guesses at most for http.bruteforce; 0 = 25 */
    unsigned budget_ms;                 /* for the whole probe; 0 = 45000 */
} keel_http_probe_opts_t;

/*
 * Runs the http.* units against one HTTP(S) port, in an order that keeps the
 * lab's own access: disclosure, auth_sweep, debug, input, password_change,
 * then default_creds and bruteforce last (they trip the device's throttle).
 * Observation "keel-assess-http-1" following the test-unit contract of
 * keel/assess_probe.h. KEEL_ERR_ARG, KEEL_ERR_NOT_FOUND (host), KEEL_ERR_NOMEM;
 * a port that does not answer HTTP is a document (units inconclusive).
 */
keel_status_t keel_assess_probe_http(const keel_http_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

#endif
