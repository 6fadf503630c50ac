/*
 * hub/connect.c — how a device proves who it is (../shared/spec/iothub-mqtt5.md §1):
 * CONNECT with Authentication Method SAS or X509, re-authentication with
 * AUTH 0x19, and the end of a connection whose SAS token expires.
 *
 * Authentication is single-step and synchronous: the registry is in
 * memory, so the CONNECT is judged at once and answered with CONNACK (no
 * AUTH exchange, which common clients cannot do). Checks run from the
 * cheapest and least revealing to the identity itself: the API version,
 * the client id's form, the host, then the credential. An unknown device,
 * a disabled one and a bad signature get the same answer (0x87, status
 * 0101, the same reason text), so a client cannot probe the registry.
 * An expired token is said as such: that reveals nothing about devices.
 *
 * Every refusal is a CONNACK reason code with `status` and `reason` user
 * properties (and the reason as Reason String), logged once at info. The
 * hub's connection rate (hub/throttle.h) is asked last, once the device
 * has proved who it is: CONNACK 0x9F with status 0501.
 *
 * SAS expiry: the token's expiry is the broker client's deadline
 * (broker_client_set_deadline), set when the CONNECT is accepted and moved
 * by a successful re-authentication; when it passes (hub_sas_expired) the
 * client gets DISCONNECT 0x87. The broker checks it on the timer it keeps
 * for the keep-alive anyway, so a device costs no timer of its own. The
 * token's times are wall clock (ms since the epoch), as deadlines are.
 */
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hub/hub_internal.h"
#include "util/crypto.h"
#include "util/log.h"
#include "util/sas.h"
#include "util/time.h"

#define NOT_AUTHORIZED_TEXT "not authorized"

/* The IoT Hub user properties of a CONNECT or AUTH. */
typedef struct auth_props {
    mqtt_bytes api_version, host, sas_at, sas_expiry, sas_policy;
    bool has_api_version, has_host, has_sas_at, has_sas_expiry, has_sas_policy;
    bool duplicate;
} auth_props;

/* Who a device says it is: what its SAS signature covers and its
 * certificate must match. From the CONNECT's ids, or, on re-authentication,
 * from the connected client (claim_of). */
typedef struct device_claim {
    const char *client_id, *device_id, *module_id, *host;
} device_claim;

/* A refusal: reason code, status, reason text. */
typedef struct auth_failure {
    uint8_t code;
    hub_status status;
    const char *reason;
} auth_failure;

static void take_prop(mqtt_bytes value, mqtt_bytes *slot, bool *has, bool *duplicate)
{
    if (*has)
        *duplicate = true;
    *slot = value;
    *has = true;
}

/* Collects the properties the hub reads; others (client-agent, ...) are
 * ignored. */
static void read_auth_props(const mqtt_props *props, auth_props *out)
{
    memset(out, 0, sizeof *out);
    mqtt_iter it;
    mqtt_bytes name, value;
    mqtt_user_props_iter(props, &it);
    while (mqtt_user_props_next(&it, &name, &value)) {
        if (mqtt_bytes_eq_str(name, "api-version"))
            take_prop(value, &out->api_version, &out->has_api_version, &out->duplicate);
        else if (mqtt_bytes_eq_str(name, "host"))
            take_prop(value, &out->host, &out->has_host, &out->duplicate);
        else if (mqtt_bytes_eq_str(name, "sas-at"))
            take_prop(value, &out->sas_at, &out->has_sas_at, &out->duplicate);
        else if (mqtt_bytes_eq_str(name, "sas-expiry"))
            take_prop(value, &out->sas_expiry, &out->has_sas_expiry, &out->duplicate);
        else if (mqtt_bytes_eq_str(name, "sas-policy"))
            take_prop(value, &out->sas_policy, &out->has_sas_policy, &out->duplicate);
    }
}

