/*
 * net/listener.c — per-loop listening sockets and accept.
 *
 * Design: every loop has its own socket for each configured address, all
 * bound with SO_REUSEPORT, so the kernel load-balances new connections across
 * loops by 4-tuple hash and a connection is born on the loop that owns it
 * (no accept thread, no hand-off, no lock). Binding happens in server.c;
 * this file accepts.
 *
 * Accept: accept4() with SOCK_NONBLOCK|SOCK_CLOEXEC in bursts of at most
 * NET_ACCEPT_BURST per event, so a connection storm cannot starve existing
 * connections (level-triggered epoll reports the rest next iteration).
 * TCP_NODELAY is on because MQTT traffic is small request/response packets
 * and output is already batched per iteration by the flush; accepted
 * sockets inherit it from the listening one (server.c sets it there).
 *
 * Running out of descriptors (EMFILE/ENFILE) would make a level-triggered
 * listener spin; instead the listener is taken out of epoll for 100 ms.
 * Connections accepted once a stop was requested are closed at once.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/log.h"

#define ACCEPT_RETRY_MS 100

net_listener *net_listener_new(net_loop *l, int fd, const net_listen_cfg *cfg)
{
    net_listener *ln = calloc(1, sizeof *ln);
    if (!ln)
        return NULL;
    ln->kind = NET_K_LISTENER;
    ln->fd = fd;
    ln->loop = l;
    ln->cfg = cfg;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ln};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        free(ln);
        return NULL;
    }
    ln->next = l->listeners;
    l->listeners = ln;
    return ln;
}

static void listener_resume(net_loop *l, net_timer *t)
{
    net_listener *ln = (net_listener *)((char *)t - offsetof(net_listener, retry));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = ln};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, ln->fd, &ev) == 0)
        ln->paused = false;
    else
        net_timer_start(l, &ln->retry, ACCEPT_RETRY_MS, listener_resume);
}

static void listener_pause(net_listener *ln)
{
    struct epoll_event ev = {.events = 0, .data.ptr = ln};
    if (epoll_ctl(ln->loop->epfd, EPOLL_CTL_MOD, ln->fd, &ev) == 0) {
        ln->paused = true;
        net_timer_start(ln->loop, &ln->retry, ACCEPT_RETRY_MS, listener_resume);
    }
}

void net_listener_event(net_listener *ln)
{
    net_loop *l = ln->loop;
    for (int i = 0; i < NET_ACCEPT_BURST; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(ln->fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
                continue;
            case EAGAIN:
#if EWOULDBLOCK != EAGAIN
            case EWOULDBLOCK:
#endif
                return;
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                log_warn("%s: accept: %s; pausing accepts for %d ms",
                         ln->cfg->name, strerror(errno), ACCEPT_RETRY_MS);
                listener_pause(ln);
                return;
            default:
                log_warn("%s: accept: %s", ln->cfg->name, strerror(errno));
                return;
            }
        }
        if (l->stopping || net_server_stop_requested(l->server)) {
            close(fd);
            continue;
        }
        net_conn_accepted(l, fd, ln->cfg, &ss);
    }
}

void net_listener_close_all(net_loop *l)
{
    net_listener *ln = l->listeners;
    l->listeners = NULL;
    while (ln) {
        net_listener *next = ln->next;
        net_timer_stop(l, &ln->retry);
        close(ln->fd); /* also leaves the epoll set */
        free(ln);
        ln = next;
    }
}
