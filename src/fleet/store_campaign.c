/* placeholder: written by issue 7 */
typedef int keel_fleet_store_campaign_placeholder_t;
