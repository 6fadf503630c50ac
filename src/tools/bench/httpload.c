/*
 * tools/bench/httpload.c — see httpload.h.
 *
 * Connections are opened with a blocking connect() (loopback: immediate)
 * and then made non-blocking; the thread waits in epoll (edge-triggered)
 * and wakes every few milliseconds to notice the phase. Each connection's
 * request is built into its own buffer and written until done; its
 * response is read into a fixed buffer (the service API's answers here
 * are small) and parsed as it arrives. Nothing is pipelined: one request
 * per connection at a time, as an HTTP/1.1 client library would.
 */
#include "tools/bench/httpload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util/sas.h"

#define API_VERSION "2021-04-12"
#define HTTP_POLL_MS 5
#define HTTP_PACED_POLL_MS 1
#define HTTP_PACE_LATE_NS 100000000ull
#define HTTP_RETRY_NS 100000000ull
#define HTTP_EVENTS_PER_WAIT 64
#define TOKEN_LIFETIME_S 3600

size_t http_build_method_call(char *out, size_t cap, const char *host, const char *token,
                              const char *device_id, const char *method)
{
    char body[256];
    int blen = snprintf(body, sizeof body,
                        "{\"methodName\":\"%s\",\"payload\":null,\"responseTimeoutInSeconds\":30,"
                        "\"connectTimeoutInSeconds\":0}",
                        method);
    if (blen <= 0 || (size_t)blen >= sizeof body)
        return 0;
    int n = snprintf(out, cap,
                     "POST /twins/%s/methods?api-version=" API_VERSION " HTTP/1.1\r\n"
                     "Host: %s\r\nAuthorization: %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     device_id, host, token, blen, body);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t http_build_c2d_send(char *out, size_t cap, const char *host, const char *token,
                           const char *device_id, uint64_t stamp_ns)
{
    char body[24];
    int blen = snprintf(body, sizeof body, "%llu", (unsigned long long)stamp_ns);
    int n = snprintf(out, cap,
                     "POST /devices/%s/messages/deviceBound?api-version=" API_VERSION
                     " HTTP/1.1\r\nHost: %s\r\nAuthorization: %s\r\n"
                     "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
                     device_id, host, token, blen, body);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The value of header `name` (case-insensitive) within head[0..len), or
 * NULL. */
static const char *find_header(const char *head, size_t len, const char *name)
{
    size_t n = strlen(name);
    const char *end = head + len;
    for (const char *line = memchr(head, '\n', len); line && line + 1 + n < end;
         line = memchr(line + 1, '\n', (size_t)(end - line - 1))) {
        if (strncasecmp(line + 1, name, n) == 0 && line[1 + n] == ':')
            return line + 2 + n;
    }
    return NULL;
}

int http_parse_response(const char *buf, size_t len, int *status, size_t *total)
{
    const char *head_end = NULL;
    for (size_t i = 0; i + 3 < len && !head_end; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            head_end = buf + i;
    if (!head_end)
        return len >= HTTP_RESPONSE_MAX ? -1 : 0;
    size_t head_len = (size_t)(head_end - buf);
    if (head_len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ' || buf[9] < '1' ||
        buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' || buf[11] > '9')
        return -1;
    if (find_header(buf, head_len, "Transfer-Encoding"))
        return -1;
    size_t body = 0;
    const char *cl = find_header(buf, head_len, "Content-Length");
    if (cl) {
        char *end;
        while (*cl == ' ')
            cl++;
        unsigned long v = strtoul(cl, &end, 10);
        if (end == cl || v > HTTP_RESPONSE_MAX)
            return -1;
        body = v;
    }
    size_t whole = head_len + 4 + body;
    if (len < whole)
        return 0;
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    *total = whole;
    return 1;
}

void http_pace_start(http_pace *p, double rate, uint64_t now_ns)
{
    *p = (http_pace){.interval_ns = rate > 0 ? 1e9 / rate : 0, .start_ns = now_ns};
}

static uint64_t pace_due(const http_pace *p, uint64_t k)
{
    return p->start_ns + (uint64_t)((double)k * p->interval_ns);
}

bool http_pace_take(http_pace *p, uint64_t now_ns, uint64_t late_ns, uint64_t *due_ns,
                    uint64_t *dropped)
{
    if (p->interval_ns <= 0 || pace_due(p, p->k) > now_ns)
        return false;
    if (now_ns - pace_due(p, p->k) > late_ns) {
        /* the first request due no earlier than now - late_ns */
        uint64_t first = (uint64_t)((double)(now_ns - late_ns - p->start_ns) / p->interval_ns);
        while (pace_due(p, first) < now_ns - late_ns)
            first++;
        *dropped += first - p->k;
        p->k = first;
    }
    *due_ns = pace_due(p, p->k++);
    return true;
}

/* ---- connections ---------------------------------------------------------- */

static enum bench_phase phase_now(const bench_http_load *hl)
{
    return (enum bench_phase)atomic_load_explicit(&hl->run->phase, memory_order_acquire);
}

static void conn_close(bench_http_load *hl, http_conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(hl->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->busy = false;
    c->in_len = c->req_len = c->req_off = 0;
}

static bool conn_open(bench_http_load *hl, http_conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    bench_stamp_receives(fd);
    if (connect(fd, (const struct sockaddr *)&hl->addr, sizeof hl->addr) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return false;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(hl->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        close(fd);
        return false;
    }
    c->fd = fd;
    return true;
}

/* A connection failed: counted, closed, reopened later. */
static void conn_fail(bench_http_load *hl, http_conn *c, bench_error e)
{
    if (phase_now(hl) != PHASE_STOP)
        hl->stats.errors[e]++;
    conn_close(hl, c);
    c->retry_ns = bench_now_ns() + HTTP_RETRY_NS;
}

static void conn_write(bench_http_load *hl, http_conn *c)
{
    while (c->req_off < c->req_len) {
        ssize_t n = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->req_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            conn_fail(hl, c, ERR_HTTP_CONNECTION);
            return;
        }
    }
}

static bool paced(const bench_http_load *hl) { return hl->pace.interval_ns > 0; }

/* Builds and writes the next request for the next device; its latency
 * (and a C2D message's stamp) counts from due_ns. */
static void conn_request(bench_http_load *hl, http_conn *c, uint64_t due_ns)
{
    const bench_options *o = hl->run->opt;
    char id[128];
    snprintf(id, sizeof id, "%s%06u", o->device_prefix, hl->next_device);
    hl->next_device = (hl->next_device + 1) % o->clients;
    c->req_len = o->scenario == SCENARIO_METHODS
                     ? http_build_method_call(c->req, sizeof c->req, hl->host, hl->token, id,
                                              "bench")
                     : http_build_c2d_send(c->req, sizeof c->req, hl->host, hl->token, id, due_ns);
    if (c->req_len == 0) {
        hl->stats.errors[ERR_OUT_OF_MEMORY]++;
        return;
    }
    c->req_off = 0;
    c->busy = true;
    c->sent_ns = due_ns;
    hl->stats.sent++;
    conn_write(hl, c);
}

/* One whole response, which reached the socket at arrival_ns: counted,
 * then, in a closed loop, the next request (in RUN). A refusal that comes
 * once the run has stopped is not counted: the devices are disconnecting
 * then, so a call or command still in flight may find its device gone
 * (404 from a server without a queue), which says nothing of the server. */
static void conn_answered(bench_http_load *hl, http_conn *c, int status, uint64_t arrival_ns)
{
    c->busy = false;
    enum bench_phase phase = phase_now(hl); /* one reading decides for this answer */
    bool measured = phase == PHASE_RUN && c->sent_ns >= hl->run->run_start_ns;
    if (status < 200 || status > 299) {
        if (status < BENCH_HTTP_STATUS_MAX && phase != PHASE_STOP)
            hl->stats.http_status[status]++;
    } else if (measured) {
        hl->stats.acked++;
        hist_record(&hl->stats.latency, bench_span_ns(c->sent_ns, arrival_ns));
    }
    if (phase == PHASE_RUN && !paced(hl))
        conn_request(hl, c, bench_now_ns());
}

/* Reads and answers everything available (edge-triggered); a short read
 * drained the socket unless it hung up (see read_input in engine.c). */
static void conn_read(bench_http_load *hl, http_conn *c, bool hung_up)
{
    for (;;) {
        if (c->in_len == sizeof c->in) {
            conn_fail(hl, c, ERR_HTTP_MALFORMED);
            return;
        }
        size_t space = sizeof c->in - c->in_len;
        uint64_t arrival_ns, read_ns;
        ssize_t n = bench_recv_stamped(c->fd, c->in + c->in_len, space, &arrival_ns, &read_ns);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            conn_fail(hl, c, ERR_HTTP_CONNECTION);
            return;
        }
        if (phase_now(hl) == PHASE_RUN)
            hist_record(&hl->stats.read_delay, read_ns - arrival_ns);
        c->in_len += (size_t)n;
        int status;
        size_t total;
        int rc;
        while ((rc = http_parse_response(c->in, c->in_len, &status, &total)) == 1) {
            memmove(c->in, c->in + total, c->in_len - total);
            c->in_len -= total;
            conn_answered(hl, c, status, arrival_ns);
            if (c->fd < 0)
                return;
        }
        if (rc < 0) {
            conn_fail(hl, c, ERR_HTTP_MALFORMED);
            return;
        }
        if ((size_t)n < space && !hung_up)
            return;
    }
}

/* Failed connections are reopened; in a closed loop, idle ones get a
 * request. */
static void kick_idle(bench_http_load *hl)
{
    uint64_t now = bench_now_ns();
    for (unsigned i = 0; i < hl->conn_count; i++) {
        http_conn *c = &hl->conns[i];
        if (c->fd < 0 && now >= c->retry_ns && !conn_open(hl, c)) {
            conn_fail(hl, c, ERR_HTTP_CONNECTION);
            continue;
        }
        if (c->fd >= 0 && !c->busy && !paced(hl))
            conn_request(hl, c, now);
    }
}

/* A connection with no request outstanding, or NULL; the search goes
 * round so the load spreads over all of them. */
static http_conn *next_idle(bench_http_load *hl)
{
    for (unsigned n = 0; n < hl->conn_count; n++) {
        http_conn *c = &hl->conns[hl->idle_cursor];
        hl->idle_cursor = (hl->idle_cursor + 1) % hl->conn_count;
        if (c->fd >= 0 && !c->busy)
            return c;
    }
    return NULL;
}

/* Paced: every request due by now goes out while a connection is free. */
static void send_due(bench_http_load *hl, uint64_t now)
{
    uint64_t due, dropped = 0;
    http_conn *c;
    while ((c = next_idle(hl)) && http_pace_take(&hl->pace, now, HTTP_PACE_LATE_NS, &due, &dropped))
        conn_request(hl, c, due);
    /* a free connection with nothing due: the search starts at it next */
    if (c)
        hl->idle_cursor = (unsigned)(c - hl->conns);
    hl->stats.errors[ERR_WINDOW_FULL] += dropped;
}

static void *http_thread(void *arg)
{
    bench_http_load *hl = arg;
    struct epoll_event events[HTTP_EVENTS_PER_WAIT];
    uint64_t last_kick = 0;
    while (phase_now(hl) != PHASE_STOP) {
        int n = epoll_wait(hl->epfd, events, HTTP_EVENTS_PER_WAIT,
                           paced(hl) ? HTTP_PACED_POLL_MS : HTTP_POLL_MS);
        for (int i = 0; i < n; i++) {
            http_conn *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (events[i].events & EPOLLOUT)
                conn_write(hl, c);
            uint32_t hangup = events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
            if (c->fd >= 0 && (events[i].events & EPOLLIN || hangup))
                conn_read(hl, c, hangup != 0);
        }
        uint64_t now = bench_now_ns();
        if (phase_now(hl) != PHASE_RUN)
            continue;
        if (!hl->kicked && hl->run->opt->rate > 0) /* the rate clock starts with RUN */
            http_pace_start(&hl->pace, hl->run->opt->rate, now);
        if (!hl->kicked || now - last_kick > HTTP_RETRY_NS) {
            hl->kicked = true;
            last_kick = now;
            kick_idle(hl);
        }
        if (paced(hl))
            send_due(hl, now);
    }
    return NULL;
}

/* ---- start and finish ----------------------------------------------------- */

static bool resolve(bench_http_load *hl, const char *url)
{
    char host[256];
    uint16_t port;
    hl->addr = (struct sockaddr_in){.sin_family = AF_INET};
    if (!bench_url_parse(url, host, sizeof host, &port) ||
        inet_pton(AF_INET, host, &hl->addr.sin_addr) != 1)
        return false;
    hl->addr.sin_port = htons(port);
    return true;
}

bool bench_http_load_start(bench_http_load *hl, bench_run *run, const bench_connstr *cs,
                           char *err, size_t errlen)
{
    memset(hl, 0, sizeof *hl);
    hl->run = run;
    hl->host = cs->host;
    hl->epfd = -1;
    bench_stats_init(&hl->stats);
    const bench_options *o = run->opt;
    if (!resolve(hl, o->hub_url)) {
        snprintf(err, errlen, "--hub: expected http://IPv4:PORT, got %s", o->hub_url);
        return false;
    }
    hl->token = sas_token_build(cs->host, cs->key, cs->policy[0] ? cs->policy : NULL,
                                (uint64_t)time(NULL) + TOKEN_LIFETIME_S);
    hl->conns = calloc(o->http_connections, sizeof *hl->conns);
    hl->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!hl->token || !hl->conns || hl->epfd < 0) {
        snprintf(err, errlen, "service token, memory or epoll failed");
        return false;
    }
    hl->conn_count = o->http_connections;
    for (unsigned i = 0; i < hl->conn_count; i++) {
        hl->conns[i].fd = -1;
        if (!conn_open(hl, &hl->conns[i])) {
            snprintf(err, errlen, "connecting to %s: %s", o->hub_url, strerror(errno));
            return false;
        }
    }
    int rc = pthread_create(&hl->tid, NULL, http_thread, hl);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create: %s", strerror(rc));
        return false;
    }
    hl->started = true;
    return true;
}

void bench_http_load_finish(bench_http_load *hl, bench_stats *out)
{
    if (hl->started)
        pthread_join(hl->tid, NULL);
    hl->started = false;
    if (out)
        bench_stats_merge(out, &hl->stats);
    for (unsigned i = 0; hl->conns && i < hl->conn_count; i++)
        conn_close(hl, &hl->conns[i]);
    if (hl->epfd >= 0)
        close(hl->epfd);
    free(hl->conns);
    free(hl->token);
    hl->conns = NULL;
    hl->token = NULL;
    hl->epfd = -1;
}
