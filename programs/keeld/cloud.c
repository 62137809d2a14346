/* keeld's online and offline half (cloud.h). */
#define _GNU_SOURCE
#include "cloud.h"

#include "keel/crypto.h"

#include <event2/event.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define APP_STATE_SECRET "app.state"
#define RECEIPT_MAX (4u * 1024u)
#define NAME_BUF_MAX 256 /* user and group names */

struct keeld_cloud {
    struct event_base *base;
    const keel_config_t *cfg;
    keel_vault_t *vault;
    keel_outbox_t *outbox;
    keel_privacy_t *privacy;
    keel_link_t *link;
    keel_ipc_server_t *ipc;
    struct event *retention;
    struct timeval retention_every;
    bool state_changed; /* the product state changed in the batch being written */
    keeld_updater_t *updater;
    keel_auth_t *auth;
    uint64_t auth_seen; /* keel_auth_failures at the end of the last window */
    struct event *auth_timer;
    struct timeval auth_every;
};

/* ---- configuration ---------------------------------------------------------- */

/* "host:port" or "[v6]:port"; the host may be a name (the link resolves it). */
static keel_status_t broker_check(const char *b)
{
    const char *colon = b[0] == '[' ? strstr(b, "]:") : strrchr(b, ':');
    if (colon == NULL || colon == b || (b[0] == '[' && colon == b + 1))
        return keel_errorf(KEEL_ERR_CONFIG, "link.broker must be host:port or [v6]:port");
    const char *port = colon + (b[0] == '[' ? 2 : 1);
    char *end = NULL;
    errno = 0;
    unsigned long p = strtoul(port, &end, 10);
    if (port[0] < '0' || port[0] > '9' || errno != 0 || *end != '\0' || p == 0 || p > 65535)
        return keel_errorf(KEEL_ERR_CONFIG, "link.broker: bad port '%s'", port);
    for (const char *s = b; s < colon; s++)
        if (*s <= ' ' || *s > '~')
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: bad host");
    return KEEL_OK;
}

/* A decimal uid or gid below the "none" value (uid_t and gid_t are 32-bit unsigned on Linux). */
static bool numeric_id(const char *s, unsigned long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno != 0 || *end != '\0' || n >= (unsigned long)(uid_t)-1)
        return false;
    *out = n;
    return true;
}

static keel_status_t resolve_user(const char *name, uid_t *uid)
{
    *uid = (uid_t)-1;
    unsigned long n;
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (name == NULL)
        return KEEL_OK;
    if (numeric_id(name, &n))
        *uid = (uid_t)n;
    else if (getpwnam_r(name, &pw, buf, sizeof buf, &res) == 0 && res != NULL)
        *uid = pw.pw_uid;
    else
        return keel_errorf(KEEL_ERR_CONFIG, "ipc.user: no user '%.*s'", NAME_BUF_MAX, name);
    return KEEL_OK;
}

static keel_status_t resolve_group(const char *name, gid_t *gid)
{
    *gid = (gid_t)-1;
    unsigned long n;
    struct group gr, *res = NULL;
    char buf[16384];
    if (name == NULL)
        return KEEL_OK;
    if (numeric_id(name, &n))
        *gid = (gid_t)n;
    else if (getgrnam_r(name, &gr, buf, sizeof buf, &res) == 0 && res != NULL)
        *gid = gr.gr_gid;
    else
        return keel_errorf(KEEL_ERR_CONFIG, "ipc.group: no group '%.*s'", NAME_BUF_MAX, name);
    return KEEL_OK;
}

keel_status_t keeld_cloud_config_check(const keel_config_t *cfg)
{
    const char *broker = keel_config_str(cfg, "link", "broker");
    keel_status_t st = broker != NULL ? broker_check(broker) : KEEL_OK;
    uid_t uid;
    gid_t gid;
    if (st == KEEL_OK)
        st = resolve_user(keel_config_str(cfg, "ipc", "user"), &uid);
    if (st == KEEL_OK)
        st = resolve_group(keel_config_str(cfg, "ipc", "group"), &gid);
    if (st == KEEL_OK && keel_config_uint(cfg, "link", "backoff_cap") < keel_config_uint(cfg, "link", "backoff_base"))
        st = keel_errorf(KEEL_ERR_CONFIG, "link.backoff_cap must not be below link.backoff_base");
    char decl[KEEL_PATH_MAX];
    if (st == KEEL_OK && keel_config_path(cfg, "privacy", "declaration", decl) == KEEL_OK)
        st = keel_privacy_declaration_load(decl, NULL);
    return st;
}

