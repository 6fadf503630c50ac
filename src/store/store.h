/*
 * store/store.h — the durable store: one asynchronous interface for
 * everything iothubd keeps across restarts.
 *
 * Model: every call queues a request and returns at once; it never blocks on
 * the disk. A single store thread takes every queued request (from all event
 * loops), runs them in ONE transaction, commits, and only then posts each
 * completion back to the loop named in the call (net_loop_post), so a
 * completion with STORE_OK means "committed with the configured
 * durability". A failing commit reports STORE_ERROR (STORE_NO_SPACE when
 * the disk is full) to every request of the batch, never a false success;
 * the next batch starts from a clean, rolled-back state. Requests from
 * one thread are executed in the order they were made.
 *
 * `loop` may be NULL: the callback then runs on the store thread itself,
 * right after the commit. That is for start-up code, tools and tests; such a
 * callback must be short and must not call back into the store synchronously
 * (queuing further requests is fine).
 *
 * Data handed to a call (strings, blobs, structs) is copied before the call
 * returns. Data handed to a callback (events, messages, twins) is valid only
 * during the callback.
 *
 * The embedded backend is SQLite in WAL mode (see thread.c for group commit,
 * open.c for durability, schema.c for migrations). A networked backend can
 * implement the same functions later.
 */
#ifndef IOTHUBD_STORE_STORE_H
#define IOTHUBD_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub/registry.h"
#include "net/loop.h"

typedef struct store store;

typedef enum store_durability {
    STORE_DURABILITY_FSYNC, /* synchronous=FULL: a completion means on disk */
    STORE_DURABILITY_OS,    /* synchronous=NORMAL: in the OS, fsync at checkpoints */
    STORE_DURABILITY_NONE,  /* synchronous=OFF: no fsync at all */
} store_durability;

typedef struct store_config {
    const char *dir;              /* data directory (created if missing); DB file inside */
    store_durability durability;
    unsigned partitions;          /* telemetry partitions; 0 = 4 */
    int64_t retention_ms;         /* telemetry kept at least this long; 0 = forever */
    int64_t retention_bytes;      /* total telemetry props+body bytes; 0 = unlimited */
    unsigned retention_interval_ms; /* how often retention runs; 0 = 60000 */
    /* Shortest time from the start of one group commit to the start of the
     * next when only telemetry appends are queued, in microseconds (0 =
     * none; iothubd's default is 1000): bounds commits, and so fsyncs, to
     * 1e6 / commit_interval_us per second under telemetry load; an append
     * waits at most this much longer. Any other request starts the batch
     * at once. */
    unsigned commit_interval_us;
} store_config;

typedef enum store_status {
    STORE_OK,
    STORE_NOT_FOUND, /* the row asked for does not exist (nothing changed) */
    STORE_FULL,      /* a C2D queue already holds max_depth messages */
    STORE_INVALID,   /* bad argument (e.g. partition out of range) */
    STORE_ERROR,     /* I/O or database error; message in err */
    STORE_NO_SPACE,  /* the disk is full (SQLITE_FULL): retry later, nothing was written */
} store_status;

const char *store_status_name(store_status st);
bool store_durability_parse(const char *name, store_durability *out);

/* Opens (creating and migrating as needed) the store in cfg->dir and starts
 * its thread. NULL with a message in err on failure. */
store *store_open(const store_config *cfg, char *err, size_t errlen);
/* Executes and completes every request queued so far, stops the thread,
 * closes the database. Completions for loops are posted (the loops must
 * still run them or drop them). */
void store_close(store *st);

/* Counters since open, for tests and monitoring. */
typedef struct store_stats {
    uint64_t requests;       /* requests executed */
    uint64_t commits;        /* transactions committed (group commits) */
    uint64_t failed_commits; /* transactions rolled back as a whole */
    uint64_t retention_runs;
    uint64_t telemetry_deleted; /* events removed by retention */
    uint64_t checkpoints;        /* WAL checkpoints by the checkpoint thread */
    uint64_t writer_checkpoints; /* catch-up checkpoints after a commit */
} store_stats;
void store_get_stats(store *st, store_stats *out);
unsigned store_partitions(const store *st);
/* The partition a device's telemetry goes to (stable hash of the id). */
unsigned store_partition_of(const store *st, const char *device_id);

/* Blocks until every request queued before this call has completed (for
 * loop == NULL requests: their callbacks have run). Start-up and tests. */
void store_flush(store *st);

/* Test hooks: make the next `n` commits fail (rolled back, every request
 * of those batches gets STORE_ERROR); hold / release the store thread
 * before it takes the next batch, so that requests accumulate. */
