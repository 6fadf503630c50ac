/*
 * tools/bench/scenarios_hub.c — see scenarios_hub.h.
 *
 * The twin window reuses the engine's QoS 1 slot bookkeeping (sent_ns,
 * free_slots): a slot is busy from request to response, so the Correlation
 * Data only has to carry the slot and what was asked. A failed request
 * (response with `status`) frees its slot like a success and is counted
 * by status code, so a refusing hub shows up as errors, never as a stall.
 * Patches carry a counter so every reported patch really changes the twin
 * (an unchanged value could be answered without a write).
 *
 * With --rate the twin is paced like telemetry (scenario_rate_tick): each
 * token is one request, dealt to the next device with a free slot, each
 * device alternating get and patch; latency counts from the token, so a
 * hub falling behind shows as latency and window_full, not as a lower
 * offered rate.
 */
#include "tools/bench/scenarios_hub.h"

#include <stdio.h>
#include <string.h>

#include "tools/bench/scenarios.h"
#include "util/crypto.h"

static const mqtt_bytes TOPIC_RESPONSES = MQTT_BYTES_LIT("$iothub/responses");
static const char METHODS_PREFIX[] = "$iothub/methods/";

void twin_correlation_encode(uint16_t slot, uint8_t kind, uint8_t out[TWIN_CORRELATION_LEN])
{
    out[0] = (uint8_t)(slot & 0xff);
    out[1] = (uint8_t)(slot >> 8);
    out[2] = kind;
}

bool twin_correlation_decode(mqtt_bytes data, uint16_t *slot, uint8_t *kind)
{
    if (data.len != TWIN_CORRELATION_LEN || data.p[2] > TWIN_PATCH)
        return false;
    *slot = (uint16_t)(data.p[0] | data.p[1] << 8);
    *kind = data.p[2];
    return true;
}

bool hub_status_code(mqtt_bytes status, uint8_t *code)
{
    if (status.len != 4)
        return false;
    int digits[4];
    for (unsigned i = 0; i < 4; i++)
        if ((digits[i] = crypto_hex_value(status.p[i])) < 0)
            return false;
    *code = (uint8_t)(digits[2] << 4 | digits[3]);
    return true;
}

