/*
 * broker/open_app.c — see open_app.h.
 *
 * The files are read once at start-up into immutable tables, so the
 * callbacks (which run on every loop's thread) only read shared data.
 * ACL decisions are made when a client subscribes or publishes; a
 * subscription that was granted is not re-checked for every message it
 * receives (Mosquitto re-checks reads per message; with ACLs fixed at
 * start-up the outcome is the same except for filters whose wildcards
 * reach topics that a narrower `read` rule would exclude — we judge the
 * filter as a whole).
 */
#include "broker/open_app.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/codec.h"
#include "util/log.h"

enum { ACL_READ = 1, ACL_WRITE = 2, ACL_DENY = 4 };

typedef struct acl_rule {
    char *user;     /* NULL: anonymous section; "*": patterns (everyone) */
    bool pattern;   /* %c / %u substitution */
    int access;
    char *topic;
} acl_rule;

typedef struct credential {
    char *user;
    char *password;
} credential;

struct open_app {
    open_app_config cfg;
    credential *creds;
    size_t ncreds;
    acl_rule *rules;
    size_t nrules;
    bool has_acl;
};

/* Per-client state for the IOTHUBD-HMAC-SHA256 exchange. */
typedef struct auth_state {
    uint8_t nonce[16];
} auth_state;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

static bool load_passwords(open_app *a, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *l = trim(line);
        char *colon = strchr(l, ':');
        if (!*l || *l == '#' || !colon)
            continue;
        *colon = '\0';
        credential *n = realloc(a->creds, (a->ncreds + 1) * sizeof *n);
        if (!n)
            break;
        a->creds = n;
        a->creds[a->ncreds].user = strdup(l);
        a->creds[a->ncreds].password = strdup(colon + 1);
        a->ncreds++;
    }
    fclose(f);
    return true;
}

static int parse_access(char **rest)
{
    static const struct { const char *word; int access; } words[] = {
        {"readwrite", ACL_READ | ACL_WRITE}, {"read", ACL_READ}, {"write", ACL_WRITE},
        {"deny", ACL_DENY},
    };
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) {
        size_t n = strlen(words[i].word);
        if (strncmp(*rest, words[i].word, n) == 0 && (*rest)[n] == ' ') {
            *rest = trim(*rest + n);
            return words[i].access;
        }
    }
    return ACL_READ | ACL_WRITE;
}

static bool load_acl(open_app *a, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return false;
    }
    a->has_acl = true;
    char line[1024];
    char *user = NULL;
    int lineno = 0;
    bool ok = true;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#')
            continue;
        bool pattern = strncmp(l, "pattern ", 8) == 0;
        if (strncmp(l, "user ", 5) == 0) {
            free(user);
            user = strdup(trim(l + 5));
            continue;
        }
        if (!pattern && strncmp(l, "topic ", 6) != 0) {
            snprintf(err, errlen, "%s:%d: unknown line: %s", path, lineno, l);
            ok = false;
            break;
        }
        char *rest = trim(l + (pattern ? 8 : 6));
        acl_rule r = {.pattern = pattern, .access = parse_access(&rest)};
        r.user = pattern ? strdup("*") : (user ? strdup(user) : NULL);
        r.topic = strdup(rest);
        acl_rule *n = realloc(a->rules, (a->nrules + 1) * sizeof *n);
        if (!n || !r.topic) {
            free(r.user);
            free(r.topic);
            free(n ? NULL : NULL);
            ok = false;
            snprintf(err, errlen, "%s: out of memory", path);
            break;
        }
        a->rules = n;
        a->rules[a->nrules++] = r;
    }
    free(user);
    fclose(f);
    return ok;
}

open_app *open_app_new(const open_app_config *cfg, char *errbuf, size_t errlen)
{
    open_app *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    a->cfg = *cfg;
    if ((cfg->password_file && !load_passwords(a, cfg->password_file, errbuf, errlen)) ||
        (cfg->acl_file && !load_acl(a, cfg->acl_file, errbuf, errlen))) {
        open_app_free(a);
        return NULL;
    }
    return a;
}

