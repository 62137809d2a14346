# The fleet store's unit tests (tests/unit/test_fleet_store.c) against a
# real PostgreSQL 15 this test starts itself (pg_lib.sh): every case that
# runs on SQLite runs on PostgreSQL too, and the test fails unless the
# PostgreSQL group ran and passed. Also: the password never shows in what
# the binary prints, and the server refuses a wrong password.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg_lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
BIN=${FLEET_STORE_TEST:-$KEEL_BUILD_DIR/tests/test_fleet_store}
[ -x "$BIN" ] || fail "test_fleet_store not built: $BIN"

note "a private PostgreSQL on 127.0.0.1"
pg_start
[ "$(echo 'SELECT 1' | pg_psql)" = 1 ] || pg_die "psql over the socket does not answer"

note "the store's cases on SQLite and PostgreSQL"
set +e
KEEL_TEST_PG_URL=$PG_URL "$BIN" >"$T/unit.out" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
    tail -n 60 "$T/unit.out" >&2
    pg_die "test_fleet_store failed (exit $rc)"
fi
grep -q '^fleet_store: sqlite: [0-9]* tests passed$' "$T/unit.out" || { cat "$T/unit.out" >&2; fail "the SQLite cases did not all pass"; }
grep -q '^fleet_store: postgresql: [0-9]* tests passed$' "$T/unit.out" || { cat "$T/unit.out" >&2; fail "the PostgreSQL cases did not run"; }
n_lite=$(sed -n 's/^fleet_store: sqlite: \([0-9]*\) tests passed$/\1/p' "$T/unit.out")
n_pg=$(sed -n 's/^fleet_store: postgresql: \([0-9]*\) tests passed$/\1/p' "$T/unit.out")
[ "$n_lite" = "$n_pg" ] && [ "$n_pg" -ge 10 ] || fail "PostgreSQL ran $n_pg cases, SQLite $n_lite"
# Only the SQLite-only case (the file's mode) may be skipped (in the PostgreSQL group).
skipped=$(grep '^\[  SKIPPED \] test_' "$T/unit.out" | sort -u | tr -d '\n')
[ -z "$skipped" ] || [ "$skipped" = "[  SKIPPED ] test_sqlite_file_mode" ] || fail "cases were skipped: $skipped"
pw=$(echo "$PG_URL" | sed 's|^postgresql://keel:\([0-9a-f]*\)@.*|\1|')
[ ${#pw} -eq 32 ] || fail "cannot find the password in PG_URL"
! grep -q "$pw" "$T/unit.out" || fail "the password appears in the test's output"

note "a wrong password is refused, and the error does not carry it"
bad=$(echo "$PG_URL" | sed "s|:$pw@|:wrong$pw@|")
set +e
KEEL_TEST_PG_URL=$bad "$BIN" >"$T/bad.out" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || fail "the store's tests passed with a wrong password"
grep -q "password authentication failed" "$T/bad.out" || { cat "$T/bad.out" >&2; fail "no authentication error shown"; }
! grep -q "$pw" "$T/bad.out" || fail "a password appears in the error output"

note "the schema is there, owned by the test role"
[ "$(echo "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'devices'" | pg_as "$PG_PSQL" -X -q -A -t -h "$PG_DIR/sock" -p "$PG_PORT" -U "$PG_USER" -d keel -f -)" = keel ] ||
    fail "the devices table is missing or not owned by keel"
pg_stop
echo "OK: fleet store on PostgreSQL ($n_pg cases)"
