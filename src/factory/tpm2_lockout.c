/*
 * The TPM's dictionary-attack (DA) settings, read and set through the TSS's
 * ESAPI (libtss2-esys). The tpm2 keystore gives every key an authorization
 * value and leaves it under DA protection; these settings decide what that
 * protection is worth: how many wrong values the TPM takes before it locks,
 * and how fast it forgives. A recovery interval of 0 turns the protection
 * off (tested on swtpm: failures are then not even counted).
 */
#include "keel/factory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

typedef struct {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
} tpm_conn_t;

static keel_status_t tss_error(const char *what, TSS2_RC rc)
{
    return keel_errorf(KEEL_ERR_KEYSTORE, "tpm2: %s: %s (0x%x)", what, Tss2_RC_Decode(rc), (unsigned)rc);
}

static void conn_close(tpm_conn_t *c)
{
    if (c->esys != NULL)
        Esys_Finalize(&c->esys);
    if (c->tcti != NULL)
        Tss2_TctiLdr_Finalize(&c->tcti);
}

/* tcti NULL or empty: $TPM2OPENSSL_TCTI (what the keystore uses), else the TSS default search. */
static keel_status_t conn_open(const char *tcti, tpm_conn_t *c)
{
    memset(c, 0, sizeof *c);
    if (tcti == NULL || tcti[0] == '\0')
        tcti = getenv("TPM2OPENSSL_TCTI");
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti != NULL && tcti[0] != '\0' ? tcti : NULL, &c->tcti);
    if (rc != TSS2_RC_SUCCESS)
        return keel_errorf(KEEL_ERR_KEYSTORE, "tpm2: no TPM answers through TCTI '%s': %s",
                           tcti != NULL ? tcti : "default", Tss2_RC_Decode(rc));
    rc = Esys_Initialize(&c->esys, c->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        conn_close(c);
        return tss_error("Esys_Initialize", rc);
    }
    return KEEL_OK;
}

keel_status_t keel_tpm2_lockout_get(const char *tcti, keel_tpm2_lockout_t *out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "tpm2 lockout: missing argument");
    memset(out, 0, sizeof *out);
    tpm_conn_t c;
    keel_status_t st = conn_open(tcti, &c);
    if (st != KEEL_OK)
        return st;
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_NO;
    /* The variable properties run from TPM2_PT_PERMANENT to the DA ones in one block. */
    TSS2_RC rc = Esys_GetCapability(c.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_TPM_PROPERTIES,
                                    TPM2_PT_VAR, TPM2_MAX_TPM_PROPERTIES, &more, &cap);
    if (rc != TSS2_RC_SUCCESS) {
        st = tss_error("reading the TPM's properties", rc);
    } else {
        unsigned seen = 0;
        const TPML_TAGGED_TPM_PROPERTY *p = &cap->data.tpmProperties;
        for (UINT32 i = 0; i < p->count && i < TPM2_MAX_TPM_PROPERTIES; i++) {
            UINT32 v = p->tpmProperty[i].value;
            switch (p->tpmProperty[i].property) {
            case TPM2_PT_PERMANENT: out->in_lockout = (v & TPMA_PERMANENT_INLOCKOUT) != 0; seen |= 1; break;
            case TPM2_PT_LOCKOUT_COUNTER: out->failures = v; seen |= 2; break;
            case TPM2_PT_MAX_AUTH_FAIL: out->max_tries = v; seen |= 4; break;
            case TPM2_PT_LOCKOUT_INTERVAL: out->recovery_s = v; seen |= 8; break;
            case TPM2_PT_LOCKOUT_RECOVERY: out->lockout_recovery_s = v; seen |= 16; break;
            default: break;
            }
        }
        if (seen != 31)
            st = keel_errorf(KEEL_ERR_KEYSTORE, "tpm2: the TPM did not report its dictionary-attack settings");
    }
    Esys_Free(cap);
    conn_close(&c);
    return st;
}

keel_status_t keel_tpm2_lockout_set(const char *tcti, const char *lockout_auth, uint32_t max_tries,
                                    uint32_t recovery_s, uint32_t lockout_recovery_s)
{
    if (max_tries == 0 || recovery_s == 0)
        return keel_errorf(KEEL_ERR_ARG, "tpm2 lockout: tries and recovery must be at least 1 "
                                         "(a recovery of 0 turns the protection off)");
    TPM2B_AUTH auth = {.size = 0};
    if (lockout_auth != NULL) {
        size_t n = strlen(lockout_auth);
        if (n > sizeof auth.buffer)
            return keel_errorf(KEEL_ERR_ARG, "tpm2 lockout: the lockout authorization exceeds %zu bytes",
                               sizeof auth.buffer);
        memcpy(auth.buffer, lockout_auth, n);
        auth.size = (UINT16)n;
    }
    tpm_conn_t c;
    keel_status_t st = conn_open(tcti, &c);
    if (st == KEEL_OK) {
        TSS2_RC rc = Esys_TR_SetAuth(c.esys, ESYS_TR_RH_LOCKOUT, &auth);
        if (rc == TSS2_RC_SUCCESS)
            rc = Esys_DictionaryAttackParameters(c.esys, ESYS_TR_RH_LOCKOUT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                                 ESYS_TR_NONE, max_tries, recovery_s, lockout_recovery_s);
        if (rc != TSS2_RC_SUCCESS)
            st = tss_error("setting the dictionary-attack parameters (is the lockout authorization right?)", rc);
        /* ESYS keeps a copy of the authorization: overwrite it before it goes */
        TPM2B_AUTH none;
        memset(&none, 0, sizeof none);
        none.size = (UINT16)sizeof none.buffer;
        TSS2_RC wrc = Esys_TR_SetAuth(c.esys, ESYS_TR_RH_LOCKOUT, &none);
        none.size = 0;
        if (wrc == TSS2_RC_SUCCESS)
            wrc = Esys_TR_SetAuth(c.esys, ESYS_TR_RH_LOCKOUT, &none);
        (void)wrc; /* best effort: the connection closes next */
        conn_close(&c);
    }
    keel_wipe(&auth, sizeof auth);
    return st;
}
