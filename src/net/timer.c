/*
 * net/timer.c — per-loop timers: a binary min-heap of caller-owned structs.
 *
 * Design: the heap is an array of net_timer pointers ordered by deadline,
 * grown by doubling and never shrunk (its size follows the peak number of
 * armed timers, 8 bytes each). Each timer remembers its own position
 * (heap_index, 1-based so that a zeroed struct reads as "not armed"), which
 * makes stop and re-arm O(log n) without searching. Nothing is allocated per
 * timer, so a keep-alive timer per connection costs 8 bytes of heap slot.
 *
 * Trade-offs: a heap rather than a timer wheel: O(log n) instead of O(1), but
 * exact deadlines, no tick, and an idle loop sleeps until the next deadline
 * instead of waking periodically. Equal deadlines fire in unspecified order.
 *
 * Firing: all timers due at the start of the firing phase run in deadline
 * order. A callback may start or stop any timer, itself included; to keep a
 * callback that re-arms itself with delay 0 from spinning forever, one phase
 * runs at most as many callbacks as there were armed timers when it began,
 * and anything left runs on the next iteration (whose epoll_wait then does
 * not sleep).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "net/internal.h"
#include "util/log.h"
#include "util/time.h"

static inline void heap_put(net_loop *l, uint32_t i, net_timer *t)
{
    l->heap[i] = t;
    t->heap_index = i + 1;
}

static void sift_up(net_loop *l, uint32_t i)
{
    net_timer *t = l->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (l->heap[parent]->when_ms <= t->when_ms)
            break;
        heap_put(l, i, l->heap[parent]);
        i = parent;
    }
    heap_put(l, i, t);
}

static void sift_down(net_loop *l, uint32_t i)
{
    net_timer *t = l->heap[i];
    uint32_t n = l->heap_len;
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && l->heap[child + 1]->when_ms < l->heap[child]->when_ms)
            child++;
        if (t->when_ms <= l->heap[child]->when_ms)
            break;
        heap_put(l, i, l->heap[child]);
        i = child;
    }
    heap_put(l, i, t);
}

void net_timer_start(net_loop *l, net_timer *t, uint64_t delay_ms, net_timer_fn fn)
{
    uint64_t when = l->now_ms + delay_ms;
    if (when < l->now_ms)
        when = UINT64_MAX; /* saturate */
    t->fn = fn;
    if (t->heap_index) {
        uint32_t i = t->heap_index - 1;
        uint64_t old = t->when_ms;
        t->when_ms = when;
        if (when < old)
            sift_up(l, i);
        else
            sift_down(l, i);
        return;
    }
    if (l->heap_len == l->heap_cap) {
        uint32_t cap = l->heap_cap ? l->heap_cap * 2 : 64;
        net_timer **h = realloc(l->heap, (size_t)cap * sizeof *h);
        if (!h) {
            log_error("net: out of memory growing the timer heap");
            abort();
        }
        l->heap = h;
        l->heap_cap = cap;
    }
    t->when_ms = when;
    heap_put(l, l->heap_len++, t);
    sift_up(l, l->heap_len - 1);
}

void net_timer_stop(net_loop *l, net_timer *t)
{
    if (!t->heap_index)
        return;
    uint32_t i = t->heap_index - 1;
    t->heap_index = 0;
    net_timer *last = l->heap[--l->heap_len];
    if (i == l->heap_len)
        return; /* it was the last slot */
    heap_put(l, i, last);
    if (i > 0 && last->when_ms < l->heap[(i - 1) / 2]->when_ms)
        sift_up(l, i);
    else
        sift_down(l, i);
}

int net_timers_timeout(net_loop *l)
{
    if (l->heap_len == 0)
        return -1;
    uint64_t when = l->heap[0]->when_ms;
    uint64_t now = time_mono_ms();
    if (when <= now)
        return 0;
    uint64_t d = when - now;
    return d > INT_MAX ? INT_MAX : (int)d;
}

void net_timers_run(net_loop *l)
{
    uint32_t budget = l->heap_len;
    while (budget-- > 0 && l->heap_len > 0 && l->heap[0]->when_ms <= l->now_ms) {
        net_timer *t = l->heap[0];
        net_timer_stop(l, t);
        t->fn(l, t);
    }
}
