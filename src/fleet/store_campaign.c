/*
 * Releases and update campaigns: what was released, which campaign runs for
 * which model (at most one, by a unique index) and each selected device's
 * progress. Which devices a campaign selects is fleetd's choice; the store
 * records it.
 */
#include "db_internal.h"
#include "keel/fleet_store.h"
#include "keel/identity.h"

#include <stdio.h>
#include <string.h>

#define DETAIL_MAX 1024

static const char *const camp_states[] = {"running", "paused", "halted", "done"};
static const char *const dev_progress[] = {"notified", "downloading", "installed", "confirmed", "failed",
                                           "postponed"};

static bool hex_ok(const char *s, size_t n)
{
    if (s == NULL || strnlen(s, n + 1) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool release_ok(const char *model, const char *version, int64_t security_version)
{
    return keel_identity_model_ok(model) && keel_fleet_word_ok(version, KEEL_FLEET_VERSION_MAX, false) &&
           security_version >= 0;
}

keel_status_t keel_fleet_release_add(keel_fleet_db_t *db, const char *model, const char *version,
                                     int64_t security_version, int64_t now)
{
    if (db == NULL || !release_ok(model, version, security_version))
        return keel_errorf(KEEL_ERR_ARG, "release: bad model, version or security version");
    keel_fleet_val_t p[] = {KEEL_FV_S(model), KEEL_FV_S(version), KEEL_FV_I(security_version), KEEL_FV_I(now)};
    return keel_fleet_db_exec(db,
                              "INSERT INTO releases (model, version, security_version, added) VALUES ($1, $2, $3, $4) "
                              "ON CONFLICT (model, version, security_version) DO NOTHING",
                              p, 4, NULL, NULL, NULL);
}

keel_status_t keel_fleet_release_known(keel_fleet_db_t *db, const char *model, const char *version,
                                       int64_t security_version, bool *known)
{
    if (db == NULL || known == NULL || !release_ok(model, version, security_version))
        return keel_errorf(KEEL_ERR_ARG, "release: bad model, version or security version");
    keel_fleet_val_t p[] = {KEEL_FV_S(model), KEEL_FV_S(version), KEEL_FV_I(security_version)};
    int64_t n = 0;
    keel_status_t st = keel_fleet_db_int(db,
                                         "SELECT COUNT(*) FROM releases "
                                         "WHERE model = $1 AND version = $2 AND security_version = $3",
                                         p, 3, &n);
    *known = st == KEEL_OK && n > 0;
    return st;
}

void keel_fleet_campaign_new_id(char out[KEEL_FLEET_CAMPAIGN_MAX + 1])
{
    keel_fleet_random_hex(out, KEEL_FLEET_CAMPAIGN_MAX / 2);
}

static keel_status_t create_tx(keel_fleet_db_t *db, void *arg)
{
    const keel_fleet_campaign_t *c = arg;
    keel_fleet_val_t p[] = {
        KEEL_FV_S(c->id),          KEEL_FV_S(c->model),           KEEL_FV_S(c->version),
        KEEL_FV_I(c->security_version), KEEL_FV_S(c->bundle_path), KEEL_FV_S(c->bundle_sha256),
        KEEL_FV_I(c->bundle_size), KEEL_FV_I(c->percent),          KEEL_FV_I(c->security ? 1 : 0),
        KEEL_FV_I(c->fail_permille), KEEL_FV_S(camp_states[c->state]), KEEL_FV_I(c->created),
        KEEL_FV_I(c->updated)};
    keel_status_t st = keel_fleet_db_exec(db,
                                          "INSERT INTO campaigns (id, model, version, security_version, bundle_path, "
                                          "bundle_sha256, bundle_size, percent, security, fail_permille, state, "
                                          "created, updated) "
                                          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                                          p, 13, NULL, NULL, NULL);
    if (st == KEEL_ERR_EXISTS)
        st = keel_errorf(KEEL_ERR_EXISTS, "campaign %s: its id is taken or model %s has a running or paused campaign",
                         c->id, c->model);
    if (st == KEEL_OK)
        st = keel_fleet_release_add(db, c->model, c->version, c->security_version, c->created);
    return st;
}

keel_status_t keel_fleet_campaign_create(keel_fleet_db_t *db, const keel_fleet_campaign_t *c)
{
    if (db == NULL || c == NULL || !hex_ok(c->id, KEEL_FLEET_CAMPAIGN_MAX) ||
        !release_ok(c->model, c->version, c->security_version) || !hex_ok(c->bundle_sha256, 64) ||
        !keel_fleet_word_ok(c->bundle_path, KEEL_PATH_MAX - 1, true) || c->bundle_size < 0 || c->percent < 1 ||
        c->percent > 100 || c->fail_permille > 1000 ||
        (c->state != KEEL_FLEET_CAMPAIGN_RUNNING && c->state != KEEL_FLEET_CAMPAIGN_PAUSED))
        return keel_errorf(KEEL_ERR_ARG, "campaign: bad id, model, version, bundle, percent, threshold or state");
    return keel_fleet_tx(db, create_tx, (void *)c);
}

#define CAMPAIGN_COLS                                                                                          \
    "id, model, version, security_version, bundle_path, bundle_sha256, bundle_size, percent, security, "      \
    "fail_permille, state, created, updated"

typedef struct {
    bool seen;
    keel_fleet_campaign_t *c;
} camp_row_t;

static keel_status_t camp_row(void *arg, const keel_fleet_val_t *v, unsigned n)
{
    camp_row_t *r = arg;
    if (n != 13 || r->seen)
        return KEEL_OK;
    r->seen = true;
    keel_fleet_campaign_t *c = r->c;
    char state[16] = ""; /* read below unless an earlier column failed */
    int64_t percent = 0, security = 0, fail = 0;
    keel_status_t st = keel_fleet_col_text(&v[0], c->id, sizeof c->id);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&v[1], c->model, sizeof c->model);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&v[2], c->version, sizeof c->version);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[3], &c->security_version);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&v[4], c->bundle_path, sizeof c->bundle_path);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&v[5], c->bundle_sha256, sizeof c->bundle_sha256);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[6], &c->bundle_size);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[7], &percent);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[8], &security);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[9], &fail);
    if (st == KEEL_OK)
        st = keel_fleet_col_text(&v[10], state, sizeof state);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[11], &c->created);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&v[12], &c->updated);
    c->percent = (unsigned)percent;
    c->security = security != 0;
    c->fail_permille = (unsigned)fail;
    c->state = KEEL_FLEET_CAMPAIGN_DONE;
    for (unsigned i = 0; i < sizeof camp_states / sizeof camp_states[0]; i++)
        if (strcmp(state, camp_states[i]) == 0)
            c->state = (keel_fleet_campaign_state_t)i;
    return st;
}

