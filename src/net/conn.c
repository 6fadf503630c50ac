/*
 * net/conn.c — connections: input path, output queue, back-pressure, close.
 *
 * Design (after Redis's networking.c): a connection is one calloc'd block
 * and nothing else while idle: the struct (see net/internal.h; 96 bytes),
 * a pointer for TLS, and the upper layer's state (its handler's user_size:
 * the broker keeps its whole client there, so an MQTT connection is one
 * allocation). Buffers come and go with traffic, each a net_buf carrying
 * its own positions:
 *
 * Input. Reads go into the loop's shared 64 KiB buffer and are offered to
 * on_input straight from there. Only what on_input leaves unconsumed (an
 * incomplete packet) is copied into c->in, exactly sized. On the next read a
 * small tail (<= 16 KiB) is copied back in front of the shared buffer and the
 * read lands right after it, so the per-connection copy is released again; a
 * large tail (a big packet arriving in pieces) instead accumulates in place
 * in c->in, grown geometrically, to avoid copying it again on every read.
 * max_input bounds that tail. Reads go on until the socket is empty, but at
 * most NET_READ_BUDGET bytes per connection per iteration (fairness: level-
 * triggered epoll reports the rest next time; for TLS, plaintext OpenSSL has
 * already decrypted is put on the loop's pending list).
 *
 * Output. net_conn_reserve/commit append to one contiguous buffer
 * [head, len), allocated on the first write and freed as soon as it is
 * fully sent. The first allocation is small (256 bytes with its header):
 * most connections only ever queue a CONNACK, a PINGRESP or a PUBACK at a
 * time, and a 4 KiB buffer for each of the up to 256 connections served in
 * one loop iteration (a connection storm, a keep-alive round) left about
 * 0.1 KiB per connection of touched pages in the allocator. A queue that
 * outgrows it moves to 4 KiB at once, then doubles. Connections written
 * to are put on the loop's dirty list and flushed once, after the
 * iteration hook, so everything produced for a connection in one
 * iteration leaves in one send() (one SSL_write run for TLS). A single
 * buffer rather than a chunk list + writev: one syscall
 * either way, simpler, and TLS needs contiguous bytes; the cost is a copy
 * when the buffer grows (amortised by doubling) or is compacted. A short
 * write means the socket buffer is full: EPOLLOUT is registered until the
 * queue drains, then dropped again.
 *
 * Back-pressure. Above out_high queued bytes the connection stops being read
 * (EPOLLIN is removed, so the kernel's receive window pushes back on the
 * client); at or below out_low after a flush, reading resumes, any kept tail
 * is offered again, and on_drain runs. Above out_cap the connection is closed
 * without flushing.
 *
 * Close. net_conn_close only marks the connection and queues it; at the end
 * of the iteration it gets one last non-blocking flush if asked, a TLS
 * close_notify, shutdown(SHUT_WR) and a short drain of unread input (closing
 * a socket with unread input makes the kernel send a reset, which can destroy
 * the bytes just flushed), then close(2), on_close (exactly once, and only if
 * on_open accepted it), and free. Because freeing happens only there, every
 * pointer held during event dispatch stays valid for the whole iteration.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/log.h"

#define OUT_FIRST_CAP (256u - sizeof(net_buf))
#define OUT_MIN_ALLOC 4096u
#define IN_MIN_FREE (16u * 1024u)

/* An idle connection's size is one of the per-connection figures of
 * docs/PERFORMANCE.md: a field added here moves it to the next malloc size
 * class (x86-64). */
_Static_assert(sizeof(void *) != 8 || sizeof(net_conn) <= 96, "net_conn outgrew 96 bytes");

static inline bool input_paused(const net_conn *c)
{
    return (c->flags & (NC_USER_PAUSED | NC_BP_PAUSED)) != 0;
}

static inline size_t out_queued(const net_conn *c)
{
    return c->out ? c->out->len - c->out->head : 0;
}

static inline size_t in_len(const net_conn *c) { return c->in ? c->in->len : 0; }

static net_buf *buf_new(size_t cap)
{
    net_buf *b = malloc(sizeof *b + cap);
    if (b)
        *b = (net_buf){.cap = cap};
    return b;
}

/* ---- accessors ---------------------------------------------------------- */

net_loop *net_conn_loop(const net_conn *c) { return c->loop; }
net_conn *net_conn_of_user(void *area) { return (net_conn *)area - 1; }

