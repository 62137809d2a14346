/*
 * keel/assess_firmware.h - static scan of a firmware image for `keel assess
 * firmware` (issue 6): private keys, certificates shipped with their key,
 * password hashes and default credentials, debug services started at boot,
 * world-writable and setuid files (provisions 5.1-1, 5.4-3, 5.6-4A, 5.6-7).
 *
 * The image is a directory tree or an archive libarchive reads (tar with
 * gzip, bzip2, xz, lzma or zstd; cpio; zip). Nothing is ever written to
 * disk, no symbolic link is followed, and every read is capped: the image is
 * hostile input. Findings never hold a secret: keys are named by the SHA-256
 * of their public key, hashes by their type, credentials by their user.
 */
#ifndef KEEL_ASSESS_FIRMWARE_H
#define KEEL_ASSESS_FIRMWARE_H

#include "keel/base.h"

#include <jansson.h>

/* Defaults of keel_assess_firmware_limits_t. */
#define KEEL_ASSESS_FW_FILE_MAX (16u * 1024u * 1024u)           /* bytes read of one file */
#define KEEL_ASSESS_FW_TOTAL_MAX (2ull * 1024u * 1024u * 1024u) /* bytes read (archives: unpacked) */
#define KEEL_ASSESS_FW_ENTRIES_MAX 500000u                      /* entries visited */
#define KEEL_ASSESS_FW_DEPTH_MAX 64u                            /* path components */
#define KEEL_ASSESS_FW_CRYPT_SECONDS 30.0                       /* default-password trials */
#define KEEL_ASSESS_FW_FINDINGS_MAX 10000u

typedef struct {
    size_t file_max;     /* a larger file is read up to this many bytes (a note says so) */
    uint64_t total_max;  /* the scan stops, incomplete, past this many bytes */
    size_t entries_max;  /* ... or past this many entries */
    unsigned depth_max;  /* deeper entries are skipped, the scan is incomplete */
    double crypt_seconds; /* budget for trying default passwords against hashes */
} keel_assess_firmware_limits_t;

/* The defaults above. */
keel_assess_firmware_limits_t keel_assess_firmware_defaults(void);

/*
 * Scans `path` (a directory or an archive file) and returns in *report a JSON
 * object (docs/internals/assess-firmware.md):
 *   {"format":"keel-assess-firmware-1", "target", "source":"directory"|"archive",
 *    "archive":{"format","filters"}?, "complete":bool, "notes":[...],
 *    "stats":{"entries","files_read","bytes_read","keys","certificates","hashes","seconds"},
 *    "findings":[{"kind","path","provision","severity","what","detail"{...}}],
 *    "counts":{"fail","warn","info"}}
 * *problems counts the findings of severity fail or warn. `lim` NULL means
 * the defaults. Returns KEEL_OK when the scan ran (complete or not),
 * KEEL_ERR_NOT_FOUND when path does not exist, KEEL_ERR_FORMAT when it is
 * neither a directory nor a readable archive, KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_firmware_scan(const char *path, const keel_assess_firmware_limits_t *lim,
                                        json_t **report, unsigned *problems) KEEL_MUST_CHECK;

#endif