uint64_t c2d_stamp_parse(mqtt_bytes payload)
{
    uint64_t v = 0;
    if (payload.len == 0 || payload.len > 19)
        return 0;
    for (uint32_t i = 0; i < payload.len; i++) {
        if (payload.p[i] < '0' || payload.p[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(payload.p[i] - '0');
    }
    return v;
}

/* ---- twin ---------------------------------------------------------------- */

/* Queues one twin request of `kind` in a free slot; false if none. */
static bool twin_send(bench_thread *t, bench_client *c, uint8_t kind, uint64_t now)
{
    if (c->free_count == 0)
        return false;
    uint16_t slot = c->free_slots[--c->free_count];
    c->sent_ns[slot] = now;
    uint8_t corr[TWIN_CORRELATION_LEN];
    twin_correlation_encode(slot, kind, corr);
    char patch[64];
    int patch_len = 0;
    if (kind == TWIN_PATCH)
        patch_len = snprintf(patch, sizeof patch, "{\"bench\":%llu}",
                             (unsigned long long)t->stats.sent);
    mqtt_bytes topic = kind == TWIN_GET ? MQTT_BYTES_LIT("$iothub/twin/get")
                                        : MQTT_BYTES_LIT("$iothub/twin/patch/reported");
    if (!proto_put_hub_request(&c->out, topic, (mqtt_bytes){corr, TWIN_CORRELATION_LEN}, NULL,
                               (const uint8_t *)patch, (size_t)patch_len)) {
        c->sent_ns[slot] = 0; /* the slot goes back: nothing was sent in it */
        c->free_slots[c->free_count++] = slot;
        bench_count_error(t, ERR_OUT_OF_MEMORY);
        return false;
    }
    t->stats.sent++;
    bench_client_mark_dirty(t, c);
    return true;
}

/* Rate mode: c's next request, each client alternating get and patch. */
static bool twin_send_next(bench_thread *t, bench_client *c, uint64_t now)
{
    if (!twin_send(t, c, c->twin_patch_next ? TWIN_PATCH : TWIN_GET, now))
        return false;
    c->twin_patch_next = !c->twin_patch_next;
    return true;
}

/* Fills c's window, alternating kinds. */
static void twin_fill(bench_thread *t, bench_client *c, uint64_t now)
{
    uint8_t kind = TWIN_GET;
    while (c->state == CLIENT_READY && c->free_count > 0) {
        twin_send(t, c, kind, now);
        kind ^= 1;
    }
}

static void twin_on_response(bench_thread *t, bench_client *c, const mqtt_publish *p)
{
    uint16_t slot;
    uint8_t kind;
    if (!MQTT_HAS(&p->props, MQTT_PROP_CORRELATION_DATA) ||
        !twin_correlation_decode(p->props.correlation_data, &slot, &kind) || slot >= c->window ||
        c->sent_ns[slot] == 0) {
        bench_count_error(t, ERR_UNMATCHED_RESPONSE);
        return;
    }
    uint64_t sent = c->sent_ns[slot];
    c->sent_ns[slot] = 0;
    c->free_slots[c->free_count++] = slot;
    mqtt_bytes status;
    uint8_t code;
    if (proto_user_prop(&p->props, "status", &status)) {
        bench_count_reason(t, REASON_HUB_STATUS, hub_status_code(status, &code) ? code : 0xff);
    } else if (scenario_phase(t) == PHASE_RUN && sent >= t->run->run_start_ns) {
        t->stats.acked++;
        hist_record(kind == TWIN_GET ? &t->stats.latency : &t->stats.latency2,
                    bench_latency_ns(t, sent));
    }
    if (t->run->opt->rate > 0)
        bench_ring_push(t, c); /* a slot is free: it may take the next token */
    else if (scenario_phase(t) == PHASE_RUN)
        twin_send(t, c, kind ^ 1, bench_now_ns());
}

/* ---- methods and c2d ----------------------------------------------------- */

static bool topic_is(mqtt_bytes topic, mqtt_bytes want)
{
    return topic.len == want.len && memcmp(topic.p, want.p, want.len) == 0;
}

static bool topic_has_prefix(mqtt_bytes topic, const char *prefix)
{
    size_t n = strlen(prefix);
    return topic.len > n && memcmp(topic.p, prefix, n) == 0;
}

static void method_answer(bench_thread *t, bench_client *c, const mqtt_publish *p)
{
    if (!topic_has_prefix(p->topic, METHODS_PREFIX) ||
        !MQTT_HAS(&p->props, MQTT_PROP_CORRELATION_DATA)) {
        bench_count_error(t, ERR_UNMATCHED_RESPONSE);
        return;
    }
    static const uint8_t reply[] = "{}";
    if (!proto_put_hub_request(&c->out, TOPIC_RESPONSES, p->props.correlation_data, "200", reply,
                               sizeof reply - 1)) {
        bench_count_error(t, ERR_OUT_OF_MEMORY);
        return;
    }
    bench_client_mark_dirty(t, c);
    if (scenario_phase(t) == PHASE_RUN)
        t->stats.delivered++;
}

static void c2d_on_command(bench_thread *t, const mqtt_publish *p)
{
    uint64_t stamp = c2d_stamp_parse(p->payload);
    if (stamp == 0) {
        bench_count_error(t, ERR_UNMATCHED_RESPONSE);
        return;
    }
    if (scenario_phase(t) != PHASE_RUN || stamp < t->run->run_start_ns)
        return;
    t->stats.delivered++;
    hist_record(&t->stats.latency2, bench_latency_ns(t, stamp));
}

/* ---- hooks --------------------------------------------------------------- */

void hub_scenario_on_ready(bench_thread *t, bench_client *c)
{
    bench_scenario s = t->run->opt->scenario;
    if (s == SCENARIO_TWIN) {
        atomic_fetch_add(&t->run->ready, 1);
        if (t->run->opt->rate > 0)
            bench_ring_push(t, c);
        else if (scenario_phase(t) == PHASE_RUN)
            twin_fill(t, c, bench_now_ns());
        return;
    }
    mqtt_bytes filter = s == SCENARIO_METHODS ? MQTT_BYTES_LIT("$iothub/methods/+")
                                              : MQTT_BYTES_LIT("$iothub/commands");
    if (!proto_put_subscribe(&c->out, MQTT_V5, 1, filter, s == SCENARIO_C2D ? 1 : 0))
        bench_count_error(t, ERR_OUT_OF_MEMORY);
    bench_client_mark_dirty(t, c);
}

void hub_scenario_on_publish(bench_thread *t, bench_client *c, const mqtt_publish *p)
{
    switch (t->run->opt->scenario) {
    case SCENARIO_TWIN:
        if (topic_is(p->topic, TOPIC_RESPONSES))
            twin_on_response(t, c, p);
        return;
    case SCENARIO_METHODS:
        method_answer(t, c, p);
        return;
    case SCENARIO_C2D:
        c2d_on_command(t, p);
        return;
    default:
        return;
    }
}

void hub_scenario_tick(bench_thread *t, uint64_t now)
{
    if (scenario_phase(t) != PHASE_RUN)
        return;
    if (t->run->opt->rate > 0) {
        if (!t->filled) { /* the rate clock starts with RUN */
            t->filled = true;
            t->last_tick_ns = now;
            return;
        }
        scenario_rate_tick(t, now, twin_send_next);
        return;
    }
    if (t->filled)
        return;
    t->filled = true;
    for (unsigned i = 0; i < t->client_count; i++)
        twin_fill(t, &t->clients[i], now);
}
