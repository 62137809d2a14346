/*
 * The built-in list of common IoT default credentials, shared by every probe
 * that tries them (HTTP logins, telnet, SSH, FTP, MQTT) and by the firmware
 * scan's hash check. Sources: the pairs of the Mirai botnet's public source
 * and vendors' documented factory defaults. Most likely first: a probe that is
 * throttled after a few tries has tried the pairs that matter.
 */
#include "keel/assess_services.h"

static const keel_cred_pair_t pairs[] = {
    {"admin", "admin"},      {"root", "root"},        {"admin", "password"},  {"admin", "1234"},
    {"root", "admin"},       {"admin", ""},           {"root", ""},           {"admin", "12345"},
    {"root", "password"},    {"root", "12345"},       {"root", "123456"},     {"admin", "123456"},
    {"user", "user"},        {"guest", "guest"},      {"support", "support"}, {"root", "default"},
    {"root", "toor"},        {"root", "1234"},        {"root", "xc3511"},     {"root", "vizxv"},
    {"admin", "admin1234"},  {"admin", "default"},    {"admin", "changeme"},  {"ubnt", "ubnt"},
    {"pi", "raspberry"},     {"root", "54321"},       {"root", "888888"},     {"root", "666666"},
    {"root", "1111"},        {"root", "00000000"},    {"root", "xmhdipc"},    {"root", "juantech"},
    {"root", "hi3518"},      {"root", "jvbzd"},       {"root", "anko"},       {"root", "zlxx."},
    {"root", "klv123"},      {"root", "klv1234"},     {"root", "Zte521"},     {"root", "ikwb"},
    {"root", "dreambox"},    {"root", "realtek"},     {"root", "system"},     {"root", "user"},
    {"root", "pass"},        {"root", "7ujMko0vizxv"}, {"root", "7ujMko0admin"}, {"root", "changeme"},
    {"root", "calvin"},      {"root", "ubnt"},        {"root", "openwrt"},    {"admin", "54321"},
    {"admin", "1111"},       {"admin", "1111111"},    {"admin", "smcadmin"},  {"admin", "pass"},
    {"admin", "meinsm"},     {"admin", "7ujMko0admin"}, {"admin", "epicrouter"}, {"administrator", "1234"},
    {"Administrator", "admin"}, {"service", "service"}, {"supervisor", "supervisor"}, {"guest", "12345"},
    {"tech", "tech"},        {"cisco", "cisco"},      {"default", "default"}, {"666666", "666666"},
    {"888888", "888888"},    {"admin1", "password"},
};

const keel_cred_pair_t *keel_assess_default_creds(size_t *n)
{
    *n = sizeof pairs / sizeof pairs[0];
    return pairs;
}
