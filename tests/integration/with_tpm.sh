#!/bin/sh
# with_tpm.sh [--other] PROGRAM [ARGS...]: runs PROGRAM with a fresh software
# TPM, the process's TPM (TPM2OPENSSL_TCTI and its bus are exported), and
# stops it after. --other starts a second one too, named by
# KEEL_TEST_TPM2_OTHER_TCTI as a direct swtpm TCTI (enough for the one load a
# test tries there).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tpm_lib.sh"

tpm_start main
if [ "${1:-}" = --other ]; then
    shift
    tpm_start other
    KEEL_TEST_TPM2_OTHER_TCTI="swtpm:host=127.0.0.1,port=$(cat "$TPM_BASE/other/port")"
    export KEEL_TEST_TPM2_OTHER_TCTI
fi
# With KEEL_TEST_KEYSTORE=tpm2 the run must really have made TPM keys.
KEEL_TPM2_USED=$T/tpm2-used
export KEEL_TPM2_USED
"$@"
if [ "${KEEL_TEST_KEYSTORE:-}" = tpm2 ] && [ ! -s "$KEEL_TPM2_USED" ]; then
    fail "with_tpm: KEEL_TEST_KEYSTORE=tpm2, but the test provisioned no device with --keystore tpm2"
fi
