/*
 * test_net_tls.c — TLS listener: echo over 127.0.0.1 with certificates made
 * here with the OpenSSL API (a CA, a CA-issued and a self-signed client
 * certificate, a self-signed server certificate), client certificate and SNI
 * seen by the application, on_open only after the handshake, large transfers,
 * a non-TLS client refused without on_open/on_close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/server.h"
#include "socket_testutil.h"
#include "util/log.h"
#include "util/time.h"

/* ---- certificates ------------------------------------------------------- */

static char dir[64];
static char path_srv_cert[128], path_srv_key[128], path_ca[128];
static EVP_PKEY *ca_key, *cli_key, *self_key;
static X509 *ca_cert, *cli_cert, *self_cert;

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       bool ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    if (ca) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer ? issuer : x, NID_basic_constraints, "CA:FALSE");
    }
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    if (cert)
        PEM_write_X509(f, cert);
    if (key)
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

static int setup_certs(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/iothubd-tls-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path_srv_cert, sizeof path_srv_cert, "%s/server.pem", dir);
    snprintf(path_srv_key, sizeof path_srv_key, "%s/server.key", dir);
    snprintf(path_ca, sizeof path_ca, "%s/ca.pem", dir);

    ca_key = EVP_EC_gen("P-256");
    cli_key = EVP_EC_gen("P-256");
    self_key = EVP_EC_gen("P-256");
    EVP_PKEY *srv_key = EVP_EC_gen("P-256");
    ca_cert = make_cert(ca_key, "Test Device CA", NULL, NULL, true);
    cli_cert = make_cert(cli_key, "device-1", ca_cert, ca_key, false);
    self_cert = make_cert(self_key, "device-self", NULL, NULL, false);
    X509 *srv_cert = make_cert(srv_key, "localhost", NULL, NULL, false);
    write_pem(path_srv_cert, srv_cert, NULL);
    write_pem(path_srv_key, NULL, srv_key);
    write_pem(path_ca, ca_cert, NULL);
    X509_free(srv_cert);
    EVP_PKEY_free(srv_key);
    return 0;
}

static int teardown_certs(void **state)
{
    (void)state;
    unlink(path_srv_cert);
    unlink(path_srv_key);
    unlink(path_ca);
    rmdir(dir);
    X509_free(ca_cert);
    X509_free(cli_cert);
    X509_free(self_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(cli_key);
    EVP_PKEY_free(self_key);
    return 0;
}

/* ---- server ------------------------------------------------------------- */

typedef struct seen {
    char cn[64];
    char sni[64];
    bool has_cert, verified, is_tls;
} seen;

static struct {
    net_server *s;
    pthread_t thread;
    int rc, port;
    pthread_mutex_t mu;
    seen last;
    atomic_int opened, closed, errors;
    int dummy;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *on_open(net_conn *c, void *area, void *arg)
{
    (void)area;
    (void)arg;
    seen v = {0};
    v.is_tls = net_conn_is_tls(c);
    X509 *cert = net_conn_peer_cert(c);
    v.has_cert = cert != NULL;
    if (cert)
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, v.cn,
                                  sizeof v.cn);
    v.verified = net_conn_peer_cert_verified(c);
    const char *sni = net_conn_sni(c);
    if (sni)
        snprintf(v.sni, sizeof v.sni, "%s", sni);
    pthread_mutex_lock(&S.mu);
    S.last = v;
    pthread_mutex_unlock(&S.mu);
    atomic_fetch_add(&S.opened, 1);
    return &S.dummy;
}

static size_t on_input(net_conn *c, void *user, const uint8_t *data, size_t len)
{
    (void)user;
    if (!net_conn_write(c, data, len))
        atomic_fetch_add(&S.errors, 1);
    return len;
}

static void on_close(net_conn *c, void *user)
{
    (void)c;
    if (user != &S.dummy)
        atomic_fetch_add(&S.errors, 1);
    atomic_fetch_add(&S.closed, 1);
}

static const net_conn_handler handler = {
    .on_open = on_open, .on_input = on_input, .on_close = on_close};

static void *server_thread(void *arg)
{
    (void)arg;
    S.rc = net_server_run(S.s);
    return NULL;
}

static void start_server(unsigned loops)
{
    char err[512];
    atomic_store(&S.opened, 0);
    atomic_store(&S.closed, 0);
    atomic_store(&S.errors, 0);
    memset(&S.last, 0, sizeof S.last);
    S.s = net_server_new(loops, err, sizeof err);
    assert_non_null(S.s);
    net_tls_config tls = {path_srv_cert, path_srv_key, path_ca};
    net_conn_limits lim = {.out_high = 64 * 1024, .out_low = 16 * 1024, .out_cap = 16 << 20};
    if (!net_server_listen(S.s, "127.0.0.1:0", &tls, &handler, NULL, &lim, &S.port, err,
                           sizeof err))
        fail_msg("listen: %s", err);
    pthread_create(&S.thread, NULL, server_thread, NULL);
}

static void stop_server(void)
{
    net_server_stop(S.s);
    pthread_join(S.thread, NULL);
    assert_int_equal(S.rc, 0);
    assert_int_equal(atomic_load(&S.opened), atomic_load(&S.closed));
    assert_int_equal(atomic_load(&S.errors), 0);
    net_server_free(S.s);
}

static void wait_for(atomic_int *v, int want)
{
    uint64_t end = time_mono_ms() + 10000;
    while (atomic_load(v) < want && time_mono_ms() < end)
        usleep(1000);
    assert_int_equal(atomic_load(v), want);
}

/* ---- client ------------------------------------------------------------- */

static int tcp_connect(int port)
{
    return loopback_connect(port, 10, 0);
}

typedef struct client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
} client;

