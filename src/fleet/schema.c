/* placeholder: written by issue 7 */
typedef int keel_fleet_schema_placeholder_t;
