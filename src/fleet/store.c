/* placeholder: written by issue 7 */
typedef int keel_fleet_store_placeholder_t;