void *net_conn_user(const net_conn *c)
{
    void *area = net_conn_user_area(c);
    return c->cfg->handler.user_size ? area : *(void **)area;
}
size_t net_conn_out_queued(const net_conn *c) { return out_queued(c); }
bool net_conn_closing(const net_conn *c) { return (c->flags & NC_CLOSING) != 0; }
const char *net_conn_peer_str(const net_conn *c)
{
    /* One buffer per thread: every caller formats one peer per log line. */
    static _Thread_local char text[64];
    char host[INET6_ADDRSTRLEN] = "?";
    switch (c->peer.family) {
    case AF_INET:
        inet_ntop(AF_INET, c->peer.addr, host, sizeof host);
        snprintf(text, sizeof text, "%s:%u", host, ntohs(c->peer.port));
        break;
    case AF_INET6:
        inet_ntop(AF_INET6, c->peer.addr, host, sizeof host);
        snprintf(text, sizeof text, "[%s]:%u", host, ntohs(c->peer.port));
        break;
    case AF_UNIX: /* no address: the descriptor tells live ones apart */
        snprintf(text, sizeof text, "unix#%d", c->fd);
        break;
    default:
        snprintf(text, sizeof text, "?#%d", c->fd);
        break;
    }
    return text;
}

/* ---- lists and epoll interest ------------------------------------------- */

void net_conn_mark_dirty(net_conn *c)
{
    if (c->flags & (NC_IN_DIRTY | NC_CLOSING | NC_MIGRATING))
        return;
    c->flags |= NC_IN_DIRTY;
    c->dirty_next = c->loop->dirty;
    c->loop->dirty = c;
}

void net_conn_add_pending(net_conn *c)
{
    if (c->flags & (NC_IN_PENDING | NC_CLOSING | NC_MIGRATING))
        return;
    c->flags |= NC_IN_PENDING;
    c->pending_next = c->loop->pending;
    c->loop->pending = c;
}

bool net_conns_have_work(const net_loop *l)
{
    return l->pending || l->dirty || l->closing || l->migrations;
}

/* Interest in input is dropped lazily: a paused connection keeps EPOLLIN
 * until input actually arrives while it is paused (net_conn_event notes
 * that). Most pauses end before the peer sends anything — a CONNECT being
 * authenticated, an HTTP request being answered — and then pausing and
 * resuming cost no epoll_ctl at all; otherwise one wake-up is spent before
 * the interest goes. */
uint32_t net_conn_wanted_events(const net_conn *c)
{
    uint32_t f = c->flags, ev = 0;
    if (f & NC_HANDSHAKE) {
        ev = (f & NC_HS_WANT_WRITE) ? EPOLLOUT : EPOLLIN;
    } else {
        if (!input_paused(c) || !(f & NC_IN_WHILE_PAUSED) || (f & NC_WR_WANT_RD))
            ev |= EPOLLIN;
        if (f & (NC_OUT_BLOCKED | NC_RD_WANT_WR))
            ev |= EPOLLOUT;
    }
    return ev;
}

void net_conn_update_events(net_conn *c)
{
    if (c->flags & (NC_CLOSING | NC_MIGRATING))
        return; /* closing: the fd goes at the end of the iteration anyway */
    uint32_t ev = net_conn_wanted_events(c);
    if (ev == net_conn_registered_events(c))
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &e) < 0) {
        log_warn("%s: epoll_ctl: %s", net_conn_peer_str(c), strerror(errno));
        net_conn_close(c, false);
        return;
    }
    net_conn_set_registered_events(c, ev);
}

void net_conn_link(net_loop *l, net_conn *c)
{
    c->loop = l;
    c->prev = NULL;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    l->nconns++;
}