void open_app_free(open_app *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->ncreds; i++) {
        free(a->creds[i].user);
        OPENSSL_cleanse(a->creds[i].password, strlen(a->creds[i].password));
        free(a->creds[i].password);
    }
    for (size_t i = 0; i < a->nrules; i++) {
        free(a->rules[i].user);
        free(a->rules[i].topic);
    }
    free(a->creds);
    free(a->rules);
    free(a);
}

static const credential *find_user(const open_app *a, mqtt_bytes user)
{
    for (size_t i = 0; i < a->ncreds; i++)
        if (strlen(a->creds[i].user) == user.len && memcmp(a->creds[i].user, user.p, user.len) == 0)
            return &a->creds[i];
    return NULL;
}

static bool bytes_eq(mqtt_bytes a, mqtt_bytes b)
{
    return a.len == b.len && CRYPTO_memcmp(a.p, b.p, a.len) == 0;
}

/* The client's username as bytes (empty when none). */
static mqtt_bytes username_of(const broker_client_info *info)
{
    const char *u = info->username;
    return (mqtt_bytes){(const uint8_t *)u, u ? (uint32_t)strlen(u) : 0};
}

/* ---- enhanced authentication ------------------------------------------ */

/* The client's enhanced-authentication state: the pointer the open broker
 * keeps in the client's app data (NULL until the first challenge). */
static auth_state **auth_state_slot(broker_client *c)
{
    return broker_client_app_data(c);
}

static void send_challenge(broker_client *c)
{
    auth_state *st = *auth_state_slot(c);
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st) {
            broker_auth_reject(c, MQTT_RC_SERVER_BUSY, NULL);
            return;
        }
        *auth_state_slot(c) = st;
    }
    if (RAND_bytes(st->nonce, sizeof st->nonce) != 1) {
        broker_auth_reject(c, MQTT_RC_SERVER_BUSY, NULL);
        return;
    }
    broker_auth_challenge(c, (mqtt_bytes){st->nonce, sizeof st->nonce});
}

static void check_response(open_app *a, broker_client *c, const mqtt_reason_packet *pkt)
{
    const broker_client_info *info = broker_client_get_info(c);
    auth_state *st = *auth_state_slot(c);
    const credential *cred = find_user(a, username_of(info));
    uint8_t mac[32];
    unsigned maclen = 0;
    if (!st || !cred ||
        !HMAC(EVP_sha256(), cred->password, (int)strlen(cred->password), st->nonce,
              sizeof st->nonce, mac, &maclen) ||
        !bytes_eq(pkt->props.authentication_data, (mqtt_bytes){mac, maclen})) {
        broker_auth_reject(c, MQTT_RC_NOT_AUTHORIZED, NULL);
        return;
    }
    broker_auth_accept(c, NULL);
}

/* ---- callbacks -------------------------------------------------------- */

static void authenticate(void *ctx, broker_client *c, const mqtt_connect *pkt)
{
    open_app *a = ctx;
    if (MQTT_HAS(&pkt->props, MQTT_PROP_AUTHENTICATION_METHOD)) {
        if (!bytes_eq(pkt->props.authentication_method, MQTT_BYTES_LIT(OPEN_APP_AUTH_METHOD)) ||
            !pkt->username_flag) {
            broker_auth_reject(c, MQTT_RC_BAD_AUTHENTICATION_METHOD, NULL);
            return;
        }
        send_challenge(c);
        return;
    }
    if (!pkt->username_flag) {
        if (a->cfg.allow_anonymous)
            broker_auth_accept(c, NULL);
        else
            broker_auth_reject(c, MQTT_RC_NOT_AUTHORIZED, NULL);
        return;
    }
    if (a->ncreds == 0 && !a->cfg.password_file) {
        /* No password file: a user name identifies, as for anonymous. */
        if (a->cfg.allow_anonymous)
            broker_auth_accept(c, NULL);
        else
            broker_auth_reject(c, MQTT_RC_NOT_AUTHORIZED, NULL);
        return;
    }
    const credential *cred = find_user(a, pkt->username);
    mqtt_bytes want = cred ? (mqtt_bytes){(const uint8_t *)cred->password,
                                          (uint32_t)strlen(cred->password)}
                           : (mqtt_bytes){0};
    if (!cred || !pkt->password_flag || !bytes_eq(pkt->password, want))
        broker_auth_reject(c, MQTT_RC_BAD_USERNAME_OR_PASSWORD, NULL);
    else
        broker_auth_accept(c, NULL);
}

