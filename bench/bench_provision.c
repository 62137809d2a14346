/*
 * bench-provision: devices per second of keel_factory_provision with the file
 * keystore, against the same cryptographic operations done alone, in the same
 * process and the same run (the machine is shared and noisy, so only ratios
 * between figures measured side by side mean anything).
 *
 * "Crypto alone" does, per device, exactly the crypto that provisioning does
 * and nothing else: a P-256 key, its sealing under a fresh key-encryption key
 * (AES-256-GCM, as the file keystore does), the device id, the certificate
 * from the device issuing CA, and a label password with its Argon2id hash.
 * No files. The two are run alternately, BENCH_RUNS_DEFAULT times each, and
 * the best run of each is kept.
 *
 * usage: bench-provision --factory F --out DIR --count N [--runs R] [--json]
 * DIR must not hold earlier runs; run r provisions into DIR/run-r.
 */
#include "keel/crypto.h"
#include "keel/factory.h"
#include "keel/identity.h"

#include <getopt.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MODEL "bench-1"
#define BENCH_COUNT_MAX 100000ul
#define BENCH_RUNS_DEFAULT 3ul
#define BENCH_RUNS_MAX 20ul
/* A DER P-256 private key is about 121 bytes; 256 leaves room for encodings. */
#define BENCH_KEY_DER_MAX 256
/* The associated data the file keystore binds a device key to. */
#define BENCH_KEY_AD "keel-keystore-file-v1|key|" KEEL_DEVICE_KEY_LABEL "|"

enum { EXIT_USAGE = 2 };

static const char usage[] =
    "usage: bench-provision --factory DIR --out DIR --count N [--runs R] [--json]\n"
    "\n"
    "Times keel factory provision (file keystore) for N devices against the same\n"
    "crypto operations alone (no files), alternating, best of R runs (default 3).\n"
    "--out must be empty or absent; run r provisions into OUT/run-r.\n";

/* Seconds spent per phase over one run of N devices. */
typedef struct {
    double total;
    double keygen;
    double cert;
    double hash;
} bench_phases_t;

typedef struct {
    bench_phases_t best;
    double runs[BENCH_RUNS_MAX];
} bench_result_t;

/* The file keystore's sealing of a new key, without its file. */
static keel_status_t seal_key(EVP_PKEY *key)
{
    uint8_t kek[KEEL_KEYSTORE_KEK_LEN], sealed[BENCH_KEY_DER_MAX + KEEL_AEAD_OVERHEAD];
    unsigned char *der = NULL;
    size_t n = 0;
    keel_random_bytes(kek, sizeof kek);
    int len = i2d_PrivateKey(key, &der);
    keel_status_t st = len > 0 ? KEEL_OK : keel_crypto_error(KEEL_ERR_CRYPTO, "encode private key");
    if (st == KEEL_OK)
        st = keel_aead_seal(kek, BENCH_KEY_AD, strlen(BENCH_KEY_AD), der, (size_t)len, sealed,
                            sizeof sealed, &n);
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)len);
    keel_wipe(kek, sizeof kek);
    keel_wipe(sealed, sizeof sealed);
    return st;
}

static keel_status_t crypto_one(keel_factory_t *f, const keel_argon2_params_t *a2, bench_phases_t *ph)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char id[KEEL_DEVICE_ID_LEN + 1], serial[KEEL_SERIAL_LEN + 1];
    char pw[KEEL_LABEL_PW_LEN + 1], norm[KEEL_LABEL_PW_LEN + 1], hash[KEEL_PASSWORD_HASH_MAX];

    double t = keel_now();
    keel_status_t st = keel_ec_generate(&key);
    if (st == KEEL_OK)
        st = seal_key(key);
    ph->keygen += keel_now() - t;

    if (st == KEEL_OK)
        st = keel_identity_device_id(key, id);
    keel_identity_new_serial(serial);
    t = keel_now();
    if (st == KEEL_OK)
        st = keel_factory_issue_device(f, key, id, BENCH_MODEL, serial, &cert);
    ph->cert += keel_now() - t;

    keel_identity_label_password(pw);
    t = keel_now();
    if (st == KEEL_OK && (st = keel_identity_password_normalize(pw, norm, sizeof norm)) == KEEL_OK)
        st = keel_password_hash(norm, strlen(norm), a2, hash);
    ph->hash += keel_now() - t;

    keel_wipe(pw, sizeof pw);
    keel_wipe(norm, sizeof norm);
    keel_wipe(hash, sizeof hash);
    X509_free(cert);
    EVP_PKEY_free(key);
    return st;
}