static keel_outbox_limits_t outbox_limits(const keel_config_t *cfg)
{
    keel_outbox_limits_t l = {
        .max_messages = keel_config_uint(cfg, "outbox", "max_messages"),
        .max_bytes = keel_config_uint(cfg, "outbox", "max_bytes"),
    };
    return l;
}

/* ---- the product state -------------------------------------------------------- */

static keel_status_t state_load(keeld_cloud_t *c, json_t **out)
{
    uint8_t buf[KEELD_APP_STATE_MAX];
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(c->vault, APP_STATE_SECRET, buf, sizeof buf, &n);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        *out = json_object();
        return *out != NULL ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    if (st != KEEL_OK)
        return st;
    json_error_t e;
    json_t *j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &e);
    keel_wipe(buf, sizeof buf);
    if (!json_is_object(j)) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_FORMAT, "the stored product state is not a JSON object");
    }
    *out = j;
    return KEEL_OK;
}

keel_status_t keeld_cloud_app_state(void *arg, json_t **state)
{
    return state_load(arg, state);
}

/* Hands the stored product state to the link (retained on .../state). */
static void link_send_state(keeld_cloud_t *c)
{
    json_t *state = NULL;
    char *text = NULL;
    if (state_load(c, &state) != KEEL_OK || (text = json_dumps(state, JSON_COMPACT | JSON_SORT_KEYS)) == NULL ||
        keel_link_set_state(c->link, text, strlen(text)) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "link: the product state is not sent: %s", keel_error_message());
        keel_error_clear();
    }
    free(text);
    json_decref(state);
}

static keel_status_t on_state_get(void *arg, json_t **state)
{
    return state_load(arg, state);
}

