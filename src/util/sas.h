/*
 * util/sas.h — shared access signatures (../shared/spec/iothub-mqtt5.md §1, §7).
 *
 * Classic token, used by the service API (and MQTT 3.1.1 devices):
 *   SharedAccessSignature sr={urlencoded resource}&sig={urlencoded base64
 *   HMAC-SHA256(key, "{urlencoded resource}\n{se}")}&se={epoch s}[&skn={policy}]
 * Fields may come in any order. The resource is compared case-insensitively
 * and without a trailing slash by the verifier's caller, as IoT Hub does.
 *
 * MQTT 5 SAS: the 32 raw bytes of HMAC-SHA256(base64decode(key),
 *   "{host}\n{clientId}\n{sas-policy}\n{sas-at}\n{sas-expiry}\n"),
 * an omitted optional value giving an empty line.
 */
#ifndef IOTHUBD_UTIL_SAS_H
#define IOTHUBD_UTIL_SAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAS_MAX_FIELD 512

typedef struct sas_token {
    char resource[SAS_MAX_FIELD]; /* sr, URL-decoded */
    char resource_raw[SAS_MAX_FIELD]; /* sr exactly as sent (what was signed) */
    char signature[SAS_MAX_FIELD]; /* sig, URL-decoded (base64 text) */
    char policy[SAS_MAX_FIELD];   /* skn, "" when absent */
    uint64_t expiry;              /* se, seconds since the epoch */
} sas_token;

/* Parses "SharedAccessSignature k=v&k=v..." (the prefix is required).
 * sr, sig and se are required; unknown fields are ignored; duplicates are
 * an error. Returns false with a short reason in err. */
bool sas_token_parse(const char *text, size_t len, sas_token *out, char *err, size_t errlen);

/* True when the signature matches key_b64 (a base64 symmetric key). Does
 * not check expiry or resource: the caller knows "now" and the host. */
bool sas_token_verify(const sas_token *t, const char *key_b64);

/* Builds a classic token for `resource` (not yet URL-encoded), signed with
 * key_b64, expiring at `expiry`; policy may be NULL. Returns a malloc'd
 * string, or NULL for a bad key or out of memory. */
char *sas_token_build(const char *resource, const char *key_b64, const char *policy,
                      uint64_t expiry);

/* The MQTT 5 Authentication Data. policy, sas_at may be NULL (empty line).
 * Returns false for a key that is not base64. */
bool sas_mqtt5_sign(const char *key_b64, const char *host, const char *client_id,
                    const char *policy, const char *sas_at, const char *sas_expiry,
                    uint8_t out[32]);

#endif