static keel_status_t run_crypto(keel_factory_t *f, unsigned count, bench_phases_t *ph)
{
    keel_argon2_params_t a2 = keel_argon2_defaults();
    keel_status_t st = KEEL_OK;
    memset(ph, 0, sizeof *ph);
    double t0 = keel_now();
    for (unsigned i = 0; st == KEEL_OK && i < count; i++)
        st = crypto_one(f, &a2, ph);
    ph->total = keel_now() - t0;
    return st;
}

static keel_status_t run_provision(keel_factory_t *f, const char *out, unsigned run, unsigned count,
                                   bench_phases_t *ph)
{
    char dir[KEEL_PATH_MAX];
    keel_status_t st = keel_snprintf(dir, sizeof dir, "%s/run-%u", out, run);
    if (st != KEEL_OK)
        return st;
    if (keel_path_exists(dir))
        return keel_errorf(KEEL_ERR_EXISTS, "%s already exists: give an empty --out", dir);
    keel_provision_opts_t o = {.out = dir, .model = BENCH_MODEL, .count = count,
                               .argon2 = keel_argon2_defaults()};
    o.keystore.driver = "file";
    keel_provision_stats_t s;
    st = keel_factory_provision(f, &o, &s);
    if (st == KEEL_OK && s.made != count)
        st = keel_errorf(KEEL_ERR_IO, "provisioned %u of %u devices", s.made, count);
    *ph = (bench_phases_t){.total = s.total, .keygen = s.keygen, .cert = s.cert, .hash = s.hash};
    return st;
}

static void keep_best(bench_result_t *r, unsigned run, const bench_phases_t *ph)
{
    r->runs[run] = ph->total;
    if (run == 0 || ph->total < r->best.total)
        r->best = *ph;
}

/* Alternates the two so that a slow spell of the machine hits both alike. */
static keel_status_t bench(keel_factory_t *f, const char *out, unsigned count, unsigned runs,
                           bench_result_t *crypto, bench_result_t *prov)
{
    keel_status_t st = keel_dir_make(out, 0700);
    for (unsigned r = 0; st == KEEL_OK && r < runs; r++) {
        bench_phases_t c, p;
        if (r % 2 == 0) {
            if ((st = run_crypto(f, count, &c)) == KEEL_OK)
                st = run_provision(f, out, r + 1, count, &p);
        } else {
            if ((st = run_provision(f, out, r + 1, count, &p)) == KEEL_OK)
                st = run_crypto(f, count, &c);
        }
        if (st == KEEL_OK) {
            keep_best(crypto, r, &c);
            keep_best(prov, r, &p);
        }
    }
    return st;
}

static double per_device_ms(double seconds, unsigned count)
{
    return seconds * 1000.0 / count;
}

static double other_s(const bench_phases_t *ph)
{
    double other = ph->total - ph->keygen - ph->cert - ph->hash;
    return other > 0 ? other : 0;
}

static json_t *result_json(const bench_result_t *r, unsigned count, unsigned runs)
{
    const bench_phases_t *b = &r->best;
    json_t *all = json_array();
    for (unsigned i = 0; i < runs; i++)
        json_array_append_new(all, json_real(r->runs[i]));
    return json_pack("{s:f, s:f, s:{s:f, s:f, s:f, s:f, s:f}, s:o}", "seconds", b->total,
                     "devices_per_second", count / b->total, "ms_per_device", "total",
                     per_device_ms(b->total, count), "keygen", per_device_ms(b->keygen, count), "cert",
                     per_device_ms(b->cert, count), "argon2id", per_device_ms(b->hash, count), "other",
                     per_device_ms(other_s(b), count), "runs_seconds", all);
}