static keel_status_t on_state_set(void *arg, json_t *patch, json_t **state)
{
    keeld_cloud_t *c = arg;
    json_t *cur = NULL;
    keel_status_t st = state_load(c, &cur);
    if (st != KEEL_OK)
        return st;
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v) {
        if (json_is_null(v))
            json_object_del(cur, k);
        else if (json_object_set(cur, k, v) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    char *text = st == KEEL_OK ? json_dumps(cur, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (st == KEEL_OK && text == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK && strlen(text) > KEELD_APP_STATE_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "the product state would exceed %u bytes", KEELD_APP_STATE_MAX);
    if (st == KEEL_OK)
        st = keel_vault_secret_put(c->vault, APP_STATE_SECRET, text, strlen(text));
    /* Sent once the batch it belongs to is committed (on_batch_end). */
    if (st == KEEL_OK)
        c->state_changed = true;
    free(text);
    if (st != KEEL_OK) {
        json_decref(cur);
        return st;
    }
    *state = cur;
    return KEEL_OK;
}

/* ---- what the app publishes ----------------------------------------------------- */

static keel_outbox_kind_t outbox_kind(keel_ipc_kind_t k)
{
    return k == KEEL_IPC_TELEMETRY ? KEEL_OUTBOX_TELEMETRY : k == KEEL_IPC_ALERT ? KEEL_OUTBOX_ALERT : KEEL_OUTBOX_EVENT;
}

static keel_status_t queue_json(keeld_cloud_t *c, keel_outbox_kind_t kind, const json_t *body, const char *msgid,
                                uint64_t *seq, bool *dup)
{
    /* 15 significant digits: a reading of 16.3 leaves as 16.3, not 16.300000000000001. */
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    uint64_t s = 0;
    bool d = false;
    keel_status_t st = keel_outbox_put(c->outbox, kind, text, strlen(text), msgid, &s, &d);
    free(text);
    if (seq != NULL)
        *seq = s;
    if (dup != NULL)
        *dup = d;
    return st;
}

static keel_status_t on_publish(void *arg, keel_ipc_kind_t kind, json_t *data, const char *msgid, uint64_t *seq,
                                bool *dup)
{
    keeld_cloud_t *c = arg;
    *seq = 0;
    *dup = false;
    if (kind == KEEL_IPC_TELEMETRY) {
        json_t *withheld = NULL;
        keel_status_t st = keel_privacy_telemetry_check(c->privacy, data, &withheld);
        if (st != KEEL_OK)
            return st;
        if (json_array_size(withheld) > 0) {
            char *w = json_dumps(withheld, JSON_COMPACT);
            keel_log(KEEL_LOG_DEBUG, "telemetry: withheld without consent: %s", w != NULL ? w : "?");
            free(w);
        }
        json_decref(withheld);
        if (json_object_size(data) == 0)
            return KEEL_OK; /* nothing the user allows to leave the device */
    }
    keel_status_t st = queue_json(c, outbox_kind(kind), data, msgid, seq, dup);
    /* Kept locally once, when it was queued: a resend of a known msgid or a
     * refusal must not add another copy of the user's data. The local copy
     * is for the owner; failing it does not fail the app's publish. */
    if (st == KEEL_OK && !*dup && kind == KEEL_IPC_TELEMETRY &&
        keel_privacy_record_telemetry(c->privacy, data) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "privacy: telemetry not kept locally: %s", keel_error_message());
        keel_error_clear();
    }
    return st;
}

static keel_status_t on_batch_begin(void *arg)
{
    keeld_cloud_t *c = arg;
    return keel_outbox_begin(c->outbox);
}

static keel_status_t on_batch_end(void *arg, bool commit)
{
    keeld_cloud_t *c = arg;
    if (!commit) {
        keel_outbox_rollback(c->outbox);
        c->state_changed = false;
        return KEEL_OK;
    }
    keel_status_t st = keel_outbox_commit(c->outbox);
    if (st == KEEL_OK && c->link != NULL) {
        if (c->state_changed)
            link_send_state(c);
        keel_link_kick(c->link);
    }
    c->state_changed = false;
    return st;
}

/* ---- what the cloud sends ----------------------------------------------------------- */

static void on_command(void *arg, const char *name, const void *payload, size_t len)
{
    keeld_cloud_t *c = arg; /* the link passes only well-formed names (keel_link_command_name_ok) */
    size_t cap = strncmp(name, "keel/", 5) == 0 ? RECEIPT_MAX : KEEL_IPC_LINE_MAX / 2;
    if (len > cap) {
        keel_log(KEEL_LOG_WARN, "link: command %s: payload of %zu bytes refused (cap %zu)", name, len, cap);
        return;
    }
    json_error_t e;
    json_t *j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        keel_log(KEEL_LOG_WARN, "link: command %s: payload is not JSON: %s", name, e.text);
        return;
    }
    if (strcmp(name, "keel/update") == 0) {
        if (c->updater != NULL) {
            keeld_updater_offer(c->updater, payload, len);
        } else {
            keeld_offer_t o;
            if (keeld_offer_parse(payload, len, UINT64_MAX, &o) == KEEL_OK) {
                json_t *ev = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s}", "type", "update", "campaign", o.campaign,
                                       "state", "failed", "version", o.version, "bytes", 0, "error",
                                       "no update server is configured ([update] server)");
                if (ev != NULL)
                    keeld_cloud_event(c, ev);
                json_decref(ev);
            }
            keel_error_clear();
            keel_log(KEEL_LOG_WARN, "link: keel/update ignored: no [update] server is configured");
        }
    } else if (strcmp(name, "keel/check") == 0) {
        if (!json_is_object(j) || json_object_size(j) != 0)
            keel_log(KEEL_LOG_WARN, "link: keel/check: the payload must be {}");
        else if (c->updater != NULL)
            keeld_updater_check(c->updater);
        else
            keel_log(KEEL_LOG_WARN, "link: keel/check ignored: no [update] server is configured");
    } else if (strcmp(name, "keel/erase-receipt") == 0) {
        if (keel_privacy_erase_receipt(c->privacy, j) == KEEL_OK) {
            keel_log(KEEL_LOG_INFO, "privacy: the fleet confirmed the cloud erase %s",
                     json_string_value(json_object_get(j, "id")) != NULL ? json_string_value(json_object_get(j, "id"))
                                                                         : "?");
        } else {
            keel_log(KEEL_LOG_WARN, "privacy: erase receipt refused: %s", keel_error_message());
            keel_error_clear();
        }
    } else if (strncmp(name, "keel/", 5) == 0) {
        keel_log(KEEL_LOG_WARN, "link: unknown device command %s ignored", name);
    } else {
        keel_ipc_server_command(c->ipc, name, j);
    }
    json_decref(j);
}

