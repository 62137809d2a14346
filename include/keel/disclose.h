/*
 * keel/disclose.h - the public vulnerability disclosure of a product (EN 303
 * 645 5.2-1): a security.txt (RFC 9116) and a disclosure policy page (HTML,
 * with a Markdown twin) from a template compiled into the program. What
 * `keel disclose` writes; `keel assess probe publication` judges the same
 * files (src/assess/publication.c). See docs/internals/disclose.md.
 */
#ifndef KEEL_DISCLOSE_H
#define KEEL_DISCLOSE_H

#include "keel/base.h"

#include <time.h>

#define KEEL_DISCLOSE_CONTACTS_MAX 8u  /* Contact fields */
#define KEEL_DISCLOSE_URI_MAX 512u     /* bytes of one URI */
#define KEEL_DISCLOSE_NAME_MAX 128u    /* bytes of the vendor's or the product's name */
#define KEEL_DISCLOSE_LANGS_MAX 128u   /* bytes of the Preferred-Languages list */
#define KEEL_DISCLOSE_EXPIRES_DAYS 366u /* Expires at most this many days ahead */
#define KEEL_DISCLOSE_DOC_MAX (64u * 1024u) /* bytes of one written document */

/* The defaults of the timeline; 0 in the options picks them. */
#define KEEL_DISCLOSE_ACK_DAYS 5u     /* working days to acknowledge a report */
#define KEEL_DISCLOSE_UPDATE_DAYS 14u /* days between status updates */
#define KEEL_DISCLOSE_FIX_DAYS 90u    /* days to a fix and coordinated disclosure */

typedef struct {
    const char *contacts[KEEL_DISCLOSE_CONTACTS_MAX]; /* mailto:, https:// or tel: URIs */
    size_t n_contacts;                 /* 1..KEEL_DISCLOSE_CONTACTS_MAX */
    const char *policy_url;            /* https:// URL where the policy page is published */
    const char *expires;               /* "+DAYS", "YYYY-MM-DD" (00:00 UTC) or an RFC 3339 date-time */
    const char *encryption;            /* https://, openpgp4fpr: or dns: URI; NULL = none */
    const char *acknowledgments;       /* https:// URL; NULL = none */
    const char *preferred_languages;   /* "en, de": language tags; NULL = none */
    const char *canonical;             /* https:// URL of the security.txt itself; NULL = none */
    const char *hiring;                /* https:// URL; NULL = none */
    const char *vendor;                /* the manufacturer's name (any UTF-8 text); NULL = "we" */
    const char *product;               /* the product's name; NULL = "our products" */
    unsigned ack_days;                 /* 1..30 working days; 0 = KEEL_DISCLOSE_ACK_DAYS */
    unsigned update_days;              /* 1..90 days; 0 = KEEL_DISCLOSE_UPDATE_DAYS */
    unsigned fix_days;                 /* 7..365 days; 0 = KEEL_DISCLOSE_FIX_DAYS */
    time_t now;                        /* 0 = time(NULL); tests pin it */
} keel_disclose_opts_t;

/*
 * Checks every option: at least one Contact and at most
 * KEEL_DISCLOSE_CONTACTS_MAX, each a mailto: (with an address), https:// (with
 * a host) or tel: (digits) URI; web URIs https:// only, without user info;
 * URIs printable ASCII without spaces or <>"'\^`{|}; the Canonical URL ends in
 * "/security.txt"; names valid UTF-8 without control characters; the days in
 * their ranges; Expires after now and at most KEEL_DISCLOSE_EXPIRES_DAYS ahead.
 * The Expires instant (seconds since the epoch, UTC) into *expires when not
 * NULL. KEEL_ERR_ARG with a message naming the option for anything else.
 */
keel_status_t keel_disclose_check(const keel_disclose_opts_t *o, long long *expires) KEEL_MUST_CHECK;

/*
 * Renders the documents into out (appended; the caller inits it with a cap of
 * at least KEEL_DISCLOSE_DOC_MAX and frees it). Each checks the options first
 * (KEEL_ERR_ARG as keel_disclose_check); KEEL_ERR_TOO_LARGE past the cap,
 * KEEL_ERR_CRYPTO when the stylesheet's hash fails.
 *  - security.txt: a comment naming the product, then Contact (in the order
 *    given), Expires ("YYYY-MM-DDTHH:MM:SSZ"), Encryption, Acknowledgments,
 *    Preferred-Languages, Canonical, Policy, Hiring; LF line ends, no other
 *    field.
 *  - the policy page: scope, how to report and what to send, the timeline,
 *    safe harbour, recognition. Every given string is HTML-escaped; no script,
 *    no external resource, a CSP that allows only its own stylesheet (by
 *    hash). Elements a test looks for carry data-testid.
 *  - the Markdown twin: the same text; names escaped for CommonMark, URIs as
 *    autolinks.
 */
keel_status_t keel_disclose_security_txt(const keel_disclose_opts_t *o, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_disclose_policy_html(const keel_disclose_opts_t *o, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_disclose_policy_md(const keel_disclose_opts_t *o, keel_buf_t *out) KEEL_MUST_CHECK;

/*
 * Renders the three documents and writes them into dir (made 0755 when
 * missing; its parent must exist) as security.txt, disclosure-policy.html and
 * disclosure-policy.md, mode 0644, each atomically (temp file, fsync, rename).
 * Nothing is written when a document cannot be rendered. KEEL_ERR_ARG for bad
 * options, KEEL_ERR_IO when a file cannot be written.
 */
keel_status_t keel_disclose_write(const keel_disclose_opts_t *o, const char *dir) KEEL_MUST_CHECK;

#endif
