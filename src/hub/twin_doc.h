/*
 * hub/twin_doc.h — the twin document model, private to src/hub/ (twin.c
 * and the unit tests): JSON merge patches, the §7 limits, the $version /
 * $metadata bookkeeping (../shared/spec/iothub-mqtt5.md §7) and the JSON
 * text of the views.
 *
 * A document keeps each section as a plain JSON object (tags, desired,
 * reported: exactly what a device or service wrote, no '$' keys) and the
 * metadata of desired and reported as a parallel tree of the same shape
 * whose every level holds "$lastUpdated" (and, for desired,
 * "$lastUpdatedVersion"). Keeping them apart makes the limits simple (the
 * size of desired is the size of its object) and the device view a plain
 * copy; the service view and the stored form are assembled on output.
 *
 * Next to every tree the document keeps its compact JSON text, rendered
 * once when the tree changes. The views (the device's Get twin, the stored
 * form written on every change, the service's GET) are spliced from these
 * texts, so a read or a write never serialises the sections it did not
 * change. Trees and texts are immutable once built and shared by reference
 * between the versions of a document: a copy is shallow, a patch copies
 * only the objects on its own paths (see twin_doc.c).
 *
 * Functions here are pure apart from the clock value they are given and
 * the etag source; none takes a lock. A document being built is private to
 * its builder; twin.c publishes it and never changes it afterwards. The
 * reference counts of documents and texts are atomic (as jansson's are),
 * so a thread holding a reference to a published document may copy it,
 * read it or drop it without the owner's lock.
 */
#ifndef IOTHUBD_HUB_TWIN_DOC_H
#define IOTHUBD_HUB_TWIN_DOC_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/registry.h"
#include "hub/status.h"
#include "hub/twin_text.h"

#define TWIN_KEY_MAX_BYTES 1024
#define TWIN_DEPTH_MAX 10
#define TWIN_STRING_MAX_BYTES 4096
#define TWIN_INT_MAX 4503599627370495LL /* 2^52 - 1 */
#define TWIN_PROPERTIES_MAX_BYTES (32 * 1024)
#define TWIN_TAGS_MAX_BYTES (8 * 1024)
#define TWIN_WHY_MAX 160

typedef enum twin_section { TWIN_TAGS, TWIN_DESIRED, TWIN_REPORTED } twin_section;


typedef struct twin_doc {
    atomic_uint refs;        /* owners */
    json_t *tags;            /* objects, never NULL */
    json_t *desired;
    json_t *reported;
    json_t *desired_meta;    /* metadata trees, never NULL */
    json_t *reported_meta;
    twin_text *tags_text;    /* the compact JSON of each tree above, never NULL */
    twin_text *desired_text;
    twin_text *reported_text;
    twin_text *desired_meta_text;
    twin_text *reported_meta_text;
    int64_t version;         /* twin version: +1 per accepted write */
    int64_t desired_version; /* properties.desired.$version */
    int64_t reported_version;
    char etag[HUB_ETAG_MAX + 1];
} twin_doc;

/* A new twin: empty sections, every version 1, metadata stamped now_ms,
 * the given etag (NULL: a random one). NULL when out of memory. refs = 1. */
twin_doc *twin_doc_new_empty(int64_t now_ms, const char *etag);
/* A draft to change, refs = 1: a shallow copy sharing src's trees and
 * texts (twin_doc_apply replaces what it changes, never edits it). NULL
 * when out of memory. */
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
 * d, stamping the metadata of every level it touched with now_ms, and
 * renders the section's texts again. Bumps that section's $version
 * (desired, reported). Checks every limit first and the section's size
 * after: on HUB_BAD_REQUEST (reason in why) d is unchanged. patch must be
 * a JSON object; the draft may keep references to its values (they must
 * not change afterwards). Does not touch version or etag (see
 * twin_doc_bump: once per write, however many sections it changed).
 */
hub_status twin_doc_apply(twin_doc *d, twin_section section, const json_t *patch, bool replace,
                          int64_t now_ms, char *why, size_t whylen);

/* Where new etags come from: a random key drawn once, then a counter
 * through a bijective 64-bit mixer, so every etag of a run differs from
 * every other and none costs a call into the random generator. Owned by
 * one table (twin.c); the counter is atomic, so drafts built on several
 * threads at once draw distinct etags. */
typedef struct twin_etags {
    uint64_t key;
    _Atomic uint64_t counter;
    uint8_t tail; /* the 9th byte, random per run */
} twin_etags;
/* Draws the key; false when the random generator failed. */
bool twin_etags_init(twin_etags *g);
/* The next etag: 9 bytes in base64 (12 characters). */
void twin_etags_next(twin_etags *g, char out[HUB_ETAG_MAX + 1]);

/* One accepted write: version + 1 and the next etag of g. */
void twin_doc_bump(twin_doc *d, twin_etags *g);

/* Output as malloc'd NUL-terminated text (*len, when not NULL, gets its
 * length), NULL when out of memory. The device view: {"desired":{...,
 * "$version":N},"reported":{...,"$version":M}}. The service view:
 * deviceId, moduleId (when not ""), etag, version, then the members of
 * the JSON object text `extra` (may be NULL: twin.c passes the registry's
 * runtime fields, or generationId for the stored form), then tags and
 * properties with $metadata and $version. */
char *twin_doc_device_text(const twin_doc *d, size_t *len);
char *twin_doc_service_text(const twin_doc *d, const char *device_id, const char *module_id,
                            const char *extra, size_t *len);
/* The same views parsed back into JSON values (tests and checks). */
json_t *twin_doc_device_json(const twin_doc *d);
json_t *twin_doc_service_json(const twin_doc *d, const char *device_id, const char *module_id,
                              const json_t *extra);

/* Reads a document in the service-view shape (as stored); a missing part
 * takes its empty value. NULL with a reason for anything else. refs = 1. */
twin_doc *twin_doc_from_json(const json_t *j, char *why, size_t whylen);

#endif