static void on_link_state(void *arg, keel_link_state_t s)
{
    keeld_cloud_t *c = arg;
    keel_outbox_stats_t os = {0};
    if (keel_outbox_stats(c->outbox, &os) != KEEL_OK)
        keel_error_clear();
    keel_log(KEEL_LOG_INFO, "link: %s (%llu queued)", keel_link_state_name(s), (unsigned long long)os.pending);
}

/* ---- retention ------------------------------------------------------------------------ */

static void on_retention(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keeld_cloud_t *c = arg;
    uint64_t removed = 0;
    if (keel_privacy_retention_run(c->privacy, (int64_t)time(NULL), &removed) != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "privacy: retention: %s", keel_error_message());
        keel_error_clear();
    } else if (removed > 0) {
        keel_log(KEEL_LOG_INFO, "privacy: retention removed %llu aged records", (unsigned long long)removed);
    }
}

/* ---- reset, alerts, keeld's own events ------------------------------------------------------ */

void keeld_cloud_event(void *arg, const json_t *event)
{
    keeld_cloud_t *c = arg;
    keel_status_t st = queue_json(c, KEEL_OUTBOX_EVENT, event, NULL, NULL, NULL);
    if (st != KEEL_OK) {
        const char *type = json_string_value(json_object_get(event, "type"));
        keel_log(KEEL_LOG_ERROR, "outbox: event %s: %s", type != NULL ? type : "?", keel_error_message());
        keel_error_clear();
    } else if (c->link != NULL) {
        keel_link_kick(c->link);
    }
}

void keeld_cloud_set_updater(keeld_cloud_t *c, keeld_updater_t *u)
{
    c->updater = u;
}

void keeld_cloud_boot(keeld_cloud_t *c, const keel_bootstate_t *bs)
{
    int slot = bs->booted == 0 || bs->booted == 1 ? bs->booted : bs->active == 0 || bs->active == 1 ? bs->active
                                                                                                      : KEEL_SLOT_NONE;
    char name[2] = {keel_slot_name(slot), '\0'};
    keel_log(KEEL_LOG_INFO, "boot: running %s (slot %c)", slot != KEEL_SLOT_NONE ? bs->version[slot] : "nothing",
             keel_slot_name(slot));
    if (c->link == NULL)
        return; /* a device without a cloud link would only fill its outbox with them */
    json_t *e = json_pack("{s:s,s:o,s:o,s:o,s:s}", "type", "boot", "version",
                          slot != KEEL_SLOT_NONE ? json_string(bs->version[slot]) : json_null(), "security_version",
                          slot != KEEL_SLOT_NONE ? json_integer(bs->security_version[slot]) : json_null(), "slot",
                          slot != KEEL_SLOT_NONE ? json_string(name) : json_null(), "model",
                          keel_config_str(c->cfg, "device", "model"));
    if (e == NULL) {
        keel_log(KEEL_LOG_ERROR, "outbox: boot event: out of memory");
        return;
    }
    keeld_cloud_event(c, e);
    json_decref(e);
}

static void on_auth_window(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keeld_cloud_t *c = arg;
    uint64_t now = keel_auth_failures(c->auth);
    uint64_t n = now - c->auth_seen;
    c->auth_seen = now;
    if (n == 0 || c->link == NULL)
        return;
    json_t *e = json_pack("{s:s,s:I,s:I}", "type", "auth-failures", "count", (json_int_t)n, "window_s",
                          (json_int_t)c->auth_every.tv_sec);
    if (e == NULL) {
        keel_log(KEEL_LOG_ERROR, "outbox: auth-failures event: out of memory");
        return;
    }
    keeld_cloud_event(c, e);
    json_decref(e);
    keel_log(KEEL_LOG_INFO, "auth: %llu failed logins in the last %lld s reported to the fleet", (unsigned long long)n,
             (long long)c->auth_every.tv_sec);
}

keel_status_t keeld_cloud_watch_auth(keeld_cloud_t *c, keel_auth_t *auth)
{
    c->auth = auth;
    c->auth_seen = keel_auth_failures(auth);
    c->auth_every.tv_sec = (time_t)keel_config_uint(c->cfg, "auth", "report_window");
    c->auth_timer = event_new(c->base, -1, EV_PERSIST, on_auth_window, c);
    if (c->auth_timer == NULL || event_add(c->auth_timer, &c->auth_every) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "cannot arm the auth-failures timer");
    return KEEL_OK;
}

