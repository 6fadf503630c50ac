/*
 * tools/bench/engine.h — the load generator's connection engine.
 *
 * A run (bench_run, the one context struct of a run: no globals) owns T
 * threads; each thread owns an epoll set and a fixed slice of the clients
 * (client i belongs to thread i mod T), so a client is only ever touched
 * by one thread and needs no lock. Sockets are non-blocking and
 * edge-triggered; each client has an output queue flushed once per loop
 * iteration, and keeps only the incomplete tail of its input between
 * reads (the bytes are read into the thread's buffer), so 20,000 idle
 * clients cost little memory.
 *
 * The engine knows MQTT connection handling (TCP connect from a chosen
 * source address, CONNECT/CONNACK, framing, decoding, errors); what a
 * client does once connected belongs to the scenario (scenarios.h), called
 * through a few hooks. Statistics are per thread and merged at the end.
 *
 * Phases: SETUP (connect everyone, nothing is measured), RUN (measured for
 * duration_s), STOP (threads leave their loops). The main thread moves the
 * phase; threads read it once per iteration.
 */
#ifndef IOTHUBD_BENCH_ENGINE_H
#define IOTHUBD_BENCH_ENGINE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tools/bench/hist.h"
#include "tools/bench/options.h"
#include "tools/bench/proto.h"

/* Errors that have no MQTT reason code. */
typedef enum bench_error {
    ERR_CONNECT_REFUSED,    /* ECONNREFUSED */
    ERR_NO_SOURCE_PORT,     /* EADDRNOTAVAIL / EADDRINUSE at bind or connect */
    ERR_CONNECT_FAILED,     /* any other connect() failure */
    ERR_SOCKET,             /* socket()/epoll failures (EMFILE ...) */
    ERR_CONNACK_TIMEOUT,
    ERR_CLOSED_BY_SERVER,   /* EOF or reset without a DISCONNECT */
    ERR_DECODE,             /* malformed packet from the server */
    ERR_SEND,
    ERR_OUT_OF_MEMORY,
    ERR_KEEPALIVE_MISS,     /* PINGRESP later than the Keep Alive */
    ERR_NOT_DELIVERED,      /* fanout: messages given up on */
    ERR_WINDOW_FULL,        /* rate mode: a due message found no free slot */
    ERR_HTTP_CONNECTION,    /* service API: connect/send/receive failed */
    ERR_HTTP_MALFORMED,     /* service API: a response we cannot parse */
    ERR_UNMATCHED_RESPONSE, /* hub: a response whose Correlation Data we never sent */
    ERR_COUNT,
} bench_error;

/* Errors carrying an MQTT reason code, counted per code. */
typedef enum bench_reason_kind {
    REASON_CONNACK,
    REASON_PUBACK,
    REASON_SUBACK,
    REASON_DISCONNECT,
    REASON_HUB_STATUS,      /* `status` of a hub response: its code byte */
    REASON_KIND_COUNT,
} bench_reason_kind;

const char *bench_error_name(bench_error e);
const char *bench_reason_kind_name(bench_reason_kind k);

#define BENCH_HTTP_STATUS_MAX 600

typedef struct bench_stats {
    bench_hist latency;        /* ns: PUBACK, delivery or CONNACK latency;
                                  twin: get; methods, c2d: HTTP request */
    bench_hist latency2;       /* ns: twin: patch reported; c2d: POST → delivery */
    bench_hist read_delay;     /* ns: from bytes reaching a client's socket to the
                                  generator reading them (in no latency above) */
    uint64_t sent;             /* messages sent during RUN */
    uint64_t acked;            /* QoS 1 acknowledgements during RUN */
    uint64_t delivered;        /* messages received during RUN */
    uint64_t connects;         /* successful CONNACKs (all phases) */
    uint64_t connects_in_run;
    uint64_t pings;
    uint64_t pongs;
    uint64_t disconnects;      /* connections lost after CONNACK */
    uint64_t held;             /* connections still up when RUN ended */
    uint64_t errors[ERR_COUNT];
    uint64_t reasons[REASON_KIND_COUNT][256];
    uint64_t http_status[BENCH_HTTP_STATUS_MAX]; /* service API answers other than 2xx */
} bench_stats;

void bench_stats_init(bench_stats *s);
void bench_stats_merge(bench_stats *dst, const bench_stats *src);

typedef enum client_state {
    CLIENT_IDLE,         /* not started, or closed and waiting to restart */
    CLIENT_TCP,          /* connect() in progress */
    CLIENT_MQTT,         /* CONNECT sent, waiting for CONNACK */
    CLIENT_READY,        /* CONNACK success */
    CLIENT_FAILED,       /* gave up (setup-style scenarios do not retry) */
} client_state;

typedef struct bench_client {
    int fd;
    unsigned index;          /* global client number */
    client_state state;
    bool writable;           /* edge-triggered: the socket took all we gave */
    bool dirty;              /* on the thread's flush list */
    bool subscribed;         /* fanout, methods, c2d: SUBACK received */
    bool in_send_ring;       /* rate mode: on the thread's ring of clients with a free slot */
    bool twin_patch_next;    /* twin rate mode: this client's next request is a patch */
    bench_buf out;
    uint8_t *tail;           /* incomplete input packet */
    uint32_t tail_len;
    uint64_t started_ns;     /* connect() time of the current attempt */
    uint64_t ready_ns;
    /* QoS 1 window: slot s is packet id s + 1. */
    uint64_t *sent_ns;       /* per slot: send time, 0 = free */
    uint16_t *free_slots;
    unsigned free_count;
    unsigned window;         /* min(options window, server Receive Maximum) */
    uint64_t next_ping_ns;
    uint64_t ping_sent_ns;   /* 0 = no PINGREQ outstanding */
} bench_client;