static void auth_packet(void *ctx, broker_client *c, const mqtt_reason_packet *pkt)
{
    if (pkt->reason == MQTT_RC_REAUTHENTICATE)
        send_challenge(c);
    else
        check_response(ctx, c, pkt);
}

static void disconnected(void *ctx, broker_client *c, uint8_t reason)
{
    (void)ctx;
    (void)reason;
    free(*auth_state_slot(c));
    *auth_state_slot(c) = NULL;
}

/* Expands %c and %u of a pattern rule; false if it does not fit. */
static bool expand_pattern(const char *pattern, const broker_client_info *info, char *out,
                           size_t cap)
{
    size_t n = 0;
    for (const char *p = pattern; *p; p++) {
        mqtt_bytes sub = {0};
        bool is_sub = p[0] == '%' && (p[1] == 'c' || p[1] == 'u');
        if (is_sub)
            sub = p[1] == 'c' ? info->client_id : username_of(info);
        else
            sub = (mqtt_bytes){(const uint8_t *)p, 1};
        if (n + sub.len >= cap)
            return false;
        if (sub.len)
            memcpy(out + n, sub.p, sub.len);
        n += sub.len;
        if (is_sub)
            p++;
    }
    out[n] = '\0';
    return true;
}

static bool rule_applies(const acl_rule *r, const broker_client_info *info)
{
    if (r->pattern)
        return true;
    if (!r->user)
        return !info->username;
    return info->username && strcmp(info->username, r->user) == 0;
}

/* Whether the ACL grants `want` (read or write) on `topic`; any matching
 * deny rule wins. */
static bool acl_allows(const open_app *a, const broker_client_info *info, mqtt_bytes topic,
                       int want)
{
    if (!a->has_acl)
        return true;
    bool granted = false;
    char buf[1024];
    for (size_t i = 0; i < a->nrules; i++) {
        const acl_rule *r = &a->rules[i];
        if (!rule_applies(r, info))
            continue;
        const char *t = r->topic;
        if (r->pattern) {
            if (!expand_pattern(r->topic, info, buf, sizeof buf))
                continue;
            t = buf;
        }
        if (!mqtt_topic_matches((mqtt_bytes){(const uint8_t *)t, (uint32_t)strlen(t)}, topic))
            continue;
        if (r->access & ACL_DENY)
            return false;
        if (r->access & want)
            granted = true;
    }
    return granted;
}

static uint8_t authorize_subscribe(void *ctx, broker_client *c, mqtt_bytes group,
                                   mqtt_bytes filter, uint8_t qos)
{
    (void)group;
    open_app *a = ctx;
    if (!a->cfg.open_topics || !acl_allows(a, broker_client_get_info(c), filter, ACL_READ))
        return MQTT_RC_NOT_AUTHORIZED;
    return qos;
}

static broker_publish_action publish(void *ctx, broker_client *c, mqtt_bytes topic,
                                     const mqtt_publish *pkt, broker_answer *answer)
{
    (void)pkt;
    open_app *a = ctx;
    if (!a->cfg.open_topics || !acl_allows(a, broker_client_get_info(c), topic, ACL_WRITE)) {
        /* QoS 0 is dropped silently, as the standard allows. */
        answer->reason = MQTT_RC_NOT_AUTHORIZED;
        return BROKER_PUBLISH_DONE;
    }
    return BROKER_PUBLISH_ROUTE;
}

void open_app_bind(open_app *a, broker_app *out)
{
    *out = (broker_app){
        .ctx = a,
        .authenticate = authenticate,
        .auth_packet = auth_packet,
        .disconnected = disconnected,
        .authorize_subscribe = authorize_subscribe,
        .publish = publish,
    };
}
