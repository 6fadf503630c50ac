/*
 * tools/iothub/sim_inbound.c — what the simulated device does with each
 * packet the hub sends (../shared/spec/iothub-mqtt5.md §3–§6), printing
 * one line (or one JSON object) per event.
 *
 *   PUBACK of telemetry        "telemetry #N acknowledged: {body}" or refused
 *                              with reason code and status
 *   $iothub/responses          matched to a twin request by Correlation Data:
 *                              the twin after Get twin, the new reported
 *                              version after Patch reported, or the failure
 *   $iothub/twin/patch/desired printed, then reported back as the same
 *                              patch on $iothub/twin/patch/reported, so the
 *                              twin shows the round trip
 *   $iothub/methods/{name}     answered on $iothub/responses with the same
 *                              Correlation Data, response-code 200 and
 *                              {"result":"ok","method":name}
 *   $iothub/commands           printed and completed (PUBACK 0x00)
 *   AUTH 0x00                  the re-authentication was accepted
 *   DISCONNECT                 ends the run with the hub's reason
 * After Get twin, desired properties already set are reported back too,
 * as a device that was offline while they changed would do.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tools/iothub/simulate.h"
#include "util/crypto.h"

#define METHODS_PREFIX "$iothub/methods/"
#define TEXT_SHOWN_MAX 512 /* longest payload printed on a human line */

/* ---- describing things -------------------------------------------------------------- */

/* "status S: reason" from the `status`/`reason` user properties (or the
 * Reason String); "" when there is neither. */
static void status_text(const mqtt_props *props, char *buf, size_t cap)
{
    char status[16], text[256];
    const char *st = sim_user_prop(props, "status", status, sizeof status);
    const char *why = sim_user_prop(props, "reason", text, sizeof text);
    if (!why && MQTT_HAS(props, MQTT_PROP_REASON_STRING)) {
        snprintf(text, sizeof text, "%.*s", (int)props->reason_string.len,
                 (const char *)props->reason_string.p);
        why = text;
    }
    snprintf(buf, cap, "%s%s%s%s", st ? "status " : "", st ? st : "",
             st && why ? ": " : "", why ? why : "");
}

void sim_describe_refusal(uint8_t reason, const mqtt_props *props, char *buf, size_t cap)
{
    char detail[300];
    status_text(props, detail, sizeof detail);
    snprintf(buf, cap, "%s (0x%02X)%s%s", mqtt_reason_name(reason), reason,
             detail[0] ? ", " : "", detail);
}

/* Whether a payload can be shown as text: UTF-8 without control characters. */
static bool printable(mqtt_bytes b)
{
    if (!mqtt_utf8_valid(b.p, b.len))
        return false;
    for (uint32_t i = 0; i < b.len; i++)
        if (b.p[i] < 0x20 || b.p[i] == 0x7F)
            return false;
    return true;
}

/* A payload for a human line: the text (up to TEXT_SHOWN_MAX) or "<N bytes>". */
static void payload_text(mqtt_bytes b, char *buf, size_t cap)
{
    if (b.len == 0)
        snprintf(buf, cap, "(empty)");
    else if (printable(b) && b.len <= TEXT_SHOWN_MAX)
        snprintf(buf, cap, "%.*s", (int)b.len, (const char *)b.p);
    else
        snprintf(buf, cap, "<%" PRIu32 " bytes>", b.len);
}

/* A payload for a JSON event: parsed JSON when it is JSON, else a string,
 * else base64 in an object {"base64": ...}. */
static json_t *payload_json(mqtt_bytes b)
{
    json_t *parsed = b.len ? json_loadb((const char *)b.p, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
    if (parsed)
        return parsed;
    if (mqtt_utf8_valid(b.p, b.len))
        return json_stringn((const char *)b.p, b.len);
    char *text = malloc(CRYPTO_B64_LEN(b.len) + 1);
    json_t *out = NULL;
    if (text && crypto_b64_encode(b.p, b.len, text, CRYPTO_B64_LEN(b.len) + 1))
        out = json_pack("{s:s}", "base64", text);
    free(text);
    return out;
}

/* Compact JSON text of a value (malloc'd), "{}" when it cannot be rendered. */
static char *compact(const json_t *value)
{
    char *text = value ? json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)
                       : NULL;
    return text ? text : strdup("{}");
}

