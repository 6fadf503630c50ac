/*
 * tools/iothub/token.c — device and service credentials (see token.h).
 *
 * The classic token signs the resource URI; the MQTT 5 form signs the
 * newline-joined CONNECT fields. Both use the same expiry instant, so a
 * device that switches protocol keeps the same lifetime: the classic token
 * counts in seconds, MQTT 5 in milliseconds.
 */
#include "tools/iothub/token.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/sas.h"

/* snprintf that reports truncation as failure. */
static bool format_fits(int n, size_t cap)
{
    return n >= 0 && (size_t)n < cap;
}

/* Fills resource, client id and the decimal times. */
static bool fill_identity(const char *host, const char *device, const char *module,
                          const char *policy, uint64_t now_ms, uint64_t duration_s,
                          cli_device_token *out)
{
    bool has_module = module && *module;
    uint64_t expiry_ms = now_ms + duration_s * 1000u;
    out->expiry_s = expiry_ms / 1000u;
    snprintf(out->sas_at, sizeof out->sas_at, "%" PRIu64, now_ms);
    snprintf(out->sas_expiry, sizeof out->sas_expiry, "%" PRIu64, expiry_ms);
    return format_fits(snprintf(out->resource, sizeof out->resource, "%s/devices/%s%s%s", host,
                                device, has_module ? "/modules/" : "", has_module ? module : ""),
                       sizeof out->resource) &&
           format_fits(snprintf(out->client_id, sizeof out->client_id, "%s%s%s", device,
                                has_module ? "/" : "", has_module ? module : ""),
                       sizeof out->client_id) &&
           format_fits(snprintf(out->policy, sizeof out->policy, "%s", policy ? policy : ""),
                       sizeof out->policy);
}

bool cli_device_token_make(const char *host, const char *device, const char *module,
                           const char *policy, const char *key_b64, uint64_t now_ms,
                           uint64_t duration_s, cli_device_token *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!fill_identity(host, device, module, policy, now_ms, duration_s, out)) {
        snprintf(err, errlen, "host, device or module id too long");
        return false;
    }
    uint8_t mac[CRYPTO_SHA256_LEN];
    if (!sas_mqtt5_sign(key_b64, host, out->client_id, policy, out->sas_at, out->sas_expiry,
                        mac)) {
        snprintf(err, errlen, "the key is not valid base64");
        return false;
    }
    crypto_b64_encode(mac, sizeof mac, out->auth_data_b64, sizeof out->auth_data_b64);
    out->classic = sas_token_build(out->resource, key_b64, policy, out->expiry_s);
    if (!out->classic) {
        snprintf(err, errlen, "cannot sign: the key is not valid base64");
        return false;
    }
    return true;
}

void cli_device_token_free(cli_device_token *t)
{
    free(t->classic);
    t->classic = NULL;
}

char *cli_service_token(const char *host, const char *policy, const char *key_b64,
                        uint64_t expiry_s)
{
    return sas_token_build(host, key_b64, policy, expiry_s);
}

bool cli_device_connstr(const char *host, const char *device, const char *module,
                        const char *key, char *buf, size_t cap)
{
    bool has_module = module && *module;
    int n = snprintf(buf, cap, "HostName=%s;DeviceId=%s%s%s;%s%s", host, device,
                     has_module ? ";ModuleId=" : "", has_module ? module : "",
                     key ? "SharedAccessKey=" : "x509=true", key ? key : "");
    return format_fits(n, cap);
}
