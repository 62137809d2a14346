/* Internal to src/supply: shared between the SBOM builder and the dpkg reader. */
#ifndef KEEL_SUPPLY_INT_H
#define KEEL_SUPPLY_INT_H

#include "keel/supply.h"

/* A file path whose owning package is wanted; owner is "name" or "name:arch", "" for none. */
typedef struct {
    const char *path;
    char owner[KEEL_DPKG_FIELD_MAX];
} supply_want_t;

/* Fills in the owner of every wanted path from <dpkg_dir>/info/NAME.list (sorts want by path). */
keel_status_t supply_dpkg_owners(const char *dpkg_dir, supply_want_t *want, size_t n) KEEL_MUST_CHECK;

/* Records "<prefix>: <the current error message>" (the message is copied first: keel_errorf writes over it). */
keel_status_t supply_error_prefix(keel_status_t st, const char *prefix);

#endif