struct bench_run;

typedef struct bench_thread {
    struct bench_run *run;
    unsigned index;
    pthread_t tid;
    int epfd;
    bench_client *clients;
    unsigned client_count;
    unsigned next_start;      /* next client to start in SETUP */
    unsigned in_progress;     /* attempts not yet answered */
    unsigned *dirty;          /* indexes of clients with pending output */
    unsigned dirty_count;
    uint8_t *rbuf;
    size_t rbuf_cap;
    uint64_t arrival_ns;      /* when the bytes being handled reached the socket */
    bench_stats stats;
    uint64_t last_scan_ns;
    /* rate mode: clients that may send now, FIFO (each at most once) */
    unsigned *send_ring;
    unsigned ring_head;
    unsigned ring_count;
    /* scenario state of this thread */
    double tokens;
    uint64_t last_tick_ns;
    unsigned rr;
    bool filled;              /* RUN has been seen (rate clock started) */
    bool filled_once;         /* telemetry: first window fill done */
    uint64_t delivered_unpublished; /* fanout: not yet added to run->fanout_delivered */
    uint64_t fan_last_delivered;    /* fanout publisher: stall detection */
    uint64_t fan_last_progress_ns;
    uint64_t fan_forgiven;          /* deliveries given up on */
} bench_thread;

enum bench_phase { PHASE_SETUP = 0, PHASE_RUN = 1, PHASE_STOP = 2 };

/* Hub credentials for clients (hub mode only). */
typedef struct bench_credentials {
    const char *host;        /* hub host name */
    char (*keys)[48];        /* per client: base64 key */
} bench_credentials;

typedef struct bench_run {
    const bench_options *opt;
    const bench_credentials *creds; /* NULL: anonymous */
    struct sockaddr_in server;
    unsigned total_clients;         /* connections the engine makes */
    unsigned per_thread_concurrency;
    bench_thread *threads;
    unsigned thread_count;
    _Atomic int phase;
    _Atomic unsigned ready;         /* clients ready for RUN (fanout: subscribed) */
    _Atomic unsigned failed;        /* clients given up on in SETUP */
    _Atomic uint64_t fanout_sent;
    _Atomic uint64_t fanout_delivered;
    uint64_t run_start_ns;
    uint64_t run_end_ns;
    uint8_t *payload;               /* shared, read-only after start */
    mqtt_bytes fanout_topic;
    char fanout_topic_buf[128];
} bench_run;

/* Sets up the run: threads, clients, epoll sets, buffers. False (reason in
 * err) when the server address is bad or memory runs out. */
bool bench_run_init(bench_run *run, const bench_options *opt, const bench_credentials *creds,
                    char *err, size_t errlen);
/* Starts the threads. */
bool bench_run_start(bench_run *run, char *err, size_t errlen);
/* Stops and joins the threads, then merges their statistics into out. */
void bench_run_finish(bench_run *run, bench_stats *out);
void bench_run_free(bench_run *run);

/* ---- used by the scenarios --------------------------------------------- */

uint64_t bench_now_ns(void);
/* to_ns - from_ns, or 0 when to_ns is not later (a clock that stepped
 * must not record 2^64 ns). */
uint64_t bench_span_ns(uint64_t from_ns, uint64_t to_ns);
/* The latency of the answer being handled, to something sent at sent_ns:
 * until the answer reached the socket. */
uint64_t bench_latency_ns(const bench_thread *t, uint64_t sent_ns);
/* Asks the kernel to stamp what fd receives, for bench_recv_stamped. */
void bench_stamp_receives(int fd);
/* recv() that also says when the bytes reached the socket (arrival_ns:
 * the kernel's stamp of the newest segment read, on bench_now_ns's clock;
 * the read time when there is none) and when they were read (read_ns).
 * Both are set whatever the result. */
ssize_t bench_recv_stamped(int fd, void *buf, size_t len, uint64_t *arrival_ns, uint64_t *read_ns);
/* Queues the client for a flush at the end of the iteration. */
void bench_client_mark_dirty(bench_thread *t, bench_client *c);
/* Sends what is queued for c now instead of at the end of the iteration. */
void bench_client_flush_now(bench_thread *t, bench_client *c);
/* Starts a TCP connection for c (state CLIENT_TCP). */
void bench_client_start(bench_thread *t, bench_client *c);
/* Closes the socket and frees per-connection buffers; state CLIENT_IDLE. */
void bench_client_close(bench_thread *t, bench_client *c);
/* Rate mode: puts c at the tail of the thread's send ring (no-op if it is
 * already there). O(1). */
void bench_ring_push(bench_thread *t, bench_client *c);
/* Takes the client at the head of the send ring; NULL when empty. O(1). */
bench_client *bench_ring_pop(bench_thread *t);
/* Counts an error (always, whatever the phase). */
void bench_count_error(bench_thread *t, bench_error e);
void bench_count_reason(bench_thread *t, bench_reason_kind k, uint8_t reason);
/* The client's id: "{prefix}{index}" in hub mode, else "bench-{index}". */
void bench_client_id(const bench_run *run, unsigned index, char *out, size_t cap);

#endif
