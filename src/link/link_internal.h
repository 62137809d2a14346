/*
 * The link module's inside, for its tests and test tools only (not part of
 * keel/link.h): parsing helpers, and the test hooks (KEEL_TEST_HOOKS, the
 * test profile only).
 */
#ifndef KEEL_LINK_INTERNAL_H
#define KEEL_LINK_INTERNAL_H

#include "keel/link.h"

/* Largest broker host name (DNS limit) and address text. */


/* Longest command name (the topic after keel/v1/<id>/cmd/). */
#define KEEL_LINK_CMD_NAME_MAX 64

/* A command name handed to on_command: 1..KEEL_LINK_CMD_NAME_MAX bytes of
 * levels separated by '/', each of [A-Za-z0-9_.-], none empty, "." or "..". */
bool keel_link_command_name_ok(const char *name);

/* A PUBACK reason code >= 128 after which the message is dropped (the same
 * message can never be accepted: 135, 144, 149, 153); any other is
 * transient and the message is kept. */
bool keel_link_refusal_is_final(int reason);

/* A uniform double in [0, 1) from the CSPRNG (53 random bits). */
double keel_link_random_unit(void);

/* A name a certificate can be checked against: an address, or a DNS name
 * (never empty: X509_VERIFY_PARAM_set1_host would clear the check). */
bool keel_link_server_name_ok(const char *name);
/* An IPv4 or IPv6 address, not a name (no SNI for it). */
bool keel_link_name_is_ip(const char *name);

#ifdef KEEL_TEST_HOOKS
/* Test hook: publish every outbox message to `topic` instead of the
 * device's own telemetry/events topic (to prove the broker's ACL refuses
 * it). NULL restores the normal topics. */
keel_status_t keel_link_test_set_topic(keel_link_t *l, const char *topic) KEEL_MUST_CHECK;

/* Test hook: how often the link's socket events woke the loop, and how many
 * connection attempts it made (to prove it does not spin). */
typedef struct {
    uint64_t wakeups;
    uint64_t attempts;
} keel_link_counters_t;
void keel_link_test_counters(const keel_link_t *l, keel_link_counters_t *out);
#endif /* KEEL_TEST_HOOKS: the test profile only */

#endif