static client tls_connect(X509 *cert, EVP_PKEY *key, const char *sni)
{
    client cl = {0};
    cl.ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cl.ctx);
    SSL_CTX_set_verify(cl.ctx, SSL_VERIFY_NONE, NULL);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate(cl.ctx, cert), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(cl.ctx, key), 1);
    }
    cl.fd = tcp_connect(S.port);
    cl.ssl = SSL_new(cl.ctx);
    SSL_set_fd(cl.ssl, cl.fd);
    if (sni)
        SSL_set_tlsext_host_name(cl.ssl, sni);
    if (SSL_connect(cl.ssl) != 1) {
        ERR_print_errors_fp(stderr);
        fail_msg("SSL_connect failed");
    }
    return cl;
}

static void tls_write_all(client *cl, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        int n = SSL_write(cl->ssl, p, (int)len);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void tls_read_exact(client *cl, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        int n = SSL_read(cl->ssl, p, (int)len);
        if (n <= 0)
            fail_msg("SSL_read: error %d", SSL_get_error(cl->ssl, n));
        p += n;
        len -= (size_t)n;
    }
}

static void tls_close(client *cl)
{
    SSL_shutdown(cl->ssl);
    SSL_free(cl->ssl);
    SSL_CTX_free(cl->ctx);
    close(cl->fd);
}

static seen last_seen(void)
{
    pthread_mutex_lock(&S.mu);
    seen v = S.last;
    pthread_mutex_unlock(&S.mu);
    return v;
}

/* ---- tests -------------------------------------------------------------- */

static void test_tls_client_cert_and_sni(void **state)
{
    (void)state;
    start_server(1);
    char buf[16];

    /* CA-issued client certificate, with SNI */
    client cl = tls_connect(cli_cert, cli_key, "device.example.com");
    tls_write_all(&cl, "hello\n", 6);
    tls_read_exact(&cl, buf, 6);
    assert_memory_equal(buf, "hello\n", 6);
    seen v = last_seen();
    assert_true(v.is_tls);
    assert_true(v.has_cert);
    assert_string_equal(v.cn, "device-1");
    assert_true(v.verified);
    assert_string_equal(v.sni, "device.example.com");
    tls_close(&cl);

    /* self-signed device certificate: visible, not verified */
    cl = tls_connect(self_cert, self_key, NULL);
    tls_write_all(&cl, "again\n", 6);
    tls_read_exact(&cl, buf, 6);
    v = last_seen();
    assert_true(v.has_cert);
    assert_string_equal(v.cn, "device-self");
    assert_false(v.verified);
    assert_string_equal(v.sni, "");
    tls_close(&cl);

    /* no client certificate at all */
    cl = tls_connect(NULL, NULL, "x.example");
    tls_write_all(&cl, "third\n", 6);
    tls_read_exact(&cl, buf, 6);
    v = last_seen();
    assert_false(v.has_cert);
    assert_false(v.verified);
    assert_string_equal(v.sni, "x.example");
    tls_close(&cl);

    wait_for(&S.closed, 3);
    stop_server();
}