static int print_json(const bench_result_t *crypto, const bench_result_t *prov, unsigned count,
                      unsigned runs)
{
    /* The headline figures are flat top-level numbers so bench/run.sh can
     * read them without a JSON parser. */
    json_t *j = json_pack("{s:i, s:i, s:f, s:f, s:f, s:o, s:o}", "devices", (int)count, "runs", (int)runs,
                          "crypto_alone_devices_per_second", count / crypto->best.total,
                          "provision_devices_per_second", count / prov->best.total, "ratio",
                          prov->best.total / crypto->best.total, "crypto_alone",
                          result_json(crypto, count, runs), "provision", result_json(prov, count, runs));
    char *txt = j != NULL ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6))
                          : NULL;
    json_decref(j);
    if (txt == NULL) {
        fputs("bench-provision: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    printf("%s\n", txt);
    free(txt);
    return EXIT_SUCCESS;
}

static void print_row(const char *name, const bench_result_t *r, unsigned count)
{
    const bench_phases_t *b = &r->best;
    printf("  %-16s %10.1f %9.2f %8.2f %8.2f %9.2f %8.2f\n", name, count / b->total,
           per_device_ms(b->total, count), per_device_ms(b->keygen, count), per_device_ms(b->cert, count),
           per_device_ms(b->hash, count), per_device_ms(other_s(b), count));
}

static void print_text(const bench_result_t *crypto, const bench_result_t *prov, unsigned count,
                       unsigned runs)
{
    printf("bench-provision: %u devices, file keystore, best of %u alternating runs\n", count, runs);
    printf("  %-16s %10s %9s %8s %8s %9s %8s   (ms/device)\n", "", "devices/s", "total", "keygen", "cert",
           "argon2id", "other");
    print_row("crypto alone", crypto, count);
    print_row("keel provision", prov, count);
    printf("  provision keygen includes writing the sealed key file; other = the remaining files,\n"
           "  fsyncs and renames, the label line and the manifest\n");
    printf("ratio provision/crypto alone: %.3f\n", prov->best.total / crypto->best.total);
}

static int parse_count(const char *s, unsigned long max, unsigned *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v < 1 || v > max)
        return 0;
    *out = (unsigned)v;
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"factory", required_argument, NULL, 'f'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"count", required_argument, NULL, 'n'},
                                         {"runs", required_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *factory = NULL, *out = NULL;
    unsigned count = 0, runs = BENCH_RUNS_DEFAULT;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'f': factory = optarg; break;
        case 'o': out = optarg; break;
        case 'n':
            if (!parse_count(optarg, BENCH_COUNT_MAX, &count)) {
                fprintf(stderr, "bench-provision: --count must be 1..%lu\n", BENCH_COUNT_MAX);
                return EXIT_USAGE;
            }
            break;
        case 'r':
            if (!parse_count(optarg, BENCH_RUNS_MAX, &runs)) {
                fprintf(stderr, "bench-provision: --runs must be 1..%lu\n", BENCH_RUNS_MAX);
                return EXIT_USAGE;
            }
            break;
        case 'j': json = 1; break;
        case 'h': fputs(usage, stdout); return EXIT_SUCCESS;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc || factory == NULL || out == NULL || count == 0) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }

    keel_factory_t *f = NULL;
    bench_result_t crypto = {0}, prov = {0};
    keel_status_t st = keel_crypto_init();
    if (st == KEEL_OK)
        st = keel_factory_load(factory, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f);
    if (st == KEEL_OK)
        st = bench(f, out, count, runs, &crypto, &prov);
    keel_factory_free(f);
    if (st != KEEL_OK) {
        fprintf(stderr, "bench-provision: %s\n", keel_error_message());
        return EXIT_FAILURE;
    }
    if (json)
        return print_json(&crypto, &prov, count, runs);
    print_text(&crypto, &prov, count, runs);
    return EXIT_SUCCESS;
}
