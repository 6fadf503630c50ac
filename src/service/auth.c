/*
 * service/auth.c — who is calling: the classic SAS token of the
 * Authorization header, checked against the hub's shared access policies.
 *
 * Order of checks, each failure being 401 IotHubUnauthorizedAccess with a
 * reason that tells the caller what to fix but nothing about keys:
 * header present, token well-formed (util/sas.h), policy named (skn) and
 * known, signature valid under the primary or the secondary key, not
 * expired (wall clock, whole seconds: a token is valid while now < se),
 * resource covers the request: sr is the configured host name, optionally
 * followed by a path that must be a prefix, segment by segment, of the
 * request's (percent-decoded) path. "{host}" and "{host}/" cover every
 * route; "{host}/devices/x" covers /devices/x and /devices/x/... only, so
 * a token scoped to one device cannot be used on another, nor on hub-wide
 * routes (IoT Hub: sr is "the URI prefix, by segment, of the endpoints
 * that can be accessed with this token"). Comparison is case-insensitive,
 * as IoT Hub signs the lower-cased URI; the price is that a token scoped
 * to "devices/abc" also covers a device "ABC". A token that passes but
 * whose policy lacks a right the route needs gets 403 IotHubUnauthorized.
 *
 * The policy is copied out of the registry when a signature is checked;
 * keys never leave this file.
 *
 * A connection remembers the last token whose signature checked out
 * (auth_memo, in its http_conn): back ends send one token with every
 * request of a keep-alive connection, and its HMAC was the largest single
 * item of a C2D send's CPU (docs/PERFORMANCE.md). Only the signature and
 * the policy lookup are skipped; expiry, resource and rights are checked on
 * every request. The memo is sound because policies and their keys cannot
 * change while the hub runs (registry.c: read-only after open); an API that
 * changed them would have to clear every connection's memo.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "service/internal.h"
#include "util/crypto.h"
#include "util/sas.h"
#include "util/time.h"

/* Whether sr ("{host}", "{host}/" or "{host}/{path}") covers the request:
 * every segment of {path} equals the request's segment at the same place.
 * Assumes the router has split and decoded the request path already. */
static bool resource_covers(const char *resource, const char *host, const http_request *req)
{
    size_t hlen = strlen(host);
    if (strncasecmp(resource, host, hlen) != 0)
        return false;
    const char *rest = resource + hlen;
    if (*rest == '\0')
        return true;
    if (*rest++ != '/')
        return false;
    for (size_t i = 0; *rest; i++) {
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
        if (i >= req->segment_count || strlen(req->segments[i]) != n ||
            strncasecmp(rest, req->segments[i], n) != 0)
            return false; /* also an empty segment ("//"): request segments never are */
        rest += n + (slash ? 1 : 0);
    }
    return true;
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

void auth_memo_clear(auth_memo *m)
{
    free(m->header);
    memset(m, 0, sizeof *m);
}

/* Whether m holds exactly this header. The comparison takes the same time
 * wherever the texts differ: a proxy may carry several callers' requests
 * over one connection, and none may learn another's token by timing. */
static bool memo_holds(const auth_memo *m, const char *header, size_t len)
{
    return m->header && m->header_len == len && crypto_equal(m->header, header, len);
}

/* Sets the request's policy name and rights. No snprintf: this runs on
 * every request. */
static void grant(http_request *req, const char *policy, unsigned rights)
{
    size_t n = strnlen(policy, sizeof req->policy - 1);
    memcpy(req->policy, policy, n);
    req->policy[n] = '\0';
    req->rights = rights;
}

/* Remembers a token whose signature was just verified and what it granted
 * req. Out of memory it remembers nothing, which only costs the next
 * request its HMAC. */
static void memo_store(auth_memo *m, const char *header, size_t len, const sas_token *tok,
                       const http_request *req)
{
    _Static_assert(sizeof m->policy == sizeof req->policy, "policy names fit both");
    auth_memo_clear(m);
    size_t rlen = strlen(tok->resource);
    char *block = malloc(len + 1 + rlen + 1);
    if (!block)
        return;
    memcpy(block, header, len);
    block[len] = '\0';
    memcpy(block + len + 1, tok->resource, rlen + 1);
    m->header = block;
    m->header_len = len;
    m->resource = block + len + 1;
    m->expiry = tok->expiry;
    memcpy(m->policy, req->policy, sizeof m->policy);
    m->rights = req->rights;
}

/* What every request checks, remembered token or not. */
static const char *check_scope(const http_request *req, const char *resource, uint64_t expiry)
{
    if (expiry <= time_wall_ms() / 1000)
        return "token expired";
    if (!resource_covers(resource, req->svc->hostname, req))
        return "token resource does not cover this request";
    return NULL;
}

/* Returns NULL when the token is good, with its policy's name and rights in
 * req->policy and req->rights, else why. The signature is checked unless
 * the token is the one the connection remembers. */
static const char *check_token(http_request *req)
{
    const char *header = http_header_get(req, "Authorization");
    if (!header || !*header)
        return "missing Authorization header";
    size_t len = strlen(header);
    auth_memo *m = http_conn_auth_memo(req);
    if (memo_holds(m, header, len)) {
        grant(req, m->policy, m->rights);
        return check_scope(req, m->resource, m->expiry);
    }
    sas_token tok;
    hub_policy pol;
    char why[96];
    if (!sas_token_parse(header, len, &tok, why, sizeof why))
        return "malformed SharedAccessSignature";
    if (!tok.policy[0])
        return "token names no policy (skn)";
    if (!registry_policy_get(req->svc->registry, tok.policy, &pol))
        return "unknown policy";
    if (!sas_token_verify(&tok, pol.primary_key) &&
        !(pol.secondary_key[0] && sas_token_verify(&tok, pol.secondary_key)))
        return "invalid signature";
    grant(req, pol.name, pol.rights);
    memo_store(m, header, len, &tok, req);
    return check_scope(req, tok.resource, tok.expiry);
}

bool auth_check(http_request *req, unsigned needed)
{
    const char *why = check_token(req);
    if (why) {
        http_reply_error(req, 401, "IotHubUnauthorizedAccess", "Unauthorized: %s", why);
        return false;
    }
    if ((req->rights & needed) != needed) {
        char want[96];
        http_reply_error(req, 403, "IotHubUnauthorized",
                         "policy '%s' lacks a right this call needs (%s)", req->policy,
                         service_rights_text(needed, want, sizeof want));
        return false;
    }
    return true;
}
