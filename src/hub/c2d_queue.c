/*
 * hub/c2d_queue.c — one device's command queue in memory, and the
 * properties blob (see c2d_queue.h).
 *
 * A singly linked list in sequence order: queues hold at most 50 messages,
 * so every walk is short, and insertion usually appends (commits complete
 * in order almost always). Each message is one allocation holding its
 * properties and body.
 */
#include "hub/c2d_queue.h"

#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"
#include "util/fmt.h"

#define BLOB_VERSION 1

/* ---- messages and the list ---------------------------------------------- */

c2d_msg *c2d_msg_new(uint64_t seq, int64_t enqueued_ms, int64_t expiry_ms,
                     uint32_t delivery_count, const void *props, size_t props_len,
                     const void *body, size_t body_len)
{
    c2d_msg *m = calloc(1, sizeof *m + props_len + body_len + 1);
    if (!m)
        return NULL;
    m->seq = seq;
    m->enqueued_ms = enqueued_ms;
    m->expiry_ms = expiry_ms;
    m->delivery_count = delivery_count;
    m->props = (uint8_t *)(m + 1);
    m->props_len = props_len;
    m->body = m->props + props_len;
    m->body_len = body_len;
    if (props_len)
        memcpy(m->props, props, props_len);
    if (body_len)
        memcpy(m->body, body, body_len);
    return m;
}

void c2d_msg_free(c2d_msg *m)
{
    free(m);
}

void c2d_queue_insert(c2d_queue *q, c2d_msg *m)
{
    m->next = NULL;
    if (!q->head || q->tail->seq < m->seq) {
        if (q->tail)
            q->tail->next = m;
        else
            q->head = m;
        q->tail = m;
    } else if (m->seq < q->head->seq) {
        m->next = q->head;
        q->head = m;
    } else {
        c2d_msg *prev = q->head;
        while (prev->next && prev->next->seq < m->seq)
            prev = prev->next;
        m->next = prev->next;
        prev->next = m;
    }
    q->len++;
    if (m->locked_by)
        q->locked++;
}

c2d_msg *c2d_queue_unlink(c2d_queue *q, c2d_msg *m)
{
    c2d_msg *prev = NULL;
    for (c2d_msg *cur = q->head; cur; prev = cur, cur = cur->next) {
        if (cur != m)
            continue;
        if (prev)
            prev->next = m->next;
        else
            q->head = m->next;
        if (q->tail == m)
            q->tail = prev;
        q->len--;
        if (m->locked_by)
            q->locked--;
        m->next = NULL;
        return m;
    }
    return NULL;
}

void c2d_queue_clear(c2d_queue *q)
{
    c2d_msg *m = q->head;
    while (m) {
        c2d_msg *next = m->next;
        c2d_msg_free(m);
        m = next;
    }
    q->head = q->tail = NULL;
    q->len = q->locked = 0;
}

/* ---- locks --------------------------------------------------------------- */

static bool expired(const c2d_msg *m, int64_t now_ms)
{
    return m->expiry_ms && m->expiry_ms <= now_ms;
}

c2d_msg *c2d_queue_next_available(const c2d_queue *q, int64_t now_ms)
{
    for (c2d_msg *m = q->head; m; m = m->next)
        if (!m->locked_by && !expired(m, now_ms))
            return m;
    return NULL;
}

void c2d_queue_lock(c2d_queue *q, c2d_msg *m, uint64_t owner, uint64_t tag, int64_t until_ms)
{
    if (!m->locked_by)
        q->locked++;
    m->locked_by = owner;
    m->tag = tag;
    m->lock_until_ms = until_ms;
}

void c2d_queue_unlock(c2d_queue *q, c2d_msg *m)
{
    if (m->locked_by)
        q->locked--;
    m->locked_by = 0;
    m->tag = 0;
    m->lock_until_ms = 0;
}

c2d_msg *c2d_queue_find_tag(const c2d_queue *q, uint64_t tag)
{
    if (tag == 0)
        return NULL;
    for (c2d_msg *m = q->head; m; m = m->next)
        if (m->locked_by && m->tag == tag)
            return m;
    return NULL;
}

unsigned c2d_queue_unlock_owner(c2d_queue *q, uint64_t owner)
{
    unsigned n = 0;
    for (c2d_msg *m = q->head; m; m = m->next) {
        if (m->locked_by && m->locked_by == owner) {
            c2d_queue_unlock(q, m);
            n++;
        }
    }
    return n;
}

unsigned c2d_queue_unlock_expired(c2d_queue *q, int64_t now_ms)
{
    unsigned n = 0;
    for (c2d_msg *m = q->head; m; m = m->next) {
        if (m->locked_by && m->lock_until_ms <= now_ms) {
            c2d_queue_unlock(q, m);
            n++;
        }
    }
    return n;
}

c2d_msg *c2d_queue_find_expired(const c2d_queue *q, int64_t now_ms)
{
    for (c2d_msg *m = q->head; m; m = m->next)
        if (expired(m, now_ms))
            return m;
    return NULL;
}

int64_t c2d_queue_next_deadline(const c2d_queue *q)
{
    int64_t next = INT64_MAX;
    for (const c2d_msg *m = q->head; m; m = m->next) {
        if (m->expiry_ms && m->expiry_ms < next)
            next = m->expiry_ms;
        if (m->locked_by && m->lock_until_ms < next)
            next = m->lock_until_ms;
    }
    return next;
}

c2d_settlement c2d_settlement_of(uint8_t reason_code, mqtt_bytes status)
{
    if (reason_code < 0x80)
        return C2D_COMPLETE;
    if (reason_code == MQTT_RC_IMPLEMENTATION_SPECIFIC && mqtt_bytes_eq_str(status, "0100"))
        return C2D_REJECT;
    return C2D_ABANDON;
}

