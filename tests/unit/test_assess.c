/*
 * Unit tests for keel assess's catalogue and the ICS/IXIT checks. The
 * catalogue: 78 well-formed, unique ids, M or R, features and units from the
 * fixed vocabularies, lookups by V3.1.3 and V2.1.1 id. The checks: the
 * examples of examples/keel-device pass strictly, and each rule is proven by
 * a copy of an example broken in exactly that way, refused with the JSON path
 * in the message (so a rule that is removed makes its case fail).
 */
#include "testutil.h"

#include "keel/assess.h"

#include <ctype.h>
#include <jansson.h>

/* ---- catalogue ---------------------------------------------------------------------- */

/* "5.N-M" or "6-M", N in 0..13, an optional A or B suffix. */
static int id_well_formed(const char *id)
{
    const char *p = id;
    if (p[0] == '5' && p[1] == '.') {
        char *end;
        long n = strtol(p + 2, &end, 10);
        if (end == p + 2 || n < 0 || n > 13)
            return 0;
        p = end;
    } else if (p[0] == '6') {
        p++;
    } else {
        return 0;
    }
    if (*p++ != '-' || !isdigit((unsigned char)*p) || *p == '0')
        return 0;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == 'A' || *p == 'B')
        p++;
    return *p == '\0';
}

static void catalogue_well_formed(void **state)
{
    (void)state;
    assert_int_equal(keel_assess_catalogue_count(), 78);
    assert_int_equal(KEEL_ASSESS_PROVISIONS, 78);
    assert_null(keel_assess_catalogue_at(78));
    size_t m = 0, r = 0;
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        assert_non_null(p);
        if (!id_well_formed(p->id))
            fail_msg("malformed id %s", p->id);
        assert_true(strlen(p->id) < KEEL_ASSESS_ID_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(keel_assess_catalogue_at(j)->id, p->id) == 0)
                fail_msg("duplicate id %s", p->id);
        if (p->status == 'M')
            m++;
        else if (p->status == 'R')
            r++;
        else
            fail_msg("%s: status %c", p->id, p->status);
        assert_true(p->title != NULL && p->title[0] != '\0' && strlen(p->title) < 120);
        assert_true(p->check != NULL && strlen(p->check) > 20);
        if (p->feature != NULL && keel_assess_feature_find(p->feature) == NULL)
            fail_msg("%s: unknown feature %s", p->id, p->feature);
        for (size_t u = 0; p->units[u] != NULL; u++)
            if (keel_assess_unit_find(p->units[u]) == NULL)
                fail_msg("%s: unknown unit %s", p->id, p->units[u]);
        assert_ptr_equal(keel_assess_catalogue_find(p->id), p);
    }
    /* V3.1.3's conformance table: 36 mandatory, 42 recommended. */
    assert_int_equal(m, 36);
    assert_int_equal(r, 42);
}

static void catalogue_lookup(void **state)
{
    (void)state;
    const keel_assess_provision_t *p = keel_assess_catalogue_find("5.1-1");
    assert_non_null(p);
    assert_int_equal(p->status, 'M');
    assert_string_equal(p->feature, "passwords");
    assert_string_equal(keel_assess_catalogue_find("4-1")->id, "5.0-1");
    assert_null(keel_assess_catalogue_find("5.6-4")); /* split into 5.6-4A and 5.6-4B */
    assert_string_equal(keel_assess_catalogue_find("5.6-4A")->id, "5.6-4A");
    assert_null(keel_assess_catalogue_find("5.14-1"));
    assert_null(keel_assess_catalogue_find(NULL));
    assert_string_equal(keel_assess_catalogue_find("5.5-1")->units[0], "tls");
    /* Every unit and feature is used somewhere: the vocabularies are not padding. */
    for (size_t u = 0; u < keel_assess_unit_count(); u++) {
        int used = 0;
        for (size_t i = 0; i < keel_assess_catalogue_count(); i++)
            for (size_t k = 0; keel_assess_catalogue_at(i)->units[k] != NULL; k++)
                used |= strcmp(keel_assess_catalogue_at(i)->units[k], keel_assess_unit_at(u)->id) == 0;
        if (!used)
            fail_msg("unit %s is used by no provision", keel_assess_unit_at(u)->id);
    }
    for (size_t f = 0; f < keel_assess_feature_count(); f++) {
        int used = 0;
        for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
            const char *x = keel_assess_catalogue_at(i)->feature;
            used |= x != NULL && strcmp(x, keel_assess_feature_at(f)->id) == 0;
        }
        if (!used)
            fail_msg("feature %s is used by no provision", keel_assess_feature_at(f)->id);
    }
}

