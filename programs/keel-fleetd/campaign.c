/*
 * Update campaigns (fleetd.h): a signed bundle for one model, rolled out to
 * a share of its devices, halted by itself when too many installs fail.
 *
 * Selection: the model's non-revoked devices ordered by SHA-256(campaign id
 * ":" device id); the first ceil(n * percent / 100) are selected. The order
 * is fixed per campaign and unpredictable to a device, two fleetd instances
 * agree on it, and a device once selected stays selected (its row in
 * campaign_devices). Every selected device is told through its command
 * topic and also finds the offer when it asks the update server itself, so
 * a device that was offline is not skipped.
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/crypto.h"
#include "keel/update.h"

#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUNDLE_CHUNK_MAX (1u << 20)
#define HALT_MIN_DEFAULT 5

typedef struct {
    uint8_t key[KEEL_SHA256_LEN];
    const char *id;
    const char *version;
} ranked_t;

static void rank_key(const char *campaign, const char *device, uint8_t out[KEEL_SHA256_LEN])
{
    char text[KEEL_FLEET_CAMPAIGN_MAX + 1 + KEEL_FLEET_ID_MAX + 1];
    int n = snprintf(text, sizeof text, "%s:%s", campaign, device);
    keel_sha256(text, n > 0 ? (size_t)n : 0, out);
}

static int ranked_cmp(const void *a, const void *b)
{
    return memcmp(((const ranked_t *)a)->key, ((const ranked_t *)b)->key, KEEL_SHA256_LEN);
}

static json_t *offer_json(const keel_fleet_campaign_t *c)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:s, s:b}", "campaign", c->id, "version", c->version, "security_version",
                     (json_int_t)c->security_version, "size", (json_int_t)c->bundle_size, "sha256", c->bundle_sha256,
                     "security", c->security);
}

/* Selects and notifies; returns how many were newly selected. */
static keel_status_t select_devices(fleetd_t *f, const keel_fleet_campaign_t *c, int64_t now, unsigned *added)
{
    *added = 0;
    json_t *devs = NULL;
    keel_status_t st = keel_fleet_device_list(f->db, c->model, &devs);
    if (st != KEEL_OK)
        return st;
    size_t n = json_array_size(devs), m = 0;
    ranked_t *r = calloc(n > 0 ? n : 1, sizeof *r);
    if (r == NULL) {
        json_decref(devs);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(devs, i);
        const char *state = json_string_value(json_object_get(d, "state"));
        const char *id = json_string_value(json_object_get(d, "id"));
        if (id == NULL || (state != NULL && strcmp(state, "revoked") == 0))
            continue;
        r[m].id = id;
        r[m].version = json_string_value(json_object_get(d, "version"));
        rank_key(c->id, id, r[m].key);
        m++;
    }
    qsort(r, m, sizeof *r, ranked_cmp);
    size_t want = (m * c->percent + 99) / 100;
    json_t *offer = offer_json(c);
    for (size_t i = 0; st == KEEL_OK && i < want; i++) {
        char cur[16] = "";
        if ((st = keel_fleet_campaign_device_get(f->db, c->id, r[i].id, cur)) != KEEL_OK || cur[0] != '\0')
            continue;
        if (r[i].version != NULL && strcmp(r[i].version, c->version) == 0) {
            st = keel_fleet_campaign_device_set(f->db, c->id, r[i].id, "confirmed",
                                                "{\"note\":\"already running this version\"}", now);
            continue;
        }
        st = keel_fleet_campaign_device_set(f->db, c->id, r[i].id, "notified", NULL, now);
        if (st == KEEL_OK)
            (*added)++;
        if (st == KEEL_OK && f->consumer != NULL && offer != NULL &&
            fleetd_consumer_command(f->consumer, r[i].id, "keel/update", offer) != KEEL_OK) {
            /* the device still finds the offer when it asks the update server */
            keel_log(KEEL_LOG_DEBUG, "fleet: campaign %s: %s not told now: %s", c->id, r[i].id,
                     keel_error_message());
            keel_error_clear();
        }
    }
    json_decref(offer);
    free(r);
    json_decref(devs);
    return st;
}

