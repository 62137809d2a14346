/* placeholder: written by issue 7 */
typedef int keel_fleet_store_privacy_placeholder_t;
