/*
 * net/server.c — the loop threads, binding listeners, signals and shutdown.
 *
 * Threads: loop 0 runs on the thread that calls net_server_run, loops
 * 1..N-1 on threads created there. SIGINT and SIGTERM are blocked before
 * those threads are created (they inherit the mask) and read from a signalfd
 * registered on loop 0, so a signal is just another event and no handler runs
 * in an arbitrary thread. SIGPIPE is ignored process-wide (OpenSSL writes to
 * sockets with write(2), which would otherwise kill the process when a peer
 * resets).
 *
 * Binding: each address is bound once per loop with SO_REUSEPORT. Because
 * SO_REUSEPORT would also let us silently join a port some other process of
 * the same user already listens on (and steal part of its connections), a
 * fixed port is first probed with a plain bind without SO_REUSEPORT, which
 * fails with "Address already in use" as expected. Port 0 needs no probe:
 * loop 0 binds first, and the port the kernel chose is reused for the others.
 *
 * Shutdown: net_server_stop (or a signal) sets a flag and wakes every loop.
 * Each loop then, on its own thread: runs the shutdown hook (the broker says
 * goodbye), closes its listeners, closes all its connections with a last
 * flush (on_close for each), and counts itself done. A loop that is done
 * keeps serving its mailbox and timers until every loop is done, so tasks
 * the others post during their shutdown (e.g. from on_close) still run; then
 * all exit and net_server_run returns 0. Tasks posted after that are dropped.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "net/internal.h"
#include "util/log.h"

#define MAX_LOOPS 1024
#define LISTEN_BACKLOG 4096

struct net_server {
    unsigned nloops;
    net_loop **loops;
    net_listen_cfg *cfgs;
    void (*init)(net_loop *, void *);
    void (*shutdown)(net_loop *, void *);
    void *hook_arg;
    atomic_bool stop;
    atomic_uint active; /* loops that have not finished closing */
    int sig_fd;
};

static const net_conn_limits default_limits = {
    .max_input = 0,
    .out_high = 1u << 20,
    .out_low = 256u << 10,
    .out_cap = 64u << 20,
};

net_server *net_server_new(unsigned threads, char *errbuf, size_t errlen)
{
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (unsigned)n : 1;
    }
    if (threads > MAX_LOOPS) {
        snprintf(errbuf, errlen, "too many threads: %u (at most %d)", threads, MAX_LOOPS);
        return NULL;
    }
    struct sigaction sa = {.sa_handler = SIG_IGN};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);

    net_server *s = calloc(1, sizeof *s);
    if (!s || !(s->loops = calloc(threads, sizeof *s->loops))) {
        free(s);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    s->sig_fd = -1;
    atomic_init(&s->stop, false);
    atomic_init(&s->active, threads);
    for (unsigned i = 0; i < threads; i++) {
        s->loops[i] = net_loop_new(s, i, errbuf, errlen);
        if (!s->loops[i]) {
            net_server_free(s);
            return NULL;
        }
        s->nloops = i + 1;
    }
    return s;
}

static void listen_cfg_free(net_listen_cfg *cfg)
{
    if (cfg->ssl_ctx)
        net_tls_ctx_free(cfg->ssl_ctx);
    free(cfg->name);
    free(cfg);
}

void net_server_free(net_server *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < s->nloops; i++)
        net_loop_free(s->loops[i]);
    free(s->loops);
    net_listen_cfg *cfg = s->cfgs;
    while (cfg) {
        net_listen_cfg *next = cfg->next;
        listen_cfg_free(cfg);
        cfg = next;
    }
    free(s);
}

unsigned net_server_loop_count(const net_server *s) { return s->nloops; }

net_loop *net_server_loop(net_server *s, unsigned index)
{
    return index < s->nloops ? s->loops[index] : NULL;
}

void net_server_set_loop_hooks(net_server *s, void (*init)(net_loop *, void *),
                               void (*shutdown)(net_loop *, void *), void *arg)
{
    s->init = init;
    s->shutdown = shutdown;
    s->hook_arg = arg;
}

/* ---- listen ------------------------------------------------------------- */

static bool split_hostport(const char *hp, char *host, size_t hostlen, char *port,
                           size_t portlen)
{
    const char *h = hp, *colon;
    size_t hl;
    if (hp[0] == '[') {
        const char *end = strchr(hp, ']');
        if (!end || end[1] != ':')
            return false;
        h = hp + 1;
        hl = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon)
            return false;
        hl = (size_t)(colon - hp);
    }
    size_t pl = strlen(colon + 1);
    if (hl >= hostlen || pl == 0 || pl >= portlen)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, colon + 1, pl + 1);
    return true;
}

