/*
 * net/tls.c — TLS on top of the connection paths (OpenSSL 3).
 *
 * Design: OpenSSL drives the socket itself (SSL_set_fd: a socket BIO on the
 * non-blocking fd), so the read and write paths of conn.c stay the same with
 * SSL_read/SSL_write in place of read/send. WANT_READ/WANT_WRITE map to the
 * epoll interest: a read that needs the socket writable (or a write that
 * needs it readable, e.g. a TLS 1.3 key update) sets a flag conn.c turns into
 * EPOLLOUT (EPOLLIN) and retries on. Per-connection TLS state lives in a
 * separate allocation, so plain TCP connections carry only a NULL pointer.
 *
 * One SSL_CTX per TLS listener, shared by all loops (read-only once built).
 * Modes: partial writes (the output queue is written in as many records as
 * the socket takes), moving write buffer (the queue may be reallocated
 * between retries), release buffers (an idle TLS connection gives its 2x
 * ~17 KiB record buffers back). Renegotiation is off; TLS >= 1.2.
 *
 * Client certificates: a certificate is always requested (SSL_VERIFY_PEER
 * without FAIL_IF_NO_PEER_CERT) and the verify callback accepts everything,
 * recording whether the chain verified against ca_file. The application
 * decides: accept a CA-issued device certificate, or a self-signed one by
 * its thumbprint (net_conn_peer_cert). SNI is captured by the servername
 * callback. on_open runs only once the handshake has completed; a handshake
 * that does not complete within 30 s is dropped (without on_close).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "net/internal.h"
#include "util/log.h"

struct net_tls {
    SSL *ssl;
    net_conn *conn;
    net_timer hs_timer;
    char *sni;
    bool chain_failed; /* the verify callback saw an error */
    bool verified;     /* set when the handshake completes */
};

static void ssl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
    if (!ok) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
        net_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
        net_tls *tls = c ? net_conn_tls(c) : NULL;
        if (tls)
            tls->chain_failed = true;
    }
    return 1; /* the application decides what to accept */
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    net_conn *c = SSL_get_app_data(ssl);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    net_tls *tls = c ? net_conn_tls(c) : NULL;
    if (tls && name && !tls->sni)
        tls->sni = strdup(name);
    return SSL_TLSEXT_ERR_OK;
}