static void campaign_check(fleetd_t *f, const keel_fleet_campaign_t *c, int64_t now)
{
    unsigned added = 0;
    keel_status_t st = select_devices(f, c, now, &added);
    keel_fleet_campaign_counts_t k;
    if (st == KEEL_OK)
        st = keel_fleet_campaign_counts(f->db, c->id, &k);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: campaign %s: %s", c->id, keel_error_message());
        keel_error_clear();
        return;
    }
    if (added > 0)
        keel_log(KEEL_LOG_INFO, "fleet: campaign %s (%s %s, %u%%): %u more devices told", c->id, c->model, c->version,
                 c->percent, added);
    uint64_t finished = k.failed + k.confirmed;
    uint64_t min = keel_config_uint(f->cfg, "campaign", "min_finished");
    if (k.failed > 0 && finished >= (min > 0 ? min : HALT_MIN_DEFAULT) &&
        k.failed * 1000 > (uint64_t)c->fail_permille * finished) {
        if (keel_fleet_campaign_set_state(f->db, c->id, KEEL_FLEET_CAMPAIGN_HALTED, now) != KEEL_OK) {
            keel_error_clear();
            return;
        }
        char detail[256], dedupe[64];
        snprintf(detail, sizeof detail,
                 "{\"campaign\":\"%s\",\"failed\":%llu,\"finished\":%llu,\"threshold_permille\":%u}", c->id,
                 (unsigned long long)k.failed, (unsigned long long)finished, c->fail_permille);
        snprintf(dedupe, sizeof dedupe, "campaign-halt:%s", c->id);
        keel_fleet_alert_t a = {.kind = "campaign", .severity = "critical", .detail = detail, .dedupe = dedupe,
                                .time = now};
        bool dummy;
        if (keel_fleet_alert_add(f->db, &a, &dummy) != KEEL_OK)
            keel_error_clear();
        keel_log(KEEL_LOG_WARN, "fleet: campaign %s halted: %llu of %llu finished installs failed", c->id,
                 (unsigned long long)k.failed, (unsigned long long)finished);
        return;
    }
    if (c->percent == 100 && k.selected > 0 && k.confirmed + k.failed == k.selected) {
        if (keel_fleet_campaign_set_state(f->db, c->id, KEEL_FLEET_CAMPAIGN_DONE, now) != KEEL_OK)
            keel_error_clear();
        else
            keel_log(KEEL_LOG_INFO, "fleet: campaign %s done: %llu confirmed, %llu failed%s", c->id,
                     (unsigned long long)k.confirmed, (unsigned long long)k.failed,
                     c->security ? " (security update)" : "");
    }
}

void fleetd_campaign_tick(fleetd_t *f)
{
    json_t *list = NULL;
    if (keel_fleet_campaign_list(f->db, &list) != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: campaigns: %s", keel_error_message());
        keel_error_clear();
        return;
    }
    int64_t now = (int64_t)time(NULL);
    size_t i;
    json_t *j;
    json_array_foreach(list, i, j) {
        const char *id = json_string_value(json_object_get(j, "id"));
        keel_fleet_campaign_t c;
        if (id == NULL)
            continue;
        if (keel_fleet_campaign_get(f->db, id, &c) != KEEL_OK) {
            keel_error_clear();
            continue;
        }
        if (c.state == KEEL_FLEET_CAMPAIGN_RUNNING)
            campaign_check(f, &c, now);
    }
    json_decref(list);
}

/* ---- create -------------------------------------------------------------------------------------- */

/* The bundle's bytes as the reader takes them, hashed on the way (the
 * reader reads the file to its end, so this is the file's SHA-256). */
typedef struct {
    int fd;
    EVP_MD_CTX *md;
    int64_t bytes;
} hashed_in_t;

static ssize_t read_hashed(void *ctx, void *buf, size_t n)
{
    hashed_in_t *in = ctx;
    ssize_t r;
    do
        r = read(in->fd, buf, n);
    while (r < 0 && errno == EINTR);
    if (r > 0) {
        if (EVP_DigestUpdate(in->md, buf, (size_t)r) != 1) {
            errno = EIO;
            return -1;
        }
        in->bytes += r;
    }
    return r;
}

/* Verifies the whole bundle (signature, chain, every chunk, the total digest)
 * against the release root: the fleet hands out nothing a device would refuse. */
