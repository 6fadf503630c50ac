/*
 * fuzz/fuzz_twin_patch.c — libFuzzer target for the twin document model
 * (hub/twin_doc.c): JSON merge patches of tags, desired and reported, the
 * limits of ../shared/spec/iothub-mqtt5.md §7, $version and $metadata.
 *
 * Input: up to 4 writes separated by NUL bytes (JSON text has none). Each
 * write is one control character and a JSON text: ('0' + n) with n & 3 the
 * section (0 tags, 1 desired, 2 reported, 3 tags) and n & 4 a replacement
 * instead of a merge. The JSON (parsed by jansson as twin.c does) is applied
 * with twin_doc_apply to one document, in order. After every write:
 *   refused   the document's serialisation (service view, sorted keys) is
 *             byte for byte what it was, and a reason was given, in
 *             valid UTF-8 (it is sent to devices and HTTP callers);
 *   accepted  the section equals an independent RFC 7396 merge of the patch
 *             into its old value (for a replacement: into {}); the other
 *             sections and the twin version are untouched; the section's
 *             $version went up by exactly one; its §7 size is within 8 KB
 *             (tags) or 32 KB (desired, reported); the whole section passes
 *             the per-value checks itself (keys, depth, strings, integers)
 *             and holds no null member outside arrays; its metadata tree has the
 *             section's shape, a $lastUpdated at every object level and (for
 *             desired) $lastUpdatedVersion no newer than the $version.
 * At the end the service view must read back (twin_doc_from_json) into a
 * document with the same service view; each write's JSON is also offered
 * to twin_doc_from_json as a stored document. Broken invariants abort.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/twin_doc.h"

#define MAX_WRITES 4
#define NOW_MS 1767225600123LL /* 2026-01-01T00:00:00.123Z */

/* A broken invariant: say which one, then abort (libFuzzer saves the input). */
#define check(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    abort();
}

static char *dump(const twin_doc *d)
{
    json_t *j = twin_doc_service_json(d, "fuzz-device", NULL, NULL);
    check(j != NULL);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    check(s != NULL);
    return s;
}

/* RFC 7396 MergePatch(target, patch), written from the RFC's pseudo code;
 * target may be NULL (absent). Returns a new reference. */
static json_t *reference_merge(const json_t *target, const json_t *patch)
{
    if (!json_is_object(patch))
        return json_deep_copy(patch);
    json_t *out = json_is_object(target) ? json_deep_copy(target) : json_object();
    check(out != NULL);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)patch, key, value) {
        if (json_is_null(value)) {
            json_object_del(out, key);
            continue;
        }
        json_t *merged = reference_merge(json_object_get(out, key), value);
        check(merged && json_object_set_new(out, key, merged) == 0);
    }
    return out;
}

/* No member of v or of the objects below it is null (arrays are values
 * kept verbatim: they and what they hold may contain nulls). */
static bool no_null_members(const json_t *v)
{
    const char *key;
    json_t *m;
    if (json_is_object(v))
        json_object_foreach((json_t *)v, key, m)
            if (json_is_null(m) || !no_null_members(m))
                return false;
    return true;
}

/* meta mirrors the object data: stamped at every level, a child node per
 * member of data, nothing else but '$' keys. */
static bool meta_shape(const json_t *data, const json_t *meta, int64_t max_version, bool desired)
{
    if (!json_is_object(meta) || !json_is_string(json_object_get(meta, "$lastUpdated")))
        return false;
    json_t *lv = json_object_get(meta, "$lastUpdatedVersion");
    if (desired && !(json_is_integer(lv) && json_integer_value(lv) >= 1 &&
                     json_integer_value(lv) <= max_version))
        return false;
    if (!desired && lv)
        return false;
    if (!json_is_object(data))
        return true;
    const char *key;
    json_t *m;
    json_object_foreach((json_t *)data, key, m)
        if (!meta_shape(m, json_object_get(meta, key), max_version, desired))
            return false;
    json_object_foreach((json_t *)meta, key, m)
        if (key[0] != '$' && !json_object_get(data, key))
            return false;
    return true;
}

typedef struct snapshot {
    json_t *tags, *desired, *reported; /* copies */
    int64_t version, desired_version, reported_version;
} snapshot;

static snapshot take(const twin_doc *d)
{
    snapshot s = {json_deep_copy(d->tags), json_deep_copy(d->desired),
                  json_deep_copy(d->reported), d->version, d->desired_version,
                  d->reported_version};
    check(s.tags && s.desired && s.reported);
    return s;
}

static void drop(snapshot *s)
{
    json_decref(s->tags);
    json_decref(s->desired);
    json_decref(s->reported);
}