static keel_status_t camp_query(keel_fleet_db_t *db, const char *sql, const char *key, keel_fleet_campaign_t *out,
                                const char *what)
{
    memset(out, 0, sizeof *out);
    camp_row_t r = {false, out};
    keel_fleet_val_t p[] = {KEEL_FV_S(key)};
    keel_status_t st = keel_fleet_db_exec(db, sql, p, 1, camp_row, &r, NULL);
    if (st == KEEL_OK && !r.seen)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "%s %s: none", what, key);
    return st;
}

keel_status_t keel_fleet_campaign_get(keel_fleet_db_t *db, const char *id, keel_fleet_campaign_t *out)
{
    if (db == NULL || out == NULL || !hex_ok(id, KEEL_FLEET_CAMPAIGN_MAX))
        return keel_errorf(KEEL_ERR_ARG, "campaign: bad id");
    return camp_query(db, "SELECT " CAMPAIGN_COLS " FROM campaigns WHERE id = $1", id, out, "campaign");
}

keel_status_t keel_fleet_campaign_running(keel_fleet_db_t *db, const char *model, keel_fleet_campaign_t *out)
{
    if (db == NULL || out == NULL || !keel_identity_model_ok(model))
        return keel_errorf(KEEL_ERR_ARG, "campaign: bad model");
    return camp_query(db, "SELECT " CAMPAIGN_COLS " FROM campaigns WHERE model = $1 AND state = 'running'", model,
                      out, "running campaign for model");
}

typedef struct {
    const char *id;
    keel_fleet_campaign_state_t s;
    int64_t now;
} set_state_t;