void store_test_fail_commits(store *st, unsigned n);
void store_test_hold(store *st, bool hold);
/* Tests only: while held, the checkpoint thread starts no pass (the writer
 * still catches up by itself past the WAL's reset size); busy: a pass is
 * running or due. */
void store_test_hold_checkpointer(store *st, bool hold);
bool store_test_checkpointer_busy(store *st);

/* ---- completions ------------------------------------------------------- */

/* A write (or a delete) finished. err is "" unless st == STORE_ERROR/INVALID. */
typedef void (*store_done_fn)(net_loop *loop, void *arg, store_status st, const char *err);

/* ---- identities and policies (identity.c) ------------------------------ */

/* Inserts or replaces; runtime fields are not stored. */
void store_put_identity(store *st, const hub_identity *id, net_loop *loop, store_done_fn done,
                        void *arg);
/* module_id NULL or "": the device, all its modules, their twins and the
 * device's C2D queue. Otherwise the module and its twin. STORE_NOT_FOUND
 * when nothing matched. */
void store_delete_identity(store *st, const char *device_id, const char *module_id,
                           net_loop *loop, store_done_fn done, void *arg);
void store_put_policy(store *st, const hub_policy *p, net_loop *loop, store_done_fn done,
                      void *arg);

/* Synchronous start-up loads (call before the loops run; they wait for the
 * store thread). fn is called once per row; false on a database error. */
bool store_load_identities(store *st, void (*fn)(void *arg, const hub_identity *id), void *arg);
bool store_load_policies(store *st, void (*fn)(void *arg, const hub_policy *p), void *arg);

/* ---- twins (twin.c) ---------------------------------------------------- */

typedef struct store_twin {
    const char *device_id;
    const char *module_id; /* "" for a device twin */
    const char *json;      /* the whole twin document, as the hub renders it */
    const char *etag;
    int64_t version;          /* twin version */
    int64_t desired_version;  /* properties.desired.$version */
    int64_t reported_version; /* properties.reported.$version */
} store_twin;

/* Inserts or replaces the twin of an identity. */
void store_twin_put(store *st, const store_twin *t, net_loop *loop, store_done_fn done, void *arg);
/* twin is NULL when st != STORE_OK (STORE_NOT_FOUND: no twin stored). */
typedef void (*store_twin_fn)(net_loop *loop, void *arg, store_status st, const store_twin *twin,
                              const char *err);
void store_twin_get(store *st, const char *device_id, const char *module_id, net_loop *loop,
                    store_twin_fn done, void *arg);
bool store_load_twins(store *st, void (*fn)(void *arg, const store_twin *t), void *arg);

/* ---- cloud-to-device command queues (c2d.c) ---------------------------- */

typedef struct store_c2d_msg {
    const char *device_id;
    uint64_t seq;           /* assigned by the store, increasing per store */
    int64_t enqueued_ms;    /* wall clock, ms since the epoch */
    int64_t expiry_ms;
    uint32_t delivery_count;
    int64_t lock_until_ms;  /* 0 = not locked */
    const void *props;      /* opaque properties blob (the hub's encoding) */
    size_t props_len;
    const void *body;
    size_t body_len;
} store_c2d_msg;

/* Appends to the device's queue unless it already holds max_depth messages
 * (STORE_FULL; max_depth 0 = no limit). seq and enqueued_ms in `m` are
 * ignored: the store assigns them (enqueued_ms = now unless m->enqueued_ms
 * is non-zero) and reports them. */
typedef void (*store_c2d_enqueued_fn)(net_loop *loop, void *arg, store_status st, uint64_t seq,
                                      int64_t enqueued_ms, const char *err);
void store_c2d_enqueue(store *st, const store_c2d_msg *m, uint32_t max_depth, net_loop *loop,
                       store_c2d_enqueued_fn done, void *arg);
/* Records a delivery attempt or a lock change of one message. */
void store_c2d_update(store *st, const char *device_id, uint64_t seq, uint32_t delivery_count,
                      int64_t lock_until_ms, net_loop *loop, store_done_fn done, void *arg);
/* Removes one message (completed, rejected, expired, dead-lettered). */
void store_c2d_delete(store *st, const char *device_id, uint64_t seq, net_loop *loop,
                      store_done_fn done, void *arg);
/* Removes every message of a device; reports how many. */
typedef void (*store_count_fn)(net_loop *loop, void *arg, store_status st, uint64_t n,
                               const char *err);
void store_c2d_purge(store *st, const char *device_id, net_loop *loop, store_count_fn done,
                     void *arg);
