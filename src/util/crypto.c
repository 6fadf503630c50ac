/*
 * util/crypto.c — see crypto.h. Thin wrappers over OpenSSL's one-shot calls
 * (EVP_EncodeBlock/EVP_DecodeBlock, EVP_Digest, RAND_bytes, CRYPTO_memcmp)
 * and, for HMAC, one EVP_MAC_CTX per thread.
 *
 * HMAC-SHA256 checks every SAS token, so it runs once per authenticated
 * CONNECT and once per service-API request. OpenSSL 3's one-shot HMAC()
 * fetches the digest and allocates, initialises and frees a context each
 * time (about 1.2 µs here); a context kept per thread and re-keyed with
 * EVP_MAC_init costs about 0.4 µs. The context lives under a pthread key
 * whose destructor frees it when the thread exits; a thread whose context
 * cannot be made falls back to HMAC().
 *
 * Identifiers need unpredictable bytes but not one RNG call each:
 * RAND_bytes takes a lock and checks for fork every call (about 0.8 µs for
 * 16 bytes). crypto_random_id serves them from a per-thread pool of 512
 * bytes refilled from RAND_bytes.
 *
 * Base64 decoding is strict where OpenSSL is lenient: EVP_DecodeBlock skips
 * surrounding whitespace and does not report padding, so the text is checked
 * here first (length a multiple of 4, alphabet only, '=' only as the last one
 * or two characters) and then decoded one quantum at a time into a 3-byte
 * scratch, which lets the caller's buffer be exactly as large as the result.
 * Non-zero bits after the last significant character are tolerated (some
 * encoders produce them and the bytes are unambiguous).
 *
 * URL decoding refuses "%00": every caller turns the result into a C string
 * (a device id, a SAS resource), and an embedded NUL would silently cut it.
 */
#include "util/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

size_t crypto_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
    size_t need = CRYPTO_B64_LEN(n);
    if (!out || cap < need + 1 || n > (size_t)INT32_MAX / 2)
        return 0;
    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n); /* writes the NUL */
    return len < 0 ? 0 : (size_t)len;
}

static bool b64_alphabet(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* Number of '=' at the end (0..2) when the text is well-formed, else -1. */
static int b64_check(const char *in, size_t n)
{
    if (n % 4 != 0)
        return -1;
    size_t pads = 0;
    while (pads < n && pads < 3 && in[n - 1 - pads] == '=')
        pads++;
    if (pads > 2)
        return -1;
    for (size_t i = 0; i < n - pads; i++)
        if (!b64_alphabet((unsigned char)in[i]))
            return -1;
    return (int)pads;
}

bool crypto_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    int pads = b64_check(in, n);
    if (pads < 0)
        return false;
    size_t total = n / 4 * 3 - (size_t)pads;
    if (total > cap)
        return false;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 4) {
        unsigned char quantum[3];
        if (EVP_DecodeBlock(quantum, (const unsigned char *)in + i, 4) != 3)
            return false;
        size_t take = (i + 4 == n) ? 3 - (size_t)pads : 3;
        memcpy(out + w, quantum, take);
        w += take;
    }
    if (out_len)
        *out_len = w;
    return true;
}

static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;
static pthread_key_t hmac_key;
static EVP_MAC *hmac_alg; /* fetched once, shared read-only by all threads */
static bool hmac_key_ok;

static void hmac_ctx_free(void *ctx) { EVP_MAC_CTX_free(ctx); }

static void hmac_setup(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    hmac_key_ok = hmac_alg && pthread_key_create(&hmac_key, hmac_ctx_free) == 0;
}

/* This thread's HMAC-SHA256 context, made on first use; NULL if it cannot
 * be made. */
