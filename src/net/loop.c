/*
 * net/loop.c — the event loop: epoll, one iteration, the mailbox, hooks.
 *
 * Design (after Redis's ae.c, one loop per thread instead of one per
 * process): epoll in level-triggered mode. Level triggering lets a reader
 * stop early (per-connection read budget for fairness, or paused input) and
 * simply be told again on the next epoll_wait, without the "must drain to
 * EAGAIN" bookkeeping of edge triggering; the price is an epoll_ctl when a
 * connection's interest changes (input paused, output blocked), which is rare.
 *
 * One iteration:
 *   1. epoll_wait, sleeping until the earliest timer unless work is pending
 *   2. socket events (accepts, reads, writable sockets, TLS handshakes)
 *   3. mailbox tasks, if the eventfd fired (one swap under the lock)
 *   4. due timers
 *   5. pending input (a resumed connection's kept tail, TLS plaintext that
 *      OpenSSL already decrypted but the read budget left unread)
 *   6. the iteration hook (upper layers' batching)
 *   7. stop handling (shutdown hook, listeners closed, connections closed)
 *   8. output flush of every connection written to in this iteration
 *   9. hand-off of connections migrating to other loops
 *  10. deferred closes (last flush, close(2), on_close, free)
 *
 * on_drain (step 8) and on_close (step 10) run after the hook; whatever they
 * leave for it (e.g. a Will the broker queued in its per-loop outbox) must
 * not wait for an unrelated wake-up, so when they ran, the next epoll_wait
 * does not sleep: the hook still runs once per iteration, one iteration
 * later.
 *
 * Mailbox: a vector of (fn, arg) under a mutex plus an eventfd. A poster
 * writes the eventfd only if no wake-up is outstanding, so a burst of posts
 * costs one write and one wake-up; the loop swaps the whole vector out under
 * the lock and runs it unlocked. A loop posting to itself (a connection
 * handler deferring work until after the current packet, as the hub does
 * on every CONNECT) writes no eventfd: it is awake, so it only notes that
 * its mailbox needs draining, which saves the write and the read of the
 * eventfd. The loop a thread runs is known from a thread-local pointer —
 * a fact about the thread, set by net_loop_run, not shared state. Tasks
 * posted while a batch runs (also by the loop to itself) go to the next
 * iteration, never re-entrantly. The eventfd exists from net_loop_new on,
 * so posting before the loop runs just queues. When the server stops, a
 * loop runs what is left in its mailbox once more after its last
 * iteration, and net_server_drain runs what came later (e.g. completions
 * of a store closed after the loops); tasks posted after that are dropped
 * by net_loop_free (a connection migrating to it is closed there, without
 * on_close: nothing is left to run it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/log.h"
#include "util/time.h"

/* The loop this thread is running (net_loop_run), NULL elsewhere. */
static _Thread_local net_loop *running_loop;

net_loop *net_loop_new(net_server *s, unsigned index, char *err, size_t errlen)
{
    net_loop *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->index = index;
    l->server = s;
    l->wake_kind = NET_K_WAKE;
    l->sig_kind = NET_K_SIGNAL;
    l->epfd = -1;
    l->wake_fd = -1;
    l->now_ms = time_mono_ms();
    pthread_mutex_init(&l->mbox_lock, NULL);
    l->rbuf = malloc(NET_RBUF_SIZE);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!l->rbuf || l->epfd < 0 || l->wake_fd < 0) {
        snprintf(err, errlen, "creating loop %u: %s", index,
                 l->rbuf ? strerror(errno) : "out of memory");
        net_loop_free(l);
        return NULL;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &l->wake_kind};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wake_fd, &ev) < 0) {
        snprintf(err, errlen, "creating loop %u: epoll_ctl: %s", index,
                 strerror(errno));
        net_loop_free(l);
        return NULL;
    }
    return l;
}

void net_loop_free(net_loop *l)
{
    if (!l)
        return;
    /* Connections are closed by the stop sequence; if the loop never ran,
     * there are none. Listeners may still be open. */
    net_listener_close_all(l);
    if (l->epfd >= 0)
        close(l->epfd);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    if (l->mbox.len)
        log_debug("net: loop %u: dropping %zu unrun tasks", l->index, l->mbox.len);
    for (size_t i = 0; i < l->mbox.len; i++)
        if (l->mbox.v[i].fn == net_conn_migrate_attach)
            net_conn_migrate_abandon(l->mbox.v[i].arg);
    free(l->mbox.v);
    free(l->mbox_spare.v);
    pthread_mutex_destroy(&l->mbox_lock);
    free(l->heap);
    free(l->rbuf);
    free(l);
}

uint64_t net_loop_now_ms(const net_loop *l) { return l->now_ms; }
unsigned net_loop_index(const net_loop *l) { return l->index; }
void net_loop_set_user(net_loop *l, void *user) { l->user = user; }
void *net_loop_user(const net_loop *l) { return l->user; }

