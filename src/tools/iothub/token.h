/*
 * tools/iothub/token.h — the credentials the tool hands out: classic SAS
 * tokens, the MQTT 5 SAS CONNECT fields and device connection strings.
 *
 * Pure functions of their inputs (the caller passes "now"), built on
 * util/sas.h and util/crypto.h, so tests can check them against fixed
 * vectors.
 */
#ifndef IOTHUB_CLI_TOKEN_H
#define IOTHUB_CLI_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/crypto.h"

#define CLI_MQTT5_API_VERSION "2020-10-01-preview"
#define CLI_ID_MAX 512

/* Everything a device needs to authenticate with a shared key. */
typedef struct cli_device_token {
    char *classic;                 /* "SharedAccessSignature sr=..." (malloc'd) */
    char resource[2 * CLI_ID_MAX]; /* {host}/devices/{id}[/modules/{m}] */
    uint64_t expiry_s;             /* se */
    char client_id[2 * CLI_ID_MAX]; /* {id} or {id}/{module} */
    char sas_at[24];               /* ms since the epoch, decimal */
    char sas_expiry[24];           /* ms since the epoch, decimal */
    char policy[256];              /* sas-policy; "" for a device key */
    char auth_data_b64[CRYPTO_B64_LEN(CRYPTO_SHA256_LEN) + 1];
} cli_device_token;

/* Signs for device (and module, may be NULL) with key_b64, valid from now_ms
 * for duration_s seconds. policy is NULL for a device key, else the name of
 * the shared access policy whose key this is (skn / sas-policy). False with
 * a reason for a key that is not base64 or ids that are too long. */
bool cli_device_token_make(const char *host, const char *device, const char *module,
                           const char *policy, const char *key_b64, uint64_t now_ms,
                           uint64_t duration_s, cli_device_token *out, char *err, size_t errlen);
void cli_device_token_free(cli_device_token *t);

/* A service token for the hub: sr={host}, skn={policy}. malloc'd; NULL for
 * a bad key. */
char *cli_service_token(const char *host, const char *policy, const char *key_b64,
                        uint64_t expiry_s);

/* "HostName={host};DeviceId={id}[;ModuleId={m}];SharedAccessKey={key}", or
 * with key NULL "...;x509=true". False when it does not fit. */
bool cli_device_connstr(const char *host, const char *device, const char *module,
                        const char *key, char *buf, size_t cap);

#endif
