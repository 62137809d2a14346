/*
 * The provisions of EN 303 645 V3.1.3 as test groups (after TS 103 701):
 * status, the feature a conditional provision depends on, a conceptual check
 * (what the ICS/IXIT must show) and the functional test units that bear on
 * it. Titles and checks are our own words; the standard's text is not here.
 *
 * Statuses and the split of V2.1.1 provisions follow the V3.1.3 conformance
 * table as transcribed in /work/shared/PROVISIONS.md; conditions are our
 * reading of each provision's "where ..." clause (docs/assess.md).
 */
#include "keel/assess.h"

#include <string.h>

static const keel_assess_feature_t features[] = {
    {"user_interface", "the device has a user interface (display, buttons, web UI or companion app)"},
    {"authentication", "the device authenticates users or other machines"},
    {"passwords", "passwords authenticate users or machines to the device"},
    {"remote_access", "other hosts can reach a network service of the device"},
    {"updates", "the device's software can be updated"},
    {"constrained", "the device is constrained and its software cannot be updated"},
    {"debug_interface", "the device has a physical debug interface (UART, JTAG, SWD, ...)"},
    {"personal_data", "the device or its services process personal data"},
    {"sensitive_data", "the device communicates sensitive personal data"},
    {"sensing", "the device has external sensing capabilities (sensors, microphone, camera)"},
    {"consent", "personal data is processed on the basis of consent"},
    {"telemetry", "the device sends telemetry"},
    {"cloud", "the device uses associated services (a cloud)"},
    {"hardware_identity", "a unique identity fixed in the device is used for security"},
};

static const keel_assess_unit_t units[] = {
    {"portscan", "TCP connect scan of every port, compared with the declared interfaces"},
    {"udp", "UDP probes of declared services and common IoT ones (SSDP, mDNS, CoAP, SNMP)"},
    {"tls", "TLS versions, cipher suites, key exchange and certificate of every TLS port"},
    {"http.auth_sweep", "unauthenticated requests to declared routes and common admin paths"},
    {"http.default_creds", "common default user/password pairs against each login"},
    {"http.bruteforce", "achievable password-guessing rate within a bounded budget"},
    {"http.password_change", "change the password with the lab credentials; old fails, new works"},
    {"http.disclosure", "versions, banners and internals in headers and error pages"},
    {"http.debug", "debug and diagnostic endpoints reachable over the network"},
    {"http.input", "malformed, oversized and injection inputs; responsiveness after each burst"},
    {"mqtt", "anonymous connect, plaintext port, TLS requirements, reading others' topics"},
    {"telnet_ssh_ftp", "banners and default credentials of telnet, SSH and FTP"},
    {"update", "tampered, downgraded and wrongly signed bundles must be refused"},
    {"publication", "security.txt, disclosure policy and support period fetched and judged"},
    {"passwords", "batch analysis of factory label passwords"},
    {"firmware", "static scan of the firmware for keys, hashes, default credentials, debug services"},
};

#define U(...) {__VA_ARGS__, NULL}
#define NO_UNITS {NULL}