/* ---- telemetry acknowledgements ----------------------------------------------------- */

/* Settles a telemetry message: acknowledged (reason < 0x80) or refused. */
static bool on_puback(simulator *s, const mqtt_ack *ack)
{
    size_t i = 0;
    while (i < s->inflight_count && s->inflight[i].packet_id != ack->packet_id)
        i++;
    if (i == s->inflight_count)
        return true; /* not ours (a duplicate): nothing to settle */
    const sim_inflight *m = &s->inflight[i];
    if (ack->reason < 0x80) {
        s->acknowledged++;
        sim_emit(s, json_pack("{s:s, s:I, s:s, s:o}", "event", "telemetry", "seq",
                              (json_int_t)m->seq, "result", "acknowledged", "body",
                              payload_json((mqtt_bytes){(const uint8_t *)m->body,
                                                        (uint32_t)strlen(m->body)})),
                 "telemetry #%" PRIu64 " acknowledged: %s", m->seq, m->body);
    } else {
        char why[384];
        sim_describe_refusal(ack->reason, &ack->props, why, sizeof why);
        s->refused++;
        sim_emit(s, json_pack("{s:s, s:I, s:s, s:s}", "event", "telemetry", "seq",
                              (json_int_t)m->seq, "result", "refused", "reason", why),
                 "telemetry #%" PRIu64 " refused: %s", m->seq, why);
    }
    memmove(&s->inflight[i], &s->inflight[i + 1],
            (s->inflight_count - i - 1) * sizeof s->inflight[0]);
    s->inflight_count--;
    return true;
}

/* ---- responses to twin requests ---------------------------------------------------- */

/* The request a response answers, by its 4-byte Correlation Data. */
static sim_request *find_request(simulator *s, const mqtt_props *props)
{
    if (!MQTT_HAS(props, MQTT_PROP_CORRELATION_DATA) || props->correlation_data.len != 4)
        return NULL;
    const uint8_t *c = props->correlation_data.p;
    uint32_t id = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
    for (size_t i = 0; i < SIM_PENDING_MAX; i++)
        if (s->requests[i].used && s->requests[i].correlation == id)
            return &s->requests[i];
    return NULL;
}

/* A twin section without its "$version", and that version. */
static json_t *section_without_version(const json_t *twin, const char *name, json_int_t *version)
{
    json_t *copy = json_deep_copy(json_object_get(twin, name));
    if (!json_is_object(copy)) {
        json_decref(copy);
        copy = json_object();
    }
    *version = json_integer_value(json_object_get(copy, "$version"));
    json_object_del(copy, "$version");
    return copy;
}

/* The desired properties whose reported value differs (a new object):
 * what a device that was offline still has to acknowledge. */
static json_t *unacknowledged_desired(const json_t *desired, const json_t *reported)
{
    json_t *patch = json_object();
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)desired, key, value) {
        if (!json_equal(value, json_object_get(reported, key)))
            json_object_set(patch, key, value);
    }
    return patch;
}

/* Prints the twin from Get twin and reports back desired properties that
 * the reported ones do not show yet. */
static bool on_twin(simulator *s, mqtt_bytes payload)
{
    json_t *twin = json_loadb((const char *)payload.p, payload.len, JSON_ALLOW_NUL, NULL);
    json_int_t dver = 0, rver = 0;
    json_t *desired = section_without_version(twin, "desired", &dver);
    json_t *reported = section_without_version(twin, "reported", &rver);
    char *dtext = compact(desired), *rtext = compact(reported);
    sim_emit(s, json_pack("{s:s, s:O, s:I, s:O, s:I}", "event", "twin", "desired", desired,
                          "desiredVersion", dver, "reported", reported, "reportedVersion", rver),
             "twin: desired %s (version %" PRId64 "), reported %s (version %" PRId64 ")", dtext,
             (int64_t)dver, rtext, (int64_t)rver);
    json_t *missing = unacknowledged_desired(desired, reported);
    bool ok = json_object_size(missing) == 0 || sim_send_request(s, SIM_PATCH_REPORTED, missing);
    json_decref(missing);
    free(dtext);
    free(rtext);
    json_decref(desired);
    json_decref(reported);
    json_decref(twin);
    return ok;
}