static void refuse(broker_client *c, const char *client_id, const auth_failure *f)
{
    hub_answer_buf buf;
    broker_answer answer;
    hub_answer_failure(&buf, MQTT_DISCONNECT, f->status, f->code, f->reason, 0, &answer);
    log_info("%s %s: device CONNECT refused: %s", net_conn_peer_str(broker_client_conn(c)),
             client_id, f->reason);
    broker_auth_reject(c, f->code, &answer.props);
}

/* "dev" or "dev/mod" with valid ids. */
static bool split_client_id(mqtt_bytes id, hub_client_ids *ids)
{
    if (!hub_copy_str(id, ids->client_id, sizeof ids->client_id))
        return false;
    char *slash = strchr(ids->client_id, '/');
    size_t dlen = slash ? (size_t)(slash - ids->client_id) : strlen(ids->client_id);
    if (dlen == 0 || dlen > HUB_ID_MAX)
        return false;
    memcpy(ids->device_id, ids->client_id, dlen);
    ids->device_id[dlen] = '\0';
    if (slash) {
        if (strlen(slash + 1) > HUB_ID_MAX)
            return false;
        strcpy(ids->module_id, slash + 1);
        if (!registry_valid_id(ids->module_id))
            return false;
    }
    return registry_valid_id(ids->device_id);
}

/* The host the client addressed: the `host` property, else the TLS SNI;
 * it must name this hub (case-insensitive). */
static bool take_host(hub *h, hub_client_ids *ids, const auth_props *p, net_conn *conn,
                      auth_failure *f)
{
    const char *sni = net_conn_sni(conn);
    if (p->has_host) {
        if (!hub_copy_str(p->host, ids->host, sizeof ids->host)) {
            *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST, "host is too long"};
            return false;
        }
    } else if (sni && strlen(sni) <= HUB_HOST_MAX) {
        strcpy(ids->host, sni);
    } else {
        *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                            "the host property is required"};
        return false;
    }
    if (strcasecmp(ids->host, h->hostname) != 0) {
        *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED,
                            "host does not name this hub"};
        return false;
    }
    return true;
}

/* ---- SAS ---------------------------------------------------------------- */

/* The token times and policy of a CONNECT or AUTH, as the text that was
 * signed. */
typedef struct sas_fields {
    char at[24], expiry[24], policy[HUB_POLICY_MAX + 1];
    uint64_t expiry_ms;
} sas_fields;

static bool read_sas_fields(const auth_props *p, sas_fields *s, auth_failure *f)
{
    uint64_t at_ms;
    memset(s, 0, sizeof *s);
    if (!p->has_sas_expiry || !hub_parse_u64(p->sas_expiry, &s->expiry_ms) ||
        !hub_copy_str(p->sas_expiry, s->expiry, sizeof s->expiry)) {
        *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                            "sas-expiry (time) is required"};
        return false;
    }
    if (p->has_sas_at && (!hub_parse_u64(p->sas_at, &at_ms) ||
                          !hub_copy_str(p->sas_at, s->at, sizeof s->at))) {
        *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                            "sas-at is not a time"};
        return false;
    }
    if (p->has_sas_policy && !hub_copy_str(p->sas_policy, s->policy, sizeof s->policy)) {
        *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED, NOT_AUTHORIZED_TEXT};
        return false;
    }
    if (s->expiry_ms <= time_wall_ms()) {
        *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED, "sas-expiry has passed"};
        return false;
    }
    return true;
}

/* Whether `sig` is the MQTT 5 SAS signature of these fields under key_b64. */
static bool signed_with(const char *key_b64, const device_claim *who, const sas_fields *s,
                        mqtt_bytes sig)
{
    uint8_t want[32];
    if (!*key_b64 || sig.len != sizeof want)
        return false;
    if (!sas_mqtt5_sign(key_b64, who->host, who->client_id, s->policy[0] ? s->policy : NULL,
                        s->at[0] ? s->at : NULL, s->expiry, want))
        return false;
    return crypto_equal(want, sig.p, sizeof want);
}

