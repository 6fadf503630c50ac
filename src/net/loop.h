/*
 * net/loop.h — one epoll event loop per thread, with timers and a mailbox.
 *
 * Design: iothubd runs N loops (one per core by default), each on its own
 * thread, each owning the connections it accepted; a connection never moves.
 * Everything a loop owns is touched only by its thread, so the hot path takes
 * no locks. Work for another loop (a message for a subscriber connected
 * elsewhere, a service call for a device on another loop) is posted to that
 * loop's mailbox: a mutex-protected queue plus an eventfd, drained in one go
 * per iteration, so a burst of posts costs one wake-up.
 *
 * Timers are caller-owned structs embedded in the objects they time (no
 * allocation per timer) kept in a binary min-heap: start, stop and re-arm are
 * O(log n), and a keep-alive timer per connection is affordable at 20k
 * connections per loop.
 *
 * Time: net_loop_now_ms() is a monotonic clock read once per iteration; use
 * it for timeouts. Wall-clock time comes from util/time.h.
 */
#ifndef IOTHUBD_NET_LOOP_H
#define IOTHUBD_NET_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct net_loop net_loop;
typedef struct net_timer net_timer;

typedef void (*net_timer_fn)(net_loop *loop, net_timer *timer);
typedef void (*net_task_fn)(net_loop *loop, void *arg);

/* Embed in the owning object; zero-initialise before first use. */
struct net_timer {
    uint64_t when_ms;    /* monotonic deadline */
    uint32_t heap_index; /* 0 = not armed; else position + 1 in the heap */
    net_timer_fn fn;
};

/* Arms (or re-arms) `t` to fire once, `delay_ms` from now, calling fn. */
void net_timer_start(net_loop *loop, net_timer *t, uint64_t delay_ms,
                     net_timer_fn fn);
void net_timer_stop(net_loop *loop, net_timer *t);
static inline bool net_timer_armed(const net_timer *t) { return t->heap_index != 0; }

/* Monotonic milliseconds, cached at the start of the current iteration. */
uint64_t net_loop_now_ms(const net_loop *loop);
/* 0 .. N-1: which loop this is. */
unsigned net_loop_index(const net_loop *loop);

/*
 * Runs fn(target, arg) on `target`'s thread, soon. Thread-safe; may be
 * called from any thread, including target's own (then it runs on the next
 * iteration, never re-entrantly). Tasks posted from one thread to one loop
 * run in the order they were posted. Never fails (the queue grows).
 */
void net_loop_post(net_loop *target, net_task_fn fn, void *arg);

/*
 * Called once at the end of each loop iteration, after all events and tasks
 * and before output is flushed: lets upper layers batch work (e.g. flush
 * per-loop outgoing mailbox batches). At most one hook per loop.
 */
void net_loop_set_iteration_hook(net_loop *loop, void (*fn)(net_loop *, void *),
                                 void *arg);

/* Per-loop slot for the upper layer's state (the broker's per-loop data). */
void net_loop_set_user(net_loop *loop, void *user);
void *net_loop_user(const net_loop *loop);

#endif
