# A private PostgreSQL (Debian's postgresql package) for the integration
# tests. POSIX sh; source it AFTER lib.sh (it chains lib.sh's exit cleanup,
# and keeld_lib.sh's or broker_lib.sh's when those were sourced first).
# The server listens on 127.0.0.1 only, on a free port, with its data and
# socket directories in a fresh temp dir of its own; it is stopped and the
# dir removed on every exit path.
#
#   pg_start      initdb + start, then a role and a database for the test:
#                 exports PG_URL=postgresql://keel:PASSWORD@127.0.0.1:PORT/keel
#                 (PASSWORD: 32 hex, generated now; host connections need it,
#                 scram-sha-256). Also sets PG_PORT, PG_DIR, PG_LOG.
#                 fsync is off: the data does not outlive the test.
#   pg_stop       stops the server (fast shutdown; immediate after 10 s).
#   pg_psql       runs psql as the cluster's superuser over the private
#                 socket, SQL on stdin, ON_ERROR_STOP; output on stdout.
#   pg_die MSG    shows the server's log tail, then fails.
#
# Binaries: $PG_BINDIR, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin. PostgreSQL refuses to run as root: as root the
# server runs as the `postgres` system user (made by the package) via
# runuser, and the temp dir is under ${PG_TMPDIR:-/tmp} (the tests' own $T
# may be a 0700 directory of root's that user cannot enter).

: "${T:?source lib.sh before pg_lib.sh}"

pg_find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        echo "$PG_BINDIR"
        return
    fi
    _b=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$_b" ] && [ -x "$_b/initdb" ]; then
        echo "$_b"
        return
    fi
    for _b in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$_b/initdb" ]; then
            echo "$_b"
            return
        fi
    done
}

PG_BINDIR=$(pg_find_bindir)
[ -n "$PG_BINDIR" ] && [ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/pg_ctl" ] ||
    fail "PostgreSQL server binaries not found (Debian package postgresql, or set PG_BINDIR)"
[ -x "$PG_BINDIR/psql" ] || command -v psql >/dev/null 2>&1 || fail "psql is needed (postgresql-client)"
PG_PSQL=$PG_BINDIR/psql
[ -x "$PG_PSQL" ] || PG_PSQL=$(command -v psql)
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"
command -v openssl >/dev/null 2>&1 || fail "openssl is needed"

if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || fail "running as root: the postgres system user is needed (package postgresql)"
    command -v runuser >/dev/null 2>&1 || fail "running as root: runuser is needed (util-linux)"
    PG_USER=postgres
else
    PG_USER=$(id -un)
fi

PG_DIR=
PG_PORT=
PG_URL=
PG_LOG=
PG_RUNNING=0

# pg_as CMD...: runs CMD as the server's user, in PG_DIR (the user may not enter our cwd).
pg_as() {
    if [ "$(id -u)" = 0 ]; then
        (cd "$PG_DIR" && runuser -u postgres -- "$@")
    else
        (cd "$PG_DIR" && "$@")
    fi
}

if command -v broker_cleanup >/dev/null 2>&1; then
    _pg_prev_cleanup=broker_cleanup
elif command -v keeld_cleanup >/dev/null 2>&1; then
    _pg_prev_cleanup=keeld_cleanup
else
    _pg_prev_cleanup=cleanup
fi
pg_cleanup() {
    if [ "$PG_RUNNING" = 1 ]; then
        pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
        PG_RUNNING=0
    fi
    [ -z "$PG_DIR" ] || rm -rf "$PG_DIR"
    $_pg_prev_cleanup
}
trap pg_cleanup EXIT
trap 'exit 130' INT TERM

pg_die() {
    if [ -n "$PG_LOG" ] && [ -f "$PG_LOG" ]; then
        echo "--- postgresql log (last 30 lines):" >&2
        tail -n 30 "$PG_LOG" >&2 || true
    fi
    fail "$*"
}

pg_psql() {
    pg_as "$PG_PSQL" -X -q -A -t -v ON_ERROR_STOP=1 -h "$PG_DIR/sock" -p "$PG_PORT" -U "$PG_USER" -d postgres -f -
}

pg_start() {
    [ "$PG_RUNNING" = 0 ] || fail "pg_start: PostgreSQL is already running"
    PG_DIR=$(mktemp -d "${PG_TMPDIR:-/tmp}/keel-pg-XXXXXX")
    mkdir "$PG_DIR/data" "$PG_DIR/sock"
    PG_LOG=$PG_DIR/postgresql.log
    : >"$PG_LOG"
    chmod 700 "$PG_DIR" "$PG_DIR/data" "$PG_DIR/sock"
    [ "$(id -u)" != 0 ] || chown -R postgres: "$PG_DIR"
    # Local (socket) connections: trust, the socket is in a 0700 directory of
    # the server's user. TCP: a password, scram-sha-256.
    pg_as "$PG_BINDIR/initdb" -D "$PG_DIR/data" -U "$PG_USER" --encoding=UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >"$T/pg_initdb.out" 2>&1 ||
        { cat "$T/pg_initdb.out" >&2; fail "initdb failed"; }
    _tries=0
    while :; do
        PG_PORT=$(free_port)
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $PG_PORT"
            echo "unix_socket_directories = '$PG_DIR/sock'"
            echo "password_encryption = 'scram-sha-256'"
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            echo "max_connections = 40"
            echo "shared_buffers = 32MB"
        } >"$PG_DIR/keel.conf"
        [ "$(id -u)" != 0 ] || chown postgres: "$PG_DIR/keel.conf"
        grep -q "^include = '$PG_DIR/keel.conf'" "$PG_DIR/data/postgresql.conf" ||
            pg_as sh -c "echo \"include = '$PG_DIR/keel.conf'\" >>'$PG_DIR/data/postgresql.conf'"
        PG_RUNNING=1 # from here on the exit path stops it, even a half-started one
        if pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_LOG" -w -t 30 start >/dev/null 2>&1; then
            break
        fi
        # Another process may have taken the port between the pick and the bind.
        _tries=$((_tries + 1))
        [ $_tries -lt 3 ] || pg_die "PostgreSQL did not start"
        pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    done
    _pw=$(openssl rand -hex 16)
    # The password goes on stdin, never on a command line.
    printf "CREATE ROLE keel LOGIN PASSWORD '%s';\nCREATE DATABASE keel OWNER keel;\n" "$_pw" | pg_psql >"$T/pg_psql.out" 2>&1 ||
        { cat "$T/pg_psql.out" >&2; pg_die "cannot create the test role and database"; }
    PG_URL="postgresql://keel:$_pw@127.0.0.1:$PG_PORT/keel"
    export PG_URL
    unset _pw
}

pg_stop() {
    [ "$PG_RUNNING" = 1 ] || return 0
    pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 10 stop >/dev/null 2>&1 ||
        pg_as "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    PG_RUNNING=0
}
