/*
 * test_util_crypto.c — util/crypto.h: base64 (RFC 4648 vectors, bad input,
 * exact-size buffers), HMAC-SHA256 (RFC 4231 cases 1-4, 6, 7), SHA-1 and
 * SHA-256 thumbprints, random keys, constant-time compare, URL encoding;
 * the per-thread HMAC context (re-keyed on every call, correct on several
 * threads at once, freed at thread exit: ASan) and the random-id pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/crypto.h"

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void test_b64_vectors(void **state)
{
    (void)state;
    static const struct { const char *plain, *b64; } v[] = {
        {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},       {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char enc[64];
        size_t n = strlen(v[i].plain);
        assert_int_equal(crypto_b64_encode((const uint8_t *)v[i].plain, n, enc, sizeof enc),
                         strlen(v[i].b64));
        assert_string_equal(enc, v[i].b64);
        uint8_t dec[64];
        size_t dlen = 99;
        assert_true(crypto_b64_decode(v[i].b64, strlen(v[i].b64), dec, sizeof dec, &dlen));
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, v[i].plain, n);
        /* exact-size output buffer is enough */
        if (n) {
            assert_true(crypto_b64_decode(v[i].b64, strlen(v[i].b64), dec, n, &dlen));
            assert_false(crypto_b64_decode(v[i].b64, strlen(v[i].b64), dec, n - 1, &dlen));
        }
    }
}

static void test_b64_encode_small_buffer(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(crypto_b64_encode((const uint8_t *)"foob", 4, out, 8), 0); /* needs 9 */
    assert_int_equal(crypto_b64_encode((const uint8_t *)"foob", 4, NULL, 0), 0);
    char ok[9];
    assert_int_equal(crypto_b64_encode((const uint8_t *)"foob", 4, ok, 9), 8);
}

