/*
 * hub/twin_doc.c — the twin document model (see twin_doc.h): merge
 * patches, limits, $version / $metadata, and the JSON views.
 *
 * A change is made on a draft and checked before and after: the per-value
 * limits on the patch before anything is touched, the section size on the
 * patched section. Only when both pass are the section and its metadata
 * swapped into the draft, so a refused patch leaves the document exactly
 * as it was.
 *
 * Structural sharing. Published documents never change, so versions of a
 * twin share everything a write did not touch: a draft is a shallow copy
 * (references to the same trees and texts), and a patch copies only the
 * objects on its own paths (path copying: a shallow copy of each object
 * it merges into, new nodes for what it sets; values without nulls are
 * taken from the patch by reference). A reported patch of one key thus
 * costs a few small objects however large desired or tags are, where a
 * deep copy of the twin (and a serialisation of all of it) per write used
 * to dominate the cost of a twin round trip. Nothing here ever edits a
 * tree reachable from a published document, which is what makes the
 * sharing safe; jansson's reference counts are atomic, so trees may be
 * released on any thread.
 *
 * Texts. Every tree has its compact JSON text next to it, rendered when
 * the tree is built; the views are spliced from those texts by plain
 * copies (twin_text.h), so a Get twin and the stored form of a write
 * cost a memcpy of the twin plus a few numbers and quoted ids.
 *
 * Metadata follows the data: a key the patch sets gets a fresh metadata
 * node (for an object, one per level below it too), a key the patch merges
 * into is re-stamped at its level and recursed into, a key the patch
 * removes loses its node; the section root is stamped on every change.
 * Desired nodes also carry "$lastUpdatedVersion", the desired $version the
 * change produced. All nodes of one change share one time string value.
 */
#include "hub/twin_doc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/twin_text.h"
#include "util/crypto.h"
#include "util/time.h"
#include "util/utf8.h"

#define META_UPDATED "$lastUpdated"
#define META_VERSION "$lastUpdatedVersion"

/* What a metadata stamp writes: the time and, for desired, the version
 * (shared JSON values, set by reference on every node). */
typedef struct stamp {
    json_t *when;
    json_t *version; /* NULL: no $lastUpdatedVersion (reported, tags) */
} stamp;

/* ---- life cycle ----------------------------------------------------------- */

/* Sets "$lastUpdated" (and "$lastUpdatedVersion") on one metadata node. */
static bool stamp_node(json_t *node, const stamp *s)
{
    return json_object_set(node, META_UPDATED, s->when) == 0 &&
           (!s->version || json_object_set(node, META_VERSION, s->version) == 0);
}

/* The stamp of a change at now_ms; version 0: none. False when out of memory. */
static bool stamp_init(stamp *s, int64_t now_ms, int64_t version)
{
    char when[32];
    time_iso8601_ms(now_ms, when);
    s->when = json_string_nocheck(when); /* ASCII: no UTF-8 check needed */
    s->version = version > 0 ? json_integer(version) : NULL;
    return s->when && (version <= 0 || s->version);
}

static void stamp_done(stamp *s)
{
    json_decref(s->when);
    json_decref(s->version);
}

static void doc_free(twin_doc *d)
{
    json_decref(d->tags);
    json_decref(d->desired);
    json_decref(d->reported);
    json_decref(d->desired_meta);
    json_decref(d->reported_meta);
    twin_text_unref(d->tags_text);
    twin_text_unref(d->desired_text);
    twin_text_unref(d->reported_text);
    twin_text_unref(d->desired_meta_text);
    twin_text_unref(d->reported_meta_text);
    free(d);
}

/* True when every tree of d was allocated. */
static bool doc_trees(const twin_doc *d)
{
    return d->tags && d->desired && d->reported && d->desired_meta && d->reported_meta;
}

/* Renders the text of every tree of d; false when out of memory. */
static bool doc_render_all(twin_doc *d)
{
    d->tags_text = twin_text_render(d->tags);
    d->desired_text = twin_text_render(d->desired);
    d->reported_text = twin_text_render(d->reported);
    d->desired_meta_text = twin_text_render(d->desired_meta);
    d->reported_meta_text = twin_text_render(d->reported_meta);
    return d->tags_text && d->desired_text && d->reported_text && d->desired_meta_text &&
           d->reported_meta_text;
}