/* ---- documents ---------------------------------------------------------------------- */

static void example_path(char *out, const char *name)
{
    const char *src = getenv("KEEL_SOURCE_DIR");
    assert_non_null(src);
    snprintf(out, KEEL_PATH_MAX, "%s/examples/keel-device/%s", src, name);
}

static json_t *example(const char *name)
{
    char path[KEEL_PATH_MAX];
    example_path(path, name);
    json_error_t e;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        fail_msg("%s: %s", path, e.text);
    return j;
}

/* "a/b/0/c": object keys and array indexes; returns the parent and sets *last. */
static json_t *parent_of(json_t *doc, const char *path, char *last)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *seg = buf, *slash;
    json_t *cur = doc;
    while ((slash = strchr(seg, '/')) != NULL) {
        *slash = '\0';
        cur = json_is_array(cur) ? json_array_get(cur, strtoul(seg, NULL, 10)) : json_object_get(cur, seg);
        if (cur == NULL)
            fail_msg("no %s in the example", path);
        seg = slash + 1;
    }
    snprintf(last, 64, "%.63s", seg);
    return cur;
}

/* Sets path to the JSON text `value`, or deletes it when value is NULL. */
static void edit(json_t *doc, const char *path, const char *value)
{
    char last[64];
    json_t *p = parent_of(doc, path, last);
    json_t *v = value != NULL ? json_loads(value, JSON_DECODE_ANY, NULL) : NULL;
    if (value != NULL && v == NULL)
        fail_msg("bad test value %s", value);
    if (json_is_array(p)) {
        size_t i = strtoul(last, NULL, 10);
        assert_int_equal(v ? json_array_set_new(p, i, v) : json_array_remove(p, i), 0);
    } else {
        assert_int_equal(v ? json_object_set_new(p, last, v) : json_object_del(p, last), 0);
    }
}

typedef struct {
    const char *name;
    char doc;                /* 'c' ICS, 'x' IXIT */
    const char *edits[3][2]; /* path, JSON value (NULL: delete) */
    const char *want;        /* in the error message */
} rule_t;

static char big_text[KEEL_ASSESS_TEXT_MAX + 8];