/* Checks a SAS signature against the identity's keys, or the named
 * policy's (which must grant DeviceConnect). The identity must exist and
 * be enabled. On failure *f says why (0x8C when the identity is not a SAS
 * identity and no policy is used). */
static bool hub_check_sas_signature(hub *h, const device_claim *who, const sas_fields *s,
                                    mqtt_bytes sig, auth_failure *f)
{
    hub_identity id;
    *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED, NOT_AUTHORIZED_TEXT};
    if (!registry_get(h->reg, who->device_id, who->module_id, &id) || !id.enabled)
        return false;
    if (s->policy[0]) {
        hub_policy pol;
        return registry_policy_get(h->reg, s->policy, &pol) &&
               (pol.rights & HUB_RIGHT_DEVICE_CONNECT) &&
               (signed_with(pol.primary_key, who, s, sig) ||
                signed_with(pol.secondary_key, who, s, sig));
    }
    if (id.auth_type != HUB_AUTH_SAS) {
        *f = (auth_failure){MQTT_RC_BAD_AUTHENTICATION_METHOD, HUB_NOT_AUTHORIZED,
                            "the identity does not use SAS"};
        return false;
    }
    return signed_with(id.primary_key, who, s, sig) || signed_with(id.secondary_key, who, s, sig);
}

/* ---- X.509 -------------------------------------------------------------- */

/* Whether the subject Common Name of `cert` equals `name`. */
static bool cert_common_name_is(X509 *cert, const char *name)
{
    char cn[HUB_ID_MAX + 2];
    X509_NAME *subject = X509_get_subject_name(cert);
    int n = subject ? X509_NAME_get_text_by_NID(subject, NID_commonName, cn, sizeof cn) : -1;
    return n > 0 && (size_t)n == strlen(cn) && strcmp(cn, name) == 0;
}

static bool thumbprint_matches(const char *registered, const char *sha1, const char *sha256)
{
    return *registered && (strcasecmp(registered, sha1) == 0 || strcasecmp(registered, sha256) == 0);
}

/* Checks the TLS client certificate against the identity: a registered
 * thumbprint (selfSigned), or a chain to a configured CA whose subject CN
 * is the device id (certificateAuthority). */
static bool hub_check_x509_certificate(hub *h, const device_claim *who, net_conn *conn,
                                       auth_failure *f)
{
    hub_identity id;
    X509 *cert = net_conn_peer_cert(conn);
    *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED, NOT_AUTHORIZED_TEXT};
    if (!cert || !registry_get(h->reg, who->device_id, who->module_id, &id) || !id.enabled)
        return false;
    if (id.auth_type == HUB_AUTH_CA)
        return net_conn_peer_cert_verified(conn) && cert_common_name_is(cert, who->device_id);
    if (id.auth_type != HUB_AUTH_SELF_SIGNED) {
        *f = (auth_failure){MQTT_RC_BAD_AUTHENTICATION_METHOD, HUB_NOT_AUTHORIZED,
                            "the identity does not use X.509"};
        return false;
    }
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    if (len <= 0)
        return false;
    char sha1[41], sha256[65];
    crypto_sha1_hex(der, (size_t)len, sha1);
    crypto_sha256_hex(der, (size_t)len, sha256);
    OPENSSL_free(der);
    return thumbprint_matches(id.primary_thumbprint, sha1, sha256) ||
           thumbprint_matches(id.secondary_thumbprint, sha1, sha256);
}

/* ---- CONNECT ------------------------------------------------------------ */

/* A Will would publish outside the hub's control (its topic is routed by
 * the broker): allowed only into the open topic space, when it exists. */
static bool will_allowed(const hub *h, const mqtt_connect *pkt)
{
    return !pkt->will_flag || (h->cfg.open_topics && h->open && !hub_topic_reserved(pkt->will_topic));
}