/* A random etag: 9 random bytes in base64 (12 characters). */
static bool random_etag(char out[HUB_ETAG_MAX + 1])
{
    uint8_t raw[9];
    return crypto_random_id(raw, sizeof raw) &&
           crypto_b64_encode(raw, sizeof raw, out, HUB_ETAG_MAX + 1) > 0;
}

twin_doc *twin_doc_new_empty(int64_t now_ms, const char *etag)
{
    twin_doc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    atomic_init(&d->refs, 1);
    d->version = d->desired_version = d->reported_version = 1;
    d->tags = json_object();
    d->desired = json_object();
    d->reported = json_object();
    d->desired_meta = json_object();
    d->reported_meta = json_object();
    stamp desired_stamp, reported_stamp;
    bool desired_ok = stamp_init(&desired_stamp, now_ms, 1);
    bool reported_ok = stamp_init(&reported_stamp, now_ms, 0);
    bool ok = desired_ok && reported_ok && doc_trees(d) &&
              stamp_node(d->desired_meta, &desired_stamp) &&
              stamp_node(d->reported_meta, &reported_stamp) && doc_render_all(d);
    stamp_done(&desired_stamp);
    stamp_done(&reported_stamp);
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
    twin_doc *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    *d = *src;
    atomic_init(&d->refs, 1);
    json_incref(d->tags);
    json_incref(d->desired);
    json_incref(d->reported);
    json_incref(d->desired_meta);
    json_incref(d->reported_meta);
    twin_text_ref(d->tags_text);
    twin_text_ref(d->desired_text);
    twin_text_ref(d->reported_text);
    twin_text_ref(d->desired_meta_text);
    twin_text_ref(d->reported_meta_text);
    return d;
}

twin_doc *twin_doc_ref(twin_doc *d)
{
    atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
    return d;
}

void twin_doc_unref(twin_doc *d)
{
    if (d && atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) == 1)
        doc_free(d);
}

/* ---- etags ----------------------------------------------------------------------- */

bool twin_etags_init(twin_etags *g)
{
    uint8_t raw[9];
    if (!crypto_random(raw, sizeof raw))
        return false;
    g->key = 0;
    for (int i = 0; i < 8; i++)
        g->key = g->key << 8 | raw[i];
    g->tail = raw[8];
    atomic_init(&g->counter, 0);
    return true;
}

/* A bijection of 64-bit values that spreads every input bit over the
 * output (the SplitMix64 finaliser): distinct counters, distinct etags. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void twin_etags_next(twin_etags *g, char out[HUB_ETAG_MAX + 1])
{
    uint64_t n = atomic_fetch_add_explicit(&g->counter, 1, memory_order_relaxed) + 1;
    uint64_t v = mix64(g->key + n);
    uint8_t raw[9];
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)(v >> (8 * i));
    raw[8] = g->tail;
    crypto_b64_encode(raw, sizeof raw, out, HUB_ETAG_MAX + 1);
}

void twin_doc_bump(twin_doc *d, twin_etags *g)
{
    twin_etags_next(g, d->etag);
    d->version++;
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

/* True when an object in v (v itself or nested objects) has a null member. */
static bool has_null_member(const json_t *v)
{
    const char *key;
    json_t *member;
    if (!json_is_object(v))
        return false;
    json_object_foreach((json_t *)v, key, member)
        if (json_is_null(member) || has_null_member(member))
            return true;
    return false;
}

/* v as merging it into nothing gives: objects lose their null members
 * (recursively), arrays are kept as they are. A new reference: v itself
 * when it has nothing to drop (values are never edited, so sharing is
 * safe). NULL when out of memory. */
