# A software TPM 2.0 for the integration tests and the demo: swtpm (TCP on
# 127.0.0.1, on two ports picked here), a private D-Bus and the tpm2-abrmd
# resource manager on it, all run unprivileged (as nobody when the caller is
# root). POSIX sh; source it AFTER lib.sh and the other *_lib.sh (it needs
# `fail` and `free_port`, and chains their exit cleanup). Everything started
# here is stopped by pid on every exit path.
#
#   tpm_start NAME     Starts a TPM called NAME with fresh state (its own
#                      directory, ports and bus). The first one started is
#                      also exported as the process's TPM: TPM2OPENSSL_TCTI,
#                      TPM2TOOLS_TCTI and DBUS_SESSION_BUS_ADDRESS are set.
#                      TPM_TCTI is the tabrmd TCTI string, the same for every
#                      TPM: the bus address tells them apart.
#   tpm_bus NAME       Prints DBUS_SESSION_BUS_ADDRESS=... for NAME.
#   tpm_env NAME       Prints the environment assignments that select NAME,
#                      for `env $(tpm_env NAME) cmd ...`.
#   tpm_stop NAME      Stops NAME's daemons and deletes its state.
#   tpm_tools NAME ARGS...
#                      Runs a tpm2-tools command against NAME (under `timeout`:
#                      a tabrmd client on a bus that stopped answering hangs).
#   tpm_available      0 when every tool and the OpenSSL tpm2 provider are here.
#   tpm_cleanup        Stops every TPM (the exit trap calls it).
#
# TPM_LIB_EMBED=1 (set before sourcing) is for scripts with exit handling of
# their own (scripts/demo.sh): no trap is installed (call tpm_cleanup), no TPM
# is exported, and missing tools are not fatal (ask tpm_available).
#
# Without a resource manager the TPM has three object slots, and OpenSSL's
# tpm2 provider runs out of them: the tests always go through tpm2-abrmd.
# On a device, /dev/tpmrm0 (the kernel's resource manager) takes its place.

: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
. "$KEEL_SOURCE_DIR/tests/integration/dbus_lib.sh"

TPM_TCTI="tabrmd:bus_type=session"
TPM_NAMES=
TPM_BASE=

tpm_available() {
    for _c in swtpm tpm2-abrmd dbus-daemon tpm2_getrandom tpm2_print setpriv setsid timeout; do
        command -v "$_c" >/dev/null 2>&1 || return 1
    done
    _mods=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"$/\1/p')
    [ -f "$_mods/tpm2.so" ]
}

tpm_cleanup() {
    for _n in $TPM_NAMES; do
        tpm_stop "$_n"
    done
    [ -z "$TPM_BASE" ] || rm -rf "$TPM_BASE"
}

if [ -z "${TPM_LIB_EMBED:-}" ]; then
    tpm_available || fail "tpm_lib: swtpm, tpm2-abrmd, tpm2-tools or tpm2-openssl missing (run scripts/deps.sh)"
    if command -v pg_cleanup >/dev/null 2>&1; then
        _tpm_prev_cleanup=pg_cleanup
    elif command -v broker_cleanup >/dev/null 2>&1; then
        _tpm_prev_cleanup=broker_cleanup
    elif command -v keeld_cleanup >/dev/null 2>&1; then
        _tpm_prev_cleanup=keeld_cleanup
    else
        _tpm_prev_cleanup=cleanup
    fi
    _tpm_exit() {
        tpm_cleanup
        $_tpm_prev_cleanup
    }
    trap _tpm_exit EXIT
    trap 'exit 130' INT TERM
fi

