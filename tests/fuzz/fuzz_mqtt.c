/*
 * Fuzz target: what an MQTT broker under test sends the probe of `keel
 * assess` (the codec of src/assess/mqtt_probe.c, keel/assess_services.h).
 * The first byte picks the protocol version (bit 0: 3.1.1 or 5); the rest
 * is the byte stream from the broker, cut into packets by the fixed-header
 * decoder as the probe's reader does. Each packet body goes through the
 * CONNACK, SUBACK and PUBLISH decoders whatever its type (the probe picks by
 * type; a hostile broker picks the bytes). What must hold: no decoder reads
 * past the bytes given (ASan), every length it returns lies inside them, and
 * what the probe keeps of a topic and a payload escapes to a JSON string.
 */
#include "fuzz.h"

#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include <stdlib.h>
#include <string.h>

#define SUBACK_CODES 8 /* what the probe gives the SUBACK decoder */
#define PAYLOAD_KEPT 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void must(int ok)
{
    if (!ok)
        abort();
}

/* A decoded variable byte integer re-encodes to the value it stood for. */
static void check_varint(const uint8_t *p, size_t n)
{
    size_t v = 0, used = 0;
    if (keel_mqtt_varint_decode(p, n, &v, &used) != KEEL_OK) {
        must(n >= 4);
        return;
    }
    if (used == 0) {
        must(n < 4);
        return;
    }
    must(used <= 4 && used <= n);
    uint8_t enc[4];
    size_t en = keel_mqtt_varint_encode(v, enc);
    must(en >= 1 && en <= used);
    size_t back = 0, bused = 0;
    must(keel_mqtt_varint_decode(enc, en, &back, &bused) == KEEL_OK && bused == en && back == v);
}

static void check_escape(const uint8_t *p, size_t n)
{
    json_t *s = keel_assess_escape(p, n);
    must(s != NULL && json_is_string(s));
    char *dump = json_dumps(s, JSON_ENCODE_ANY);
    must(dump != NULL);
    free(dump);
    json_decref(s);
}

static void check_body(int version, uint8_t first, const uint8_t *in, size_t n)
{
    /* a copy of exactly n bytes, so ASan sees a read past the body */
    uint8_t *body = malloc(n > 0 ? n : 1);
    must(body != NULL);
    if (n > 0)
        memcpy(body, in, n);
    int session = -1;
    unsigned code = 0;
    if (keel_mqtt_connack_decode(version, body, n, &session, &code) == KEEL_OK)
        must((session == 0 || session == 1) && code <= 0xff && n >= 2 && (version == KEEL_MQTT_V5 || n == 2));

    uint16_t id = 0;
    uint8_t codes[SUBACK_CODES];
    size_t nc = 0;
    if (keel_mqtt_suback_decode(version, body, n, &id, codes, sizeof codes, &nc) == KEEL_OK)
        must(nc >= 1 && nc <= sizeof codes && nc <= n - 2);

    keel_mqtt_publish_t m;
    /* the type nibble forced to PUBLISH, so the flags are what varies */
    uint8_t pf = (uint8_t)(0x30 | (first & 0x0f));
    if (keel_mqtt_publish_decode(version, pf, body, n, &m) == KEEL_OK) {
        must(m.qos <= 2 && m.topic_len >= 1);
        must(m.topic == body + 2 && m.topic_len <= n - 2);
        must(m.payload >= m.topic + m.topic_len && m.payload <= body + n);
        must((size_t)(m.payload - body) + m.payload_len == n);
        must(m.qos == 0 || m.payload >= m.topic + m.topic_len + 2);
        /* what topic_add and topics_json of the probe keep */
        check_escape(m.topic, m.topic_len);
        check_escape(m.payload, m.payload_len < PAYLOAD_KEPT ? m.payload_len : PAYLOAD_KEPT);
    }
    /* a PUBLISH header of any other type is refused */
    if ((first >> 4) != 3)
        must(keel_mqtt_publish_decode(version, first, body, n, &m) != KEEL_OK);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int version = (data[0] & 1) ? KEEL_MQTT_V5 : KEEL_MQTT_V311;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if (n > 0)
        check_varint(p, n);
    /* packets one after another, as next_packet of the probe reads them */
    while (n > 0) {
        uint8_t first = 0;
        size_t rem = 0, hl = 0;
        if (keel_mqtt_header_decode(p, n, &first, &rem, &hl) != KEEL_OK) {
            keel_error_clear();
            break;
        }
        if (hl == 0)
            break; /* the probe would read more */
        must(hl >= 2 && hl <= 5 && hl + rem <= KEEL_MQTT_PACKET_MAX && first == p[0]);
        if (rem > n - hl) {
            /* cut short: the decoders must not read past what arrived */
            check_body(version, first, p + hl, n - hl);
            break;
        }
        check_body(version, first, p + hl, rem);
        p += hl + rem;
        n -= hl + rem;
    }
    keel_error_clear();
    return 0;
}