/* Everything but the credential. */
static bool check_connect_form(hub *h, hub_client_ids *ids, const mqtt_connect *pkt,
                               const auth_props *p, net_conn *conn, auth_failure *f)
{
    if (!p->has_api_version || !mqtt_bytes_eq_str(p->api_version, HUB_API_VERSION)) {
        *f = (auth_failure){MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION, HUB_BAD_REQUEST,
                            "api-version must be " HUB_API_VERSION};
        return false;
    }
    if (p->duplicate) {
        *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                            "a property is given twice"};
        return false;
    }
    if (!split_client_id(pkt->client_id, ids)) {
        *f = (auth_failure){MQTT_RC_CLIENT_ID_NOT_VALID, HUB_BAD_REQUEST,
                            "client id must be {deviceId} or {deviceId}/{moduleId}"};
        return false;
    }
    if (!will_allowed(h, pkt)) {
        *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                            "Will messages are not supported"};
        return false;
    }
    return take_host(h, ids, p, conn, f);
}

/* On success *expiry_ms is the SAS token's expiry (0 for X509). */
static bool check_connect_credential(hub *h, const device_claim *who, bool x509,
                                     hub_client_ids *ids, const mqtt_connect *pkt,
                                     const auth_props *p, net_conn *conn, uint64_t *expiry_ms,
                                     auth_failure *f)
{
    bool has_data = MQTT_HAS(&pkt->props, MQTT_PROP_AUTHENTICATION_DATA);
    if (x509) {
        if (has_data) {
            *f = (auth_failure){MQTT_RC_IMPLEMENTATION_SPECIFIC, HUB_BAD_REQUEST,
                                "X509 takes no Authentication Data"};
            return false;
        }
        return hub_check_x509_certificate(h, who, conn, f);
    }
    sas_fields s;
    if (!read_sas_fields(p, &s, f))
        return false;
    if (!has_data) {
        *f = (auth_failure){MQTT_RC_NOT_AUTHORIZED, HUB_NOT_AUTHORIZED,
                            "SAS needs the signature as Authentication Data"};
        return false;
    }
    if (!hub_check_sas_signature(h, who, &s, pkt->props.authentication_data, f))
        return false;
    strcpy(ids->policy, s.policy);
    *expiry_ms = s.expiry_ms;
    return true;
}

/* The hub's connection rate (spec §1: CONNACK 0x9F, status 0501). Asked
 * after authentication, so clients with bad credentials cannot use up the
 * budget of real devices; what a refusal saves then is only the session. */
static bool admit_connect(hub *h, broker_client *c, const char *client_id)
{
    hub_status st = hub_throttle_admit(h->cfg.throttle, HUB_THROTTLE_CONNECT);
    if (st == HUB_OK)
        return true;
    char reason[128];
    hub_throttle_describe(h->cfg.throttle, HUB_THROTTLE_CONNECT, st, reason, sizeof reason);
    auth_failure f = {MQTT_RC_CONNECTION_RATE_EXCEEDED, st, reason};
    refuse(c, client_id, &f);
    return false;
}

/* Judges the CONNECT with the strings in fixed arrays on the stack, and
 * only keeps the device's state (in its broker client, hub_client_init)
 * once it is accepted, so a refused CONNECT costs no heap. */