static const rule_t rules[] = {
    /* both */
    {"ics format", 'c', {{"format", "\"keel-ics-2\""}}, "$.format: must be \"keel-ics-1\""},
    {"ixit format", 'x', {{"format", NULL}}, "$.format: missing"},
    {"status value", 'c', {{"status", "\"done\""}}, "$.status: must be one of"},
    {"ics unknown key", 'c', {{"extra", "1"}}, "$.extra: unknown key"},
    {"ixit nested unknown key", 'x', {{"interfaces/0/debug", "true"}}, "$.interfaces[0].debug: unknown key"},
    {"placeholder in a final document", 'x', {{"product/firmware_version", "\"TO BE FILLED: the version\""}},
     "$.product.firmware_version: to be filled by the manufacturer"},
    {"control characters", 'x', {{"product/model", "\"thermo\\n1\""}}, "$.product.model: control characters"},
    {"empty string", 'x', {{"factory_reset/procedure", "\"\""}}, "$.factory_reset.procedure: must not be empty"},
    /* ICS */
    {"feature type", 'c', {{"features/passwords", "\"yes\""}}, "$.features.passwords: must be true or false"},
    {"unknown feature", 'c', {{"features/teleport", "true"}}, "$.features.teleport: unknown feature"},
    {"missing feature", 'c', {{"features/sensing", NULL}}, "$.features.sensing: missing"},
    {"unknown provision", 'c', {{"provisions/5.99-1", "{\"support\":\"yes\"}"}},
     "$.provisions[\"5.99-1\"]: not a provision"},
    {"V2.1.1 id", 'c', {{"provisions/4-1", "{\"support\":\"yes\"}"}}, "a V2.1.1 id; use 5.0-1"},
    {"missing provision", 'c', {{"provisions/5.1-1", NULL}}, "$.provisions[\"5.1-1\"]: missing"},
    {"support value", 'c', {{"provisions/5.1-1/support", "\"partly\""}}, "$.provisions[\"5.1-1\"].support: must be"},
    {"provision unknown key", 'c', {{"provisions/5.1-1/evidence", "\"x\""}},
     "$.provisions[\"5.1-1\"].evidence: unknown key"},
    {"recommended, not supported, unjustified (5.0-1)", 'c', {{"provisions/5.6-8/justification", NULL}},
     "$.provisions[\"5.6-8\"]: a recommended provision that is not supported needs a justification"},
    {"recommended, not applicable, unjustified", 'c', {{"provisions/5.5-2", "{\"support\":\"not_applicable\"}"}},
     "$.provisions[\"5.5-2\"]: a recommended provision that does not apply needs a justification"},
    {"mandatory unconditional not applicable", 'c',
     {{"provisions/5.4-3", "{\"support\":\"not_applicable\",\"justification\":\"no\"}"}},
     "$.provisions[\"5.4-3\"]: a mandatory provision without condition cannot be not_applicable"},
    {"not applicable without the missing feature", 'c', {{"provisions/5.3-14/missing_feature", NULL}},
     "$.provisions[\"5.3-14\"].missing_feature: not_applicable needs the missing feature"},
    {"not applicable naming another feature", 'c', {{"provisions/5.3-14/missing_feature", "\"updates\""}},
     "depends on \"constrained\", not \"updates\""},
    {"not applicable but the feature is declared", 'c', {{"features/sensitive_data", "true"}},
     "$.provisions[\"5.8-2\"].missing_feature: $.features.sensitive_data says the product has it"},
    {"supported but the feature is absent", 'c',
     {{"provisions/5.3-14", "{\"support\":\"yes\",\"justification\":\"x\"}"}},
     "$.provisions[\"5.3-14\"].support: supported, but $.features.constrained"},
    {"missing feature on a supported provision", 'c', {{"provisions/5.1-1/missing_feature", "\"passwords\""}},
     "only a provision marked not_applicable names a missing feature"},
    {"oversized justification", 'c', {{NULL}}, "longer than 2048 bytes"},
    /* IXIT */
    {"wrong type", 'x', {{"interfaces/0/tls", "\"yes\""}}, "$.interfaces[0].tls: must be true or false"},
    {"secret in the IXIT", 'x', {{"authentication/0/lab_credentials/password", "\"hunter2\""}},
     "$.authentication[0].lab_credentials.password: the IXIT never holds a secret"},
    {"lab credentials from two places", 'x', {{"authentication/0/lab_credentials/password_file", "\"pw.txt\""}},
     "$.authentication[0].lab_credentials: needs exactly one of password_file and password_env"},
    {"password mechanism without its setting", 'x', {{"authentication/0/password_setting", NULL}},
     "$.authentication[0].password_setting: missing"},
    {"duplicate mechanism", 'x', {{"authentication/1/name", "\"admin-password\""}},
     "$.authentication[1].name: \"admin-password\" is declared twice"},
    {"port range", 'x', {{"interfaces/0/port", "70000"}}, "$.interfaces[0].port: must be a port number"},
    {"tcp without port", 'x', {{"interfaces/0/port", NULL}}, "$.interfaces[0].port: missing"},
    {"port on a unix socket", 'x', {{"interfaces/1/port", "9"}}, "$.interfaces[1].port: only tcp and udp"},
    {"unknown mechanism on an interface", 'x', {{"interfaces/0/authentication/0", "\"magic\""}},
     "$.interfaces[0].authentication[0]: \"magic\" is not in $.authentication"},
    {"duplicate interface", 'x', {{"interfaces/1/name", "\"local-api\""}}, "\"local-api\" is declared twice"},
    {"name form", 'x', {{"interfaces/0/name", "\"local api\""}}, "$.interfaces[0].name: must be a name"},
    {"http on a unix socket", 'x', {{"interfaces/1/http", "{}"}}, "$.interfaces[1].http: only tcp interfaces"},
    {"http unknown key", 'x', {{"interfaces/0/http/cookies", "true"}}, "$.interfaces[0].http.cookies: unknown key"},
    {"login kind", 'x', {{"interfaces/0/http/login/kind", "\"oauth\""}},
     "$.interfaces[0].http.login.kind: must be one of"},
    {"login path", 'x', {{"interfaces/0/http/login/path", "\"api/v1/session\""}},
     "$.interfaces[0].http.login.path: must be an HTTP path"},
    {"password change by basic", 'x', {{"interfaces/0/http/password_change/kind", "\"basic\""}},
     "$.interfaces[0].http.password_change.kind: must be one of"},
    {"route method", 'x', {{"interfaces/0/http/routes/1/method", "\"TRACE\""}},
     "$.interfaces[0].http.routes[1].method: must be one of"},
    {"route without authentication", 'x', {{"interfaces/0/http/routes/1/authentication", NULL}},
     "$.interfaces[0].http.routes[1].authentication: missing"},
    {"route path with space", 'x', {{"interfaces/0/http/routes/0/path", "\"/a b\""}},
     "$.interfaces[0].http.routes[0].path: must be an HTTP path"},
    {"upload kind", 'x', {{"update/upload/kind", "\"ftp\""}}, "$.update.upload.kind: must be one of"},
    {"http upload without path", 'x', {{"update/upload/kind", "\"http\""}, {"update/upload/method", "\"PUT\""}},
     "$.update.upload.path: missing"},
    {"keel upload with a path", 'x', {{"update/upload/path", "\"/x\""}},
     "$.update.upload: method and path belong"},
    {"update on an unknown interface", 'x', {{"update/interface", "\"usb\""}},
     "$.update.interface: \"usb\" is not in $.interfaces"},
    {"update bundles unknown kind", 'x', {{"update/test_bundles/evil", "\"x\""}},
     "$.update.test_bundles.evil: unknown key"},
    {"port not declared", 'x', {{"expected_open_ports/0/port", "22"}},
     "$.expected_open_ports[0]: tcp/22 is not the port of a server"},
    {"port listed twice", 'x', {{NULL}},
     "tcp/8443 is listed twice"},
    {"support end date", 'x', {{"product/support_period/end", "\"31/12/2031\""}},
     "$.product.support_period.end: must be a date"},
    {"disclosure URL scheme", 'x', {{"disclosure/policy", "\"ftp://acme.example/policy\""}},
     "$.disclosure.policy: must be an http(s) URL or a file path"},
    {"debug interface state", 'x', {{"debug_interfaces/0/state", "\"open\""}},
     "$.debug_interfaces[0].state: must be one of"},
    {"null where an object is needed", 'x', {{"disclosure", "null"}}, "$.disclosure: must not be null"},
    {"bad data declaration", 'x', {{"personal_data/declaration/controller", NULL}},
     "$.personal_data.declaration"},
    {"declaration file missing", 'x', {{"personal_data/declaration", "\"no-such-declaration.json\""}},
     "no-such-declaration.json"},
    {"declaration of the wrong type", 'x', {{"personal_data/declaration", "42"}},
     "$.personal_data.declaration: must be a data declaration"},
    {"array too long", 'x', {{NULL}}, "$.debug_interfaces: more than 64 entries"},
    {"reset on an unknown interface", 'x', {{"factory_reset/interface", "\"nfc\""}},
     "$.factory_reset.interface: \"nfc\" is not in $.interfaces"},
};

