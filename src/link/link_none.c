/*
 * The cloud link's stand-in when Keel is built without it
 * (KEEL_WITH_CLOUD_LINK=OFF, docs/internals/build-profiles.md): no MQTT code
 * and no libmosquitto in the binary (5.6-6). A configuration that sets
 * link.broker is refused at start with a clear message; without a broker
 * keeld never starts a link, and the outbox keeps what would have gone.
 */
#include "keel/link.h"

keel_status_t keel_link_start(const keel_link_config_t *c, keel_link_t **out)
{
    (void)c;
    if (out != NULL)
        *out = NULL;
    return keel_errorf(KEEL_ERR_CONFIG,
                       "link.broker is set, but keeld was built without cloud link support "
                       "(KEEL_WITH_CLOUD_LINK=OFF): remove link.broker");
}

/* No link is ever started, so these are never handed one. */
void keel_link_kick(keel_link_t *l)
{
    (void)l;
}

keel_status_t keel_link_set_state(keel_link_t *l, const char *json, size_t len)
{
    (void)l, (void)json, (void)len;
    return keel_errorf(KEEL_ERR_UNSUPPORTED, "built without cloud link support");
}

void keel_link_status(const keel_link_t *l, keel_link_status_t *st)
{
    (void)l;
    if (st != NULL)
        *st = (keel_link_status_t){.state = KEEL_LINK_STOPPED};
}

void keel_link_stop(keel_link_t *l)
{
    (void)l;
}

void keel_link_free(keel_link_t *l)
{
    (void)l;
}
