/*
 * service/auth.c — who is calling: the classic SAS token of the
 * Authorization header, checked against the hub's shared access policies.
 *
 * Order of checks, each failure being 401 IotHubUnauthorizedAccess with a
 * reason that tells the caller what to fix but nothing about keys:
 * header present, token well-formed (util/sas.h), policy named (skn) and
 * known, signature valid under the primary or the secondary key, not
 * expired (wall clock, whole seconds: a token is valid while now < se),
 * resource is this hub: sr equals the configured host name
 * case-insensitively, optionally followed by a path ("{host}/devices/x"),
 * with at most one trailing slash. A token that passes but whose policy
 * lacks a right the route needs gets 403 IotHubUnauthorized.
 *
 * The policy is copied out of the registry per request (a short lock
 * there); keys never leave this file.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "service/internal.h"
#include "util/sas.h"
#include "util/time.h"

/* sr names this hub: "{host}", "{host}/", or "{host}/{path}". */
static bool resource_is_hub(const char *resource, const char *host)
{
    size_t hlen = strlen(host);
    if (strncasecmp(resource, host, hlen) != 0)
        return false;
    const char *rest = resource + hlen;
    return *rest == '\0' || *rest == '/';
}

const char *service_rights_text(unsigned rights, char *buf, size_t cap)
{
    static const struct { unsigned bit; const char *name; } names[] = {
        {HUB_RIGHT_REGISTRY_READ, "RegistryRead"},
        {HUB_RIGHT_REGISTRY_WRITE, "RegistryWrite"},
        {HUB_RIGHT_SERVICE_CONNECT, "ServiceConnect"},
        {HUB_RIGHT_DEVICE_CONNECT, "DeviceConnect"},
    };
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (rights & names[i].bit)
            w += (size_t)snprintf(buf + w, cap - w, "%s%s", w ? ", " : "", names[i].name);
    return buf;
}

/* Returns NULL when the token is good (policy copied to *pol), else why. */
static const char *check_token(http_request *req, hub_policy *pol)
{
    const char *header = http_header_get(req, "Authorization");
    if (!header || !*header)
        return "missing Authorization header";
    sas_token tok;
    char why[96];
    if (!sas_token_parse(header, strlen(header), &tok, why, sizeof why))
        return "malformed SharedAccessSignature";
    if (!tok.policy[0])
        return "token names no policy (skn)";
    if (!registry_policy_get(req->svc->registry, tok.policy, pol))
        return "unknown policy";
    if (!sas_token_verify(&tok, pol->primary_key) &&
        !(pol->secondary_key[0] && sas_token_verify(&tok, pol->secondary_key)))
        return "invalid signature";
    if (tok.expiry <= time_wall_ms() / 1000)
        return "token expired";
    if (!resource_is_hub(tok.resource, req->svc->hostname))
        return "token resource is not this hub";
    return NULL;
}

bool auth_check(http_request *req, unsigned needed)
{
    hub_policy pol;
    const char *why = check_token(req, &pol);
    if (why) {
        http_reply_error(req, 401, "IotHubUnauthorizedAccess", "Unauthorized: %s", why);
        return false;
    }
    if ((pol.rights & needed) != needed) {
        char want[96];
        http_reply_error(req, 403, "IotHubUnauthorized",
                         "policy '%s' lacks a right this call needs (%s)", pol.name,
                         service_rights_text(needed, want, sizeof want));
        return false;
    }
    snprintf(req->policy, sizeof req->policy, "%s", pol.name);
    req->rights = pol.rights;
    return true;
}