static const keel_assess_provision_t catalogue[] = {
    {"5.0-1", "4-1", 'M', NULL, "Every recommendation not met is justified",
     "The ICS states support for every provision and justifies each recommended one the product does not "
     "meet, and names the missing feature for each conditional one that does not apply.",
     NO_UNITS},
    {"5.1-1", NULL, 'M', "passwords", "No universal default password",
     "The IXIT shows, for every password outside the factory-default state, that it is unique per device or "
     "chosen by the user, and how it is set.",
     U("http.default_creds", "telnet_ssh_ftp", "mqtt", "firmware")},
    {"5.1-2", NULL, 'M', "passwords", "Pre-installed unique passwords resist automated attacks",
     "The IXIT describes how per-device passwords are generated: from a random source, with enough entropy, "
     "and unrelated to serial number, MAC address or other public data.",
     U("passwords")},
    {"5.1-2A", NULL, 'R', "authentication", "Machines do not authenticate to each other with passwords",
     "The IXIT shows that machine-to-machine authentication uses keys or certificates.", NO_UNITS},
    {"5.1-3", NULL, 'M', "authentication", "Authentication uses best-practice cryptography",
     "The IXIT lists each authentication mechanism with its algorithms and how credentials are protected "
     "in storage and in transit.",
     U("tls")},
    {"5.1-4", NULL, 'M', "authentication", "The authentication value can be changed simply",
     "The IXIT says where and how a user changes each authentication value.", U("http.password_change")},
    {"5.1-5", NULL, 'M', "remote_access", "Brute force over the network is impracticable",
     "The IXIT describes, for each network authentication mechanism, the rate limit, backoff or lockout and "
     "the guess rate it bounds.",
     U("http.bruteforce")},
    {"5.2-1", NULL, 'M', NULL, "A vulnerability disclosure policy is published",
     "The IXIT gives where the disclosure policy and the security contact are published.", U("publication")},
    {"5.2-2", NULL, 'R', NULL, "Reported vulnerabilities are acted on in time",
     "The ICS describes how reports are handled and the target times.", NO_UNITS},
    {"5.2-3", NULL, 'R', NULL, "Vulnerabilities are monitored during the support period",
     "The ICS describes how components are tracked and advisories watched.", NO_UNITS},
    {"5.3-1", NULL, 'R', NULL, "All software can be updated securely",
     "The IXIT shows that the update mechanism covers every software component, or names those it does not.",
     NO_UNITS},
    {"5.3-2", NULL, 'M', "updates", "Updates go through a secure mechanism",
     "The IXIT describes how updates are delivered, authenticated, and protected against tampering, "
     "downgrade and interruption.",
     U("update")},
    {"5.3-3", NULL, 'M', "updates", "Updates are simple to apply",
     "The IXIT gives the steps a user takes to update (none when updates are automatic).", U("update")},
    {"5.3-4A", "5.3-4", 'R', "updates", "Updates can be applied automatically",
     "The IXIT says whether and how updates install without the user.", NO_UNITS},
    {"5.3-4B", "5.3-4", 'R', "updates", "Automatic updates are on from initialization",
     "The IXIT gives the default update policy of a new device.", NO_UNITS},
    {"5.3-5", NULL, 'R', "updates", "The device looks for updates at start and periodically",
     "The IXIT says when the device checks for updates.", NO_UNITS},
    {"5.3-6A", "5.3-6", 'R', "updates", "The user can switch automatic updates on or off and postpone them",
     "The IXIT says where the user controls automatic updates.", NO_UNITS},
    {"5.3-6B", "5.3-6", 'R', "updates", "The user can switch update notifications on or off",
     "The IXIT says where the user controls update notifications.", NO_UNITS},
    {"5.3-7", NULL, 'M', "updates", "Update security uses best-practice cryptography",
     "The IXIT names the signature and digest algorithms of updates and where the verifying keys live.",
     U("update")},
    {"5.3-8", NULL, 'M', "updates", "Security updates are timely",
     "The ICS describes how quickly security fixes reach devices.", NO_UNITS},
    {"5.3-9", NULL, 'R', "updates", "The device checks updates for authenticity and integrity",
     "The IXIT describes the checks the device makes before it installs an update.", U("update")},
    {"5.3-10", NULL, 'M', "updates", "Network updates are verified through a trust relationship",
     "The IXIT names the trust anchor updates chain to and how the download channel is authenticated.",
     U("update")},
    {"5.3-11", NULL, 'R', "updates", "The user is told that a security update is needed and why",
     "The IXIT says how the user learns of a pending security update and the risk it addresses.", NO_UNITS},
    {"5.3-12", NULL, 'R', "updates", "The user is warned when an update disrupts basic functions",
     "The IXIT says how a disruptive update is announced.", NO_UNITS},
    {"5.3-13", NULL, 'M', NULL, "The support period is published clearly",
     "The IXIT gives the end of the support period and where it is published.", U("publication")},
    {"5.3-14", NULL, 'R', "constrained", "A device that cannot be updated documents why and its replacement",
     "The ICS gives the rationale and the replacement plan for a non-updateable device.", NO_UNITS},
    {"5.3-15A", "5.3-15", 'R', "constrained", "A device that cannot be updated can be isolated",
     "The IXIT describes how a non-updateable device is isolated.", NO_UNITS},
    {"5.3-15B", "5.3-15", 'R', "constrained", "The hardware of a device that cannot be updated can be replaced",
     "The IXIT describes how the hardware of a non-updateable device is replaced.", NO_UNITS},
    {"5.3-16", NULL, 'M', NULL, "The model designation is recognizable",
     "The IXIT gives the model designation and where the user reads it (label, device information).",
     NO_UNITS},
    {"5.4-1", NULL, 'M', NULL, "Sensitive security parameters are stored securely",
     "The IXIT lists the sensitive security parameters, where each is stored and how it is protected.",
     U("firmware")},
    {"5.4-2", NULL, 'M', "hardware_identity", "A device identity fixed in hardware resists tampering",
     "The IXIT says how the fixed identity is protected against physical, electrical and software tampering.",
     NO_UNITS},
    {"5.4-3", NULL, 'M', NULL, "No hard-coded critical security parameter in the software",
     "The IXIT shows that no critical security parameter is part of the software image.", U("firmware")},
    {"5.4-4", NULL, 'M', NULL, "Critical parameters for updates and services are unique per device",
     "The IXIT shows that the critical parameters used for updates and for the cloud are per device, or are "
     "public keys only.",
     U("firmware")},
    {"5.5-1", NULL, 'M', NULL, "Communication uses best-practice cryptography",
     "The IXIT lists every interface with its protection; each remote one is encrypted and authenticated.",
     U("tls", "mqtt", "telnet_ssh_ftp")},
    {"5.5-2", NULL, 'R', NULL, "Security implementations are reviewed",
     "The ICS names the security libraries and how they were reviewed or evaluated.", NO_UNITS},
    {"5.5-3", NULL, 'R', NULL, "Cryptographic algorithms can be updated",
     "The IXIT says how algorithms and trust anchors are replaced.", NO_UNITS},
    {"5.5-4", NULL, 'R', "remote_access", "Network functions are available only after authentication",
     "The IXIT lists which functions answer without authentication and why.",
     U("http.auth_sweep", "mqtt", "telnet_ssh_ftp")},
    {"5.5-5", NULL, 'M', "remote_access", "Security-relevant settings change only after authentication",
     "The IXIT lists the security-relevant settings reachable over the network and the authentication each "
     "needs.",
     U("http.auth_sweep")},
    {"5.5-6", NULL, 'R', NULL, "Critical security parameters are encrypted in transit",
     "The IXIT shows that every interface carrying critical parameters is encrypted.", U("tls")},
    {"5.5-7", NULL, 'M', NULL, "Critical parameters stay confidential over remote interfaces",
     "The IXIT shows how critical parameters are protected on every remote interface.", U("tls", "mqtt")},
    {"5.5-8", NULL, 'M', NULL, "Critical security parameters are managed securely",
     "The IXIT describes the life cycle of each critical parameter: creation, storage, rotation, revocation.",
     NO_UNITS},
    {"5.6-1", NULL, 'M', NULL, "Unused network and logical interfaces are disabled",
     "The IXIT lists every interface and the ports expected open; nothing else answers.",
     U("portscan", "udp")},
    {"5.6-2", NULL, 'M', NULL, "Little is disclosed without authentication",
     "The IXIT lists what each interface discloses before authentication.",
     U("http.disclosure", "telnet_ssh_ftp")},
    {"5.6-3", NULL, 'R', NULL, "Physical interfaces are not needlessly exposed",
     "The IXIT lists the physical interfaces and why each is exposed.", NO_UNITS},
    {"5.6-4A", "5.6-4", 'M', NULL, "Debug interfaces are disabled in software",
     "The IXIT lists every debug interface and how it is disabled in production software.",
     U("http.debug", "firmware")},
    {"5.6-4B", "5.6-4", 'R', "debug_interface", "Physical debug interfaces are protected",
     "The IXIT describes how each physical debug port is protected.", NO_UNITS},
    {"5.6-5", NULL, 'R', NULL, "Only the software services needed are enabled",
     "The IXIT lists the services the device runs and why each is needed.", U("portscan", "udp")},
    {"5.6-6", NULL, 'R', NULL, "Code is limited to what the device needs",
     "The ICS describes how unused code is left out.", NO_UNITS},
    {"5.6-7", NULL, 'R', NULL, "Software runs with least privilege",
     "The IXIT describes the privileges each process runs with.", NO_UNITS},
    {"5.6-8", NULL, 'R', NULL, "Hardware-level access control for memory",
     "The ICS says which hardware memory protection the platform uses.", NO_UNITS},
    {"5.6-9", NULL, 'R', NULL, "Software is developed by a secure process",
     "The ICS describes the development process (review, testing, analysis).", NO_UNITS},
    {"5.7-1", NULL, 'R', NULL, "Software integrity is verified at boot",
     "The IXIT describes what is verified at boot and against which key.", NO_UNITS},
    {"5.7-2", NULL, 'R', NULL, "Tampering raises an alert and limits network use",
     "The IXIT describes what happens when the integrity check fails.", NO_UNITS},
    {"5.8-1", NULL, 'R', "personal_data", "Personal data is confidential in transit",
     "The IXIT shows that every interface carrying personal data is encrypted.", U("tls")},
    {"5.8-2", NULL, 'M', "sensitive_data", "Sensitive personal data is protected in transit",
     "The IXIT shows how sensitive personal data is protected on every interface carrying it.",
     U("tls", "mqtt")},
    {"5.8-3", NULL, 'M', "sensing", "External sensing capabilities are documented",
     "The IXIT's data declaration lists every sensing capability.", NO_UNITS},
    {"5.9-1", NULL, 'R', NULL, "Resilient to network and power outages",
     "The IXIT describes how the device keeps its data and function through outages.", NO_UNITS},
    {"5.9-2", NULL, 'R', NULL, "Works locally when offline and recovers cleanly",
     "The IXIT describes what keeps working offline and how state survives a power loss.", NO_UNITS},
    {"5.9-3", NULL, 'R', NULL, "Connects to networks in an orderly, stable way",
     "The IXIT describes the reconnection and backoff behaviour.", NO_UNITS},
    {"5.10-1", NULL, 'R', "telemetry", "Telemetry is examined for security anomalies",
     "The ICS describes how telemetry is analysed for anomalies.", NO_UNITS},
    {"5.11-1", NULL, 'M', NULL, "User data on the device can be erased simply",
     "The IXIT gives the factory reset procedure and what it erases.", NO_UNITS},
    {"5.11-2", NULL, 'R', "cloud", "Personal data in associated services can be removed",
     "The IXIT says how a user removes their data from the services.", NO_UNITS},
    {"5.11-3", NULL, 'R', NULL, "The user is told clearly how to delete their data",
     "The IXIT says where the deletion instructions are.", NO_UNITS},
    {"5.11-4", NULL, 'R', NULL, "The user gets confirmation that data was deleted",
     "The IXIT says how deletion is confirmed to the user.", NO_UNITS},
    {"5.12-1", NULL, 'R', NULL, "Setup and maintenance take few steps and follow good practice",
     "The IXIT describes the setup steps and the secure defaults.", NO_UNITS},
    {"5.12-2", NULL, 'R', NULL, "Guidance for a secure setup",
     "The IXIT says where the secure-setup guidance is.", NO_UNITS},
    {"5.12-3", NULL, 'R', NULL, "Guidance to check the setup is secure",
     "The IXIT says how a user checks that the setup is secure.", NO_UNITS},
    {"5.13-1A", "5.13-1", 'M', "user_interface", "Input through user interfaces is validated",
     "The IXIT describes how input from user interfaces is validated.", U("http.input")},
    {"5.13-1B", "5.13-1", 'M', NULL, "Input through APIs and networks is validated",
     "The IXIT describes how input from APIs and networks is validated.", U("http.input", "mqtt")},
    {"6-1", NULL, 'M', "personal_data", "Users are told what personal data is processed, by whom and why",
     "The IXIT's data declaration names each category, purpose, recipient and legal basis.", NO_UNITS},
    {"6-2", NULL, 'M', "consent", "Consent is obtained validly",
     "The IXIT describes how consent is asked for and recorded, per purpose.", NO_UNITS},
    {"6-3A", "6-3", 'M', "consent", "Consent can be withdrawn at any time",
     "The IXIT says where and how consent is withdrawn and what stops.", NO_UNITS},
    {"6-3B", "6-3", 'M', "consent", "Records of consent are kept",
     "The IXIT says how consent and its withdrawal are recorded.", NO_UNITS},
    {"6-4", NULL, 'R', "telemetry", "Telemetry is limited to what is needed",
     "The IXIT's data declaration gives every telemetry field and why it is needed.", NO_UNITS},
    {"6-5", NULL, 'M', "telemetry", "Users are told what telemetry is collected and why",
     "The IXIT says where users read the telemetry declaration.", NO_UNITS},
    {"6-6", NULL, 'M', "personal_data", "Personal data is minimised, kept no longer than needed, then disposed of",
     "The IXIT's data declaration gives a retention period for every category and how it is enforced.",
     NO_UNITS},
    {"6-7", NULL, 'R', "personal_data", "Personal data is aggregated where possible",
     "The ICS says which personal data is aggregated and when.", NO_UNITS},
    {"6-8", NULL, 'R', "personal_data", "Personal data is anonymised where possible",
     "The ICS says which personal data is anonymised or pseudonymised.", NO_UNITS},
};

