/*
 * keeld's online and offline half: the outbox, the data declaration, the
 * cloud link and the product app's socket, wired together on keeld's loop.
 *
 *   app --(ipc: publish)--> declaration check --> local record --> outbox --> link --> broker
 *   broker --(cmd/#)--> link --> keel/... commands (erase receipt) | the app (ipc: listen)
 *
 * The local API and the app keep working whatever the link does (5.9-2):
 * nothing on the app's path waits for the network.
 */
#ifndef KEELD_CLOUD_H
#define KEELD_CLOUD_H

#include "keel/auth.h"
#include "keel/config.h"
#include "keel/ipc.h"
#include "keel/keystore.h"
#include "keel/link.h"
#include "keel/outbox.h"
#include "keel/privacy.h"
#include "keel/slots.h"
#include "keel/vault.h"
#include "updater.h"

#include <jansson.h>

struct event_base;

/* The product state kept for the app (vault secret "app.state"). */
#define KEELD_APP_STATE_MAX (4u * 1024u)

typedef struct keeld_cloud keeld_cloud_t;

/* Opens the outbox and the privacy state, starts the link (when [link]
 * broker is set) and the app socket. `cfg`, `ks`, `vault` and `base` must
 * outlive it. */
keel_status_t keeld_cloud_start(struct event_base *base, const keel_config_t *cfg, keel_keystore_t *ks,
                                keel_vault_t *vault, keeld_cloud_t **out) KEEL_MUST_CHECK;
/* Values the schema alone cannot check ([link] broker, [ipc] user/group). */
keel_status_t keeld_cloud_config_check(const keel_config_t *cfg) KEEL_MUST_CHECK;
/* SIGHUP: outbox limits, the retention interval and the auth-failures window. */
void keeld_cloud_reload(keeld_cloud_t *c, const keel_config_t *cfg);
/* Queues a security alert (e.g. the tamper alert at start). */
void keeld_cloud_alert(keeld_cloud_t *c, const char *type, const char *detail);
/* Queues an event of keeld's own (the updater's progress) and kicks the
 * link: a keeld_updater_emit_fn, arg = the cloud. */
void keeld_cloud_event(void *arg, const json_t *event);
/* The fleet updater that gets keel/update and keel/check (NULL: no
 * [update] server; keel/update is then answered with a failed event). */
void keeld_cloud_set_updater(keeld_cloud_t *c, keeld_updater_t *u);
/* The boot event (docs/fleet-protocol.md): the running slot's version and
 * security version, the slot and the model, after the slot is confirmed.
 * Like auth-failures, only queued when a cloud link is configured. */
void keeld_cloud_boot(keeld_cloud_t *c, const keel_bootstate_t *bs);
/* Failed logins on the local API: at the end of every [auth] report_window
 * that saw some, an auth-failures event with their count. */
keel_status_t keeld_cloud_watch_auth(keeld_cloud_t *c, keel_auth_t *auth) KEEL_MUST_CHECK;
/* Graceful stop: DISCONNECT the link, close the app socket. */
void keeld_cloud_stop(keeld_cloud_t *c);
void keeld_cloud_free(keeld_cloud_t *c);

keel_privacy_t *keeld_cloud_privacy(keeld_cloud_t *c);
keel_outbox_t *keeld_cloud_outbox(keeld_cloud_t *c);
keel_link_t *keeld_cloud_link(keeld_cloud_t *c);
/* keel_api_config_t's after_reset and app_state (arg = the cloud). */
keel_status_t keeld_cloud_after_reset(void *arg, json_t **receipt);
keel_status_t keeld_cloud_app_state(void *arg, json_t **state);

#endif