/* Off loop->conns (an open connection is on it; prev is NULL at its head). */
static void conns_remove(net_loop *l, net_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void unlink_from(net_conn **head, net_conn *c, size_t next_off)
{
    for (net_conn **pp = head; *pp; pp = (net_conn **)((char *)*pp + next_off)) {
        if (*pp == c) {
            *pp = *(net_conn **)((char *)c + next_off);
            return;
        }
    }
}

/* A closing connection is no longer on loop->conns, and
 * net_conns_close_pending has taken it off loop->closing already. */
void net_conn_unlink(net_conn *c)
{
    net_loop *l = c->loop;
    if (!(c->flags & NC_CLOSING))
        conns_remove(l, c);
    l->nconns--;
    if (c->flags & NC_IN_DIRTY)
        unlink_from(&l->dirty, c, offsetof(net_conn, dirty_next));
    if (c->flags & NC_IN_PENDING)
        unlink_from(&l->pending, c, offsetof(net_conn, pending_next));
    c->flags &= ~(NC_IN_DIRTY | NC_IN_PENDING | NC_REOFFER);
}

/* ---- creation ----------------------------------------------------------- */

void net_conn_accepted(net_loop *l, int fd, const net_listen_cfg *cfg,
                       const struct sockaddr_storage *peer)
{
    net_conn *c = calloc(1, sizeof *c + net_conn_user_bytes(cfg) +
                                (cfg->ssl_ctx ? sizeof(net_tls *) : 0));
    if (!c) {
        log_warn("%s: out of memory accepting a connection", cfg->name);
        close(fd);
        return;
    }
    c->kind = NET_K_CONN;
    c->fd = fd;
    c->cfg = cfg;
    if (cfg->ssl_ctx)
        c->flags |= NC_TLS;
    c->peer.family = peer->ss_family;
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)peer;
        c->peer.port = v4->sin_port;
        memcpy(c->peer.addr, &v4->sin_addr, sizeof v4->sin_addr);
    } else if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        c->peer.port = v6->sin6_port;
        memcpy(c->peer.addr, &v6->sin6_addr, sizeof v6->sin6_addr);
    }
    net_conn_set_registered_events(c, EPOLLIN);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        log_warn("%s: epoll_ctl: %s", cfg->name, strerror(errno));
        close(fd);
        free(c);
        return;
    }
    net_conn_link(l, c);
    log_debug("%s: connection from %s", cfg->name, net_conn_peer_str(c));

    if (cfg->ssl_ctx) {
        c->flags |= NC_HANDSHAKE | NC_HS_WANT_READ;
        if (!net_tls_conn_start(c, cfg->ssl_ctx))
            net_conn_close(c, false);
        return;
    }
    net_conn_open(c);
}

void net_conn_open(net_conn *c)
{
    bool in_place = c->cfg->handler.user_size != 0;
    void *area = net_conn_user_area(c);
    void *user = c->cfg->handler.on_open(c, in_place ? area : NULL, c->cfg->arg);
    if (!user) {
        log_debug("%s: connection refused by the application", net_conn_peer_str(c));
        net_conn_close(c, true);
        return;
    }
    if (!in_place)
        *(void **)area = user;
    c->flags |= NC_OPENED;
}

/* ---- input -------------------------------------------------------------- */

static void drop_input(net_conn *c)
{
    free(c->in);
    c->in = NULL;
}

/* Only for a tail that is already there (a large one grows in place). */
static bool in_reserve(net_conn *c, size_t want_free)
{
    net_buf *in = c->in;
    if (in->cap - in->len >= want_free)
        return true;
    size_t cap = in->cap * 2;
    if (cap < in->len + want_free)
        cap = in->len + want_free;
    in = realloc(in, sizeof *in + cap);
    if (!in)
        return false;
    in->cap = cap;
    c->in = in;
    return true;
}

/* Offers data[0..len) to on_input and keeps the unconsumed rest in c->in.
 * from_in: data is c->in itself (else it is the loop's shared buffer). */
static void deliver(net_conn *c, const uint8_t *data, size_t len, bool from_in)
{
    size_t used = c->cfg->handler.on_input(c, net_conn_user(c), data, len);
    if (used > len)
        used = len;
    if (c->flags & NC_CLOSING) {
        drop_input(c);
        return;
    }
    size_t rest = len - used;
    if (from_in) {
        if (rest == 0) {
            drop_input(c);
        } else {
            if (used)
                memmove(c->in->data, c->in->data + used, rest);
            c->in->len = rest;
            if (c->in->cap > 4 * NET_TAIL_COPY_MAX && rest < c->in->cap / 4) {
                net_buf *p = realloc(c->in, sizeof *p + rest);
                if (p) {
                    c->in = p;
                    c->in->cap = rest;
                }
            }
        }
    } else if (rest) {
        net_buf *p = buf_new(rest);
        if (!p) {
            log_warn("%s: out of memory keeping %zu input bytes", net_conn_peer_str(c), rest);
            net_conn_close(c, false);
            return;
        }
        memcpy(p->data, data + used, rest);
        p->len = rest;
        c->in = p;
    }
    size_t max = c->cfg->limits.max_input;
    if (max && in_len(c) > max && !input_paused(c)) {
        log_warn("%s: incomplete input over %zu bytes, closing", net_conn_peer_str(c), max);
        net_conn_close(c, false);
    }
}