/* A response on $iothub/responses: a failure (`status`), the twin, or
 * the reported version; the request slot is freed either way. */
static bool on_response(simulator *s, const mqtt_publish *pub)
{
    sim_request *r = find_request(s, &pub->props);
    if (!r)
        return true; /* late or unknown: nothing waits for it */
    char status[16], version[32], why[320];
    const char *what = r->kind == SIM_TWIN_GET ? "get twin" : "report";
    bool ok = true;
    if (sim_user_prop(&pub->props, "status", status, sizeof status)) {
        status_text(&pub->props, why, sizeof why);
        sim_emit(s, json_pack("{s:s, s:s, s:s}", "event", "error", "request", what, "reason", why),
                 "%s failed: %s", what, why);
    } else if (r->kind == SIM_TWIN_GET) {
        ok = on_twin(s, pub->payload);
    } else {
        const char *v = sim_user_prop(&pub->props, "version", version, sizeof version);
        json_t *patch = r->patch ? json_loads(r->patch, JSON_ALLOW_NUL, NULL) : NULL;
        sim_emit(s, json_pack("{s:s, s:o, s:o?}", "event", "reported", "patch",
                              patch ? patch : json_object(), "version",
                              v ? json_integer(strtoll(v, NULL, 10)) : NULL),
                 "reported %s (reported version %s)", r->patch ? r->patch : "{}", v ? v : "?");
    }
    free(r->patch);
    *r = (sim_request){0};
    return ok;
}

/* ---- desired changes, methods, commands ------------------------------------------------ */

/* A desired change: printed, then reported back as the same patch. */
static bool on_desired(simulator *s, const mqtt_publish *pub)
{
    char version[32], text[TEXT_SHOWN_MAX + 32];
    const char *v = sim_user_prop(&pub->props, "version", version, sizeof version);
    payload_text(pub->payload, text, sizeof text);
    sim_emit(s, json_pack("{s:s, s:o?, s:o}", "event", "desired", "version",
                          v ? json_integer(strtoll(v, NULL, 10)) : NULL, "patch",
                          payload_json(pub->payload)),
             "desired change (version %s): %s", v ? v : "?", text);
    json_t *reported = sim_reported_for_desired(pub->payload.p, pub->payload.len);
    if (!reported) {
        sim_emit(s, json_pack("{s:s, s:s}", "event", "error", "reason",
                              "desired patch is not a JSON object; not reported"),
                 "desired patch is not a JSON object; not reported");
        return true;
    }
    bool ok = sim_send_request(s, SIM_PATCH_REPORTED, reported);
    json_decref(reported);
    return ok;
}

/* Answers a direct method: response-code 200 and a small JSON payload. */
static bool on_method(simulator *s, const mqtt_publish *pub)
{
    const size_t prefix = strlen(METHODS_PREFIX);
    char name[256], text[TEXT_SHOWN_MAX + 32];
    snprintf(name, sizeof name, "%.*s", (int)(pub->topic.len - prefix),
             (const char *)pub->topic.p + prefix);
    payload_text(pub->payload, text, sizeof text);
    if (!MQTT_HAS(&pub->props, MQTT_PROP_CORRELATION_DATA)) {
        sim_emit(s, json_pack("{s:s, s:s, s:s}", "event", "error", "method", name, "reason",
                              "no Correlation Data; cannot answer"),
                 "method %s: no Correlation Data; cannot answer", name);
        return true;
    }
    json_t *answer = json_pack("{s:s, s:s}", "result", "ok", "method", name);
    char *body = compact(answer);
    uint8_t block[64];
    size_t len = 0;
    mqtt_packet p = {.type = MQTT_PUBLISH};
    p.u.publish.topic = MQTT_BYTES_LIT("$iothub/responses");
    p.u.publish.props.correlation_data = pub->props.correlation_data;
    MQTT_SET(&p.u.publish.props, MQTT_PROP_CORRELATION_DATA);
    mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("response-code"),
                           MQTT_BYTES_LIT("200"));
    p.u.publish.props.user = (mqtt_bytes){block, (uint32_t)len};
    p.u.publish.props.user_count = 1;
    p.u.publish.payload = (mqtt_bytes){(const uint8_t *)body, (uint32_t)strlen(body)};
    bool ok = sim_send(s, &p);
    if (ok)
        sim_emit(s, json_pack("{s:s, s:s, s:o, s:i, s:O}", "event", "method", "name", name,
                              "payload", payload_json(pub->payload), "responseCode", 200,
                              "response", answer),
                 "method %s(%s): answered 200 %s", name, text, body);
    free(body);
    json_decref(answer);
    return ok;
}

