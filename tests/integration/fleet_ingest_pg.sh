#!/bin/sh
# fleet_ingest.sh with the fleet's database on a private PostgreSQL
# (pg_lib.sh): the same checks, the other driver.
KEEL_FLEET_TEST_PG=1 exec sh "$(dirname "$0")/fleet_ingest.sh"