static ssize_t plain_read(net_conn *c, uint8_t *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return NET_IO_AGAIN;
        log_debug("%s: read: %s", net_conn_peer_str(c), strerror(errno));
        return NET_IO_ERROR;
    }
}

static void conn_read(net_conn *c)
{
    net_loop *l = c->loop;
    if (c->flags & NC_REOFFER) {
        c->flags &= ~NC_REOFFER;
        if (in_len(c) && !input_paused(c) && !(c->flags & NC_CLOSING))
            deliver(c, c->in->data, c->in->len, true);
    }
    size_t budget = NET_READ_BUDGET;
    bool tls = net_conn_tls(c) != NULL;
    while (budget > 0 && !(c->flags & (NC_CLOSING | NC_USER_PAUSED | NC_BP_PAUSED))) {
        uint8_t *buf;
        size_t space, base = 0;
        bool in_place = false;
        size_t have = in_len(c);
        if (have == 0) {
            buf = l->rbuf;
            space = NET_RBUF_SIZE;
        } else if (have <= NET_TAIL_COPY_MAX) {
            base = have;
            memcpy(l->rbuf, c->in->data, base);
            buf = l->rbuf + base;
            space = NET_RBUF_SIZE - base;
        } else {
            if (!in_reserve(c, IN_MIN_FREE)) {
                log_warn("%s: out of memory for input", net_conn_peer_str(c));
                net_conn_close(c, false);
                break;
            }
            in_place = true;
            buf = c->in->data + c->in->len;
            space = c->in->cap - c->in->len;
        }
        if (space > budget)
            space = budget;
        ssize_t n = tls ? net_tls_read(c, buf, space) : plain_read(c, buf, space);
        if (n > 0) {
            budget -= (size_t)n;
            if (in_place) {
                c->in->len += (size_t)n;
                deliver(c, c->in->data, c->in->len, true);
            } else {
                if (base)
                    drop_input(c); /* now in front of the shared buffer */
                deliver(c, l->rbuf, base + (size_t)n, false);
            }
            if (!tls && (size_t)n < space)
                break; /* socket drained; level triggering tells us if more comes */
            continue;
        }
        if (n == 0) {
            log_debug("%s: closed by peer", net_conn_peer_str(c));
            net_conn_close(c, true);
        } else if (n != NET_IO_AGAIN) {
            net_conn_close(c, false);
        }
        break;
    }
    if (tls && !(c->flags & NC_CLOSING) && !input_paused(c) && net_tls_has_pending(c))
        net_conn_add_pending(c);
}

static void input_resumed(net_conn *c)
{
    c->flags &= ~NC_IN_WHILE_PAUSED;
    if (in_len(c)) {
        c->flags |= NC_REOFFER;
        net_conn_add_pending(c);
    } else if (net_conn_tls(c)) {
        net_conn_add_pending(c); /* OpenSSL may hold decrypted bytes */
    }
}

void net_conn_pause_input(net_conn *c, bool paused)
{
    bool was = input_paused(c);
    if (paused)
        c->flags |= NC_USER_PAUSED;
    else
        c->flags &= ~NC_USER_PAUSED;
    if (c->flags & NC_CLOSING)
        return;
    if (was && !input_paused(c))
        input_resumed(c);
    net_conn_update_events(c);
}

/* ---- output ------------------------------------------------------------- */

uint8_t *net_conn_reserve(net_conn *c, size_t n)
{
    if (n == 0)
        n = 1;
    net_buf *o = c->out;
    if (o && o->cap - o->len >= n)
        return o->data + o->len;
    size_t used = out_queued(c);
    if (o && o->head >= used && used + n <= o->cap) {
        /* compact: cheap, the live part is no bigger than the dead one */
        memmove(o->data, o->data + o->head, used);
        o->head = 0;
        o->len = used;
        return o->data + used;
    }
    size_t cap = !o ? OUT_FIRST_CAP : o->cap < OUT_MIN_ALLOC / 2 ? OUT_MIN_ALLOC : o->cap * 2;
    while (cap < used + n) {
        if (cap > SIZE_MAX / 4)
            return NULL;
        cap *= 2;
    }
    net_buf *p = buf_new(cap);
    if (!p)
        return NULL;
    if (used)
        memcpy(p->data, o->data + o->head, used);
    free(o);
    p->len = used;
    c->out = p;
    return p->data + used;
}

