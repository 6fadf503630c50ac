/*
 * tools/bench/httpload.h — the service-API side of the methods and c2d
 * scenarios: K HTTP/1.1 keep-alive connections on one epoll thread, each
 * with one request outstanding (closed loop), targeting the devices
 * round-robin.
 *
 *   methods  POST /twins/{id}/methods {"methodName":"bench",...}; the
 *            device answers (scenarios_hub.h); a call counts when the
 *            200 arrives.
 *   c2d      POST /devices/{id}/messages/deviceBound whose body is the
 *            sender's monotonic clock in decimal ns; a send counts when the
 *            201 arrives (the devices count deliveries).
 *
 * Latency = request written → whole response read. Requests start when the
 * run enters RUN and stop at STOP; a response other than 2xx is counted by
 * status (`http:404` ...), a broken connection as http_connection and it
 * is reopened. Authorization is one service SAS token made from the
 * connection string.
 *
 * The request builders and the response parser are pure functions (unit
 * tested); the rest is socket plumbing.
 */
#ifndef IOTHUBD_BENCH_HTTPLOAD_H
#define IOTHUBD_BENCH_HTTPLOAD_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tools/bench/engine.h"
#include "tools/bench/hub.h"

#define HTTP_REQUEST_MAX 1536
#define HTTP_RESPONSE_MAX 8192

/* POST /twins/{id}/methods invoking `method` with a null payload. Returns
 * the request's length, 0 when it does not fit in cap. */
size_t http_build_method_call(char *out, size_t cap, const char *host, const char *token,
                              const char *device_id, const char *method);
/* POST /devices/{id}/messages/deviceBound with body = stamp in decimal. */
size_t http_build_c2d_send(char *out, size_t cap, const char *host, const char *token,
                           const char *device_id, uint64_t stamp_ns);

/* One response at buf[0..len): 1 when complete (status and total length
 * set), 0 when more bytes are needed, -1 when malformed or chunked (the
 * service API always sends Content-Length). */
int http_parse_response(const char *buf, size_t len, int *status, size_t *total);

/* The --rate clock: request k (from 0) is due at start_ns + k / rate. */
typedef struct http_pace {
    double interval_ns;       /* 0: not paced */
    uint64_t start_ns;
    uint64_t k;               /* the next request's number */
} http_pace;

void http_pace_start(http_pace *p, double rate, uint64_t now_ns);
/* Whether a request is due at now_ns; if so sets *due_ns to its due time
 * and moves on to the next. Requests overdue by more than late_ns are
 * dropped first and added to *dropped. */
bool http_pace_take(http_pace *p, uint64_t now_ns, uint64_t late_ns, uint64_t *due_ns,
                    uint64_t *dropped);

typedef struct http_conn {
    int fd;
    bool connecting;
    bool busy;                /* a request is outstanding */
    uint64_t sent_ns;
    uint64_t retry_ns;        /* reopen not before (after a failure) */
    size_t req_len;
    size_t req_off;
    size_t in_len;
    char req[HTTP_REQUEST_MAX];
    char in[HTTP_RESPONSE_MAX];
} http_conn;

typedef struct bench_http_load {
    bench_run *run;           /* phase and run start; not owned */
    struct sockaddr_in addr;
    const char *host;         /* hub host name (Host header, token audience) */
    char *token;              /* Authorization header value, owned */
    http_conn *conns;
    unsigned conn_count;
    unsigned next_device;
    unsigned idle_cursor;     /* paced: where the search for a free connection starts */
    http_pace pace;
    bool kicked;              /* RUN seen: every connection got its first request */
    int epfd;
    pthread_t tid;
    bool started;
    bench_stats stats;
} bench_http_load;

/* Opens the connections (blocking connect) and starts the thread. False
 * with the reason in err. */
bool bench_http_load_start(bench_http_load *hl, bench_run *run, const bench_connstr *cs,
                           char *err, size_t errlen);
/* Joins the thread (the run must be in STOP) and merges its statistics
 * into out, then frees everything. */
void bench_http_load_finish(bench_http_load *hl, bench_stats *out);

#endif
