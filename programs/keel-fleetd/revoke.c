/*
 * Revocation (fleetd.h): the registry marks the device revoked (the update
 * server refuses it from then on, whatever the CRL says), a new CRL of the
 * device CA listing every revoked device is signed with the factory's
 * device issuing key and written where the broker and the update server
 * read it, the update server reloads it at once, and the broker is told to
 * reload ([pki] broker_pid_file: SIGHUP, see docs/internals/fleet-broker.md).
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/factory.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define PID_FILE_MAX 64

static keel_status_t crl_write(fleetd_t *f)
{
    char **serials = NULL;
    size_t n = 0;
    keel_status_t st = keel_fleet_revoked_serials(f->db, &serials, &n);
    if (st != KEEL_OK)
        return st;
    keel_factory_t *fac = NULL;
    st = keel_factory_load(f->factory_dir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &fac);
    keel_buf_t pem;
    keel_buf_init(&pem, 16u * 1024u * 1024u);
    if (st == KEEL_OK)
        st = keel_factory_device_crl(fac, (const char *const *)serials, n, (int64_t)time(NULL),
                                     (unsigned)keel_config_uint(f->cfg, "pki", "crl_days"), &pem);
    keel_factory_free(fac);
    keel_fleet_strv_free(serials, n);
    /* mosquitto 2.0 refuses every client whose CA has no CRL in its crlfile:
     * the service CA's current CRL (renewed by the operator with `keel
     * factory crl --ca service`, which needs the passphrase) goes with ours. */
    keel_buf_t svc;
    keel_buf_init(&svc, 16u * 1024u * 1024u);
    if (st == KEEL_OK)
        st = keel_file_read(f->service_crl, 16u * 1024u * 1024u, &svc);
    if (st == KEEL_OK && (svc.len == 0 || memmem(svc.data, svc.len, "-----BEGIN X509 CRL-----", 24) == NULL))
        st = keel_errorf(KEEL_ERR_CONFIG, "%s holds no CRL", f->service_crl);
    if (st == KEEL_OK && (pem.len == 0 || pem.data[pem.len - 1] != '\n'))
        st = keel_buf_append(&pem, "\n", 1);
    if (st == KEEL_OK)
        st = keel_buf_append(&pem, svc.data, svc.len);
    keel_buf_free(&svc);
    /* Written to a temporary file and renamed: a reload that finds no CRL
     * (or half of one) turns mosquitto's revocation check off. 0644: the
     * broker (another user) reads it; a CRL is public. */
    if (st == KEEL_OK)
        st = keel_file_write_atomic(f->crl_path, pem.data, pem.len, 0644);
    keel_buf_free(&pem);
    return st;
}

static void broker_reload(fleetd_t *f)
{
    char pidfile[KEEL_PATH_MAX];
    if (keel_config_path(f->cfg, "pki", "broker_pid_file", pidfile) != KEEL_OK) {
        keel_error_clear();
        keel_log(KEEL_LOG_WARN, "fleet: no [pki] broker_pid_file: reload the broker yourself to apply the new CRL");
        return;
    }
    keel_buf_t b;
    keel_buf_init(&b, PID_FILE_MAX);
    keel_status_t st = keel_file_read(pidfile, PID_FILE_MAX, &b);
    long pid = 0;
    if (st == KEEL_OK) {
        char text[PID_FILE_MAX + 1];
        memcpy(text, b.data, b.len);
        text[b.len] = '\0';
        char *end = NULL;
        errno = 0;
        pid = strtol(text, &end, 10);
        if (errno != 0 || end == text || (*end != '\0' && *end != '\n') || pid <= 1)
            pid = 0;
    }
    keel_buf_free(&b);
    if (pid <= 1 || kill((pid_t)pid, SIGHUP) != 0) {
        keel_log(KEEL_LOG_WARN, "fleet: could not signal the broker (%s): reload it yourself to apply the new CRL",
                 st != KEEL_OK ? keel_error_message() : pid <= 1 ? "bad pid file" : strerror(errno));
        keel_error_clear();
        return;
    }
    keel_log(KEEL_LOG_INFO, "fleet: broker %ld told to reload its CRL", pid);
}

void fleetd_crl_refresh(fleetd_t *f)
{
    if (f->factory_dir[0] == '\0' || f->crl_path[0] == '\0')
        return;
    struct stat sb;
    int64_t half = (int64_t)keel_config_uint(f->cfg, "pki", "crl_days") * 86400 / 2;
    if (stat(f->crl_path, &sb) == 0 && (int64_t)time(NULL) - (int64_t)sb.st_mtime < half)
        return;
    keel_status_t st = crl_write(f);
    if (st == KEEL_OK && f->dist_ctx != NULL)
        st = fleetd_server_ctx_crl(f->dist_ctx, f->device_ca, f->crl_path);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: the device CRL was not renewed: %s (once it expires, the broker and the "
                                 "update server refuse every device)", keel_error_message());
        keel_error_clear();
        return;
    }
    keel_log(KEEL_LOG_INFO, "fleet: the device CRL %s was renewed for %u days", f->crl_path,
             (unsigned)keel_config_uint(f->cfg, "pki", "crl_days"));
    broker_reload(f);
}

keel_status_t fleetd_revoke(fleetd_t *f, const char *device)
{
    keel_status_t st = keel_fleet_device_revoke(f->db, device, (int64_t)time(NULL));
    if (st != KEEL_OK)
        return st;
    keel_log(KEEL_LOG_WARN, "fleet: device %s revoked", device);
    if (f->factory_dir[0] == '\0') {
        keel_log(KEEL_LOG_WARN, "fleet: no [pki] factory: %s is refused by the update server, but the broker "
                                "still accepts it until a CRL lists it", device);
        return KEEL_OK;
    }
    if ((st = crl_write(f)) != KEEL_OK)
        return keel_errorf(st, "the device is revoked in the registry, but the CRL was not written: %s",
                           keel_error_message());
    if (f->dist_ctx != NULL && (st = fleetd_server_ctx_crl(f->dist_ctx, f->device_ca, f->crl_path)) != KEEL_OK)
        return keel_errorf(st, "the CRL was written but the update server did not load it: %s", keel_error_message());
    broker_reload(f);
    return KEEL_OK;
}