void net_conn_commit(net_conn *c, size_t used)
{
    if (used == 0)
        return;
    c->out->len += used; /* net_conn_reserve made it */
    if (c->flags & NC_DISCARD) {
        c->out->head = c->out->len = 0;
        return;
    }
    net_conn_mark_dirty(c);
    const net_conn_limits *lim = &c->cfg->limits;
    size_t q = out_queued(c);
    if (lim->out_cap && q > lim->out_cap) {
        log_warn("%s: output queue over %zu bytes (peer not reading), closing",
                 net_conn_peer_str(c), lim->out_cap);
        net_conn_close(c, false);
        return;
    }
    if (lim->out_high && q > lim->out_high && !(c->flags & NC_BP_PAUSED)) {
        c->flags |= NC_BP_PAUSED;
        net_conn_update_events(c);
    }
}

bool net_conn_write(net_conn *c, const void *data, size_t len)
{
    if (c->flags & NC_DISCARD)
        return false;
    if (len == 0)
        return true;
    uint8_t *p = net_conn_reserve(c, len);
    if (!p)
        return false;
    memcpy(p, data, len);
    net_conn_commit(c, len);
    return true;
}

static ssize_t plain_write(net_conn *c, const uint8_t *buf, size_t len)
{
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return NET_IO_AGAIN;
        log_debug("%s: send: %s", net_conn_peer_str(c), strerror(errno));
        return NET_IO_ERROR;
    }
}

/* Writes as much of the queue as the socket takes. false on a fatal error. */
static bool write_out(net_conn *c)
{
    c->flags &= ~NC_OUT_BLOCKED;
    bool tls = net_conn_tls(c) != NULL;
    while (out_queued(c)) {
        size_t len = out_queued(c);
        const uint8_t *p = c->out->data + c->out->head;
        ssize_t n = tls ? net_tls_write(c, p, len) : plain_write(c, p, len);
        if (n > 0) {
            c->out->head += (size_t)n;
            if (!tls && (size_t)n < len) {
                c->flags |= NC_OUT_BLOCKED; /* short write: socket buffer full */
                break;
            }
            continue;
        }
        if (n == NET_IO_AGAIN) {
            if (!(c->flags & NC_WR_WANT_RD))
                c->flags |= NC_OUT_BLOCKED;
            break;
        }
        return false;
    }
    if (c->out && c->out->head == c->out->len) {
        free(c->out);
        c->out = NULL;
    }
    return true;
}

static void conn_flush(net_conn *c)
{
    if (!write_out(c)) {
        net_conn_close(c, false);
        return;
    }
    if ((c->flags & NC_BP_PAUSED) && out_queued(c) <= c->cfg->limits.out_low) {
        c->flags &= ~NC_BP_PAUSED;
        if (!input_paused(c))
            input_resumed(c);
        net_conn_update_events(c);
        if (c->cfg->handler.on_drain && !(c->flags & NC_CLOSING)) {
            c->loop->hook_due = true; /* it ran after this iteration's hook */
            c->cfg->handler.on_drain(c, net_conn_user(c));
        }
    }
    net_conn_update_events(c);
}

void net_conns_flush(net_loop *l)
{
    /* on_drain may write to other connections: they join the list and are
     * flushed in this same pass. */
    while (l->dirty) {
        net_conn *c = l->dirty;
        l->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->flags &= ~NC_IN_DIRTY;
        if (c->flags & (NC_CLOSING | NC_HANDSHAKE | NC_MIGRATING))
            continue; /* closing: last flush at close; handshake: after it;
                       * migrating: the new loop flushes */
        conn_flush(c);
    }
}

/* ---- events ------------------------------------------------------------- */

static void conn_handshake(net_conn *c)
{
    int r = net_tls_handshake(c);
    if (r < 0) {
        net_conn_close(c, false);
        return;
    }
    if (r == 0) {
        net_conn_update_events(c);
        return;
    }
    c->flags &= ~(NC_HANDSHAKE | NC_HS_WANT_READ | NC_HS_WANT_WRITE);
    net_conn_open(c);
    if (c->flags & NC_CLOSING)
        return;
    if (out_queued(c))
        net_conn_mark_dirty(c);
    net_conn_update_events(c);
    if (net_tls_has_pending(c))
        net_conn_add_pending(c);
}

