/* placeholder: written by issue 7 */
typedef int keel_fleet_db_pg_placeholder_t;
