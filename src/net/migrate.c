/*
 * net/migrate.c — moving a connection to another event loop (the broker
 * moves a client to the loop that owns its session).
 *
 * Migration is split in two so that no two threads ever touch a connection
 * at once: net_conn_migrate only takes it out of epoll and marks it (the
 * caller may still be inside its on_input, with the read path about to store
 * the unconsumed tail); at the end of the iteration, once this loop is done
 * with it, net_conns_hand_off unlinks it and posts it to the target, whose
 * mailbox gives the hand-over its memory ordering. A close requested before
 * the hand-off wins: the connection is closed here, on_close runs here, and
 * `done` never runs.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/log.h"

void net_conn_migrate(net_conn *c, net_loop *target,
                      void (*done)(net_loop *target, net_conn *c, void *arg), void *arg)
{
    if (c->flags & (NC_CLOSING | NC_MIGRATING))
        return;
    net_migration *m = malloc(sizeof *m);
    if (!m) {
        log_warn("%s: out of memory migrating the connection", net_conn_peer_str(c));
        net_conn_close(c, false);
        return;
    }
    net_loop *l = c->loop;
    *m = (net_migration){.c = c, .done = done, .arg = arg, .target = target,
                         .next = l->migrations};
    l->migrations = m;
    if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL) < 0)
        log_warn("%s: epoll_ctl: %s", net_conn_peer_str(c), strerror(errno));
    net_conn_set_registered_events(c, 0);
    c->flags |= NC_MIGRATING | NC_USER_PAUSED;
}


void net_conns_hand_off(net_loop *l)
{
    net_migration *m = l->migrations;
    l->migrations = NULL;
    while (m) {
        net_migration *next = m->next;
        net_conn *c = m->c;
        if (c->flags & NC_CLOSING) {
            free(m); /* closed before it left: handled by the close phase */
        } else {
            net_conn_unlink(c);
            c->flags |= NC_USER_PAUSED;
            log_debug("%s: connection moves from loop %u to loop %u",
                      net_conn_peer_str(c), l->index, m->target->index);
            net_loop_post(m->target, net_conn_migrate_attach, m);
        }
        m = next;
    }
}

void net_conn_migrate_attach(net_loop *l, void *arg)
{
    net_migration *m = arg;
    net_conn *c = m->c;
    net_conn_link(l, c);
    c->flags &= ~NC_MIGRATING;
    uint32_t ev = net_conn_wanted_events(c);
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, c->fd, &e) < 0) {
        log_warn("%s: epoll_ctl: %s", net_conn_peer_str(c), strerror(errno));
        net_conn_close(c, false);
        free(m);
        return;
    }
    net_conn_set_registered_events(c, ev);
    if (net_conn_out_queued(c))
        net_conn_mark_dirty(c);
    if (m->done)
        m->done(l, c, m->arg);
    if (l->stopping)
        net_conn_close(c, true); /* arrived after this loop closed the rest */
    free(m);
}

void net_conn_migrate_abandon(net_migration *m)
{
    /* The target loop exited before the task ran (shutdown race): nobody
     * can run on_close any more; release what the connection holds. */
    net_conn *c = m->c;
    close(c->fd);
    net_conn_release(c);
    free(m);
}
