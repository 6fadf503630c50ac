/*
 * hub/twin_doc.c — the twin document model (see twin_doc.h): merge
 * patches, limits, $version / $metadata, and the JSON views.
 *
 * A change is made on a draft (a deep copy) and checked before and after:
 * the per-value limits on the patch before anything is touched, the
 * section size on the patched copy of that section. Only when both pass
 * are the section and its metadata swapped into the draft, so a refused
 * patch leaves the document exactly as it was. Copying a section costs a
 * few microseconds for the 32 KB a section may hold; twin writes are rare
 * next to MQTT traffic, so simplicity wins over in-place updates.
 *
 * Metadata follows the data: a key the patch sets gets a fresh metadata
 * node (for an object, one per level below it too), a key the patch merges
 * into is re-stamped at its level and recursed into, a key the patch
 * removes loses its node; the section root is stamped on every change.
 * Desired nodes also carry "$lastUpdatedVersion", the desired $version the
 * change produced.
 */
#include "hub/twin_doc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/crypto.h"
#include "util/time.h"
#include "util/utf8.h"

#define META_UPDATED "$lastUpdated"
#define META_VERSION "$lastUpdatedVersion"

/* What a metadata stamp writes: the time and, for desired, the version. */
typedef struct stamp {
    char when[32];
    int64_t version; /* 0: no $lastUpdatedVersion (reported) */
} stamp;

/* ---- life cycle ----------------------------------------------------------- */

/* A random etag: 9 random bytes in base64 (12 characters). */
static bool random_etag(char out[HUB_ETAG_MAX + 1])
{
    uint8_t raw[9];
    return crypto_random(raw, sizeof raw) &&
           crypto_b64_encode(raw, sizeof raw, out, HUB_ETAG_MAX + 1) > 0;
}

/* Sets "$lastUpdated" (and "$lastUpdatedVersion") on one metadata node. */
static void stamp_node(json_t *node, const stamp *s)
{
    json_object_set_new(node, META_UPDATED, json_string(s->when));
    if (s->version > 0)
        json_object_set_new(node, META_VERSION, json_integer(s->version));
}

static void doc_free(twin_doc *d)
{
    json_decref(d->tags);
    json_decref(d->desired);
    json_decref(d->reported);
    json_decref(d->desired_meta);
    json_decref(d->reported_meta);
    free(d);
}

/* True when every JSON member of d was allocated. */
static bool doc_complete(const twin_doc *d)
{
    return d->tags && d->desired && d->reported && d->desired_meta && d->reported_meta;
}

twin_doc *twin_doc_new_empty(int64_t now_ms, const char *etag)
{
    twin_doc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->refs = 1;
    d->version = d->desired_version = d->reported_version = 1;
    d->tags = json_object();
    d->desired = json_object();
    d->reported = json_object();
    d->desired_meta = json_object();
    d->reported_meta = json_object();
    stamp s = {.version = 1};
    time_iso8601_ms(now_ms, s.when);
    bool ok = doc_complete(d);
    if (ok) {
        stamp_node(d->desired_meta, &s);
        s.version = 0;
        stamp_node(d->reported_meta, &s);
    }
    if (ok && etag)
        snprintf(d->etag, sizeof d->etag, "%s", etag);
    else if (ok)
        ok = random_etag(d->etag);
    if (!ok) {
        doc_free(d);
        return NULL;
    }
    return d;
}

twin_doc *twin_doc_copy(const twin_doc *src)
{
    twin_doc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    *d = *src;
    d->refs = 1;
    d->tags = json_deep_copy(src->tags);
    d->desired = json_deep_copy(src->desired);
    d->reported = json_deep_copy(src->reported);
    d->desired_meta = json_deep_copy(src->desired_meta);
    d->reported_meta = json_deep_copy(src->reported_meta);
    if (!doc_complete(d)) {
        doc_free(d);
        return NULL;
    }
    return d;
}

twin_doc *twin_doc_ref(twin_doc *d)
{
    d->refs++;
    return d;
}

void twin_doc_unref(twin_doc *d)
{
    if (d && --d->refs == 0)
        doc_free(d);
}