SSL_CTX *net_tls_ctx_new(const net_tls_config *cfg, char *err, size_t errlen)
{
    if (!cfg->cert_file || !cfg->key_file) {
        snprintf(err, errlen, "TLS needs a certificate and a key file");
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
        ssl_err(err, errlen, cfg->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, cfg->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, cfg->key_file);
        goto fail;
    }
    if (cfg->ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
            ssl_err(err, errlen, cfg->ca_file);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    static const unsigned char sid_ctx[] = "iothubd";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void net_tls_ctx_free(SSL_CTX *ctx) { SSL_CTX_free(ctx); }

static void handshake_timeout(net_loop *l, net_timer *t)
{
    (void)l;
    net_tls *tls = (net_tls *)((char *)t - offsetof(net_tls, hs_timer));
    log_debug("%s: TLS handshake timed out", net_conn_peer_str(tls->conn));
    net_conn_close(tls->conn, false);
}

bool net_tls_conn_start(net_conn *c, SSL_CTX *ctx)
{
    net_tls *tls = calloc(1, sizeof *tls);
    if (!tls)
        return false;
    tls->conn = c;
    *net_conn_tls_slot(c) = tls;
    ERR_clear_error();
    tls->ssl = SSL_new(ctx);
    if (!tls->ssl || SSL_set_fd(tls->ssl, c->fd) != 1) {
        log_warn("%s: cannot set up TLS", net_conn_peer_str(c));
        ERR_clear_error();
        return false; /* net_tls_conn_free runs at close */
    }
    SSL_set_app_data(tls->ssl, c);
    SSL_set_accept_state(tls->ssl);
    net_timer_start(c->loop, &tls->hs_timer, NET_TLS_HANDSHAKE_MS, handshake_timeout);
    return true;
}

void net_tls_conn_free(net_conn *c)
{
    net_tls *tls = net_conn_tls(c);
    if (!tls)
        return;
    net_timer_stop(c->loop, &tls->hs_timer);
    SSL_free(tls->ssl);
    free(tls->sni);
    free(tls);
    *net_conn_tls_slot(c) = NULL;
}

int net_tls_handshake(net_conn *c)
{
    net_tls *tls = net_conn_tls(c);
    ERR_clear_error();
    int r = SSL_do_handshake(tls->ssl);
    c->flags &= ~(NC_HS_WANT_READ | NC_HS_WANT_WRITE);
    if (r == 1) {
        net_timer_stop(c->loop, &tls->hs_timer);
        tls->verified = SSL_get0_peer_certificate(tls->ssl) && !tls->chain_failed &&
                        SSL_get_verify_result(tls->ssl) == X509_V_OK;
        log_debug("%s: TLS handshake done (%s, %s)", net_conn_peer_str(c),
                  SSL_get_version(tls->ssl), SSL_get_cipher_name(tls->ssl));
        return 1;
    }
    switch (SSL_get_error(tls->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        c->flags |= NC_HS_WANT_READ;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->flags |= NC_HS_WANT_WRITE;
        return 0;
    default:
        if (log_enabled(LOG_DEBUG)) {
            char buf[256] = "connection closed";
            unsigned long e = ERR_peek_error();
            if (e)
                ERR_error_string_n(e, buf, sizeof buf);
            log_debug("%s: TLS handshake failed: %s", net_conn_peer_str(c), buf);
        }
        ERR_clear_error();
        return -1;
    }
}

static ssize_t io_error(net_conn *c, int r, bool writing)
{
    const char *op = writing ? "SSL_write" : "SSL_read";
    int e = SSL_get_error(net_conn_tls(c)->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (writing)
            c->flags |= NC_WR_WANT_RD;
        return NET_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        if (!writing)
            c->flags |= NC_RD_WANT_WR;
        return NET_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && errno == 0)
            return 0; /* plain EOF */
        log_debug("%s: %s: %s", net_conn_peer_str(c), op, strerror(errno));
        ERR_clear_error();
        return NET_IO_ERROR;
    default:
        if (log_enabled(LOG_DEBUG)) {
            char buf[256] = "error";
            unsigned long err = ERR_peek_error();
            if (err)
                ERR_error_string_n(err, buf, sizeof buf);
            log_debug("%s: %s: %s", net_conn_peer_str(c), op, buf);
        }
        ERR_clear_error();
        return NET_IO_ERROR;
    }
}

ssize_t net_tls_read(net_conn *c, uint8_t *buf, size_t len)
{
    if (len > INT_MAX)
        len = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(net_conn_tls(c)->ssl, buf, (int)len);
    if (r > 0)
        return r;
    return io_error(c, r, false);
}

ssize_t net_tls_write(net_conn *c, const uint8_t *buf, size_t len)
{
    if (len > INT_MAX)
        len = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(net_conn_tls(c)->ssl, buf, (int)len);
    if (r > 0)
        return r;
    ssize_t n = io_error(c, r, true);
    return n == 0 ? NET_IO_ERROR : n; /* a write cannot "end" */
}

bool net_tls_has_pending(const net_conn *c)
{
    const net_tls *tls = net_conn_tls(c);
    return tls && tls->ssl && SSL_has_pending(tls->ssl);
}

void net_tls_shutdown(net_conn *c)
{
    ERR_clear_error();
    (void)SSL_shutdown(net_conn_tls(c)->ssl); /* sends close_notify; no waiting */
    ERR_clear_error();
}

/* ---- public accessors (conn.h) ------------------------------------------ */

bool net_conn_is_tls(const net_conn *c) { return net_conn_tls(c) != NULL; }

X509 *net_conn_peer_cert(const net_conn *c)
{
    const net_tls *tls = net_conn_tls(c);
    if (!tls || !tls->ssl || (c->flags & NC_HANDSHAKE))
        return NULL;
    return SSL_get0_peer_certificate(tls->ssl);
}

bool net_conn_peer_cert_verified(const net_conn *c)
{
    const net_tls *tls = net_conn_tls(c);
    return tls && tls->verified;
}

const char *net_conn_sni(const net_conn *c)
{
    const net_tls *tls = net_conn_tls(c);
    return tls ? tls->sni : NULL;
}
