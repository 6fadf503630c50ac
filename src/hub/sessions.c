/*
 * hub/sessions.c — the broker's persistent sessions, kept in the store.
 *
 * The broker knows nothing of the store (it sits above it in the layers);
 * it hands session and message records to a broker_persist interface.
 * This file is that interface's one implementation: each call becomes a
 * fire-and-forget store request (write-behind, see broker/persist.c for
 * why), and at start-up the stored records are read back into the broker
 * before the loops run.
 */
#include "hub/sessions.h"

#include <stdint.h>
#include <stdio.h>

#include "store/store.h"
#include "util/log.h"

static void session_put(void *ctx, net_loop *loop, const char *client_id, uint32_t expiry_s,
                        const uint8_t *subs, size_t len)
{
    (void)loop;
    store_session_put(ctx, client_id, (int64_t)expiry_s * 1000, subs, len, NULL, NULL, NULL);
}

static void session_delete(void *ctx, net_loop *loop, const char *client_id)
{
    (void)loop;
    store_session_delete(ctx, client_id, NULL, NULL, NULL);
}

static void msg_put(void *ctx, net_loop *loop, const char *client_id, uint64_t seq,
                    const uint8_t *rec, size_t len)
{
    (void)loop;
    store_session_msg_put(ctx, client_id, seq, 0, rec, len, NULL, NULL, NULL);
}

static void msg_delete(void *ctx, net_loop *loop, const char *client_id, uint64_t seq)
{
    (void)loop;
    store_session_msg_delete(ctx, client_id, seq, NULL, NULL, NULL);
}

typedef struct restore_counts {
    broker *b;
    size_t sessions, messages, skipped;
} restore_counts;

static void restore_session(void *arg, const store_session *s)
{
    restore_counts *n = arg;
    int64_t expiry_s = s->expiry_ms / 1000;
    if (expiry_s > 0 && expiry_s <= UINT32_MAX &&
        broker_restore_session(n->b, s->client_id, (uint32_t)expiry_s, s->subs, s->subs_len))
        n->sessions++;
    else
        n->skipped++;
}

static void restore_message(void *arg, const store_session_msg *m)
{
    restore_counts *n = arg;
    if (broker_restore_message(n->b, m->client_id, m->seq, m->msg, m->msg_len))
        n->messages++;
    else
        n->skipped++;
}

bool hub_sessions_attach(broker *b, struct store *st, char *err, size_t errlen)
{
    restore_counts n = {.b = b};
    if (!store_load_sessions(st, restore_session, restore_message, &n)) {
        snprintf(err, errlen, "cannot read the stored MQTT sessions");
        return false;
    }
    broker_persist ops = {
        .ctx = st,
        .session_put = session_put,
        .session_delete = session_delete,
        .msg_put = msg_put,
        .msg_delete = msg_delete,
    };
    broker_set_persist(b, &ops);
    log_info("sessions: %zu restored with %zu messages%s", n.sessions, n.messages,
             n.skipped ? " (some unreadable records skipped)" : "");
    return true;
}