/* The cases whose edit needs building at run time. */
static void special_edit(const rule_t *r, json_t *doc)
{
    if (strcmp(r->name, "oversized justification") == 0) {
        memset(big_text, 'x', KEEL_ASSESS_TEXT_MAX + 1);
        big_text[KEEL_ASSESS_TEXT_MAX + 1] = '\0';
        json_object_set_new(json_object_get(json_object_get(doc, "provisions"), "5.1-1"), "justification",
                            json_string(big_text));
    } else if (strcmp(r->name, "array too long") == 0) {
        json_t *a = json_array();
        for (int i = 0; i <= KEEL_ASSESS_LIST_MAX; i++)
            json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "name", "uart", "kind", "physical", "state",
                                               "disabled"));
        json_object_set_new(doc, "debug_interfaces", a);
    } else if (strcmp(r->name, "port listed twice") == 0) {
        json_array_append_new(json_object_get(doc, "expected_open_ports"),
                              json_pack("{s:s, s:i}", "transport", "tcp", "port", 8443));
    }
}

static keel_status_t check(char which, const json_t *doc)
{
    char dir[KEEL_PATH_MAX];
    example_path(dir, "");
    return which == 'c' ? keel_assess_ics_check(doc, KEEL_ASSESS_STRICT, NULL)
                        : keel_assess_ixit_check(doc, dir, KEEL_ASSESS_STRICT, NULL);
}

