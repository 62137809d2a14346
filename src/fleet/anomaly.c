/* placeholder: written by issue 7 */
typedef int keel_fleet_anomaly_placeholder_t;