static int bind_socket(const struct sockaddr *addr, socklen_t alen, bool reuseport,
                       bool do_listen)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* TCP_NODELAY on the listener: Linux copies it into every accepted
     * socket, which saves a setsockopt per connection (listener.c). */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        bind(fd, addr, alen) < 0 || (do_listen && listen(fd, LISTEN_BACKLOG) < 0)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

static int get_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* The address `hostport` names ("host:port"; "*" or an empty host: every
 * IPv4 address). False with errbuf filled when it is malformed or does not
 * resolve. */
static bool resolve_listen_addr(const char *hostport, struct sockaddr_storage *addr,
                                socklen_t *alen, char *errbuf, size_t errlen)
{
    char host[256], port[16];
    if (!split_hostport(hostport, host, sizeof host, port, sizeof port)) {
        snprintf(errbuf, errlen, "%s: expected host:port", hostport);
        return false;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *node = (host[0] == '\0' || strcmp(host, "*") == 0) ? "0.0.0.0" : host;
    int gai = getaddrinfo(node, port, &hints, &res);
    if (gai != 0) {
        snprintf(errbuf, errlen, "%s: %s", hostport, gai_strerror(gai));
        return false;
    }
    *alen = (socklen_t)res->ai_addrlen;
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return true;
}

/* What every connection of one listener shares: its handler, limits and
 * TLS context. NULL with errbuf filled on failure. */
static net_listen_cfg *listen_cfg_new(const char *hostport, const net_tls_config *tls,
                                      const net_conn_handler *handler, void *listener_arg,
                                      const net_conn_limits *limits, char *errbuf,
                                      size_t errlen)
{
    net_listen_cfg *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->name = strdup(hostport))) {
        free(cfg);
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    cfg->handler = *handler;
    cfg->arg = listener_arg;
    cfg->limits = limits ? *limits : default_limits;
    if (cfg->limits.out_high && cfg->limits.out_low > cfg->limits.out_high)
        cfg->limits.out_low = cfg->limits.out_high;
    if (tls) {
        char e[512];
        cfg->ssl_ctx = net_tls_ctx_new(tls, e, sizeof e);
        if (!cfg->ssl_ctx) {
            snprintf(errbuf, errlen, "%s: %s", hostport, e);
            listen_cfg_free(cfg);
            return NULL;
        }
    }
    return cfg;
}

/*
 * One listening socket per loop, all on `addr` with SO_REUSEPORT so the
 * kernel spreads new connections over the loops. A fixed port is first
 * bound once without SO_REUSEPORT: a port another process holds is then
 * refused (EADDRINUSE) instead of silently shared with it. Port 0 takes
 * the port the first socket got, written back into addr. NULL with errbuf
 * filled (and nothing left open) on failure.
 */
static int *bind_per_loop(const net_server *s, struct sockaddr_storage *addr, socklen_t alen,
                          const char *hostport, char *errbuf, size_t errlen)
{
    if (get_port(addr) != 0) {
        int probe = bind_socket((struct sockaddr *)addr, alen, false, false);
        if (probe < 0) {
            snprintf(errbuf, errlen, "%s: %s", hostport, strerror(errno));
            return NULL;
        }
        close(probe);
    }
    int *fds = calloc(s->nloops, sizeof *fds);
    if (!fds) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    unsigned made = 0;
    for (; made < s->nloops; made++) {
        fds[made] = bind_socket((struct sockaddr *)addr, alen, true, true);
        if (fds[made] < 0) {
            snprintf(errbuf, errlen, "%s: %s", hostport, strerror(errno));
            break;
        }
        if (made == 0 && get_port(addr) == 0) {
            struct sockaddr_storage got;
            socklen_t gl = sizeof got;
            if (getsockname(fds[0], (struct sockaddr *)&got, &gl) < 0) {
                snprintf(errbuf, errlen, "%s: getsockname: %s", hostport, strerror(errno));
                close(fds[0]);
                break;
            }
            set_port(addr, get_port(&got));
        }
    }
    if (made == s->nloops)
        return fds;
    for (unsigned i = 0; i < made; i++)
        close(fds[i]);
    free(fds);
    return NULL;
}