void keeld_cloud_alert(keeld_cloud_t *c, const char *type, const char *detail)
{
    json_t *a = json_pack("{s:s, s:s}", "type", type, "detail", detail != NULL ? detail : "");
    keel_status_t st = a != NULL ? queue_json(c, KEEL_OUTBOX_ALERT, a, NULL, NULL, NULL)
                                 : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    json_decref(a);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "outbox: alert %s: %s", type, keel_error_message());
        keel_error_clear();
    } else if (c->link != NULL) {
        keel_link_kick(c->link);
    }
}

keel_status_t keeld_cloud_after_reset(void *arg, json_t **receipt)
{
    keeld_cloud_t *c = arg;
    keel_status_t st = keel_outbox_reload(c->outbox);
    if (st == KEEL_OK)
        st = keel_privacy_reload(c->privacy);
    char id[33] = {0};
    if (st == KEEL_OK)
        st = keel_privacy_erase_request(c->privacy, id);
    json_t *req = st == KEEL_OK ? json_pack("{s:s, s:s}", "type", "erase-request", "id", id) : NULL;
    if (st == KEEL_OK && req == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK)
        st = queue_json(c, KEEL_OUTBOX_EVENT, req, NULL, NULL, NULL);
    json_decref(req);
    if (st != KEEL_OK)
        return st;
    if (c->link != NULL) {
        if (keel_link_set_state(c->link, "{}", 2) != KEEL_OK)
            keel_error_clear();
        keel_link_kick(c->link);
    }
    keel_log(KEEL_LOG_INFO, "privacy: factory reset done; cloud erase %s requested%s", id,
             c->link != NULL ? "" : " (no cloud link configured: it waits in the outbox)");
    *receipt = json_pack(
        "{s:I, s:{s:[s,s,s,s,s,s], s:[s,s]}, s:{s:s, s:s, s:b}}", "time", (json_int_t)time(NULL), "device",
        "erased", "the vault's data key (everything sealed under it is unreadable)", "the administrator account",
        "settings", "consent and its log", "kept records and queued messages", "the product state", "kept",
        "the device identity (key and certificate)", "the update slots and their anti-rollback counters", "cloud",
        "request", id, "status", "requested", "link", c->link != NULL);
    return *receipt != NULL ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static keel_status_t link_start(keeld_cloud_t *c, const char *broker, keel_keystore_t *ks)
{
    char cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX], ca[KEEL_PATH_MAX];
    const keel_config_t *cfg = c->cfg;
    keel_status_t st;
    if ((st = keel_config_path(cfg, "identity", "certificate", cert)) != KEEL_OK ||
        (st = keel_config_path(cfg, "identity", "chain", chain)) != KEEL_OK ||
        (st = keel_config_path(cfg, "trust", "service_root", ca)) != KEEL_OK)
        return st;
    keel_link_config_t l = {
        .base = c->base,
        .device_id = keel_config_str(cfg, "device", "id"),
        .broker = broker,
        .server_name = keel_config_str(cfg, "link", "server_name"),
        .ks = ks,
        .key_label = keel_config_str(cfg, "keystore", "key_label"),
        .cert_path = cert,
        .chain_path = chain,
        .ca_path = ca,
        .outbox = c->outbox,
        .backoff = {
            .base_s = (double)keel_config_uint(cfg, "link", "backoff_base"),
            .cap_s = (double)keel_config_uint(cfg, "link", "backoff_cap"),
            .first_s = (double)keel_config_uint(cfg, "link", "first_connect"),
            .stable_s = (double)keel_config_uint(cfg, "link", "stable"),
        },
        .keepalive_s = (unsigned)keel_config_uint(cfg, "link", "keepalive"),
        .inflight_max = (unsigned)keel_config_uint(cfg, "link", "inflight"),
        .on_command = on_command,
        .on_state = on_link_state,
        .arg = c,
    };
    if ((st = keel_link_start(&l, &c->link)) != KEEL_OK)
        return st;
    json_t *state = NULL;
    if (state_load(c, &state) == KEEL_OK && json_object_size(state) > 0)
        link_send_state(c);
    json_decref(state);
    keel_error_clear();
    return KEEL_OK;
}

