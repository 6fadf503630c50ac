/*
 * tools/iothub/simulate_util.c — the simulator's pure helpers (see
 * simulate.h): no I/O and no clocks, so the unit tests can pin them down.
 *
 * The sensor is a random walk driven by a 64-bit xorshift generator kept in
 * the sensor itself (no process-wide state): temperature steps by at most
 * ±0.3 °C within 15–35 °C, humidity by at most ±1 % within 30–70 %, so the
 * numbers look like a room and stay plausible for hours.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/iothub/simulate.h"

#define TEMP_MIN_DC 150
#define TEMP_MAX_DC 350
#define TEMP_STEP_DC 3
#define HUMIDITY_MIN_DPCT 300
#define HUMIDITY_MAX_DPCT 700
#define HUMIDITY_STEP_DPCT 10

bool sim_parse_address(const char *text, uint16_t default_port, char *host, size_t cap,
                       uint16_t *port)
{
    const char *host_start = text, *host_end, *port_text = NULL;
    if (text[0] == '[') { /* [v6] or [v6]:port */
        host_start = text + 1;
        host_end = strchr(host_start, ']');
        if (!host_end || (host_end[1] && host_end[1] != ':'))
            return false;
        port_text = host_end[1] ? host_end + 2 : NULL;
    } else {
        host_end = strrchr(text, ':');
        if (host_end && strchr(text, ':') != host_end)
            return false; /* a bare IPv6 address needs brackets */
        port_text = host_end ? host_end + 1 : NULL;
        if (!host_end)
            host_end = text + strlen(text);
    }
    size_t host_len = (size_t)(host_end - host_start);
    if (host_len == 0 || host_len >= cap)
        return false;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    *port = default_port;
    if (!port_text)
        return true;
    char *end;
    unsigned long value = strtoul(port_text, &end, 10);
    if (!*port_text || *end || port_text[0] < '0' || port_text[0] > '9' || value == 0 ||
        value > 65535)
        return false;
    *port = (uint16_t)value;
    return true;
}

/* ---- the sensor ------------------------------------------------------------------- */

static uint64_t next_random(sim_sensor *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

/* value + a step in [-step, step], kept within [min, max]. */
static int walk(sim_sensor *s, int value, int step, int min, int max)
{
    int delta = (int)(next_random(s) % (uint64_t)(2 * step + 1)) - step;
    value += delta;
    return value < min ? min : value > max ? max : value;
}

void sim_sensor_init(sim_sensor *s, uint64_t seed)
{
    s->rng = seed ? seed : 0x9E3779B97F4A7C15ull; /* xorshift must not start at 0 */
    s->temperature_dc = 215;
    s->humidity_dpct = 450;
}

/* Tenths as "d.d" (also for negative values, though the walk never goes there). */
static int tenths(char *buf, size_t cap, int value)
{
    int whole = value / 10, frac = value % 10;
    return snprintf(buf, cap, "%s%d.%d", value < 0 && whole == 0 ? "-" : "", whole,
                    frac < 0 ? -frac : frac);
}

bool sim_sensor_next(sim_sensor *s, uint64_t seq, char *buf, size_t cap)
{
    s->temperature_dc = walk(s, s->temperature_dc, TEMP_STEP_DC, TEMP_MIN_DC, TEMP_MAX_DC);
    s->humidity_dpct = walk(s, s->humidity_dpct, HUMIDITY_STEP_DPCT, HUMIDITY_MIN_DPCT,
                            HUMIDITY_MAX_DPCT);
    char t[16], h[16];
    tenths(t, sizeof t, s->temperature_dc);
    tenths(h, sizeof h, s->humidity_dpct);
    int n = snprintf(buf, cap, "{\"temperature\":%s,\"humidity\":%s,\"seq\":%" PRIu64 "}", t, h,
                     seq);
    return n >= 0 && (size_t)n < cap;
}

/* ---- twin and properties -------------------------------------------------------------- */

json_t *sim_reported_for_desired(const uint8_t *payload, size_t len)
{
    json_t *patch = json_loadb((const char *)payload, len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(patch)) {
        json_decref(patch);
        return NULL;
    }
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(patch, tmp, key, value) {
        if (key[0] == '$')
            json_object_del(patch, key);
    }
    return patch;
}

const char *sim_user_prop(const mqtt_props *props, const char *name, char *buf, size_t cap)
{
    mqtt_iter it;
    mqtt_bytes n, v;
    mqtt_user_props_iter(props, &it);
    while (mqtt_user_props_next(&it, &n, &v)) {
        if (!mqtt_bytes_eq_str(n, name))
            continue;
        if (v.len >= cap)
            return NULL;
        if (v.len)
            memcpy(buf, v.p, v.len);
        buf[v.len] = '\0';
        return buf;
    }
    return NULL;
}

void sim_format_utc(uint64_t epoch_ms, char *buf, size_t cap)
{
    time_t t = (time_t)(epoch_ms / 1000u);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "%" PRIu64, epoch_ms);
}
