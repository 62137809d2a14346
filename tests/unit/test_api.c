/* api: strict JSON input, the listen address, and the worker pool that
 * keeps Argon2id and installs off the loop. The HTTPS server itself is
 * tested against a running keeld (tests/integration/keeld_*.sh). */
#include "testutil.h"

#include "internal.h"
#include "ui_assets.h"

#include <event2/event.h>
#include <pthread.h>
#include <unistd.h>

/* keeld links the real UI; the routes only need a table to link against. */
const keel_ui_asset_t keel_ui_assets[] = {{"/index.html", "text/html", (const unsigned char *)"<p>", 3}};
const size_t keel_ui_assets_len = 1;

static const api_json_field_t login_fields[] = {
    {"username", API_JSON_STRING, true, 8},
    {"password", API_JSON_STRING, true, 16},
    {"remember", API_JSON_BOOL, false, 0},
    {"until", API_JSON_STRING_OR_NULL, false, 10},
};

static keel_status_t parse(const char *text)
{
    json_t *j = NULL;
    keel_status_t st = api_json_parse(text, strlen(text), login_fields, 4, &j);
    if (st == KEEL_OK) {
        assert_non_null(j);
        json_decref(j);
    } else {
        assert_null(j);
    }
    return st;
}

static void test_json_strict(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"username\":\"admin\",\"password\":\"x\"}"), KEEL_OK);
    assert_int_equal(parse("{\"username\":\"admin\",\"password\":\"x\",\"remember\":true,\"until\":null}"), KEEL_OK);
    /* a duplicate key, an unknown field, a missing field, wrong types */
    assert_int_equal(parse("{\"username\":\"admin\",\"username\":\"root\",\"password\":\"x\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"username\":\"admin\",\"password\":\"x\",\"role\":\"root\"}"), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "role"));
    assert_int_equal(parse("{\"username\":\"admin\"}"), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "password"));
    assert_int_equal(parse("{\"username\":1,\"password\":\"x\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"username\":\"a\",\"password\":\"x\",\"remember\":\"yes\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"username\":\"a\",\"password\":\"x\",\"until\":5}"), KEEL_ERR_FORMAT);
    /* over a field's cap; NUL inside a string; not an object; not JSON */
    assert_int_equal(parse("{\"username\":\"administrator\",\"password\":\"x\"}"), KEEL_ERR_TOO_LARGE);
    assert_int_equal(parse("{\"username\":\"a\\u0000b\",\"password\":\"x\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("[\"admin\"]"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"username\":"), KEEL_ERR_FORMAT);
    assert_int_equal(parse(""), KEEL_ERR_FORMAT);
    /* the body cap comes before parsing */
    size_t big = KEEL_API_JSON_MAX + 1;
    char *b = malloc(big);
    assert_non_null(b);
    memset(b, ' ', big);
    json_t *j = NULL;
    assert_int_equal(api_json_parse(b, big, login_fields, 4, &j), KEEL_ERR_TOO_LARGE);
    free(b);
    /* no fields at all: only {} passes */
    assert_int_equal(api_json_parse("{}", 2, NULL, 0, &j), KEEL_OK);
    json_decref(j);
    assert_int_equal(api_json_parse("{\"a\":1}", 7, NULL, 0, &j), KEEL_ERR_FORMAT);
}

static void test_split_listen(void **state)
{
    (void)state;
    char host[64];
    uint16_t port = 0;
    assert_int_equal(api_split_listen("127.0.0.1:8443", host, sizeof host, &port), KEEL_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8443);
    assert_int_equal(api_split_listen("[::1]:443", host, sizeof host, &port), KEEL_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 443);
    assert_int_equal(api_split_listen("0.0.0.0:0", host, sizeof host, &port), KEEL_OK);
    const char *bad[] = {"127.0.0.1", ":8443", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:84x",
                         "device.local:8443", "[::1]443", "[::1:443", "::1:443"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(api_split_listen(bad[i], host, sizeof host, &port), KEEL_ERR_CONFIG);
}

/* ---- workers ---- */

typedef struct {
    keel_job_t job;
    pthread_t ran_on;
    pthread_t done_on;
    bool ran, done;
    int *remaining;
    struct event_base *base;
    pthread_mutex_t *gate; /* held by the test to keep a job running */
} test_job_t;

static void job_run(keel_job_t *job)
{
    test_job_t *t = (test_job_t *)job;
    if (t->gate != NULL) {
        pthread_mutex_lock(t->gate);
        pthread_mutex_unlock(t->gate);
    }
    t->ran_on = pthread_self();
    t->ran = true;
}

static void job_done(keel_job_t *job)
{
    test_job_t *t = (test_job_t *)job;
    t->done_on = pthread_self();
    t->done = true;
    if (t->remaining != NULL && --*t->remaining == 0)
        event_base_loopbreak(t->base);
}

static void test_workers_done_on_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    keel_workers_t *w = NULL;
    assert_int_equal(keel_workers_start(base, 2, 8, &w), KEEL_OK);
    enum { N = 6 };
    test_job_t jobs[N];
    int remaining = N;
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < N; i++) {
        jobs[i].job.run = job_run;
        jobs[i].job.done = job_done;
        jobs[i].remaining = &remaining;
        jobs[i].base = base;
        assert_int_equal(keel_workers_submit(w, &jobs[i].job), KEEL_OK);
    }
    assert_int_equal(keel_workers_pending(w), N);
    assert_int_equal(event_base_dispatch(base), 0);
    assert_int_equal(remaining, 0);
    assert_int_equal(keel_workers_pending(w), 0);
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].ran && jobs[i].done);
        /* run off the loop, done on it */
        assert_false(pthread_equal(jobs[i].ran_on, pthread_self()));
        assert_true(pthread_equal(jobs[i].done_on, pthread_self()));
    }
    keel_workers_free(w);
    event_base_free(base);
}

static void test_workers_bounded_and_cancelled(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    keel_workers_t *w = NULL;
    assert_int_equal(keel_workers_start(base, 1, 2, &w), KEEL_OK);
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&gate);
    test_job_t jobs[4];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 4; i++) {
        jobs[i].job.run = job_run;
        jobs[i].job.done = job_done;
        jobs[i].gate = &gate;
    }
    assert_int_equal(keel_workers_submit(w, &jobs[0].job), KEEL_OK);
    /* give the worker time to take job 0 off the queue (it then waits on the gate) */
    usleep(50000);
    assert_int_equal(keel_workers_submit(w, &jobs[1].job), KEEL_OK);
    assert_int_equal(keel_workers_submit(w, &jobs[2].job), KEEL_OK);
    /* a full queue refuses rather than grows */
    assert_int_equal(keel_workers_submit(w, &jobs[3].job), KEEL_ERR_TOO_LARGE);
    pthread_mutex_unlock(&gate);
    /* free lets the running job finish and cancels or finishes the rest;
     * every submitted job gets its done exactly once */
    keel_workers_free(w);
    for (int i = 0; i < 3; i++)
        assert_true(jobs[i].done);
    assert_true(jobs[0].ran && !jobs[0].job.cancelled);
    for (int i = 1; i < 3; i++)
        assert_true(jobs[i].ran != jobs[i].job.cancelled);
    assert_false(jobs[3].done);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_strict),
        cmocka_unit_test(test_split_listen),
        cmocka_unit_test(test_workers_done_on_loop),
        cmocka_unit_test(test_workers_bounded_and_cancelled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