static keel_status_t bundle_verify(fleetd_t *f, const char *path, keel_manifest_t *m, uint8_t sha[KEEL_SHA256_LEN],
                                   int64_t *size)
{
    if (f->release_root[0] == '\0')
        return keel_errorf(KEEL_ERR_CONFIG, "[trust] release_root is not set: campaigns need it");
    keel_trust_t *trust = NULL;
    keel_status_t st = keel_trust_load(f->release_root, NULL, &trust);
    if (st != KEEL_OK)
        return st;
    hashed_in_t in = {.fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), .md = EVP_MD_CTX_new()};
    if (in.fd < 0 || in.md == NULL || EVP_DigestInit_ex(in.md, EVP_sha256(), NULL) != 1) {
        st = in.fd < 0 ? keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno))
                       : keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
        if (in.fd >= 0)
            close(in.fd);
        EVP_MD_CTX_free(in.md);
        keel_trust_free(trust);
        return st;
    }
    keel_bundle_reader_t *r = NULL;
    st = keel_bundle_open(read_hashed, &in, trust, &r);
    uint8_t *buf = st == KEEL_OK ? malloc(BUNDLE_CHUNK_MAX) : NULL;
    if (st == KEEL_OK && buf == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    const keel_manifest_t *man = st == KEEL_OK ? keel_bundle_manifest(r) : NULL;
    if (st == KEEL_OK && man->kind != KEEL_BUNDLE_IMAGE)
        st = keel_errorf(KEEL_ERR_FORMAT, "a campaign carries an image bundle, not a trust bundle");
    if (st == KEEL_OK && man->chunk_size > BUNDLE_CHUNK_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "the bundle's chunks are over %u bytes", BUNDLE_CHUNK_MAX);
    size_t n = 1;
    while (st == KEEL_OK && n > 0)
        st = keel_bundle_next_chunk(r, buf, BUNDLE_CHUNK_MAX, &n);
    if (st == KEEL_OK) {
        *m = *man;
        m->chunk_sha256 = NULL; /* not needed, and owned by the reader */
    }
    unsigned len = 0;
    if (st == KEEL_OK && (EVP_DigestFinal_ex(in.md, sha, &len) != 1 || len != KEEL_SHA256_LEN))
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
    *size = in.bytes;
    free(buf);
    keel_bundle_close(r);
    keel_trust_free(trust);
    EVP_MD_CTX_free(in.md);
    close(in.fd);
    return st;
}

keel_status_t fleetd_campaign_create(fleetd_t *f, const char *bundle_path, const char *model, unsigned percent,
                                     bool security, unsigned fail_permille, keel_fleet_campaign_t *out)
{
    if (percent < 1 || percent > 100 || fail_permille < 1 || fail_permille > 1000 || model == NULL)
        return keel_errorf(KEEL_ERR_ARG, "percent must be 1..100 and fail_permille 1..1000");
    keel_manifest_t m;
    uint8_t sha[KEEL_SHA256_LEN];
    int64_t size = 0;
    keel_status_t st = bundle_verify(f, bundle_path, &m, sha, &size);
    if (st != KEEL_OK)
        return st;
    bool model_ok = false;
    for (unsigned i = 0; i < m.n_models; i++)
        model_ok = model_ok || strcmp(m.models[i], model) == 0;
    if (!model_ok)
        return keel_errorf(KEEL_ERR_FORMAT, "the bundle is not for model %.64s", model);
    keel_fleet_campaign_t c = {0};
    uint8_t rnd[16];
    keel_random_bytes(rnd, sizeof rnd);
    if ((st = keel_hex_encode(rnd, sizeof rnd, c.id, sizeof c.id)) != KEEL_OK ||
        (st = keel_hex_encode(sha, sizeof sha, c.bundle_sha256, sizeof c.bundle_sha256)) != KEEL_OK)
        return st;
    snprintf(c.model, sizeof c.model, "%s", model);
    snprintf(c.version, sizeof c.version, "%s", m.version);
    c.security_version = m.security_version;
    if ((st = keel_snprintf(c.bundle_path, sizeof c.bundle_path, "%s", bundle_path)) != KEEL_OK)
        return st;
    c.bundle_size = size;
    /* A security update goes to every device at once (5.3-8). */
    c.percent = security ? 100 : percent;
    c.security = security;
    c.fail_permille = fail_permille;
    c.state = KEEL_FLEET_CAMPAIGN_RUNNING;
    c.created = c.updated = (int64_t)time(NULL);
    if ((st = keel_fleet_campaign_create(f->db, &c)) != KEEL_OK)
        return st;
    keel_log(KEEL_LOG_INFO, "fleet: campaign %s created: %s %s (security version %lld) to %u%% of %s%s", c.id,
             c.model, c.version, (long long)c.security_version, c.percent, c.model, security ? ", security" : "");
    campaign_check(f, &c, c.created);
    *out = c;
    return KEEL_OK;
}
