#!/bin/sh
# with_tpm.sh PROGRAM [ARGS...]: runs PROGRAM with two fresh software TPMs.
# The first is the process's TPM (TPM2OPENSSL_TCTI and its bus are exported);
# the second, "other", is named by KEEL_TEST_TPM2_OTHER_TCTI as a direct swtpm
# TCTI (enough for the one load a test tries there). Both are stopped after.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tpm_lib.sh"

tpm_start main
tpm_start other
KEEL_TEST_TPM2_OTHER_TCTI="swtpm:host=127.0.0.1,port=$(cat "$_TPM_BASE/other/port")"
export KEEL_TEST_TPM2_OTHER_TCTI
"$@"
