/*
 * net/server.h — the set of event-loop threads and their listeners.
 *
 * Each listener address is bound once per loop with SO_REUSEPORT, so the
 * kernel spreads new connections across loops and no loop ever hands a
 * socket to another. TLS listeners share one SSL_CTX (read-only after
 * start-up, which OpenSSL allows across threads).
 *
 * Shutdown: SIGINT/SIGTERM are caught with a signalfd on loop 0, which asks
 * every loop to stop; each loop calls its shutdown hook (so the broker can
 * say DISCONNECT 0x8B and flush), closes its connections, and exits.
 * net_server_run() returns when all loops have stopped.
 */
#ifndef IOTHUBD_NET_SERVER_H
#define IOTHUBD_NET_SERVER_H

#include <stdbool.h>

#include "net/conn.h"
#include "net/loop.h"

typedef struct net_server net_server;

typedef struct net_tls_config {
    const char *cert_file; /* PEM chain */
    const char *key_file;
    const char *ca_file;   /* CA bundle for client certificates; may be NULL */
} net_tls_config;

/* Creates `threads` loops (0 = one per online CPU). Returns NULL with a
 * message in errbuf on failure. */
net_server *net_server_new(unsigned threads, char *errbuf, size_t errlen);
void net_server_free(net_server *s);

unsigned net_server_loop_count(const net_server *s);
net_loop *net_server_loop(net_server *s, unsigned index);

/*
 * Adds a listener on "host:port" (IPv4, [IPv6] or a name) on every loop,
 * with the handler and limits for its connections. `tls` is NULL for plain
 * TCP. Port 0 picks a free port (the same one for every loop); the bound
 * port is returned through *bound_port when non-NULL. Returns false with a
 * message in errbuf (e.g. "127.0.0.1:1883: Address already in use").
 */
bool net_server_listen(net_server *s, const char *hostport,
                       const net_tls_config *tls,
                       const net_conn_handler *handler, void *listener_arg,
                       const net_conn_limits *limits, int *bound_port,
                       char *errbuf, size_t errlen);

/* Per-loop hooks: init runs on each loop's thread before it starts serving,
 * shutdown runs on each loop's thread when a stop was requested, before its
 * connections are closed. Either may be NULL. */
void net_server_set_loop_hooks(net_server *s,
                               void (*init)(net_loop *, void *),
                               void (*shutdown)(net_loop *, void *), void *arg);

/* Runs all loops (loop 0 on the calling thread) until a stop; handles
 * SIGINT/SIGTERM. Returns 0 on a clean stop. */
int net_server_run(net_server *s);
/* Requests a stop from any thread. */
void net_server_stop(net_server *s);
/* After net_server_run returned: runs, on the calling thread, the tasks
 * posted to the stopped loops since (e.g. the completions of the store,
 * which is closed after the loops), so that their memory is released
 * rather than dropped. */
void net_server_drain(net_server *s);

#endif