bool twin_doc_bump(twin_doc *d)
{
    char etag[HUB_ETAG_MAX + 1];
    if (!random_etag(etag))
        return false;
    memcpy(d->etag, etag, sizeof etag);
    d->version++;
    return true;
}

/* ---- limits ----------------------------------------------------------------- */

/* Writes the reason for a refusal; returns HUB_BAD_REQUEST. */
static hub_status refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static hub_status refuse(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return HUB_BAD_REQUEST;
}

/* A property name: 1..1024 bytes, no control character, '.', '$' or ' '. */
static hub_status check_key(const char *key, size_t len, char *why, size_t whylen)
{
    if (len == 0)
        return refuse(why, whylen, "empty property names are not allowed");
    if (len > TWIN_KEY_MAX_BYTES)
        return refuse(why, whylen, "property name longer than %d bytes", TWIN_KEY_MAX_BYTES);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c == 0x7f)
            return refuse(why, whylen, "property name with a control character");
        if (c == '.' || c == '$' || c == ' ')
            return refuse(why, whylen, "property name '%.*s' contains '.', '$' or a space",
                          (int)utf8_fit(key, strlen(key), 64), key);
    }
    return HUB_OK;
}

/* Walks one value at nesting `depth` (a container directly in the section
 * root has depth 1). */
static hub_status check_value(const json_t *v, int depth, char *why, size_t whylen)
{
    if (json_is_object(v) || json_is_array(v)) {
        if (depth > TWIN_DEPTH_MAX)
            return refuse(why, whylen, "objects nested deeper than %d levels", TWIN_DEPTH_MAX);
    }
    if (json_is_object(v)) {
        const char *key;
        json_t *member;
        json_object_foreach((json_t *)v, key, member) {
            hub_status st = check_key(key, strlen(key), why, whylen);
            if (st == HUB_OK)
                st = check_value(member, depth + 1, why, whylen);
            if (st != HUB_OK)
                return st;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            hub_status st = check_value(item, depth + 1, why, whylen);
            if (st != HUB_OK)
                return st;
        }
    } else if (json_is_string(v)) {
        if (json_string_length(v) > TWIN_STRING_MAX_BYTES)
            return refuse(why, whylen, "string value longer than %d bytes", TWIN_STRING_MAX_BYTES);
    } else if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n > TWIN_INT_MAX || n < -TWIN_INT_MAX)
            return refuse(why, whylen, "integer outside +-%lld", TWIN_INT_MAX);
    }
    return HUB_OK;
}

hub_status twin_doc_check_patch(const json_t *patch, char *why, size_t whylen)
{
    if (!json_is_object(patch))
        return refuse(why, whylen, "a twin patch must be a JSON object");
    return check_value(patch, 0, why, whylen);
}

size_t twin_doc_size(const json_t *value)
{
    size_t total = 0;
    const char *key;
    json_t *member;
    size_t i;
    switch (json_typeof(value)) {
    case JSON_OBJECT:
        json_object_foreach((json_t *)value, key, member)
            total += strlen(key) + twin_doc_size(member);
        return total;
    case JSON_ARRAY:
        json_array_foreach(value, i, member)
            total += twin_doc_size(member);
        return total;
    case JSON_STRING:
        return json_string_length(value);
    case JSON_INTEGER:
    case JSON_REAL:
        return 8;
    default: /* true, false, null */
        return 4;
    }
}

/* ---- merge patch with metadata ----------------------------------------------- */

/* A copy of v in which objects lost their null members (recursively), as
 * merging v into nothing gives. Arrays are kept as they are. */