/* ---- the properties blob ------------------------------------------------- */

static mqtt_bytes bytes_of(const char *s)
{
    return (mqtt_bytes){(const uint8_t *)s, s ? (uint32_t)strlen(s) : 0};
}

/* The user properties a message carries, as (name, value) pairs; the
 * numbers are formatted into `num`. Returns how many. */
static size_t user_pairs(const c2d_message *in, mqtt_bytes *names, mqtt_bytes *values,
                         char num[24])
{
    size_t n = 0;
    const struct { const char *name; const char *value; } sys[] = {
        {"message-id", in->message_id},       {"user-id", in->user_id},
        {"correlation-id", in->correlation_id}, {"content-encoding", in->content_encoding},
    };
    if (in->creation_time_ms > 0) {
        fmt_u64(num, (uint64_t)in->creation_time_ms);
        names[n] = bytes_of("creation-time");
        values[n++] = bytes_of(num);
    }
    for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
        if (!sys[i].value)
            continue;
        names[n] = bytes_of(sys[i].name);
        values[n++] = bytes_of(sys[i].value);
    }
    return n;
}

static void put_u16(uint8_t **p, size_t v)
{
    (*p)[0] = (uint8_t)(v >> 8);
    (*p)[1] = (uint8_t)v;
    *p += 2;
}

static void put_field(uint8_t **p, mqtt_bytes b)
{
    put_u16(p, b.len);
    if (b.len)
        memcpy(*p, b.p, b.len);
    *p += b.len;
}

/* Appends one application property as `@name`; false if too long. */
static bool append_app(const c2d_app_prop *a, uint8_t *block, size_t cap, size_t *len)
{
    size_t nlen = strlen(a->name);
    if (nlen + 1 > 65535)
        return false;
    char *name = malloc(nlen + 1);
    if (!name)
        return false;
    name[0] = '@';
    memcpy(name + 1, a->name, nlen);
    bool ok = mqtt_user_props_append(block, cap, len, (mqtt_bytes){(uint8_t *)name, (uint32_t)nlen + 1},
                                     bytes_of(a->value));
    free(name);
    return ok;
}

/* Appends the user properties of `in` to the block and counts them in
 * *count; false if one is too long. */
static bool append_users(const c2d_message *in, uint8_t *block, size_t cap, size_t *len,
                         uint32_t *count)
{
    mqtt_bytes names[5], values[5];
    char num[24];
    size_t n = user_pairs(in, names, values, num);
    for (size_t i = 0; i < n; i++)
        if (values[i].len > 65535 || !mqtt_user_props_append(block, cap, len, names[i], values[i]))
            return false;
    for (size_t i = 0; i < in->app_count; i++)
        if (!append_app(&in->app[i], block, cap, len))
            return false;
    *count = (uint32_t)(n + in->app_count);
    return true;
}

/* An upper bound of the encoded user properties. */
static size_t users_bound(const c2d_message *in)
{
    size_t n = 5 * (1 + 4 + 24) + 32;
    const char *fields[] = {in->message_id, in->user_id, in->correlation_id, in->content_encoding};
    for (size_t i = 0; i < 4; i++)
        n += fields[i] ? strlen(fields[i]) : 0;
    for (size_t i = 0; i < in->app_count; i++)
        n += 6 + strlen(in->app[i].name) + strlen(in->app[i].value);
    return n;
}

bool c2d_props_encode(const c2d_message *in, const char *message_id, uint8_t **out,
                      size_t *out_len)
{
    mqtt_bytes ct = bytes_of(in->content_type), mid = bytes_of(message_id);
    if (ct.len > 65535 || mid.len > 65535)
        return false;
    size_t cap = users_bound(in);
    size_t head = 2 + 2 + ct.len + 2 + mid.len + 1 + 4;
    uint8_t *blob = malloc(head + cap);
    if (!blob)
        return false;
    size_t ulen = 0;
    uint32_t count = 0;
    if (!append_users(in, blob + head, cap, &ulen, &count)) {
        free(blob);
        return false;
    }
    uint8_t *p = blob;
    *p++ = BLOB_VERSION;
    *p++ = (uint8_t)in->ack;
    put_field(&p, ct);
    put_field(&p, mid);
    *p++ = in->message_id ? 1 : 0;
    p[0] = (uint8_t)(count >> 24);
    p[1] = (uint8_t)(count >> 16);
    p[2] = (uint8_t)(count >> 8);
    p[3] = (uint8_t)count;
    *out = blob;
    *out_len = head + ulen;
    return true;
}

/* Reads a u16-prefixed field; false when it runs past the end. */
static bool get_field(const uint8_t **p, const uint8_t *end, mqtt_bytes *out)
{
    if (end - *p < 2)
        return false;
    size_t n = ((size_t)(*p)[0] << 8) | (*p)[1];
    *p += 2;
    if ((size_t)(end - *p) < n)
        return false;
    *out = (mqtt_bytes){n ? *p : NULL, (uint32_t)n};
    *p += n;
    return true;
}

bool c2d_props_decode(const uint8_t *blob, size_t len, c2d_props_view *out)
{
    const uint8_t *p = blob, *end = blob + len;
    memset(out, 0, sizeof *out);
    if (len < 2 || p[0] != BLOB_VERSION || p[1] > C2D_ACK_FULL)
        return false;
    out->ack = (c2d_ack)p[1];
    p += 2;
    if (!get_field(&p, end, &out->content_type) || !get_field(&p, end, &out->message_id) ||
        end - p < 5)
        return false;
    out->message_id_from_sender = *p++ == 1;
    out->user_count = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    p += 4;
    out->users = (mqtt_bytes){p, (uint32_t)(end - p)};
    return true;
}
