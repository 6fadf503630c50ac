/*
 * util/crypto.h — the few primitives iothubd needs, as thin wrappers over
 * OpenSSL: base64, HMAC-SHA256, SHA-1/SHA-256 thumbprints, random bytes,
 * constant-time comparison and URL (percent) encoding.
 *
 * All functions are thread-safe; none allocates except where the name says
 * so (HMAC keeps one OpenSSL context per thread, freed when the thread
 * exits). Output buffers are sized by the caller with the *_LEN macros.
 */
#ifndef IOTHUBD_UTIL_CRYPTO_H
#define IOTHUBD_UTIL_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_SHA256_LEN 32
/* Base64 text length for n bytes, without the terminating NUL. */
#define CRYPTO_B64_LEN(n) ((((n) + 2) / 3) * 4)

/* Standard base64 with padding; writes a NUL-terminated string into out
 * (capacity CRYPTO_B64_LEN(n) + 1 at least). Returns the text length, or 0
 * if out is too small. */
size_t crypto_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/* Decodes standard base64 (padding required, no whitespace). Returns false
 * for malformed input or when out (capacity cap) is too small. */
bool crypto_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len);

void crypto_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t msg_len,
                        uint8_t out[CRYPTO_SHA256_LEN]);

/* Upper-case hex digest of the DER bytes (IoT Hub thumbprints: SHA-1 is 40
 * hex digits, SHA-256 64). out needs 41 / 65 bytes. */
void crypto_sha1_hex(const uint8_t *data, size_t n, char out[41]);
void crypto_sha256_hex(const uint8_t *data, size_t n, char out[65]);

/* Cryptographically strong random bytes; false only if the RNG fails. */
bool crypto_random(uint8_t *out, size_t n);

/* The same for identifiers (request and message ids, etags): at most
 * CRYPTO_RANDOM_ID_MAX bytes, served from a per-thread pool that is
 * refilled from the RNG, so a hot path pays one RNG call per few hundred
 * ids instead of one each. Not for keys: use crypto_random there. */
#define CRYPTO_RANDOM_ID_MAX 32
bool crypto_random_id(uint8_t *out, size_t n);

/* Makes 16 random bytes a version-4 UUID (sets its version and variant
 * bits) and writes it as 36 lower-case hex digits and dashes, 8-4-4-4-12,
 * NUL-terminated. */
#define CRYPTO_UUID_LEN 36
void crypto_uuid_format(uint8_t b[16], char out[CRYPTO_UUID_LEN + 1]);

/* A new symmetric key: 32 random bytes, base64 (44 chars + NUL). */
bool crypto_new_key(char out[45]);

/* Equal without data-dependent timing. */
bool crypto_equal(const void *a, const void *b, size_t n);

/* The value of one hex digit (either case), or -1. */
int crypto_hex_value(int ch);

/* Percent-encodes everything except RFC 3986 unreserved characters
 * (A-Z a-z 0-9 - . _ ~). Returns the length written (NUL-terminated), or 0
 * if out is too small (needs up to 3n + 1). */
size_t crypto_url_encode(const char *in, size_t n, char *out, size_t cap);

/* Decodes %XX escapes (and '+' as space when form is true). Returns false
 * on a bad escape or a too-small out; out is NUL-terminated. */
bool crypto_url_decode(const char *in, size_t n, bool form, char *out, size_t cap,
                       size_t *out_len);

#endif
