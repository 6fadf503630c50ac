/*
 * hub/twin_doc.h — the twin document model, private to src/hub/ (twin.c
 * and the unit tests): JSON merge patches, the §7 limits, and the
 * $version / $metadata bookkeeping (../shared/spec/iothub-mqtt5.md §7).
 *
 * A document keeps each section as a plain JSON object (tags, desired,
 * reported: exactly what a device or service wrote, no '$' keys) and the
 * metadata of desired and reported as a parallel tree of the same shape
 * whose every level holds "$lastUpdated" (and, for desired,
 * "$lastUpdatedVersion"). Keeping them apart makes the limits simple (the
 * size of desired is the size of its object) and the device view a plain
 * copy; the service view and the stored form are assembled on output.
 *
 * Functions here are pure apart from the clock value they are given and
 * the random etag; none takes a lock. A document being built is private to
 * its builder; twin.c publishes it and never changes it afterwards.
 */
#ifndef IOTHUBD_HUB_TWIN_DOC_H
#define IOTHUBD_HUB_TWIN_DOC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/registry.h"
#include "hub/status.h"

#define TWIN_KEY_MAX_BYTES 1024
#define TWIN_DEPTH_MAX 10
#define TWIN_STRING_MAX_BYTES 4096
#define TWIN_INT_MAX 4503599627370495LL /* 2^52 - 1 */
#define TWIN_PROPERTIES_MAX_BYTES (32 * 1024)
#define TWIN_TAGS_MAX_BYTES (8 * 1024)
#define TWIN_WHY_MAX 160

typedef enum twin_section { TWIN_TAGS, TWIN_DESIRED, TWIN_REPORTED } twin_section;

typedef struct twin_doc {
    unsigned refs;           /* owners (twin.c, under its lock) */
    json_t *tags;            /* objects, never NULL */
    json_t *desired;
    json_t *reported;
    json_t *desired_meta;    /* metadata trees, never NULL */
    json_t *reported_meta;
    int64_t version;         /* twin version: +1 per accepted write */
    int64_t desired_version; /* properties.desired.$version */
    int64_t reported_version;
    char etag[HUB_ETAG_MAX + 1];
} twin_doc;

/* A new twin: empty sections, every version 1, metadata stamped now_ms,
 * the given etag (NULL: a random one). NULL when out of memory. refs = 1. */
twin_doc *twin_doc_new_empty(int64_t now_ms, const char *etag);
/* A deep copy with refs = 1 (a draft to change). NULL when out of memory. */
twin_doc *twin_doc_copy(const twin_doc *src);
twin_doc *twin_doc_ref(twin_doc *d);
void twin_doc_unref(twin_doc *d);

/* Checks a patch (or a replacement) for `section` against the per-value
 * limits: every key (1..1024 bytes, no control character, '.', '$' or
 * ' '), depth (containers nested at most TWIN_DEPTH_MAX below the section
 * root), strings (<= 4 KB), integers (+-2^52-1). nulls are allowed (they
 * remove). HUB_OK, or HUB_BAD_REQUEST with a reason in why. */
hub_status twin_doc_check_patch(const json_t *patch, char *why, size_t whylen);

/* The §7 size of a section: key bytes + string bytes, numbers 8, booleans
 * and nulls 4, containers the sum of their members. */
size_t twin_doc_size(const json_t *value);

/*
 * Applies a JSON merge patch (replace = false: objects merge recursively,
 * null removes, anything else replaces) or a replacement (replace = true:
 * the section becomes `patch`, nulls dropped) to one section of the draft
 * d, stamping the metadata of every level it touched with now_ms. Bumps
 * that section's $version (desired, reported). Checks every limit first
 * and the section's size after: on HUB_BAD_REQUEST (reason in why) d is
 * unchanged. patch must be a JSON object. Does not touch version or etag
 * (see twin_doc_bump: once per write, however many sections it changed).
 */
hub_status twin_doc_apply(twin_doc *d, twin_section section, const json_t *patch, bool replace,
                          int64_t now_ms, char *why, size_t whylen);
/* One accepted write: version + 1 and a fresh random etag. False when the
 * random generator failed (d unchanged). */
bool twin_doc_bump(twin_doc *d);

/* Output. Every function returns a new JSON value (NULL when out of
 * memory). The device view: {"desired":{...,"$version":N},"reported":
 * {...,"$version":M}}. The service view: deviceId, moduleId (when not
 * ""), etag, version, then the members of `extra` (may be NULL: twin.c
 * passes the registry's runtime fields, or generationId for the stored
 * form), then tags and properties with $metadata and $version. */
json_t *twin_doc_device_json(const twin_doc *d);
json_t *twin_doc_service_json(const twin_doc *d, const char *device_id, const char *module_id,
                              const json_t *extra);

/* Reads a document in the service-view shape (as stored); a missing part
 * takes its empty value. NULL with a reason for anything else. refs = 1. */
twin_doc *twin_doc_from_json(const json_t *j, char *why, size_t whylen);

#endif