static keel_status_t set_state_tx(keel_fleet_db_t *db, void *arg)
{
    set_state_t *a = arg;
    keel_fleet_campaign_t c;
    keel_status_t st = keel_fleet_campaign_get(db, a->id, &c);
    if (st != KEEL_OK)
        return st;
    if (c.state == a->s)
        return KEEL_OK;
    if (c.state == KEEL_FLEET_CAMPAIGN_DONE)
        return keel_errorf(KEEL_ERR_ARG, "campaign %s is done", a->id);
    keel_fleet_val_t p[] = {KEEL_FV_S(a->id), KEEL_FV_S(camp_states[a->s]), KEEL_FV_I(a->now)};
    st = keel_fleet_db_exec(db, "UPDATE campaigns SET state = $2, updated = $3 WHERE id = $1", p, 3, NULL, NULL, NULL);
    if (st == KEEL_ERR_EXISTS)
        st = keel_errorf(KEEL_ERR_EXISTS, "campaign %s: model %s has another running or paused campaign", a->id,
                         c.model);
    return st;
}

keel_status_t keel_fleet_campaign_set_state(keel_fleet_db_t *db, const char *id, keel_fleet_campaign_state_t s,
                                            int64_t now)
{
    if (db == NULL || !hex_ok(id, KEEL_FLEET_CAMPAIGN_MAX) || (unsigned)s > KEEL_FLEET_CAMPAIGN_DONE)
        return keel_errorf(KEEL_ERR_ARG, "campaign: bad id or state");
    set_state_t a = {id, s, now};
    return keel_fleet_tx(db, set_state_tx, &a);
}

static keel_status_t counts_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    keel_fleet_campaign_counts_t *o = arg;
    char state[16];
    int64_t count = 0, first = 0, last = 0;
    keel_status_t st = n == 4 ? keel_fleet_col_text(&c[0], state, sizeof state) : KEEL_ERR_FORMAT;
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[1], &count);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[2], &first);
    if (st == KEEL_OK)
        st = keel_fleet_val_int(&c[3], &last);
    if (st != KEEL_OK)
        return st;
    uint64_t *slot[] = {&o->notified, &o->downloading, &o->installed, &o->confirmed, &o->failed, &o->postponed};
    for (unsigned i = 0; i < sizeof dev_progress / sizeof dev_progress[0]; i++)
        if (strcmp(state, dev_progress[i]) == 0)
            *slot[i] = (uint64_t)count;
    o->selected += (uint64_t)count;
    if (strcmp(state, "confirmed") == 0) {
        o->first_confirmed = first;
        o->last_confirmed = last;
    }
    return KEEL_OK;
}

keel_status_t keel_fleet_campaign_counts(keel_fleet_db_t *db, const char *campaign, keel_fleet_campaign_counts_t *out)
{
    if (db == NULL || out == NULL || !hex_ok(campaign, KEEL_FLEET_CAMPAIGN_MAX))
        return keel_errorf(KEEL_ERR_ARG, "campaign counts: bad id");
    memset(out, 0, sizeof *out);
    keel_fleet_val_t p[] = {KEEL_FV_S(campaign)};
    return keel_fleet_db_exec(db,
                              "SELECT state, COUNT(*), MIN(confirmed), MAX(confirmed) FROM campaign_devices "
                              "WHERE campaign = $1 GROUP BY state",
                              p, 1, counts_row, out, NULL);
}

static keel_status_t counts_json(const keel_fleet_campaign_counts_t *c, json_t **out)
{
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "selected", (json_int_t)c->selected,
                     "notified", (json_int_t)c->notified, "downloading", (json_int_t)c->downloading, "installed",
                     (json_int_t)c->installed, "confirmed", (json_int_t)c->confirmed, "failed",
                     (json_int_t)c->failed, "postponed", (json_int_t)c->postponed, "first_confirmed",
                     (json_int_t)c->first_confirmed, "last_confirmed", (json_int_t)c->last_confirmed);
    return *out != NULL ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