_Static_assert(sizeof catalogue / sizeof catalogue[0] == KEEL_ASSESS_PROVISIONS,
               "EN 303 645 V3.1.3 has 78 provisions");

size_t keel_assess_catalogue_count(void)
{
    return sizeof catalogue / sizeof catalogue[0];
}

const keel_assess_provision_t *keel_assess_catalogue_at(size_t i)
{
    return i < keel_assess_catalogue_count() ? &catalogue[i] : NULL;
}

const keel_assess_provision_t *keel_assess_catalogue_find(const char *id)
{
    if (id == NULL)
        return NULL;
    const keel_assess_provision_t *by_v2 = NULL;
    size_t v2_hits = 0;
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        if (strcmp(catalogue[i].id, id) == 0)
            return &catalogue[i];
        if (catalogue[i].v2_id != NULL && strcmp(catalogue[i].v2_id, id) == 0) {
            by_v2 = &catalogue[i];
            v2_hits++;
        }
    }
    /* A V2.1.1 provision split in two (5.6-4 -> 5.6-4A/B) names neither half. */
    return v2_hits == 1 ? by_v2 : NULL;
}

size_t keel_assess_feature_count(void)
{
    return sizeof features / sizeof features[0];
}

const keel_assess_feature_t *keel_assess_feature_at(size_t i)
{
    return i < keel_assess_feature_count() ? &features[i] : NULL;
}

const keel_assess_feature_t *keel_assess_feature_find(const char *id)
{
    for (size_t i = 0; id != NULL && i < keel_assess_feature_count(); i++)
        if (strcmp(features[i].id, id) == 0)
            return &features[i];
    return NULL;
}

size_t keel_assess_unit_count(void)
{
    return sizeof units / sizeof units[0];
}

const keel_assess_unit_t *keel_assess_unit_at(size_t i)
{
    return i < keel_assess_unit_count() ? &units[i] : NULL;
}

const keel_assess_unit_t *keel_assess_unit_find(const char *id)
{
    for (size_t i = 0; id != NULL && i < keel_assess_unit_count(); i++)
        if (strcmp(units[i].id, id) == 0)
            return &units[i];
    return NULL;
}