static json_t *without_nulls(json_t *v)
{
    if (!has_null_member(v))
        return json_incref(v);
    json_t *out = json_object();
    const char *key;
    json_t *member;
    json_object_foreach(v, key, member) {
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
    if (!node || !stamp_node(node, s)) {
        json_decref(node);
        return NULL;
    }
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

/* A new object: o's members by reference (NULL o: an empty object). */
static json_t *shallow_copy(const json_t *o)
{
    return json_is_object(o) ? json_copy((json_t *)o) : json_object();
}

static bool merge_member(json_t *out, json_t *out_meta, const char *key, json_t *pv,
                         const stamp *s);

/* Merges patch into target (objects; target NULL: empty) without touching
 * it: *out becomes a shallow copy of target with the patch merged in, and
 * *out_meta the same of meta (target's metadata node, may be NULL). Only
 * the objects on the patch's paths are copied. False when out of memory
 * (nothing to free). */
static bool merge(const json_t *target, const json_t *meta, const json_t *patch, const stamp *s,
                  json_t **out, json_t **out_meta)
{
    json_t *o = shallow_copy(target);
    json_t *m = shallow_copy(meta);
    bool ok = o && m && stamp_node(m, s);
    const char *key;
    json_t *pv;
    json_object_foreach((json_t *)patch, key, pv) {
        if (!ok)
            break;
        ok = merge_member(o, m, key, pv, s);
    }
    if (!ok) {
        json_decref(o);
        json_decref(m);
        return false;
    }
    *out = o;
    *out_meta = m;
    return true;
}

/* One member of a patch: removes, merges into or sets out[key] (and its
 * metadata node). out and out_meta are private copies. */
static bool merge_member(json_t *out, json_t *out_meta, const char *key, json_t *pv,
                         const stamp *s)
{
    json_t *cur = json_object_get(out, key);
    if (json_is_null(pv)) {
        json_object_del(out, key);
        json_object_del(out_meta, key);
        return true;
    }
    json_t *value, *node;
    if (json_is_object(pv) && json_is_object(cur)) {
        if (!merge(cur, json_object_get(out_meta, key), pv, s, &value, &node))
            return false;
    } else {
        value = without_nulls(pv);
        node = value ? meta_for(value, s) : NULL;
        if (!node) {
            json_decref(value);
            return false;
        }
    }
    if (json_object_set_new(out, key, value) != 0) { /* value already released */
        json_decref(node);
        return false;
    }
    return json_object_set_new(out_meta, key, node) == 0;
}

/* The section's tree, metadata and text slots in d (meta NULL for tags). */
typedef struct section_slots {
    json_t **data, **meta;
    twin_text **data_text, **meta_text;
    int64_t *version;
} section_slots;

static section_slots slots_of(twin_doc *d, twin_section section)
{
    switch (section) {
    case TWIN_TAGS:
        return (section_slots){&d->tags, NULL, &d->tags_text, NULL, NULL};
    case TWIN_DESIRED:
        return (section_slots){&d->desired, &d->desired_meta, &d->desired_text,
                               &d->desired_meta_text, &d->desired_version};
    case TWIN_REPORTED:
    default:
        return (section_slots){&d->reported, &d->reported_meta, &d->reported_text,
                               &d->reported_meta_text, &d->reported_version};
    }
}

static const char *section_name(twin_section section)
{
    return section == TWIN_TAGS      ? "tags"
           : section == TWIN_DESIRED ? "desired properties"
                                     : "reported properties";
}

/* Swaps a new tree and its text into a slot, releasing the old ones. */
static void swap_in(json_t **tree, twin_text **text, json_t *new_tree, twin_text *new_text)
{
    json_decref(*tree);
    *tree = new_tree;
    twin_text_unref(*text);
    *text = new_text;
}

hub_status twin_doc_apply(twin_doc *d, twin_section section, const json_t *patch, bool replace,
                          int64_t now_ms, char *why, size_t whylen)
{
    hub_status st = twin_doc_check_patch(patch, why, whylen);
    if (st != HUB_OK)
        return st;
    section_slots sl = slots_of(d, section);
    stamp s;
    bool stamped = stamp_init(&s, now_ms, section == TWIN_DESIRED ? d->desired_version + 1 : 0);
    json_t *new_data = NULL, *new_meta = NULL;
    bool ok = stamped && merge(replace ? NULL : *sl.data,
                               replace || !sl.meta ? NULL : *sl.meta, patch, &s, &new_data,
                               &new_meta);
    stamp_done(&s);
    if (!ok)
        return refuse(why, whylen, "out of memory");
    size_t limit = section == TWIN_TAGS ? TWIN_TAGS_MAX_BYTES : TWIN_PROPERTIES_MAX_BYTES;
    size_t size = twin_doc_size(new_data);
    twin_text *data_text = NULL, *meta_text = NULL;
    if (size > limit)
        st = refuse(why, whylen, "%s would be %zu bytes, more than the %zu allowed",
                    section_name(section), size, limit);
    else if (!(data_text = twin_text_render(new_data)) ||
             (sl.meta && !(meta_text = twin_text_render(new_meta))))
        st = refuse(why, whylen, "out of memory");
    if (st != HUB_OK) {
        json_decref(new_data);
        json_decref(new_meta);
        twin_text_unref(data_text);
        return st;
    }
    swap_in(sl.data, sl.data_text, new_data, data_text);
    if (sl.meta) {
        swap_in(sl.meta, sl.meta_text, new_meta, meta_text);
        (*sl.version)++;
    } else {
        json_decref(new_meta);
    }
    return HUB_OK;
}

/* ---- views -------------------------------------------------------------------- */

/* {...data, "$metadata": meta, "$version": version} from the texts of data
 * and meta (meta NULL: none). */
static void put_section(twin_buf *b, const twin_text *data, const twin_text *meta, int64_t version)
{
    /* data is "{}" or "{...}": keep its members, close it ourselves */
    twin_buf_put(b, data->s, data->len - 1);
    if (data->len > 2)
        twin_buf_put(b, ",", 1);
    if (meta) {
        twin_buf_str(b, "\"$metadata\":");
        twin_buf_put(b, meta->s, meta->len);
        twin_buf_put(b, ",", 1);
    }
    twin_buf_str(b, "\"$version\":");
    twin_buf_int(b, version);
    twin_buf_put(b, "}", 1);
}

/* {"desired": ..., "reported": ...}, with or without $metadata. */
static void put_properties(twin_buf *b, const twin_doc *d, bool with_meta)
{
    twin_buf_str(b, "{\"desired\":");
    put_section(b, d->desired_text, with_meta ? d->desired_meta_text : NULL, d->desired_version);
    twin_buf_str(b, ",\"reported\":");
    put_section(b, d->reported_text, with_meta ? d->reported_meta_text : NULL,
                d->reported_version);
    twin_buf_put(b, "}", 1);
}

char *twin_doc_device_text(const twin_doc *d, size_t *len)
{
    twin_buf b;
    twin_buf_init(&b, d->desired_text->len + d->reported_text->len + 64);
    put_properties(&b, d, false);
    return twin_buf_finish(&b, len);
}

char *twin_doc_service_text(const twin_doc *d, const char *device_id, const char *module_id,
                            const char *extra, size_t *len)
{
    size_t extra_len = extra ? strlen(extra) : 0;
    twin_buf b;
    twin_buf_init(&b, d->tags_text->len + d->desired_text->len + d->reported_text->len +
                    d->desired_meta_text->len + d->reported_meta_text->len + extra_len +
                    6 * (strlen(device_id) + (module_id ? strlen(module_id) : 0)) + 256);
    twin_buf_str(&b, "{\"deviceId\":");
    twin_buf_quoted(&b, device_id, strlen(device_id));
    if (module_id && *module_id) {
        twin_buf_str(&b, ",\"moduleId\":");
        twin_buf_quoted(&b, module_id, strlen(module_id));
    }
    twin_buf_str(&b, ",\"etag\":");
    twin_buf_quoted(&b, d->etag, strlen(d->etag));
    twin_buf_str(&b, ",\"version\":");
    twin_buf_int(&b, d->version);
    if (extra_len > 2) { /* "{...}": its members */
        twin_buf_put(&b, ",", 1);
        twin_buf_put(&b, extra + 1, extra_len - 2);
    }
    twin_buf_str(&b, ",\"tags\":");
    twin_buf_put(&b, d->tags_text->s, d->tags_text->len);
    twin_buf_str(&b, ",\"properties\":");
    put_properties(&b, d, true);
    twin_buf_put(&b, "}", 1);
    return twin_buf_finish(&b, len);
}

/* A view's text parsed back; NULL when out of memory. Takes text. */
static json_t *parsed(char *text)
{
    json_t *j = text ? json_loads(text, JSON_ALLOW_NUL, NULL) : NULL;
    free(text);
    return j;
}

json_t *twin_doc_device_json(const twin_doc *d) { return parsed(twin_doc_device_text(d, NULL)); }

json_t *twin_doc_service_json(const twin_doc *d, const char *device_id, const char *module_id,
                              const json_t *extra)
{
    char *extra_text = extra ? json_dumps(extra, JSON_COMPACT) : NULL;
    if (extra && !extra_text)
        return NULL;
    json_t *j = parsed(twin_doc_service_text(d, device_id, module_id, extra_text, NULL));
    free(extra_text);
    return j;
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
    atomic_init(&d->refs, 1);
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
              doc_trees(d);
    if (!ok) {
        snprintf(why, whylen, "not a twin document");
        doc_free(d);
        return NULL;
    }
    if (!doc_render_all(d)) {
        snprintf(why, whylen, "out of memory");
        doc_free(d);
        return NULL;
    }
    snprintf(d->etag, sizeof d->etag, "%s", etag);
    d->version = json_integer_value(version);
    return d;
}