static void test_tls_large_echo(void **state)
{
    (void)state;
    start_server(2);
    client cl = tls_connect(cli_cert, cli_key, "big.example");
    enum { CHUNK = 48 * 1024, ROUNDS = 64 }; /* 3 MiB */
    uint8_t *out = malloc(CHUNK), *in = malloc(CHUNK);
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < CHUNK; i++)
            out[i] = (uint8_t)(i * 7 + (size_t)r);
        tls_write_all(&cl, out, CHUNK);
        tls_read_exact(&cl, in, CHUNK);
        assert_memory_equal(in, out, CHUNK);
    }
    free(out);
    free(in);
    tls_close(&cl);
    wait_for(&S.closed, 1);
    stop_server();
}

static void test_tls_handshake_failure_and_shutdown(void **state)
{
    (void)state;
    start_server(1);
    /* plain bytes on the TLS port: dropped, never opened */
    int fd = tcp_connect(S.port);
    const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL), (ssize_t)(sizeof junk - 1));
    char c;
    ssize_t n;
    while ((n = recv(fd, &c, 1, 0)) > 0)
        ; /* maybe an alert, then EOF */
    close(fd);

    /* a client stuck before its handshake is closed by the shutdown */
    int idle = tcp_connect(S.port);
    /* and an open TLS connection is closed with close_notify */
    client cl = tls_connect(NULL, NULL, NULL);
    tls_write_all(&cl, "x", 1);
    tls_read_exact(&cl, &c, 1);
    assert_int_equal(atomic_load(&S.opened), 1);
    stop_server();
    assert_int_equal(SSL_read(cl.ssl, &c, 1), 0); /* close_notify */
    assert_int_equal(SSL_get_error(cl.ssl, 0), SSL_ERROR_ZERO_RETURN);
    tls_close(&cl);
    assert_int_equal(recv(idle, &c, 1, 0), 0);
    close(idle);
}

/* A listener whose TLS context cannot be made, or whose port cannot be
 * bound after the context was made, is refused with the reason and leaves
 * nothing behind (ASan checks the context is freed). */
static void test_tls_listen_errors(void **state)
{
    (void)state;
    char err[512], want[600], hp[64];
    net_server *s = net_server_new(1, err, sizeof err);
    assert_non_null(s);
    net_tls_config no_key = {path_srv_cert, "/nonexistent/server.key", NULL};
    assert_false(net_server_listen(s, "127.0.0.1:0", &no_key, &handler, NULL, NULL, NULL, err,
                                   sizeof err));
    assert_non_null(strstr(err, "127.0.0.1:0: "));
    assert_non_null(strstr(err, "/nonexistent/server.key"));
    /* the CA's certificate with the server's key: they do not match */
    net_tls_config mismatch = {path_ca, path_srv_key, NULL};
    assert_false(net_server_listen(s, "127.0.0.1:0", &mismatch, &handler, NULL, NULL, NULL,
                                   err, sizeof err));
    assert_non_null(strstr(err, "127.0.0.1:0: "));

    int held = 0;
    net_tls_config tls = {path_srv_cert, path_srv_key, path_ca};
    assert_true(net_server_listen(s, "127.0.0.1:0", &tls, &handler, NULL, NULL, &held, err,
                                  sizeof err));
    snprintf(hp, sizeof hp, "127.0.0.1:%d", held);
    assert_false(net_server_listen(s, hp, &tls, &handler, NULL, NULL, NULL, err, sizeof err));
    snprintf(want, sizeof want, "%s: Address already in use", hp);
    assert_string_equal(err, want);
    net_server_free(s);
}

int main(void)
{
    alarm(120);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_client_cert_and_sni),
        cmocka_unit_test(test_tls_large_echo),
        cmocka_unit_test(test_tls_handshake_failure_and_shutdown),
        cmocka_unit_test(test_tls_listen_errors),
    };
    return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
