/*
 * test_util_sas.c — util/sas.h: classic tokens against a vector computed
 * independently (Python's hmac over "{urlencoded sr}\n{se}"), build/parse/
 * verify round trips with both keys, tampering, field order, parse errors
 * (missing, duplicate, malformed fields, bad expiry), and the MQTT 5
 * signature against independently computed vectors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/sas.h"

/* bytes 0..31 */
#define KEY "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define OTHER_KEY "ZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmY="
/* python3: base64(hmac(KEY, "myhub.example.net%2Fdevices%2Fdev%201\n1893456000")) */
#define VECTOR_SIG "9QZg%2F4YERcjT2CnNvGFvCE2zdKApoQhjaPeu4U%2B%2BVpw%3D"
#define VECTOR_TOKEN \
    "SharedAccessSignature sr=myhub.example.net%2Fdevices%2Fdev%201&sig=" VECTOR_SIG \
    "&se=1893456000&skn=iothubowner"

static sas_token T; /* large: keep it off the cmocka stack */

static bool parse(const char *s, char *err, size_t errlen)
{
    return sas_token_parse(s, strlen(s), &T, err, errlen);
}

static void test_vector_parse_and_verify(void **state)
{
    (void)state;
    char err[128];
    assert_true(parse(VECTOR_TOKEN, err, sizeof err));
    assert_string_equal(T.resource, "myhub.example.net/devices/dev 1");
    assert_string_equal(T.resource_raw, "myhub.example.net%2Fdevices%2Fdev%201");
    assert_string_equal(T.signature, "9QZg/4YERcjT2CnNvGFvCE2zdKApoQhjaPeu4U++Vpw=");
    assert_string_equal(T.policy, "iothubowner");
    assert_int_equal(T.expiry, 1893456000u);
    assert_true(sas_token_verify(&T, KEY));
    assert_false(sas_token_verify(&T, OTHER_KEY));
    assert_false(sas_token_verify(&T, "not base64!"));
}

static void test_build_matches_vector(void **state)
{
    (void)state;
    char *tok = sas_token_build("myhub.example.net/devices/dev 1", KEY, "iothubowner",
                                1893456000u);
    assert_non_null(tok);
    assert_string_equal(tok, VECTOR_TOKEN);
    free(tok);
    tok = sas_token_build("myhub.example.net", KEY, NULL, 42);
    assert_non_null(tok);
    assert_null(strstr(tok, "skn="));
    assert_true(parse(tok, NULL, 0));
    assert_string_equal(T.policy, "");
    assert_true(sas_token_verify(&T, KEY));
    free(tok);
    assert_null(sas_token_build("h", "bad key", NULL, 1));
    assert_null(sas_token_build("", KEY, NULL, 1));
}

static void test_field_order_and_unknown_fields(void **state)
{
    (void)state;
    const char *tok = "SharedAccessSignature skn=iothubowner&se=1893456000&x=1&sig=" VECTOR_SIG
                      "&sr=myhub.example.net%2Fdevices%2Fdev%201";
    assert_true(parse(tok, NULL, 0));
    assert_true(sas_token_verify(&T, KEY));
}