# The bus socket lives in the TPM's directory and a unix socket path has at
# most 107 bytes, so the base is a short directory of its own, which nobody
# (the daemons' user) must be able to enter: under $TMPDIR, else /tmp. It
# stays root's: the pid files the stop relies on are written there, out of
# the daemons' reach.
_tpm_base() {
    [ -n "$TPM_BASE" ] && return 0
    for _t in "${TMPDIR:-/tmp}" /tmp; do
        TPM_BASE=$(mktemp -d "$_t/ktpm.XXXXXX")
        chmod 755 "$TPM_BASE"
        if [ ${#TPM_BASE} -lt 70 ] && _tpm_runas test -x "$TPM_BASE"; then
            return 0
        fi
        rmdir "$TPM_BASE"
        TPM_BASE=
    done
    fail "tpm_lib: no directory for the TPMs that nobody can enter, with a path short enough for a bus socket"
}

_tpm_dir() { printf '%s/%s' "$TPM_BASE" "$1"; }

# _tpm_runas CMD...: as nobody when root (the daemons need no privilege).
_tpm_runas() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

tpm_bus() {
    printf 'DBUS_SESSION_BUS_ADDRESS=unix:path=%s/bus' "$(_tpm_dir "$1")"
}

tpm_env() {
    printf '%s TPM2OPENSSL_TCTI=%s TPM2TOOLS_TCTI=%s\n' "$(tpm_bus "$1")" "$TPM_TCTI" "$TPM_TCTI"
}

tpm_tools() {
    _tt_n=$1
    shift
    # shellcheck disable=SC2046
    env $(tpm_env "$_tt_n") timeout 20 "$@"
}

_tpm_port_free() {
    python3 -c 'import socket, sys
for p in (int(sys.argv[1]), int(sys.argv[1]) + 1):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        sys.exit(1)
    finally:
        s.close()' "$1"
}

tpm_start() {
    _n=$1
    _tpm_base
    _d=$(_tpm_dir "$_n")
    [ ! -e "$_d" ] || fail "tpm_start: TPM $_n already exists"
    mkdir -p "$_d/state"
    [ "$(id -u)" != 0 ] || chown -R nobody:nogroup "$_d"
    TPM_NAMES="$TPM_NAMES $_n"

    # swtpm on two consecutive free ports (server, control); retried when
    # another test takes a port between the check and the bind.
    _ok=
    for _try in 1 2 3 4 5 6 7 8; do
        _p=$(free_port)
        _tpm_port_free "$_p" || continue
        if _tpm_runas swtpm socket --tpm2 \
            --server "type=tcp,port=$_p,bindaddr=127.0.0.1" \
            --ctrl "type=tcp,port=$((_p + 1)),bindaddr=127.0.0.1" \
            --tpmstate "dir=$_d/state" --flags not-need-init,startup-clear \
            --pid "file=$_d/swtpm.pid" --log "file=$_d/swtpm.log,level=1" \
            --daemon >>"$_d/swtpm.err" 2>&1 </dev/null; then
            _ok=1
            break
        fi
    done
    [ -n "$_ok" ] || { cat "$_d/swtpm.err" >&2; fail "tpm_start: swtpm did not start"; }
    echo "$_p" >"$_d/port"
    _direct="swtpm:host=127.0.0.1,port=$_p"
    _i=0
    until timeout 3 tpm2_getrandom -T "$_direct" 4 >/dev/null 2>&1; do
        _i=$((_i + 1))
        [ $_i -lt 50 ] || fail "tpm_start: swtpm not answering on port $_p"
        sleep 0.1
    done

    # A private session bus: nobody owns it, root (the test) talks on it.
    dbus_private_conf "$_d/bus" >"$_d/bus.conf"
    _tpm_runas dbus-daemon --config-file="$_d/bus.conf" --fork --print-pid=1 >"$TPM_BASE/$_n.dbus.pid" \
        </dev/null || fail "tpm_start: dbus-daemon did not start"
    # setsid: its own process group, out of reach of the test's job control.
    # --flush-all: a fresh TPM, nothing left from an earlier client.
    # --max-connections: the fleet tests run many clients at once
    # (the default is 27, the most 100; /dev/tpmrm0 has no such limit).
    setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$TPM_BASE/$_n.abrmd.pid" \
        env DBUS_SESSION_BUS_ADDRESS="unix:path=$_d/bus" \
        $( [ "$(id -u)" = 0 ] && echo setpriv --reuid=nobody --regid=nogroup --clear-groups -- ) \
        tpm2-abrmd --session --flush-all --max-connections=100 --logger=stdout --tcti="$_direct" \
        >"$_d/abrmd.log" 2>&1 </dev/null &
    _i=0
    until tpm_tools "$_n" tpm2_getrandom -T "$TPM_TCTI" 4 >/dev/null 2>&1; do
        _i=$((_i + 1))
        [ $_i -lt 100 ] || { cat "$_d/abrmd.log" >&2; fail "tpm_start: tpm2-abrmd not ready"; }
        sleep 0.1
    done
    if [ -z "${TPM_LIB_EMBED:-}" ] && [ -z "${TPM2OPENSSL_TCTI:-}" ]; then
        DBUS_SESSION_BUS_ADDRESS="unix:path=$_d/bus"
        TPM2OPENSSL_TCTI=$TPM_TCTI
        TPM2TOOLS_TCTI=$TPM_TCTI
        export DBUS_SESSION_BUS_ADDRESS TPM2OPENSSL_TCTI TPM2TOOLS_TCTI
    fi
}

# _tpm_kill PIDFILE [PROGRAM]: SIGTERM (SIGKILL after 3 s) to the pid in the
# file, when it runs PROGRAM (for pid files the daemons write themselves).
_tpm_kill() {
    [ -s "$1" ] || return 0
    _pid=$(cat "$1")
    rm -f "$1"
    case $_pid in '' | *[!0-9]*) return 0 ;; esac
    [ -z "${2:-}" ] || [ "$(ps -o comm= -p "$_pid" 2>/dev/null)" = "$2" ] || return 0
    kill -TERM "$_pid" 2>/dev/null || return 0
    _i=0
    while kill -0 "$_pid" 2>/dev/null && [ "$(ps -o stat= -p "$_pid" 2>/dev/null | cut -c1)" != Z ]; do
        _i=$((_i + 1))
        if [ $_i -ge 30 ]; then
            kill -KILL "$_pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
}

tpm_stop() {
    [ -n "$TPM_BASE" ] || return 0
    _tpm_kill "$TPM_BASE/$1.abrmd.pid"
    _tpm_kill "$TPM_BASE/$1.dbus.pid" dbus-daemon
    _tpm_kill "$(_tpm_dir "$1")/swtpm.pid" swtpm
    rm -rf "$(_tpm_dir "$1")"
    TPM_NAMES=$(for _s in $TPM_NAMES; do [ "$_s" = "$1" ] || printf ' %s' "$_s"; done)
}