static void test_b64_bad_input(void **state)
{
    (void)state;
    static const char *bad[] = {
        "Zg",        /* no padding */
        "Zg=",       /* short */
        "Z===",      /* three pads */
        "Zg==Zg==",  /* padding in the middle */
        "Zm9v\n",    /* whitespace */
        " Zm9",      /* leading space */
        "Zm9-",      /* url alphabet */
        "Zm=v",      /* pad then data */
        "====",
        "Zm9v Zm9v",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[64];
        size_t n;
        assert_false(crypto_b64_decode(bad[i], strlen(bad[i]), out, sizeof out, &n));
    }
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t k1[20], k3[20], k4[25], k6[131], d3[50], d4[50];
    memset(k1, 0x0b, sizeof k1);
    memset(k3, 0xaa, sizeof k3);
    for (int i = 0; i < 25; i++)
        k4[i] = (uint8_t)(i + 1);
    memset(k6, 0xaa, sizeof k6);
    memset(d3, 0xdd, sizeof d3);
    memset(d4, 0xcd, sizeof d4);
    const char *m6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    const char *m7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm.";
    const struct {
        const uint8_t *key;
        size_t klen;
        const uint8_t *msg;
        size_t mlen;
        const char *hex;
    } v[] = {
        {k1, 20, (const uint8_t *)"Hi There", 8,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {(const uint8_t *)"Jefe", 4, (const uint8_t *)"what do ya want for nothing?", 28,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {k3, 20, d3, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k4, 25, d4, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {k6, 131, (const uint8_t *)m6, strlen(m6),
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {k6, 131, (const uint8_t *)m7, strlen(m7),
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t mac[CRYPTO_SHA256_LEN];
        char hex[65];
        crypto_hmac_sha256(v[i].key, v[i].klen, v[i].msg, v[i].mlen, mac);
        hex_of(mac, sizeof mac, hex);
        assert_string_equal(hex, v[i].hex);
    }
}

/* Alternating keys and messages on several threads at once: each thread's
 * context is re-keyed on every call and never shared. */
static void *hmac_worker(void *arg)
{
    (void)arg;
    uint8_t k1[20];
    memset(k1, 0x0b, sizeof k1);
    for (int i = 0; i < 2000; i++) {
        uint8_t mac[CRYPTO_SHA256_LEN];
        char hex[65];
        if (i % 3 == 0) {
            crypto_hmac_sha256(k1, sizeof k1, (const uint8_t *)"Hi There", 8, mac);
            hex_of(mac, sizeof mac, hex);
            if (strcmp(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"))
                return (void *)1;
        } else if (i % 3 == 1) {
            crypto_hmac_sha256((const uint8_t *)"Jefe", 4,
                               (const uint8_t *)"what do ya want for nothing?", 28, mac);
            hex_of(mac, sizeof mac, hex);
            if (strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
                return (void *)1;
        } else {
            crypto_hmac_sha256(NULL, 0, NULL, 0, mac); /* empty key and message */
            hex_of(mac, sizeof mac, hex);
            if (strcmp(hex, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"))
                return (void *)1;
        }
    }
    return NULL;
}

static void test_hmac_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hmac_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        pthread_join(th[i], &rc);
        assert_null(rc);
    }
    assert_null(hmac_worker(NULL)); /* and on this thread */
}

/* Ids from the pool: distinct across refills, bounded in size. */
static void test_random_id(void **state)
{
    (void)state;
    enum { N = 100 }; /* 16-byte ids: the 512-byte pool is refilled 3 times */
    static uint8_t ids[N][16];
    for (int i = 0; i < N; i++)
        assert_true(crypto_random_id(ids[i], sizeof ids[i]));
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_memory_not_equal(ids[i], ids[j], sizeof ids[i]);
    uint8_t big[CRYPTO_RANDOM_ID_MAX + 1];
    assert_false(crypto_random_id(big, sizeof big));
    assert_true(crypto_random_id(big, CRYPTO_RANDOM_ID_MAX));
}

static void test_uuid_format(void **state)
{
    (void)state;
    char out[CRYPTO_UUID_LEN + 1];
    uint8_t b[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                     0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    crypto_uuid_format(b, out);
    /* version nibble 4 in byte 6, variant 10xx in byte 8 */
    assert_string_equal(out, "00112233-4455-4677-8899-aabbccddeeff");
    memset(b, 0xff, sizeof b);
    crypto_uuid_format(b, out);
    assert_string_equal(out, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    memset(b, 0, sizeof b);
    crypto_uuid_format(b, out);
    assert_string_equal(out, "00000000-0000-4000-8000-000000000000");
}

static void test_digests_and_random(void **state)
{
    (void)state;
    char h1[41], h2[65];
    crypto_sha1_hex((const uint8_t *)"abc", 3, h1);
    crypto_sha256_hex((const uint8_t *)"abc", 3, h2);
    assert_string_equal(h1, "A9993E364706816ABA3E25717850C26C9CD0D89D");
    assert_string_equal(h2, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD");

    char k1[45], k2[45];
    assert_true(crypto_new_key(k1));
    assert_true(crypto_new_key(k2));
    assert_int_equal(strlen(k1), 44);
    assert_string_not_equal(k1, k2);
    uint8_t raw[40];
    size_t n;
    assert_true(crypto_b64_decode(k1, 44, raw, sizeof raw, &n));
    assert_int_equal(n, 32);

    assert_true(crypto_equal("abc", "abc", 3));
    assert_false(crypto_equal("abc", "abd", 3));
    assert_true(crypto_equal("x", "y", 0));
}

static void test_url_encode(void **state)
{
    (void)state;
    static const struct { const char *in, *out; } v[] = {
        {"", ""},
        {"AZaz09-._~", "AZaz09-._~"},
        {"hub.net/devices/d 1", "hub.net%2Fdevices%2Fd%201"},
        {"a+b=c&d", "a%2Bb%3Dc%26d"},
        {"\xc3\xa9", "%C3%A9"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[64];
        assert_int_equal(crypto_url_encode(v[i].in, strlen(v[i].in), out, sizeof out),
                         strlen(v[i].out));
        assert_string_equal(out, v[i].out);
    }
    char small[4];
    assert_int_equal(crypto_url_encode("a b", 3, small, sizeof small), 0); /* needs 6 */
    assert_int_equal(crypto_url_encode("abcd", 4, small, sizeof small), 0); /* needs 5 */
    assert_int_equal(crypto_url_encode("abc", 3, small, sizeof small), 3);
}

static void test_url_decode(void **state)
{
    (void)state;
    static const struct { const char *in; bool form; const char *out; } good[] = {
        {"", false, ""},
        {"a%2Fb", false, "a/b"},
        {"a%2fb", false, "a/b"},
        {"a+b", false, "a+b"},
        {"a+b", true, "a b"},
        {"%C3%A9x", false, "\xc3\xa9x"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char out[32];
        size_t n = 99;
        assert_true(crypto_url_decode(good[i].in, strlen(good[i].in), good[i].form, out,
                                      sizeof out, &n));
        assert_string_equal(out, good[i].out);
        assert_int_equal(n, strlen(good[i].out));
    }
    static const char *bad[] = {"%", "%2", "a%zz", "%g0", "%00", "ab%2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char out[32];
        assert_false(crypto_url_decode(bad[i], strlen(bad[i]), false, out, sizeof out, NULL));
    }
    char tiny[3];
    assert_false(crypto_url_decode("abc", 3, false, tiny, sizeof tiny, NULL));
    assert_true(crypto_url_decode("a%20", 4, false, tiny, sizeof tiny, NULL));
    assert_string_equal(tiny, "a ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_encode_small_buffer),
        cmocka_unit_test(test_b64_bad_input),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_threads),
        cmocka_unit_test(test_random_id),
        cmocka_unit_test(test_uuid_format),
        cmocka_unit_test(test_digests_and_random),
        cmocka_unit_test(test_url_encode),
        cmocka_unit_test(test_url_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