static void test_tampered_fields(void **state)
{
    (void)state;
    static const char *tampered[] = {
        /* other expiry */
        ("SharedAccessSignature sr=myhub.example.net%2Fdevices%2Fdev%201&sig=" VECTOR_SIG
         "&se=1893456001"),
        /* other resource */
        ("SharedAccessSignature sr=myhub.example.net%2Fdevices%2Fdev%202&sig=" VECTOR_SIG
         "&se=1893456000"),
        /* resource encoded differently than signed */
        ("SharedAccessSignature sr=myhub.example.net%2fdevices%2fdev%201&sig=" VECTOR_SIG
         "&se=1893456000"),
        /* one signature character changed */
        ("SharedAccessSignature sr=myhub.example.net%2Fdevices%2Fdev%201&sig="
         "9QZg%2F4YERcjT2CnNvGFvCE2zdKApoQhjaPeu4U%2B%2BVpx%3D&se=1893456000"),
        /* truncated signature */
        "SharedAccessSignature sr=myhub.example.net%2Fdevices%2Fdev%201&sig=9QZg&se=1893456000",
    };
    for (size_t i = 0; i < sizeof tampered / sizeof tampered[0]; i++) {
        assert_true(parse(tampered[i], NULL, 0));
        assert_false(sas_token_verify(&T, KEY));
    }
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct { const char *tok, *why; } bad[] = {
        {"", "not a SharedAccessSignature"},
        {"SharedAccessSignature", "not a SharedAccessSignature"},
        {"sharedaccesssignature sr=a&sig=b&se=1", "not a SharedAccessSignature"},
        {"SharedAccessSignaturesr=a&sig=b&se=1", "not a SharedAccessSignature"},
        {"Bearer abc", "not a SharedAccessSignature"},
        {"SharedAccessSignature sig=b&se=1", "sr missing"},
        {"SharedAccessSignature sr=a&se=1", "sig missing"},
        {"SharedAccessSignature sr=a&sig=b", "se missing"},
        {"SharedAccessSignature sr=a&sr=a&sig=b&se=1", "duplicate field"},
        {"SharedAccessSignature sr=a&sig=b&se=1&sig=b", "duplicate field"},
        {"SharedAccessSignature sr=a&sig=b&se=1&skn=p&skn=p", "duplicate field"},
        {"SharedAccessSignature sr=a&sig=b&se=-1", "se is not"},
        {"SharedAccessSignature sr=a&sig=b&se=12x", "se is not"},
        {"SharedAccessSignature sr=a&sig=b&se=", "se is not"},
        {"SharedAccessSignature sr=a&sig=b&se=01893456000", "se is not"},
        {"SharedAccessSignature sr=a&sig=b&se=99999999999999999999", "se is not"},
        {"SharedAccessSignature sr=a&sig=b&se=1&", "empty field"},
        {"SharedAccessSignature sr=a&&sig=b&se=1", "empty field"},
        {"SharedAccessSignature sr=a&sig=b&se=1&junk", "malformed field"},
        {"SharedAccessSignature =x&sr=a&sig=b&se=1", "malformed field"},
        {"SharedAccessSignature sr=&sig=b&se=1", "sr empty"},
        {"SharedAccessSignature sr=a%zz&sig=b&se=1", "sr is not"},
        {"SharedAccessSignature sr=a&sig=%&se=1", "sig empty"},
        {"SharedAccessSignature sr=a&sig=&se=1", "sig empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[128] = "";
        if (parse(bad[i].tok, err, sizeof err))
            fail_msg("accepted: %s", bad[i].tok);
        if (strncmp(err, bad[i].why, strlen(bad[i].why)) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", bad[i].tok, err, bad[i].why);
    }
    /* an over-long resource */
    char big[2000];
    int n = snprintf(big, sizeof big, "SharedAccessSignature sig=b&se=1&sr=");
    memset(big + n, 'a', 600);
    big[n + 600] = '\0';
    assert_false(parse(big, NULL, 0));
    /* the length argument bounds the parse */
    assert_true(sas_token_parse("SharedAccessSignature sr=a&sig=b&se=1&junk", 37, &T, NULL, 0));
    assert_int_equal(T.expiry, 1);
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void test_mqtt5_signature(void **state)
{
    (void)state;
    uint8_t sig[32];
    char hex[65];
    /* python3: hmac(KEY, "myhub.example.net\ndev1\n\n\n2030-01-01T00:00:00Z\n") */
    assert_true(sas_mqtt5_sign(KEY, "myhub.example.net", "dev1", NULL, NULL,
                               "2030-01-01T00:00:00Z", sig));
    hex_of(sig, 32, hex);
    assert_string_equal(hex, "929d06465a961ef1fe5ab384bc67254aeef99eb5e96af19764d963a329c27c3f");
    /* an empty string is the same as an omitted value */
    assert_true(sas_mqtt5_sign(KEY, "myhub.example.net", "dev1", "", "", "2030-01-01T00:00:00Z",
                               sig));
    hex_of(sig, 32, hex);
    assert_string_equal(hex, "929d06465a961ef1fe5ab384bc67254aeef99eb5e96af19764d963a329c27c3f");
    assert_true(sas_mqtt5_sign(KEY, "myhub.example.net", "dev1", "service",
                               "2029-12-31T00:00:00Z", "2030-01-01T00:00:00Z", sig));
    hex_of(sig, 32, hex);
    assert_string_equal(hex, "d9601537fbf1fae5f63af10d2cb4a45772d9e973df882e0acd046967a1955b2e");
    assert_false(sas_mqtt5_sign("???", "h", "c", NULL, NULL, "x", sig));
    assert_false(sas_mqtt5_sign("", "h", "c", NULL, NULL, "x", sig));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_parse_and_verify),
        cmocka_unit_test(test_build_matches_vector),
        cmocka_unit_test(test_field_order_and_unknown_fields),
        cmocka_unit_test(test_tampered_fields),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_mqtt5_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