static void examples_valid(void **state)
{
    (void)state;
    json_t *ph = NULL, *ics = NULL, *ixit = NULL;
    char p1[KEEL_PATH_MAX], p2[KEEL_PATH_MAX];
    example_path(p1, "ics.json");
    example_path(p2, "ixit.json");
    assert_int_equal(keel_assess_ics_load(p1, KEEL_ASSESS_STRICT, &ics, &ph), KEEL_OK);
    assert_int_equal(json_array_size(ph), 0);
    json_decref(ph);
    assert_int_equal(keel_assess_ixit_load(p2, KEEL_ASSESS_STRICT, &ixit, NULL), KEEL_OK);
    assert_int_equal(keel_assess_cross_check(ics, ixit), KEEL_OK);
    json_decref(ics);
    json_decref(ixit);
}

static void each_rule(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const rule_t *r = &rules[i];
        json_t *doc = example(r->doc == 'c' ? "ics.json" : "ixit.json");
        assert_int_equal(check(r->doc, doc), KEEL_OK);
        for (size_t k = 0; k < 3 && r->edits[k][0] != NULL; k++)
            edit(doc, r->edits[k][0], r->edits[k][1]);
        special_edit(r, doc);
        keel_error_clear();
        keel_status_t st = check(r->doc, doc);
        if (st == KEEL_OK)
            fail_msg("rule \"%s\": accepted", r->name);
        if (strstr(keel_error_message(), r->want) == NULL)
            fail_msg("rule \"%s\": message \"%s\" lacks \"%s\"", r->name, keel_error_message(), r->want);
        assert_int_equal(st, KEEL_ERR_FORMAT);
        json_decref(doc);
    }
}

/* A "declaration" given by path is read relative to the IXIT's directory. */
static void declaration_by_path(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char decl[KEEL_PATH_MAX], ixit_path[KEEL_PATH_MAX];
    json_t *doc = example("ixit.json");
    json_t *d = json_incref(json_object_get(json_object_get(doc, "personal_data"), "declaration"));
    path_in(decl, dir, "declaration.json");
    assert_int_equal(json_dump_file(d, decl, 0), 0);
    edit(doc, "personal_data/declaration", "\"declaration.json\"");
    path_in(ixit_path, dir, "ixit.json");
    assert_int_equal(json_dump_file(doc, ixit_path, 0), 0);
    assert_int_equal(keel_assess_ixit_load(ixit_path, KEEL_ASSESS_STRICT, NULL, NULL), KEEL_OK);
    /* the same file checked from elsewhere does not find it */
    assert_int_equal(keel_assess_ixit_check(doc, "/nonexistent", 0, NULL), KEEL_ERR_FORMAT);
    json_object_del(d, "controller");
    assert_int_equal(json_dump_file(d, decl, 0), 0);
    assert_int_equal(keel_assess_ixit_load(ixit_path, 0, NULL, NULL), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "controller"));
    json_decref(d);
    json_decref(doc);
    tmpdir_free(dir);
}