static EVP_MAC_CTX *thread_hmac_ctx(void)
{
    pthread_once(&hmac_once, hmac_setup);
    if (!hmac_key_ok)
        return NULL;
    EVP_MAC_CTX *ctx = pthread_getspecific(hmac_key);
    if (ctx)
        return ctx;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    ctx = EVP_MAC_CTX_new(hmac_alg);
    if (!ctx || !EVP_MAC_CTX_set_params(ctx, params) || pthread_setspecific(hmac_key, ctx) != 0) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void crypto_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    static const uint8_t empty = 0; /* OpenSSL wants non-NULL pointers */
    if (!key_len)
        key = &empty;
    if (!msg_len)
        msg = &empty;
    EVP_MAC_CTX *ctx = thread_hmac_ctx();
    size_t len = 0;
    if (ctx && EVP_MAC_init(ctx, key, key_len, NULL) && EVP_MAC_update(ctx, msg, msg_len) &&
        EVP_MAC_final(ctx, out, &len, CRYPTO_SHA256_LEN) && len == CRYPTO_SHA256_LEN)
        return;
    unsigned int ulen = CRYPTO_SHA256_LEN;
    if (!HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out, &ulen))
        memset(out, 0, CRYPTO_SHA256_LEN); /* only on allocation failure inside OpenSSL */
}

static void digest_hex(const EVP_MD *md, const uint8_t *data, size_t n, char *out,
                       size_t digest_len)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(data, n, digest, &len, md, NULL) || len != digest_len) {
        memset(out, '0', digest_len * 2);
        out[digest_len * 2] = '\0';
        return;
    }
    for (unsigned i = 0; i < len; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[2 * len] = '\0';
}

void crypto_sha1_hex(const uint8_t *data, size_t n, char out[41])
{
    digest_hex(EVP_sha1(), data, n, out, 20);
}

void crypto_sha256_hex(const uint8_t *data, size_t n, char out[65])
{
    digest_hex(EVP_sha256(), data, n, out, 32);
}

bool crypto_random(uint8_t *out, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        if (RAND_bytes(out, chunk) != 1)
            return false;
        out += chunk;
        n -= (size_t)chunk;
    }
    return true;
}

bool crypto_random_id(uint8_t *out, size_t n)
{
    static _Thread_local uint8_t pool[512];
    static _Thread_local size_t left;
    if (n > CRYPTO_RANDOM_ID_MAX)
        return false;
    if (left < n) {
        if (RAND_bytes(pool, sizeof pool) != 1)
            return false;
        left = sizeof pool;
    }
    /* served from the end; what was served is wiped */
    left -= n;
    memcpy(out, pool + left, n);
    OPENSSL_cleanse(pool + left, n);
    return true;
}

void crypto_uuid_format(uint8_t b[16], char out[CRYPTO_UUID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char *p = out;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 15];
    }
    *p = '\0';
}

bool crypto_new_key(char out[45])
{
    uint8_t raw[32];
    if (!crypto_random(raw, sizeof raw))
        return false;
    bool ok = crypto_b64_encode(raw, sizeof raw, out, 45) == 44;
    OPENSSL_cleanse(raw, sizeof raw);
    return ok;
}

bool crypto_equal(const void *a, const void *b, size_t n)
{
    return n == 0 || CRYPTO_memcmp(a, b, n) == 0;
}

static bool url_unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

size_t crypto_url_encode(const char *in, size_t n, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        size_t need = url_unreserved(ch) ? 1 : 3;
        if (w + need + 1 > cap)
            return 0;
        if (need == 1) {
            out[w++] = (char)ch;
        } else {
            out[w++] = '%';
            out[w++] = hex[ch >> 4];
            out[w++] = hex[ch & 15];
        }
    }
    if (w + 1 > cap)
        return 0;
    out[w] = '\0';
    return w;
}

int crypto_hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

bool crypto_url_decode(const char *in, size_t n, bool form, char *out, size_t cap,
                       size_t *out_len)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return false; /* truncated escape */
            int hi = crypto_hex_value(in[i + 1]), lo = crypto_hex_value(in[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return false;
            ch = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+' && form) {
            ch = ' ';
        } else if (ch == '\0') {
            return false;
        }
        if (w + 1 >= cap)
            return false;
        out[w++] = ch;
    }
    if (cap == 0)
        return false;
    out[w] = '\0';
    if (out_len)
        *out_len = w;
    return true;
}
