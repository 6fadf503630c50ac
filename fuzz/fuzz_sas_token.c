/*
 * fuzz/fuzz_sas_token.c — libFuzzer target for the classic SAS token parser
 * and verifier (util/sas.c) and the URL / base64 decoders under them
 * (util/crypto.c).
 *
 * The whole input is offered, as sent, to:
 *   sas_token_parse   On success every field is NUL-terminated inside its
 *                     array, sr and sig are non-empty, resource_raw decodes
 *                     to resource, and se printed in decimal is exactly the
 *                     se text of the input (the verifier signs that
 *                     canonical form, so anything else could not verify).
 *   sas_token_verify  with a fixed key (the seeds hold tokens signed with
 *                     it). A token that verifies must stop verifying under
 *                     another key, with another expiry or with another
 *                     resource. A token re-built from the parsed resource,
 *                     policy and expiry with sas_token_build must parse back
 *                     to the same values and verify.
 *   crypto_url_decode (path and form flavour) into a buffer of exactly the
 *                     input's size: the output has no NUL, is no longer
 *                     than the input, and encode + decode gives it back.
 *   crypto_b64_decode into a buffer of exactly the announced size (and
 *                     one byte too small, which must be refused): the
 *                     length is 3/4 of the input minus padding, and encode
 *                     + decode gives the same bytes back.
 * Any broken invariant aborts; memory errors are ASan's and UBSan's.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/crypto.h"
#include "util/sas.h"

#define KEY "aW90aHViZC1mdXp6LWtleS0wMTIzNDU2Nzg5YWJjZGVm" /* fixed test key */
#define OTHER_KEY "b3RoZXIta2V5LTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="

/* A broken invariant: say which one, then abort (libFuzzer saves the input). */
#define check(cond) ((cond) ? (void)0 : broken(#cond, __LINE__))
static void broken(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, line, what);
    abort();
}

/* True when s is NUL-terminated within cap bytes. */
static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* The raw value of field `name` in a token text (the first one), or NULL. */
static const char *field_value(const char *text, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = memchr(text, ' ', len);
    if (!p)
        return NULL;
    const char *end = text + len;
    while (p < end && *p == ' ')
        p++;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            *vlen = (size_t)(stop - p) - nlen - 1;
            return p + nlen + 1;
        }
        p = amp ? amp + 1 : end;
    }
    return NULL;
}

static void parsed_token(const char *text, size_t len, const sas_token *t)
{
    check(terminated(t->resource, sizeof t->resource));
    check(terminated(t->resource_raw, sizeof t->resource_raw));
    check(terminated(t->signature, sizeof t->signature));
    check(terminated(t->policy, sizeof t->policy));
    check(t->resource_raw[0] && t->signature[0]);

    char dec[SAS_MAX_FIELD];
    size_t dlen;
    check(crypto_url_decode(t->resource_raw, strlen(t->resource_raw), false, dec, sizeof dec,
                            &dlen));
    check(strcmp(dec, t->resource) == 0);

    size_t vlen;
    const char *se = field_value(text, len, "se", &vlen);
    char num[24];
    int n = snprintf(num, sizeof num, "%" PRIu64, t->expiry);
    check(se && n > 0 && (size_t)n == vlen && memcmp(se, num, vlen) == 0);

    if (sas_token_verify(t, KEY)) {
        sas_token u = *t;
        check(!sas_token_verify(t, OTHER_KEY));
        u.expiry = t->expiry ^ 1;
        check(!sas_token_verify(&u, KEY));
        u = *t;
        u.resource_raw[0] ^= 0x20;
        check(!sas_token_verify(&u, KEY));
    }
    (void)sas_token_verify(t, "not base64!");
    (void)sas_token_verify(t, "");

    /* Re-build from the decoded values: parses back and verifies. */
    char enc_sr[SAS_MAX_FIELD * 3 + 1], enc_skn[SAS_MAX_FIELD * 3 + 1];
    size_t sr_len = crypto_url_encode(t->resource, strlen(t->resource), enc_sr, sizeof enc_sr);
    size_t skn_len = crypto_url_encode(t->policy, strlen(t->policy), enc_skn, sizeof enc_skn);
    char *built = sas_token_build(t->resource, KEY, t->policy, t->expiry);
    check(built != NULL);
    sas_token b;
    char err[96];
    bool ok = sas_token_parse(built, strlen(built), &b, err, sizeof err);
    if (sr_len < SAS_MAX_FIELD && skn_len < SAS_MAX_FIELD) {
        check(ok);
        check(strcmp(b.resource, t->resource) == 0 && strcmp(b.policy, t->policy) == 0 &&
              b.expiry == t->expiry);
        check(sas_token_verify(&b, KEY) && !sas_token_verify(&b, OTHER_KEY));
    }
    free(built);
}

static void url_roundtrip(const char *in, size_t n, bool form)
{
    char *out = malloc(n + 1);
    size_t olen = SIZE_MAX;
    check(out != NULL);
    if (crypto_url_decode(in, n, form, out, n + 1, &olen)) {
        check(olen <= n && out[olen] == '\0' && strlen(out) == olen);
        size_t cap = 3 * olen + 1;
        char *enc = malloc(cap);
        char *back = malloc(olen + 1);
        check(enc && back);
        size_t elen = crypto_url_encode(out, olen, enc, cap);
        check(elen >= olen && (olen == 0 || elen > 0));
        size_t blen;
        check(crypto_url_decode(enc, elen, form, back, olen + 1, &blen));
        check(blen == olen && memcmp(back, out, olen) == 0);
        /* one byte less room than the decoded text needs is refused */
        check(!crypto_url_decode(in, n, form, back, olen, &blen));
        free(enc);
        free(back);
    }
    free(out);
}

static void b64_roundtrip(const char *in, size_t n)
{
    size_t cap = n / 4 * 3;
    uint8_t *out = malloc(cap ? cap : 1);
    size_t olen = 0;
    check(out != NULL);
    if (crypto_b64_decode(in, n, out, cap, &olen)) {
        size_t pads = n && in[n - 1] == '=' ? (n > 1 && in[n - 2] == '=' ? 2 : 1) : 0;
        check(n % 4 == 0 && olen == cap - pads);
        if (olen > 0) {
            uint8_t *small = malloc(olen - 1 ? olen - 1 : 1);
            check(small && !crypto_b64_decode(in, n, small, olen - 1, NULL));
            free(small);
        }
        char *enc = malloc(CRYPTO_B64_LEN(olen) + 1);
        uint8_t *back = malloc(olen ? olen : 1);
        check(enc && back);
        size_t elen = crypto_b64_encode(out, olen, enc, CRYPTO_B64_LEN(olen) + 1);
        check(elen == CRYPTO_B64_LEN(olen) && elen == n);
        size_t blen;
        check(crypto_b64_decode(enc, elen, back, olen, &blen) && blen == olen &&
              memcmp(back, out, olen) == 0);
        free(enc);
        free(back);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a heap copy of exactly `size` bytes: any over-read is ASan's */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);

    sas_token t;
    char err[96];
    if (sas_token_parse(text, size, &t, err, sizeof err))
        parsed_token(text, size, &t);
    else
        check(err[0] != '\0' && terminated(err, sizeof err));
    (void)sas_token_parse(text, size, &t, NULL, 0);

    url_roundtrip(text, size, false);
    url_roundtrip(text, size, true);
    b64_roundtrip(text, size);
    free(text);
    return 0;
}