void net_conn_event(net_conn *c, uint32_t events)
{
    if (c->flags & (NC_CLOSING | NC_MIGRATING))
        return;
    if (events & EPOLLERR) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        log_debug("%s: socket error: %s", net_conn_peer_str(c), strerror(err));
        net_conn_close(c, false);
        return;
    }
    if (c->flags & NC_HANDSHAKE) {
        conn_handshake(c);
        return;
    }
    bool do_read = false;
    if (events & EPOLLOUT) {
        if (c->flags & NC_RD_WANT_WR) {
            c->flags &= ~NC_RD_WANT_WR;
            do_read = !input_paused(c);
        }
        if (c->flags & NC_OUT_BLOCKED)
            net_conn_mark_dirty(c); /* flushed at the end of the iteration */
    }
    if (events & (EPOLLIN | EPOLLHUP)) {
        if (c->flags & NC_WR_WANT_RD) {
            c->flags &= ~NC_WR_WANT_RD;
            net_conn_mark_dirty(c);
        }
        if (!input_paused(c)) {
            do_read = true;
        } else if (!(events & EPOLLHUP)) {
            c->flags |= NC_IN_WHILE_PAUSED; /* stop listening: see wanted_events */
        } else {
            /* Both directions are gone and we are not reading: nothing more
             * can be delivered either way. */
            net_conn_close(c, false);
            return;
        }
    }
    if (do_read)
        conn_read(c);
    net_conn_update_events(c);
}

void net_conns_run_pending(net_loop *l)
{
    net_conn *list = l->pending; /* additions from here on: next iteration */
    l->pending = NULL;
    while (list) {
        net_conn *c = list;
        list = c->pending_next;
        c->pending_next = NULL;
        c->flags &= ~NC_IN_PENDING;
        if (c->flags & (NC_CLOSING | NC_HANDSHAKE | NC_MIGRATING))
            continue;
        conn_read(c);
        net_conn_update_events(c);
    }
}

/* ---- close -------------------------------------------------------------- */

void net_conn_close(net_conn *c, bool flush)
{
    if (c->flags & NC_CLOSING) {
        if (!flush && (c->flags & NC_CLOSE_FLUSH)) {
            c->flags &= ~NC_CLOSE_FLUSH;
            c->flags |= NC_DISCARD;
        }
        return;
    }
    c->flags |= NC_CLOSING | (flush ? NC_CLOSE_FLUSH : NC_DISCARD);
    /* From the open list to the closing one, through the same links (it
     * is never on both). */
    net_loop *l = c->loop;
    conns_remove(l, c);
    c->next = l->closing;
    l->closing = c;
}

static void conn_finish(net_conn *c)
{
    net_loop *l = c->loop;
    bool flush = (c->flags & NC_CLOSE_FLUSH) && !(c->flags & NC_HANDSHAKE);
    if (flush) {
        if (out_queued(c))
            (void)write_out(c); /* best effort, non-blocking */
        if (net_conn_tls(c))
            net_tls_shutdown(c);
        shutdown(c->fd, SHUT_WR);
        /* Unread input would turn close() into a reset that may destroy
         * what was just sent: read a little of it away first. */
        for (int i = 0; i < 4; i++) {
            ssize_t n = read(c->fd, l->rbuf, NET_RBUF_SIZE);
            if (n <= 0)
                break;
        }
    }
    log_debug("%s: connection closed", net_conn_peer_str(c)); /* while fd names it */
    close(c->fd);
    c->fd = -1;

    net_conn_unlink(c);
    c->flags = (c->flags & ~NC_CLOSE_FLUSH) | NC_DISCARD;
    if ((c->flags & NC_OPENED) && c->cfg->handler.on_close) {
        l->hook_due = true; /* it ran after this iteration's hook */
        c->cfg->handler.on_close(c, net_conn_user(c));
    }
    net_conn_release(c);
}

void net_conn_release(net_conn *c)
{
    if (net_conn_tls(c))
        net_tls_conn_free(c);
    free(c->in);
    free(c->out);
    free(c);
}

void net_conns_close_pending(net_loop *l)
{
    /* on_close may close further connections: they are handled here too. */
    while (l->closing) {
        net_conn *c = l->closing;
        l->closing = c->next;
        c->next = NULL;
        conn_finish(c);
    }
}

void net_conns_close_all(net_loop *l)
{
    /* Each close moves the connection to the closing list. */
    for (net_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        net_conn_close(c, true);
    }
}