/* The device's queue in sequence order. */
typedef void (*store_c2d_list_fn)(net_loop *loop, void *arg, store_status st,
                                  const store_c2d_msg *msgs, size_t n, const char *err);
void store_c2d_list(store *st, const char *device_id, net_loop *loop, store_c2d_list_fn done,
                    void *arg);
/* Every queued message of every device, by device then sequence. */
bool store_load_c2d(store *st, void (*fn)(void *arg, const store_c2d_msg *m), void *arg);

/* ---- persistent MQTT sessions (session.c) ------------------------------ */

/* Inserts or replaces a session (its unacknowledged messages are kept). */
void store_session_put(store *st, const char *client_id, int64_t expiry_ms, const void *subs,
                       size_t subs_len, net_loop *loop, store_done_fn done, void *arg);
/* Removes a session and its unacknowledged messages. */
void store_session_delete(store *st, const char *client_id, net_loop *loop, store_done_fn done,
                          void *arg);
/* An unacknowledged QoS 1/2 message of a session, keyed by the broker's
 * per-session sequence number (which orders them); `state` and `msg` are
 * the broker's (see broker/persist.c). Inserts or replaces. */
void store_session_msg_put(store *st, const char *client_id, uint64_t seq, uint8_t state,
                           const void *msg, size_t msg_len, net_loop *loop, store_done_fn done,
                           void *arg);
void store_session_msg_delete(store *st, const char *client_id, uint64_t seq,
                              net_loop *loop, store_done_fn done, void *arg);

typedef struct store_session {
    const char *client_id;
    int64_t expiry_ms;
    const void *subs;
    size_t subs_len;
} store_session;
typedef struct store_session_msg {
    const char *client_id;
    uint64_t seq;
    uint8_t state;
    const void *msg;
    size_t msg_len;
} store_session_msg;
/* Every session, then every message (by client id, seq). */
bool store_load_sessions(store *st, void (*session_fn)(void *arg, const store_session *s),
                         void (*msg_fn)(void *arg, const store_session_msg *m), void *arg);

/* ---- telemetry log (telemetry.c) --------------------------------------- */

typedef struct store_event {
    unsigned partition;
    uint64_t seq;          /* per partition, increasing from 1, never reused */
    int64_t enqueued_ms;
    const void *props;     /* opaque properties blob (system + application) */
    size_t props_len;
    const void *body;
    size_t body_len;
} store_event;

/* Appends to `partition` (< store_partitions); enqueued_ms = now unless
 * given non-zero, but never earlier than the partition's previous event
 * (a wall clock stepping back does not reorder the log). Reports the
 * assigned sequence number and the enqueued time used. */
typedef void (*store_appended_fn)(net_loop *loop, void *arg, store_status st, uint64_t seq,
                                  int64_t enqueued_ms, const char *err);
void store_telemetry_append(store *st, unsigned partition, int64_t enqueued_ms,
                            const void *props, size_t props_len, const void *body,
                            size_t body_len, net_loop *loop, store_appended_fn done, void *arg);

/* Up to `max` events with seq >= from_seq, in order. `next_seq` is the seq
 * the partition's next append will get (a reader that has everything asks
 * again from there); `first_seq` the oldest one still retained (next_seq
 * when the partition is empty). */
typedef struct store_read_result {
    const store_event *events;
    size_t n;
    uint64_t first_seq;
    uint64_t next_seq;
} store_read_result;
typedef void (*store_read_fn)(net_loop *loop, void *arg, store_status st,
                              const store_read_result *res, const char *err);
void store_telemetry_read(store *st, unsigned partition, uint64_t from_seq, size_t max,
                          net_loop *loop, store_read_fn done, void *arg);

/* Applies retention now, as if the wall clock read now_ms (0 = the real
 * clock); reports how many events were removed. It also runs by itself
 * every retention_interval_ms. */
void store_telemetry_retain(store *st, int64_t now_ms, net_loop *loop, store_count_fn done,
                            void *arg);

/* Consumer-group checkpoints: the next seq a group will read, per partition. */
void store_checkpoint_set(store *st, const char *group, unsigned partition, uint64_t seq,
                          net_loop *loop, store_done_fn done, void *arg);
/* STORE_NOT_FOUND (seq 0) when the group has no checkpoint there. */
typedef void (*store_checkpoint_fn)(net_loop *loop, void *arg, store_status st, uint64_t seq,
                                    const char *err);
void store_checkpoint_get(store *st, const char *group, unsigned partition, net_loop *loop,
                          store_checkpoint_fn done, void *arg);

#endif
