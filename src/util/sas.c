/*
 * util/sas.c — see sas.h.
 *
 * Parsing keeps the resource exactly as it was sent (resource_raw) next to
 * its decoded form: the signature covers the encoded text, and encoders
 * differ on details such as "%2f" versus "%2F", so verifying against what
 * the client actually signed is the only way to accept every correct SDK.
 * The expiry is digits only (no sign, no spaces, no leading zeros, at most
 * 20 digits, no overflow): it is verified as the canonical decimal, so the
 * text must be exactly that to be the text that was signed.
 *
 * Keys are base64 text; HMAC keys are the decoded bytes, as IoT Hub does.
 * Decoded keys and intermediate digests are wiped before returning.
 */
#include "util/sas.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/crypto.h"

#define SAS_PREFIX "SharedAccessSignature"
#define SAS_KEY_MAX 256 /* decoded key bytes; real keys are 16..64 */

/* ---- parsing ------------------------------------------------------------- */

enum sas_field { F_SR, F_SIG, F_SE, F_SKN, F_OTHER };

static enum sas_field field_kind(const char *name, size_t len)
{
    if (len == 2 && memcmp(name, "sr", 2) == 0)
        return F_SR;
    if (len == 3 && memcmp(name, "sig", 3) == 0)
        return F_SIG;
    if (len == 2 && memcmp(name, "se", 2) == 0)
        return F_SE;
    if (len == 3 && memcmp(name, "skn", 3) == 0)
        return F_SKN;
    return F_OTHER;
}

static bool fail(char *err, size_t errlen, const char *why)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    return false;
}

