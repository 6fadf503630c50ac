/*
 * tools/iothub/mqtt_client.c — the simulator's MQTT 5 connection (see
 * mqtt_client.h).
 *
 * Two layers: a byte transport (plain socket or OpenSSL over it, both
 * non-blocking, with poll() doing the waiting) and packets on top
 * (mqtt_frame_parse finds where a packet ends in the receive buffer,
 * mqtt_decode parses it in place). Non-blocking I/O matters for TLS: a
 * blocking SSL_read can sit on a record that carries no application data
 * (a session ticket) and stall the caller's timers.
 */
#include "tools/iothub/mqtt_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/time.h"

#define MQTTC_MAX_PACKET (512u * 1024u) /* above the hub's 256 KiB telemetry limit */
#define MQTTC_READ_CHUNK 16384u

/* ---- transport ------------------------------------------------------------------ */

/* Fills err with the last OpenSSL error, or `what` alone. */
static void tls_error(const char *what, char *err, size_t errlen)
{
    unsigned long code = ERR_get_error();
    char detail[256] = "";
    if (code)
        ERR_error_string_n(code, detail, sizeof detail);
    snprintf(err, errlen, "%s%s%s", what, code ? ": " : "", detail);
    ERR_clear_error();
}

/* Waits until the socket is readable (want_write false) or writable, up to
 * the monotonic deadline. False on timeout or a poll failure other than a
 * signal (a signal returns true so the caller can look at its flags). */
static bool wait_socket(int fd, bool want_write, uint64_t deadline_ms)
{
    uint64_t now = time_mono_ms();
    int timeout = now >= deadline_ms ? 0 : (int)(deadline_ms - now);
    struct pollfd p = {.fd = fd, .events = want_write ? POLLOUT : POLLIN};
    int n = poll(&p, 1, timeout);
    return n > 0 || (n < 0 && errno == EINTR);
}

/* TCP connect to the first address of host:port that answers. */
static int tcp_connect(const char *host, uint16_t port, char *err, size_t errlen)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(host, service, &hints, &list);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *a = list; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(list);
    if (fd < 0)
        snprintf(err, errlen, "cannot connect to %s:%u: %s", host, port, strerror(saved));
    return fd;
}

/* An OpenSSL client context that verifies the server against ca_file (or
 * the system store). */
static SSL_CTX *tls_context(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_error("cannot create a TLS context", err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        tls_error(ca_file ? "cannot load the CA file" : "cannot load the system CAs", err,
                  errlen);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Runs the TLS handshake on the non-blocking socket until done or the
 * deadline. */
static bool tls_handshake(mqttc *c, const mqttc_endpoint *ep, char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_context(ep->ca_file, err, errlen);
    if (!ctx)
        return false;
    c->tls_ctx = ctx;
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, c->fd) || !SSL_set_tlsext_host_name(ssl, ep->tls_name) ||
        !SSL_set1_host(ssl, ep->tls_name)) {
        SSL_free(ssl);
        tls_error("cannot set up TLS", err, errlen);
        return false;
    }
    c->tls = ssl;
    uint64_t deadline = time_mono_ms() + (uint64_t)ep->timeout_ms;
    for (;;) {
        int rc = SSL_connect(ssl);
        if (rc == 1)
            return true;
        int why = SSL_get_error(ssl, rc);
        bool again = why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE;
        if (!again || !wait_socket(c->fd, why == SSL_ERROR_WANT_WRITE, deadline) ||
            time_mono_ms() >= deadline) {
            long verify = SSL_get_verify_result(ssl);
            if (verify != X509_V_OK) {
                snprintf(err, errlen, "TLS: the server's certificate is not trusted: %s",
                         X509_verify_cert_error_string(verify));
                ERR_clear_error();
            } else {
                tls_error(again ? "TLS handshake timed out" : "TLS handshake failed", err, errlen);
            }
            return false;
        }
    }
}

/* Reads what is there: > 0 bytes, 0 nothing yet, -1 closed, -2 error. */
static ssize_t transport_read(mqttc *c, uint8_t *buf, size_t cap)
{
    if (c->tls) {
        int n = SSL_read(c->tls, buf, (int)cap);
        if (n > 0)
            return n;
        int why = SSL_get_error(c->tls, n);
        if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE)
            return 0;
        return why == SSL_ERROR_ZERO_RETURN ? -1 : -2;
    }
    ssize_t n = read(c->fd, buf, cap);
    if (n > 0)
        return n;
    if (n == 0)
        return -1;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -2;
}

