/*
 * mqtt/topic.c — topic names and filters (MQTT 5 §4.7, 3.1.1 §4.7).
 *
 * Design: everything works on byte slices without copying or splitting into
 * levels; '/', '+', '#' and '$' are ASCII, so byte-wise scanning is correct
 * on UTF-8 (which the decoder has already validated). Matching walks filter
 * and name level by level in one pass, O(len(filter) + len(name)).
 *
 * Matching rules:
 *  - '+' matches exactly one level, which may be empty ("+/+" matches
 *    "/finance", "sport/+" matches "sport/" but not "sport");
 *  - '#' matches the parent level and any number of child levels ("sport/#"
 *    matches "sport");
 *  - a filter starting with a wildcard does not match a name starting with
 *    '$' [MQTT-4.7.2-1] ("#" does not match "$SYS/x", "$SYS/#" does).
 * mqtt_topic_matches() expects a valid filter (mqtt_topic_filter_valid) and
 * a valid name; it never reads out of bounds either way.
 */
#include <string.h>

#include "mqtt/codec.h"

bool mqtt_topic_filter_has_wildcard(mqtt_bytes filter)
{
    return filter.len &&
           (memchr(filter.p, '+', filter.len) || memchr(filter.p, '#', filter.len));
}

bool mqtt_topic_name_valid(mqtt_bytes topic)
{
    /* [MQTT-4.7.3-1] at least one character; [MQTT-4.7.0-1] no wildcards;
     * [MQTT-4.7.3-3] at most 65,535 bytes. */
    return topic.len > 0 && topic.len <= 0xFFFF &&
           !mqtt_topic_filter_has_wildcard(topic);
}

bool mqtt_topic_filter_valid(mqtt_bytes filter)
{
    if (filter.len == 0 || filter.len > 0xFFFF)
        return false; /* [MQTT-4.7.3-1] */
    const uint8_t *f = filter.p;
    size_t n = filter.len;
    for (size_t i = 0; i < n; i++) {
        bool level_start = i == 0 || f[i - 1] == '/';
        bool level_end = i + 1 == n || f[i + 1] == '/';
        if (f[i] == '+') {
            if (!level_start || !level_end)
                return false; /* [MQTT-4.7.1-2] '+' occupies a whole level */
        } else if (f[i] == '#') {
            if (!level_start || i + 1 != n)
                return false; /* [MQTT-4.7.1-1] '#' alone and last */
        }
    }
    return true;
}

bool mqtt_topic_matches(mqtt_bytes filter, mqtt_bytes name)
{
    const uint8_t *f = filter.p, *n = name.p;
    size_t fl = filter.len, nl = name.len, fi = 0, ni = 0;
    if (fl == 0)
        return false;
    if (nl && n[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false; /* [MQTT-4.7.2-1] */
    for (;;) {
        /* Both at the start of a level. */
        if (fi < fl && f[fi] == '#')
            return true;
        if (fi < fl && f[fi] == '+') {
            fi++;
            while (ni < nl && n[ni] != '/')
                ni++;
        } else {
            while (fi < fl && f[fi] != '/' && ni < nl && n[ni] != '/') {
                if (f[fi] != n[ni])
                    return false;
                fi++;
                ni++;
            }
            if ((fi < fl && f[fi] != '/') || (ni < nl && n[ni] != '/'))
                return false;
        }
        /* Both at the end of a level. */
        bool fend = fi == fl, nend = ni == nl;
        if (fend || nend) {
            if (fend && nend)
                return true;
            /* Only "x/#" can match a name that ended at "x". */
            return nend && fl - fi == 2 && f[fi] == '/' && f[fi + 1] == '#';
        }
        if (f[fi] != '/' || n[ni] != '/')
            return false; /* filter malformed ('+' not alone) */
        fi++;
        ni++;
    }
}

int mqtt_shared_filter_split(mqtt_bytes filter, mqtt_bytes *group,
                             mqtt_bytes *real_filter)
{
    static const char prefix[] = "$share/";
    const size_t pl = sizeof prefix - 1;
    if (filter.len < pl || memcmp(filter.p, prefix, pl) != 0)
        return 0;
    const uint8_t *g = filter.p + pl;
    size_t rest = filter.len - pl;
    const uint8_t *slash = rest ? memchr(g, '/', rest) : NULL;
    if (!slash || slash == g)
        return -1; /* no filter, or empty share name */
    mqtt_bytes name = {g, (uint32_t)(slash - g)};
    if (mqtt_topic_filter_has_wildcard(name))
        return -1; /* [MQTT-4.8.2-2] */
    mqtt_bytes real = {slash + 1, (uint32_t)(rest - name.len - 1)};
    if (real.len == 0)
        return -1;
    if (group)
        *group = name;
    if (real_filter)
        *real_filter = real;
    return 1;
}
