/*
 * fuzz/fuzz_mqtt_topic.c — libFuzzer target for topic names and filters.
 *
 * Input: "filter\0name" (a missing '\0' means filter == name). The
 * optimized single-pass matcher of topic.c is compared with a naive
 * reference that splits both into levels; any disagreement aborts. Validity
 * checks and the $share split run on every input (memory errors are caught
 * by ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"

#define MAXL 64

static size_t split(mqtt_bytes s, mqtt_bytes *lv)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= s.len; i++) {
        if (i == s.len || s.p[i] == '/') {
            if (n == MAXL)
                return SIZE_MAX;
            lv[n++] = (mqtt_bytes){s.p + start, (uint32_t)(i - start)};
            start = i + 1;
        }
    }
    return n;
}

static bool is(mqtt_bytes b, char c)
{
    return b.len == 1 && b.p[0] == c;
}

/* The definition of §4.7, level by level. */
static int reference(mqtt_bytes filter, mqtt_bytes name)
{
    mqtt_bytes f[MAXL], n[MAXL];
    size_t fn = split(filter, f), nn = split(name, n);
    if (fn == SIZE_MAX || nn == SIZE_MAX)
        return -1;
    if (name.len && name.p[0] == '$' && (is(f[0], '+') || is(f[0], '#')))
        return 0;
    for (size_t i = 0; i < fn; i++) {
        if (is(f[i], '#'))
            return 1; /* matches the parent and any children */
        if (i >= nn)
            return 0;
        if (is(f[i], '+'))
            continue;
        if (f[i].len != n[i].len || memcmp(f[i].p, n[i].p, f[i].len) != 0)
            return 0;
    }
    return fn == nn;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    mqtt_bytes filter = {data, (uint32_t)(nul ? (size_t)(nul - data) : size)};
    mqtt_bytes name = nul ? (mqtt_bytes){nul + 1, (uint32_t)(size - filter.len - 1)}
                          : filter;
    bool fv = mqtt_topic_filter_valid(filter);
    bool nv = mqtt_topic_name_valid(name);
    (void)mqtt_topic_filter_has_wildcard(filter);
    mqtt_bytes g, rf;
    int sh = mqtt_shared_filter_split(filter, &g, &rf);
    if (sh == 1 && (g.len == 0 || rf.len == 0 || g.p + g.len + 1 != rf.p ||
                    rf.p + rf.len != filter.p + filter.len))
        abort();
    if (nv && mqtt_topic_filter_has_wildcard(name))
        abort();
    if (fv && nv) {
        int want = reference(filter, name);
        if (want >= 0 && mqtt_topic_matches(filter, name) != (want == 1))
            abort();
    }
    return 0;
}