static void accepted(const twin_doc *d, const snapshot *before, twin_section sec,
                     const json_t *patch, bool replace)
{
    const json_t *old = sec == TWIN_TAGS ? before->tags
                        : sec == TWIN_DESIRED ? before->desired : before->reported;
    const json_t *now = sec == TWIN_TAGS ? d->tags : sec == TWIN_DESIRED ? d->desired : d->reported;
    json_t *want = reference_merge(replace ? NULL : old, patch);
    check(json_equal(want, (json_t *)now));
    json_decref(want);

    check(d->version == before->version);
    check(sec == TWIN_TAGS || json_equal(d->tags, before->tags));
    check(sec == TWIN_DESIRED ? d->desired_version == before->desired_version + 1
                              : d->desired_version == before->desired_version &&
                                    json_equal(d->desired, before->desired));
    check(sec == TWIN_REPORTED ? d->reported_version == before->reported_version + 1
                               : d->reported_version == before->reported_version &&
                                     json_equal(d->reported, before->reported));

    size_t limit = sec == TWIN_TAGS ? TWIN_TAGS_MAX_BYTES : TWIN_PROPERTIES_MAX_BYTES;
    check(twin_doc_size(now) <= limit);
    char why[TWIN_WHY_MAX];
    check(twin_doc_check_patch(now, why, sizeof why) == HUB_OK);
    check(no_null_members(now));
}

static void invariants(const twin_doc *d)
{
    check(twin_doc_size(d->tags) <= TWIN_TAGS_MAX_BYTES);
    check(twin_doc_size(d->desired) <= TWIN_PROPERTIES_MAX_BYTES);
    check(twin_doc_size(d->reported) <= TWIN_PROPERTIES_MAX_BYTES);
    check(meta_shape(d->desired, d->desired_meta, d->desired_version, true));
    check(meta_shape(d->reported, d->reported_meta, d->reported_version, false));
    check(json_integer_value(json_object_get(d->desired_meta, "$lastUpdatedVersion")) ==
          d->desired_version);
}

static void write_once(twin_doc *d, uint8_t ctl, const char *text, size_t len)
{
    unsigned n = (unsigned)(ctl - '0');
    twin_section sec = (n & 3) == 1 ? TWIN_DESIRED : (n & 3) == 2 ? TWIN_REPORTED : TWIN_TAGS;
    bool replace = (n & 4) != 0;
    json_error_t jerr;
    json_t *patch = json_loadb(text, len, 0, &jerr);
    if (!patch)
        return;

    char why[TWIN_WHY_MAX] = "";
    char *before_text = dump(d);
    snapshot before = take(d);
    hub_status st = twin_doc_apply(d, sec, patch, replace, NOW_MS + ctl, why, sizeof why);
    if (st == HUB_OK) {
        accepted(d, &before, sec, patch, replace);
    } else {
        check(st == HUB_BAD_REQUEST && why[0] != '\0');
        /* the reason goes to devices as an MQTT user property and to
         * HTTP callers in a JSON body: it must be UTF-8 (jansson checks) */
        json_t *w = json_string(why);
        check(w != NULL);
        json_decref(w);
        char *after_text = dump(d);
        check(strcmp(before_text, after_text) == 0);
        free(after_text);
    }
    invariants(d);
    drop(&before);
    free(before_text);

    /* the same JSON as a stored document: read it or refuse it */
    twin_doc *stored = twin_doc_from_json(patch, why, sizeof why);
    if (stored) {
        char *s = dump(stored);
        free(s);
        json_t *dv = twin_doc_device_json(stored);
        check(dv != NULL);
        json_decref(dv);
        twin_doc_unref(stored);
    }
    json_decref(patch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    twin_doc *d = twin_doc_new_empty(NOW_MS, "fuzzetag");
    check(d != NULL);
    const uint8_t *p = data, *end = data + size;
    for (int i = 0; i < MAX_WRITES && p < end; i++) {
        const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
        const uint8_t *stop = nul ? nul : end;
        if (stop > p && p[0] >= '0' && p[0] <= '7')
            write_once(d, p[0], (const char *)p + 1, (size_t)(stop - p - 1));
        p = nul ? nul + 1 : end;
    }

    /* stored form round trip */
    char *a = dump(d);
    json_t *j = twin_doc_service_json(d, "fuzz-device", NULL, NULL);
    char why[TWIN_WHY_MAX];
    twin_doc *back = j ? twin_doc_from_json(j, why, sizeof why) : NULL;
    check(back != NULL);
    char *b = dump(back);
    check(strcmp(a, b) == 0);
    free(a);
    free(b);
    json_decref(j);
    twin_doc_unref(back);
    twin_doc_unref(d);
    return 0;
}