static json_t *without_nulls(const json_t *v)
{
    if (!json_is_object(v))
        return json_deep_copy(v);
    json_t *out = json_object();
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)v, key, member) {
        if (!out)
            return NULL;
        if (json_is_null(member))
            continue;
        json_t *copy = without_nulls(member);
        if (!copy || json_object_set_new(out, key, copy) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* A fresh metadata node for value v (one per object level below it). */
static json_t *meta_for(const json_t *v, const stamp *s)
{
    json_t *node = json_object();
    if (!node)
        return NULL;
    stamp_node(node, s);
    if (!json_is_object(v))
        return node;
    const char *key;
    json_t *member;
    json_object_foreach((json_t *)v, key, member) {
        json_t *child = meta_for(member, s);
        if (!child || json_object_set_new(node, key, child) != 0) {
            json_decref(node);
            return NULL;
        }
    }
    return node;
}

/* Merges patch into target (both objects) and keeps meta (target's
 * metadata node) in step. False when out of memory (target and meta are
 * drafts: the caller throws them away). */
static bool merge(json_t *target, json_t *meta, const json_t *patch, const stamp *s)
{
    const char *key;
    json_t *pv;
    stamp_node(meta, s);
    json_object_foreach((json_t *)patch, key, pv) {
        json_t *cur = json_object_get(target, key);
        if (json_is_null(pv)) {
            json_object_del(target, key);
            json_object_del(meta, key);
            continue;
        }
        if (json_is_object(pv) && json_is_object(cur)) {
            json_t *child_meta = json_object_get(meta, key);
            if (!json_is_object(child_meta)) {
                child_meta = json_object();
                if (!child_meta || json_object_set_new(meta, key, child_meta) != 0)
                    return false;
            }
            if (!merge(cur, child_meta, pv, s))
                return false;
            continue;
        }
        json_t *value = without_nulls(pv);
        json_t *node = value ? meta_for(value, s) : NULL;
        if (!node) {
            json_decref(value);
            return false;
        }
        if (json_object_set_new(target, key, value) != 0) { /* value already freed */
            json_decref(node);
            return false;
        }
        if (json_object_set_new(meta, key, node) != 0)
            return false;
    }
    return true;
}

/* The section's data and metadata slots in d (meta NULL for tags). */
static void section_slots(twin_doc *d, twin_section section, json_t ***data, json_t ***meta,
                          int64_t **version)
{
    switch (section) {
    case TWIN_TAGS:
        *data = &d->tags;
        *meta = NULL;
        *version = NULL;
        return;
    case TWIN_DESIRED:
        *data = &d->desired;
        *meta = &d->desired_meta;
        *version = &d->desired_version;
        return;
    case TWIN_REPORTED:
    default:
        *data = &d->reported;
        *meta = &d->reported_meta;
        *version = &d->reported_version;
        return;
    }
}

/* Builds the patched copies of one section and its metadata. */
static bool build_section(const json_t *data, const json_t *meta, const json_t *patch,
                          bool replace, const stamp *s, json_t **new_data, json_t **new_meta)
{
    *new_data = replace ? json_object() : json_deep_copy(data);
    *new_meta = replace || !meta ? json_object() : json_deep_copy(meta);
    if (!*new_data || !*new_meta || !merge(*new_data, *new_meta, patch, s)) {
        json_decref(*new_data);
        json_decref(*new_meta);
        return false;
    }
    return true;
}

hub_status twin_doc_apply(twin_doc *d, twin_section section, const json_t *patch, bool replace,
                          int64_t now_ms, char *why, size_t whylen)
{
    hub_status st = twin_doc_check_patch(patch, why, whylen);
    if (st != HUB_OK)
        return st;
    json_t **data, **meta;
    int64_t *version;
    section_slots(d, section, &data, &meta, &version);
    stamp s = {.version = section == TWIN_DESIRED ? d->desired_version + 1 : 0};
    time_iso8601_ms(now_ms, s.when);
    json_t *new_data, *new_meta;
    if (!build_section(*data, meta ? *meta : NULL, patch, replace, &s, &new_data, &new_meta))
        return refuse(why, whylen, "out of memory");
    size_t limit = section == TWIN_TAGS ? TWIN_TAGS_MAX_BYTES : TWIN_PROPERTIES_MAX_BYTES;
    size_t size = twin_doc_size(new_data);
    if (size > limit) {
        json_decref(new_data);
        json_decref(new_meta);
        snprintf(why, whylen, "%s would be %zu bytes, more than the %zu allowed",
                 section == TWIN_TAGS ? "tags" : section == TWIN_DESIRED ? "desired properties"
                                                                          : "reported properties",
                 size, limit);
        return HUB_BAD_REQUEST;
    }
    json_decref(*data);
    *data = new_data;
    if (meta) {
        json_decref(*meta);
        *meta = new_meta;
        (*version)++;
    } else {
        json_decref(new_meta);
    }
    return HUB_OK;
}

/* ---- views -------------------------------------------------------------------- */

/* {...data, "$metadata": meta, "$version": version}; meta NULL = none. */
static json_t *section_json(const json_t *data, const json_t *meta, int64_t version)
{
    json_t *o = json_deep_copy(data);
    if (!o)
        return NULL;
    if ((meta && json_object_set_new(o, "$metadata", json_deep_copy(meta)) != 0) ||
        json_object_set_new(o, "$version", json_integer(version)) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* {"desired": desired, "reported": reported}, taking both references;
 * NULL (both freed) when either is NULL. */
static json_t *both_sections(json_t *desired, json_t *reported)
{
    if (!desired || !reported) {
        json_decref(desired);
        json_decref(reported);
        return NULL;
    }
    return json_pack("{s:o, s:o}", "desired", desired, "reported", reported);
}

json_t *twin_doc_device_json(const twin_doc *d)
{
    return both_sections(section_json(d->desired, NULL, d->desired_version),
                         section_json(d->reported, NULL, d->reported_version));
}

json_t *twin_doc_service_json(const twin_doc *d, const char *device_id, const char *module_id,
                              const json_t *extra)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    bool ok = json_object_set_new(o, "deviceId", json_string(device_id)) == 0;
    if (module_id && *module_id)
        ok &= json_object_set_new(o, "moduleId", json_string(module_id)) == 0;
    ok &= json_object_set_new(o, "etag", json_string(d->etag)) == 0;
    ok &= json_object_set_new(o, "version", json_integer(d->version)) == 0;
    if (extra)
        ok &= json_object_update(o, (json_t *)extra) == 0;
    ok &= json_object_set_new(o, "tags", json_deep_copy(d->tags)) == 0;
    json_t *props = both_sections(section_json(d->desired, d->desired_meta, d->desired_version),
                                  section_json(d->reported, d->reported_meta,
                                               d->reported_version));
    ok &= props && json_object_set_new(o, "properties", props) == 0;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- reading the stored form ---------------------------------------------------- */

/* Splits a stored section into data, metadata and $version. */
static bool read_section(const json_t *in, json_t **data, json_t **meta, int64_t *version)
{
    if (in && !json_is_object(in))
        return false;
    *data = in ? json_deep_copy(in) : json_object();
    if (!*data)
        return false;
    json_t *m = json_object_get(*data, "$metadata");
    json_t *v = json_object_get(*data, "$version");
    *meta = json_is_object(m) ? json_incref(m) : json_object();
    *version = json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 1;
    json_object_del(*data, "$metadata");
    json_object_del(*data, "$version");
    return *meta != NULL;
}

twin_doc *twin_doc_from_json(const json_t *j, char *why, size_t whylen)
{
    twin_doc *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    d->refs = 1;
    const json_t *tags = json_object_get(j, "tags");
    const json_t *props = json_object_get(j, "properties");
    const char *etag = json_string_value(json_object_get(j, "etag"));
    json_t *version = json_object_get(j, "version");
    d->tags = json_is_object(tags) ? json_deep_copy(tags) : json_object();
    bool ok = json_is_object(j) && (!tags || json_is_object(tags)) &&
              (!props || json_is_object(props)) && etag && strlen(etag) <= HUB_ETAG_MAX &&
              json_is_integer(version) &&
              read_section(json_object_get(props, "desired"), &d->desired, &d->desired_meta,
                           &d->desired_version) &&
              read_section(json_object_get(props, "reported"), &d->reported, &d->reported_meta,
                           &d->reported_version) &&
              doc_complete(d);
    if (!ok) {
        snprintf(why, whylen, "not a twin document");
        doc_free(d);
        return NULL;
    }
    snprintf(d->etag, sizeof d->etag, "%s", etag);
    d->version = json_integer_value(version);
    return d;
}