keel_status_t keeld_cloud_start(struct event_base *base, const keel_config_t *cfg, keel_keystore_t *ks,
                                keel_vault_t *vault, keeld_cloud_t **out)
{
    keeld_cloud_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    c->base = base;
    c->cfg = cfg;
    c->vault = vault;
    char decl[KEEL_PATH_MAX], sock[KEEL_PATH_MAX];
    bool have_decl = keel_config_path(cfg, "privacy", "declaration", decl) == KEEL_OK;
    keel_error_clear();
    keel_ipc_server_config_t ic = {.base = base, .max_clients = (unsigned)keel_config_uint(cfg, "ipc", "max_clients")};
    keel_status_t st = keel_outbox_open(vault, keel_config_str(cfg, "device", "id"), outbox_limits(cfg), &c->outbox);
    if (st == KEEL_OK)
        st = keel_privacy_open(vault, have_decl ? decl : NULL, &c->privacy);
    const char *broker = keel_config_str(cfg, "link", "broker");
    if (st == KEEL_OK && broker != NULL)
        st = link_start(c, broker, ks);
    if (st == KEEL_OK && (st = resolve_user(keel_config_str(cfg, "ipc", "user"), &ic.allow_uid)) == KEEL_OK &&
        (st = resolve_group(keel_config_str(cfg, "ipc", "group"), &ic.allow_gid)) == KEEL_OK &&
        (st = keel_config_path(cfg, "ipc", "socket", sock)) == KEEL_OK) {
        ic.path = sock;
        ic.h = (keel_ipc_handlers_t){
            .publish = on_publish, .batch_begin = on_batch_begin, .batch_end = on_batch_end,
            .state_get = on_state_get, .state_set = on_state_set, .arg = c,
        };
        st = keel_ipc_server_start(&ic, &c->ipc);
    }
    if (st == KEEL_OK) {
        c->retention = event_new(base, -1, EV_PERSIST, on_retention, c);
        c->retention_every.tv_sec = (time_t)keel_config_uint(cfg, "privacy", "retention_interval");
        if (c->retention == NULL || event_add(c->retention, &c->retention_every) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "cannot arm the retention timer");
    }
    if (st != KEEL_OK) {
        keeld_cloud_free(c);
        return st;
    }
    /* Records that aged while the device was off go now, not an interval later. */
    on_retention(-1, 0, c);
    keel_log(KEEL_LOG_INFO, "app socket %s; cloud link %s%s", sock, broker != NULL ? "to " : "off",
             broker != NULL ? broker : " (no link.broker)");
    *out = c;
    return KEEL_OK;
}

void keeld_cloud_reload(keeld_cloud_t *c, const keel_config_t *cfg)
{
    keel_outbox_set_limits(c->outbox, outbox_limits(cfg));
    struct timeval every = {.tv_sec = (time_t)keel_config_uint(cfg, "privacy", "retention_interval")};
    if (every.tv_sec != c->retention_every.tv_sec) {
        c->retention_every = every;
        if (event_add(c->retention, &c->retention_every) != 0)
            keel_log(KEEL_LOG_ERROR, "privacy: cannot re-arm the retention timer");
    }
    struct timeval window = {.tv_sec = (time_t)keel_config_uint(cfg, "auth", "report_window")};
    if (c->auth_timer != NULL && window.tv_sec != c->auth_every.tv_sec) {
        c->auth_every = window;
        if (event_add(c->auth_timer, &c->auth_every) != 0)
            keel_log(KEEL_LOG_ERROR, "auth: cannot re-arm the auth-failures timer");
    }
}

void keeld_cloud_stop(keeld_cloud_t *c)
{
    if (c == NULL)
        return;
    if (c->link != NULL)
        keel_link_stop(c->link);
    keel_ipc_server_free(c->ipc);
    c->ipc = NULL;
}

void keeld_cloud_free(keeld_cloud_t *c)
{
    if (c == NULL)
        return;
    keel_ipc_server_free(c->ipc);
    keel_link_free(c->link);
    if (c->retention != NULL)
        event_free(c->retention);
    if (c->auth_timer != NULL)
        event_free(c->auth_timer);
    keel_privacy_close(c->privacy);
    keel_outbox_close(c->outbox);
    free(c);
}

keel_privacy_t *keeld_cloud_privacy(keeld_cloud_t *c) { return c->privacy; }
keel_outbox_t *keeld_cloud_outbox(keeld_cloud_t *c) { return c->outbox; }
keel_link_t *keeld_cloud_link(keeld_cloud_t *c) { return c->link; }