/* Drafts: placeholders are listed with their paths, refused when strict or final. */
static void drafts(void **state)
{
    (void)state;
    json_t *doc = example("ixit.json"), *ph = NULL;
    edit(doc, "status", "\"draft\"");
    edit(doc, "disclosure/policy", "\"TO BE FILLED: the policy URL\"");
    edit(doc, "debug_interfaces", "\"TO BE FILLED: debug ports\"");
    edit(doc, "interfaces/3", "\"TO BE FILLED: more interfaces\"");
    assert_int_equal(keel_assess_ixit_check(doc, NULL, 0, &ph), KEEL_OK);
    assert_int_equal(json_array_size(ph), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ph, 0), "path")), "$.interfaces[3]");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ph, 1), "path")), "$.disclosure.policy");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ph, 1), "what")), "the policy URL");
    json_decref(ph);
    assert_int_equal(keel_assess_ixit_check(doc, NULL, KEEL_ASSESS_STRICT, NULL), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.status: a draft is refused in strict mode: 3 values"));
    edit(doc, "status", "\"final\"");
    assert_int_equal(keel_assess_ixit_check(doc, NULL, 0, NULL), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.interfaces[3]: to be filled by the manufacturer"));
    json_decref(doc);

    /* ICS: a placeholder feature leaves the provisions depending on it unchecked. */
    doc = example("ics.json");
    edit(doc, "status", "\"draft\"");
    edit(doc, "features/constrained", "\"TO BE FILLED: constrained?\"");
    edit(doc, "provisions/5.3-14", "{\"support\":\"TO BE FILLED: yes or no\"}");
    assert_int_equal(keel_assess_ics_check(doc, 0, &ph), KEEL_OK);
    assert_int_equal(json_array_size(ph), 2);
    json_decref(ph);
    /* the whole features object left to fill: no conditional rule can be judged, none refuses */
    edit(doc, "features", "\"TO BE FILLED: the features\"");
    edit(doc, "provisions/5.8-2", "{\"support\":\"yes\",\"justification\":\"x\"}");
    assert_int_equal(keel_assess_ics_check(doc, 0, NULL), KEEL_OK);
    /* a draft without placeholders is still a draft */
    json_decref(doc);
    doc = example("ics.json");
    edit(doc, "status", "\"draft\"");
    assert_int_equal(keel_assess_ics_check(doc, KEEL_ASSESS_STRICT, NULL), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.status: a draft is refused in strict mode"));
    json_decref(doc);
}

static void files(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char path[KEEL_PATH_MAX];
    path_in(path, dir, "ics.json");
    const char dup[] = "{\"format\":\"keel-ics-1\",\"format\":\"keel-ics-1\"}";
    assert_int_equal(keel_file_write_atomic(path, dup, sizeof dup - 1, 0644), KEEL_OK);
    assert_int_equal(keel_assess_ics_load(path, 0, NULL, NULL), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "duplicate"));
    char *big = malloc(KEEL_ASSESS_FILE_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', KEEL_ASSESS_FILE_MAX + 1);
    big[0] = '{';
    big[KEEL_ASSESS_FILE_MAX] = '}';
    assert_int_equal(keel_file_write_atomic(path, big, KEEL_ASSESS_FILE_MAX + 1, 0644), KEEL_OK);
    free(big);
    assert_int_equal(keel_assess_ics_load(path, 0, NULL, NULL), KEEL_ERR_TOO_LARGE);
    path_in(path, dir, "absent.json");
    assert_int_not_equal(keel_assess_ixit_load(path, 0, NULL, NULL), KEEL_OK);
    tmpdir_free(dir);
}

static void cross_check(void **state)
{
    (void)state;
    static const struct {
        char doc;
        const char *path, *value, *want;
    } cases[] = {
        {'x', "product/model", "\"thermo-2\"", "ICS $.product.model \"thermo-1\" differs"},
        {'x', "update", "null", "ICS $.features.updates is true but IXIT $.update is null"},
        {'c', "features/personal_data", "false", "ICS $.features.personal_data is false but IXIT"},
        {'c', "features/passwords", "false", "declares a password mechanism"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *ics = example("ics.json"), *ixit = example("ixit.json");
        assert_int_equal(keel_assess_cross_check(ics, ixit), KEEL_OK);
        edit(cases[i].doc == 'c' ? ics : ixit, cases[i].path, cases[i].value);
        assert_int_equal(keel_assess_cross_check(ics, ixit), KEEL_ERR_FORMAT);
        if (strstr(keel_error_message(), cases[i].want) == NULL)
            fail_msg("cross-check %zu: \"%s\" lacks \"%s\"", i, keel_error_message(), cases[i].want);
        json_decref(ics);
        json_decref(ixit);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(catalogue_well_formed), cmocka_unit_test(catalogue_lookup),
        cmocka_unit_test(examples_valid),        cmocka_unit_test(each_rule),
        cmocka_unit_test(declaration_by_path),   cmocka_unit_test(drafts),
        cmocka_unit_test(files),                 cmocka_unit_test(cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