/* Prints a command and completes it (PUBACK 0x00). */
static bool on_command(simulator *s, const mqtt_publish *pub)
{
    char seq[32], text[TEXT_SHOWN_MAX + 32];
    const char *n = sim_user_prop(&pub->props, "sequence-no", seq, sizeof seq);
    payload_text(pub->payload, text, sizeof text);
    if (pub->qos) {
        mqtt_packet ack = {.type = MQTT_PUBACK};
        ack.u.ack.packet_id = pub->packet_id;
        ack.u.ack.reason = MQTT_RC_SUCCESS;
        if (!sim_send(s, &ack))
            return false;
    }
    sim_emit(s, json_pack("{s:s, s:o?, s:o, s:s}", "event", "command", "sequenceNumber",
                          n ? json_integer(strtoll(n, NULL, 10)) : NULL,
                          "body", payload_json(pub->payload), "result", "completed"),
             "command %s: %s (completed)", n ? n : "?", text);
    return true;
}

/* Routes a PUBLISH by its (exact) topic; anything else is printed and,
 * at QoS 1, acknowledged so the hub does not redeliver it. */
static bool on_publish(simulator *s, const mqtt_publish *pub)
{
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/responses"))
        return on_response(s, pub);
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/twin/patch/desired"))
        return on_desired(s, pub);
    if (mqtt_bytes_eq_str(pub->topic, "$iothub/commands"))
        return on_command(s, pub);
    size_t prefix = strlen(METHODS_PREFIX);
    if (pub->topic.len > prefix && !memcmp(pub->topic.p, METHODS_PREFIX, prefix))
        return on_method(s, pub);
    sim_emit(s, json_pack("{s:s, s:s#}", "event", "ignored", "topic", (const char *)pub->topic.p,
                          (int)pub->topic.len),
             "ignored a message on %.*s", (int)pub->topic.len, (const char *)pub->topic.p);
    if (!pub->qos)
        return true;
    mqtt_packet ack = {.type = MQTT_PUBACK};
    ack.u.ack.packet_id = pub->packet_id;
    return sim_send(s, &ack);
}

/* ---- connection-level packets ---------------------------------------------------------- */

/* The hub's answer to AUTH 0x19: 0x00 accepted, anything else ends the run. */
static bool on_auth(simulator *s, const mqtt_reason_packet *auth)
{
    if (auth->reason != MQTT_RC_SUCCESS) {
        char why[384];
        sim_describe_refusal(auth->reason, &auth->props, why, sizeof why);
        snprintf(s->err, sizeof s->err, "re-authentication failed: %s", why);
        return false;
    }
    char until[32];
    sim_format_utc(s->token.expiry_s * 1000u, until, sizeof until);
    s->reauth_sent = false; /* the next renewal is due at s->reauth_at_ms */
    sim_emit(s, json_pack("{s:s, s:s}", "event", "reauthenticated", "sasExpiry", until),
             "re-authenticated (AUTH 0x19 accepted; token valid until %s)", until);
    return true;
}

/* The hub ended the connection (0x87 expired/revoked, 0x8E taken over...). */
static bool on_disconnect(simulator *s, const mqtt_reason_packet *d)
{
    char why[384];
    sim_describe_refusal(d->reason, &d->props, why, sizeof why);
    snprintf(s->err, sizeof s->err, "the hub disconnected: %s", why);
    return false;
}

bool sim_handle_packet(simulator *s, const mqtt_packet *pkt)
{
    switch (pkt->type) {
    case MQTT_PUBACK:
        return on_puback(s, &pkt->u.ack);
    case MQTT_PUBLISH:
        return on_publish(s, &pkt->u.publish);
    case MQTT_AUTH:
        return on_auth(s, &pkt->u.auth);
    case MQTT_DISCONNECT:
        return on_disconnect(s, &pkt->u.disconnect);
    case MQTT_PINGRESP:
        s->ping_outstanding = false;
        return true;
    default:
        return true; /* nothing else is expected; nothing to do */
    }
}