/* Writes some of buf: bytes written, 0 must wait, -1 failed. */
static ssize_t transport_write(mqttc *c, const uint8_t *buf, size_t len)
{
    if (c->tls) {
        int n = SSL_write(c->tls, buf, (int)len);
        if (n > 0)
            return n;
        int why = SSL_get_error(c->tls, n);
        return why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
}

/* Writes all of buf, waiting for the socket as needed (at most 30 s). */
static bool write_all(mqttc *c, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    uint64_t deadline = time_mono_ms() + 30000u;
    while (len > 0) {
        ssize_t n = transport_write(c, buf, len);
        if (n < 0) {
            snprintf(err, errlen, "connection lost while sending: %s", strerror(errno));
            return false;
        }
        buf += n;
        len -= (size_t)n;
        if (len > 0 && (!wait_socket(c->fd, true, deadline) || time_mono_ms() >= deadline)) {
            snprintf(err, errlen, "the server does not take data (send timed out)");
            return false;
        }
    }
    return true;
}

/* ---- the client ------------------------------------------------------------------- */

bool mqttc_open(mqttc *c, const mqttc_endpoint *ep, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->max_packet = MQTTC_MAX_PACKET;
    c->fd = tcp_connect(ep->host, ep->port, err, errlen);
    if (c->fd < 0)
        return false;
    int flags = fcntl(c->fd, F_GETFL);
    if (flags < 0 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "cannot make the socket non-blocking: %s", strerror(errno));
        mqttc_close(c);
        return false;
    }
    if (ep->tls && !tls_handshake(c, ep, err, errlen)) {
        mqttc_close(c);
        return false;
    }
    return true;
}

bool mqttc_send(mqttc *c, const mqtt_packet *pkt, char *err, size_t errlen)
{
    size_t size = mqtt_encoded_size(pkt, MQTT_V5);
    uint8_t *buf = size ? malloc(size) : NULL;
    if (!buf || mqtt_encode(pkt, MQTT_V5, buf) != size) {
        free(buf);
        snprintf(err, errlen, "cannot encode a %s packet", mqtt_packet_type_name(pkt->type));
        return false;
    }
    bool ok = write_all(c, buf, size, err, errlen);
    free(buf);
    return ok;
}

/* Drops the packet handed out last from the front of the buffer. */
static void discard_consumed(mqttc *c)
{
    if (c->consumed == 0)
        return;
    memmove(c->in, c->in + c->consumed, c->in_len - c->consumed);
    c->in_len -= c->consumed;
    c->consumed = 0;
}

/* Makes room for another read chunk. */
static bool grow_input(mqttc *c)
{
    if (c->in_cap - c->in_len >= MQTTC_READ_CHUNK)
        return true;
    size_t cap = c->in_cap ? c->in_cap * 2 : 2 * MQTTC_READ_CHUNK;
    uint8_t *in = realloc(c->in, cap);
    if (!in)
        return false;
    c->in = in;
    c->in_cap = cap;
    return true;
}

/* Whether a whole packet is at the front of the buffer: 1 yes (decoded
 * into out), 0 not yet, -1 malformed (err says why). */
static int take_packet(mqttc *c, mqtt_packet *out, char *err, size_t errlen)
{
    mqtt_frame f;
    mqtt_frame_status st = mqtt_frame_parse(c->in, c->in_len, c->max_packet, &f);
    if (st == MQTT_FRAME_NEED_MORE)
        return 0;
    uint8_t rc = st == MQTT_FRAME_OK ? mqtt_decode(c->in, f.total_len, MQTT_V5, out) : f.reason;
    if (rc != 0) {
        snprintf(err, errlen, "the server sent a bad packet: %s (0x%02X)", mqtt_reason_name(rc),
                 rc);
        return -1;
    }
    c->consumed = f.total_len;
    return 1;
}

mqttc_status mqttc_receive(mqttc *c, int timeout_ms, mqtt_packet *out, char *err, size_t errlen)
{
    discard_consumed(c);
    uint64_t deadline = time_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int have = c->in_len ? take_packet(c, out, err, errlen) : 0;
        if (have != 0)
            return have > 0 ? MQTTC_PACKET : MQTTC_ERROR;
        if (!grow_input(c)) {
            snprintf(err, errlen, "out of memory");
            return MQTTC_ERROR;
        }
        ssize_t n = transport_read(c, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == -1)
            return MQTTC_CLOSED;
        if (n < -1) {
            snprintf(err, errlen, "connection lost: %s", c->tls ? "TLS error" : strerror(errno));
            return MQTTC_ERROR;
        }
        c->in_len += (size_t)n;
        if (n > 0)
            continue;
        if (time_mono_ms() >= deadline)
            return MQTTC_TIMEOUT;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        uint64_t now = time_mono_ms();
        if (poll(&p, 1, (int)(deadline > now ? deadline - now : 0)) < 0 && errno == EINTR)
            return MQTTC_TIMEOUT; /* a signal: let the caller look at its flags */
    }
}

uint16_t mqttc_next_packet_id(mqttc *c)
{
    c->last_packet_id = (uint16_t)(c->last_packet_id + 1);
    if (c->last_packet_id == 0)
        c->last_packet_id = 1;
    return c->last_packet_id;
}

void mqttc_close(mqttc *c)
{
    if (c->tls) {
        SSL_shutdown(c->tls);
        SSL_free(c->tls);
    }
    if (c->tls_ctx)
        SSL_CTX_free(c->tls_ctx);
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}
