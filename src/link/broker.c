/*
 * The cloud link's pure parts: broker addresses, server names and state
 * names. Built in every configuration (keel-fleetd parses its broker and
 * listen addresses with keel_link_split_broker), also when KEEL_WITH_CLOUD_LINK
 * is off and link_none.c stands in for link.c.
 */
#include "keel/link.h"

#include "link_internal.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

const char *keel_link_state_name(keel_link_state_t s)
{
    switch (s) {
    case KEEL_LINK_OFFLINE:
        return "offline";
    case KEEL_LINK_CONNECTING:
        return "connecting";
    case KEEL_LINK_ONLINE:
        return "online";
    case KEEL_LINK_STOPPED:
        return "stopped";
    }
    return "unknown";
}

static int host_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '.';
}

bool keel_link_name_is_ip(const char *name)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* A name the broker's certificate can be checked against: an address, or a
 * DNS name. An empty name would make X509_VERIFY_PARAM_set1_host clear the
 * check instead of setting it (any certificate of the service CA would do). */
bool keel_link_server_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > KEEL_LINK_HOST_MAX)
        return false;
    if (keel_link_name_is_ip(name))
        return true;
    for (size_t i = 0; i < n; i++)
        if (!host_char_ok(name[i]))
            return false;
    return name[0] != '-' && name[0] != '.';
}

keel_status_t keel_link_split_broker(const char *broker, char *host, size_t cap, int *port)
{
    if (broker == NULL || host == NULL || port == NULL || cap == 0)
        return keel_errorf(KEEL_ERR_ARG, "link.broker: missing");
    const char *colon, *h = broker;
    size_t hlen;
    bool v6 = broker[0] == '[';
    if (v6) {
        const char *end = strchr(broker, ']');
        if (end == NULL || end[1] != ':')
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" is not [address]:port", broker);
        h = broker + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(broker, ':');
        if (colon == NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" is not host:port", broker);
        hlen = (size_t)(colon - broker);
    }
    if (hlen == 0 || hlen >= cap || hlen > KEEL_LINK_HOST_MAX)
        return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" has no usable host", broker);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    if (v6) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1)
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" is not an IPv6 address", host);
    } else {
        for (size_t i = 0; i < hlen; i++)
            if (!host_char_ok(host[i]))
                return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" is not a host name or address", host);
        if (host[0] == '-' || host[0] == '.')
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" is not a host name or address", host);
    }
    const char *p = colon + 1;
    unsigned long v = 0;
    if (*p == '\0')
        return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" has no port", broker);
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > 65535)
            return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" has no valid port", broker);
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535)
        return keel_errorf(KEEL_ERR_CONFIG, "link.broker: \"%s\" has no valid port", broker);
    *port = (int)v;
    return KEEL_OK;
}