/* "se": 1..20 decimal digits fitting in 64 bits, without leading zeros. */
static bool parse_expiry(const char *v, size_t len, uint64_t *out)
{
    if (len == 0 || len > 20 || (len > 1 && v[0] == '0'))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        unsigned d = (unsigned)(v[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* Stores one k=v pair into the token; `seen` is a bitmask of fields seen. */
static bool take_field(sas_token *t, unsigned *seen, const char *pair, size_t len, char *err,
                       size_t errlen)
{
    const char *eq = memchr(pair, '=', len);
    if (!eq || eq == pair)
        return fail(err, errlen, "malformed field (expected key=value)");
    size_t klen = (size_t)(eq - pair);
    const char *val = eq + 1;
    size_t vlen = len - klen - 1;
    enum sas_field kind = field_kind(pair, klen);
    if (kind == F_OTHER)
        return true; /* unknown fields are ignored */
    if (*seen & (1u << kind))
        return fail(err, errlen, "duplicate field");
    *seen |= 1u << kind;
    switch (kind) {
    case F_SR:
        if (vlen == 0 || vlen >= sizeof t->resource_raw)
            return fail(err, errlen, "sr empty or too long");
        memcpy(t->resource_raw, val, vlen);
        t->resource_raw[vlen] = '\0';
        if (!crypto_url_decode(val, vlen, false, t->resource, sizeof t->resource, NULL))
            return fail(err, errlen, "sr is not validly URL-encoded");
        return true;
    case F_SIG:
        if (vlen == 0 ||
            !crypto_url_decode(val, vlen, false, t->signature, sizeof t->signature, NULL))
            return fail(err, errlen, "sig empty, too long or not validly URL-encoded");
        return true;
    case F_SE:
        if (!parse_expiry(val, vlen, &t->expiry))
            return fail(err, errlen, "se is not an epoch time in seconds");
        return true;
    case F_SKN:
        if (!crypto_url_decode(val, vlen, false, t->policy, sizeof t->policy, NULL))
            return fail(err, errlen, "skn too long or not validly URL-encoded");
        return true;
    default:
        return true;
    }
}

bool sas_token_parse(const char *text, size_t len, sas_token *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t plen = strlen(SAS_PREFIX);
    if (!text || len <= plen || memcmp(text, SAS_PREFIX, plen) != 0 || text[plen] != ' ')
        return fail(err, errlen, "not a SharedAccessSignature token");
    const char *p = text + plen, *end = text + len;
    while (p < end && *p == ' ')
        p++;
    unsigned seen = 0;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop == p)
            return fail(err, errlen, "empty field");
        if (!take_field(out, &seen, p, (size_t)(stop - p), err, errlen))
            return false;
        p = amp ? amp + 1 : end;
        if (amp && p == end)
            return fail(err, errlen, "empty field");
    }
    if (!(seen & (1u << F_SR)))
        return fail(err, errlen, "sr missing");
    if (!(seen & (1u << F_SIG)))
        return fail(err, errlen, "sig missing");
    if (!(seen & (1u << F_SE)))
        return fail(err, errlen, "se missing");
    return true;
}

/* ---- signing ------------------------------------------------------------- */

/* HMAC-SHA256(base64decode(key_b64), msg); false for a key that is not base64. */
static bool sign_with_key(const char *key_b64, const char *msg, size_t msg_len, uint8_t out[32])
{
    uint8_t key[SAS_KEY_MAX];
    size_t key_len = 0;
    if (!key_b64 || !crypto_b64_decode(key_b64, strlen(key_b64), key, sizeof key, &key_len) ||
        key_len == 0)
        return false;
    crypto_hmac_sha256(key, key_len, (const uint8_t *)msg, msg_len, out);
    OPENSSL_cleanse(key, sizeof key);
    return true;
}

/* base64 of the classic signature over "{encoded resource}\n{se}". */
static bool classic_signature(const char *key_b64, const char *encoded_resource,
                              uint64_t expiry, char out[CRYPTO_B64_LEN(32) + 1])
{
    char msg[SAS_MAX_FIELD * 3 + 32];
    int n = snprintf(msg, sizeof msg, "%s\n%" PRIu64, encoded_resource, expiry);
    if (n < 0 || (size_t)n >= sizeof msg)
        return false;
    uint8_t mac[32];
    bool ok = sign_with_key(key_b64, msg, (size_t)n, mac) &&
              crypto_b64_encode(mac, sizeof mac, out, CRYPTO_B64_LEN(32) + 1) > 0;
    OPENSSL_cleanse(mac, sizeof mac);
    return ok;
}

bool sas_token_verify(const sas_token *t, const char *key_b64)
{
    char expected[CRYPTO_B64_LEN(32) + 1];
    if (!classic_signature(key_b64, t->resource_raw, t->expiry, expected))
        return false;
    size_t n = strlen(expected);
    return strlen(t->signature) == n && crypto_equal(expected, t->signature, n);
}

char *sas_token_build(const char *resource, const char *key_b64, const char *policy,
                      uint64_t expiry)
{
    char sr[SAS_MAX_FIELD * 3 + 1];
    char sig_b64[CRYPTO_B64_LEN(32) + 1];
    char sig[sizeof sig_b64 * 3];
    char skn[SAS_MAX_FIELD * 3 + 1] = "";
    if (!resource || !*resource ||
        crypto_url_encode(resource, strlen(resource), sr, sizeof sr) == 0 ||
        !classic_signature(key_b64, sr, expiry, sig_b64) ||
        crypto_url_encode(sig_b64, strlen(sig_b64), sig, sizeof sig) == 0)
        return NULL;
    if (policy && *policy && crypto_url_encode(policy, strlen(policy), skn, sizeof skn) == 0)
        return NULL;
    size_t cap = strlen(SAS_PREFIX) + strlen(sr) + strlen(sig) + strlen(skn) + 64;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    snprintf(out, cap, SAS_PREFIX " sr=%s&sig=%s&se=%" PRIu64 "%s%s", sr, sig, expiry,
             *skn ? "&skn=" : "", skn);
    return out;
}

bool sas_mqtt5_sign(const char *key_b64, const char *host, const char *client_id,
                    const char *policy, const char *sas_at, const char *sas_expiry,
                    uint8_t out[32])
{
    const char *parts[5] = {host, client_id, policy, sas_at, sas_expiry};
    size_t total = 0;
    for (int i = 0; i < 5; i++)
        total += (parts[i] ? strlen(parts[i]) : 0) + 1;
    char *msg = malloc(total + 1);
    if (!msg)
        return false;
    size_t w = 0;
    for (int i = 0; i < 5; i++) {
        size_t n = parts[i] ? strlen(parts[i]) : 0;
        memcpy(msg + w, parts[i] ? parts[i] : "", n);
        w += n;
        msg[w++] = '\n';
    }
    bool ok = sign_with_key(key_b64, msg, w, out);
    free(msg);
    return ok;
}