bool net_server_listen(net_server *s, const char *hostport, const net_tls_config *tls,
                       const net_conn_handler *handler, void *listener_arg,
                       const net_conn_limits *limits, int *bound_port, char *errbuf,
                       size_t errlen)
{
    if (!handler || !handler->on_open || !handler->on_input) {
        snprintf(errbuf, errlen, "%s: handler needs on_open and on_input", hostport);
        return false;
    }
    struct sockaddr_storage addr;
    socklen_t alen;
    if (!resolve_listen_addr(hostport, &addr, &alen, errbuf, errlen))
        return false;
    net_listen_cfg *cfg = listen_cfg_new(hostport, tls, handler, listener_arg, limits, errbuf,
                                         errlen);
    if (!cfg)
        return false;
    int *fds = bind_per_loop(s, &addr, alen, hostport, errbuf, errlen);
    if (!fds) {
        listen_cfg_free(cfg);
        return false;
    }
    /* From the first listener registered on, cfg is referenced: the
     * server owns it whatever happens next. */
    cfg->next = s->cfgs;
    s->cfgs = cfg;
    for (unsigned i = 0; i < s->nloops; i++) {
        if (!net_listener_new(s->loops[i], fds[i], cfg)) {
            snprintf(errbuf, errlen, "%s: cannot register listener: %s", hostport,
                     strerror(errno));
            /* Loops < i already own theirs (closed with the loop). */
            for (unsigned j = i; j < s->nloops; j++)
                close(fds[j]);
            free(fds);
            return false;
        }
    }
    free(fds);
    if (bound_port)
        *bound_port = get_port(&addr);
    log_info("listening on %s%s (port %d, %u loops)", hostport, tls ? " with TLS" : "",
             get_port(&addr), s->nloops);
    return true;
}

/* ---- run and stop ------------------------------------------------------- */

void net_server_drain(net_server *s)
{
    for (unsigned i = 0; i < s->nloops; i++)
        net_loop_run_late_tasks(s->loops[i]);
}

bool net_server_stop_requested(const net_server *s)
{
    return atomic_load_explicit(&s->stop, memory_order_acquire);
}

void net_server_stop(net_server *s)
{
    atomic_store_explicit(&s->stop, true, memory_order_release);
    for (unsigned i = 0; i < s->nloops; i++)
        net_loop_wake(s->loops[i]);
}

void net_server_loop_started(net_server *s, net_loop *l)
{
    if (s->init)
        s->init(l, s->hook_arg);
}

void net_server_loop_stopping(net_server *s, net_loop *l)
{
    if (s->shutdown)
        s->shutdown(l, s->hook_arg);
}

bool net_server_loop_finished(net_server *s, net_loop *l)
{
    /* Done once every connection is closed and the hook has seen what their
     * on_close left behind. */
    if (!l->stop_done && l->nconns == 0 && !l->hook_due && !net_conns_have_work(l)) {
        l->stop_done = true;
        if (atomic_fetch_sub(&s->active, 1) == 1)
            for (unsigned i = 0; i < s->nloops; i++)
                net_loop_wake(s->loops[i]);
    }
    return atomic_load(&s->active) == 0;
}

void net_server_on_signal(net_server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        const char *name = si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (net_server_stop_requested(s)) {
            log_info("received %s, already shutting down", name);
        } else {
            log_info("received %s, shutting down", name);
            net_server_stop(s);
        }
    }
}

static void *loop_thread(void *arg)
{
    net_loop *l = arg;
    char name[16];
    snprintf(name, sizeof name, "loop%u", l->index);
    pthread_setname_np(pthread_self(), name);
    net_loop_run(l);
    return NULL;
}

int net_server_run(net_server *s)
{
    int rc = 0;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    s->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->sig_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->loops[0]->sig_kind};
        if (epoll_ctl(s->loops[0]->epfd, EPOLL_CTL_ADD, s->sig_fd, &ev) < 0)
            log_warn("net: cannot watch signals: %s", strerror(errno));
    } else {
        log_warn("net: signalfd: %s", strerror(errno));
    }

    atomic_store(&s->active, s->nloops);
    unsigned started = 1;
    for (; started < s->nloops; started++) {
        int e = pthread_create(&s->loops[started]->thread, NULL, loop_thread,
                               s->loops[started]);
        if (e != 0) {
            log_error("net: cannot start loop thread %u: %s", started, strerror(e));
            rc = -1;
            /* The loops that never start count as done; stop the others. */
            atomic_fetch_sub(&s->active, s->nloops - started);
            net_server_stop(s);
            break;
        }
    }
    net_loop_run(s->loops[0]);
    for (unsigned i = 1; i < started; i++)
        pthread_join(s->loops[i]->thread, NULL);

    if (s->sig_fd >= 0) {
        epoll_ctl(s->loops[0]->epfd, EPOLL_CTL_DEL, s->sig_fd, NULL);
        struct signalfd_siginfo si;
        while (read(s->sig_fd, &si, sizeof si) > 0) /* consumed by this shutdown */
            ;
        close(s->sig_fd);
        s->sig_fd = -1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    log_info("net: all %u loops stopped", s->nloops);
    return rc;
}