void hub_authenticate_device(hub *h, broker_client *c, const mqtt_connect *pkt)
{
    hub_client_ids ids;
    memset(&ids, 0, sizeof ids);
    const device_claim who = {ids.client_id, ids.device_id, ids.module_id, ids.host};
    bool x509 = mqtt_bytes_eq_str(broker_client_auth_method(c), HUB_METHOD_X509);
    auth_props p;
    auth_failure f;
    uint64_t expiry_ms = 0;
    read_auth_props(&pkt->props, &p);
    net_conn *conn = broker_client_conn(c);
    if (!check_connect_form(h, &ids, pkt, &p, conn, &f) ||
        !check_connect_credential(h, &who, x509, &ids, pkt, &p, conn, &expiry_ms, &f)) {
        refuse(c, ids.client_id, &f);
        return;
    }
    if (!admit_connect(h, c, ids.client_id))
        return;
    if (!hub_client_init(h, c, &ids, x509)) { /* released by disconnected() */
        broker_auth_reject(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    broker_client_set_deadline(c, expiry_ms); /* counts once connected */
    log_info("%s: device authenticated (%s)", ids.client_id, x509 ? "X509" : "SAS");
    broker_auth_accept(c, NULL);
}

/* ---- re-authentication and expiry --------------------------------------- */

/* What a connected device proved at CONNECT, to check its new credential
 * against. */
static device_claim claim_of(const hub *h, const hub_client *hc)
{
    return (device_claim){hub_client_id(hc), hub_client_device_id(hc), hub_client_module(hc),
                          hub_client_host(hc, h)};
}

static void reauth_failed(hub_client *hc, const char *why)
{
    mqtt_props props = {0};
    props.reason_string = (mqtt_bytes){(const uint8_t *)why, (uint32_t)strlen(why)};
    MQTT_SET(&props, MQTT_PROP_REASON_STRING);
    broker_auth_reject(hub_client_broker(hc), MQTT_RC_NOT_AUTHORIZED, &props);
}

void hub_reauthenticate_device(hub *h, hub_client *hc, const mqtt_reason_packet *pkt)
{
    auth_props p;
    auth_failure f;
    sas_fields s;
    if (pkt->reason != MQTT_RC_REAUTHENTICATE) {
        reauth_failed(hc, "only re-authentication (AUTH 0x19) is supported");
        return;
    }
    if (hc->x509) { /* nothing new to prove: the certificate must still be registered */
        net_conn *conn = broker_client_conn(hub_client_broker(hc));
        device_claim who = claim_of(h, hc);
        if (hub_check_x509_certificate(h, &who, conn, &f))
            broker_auth_accept(hub_client_broker(hc), NULL);
        else
            reauth_failed(hc, f.reason);
        return;
    }
    read_auth_props(&pkt->props, &p);
    if (p.duplicate || !read_sas_fields(&p, &s, &f)) {
        reauth_failed(hc, p.duplicate ? "a property is given twice" : f.reason);
        return;
    }
    if (strcmp(s.policy, hub_client_policy(hc)) != 0) {
        reauth_failed(hc, "sas-policy differs from CONNECT");
        return;
    }
    device_claim who = claim_of(h, hc);
    if (!MQTT_HAS(&pkt->props, MQTT_PROP_AUTHENTICATION_DATA) ||
        !hub_check_sas_signature(h, &who, &s, pkt->props.authentication_data, &f)) {
        reauth_failed(hc, NOT_AUTHORIZED_TEXT);
        return;
    }
    broker_client_set_deadline(hub_client_broker(hc), s.expiry_ms);
    log_info("%s: re-authenticated (SAS valid for %llu s)", hub_client_id(hc),
             (unsigned long long)((s.expiry_ms - time_wall_ms()) / 1000));
    broker_auth_accept(hub_client_broker(hc), NULL);
}

void hub_sas_expired(hub_client *hc)
{
    log_info("%s: SAS token expired without re-authentication", hub_client_id(hc));
    broker_client_disconnect(hub_client_broker(hc), MQTT_RC_NOT_AUTHORIZED, "SAS token expired");
}

bool hub_identity_change_revokes(const hub_identity *old, const hub_identity *now)
{
    return !now || !now->enabled || old->auth_type != now->auth_type ||
           strcmp(old->primary_key, now->primary_key) != 0 ||
           strcmp(old->secondary_key, now->secondary_key) != 0 ||
           strcmp(old->primary_thumbprint, now->primary_thumbprint) != 0 ||
           strcmp(old->secondary_thumbprint, now->secondary_thumbprint) != 0;
}