void net_loop_set_iteration_hook(net_loop *l, void (*fn)(net_loop *, void *), void *arg)
{
    l->hook = fn;
    l->hook_arg = arg;
}

void net_loop_wake(net_loop *l)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(l->wake_fd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
}

void net_loop_post(net_loop *l, net_task_fn fn, void *arg)
{
    pthread_mutex_lock(&l->mbox_lock);
    if (l->mbox.len == l->mbox.cap) {
        size_t cap = l->mbox.cap ? l->mbox.cap * 2 : 64;
        net_task *v = realloc(l->mbox.v, cap * sizeof *v);
        if (!v) {
            pthread_mutex_unlock(&l->mbox_lock);
            log_error("net: out of memory growing loop %u's mailbox", l->index);
            abort();
        }
        l->mbox.v = v;
        l->mbox.cap = cap;
    }
    l->mbox.v[l->mbox.len++] = (net_task){fn, arg};
    bool self = running_loop == l;
    bool wake = !l->mbox_signalled && !self;
    l->mbox_signalled = true;
    pthread_mutex_unlock(&l->mbox_lock);
    if (self)
        l->mbox_ready = true; /* drained before the loop next sleeps */
    else if (wake)
        net_loop_wake(l);
}

static void mailbox_drain(net_loop *l)
{
    if (l->wake_readable) {
        l->wake_readable = false;
        uint64_t v;
        ssize_t n;
        do {
            n = read(l->wake_fd, &v, sizeof v);
        } while (n < 0 && errno == EINTR);
    }

    net_taskq batch;
    pthread_mutex_lock(&l->mbox_lock);
    batch = l->mbox;
    l->mbox = l->mbox_spare;
    l->mbox_signalled = false;
    pthread_mutex_unlock(&l->mbox_lock);
    l->mbox_spare = (net_taskq){0};

    for (size_t i = 0; i < batch.len; i++)
        batch.v[i].fn(l, batch.v[i].arg);

    batch.len = 0;
    if (batch.cap > 65536) { /* a burst: do not keep its memory forever */
        free(batch.v);
        batch = (net_taskq){0};
    }
    l->mbox_spare = batch;
}

static int iteration_timeout(net_loop *l)
{
    if (l->mbox_ready || l->hook_due || net_conns_have_work(l))
        return 0;
    if (net_server_stop_requested(l->server) && !l->stopping)
        return 0;
    return net_timers_timeout(l);
}

static void dispatch(net_loop *l, struct epoll_event *ev)
{
    int kind = *(int *)ev->data.ptr;
    switch (kind) {
    case NET_K_CONN:
        net_conn_event(ev->data.ptr, ev->events);
        break;
    case NET_K_LISTENER:
        net_listener_event(ev->data.ptr);
        break;
    case NET_K_WAKE:
        l->mbox_ready = true;
        l->wake_readable = true;
        break;
    case NET_K_SIGNAL:
        net_server_on_signal(l->server);
        break;
    default:
        log_error("net: loop %u: unknown epoll kind %d", l->index, kind);
        break;
    }
}

void net_loop_run(net_loop *l)
{
    struct epoll_event evs[NET_MAX_EVENTS];
    running_loop = l;
    l->now_ms = time_mono_ms();
    net_server_loop_started(l->server, l);

    for (;;) {
        int n = epoll_wait(l->epfd, evs, NET_MAX_EVENTS, iteration_timeout(l));
        if (n < 0) {
            if (errno != EINTR)
                log_error("net: loop %u: epoll_wait: %s", l->index, strerror(errno));
            n = 0;
        }
        l->now_ms = time_mono_ms();
        l->hook_due = false;
        for (int i = 0; i < n; i++)
            dispatch(l, &evs[i]);
        if (l->mbox_ready) {
            l->mbox_ready = false;
            mailbox_drain(l);
        }
        net_timers_run(l);
        net_conns_run_pending(l);
        if (l->hook)
            l->hook(l, l->hook_arg);
        if (!l->stopping && net_server_stop_requested(l->server)) {
            l->stopping = true;
            net_server_loop_stopping(l->server, l); /* shutdown hook */
            net_listener_close_all(l);
            net_conns_close_all(l);
        }
        net_conns_flush(l);
        net_conns_hand_off(l);
        net_conns_close_pending(l);
        if (l->stopping && net_server_loop_finished(l->server, l))
            break;
    }
    /* Every loop is done; run what others posted just before they finished
     * (e.g. a connection migrating here: it is closed on arrival). */
    net_loop_run_late_tasks(l);
    running_loop = NULL;
}

void net_loop_run_late_tasks(net_loop *l)
{
    for (int round = 0; round < 16; round++) {
        pthread_mutex_lock(&l->mbox_lock);
        bool more = l->mbox.len > 0;
        pthread_mutex_unlock(&l->mbox_lock);
        if (!more)
            break;
        mailbox_drain(l);
        if (l->hook)
            l->hook(l, l->hook_arg);
        net_conns_flush(l);
        net_conns_hand_off(l);
        net_conns_close_pending(l);
    }
}