keel_status_t keel_fleet_campaign_list(keel_fleet_db_t *db, json_t **out)
{
    if (db == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "campaign list: no output");
    static const char *const names[] = {"id",          "model",       "version", "security_version", "bundle_path",
                                        "bundle_sha256", "bundle_size", "percent", "security",       "fail_permille",
                                        "state",       "created",     "updated"};
    json_t *arr = NULL;
    keel_status_t st = keel_fleet_query_json(db,
                                             "SELECT " CAMPAIGN_COLS " FROM campaigns "
                                             "ORDER BY created DESC, id DESC LIMIT 100001",
                                             NULL, 0, "sssissiibisii", names, KEEL_FLEET_LIST_MAX, &arr);
    size_t i;
    json_t *c;
    json_array_foreach(arr, i, c) {
        if (st != KEEL_OK)
            break;
        keel_fleet_campaign_counts_t k;
        json_t *kj = NULL;
        st = keel_fleet_campaign_counts(db, json_string_value(json_object_get(c, "id")), &k);
        if (st == KEEL_OK)
            st = counts_json(&k, &kj);
        if (st == KEEL_OK && json_object_set_new(c, "counts", kj) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    if (st != KEEL_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return KEEL_OK;
}

typedef struct {
    const char *campaign, *device, *state, *detail;
    int64_t now;
} dev_set_t;

static keel_status_t dev_set_tx(keel_fleet_db_t *db, void *arg)
{
    dev_set_t *a = arg;
    int64_t n = 0;
    keel_fleet_val_t k[] = {KEEL_FV_S(a->campaign), KEEL_FV_S(a->device)};
    /* Unknown ids are NOT_FOUND here, before a foreign key would fail the caller's transaction. */
    keel_status_t st = keel_fleet_db_int(db,
                                         "SELECT (SELECT COUNT(*) FROM campaigns WHERE id = $1) + "
                                         "(SELECT COUNT(*) FROM devices WHERE id = $2)",
                                         k, 2, &n);
    if (st == KEEL_OK && n != 2)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "campaign %s or device %s does not exist", a->campaign, a->device);
    if (st != KEEL_OK)
        return st;
    bool confirmed = strcmp(a->state, "confirmed") == 0;
    keel_fleet_val_t p[] = {KEEL_FV_S(a->campaign), KEEL_FV_S(a->device), KEEL_FV_S(a->state),
                            KEEL_FV_S(a->detail != NULL ? a->detail : ""), KEEL_FV_I(a->now),
                            KEEL_FV_I(confirmed ? a->now : 0)};
    /* confirmed is final: a late report after it changes nothing. */
    return keel_fleet_db_exec(db,
                              "INSERT INTO campaign_devices (campaign, device, state, detail, updated, confirmed) "
                              "VALUES ($1, $2, $3, $4, $5, $6) "
                              "ON CONFLICT (campaign, device) DO UPDATE SET state = excluded.state, "
                              "detail = excluded.detail, updated = excluded.updated, confirmed = excluded.confirmed "
                              "WHERE campaign_devices.state <> 'confirmed'",
                              p, 6, NULL, NULL, NULL);
}

keel_status_t keel_fleet_campaign_device_set(keel_fleet_db_t *db, const char *campaign, const char *device,
                                             const char *state, const char *detail, int64_t now)
{
    bool known = false;
    for (unsigned i = 0; state != NULL && i < sizeof dev_progress / sizeof dev_progress[0]; i++)
        known = known || strcmp(state, dev_progress[i]) == 0;
    if (db == NULL || !hex_ok(campaign, KEEL_FLEET_CAMPAIGN_MAX) ||
        !keel_fleet_word_ok(device, KEEL_FLEET_ID_MAX, false) || !known ||
        (detail != NULL && strnlen(detail, DETAIL_MAX + 1) > DETAIL_MAX))
        return keel_errorf(KEEL_ERR_ARG, "campaign device: bad campaign, device, state or detail");
    dev_set_t a = {campaign, device, state, detail, now};
    return keel_fleet_tx(db, dev_set_tx, &a);
}

typedef struct {
    char *out;
} dev_get_t;

static keel_status_t dev_get_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    dev_get_t *g = arg;
    return n == 1 ? keel_fleet_col_text(&c[0], g->out, 16) : keel_errorf(KEEL_ERR_FORMAT, "campaign device row");
}

keel_status_t keel_fleet_campaign_device_get(keel_fleet_db_t *db, const char *campaign, const char *device,
                                             char state[16])
{
    if (db == NULL || state == NULL || !hex_ok(campaign, KEEL_FLEET_CAMPAIGN_MAX) ||
        !keel_fleet_word_ok(device, KEEL_FLEET_ID_MAX, false))
        return keel_errorf(KEEL_ERR_ARG, "campaign device: bad campaign or device");
    state[0] = '\0';
    dev_get_t g = {state};
    keel_fleet_val_t p[] = {KEEL_FV_S(campaign), KEEL_FV_S(device)};
    return keel_fleet_db_exec(db, "SELECT state FROM campaign_devices WHERE campaign = $1 AND device = $2", p, 2,
                              dev_get_row, &g, NULL);
}
