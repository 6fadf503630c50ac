/*
 * tools/iothub/simulate.c — `iothub simulate --device ID`: a device on the
 * hub's MQTT 5 API (../shared/spec/iothub-mqtt5.md), for demos and smoke
 * tests.
 *
 * The run, in order:
 *   1. the key: --key-value, else the identity's key from the service API
 *      (as `device connection-string` reads it);
 *   2. CONNECT with Authentication Method SAS: the signature over
 *      "{host}\n{clientId}\n\n{sas-at}\n{sas-expiry}\n" as Authentication
 *      Data and the user properties api-version, host, sas-at, sas-expiry
 *      (token.c computes them); a refused CONNACK ends the run with its
 *      reason code and status;
 *   3. one SUBSCRIBE for $iothub/twin/patch/desired, $iothub/methods/+ and
 *      $iothub/commands; what the hub refuses is reported and skipped;
 *   4. Get twin, then the loop: telemetry every --interval-ms at QoS 1
 *      (at most Receive Maximum unacknowledged), whatever the hub sends
 *      (sim_inbound.c), AUTH 0x19 with a fresh token at 80 % of its
 *      lifetime, PINGREQ when idle;
 *   5. stop after --count messages or on Ctrl-C/SIGTERM: wait (briefly) for
 *      the outstanding PUBACKs and responses, DISCONNECT 0x00, exit 0.
 * Everything the hub answers is printed, one line per event (--json: one
 * JSON object per line), flushed at once so it can be piped.
 *
 * The stop flag is the one piece of process-wide state: a signal handler
 * can reach nothing else.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/iothub/simulate.h"
#include "util/crypto.h"
#include "util/time.h"

#define SIM_DEFAULT_PORT 1883
#define SIM_DEFAULT_TLS_PORT 8883
#define SIM_DEFAULT_INTERVAL_MS 1000u
#define SIM_MAX_INTERVAL_MS (24u * 3600u * 1000u)
#define SIM_DEFAULT_SAS_S 3600u
#define SIM_MIN_SAS_S 2u
#define SIM_MAX_SAS_S (365u * 24u * 3600u)
#define SIM_KEEP_ALIVE_S 60u
#define SIM_CONNECT_TIMEOUT_MS 10000
#define SIM_TICK_MS 200
#define SIM_DRAIN_COUNT_MS 10000u  /* after --count: wait this long for acks */
#define SIM_DRAIN_SIGNAL_MS 2000u  /* after Ctrl-C */
#define SIM_CLIENT_AGENT "iothub-simulate"

static volatile sig_atomic_t stop_requested; /* set by SIGINT / SIGTERM only */

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ---- output and sending (declared in simulate.h) ----------------------------------- */

void sim_emit(simulator *s, json_t *event, const char *fmt, ...)
{
    FILE *out = s->ctx->out;
    if (s->ctx->json) {
        char *text = event ? json_dumps(event, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) : NULL;
        if (text)
            fprintf(out, "%s\n", text);
        free(text);
    } else {
        va_list ap;
        va_start(ap, fmt);
        vfprintf(out, fmt, ap);
        va_end(ap);
        fputc('\n', out);
    }
    json_decref(event);
    fflush(out);
}

bool sim_send(simulator *s, const mqtt_packet *pkt)
{
    if (!mqttc_send(&s->conn, pkt, s->err, sizeof s->err))
        return false;
    s->last_write_ms = time_mono_ms();
    return true;
}

/* A C string as a codec slice (no copy). */
static mqtt_bytes bytes_of(const char *text)
{
    return (mqtt_bytes){(const uint8_t *)text, (uint32_t)strlen(text)};
}

/* A free request slot, or NULL when all are waiting. */
static sim_request *free_request(simulator *s)
{
    for (size_t i = 0; i < SIM_PENDING_MAX; i++)
        if (!s->requests[i].used)
            return &s->requests[i];
    return NULL;
}

bool sim_send_request(simulator *s, sim_request_kind kind, const json_t *patch)
{
    sim_request *r = free_request(s);
    if (!r) {
        sim_emit(s, json_pack("{s:s, s:s}", "event", "error", "message",
                              "request not sent: too many are waiting for the hub"),
                 "request not sent: %d are waiting for the hub", SIM_PENDING_MAX);
        return true;
    }
    char *payload = patch ? json_dumps(patch, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (patch && !payload) {
        snprintf(s->err, sizeof s->err, "out of memory");
        return false;
    }
    uint8_t corr[4];
    uint32_t id = ++s->last_correlation;
    mqtt_wr_u32(corr, id);
    mqtt_packet p = {.type = MQTT_PUBLISH};
    p.u.publish.topic = bytes_of(kind == SIM_TWIN_GET ? "$iothub/twin/get"
                                                      : "$iothub/twin/patch/reported");
    p.u.publish.props.correlation_data = (mqtt_bytes){corr, sizeof corr};
    MQTT_SET(&p.u.publish.props, MQTT_PROP_CORRELATION_DATA);
    p.u.publish.payload = payload ? bytes_of(payload) : (mqtt_bytes){NULL, 0};
    if (!sim_send(s, &p)) {
        free(payload);
        return false;
    }
    *r = (sim_request){.used = true, .correlation = id, .kind = kind, .patch = payload};
    return true;
}

void sim_requests_clear(simulator *s)
{
    for (size_t i = 0; i < SIM_PENDING_MAX; i++) {
        free(s->requests[i].patch);
        s->requests[i] = (sim_request){0};
    }
}

/* ---- settings and key ------------------------------------------------------------- */

/* Reads a whole number option within [min, max] (default when absent). */
static int number_option(cli_ctx *ctx, const cli_invocation *inv, const char *name, uint64_t min,
                         uint64_t max, uint64_t fallback, uint64_t *out)
{
    const char *text = cli_value(inv, name);
    *out = fallback;
    if (text && (!cli_parse_u64(text, max, out) || *out < min))
        return cli_usage_error(ctx, "%s needs a whole number from %" PRIu64 " to %" PRIu64, name,
                               min, max);
    return CLI_EXIT_OK;
}

/* The hub's host name: --hostname, else the connection string's HostName. */
static int hub_host(cli_ctx *ctx, const cli_invocation *inv, sim_settings *set)
{
    const char *host = cli_value(inv, "--hostname");
    if (!host && ctx->settings.have_connection)
        host = ctx->settings.connection.host;
    if (!host || !*host)
        return cli_usage_error(ctx, "no hub host name: give --hostname NAME or a connection string");
    snprintf(set->host, sizeof set->host, "%s", host);
    return CLI_EXIT_OK;
}

/* Where to connect: --mqtt HOST[:PORT], default 127.0.0.1 on 1883 (8883 with --tls). */
static int mqtt_address(cli_ctx *ctx, const cli_invocation *inv, sim_settings *set)
{
    bool tls = cli_flag(inv, "--tls");
    const char *text = cli_value(inv, "--mqtt");
    uint16_t fallback = tls ? SIM_DEFAULT_TLS_PORT : SIM_DEFAULT_PORT;
    mqttc_endpoint *ep = &set->endpoint;
    if (!sim_parse_address(text ? text : "127.0.0.1", fallback, set->address,
                           sizeof set->address, &ep->port))
        return cli_usage_error(ctx, "--mqtt needs HOST:PORT, e.g. 127.0.0.1:1883");
    if (cli_flag(inv, "--ca") && !tls)
        return cli_usage_error(ctx, "--ca needs --tls");
    ep->host = set->address;
    ep->tls = tls;
    ep->tls_name = set->host;
    ep->ca_file = cli_value(inv, "--ca");
    ep->timeout_ms = SIM_CONNECT_TIMEOUT_MS;
    return CLI_EXIT_OK;
}

/* Validates the command line into s->set. */
static int read_settings(cli_ctx *ctx, const cli_invocation *inv, sim_settings *set)
{
    memset(set, 0, sizeof *set);
    set->device = cli_value(inv, "--device");
    set->module = cli_value(inv, "--module");
    if (!set->device || !*set->device)
        return cli_usage_error(ctx, "simulate needs --device ID");
    if (set->module && !*set->module)
        return cli_usage_error(ctx, "the module id must not be empty");
    const char *which = cli_value(inv, "--key");
    if (which && strcmp(which, "primary") && strcmp(which, "secondary"))
        return cli_usage_error(ctx, "--key takes primary or secondary");
    int rc = number_option(ctx, inv, "--interval-ms", 1, SIM_MAX_INTERVAL_MS,
                           SIM_DEFAULT_INTERVAL_MS, &set->interval_ms);
    if (rc == CLI_EXIT_OK)
        rc = number_option(ctx, inv, "--count", 0, UINT32_MAX, 0, &set->count);
    if (rc == CLI_EXIT_OK)
        rc = number_option(ctx, inv, "--sas-duration", SIM_MIN_SAS_S, SIM_MAX_SAS_S,
                           SIM_DEFAULT_SAS_S, &set->sas_duration_s);
    if (rc == CLI_EXIT_OK)
        rc = hub_host(ctx, inv, set);
    if (rc == CLI_EXIT_OK)
        rc = mqtt_address(ctx, inv, set);
    return rc;
}

/* The device key: --key-value, else the identity's from the service. */
static int find_key(simulator *s, const cli_invocation *inv)
{
    const char *value = cli_value(inv, "--key-value");
    const char *which = cli_value(inv, "--key");
    if (value) {
        if (strlen(value) >= sizeof s->key)
            return cli_usage_error(s->ctx, "--key-value is too long");
        snprintf(s->key, sizeof s->key, "%s", value);
        return CLI_EXIT_OK;
    }
    return cli_fetch_device_key(s->ctx, s->set.device, s->set.module, which ? which : "primary",
                                s->key, sizeof s->key);
}

/* ---- authentication --------------------------------------------------------------- */

/* Signs a new token valid from now and schedules its renewal at 80 %. */
static bool new_token(simulator *s)
{
    uint64_t now = time_wall_ms();
    cli_device_token_free(&s->token);
    if (!cli_device_token_make(s->set.host, s->set.device, s->set.module, NULL, s->key, now,
                               s->set.sas_duration_s, &s->token, s->err, sizeof s->err))
        return false;
    s->reauth_at_ms = now + s->set.sas_duration_s * 800u; /* 80 % of the lifetime, in ms */
    s->reauth_sent = false;
    return true;
}

/* The SAS properties of CONNECT (with_identity: api-version, host and
 * client-agent too) or AUTH into props; block holds the user properties
 * and sig the raw signature. False when something does not fit. */
static bool sas_props(const simulator *s, bool with_identity, uint8_t *block, size_t cap,
                      uint8_t sig[CRYPTO_SHA256_LEN], mqtt_props *props)
{
    const cli_device_token *t = &s->token;
    const char *pairs[][2] = {
        {"api-version", CLI_MQTT5_API_VERSION}, {"host", s->set.host},
        {"client-agent", SIM_CLIENT_AGENT},     {"sas-at", t->sas_at},
        {"sas-expiry", t->sas_expiry},
    };
    size_t len = 0, sig_len = 0;
    for (size_t i = with_identity ? 0 : 3; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!mqtt_user_props_append(block, cap, &len, bytes_of(pairs[i][0]), bytes_of(pairs[i][1])))
            return false;
        props->user_count++;
    }
    props->user = (mqtt_bytes){block, (uint32_t)len};
    if (!crypto_b64_decode(t->auth_data_b64, strlen(t->auth_data_b64), sig, CRYPTO_SHA256_LEN,
                           &sig_len))
        return false;
    props->authentication_method = MQTT_BYTES_LIT("SAS");
    props->authentication_data = (mqtt_bytes){sig, (uint32_t)sig_len};
    MQTT_SET(props, MQTT_PROP_AUTHENTICATION_METHOD);
    MQTT_SET(props, MQTT_PROP_AUTHENTICATION_DATA);
    return true;
}

/* CONNECT: clean start, keep-alive 60 s, the client id and the SAS
 * properties of the current token. */
static bool send_connect(simulator *s)
{
    uint8_t block[2048], sig[CRYPTO_SHA256_LEN];
    mqtt_packet p = {.type = MQTT_CONNECT};
    mqtt_connect *c = &p.u.connect;
    c->protocol_name = MQTT_BYTES_LIT("MQTT");
    c->protocol_version = MQTT_V5;
    c->clean_start = true;
    c->keep_alive = SIM_KEEP_ALIVE_S;
    c->client_id = bytes_of(s->token.client_id);
    if (!sas_props(s, true, block, sizeof block, sig, &c->props)) {
        snprintf(s->err, sizeof s->err, "cannot build the CONNECT properties");
        return false;
    }
    return sim_send(s, &p);
}

/* AUTH 0x19 with a fresh token (spec §1 Re-authentication); the hub's
 * AUTH 0x00 arrives later in sim_inbound.c. */
static bool reauthenticate(simulator *s)
{
    uint8_t block[1024], sig[CRYPTO_SHA256_LEN];
    if (!new_token(s))
        return false;
    mqtt_packet p = {.type = MQTT_AUTH};
    p.u.auth.reason = MQTT_RC_REAUTHENTICATE;
    if (!sas_props(s, false, block, sizeof block, sig, &p.u.auth.props)) {
        snprintf(s->err, sizeof s->err, "cannot build the AUTH properties");
        return false;
    }
    s->reauth_sent = true;
    return sim_send(s, &p);
}

/* Waits for one packet of `type`, handing anything else to the normal
 * handler; false on timeout, a closed connection or a handler failure. */
static bool await_packet(simulator *s, uint8_t type, mqtt_packet *out)
{
    uint64_t deadline = time_mono_ms() + SIM_CONNECT_TIMEOUT_MS;
    while (time_mono_ms() < deadline && !stop_requested) {
        mqttc_status st = mqttc_receive(&s->conn, SIM_TICK_MS, out, s->err, sizeof s->err);
        if (st == MQTTC_PACKET && out->type == type)
            return true;
        if (st == MQTTC_PACKET && !sim_handle_packet(s, out))
            return false;
        if (st == MQTTC_CLOSED)
            snprintf(s->err, sizeof s->err, "the hub closed the connection");
        if (st == MQTTC_CLOSED || st == MQTTC_ERROR)
            return false;
    }
    snprintf(s->err, sizeof s->err, "%s", stop_requested ? "interrupted"
                                          : "the hub did not answer within 10 s");
    return false;
}

/* CONNECT, then CONNACK: success takes Receive Maximum and Server Keep
 * Alive; a refusal becomes the run's error. */
static bool connect_device(simulator *s)
{
    mqtt_packet ack;
    if (!new_token(s) || !mqttc_open(&s->conn, &s->set.endpoint, s->err, sizeof s->err))
        return false;
    s->connected = true;
    if (!send_connect(s) || !await_packet(s, MQTT_CONNACK, &ack))
        return false;
    const mqtt_connack *c = &ack.u.connack;
    if (c->reason != MQTT_RC_SUCCESS) {
        char why[384];
        sim_describe_refusal(c->reason, &c->props, why, sizeof why);
        snprintf(s->err, sizeof s->err, "the hub refused the connection: %s", why);
        return false;
    }
    uint16_t rmax = MQTT_HAS(&c->props, MQTT_PROP_RECEIVE_MAXIMUM) ? c->props.receive_maximum
                                                                   : SIM_INFLIGHT_MAX;
    s->receive_maximum = rmax < SIM_INFLIGHT_MAX ? rmax : SIM_INFLIGHT_MAX;
    s->keep_alive_s = MQTT_HAS(&c->props, MQTT_PROP_SERVER_KEEP_ALIVE) ? c->props.server_keep_alive
                                                                       : SIM_KEEP_ALIVE_S;
    char until[32];
    sim_format_utc(s->token.expiry_s * 1000u, until, sizeof until);
    sim_emit(s, json_pack("{s:s, s:s, s:i, s:s, s:b, s:s}", "event", "connected", "address",
                          s->set.address, "port", (int)s->set.endpoint.port, "clientId",
                          s->token.client_id, "tls", s->set.endpoint.tls, "sasExpiry", until),
             "connected to %s:%u%s as %s (SAS token valid until %s, renewed at 80 %%)",
             s->set.address, s->set.endpoint.port, s->set.endpoint.tls ? " over TLS" : "",
             s->token.client_id, until);
    return true;
}

/* ---- subscriptions ------------------------------------------------------------------- */

static const struct {
    const char *filter, *label, *json_name;
    uint8_t qos;
} sim_subscriptions[] = {
    {"$iothub/twin/patch/desired", "desired properties", "desired", 0},
    {"$iothub/methods/+", "direct methods", "methods", 0},
    {"$iothub/commands", "commands", "commands", 1},
};
#define SIM_SUBSCRIPTIONS (sizeof sim_subscriptions / sizeof sim_subscriptions[0])

/* Prints which subscriptions the hub granted; the desired one is needed. */
static bool report_suback(simulator *s, const mqtt_suback *ack)
{
    char text[256] = "subscribed:";
    size_t used = strlen(text);
    json_t *event = json_pack("{s:s}", "event", "subscribed");
    bool desired_ok = false;
    for (size_t i = 0; i < SIM_SUBSCRIPTIONS; i++) {
        uint8_t rc = i < ack->count ? ack->reasons[i] : MQTT_RC_UNSPECIFIED_ERROR;
        bool granted = rc < 0x80;
        desired_ok |= i == 0 && granted;
        if (granted)
            snprintf(text + used, sizeof text - used, "%s %s", i ? "," : "", sim_subscriptions[i].label);
        else
            snprintf(text + used, sizeof text - used, "%s %s refused (0x%02X, skipped)", i ? "," : "",
                     sim_subscriptions[i].label, rc);
        used = strlen(text);
        json_object_set_new(event, sim_subscriptions[i].json_name, json_boolean(granted));
    }
    sim_emit(s, event, "%s", text);
    if (!desired_ok)
        snprintf(s->err, sizeof s->err, "the hub refused the desired-properties subscription");
    return desired_ok;
}

/* One SUBSCRIBE for every topic the simulator serves; waits for SUBACK. */
static bool subscribe(simulator *s)
{
    mqtt_sub_entry entries[SIM_SUBSCRIPTIONS];
    for (size_t i = 0; i < SIM_SUBSCRIPTIONS; i++)
        entries[i] = (mqtt_sub_entry){bytes_of(sim_subscriptions[i].filter),
                                      sim_subscriptions[i].qos};
    mqtt_packet p = {.type = MQTT_SUBSCRIBE};
    p.u.subscribe.packet_id = mqttc_next_packet_id(&s->conn);
    p.u.subscribe.count = SIM_SUBSCRIPTIONS;
    p.u.subscribe.list = entries;
    mqtt_packet ack;
    if (!sim_send(s, &p) || !await_packet(s, MQTT_SUBACK, &ack))
        return false;
    return report_suback(s, &ack.u.suback);
}

/* ---- the loop -------------------------------------------------------------------------- */

/* Publishes the next reading at QoS 1 with @source=simulator. */
static bool send_telemetry(simulator *s)
{
    sim_inflight *m = &s->inflight[s->inflight_count];
    m->seq = s->sent + 1;
    if (!sim_sensor_next(&s->sensor, m->seq, m->body, sizeof m->body)) {
        snprintf(s->err, sizeof s->err, "telemetry body too long");
        return false;
    }
    uint8_t block[128];
    size_t len = 0;
    mqtt_packet p = {.type = MQTT_PUBLISH};
    mqtt_publish *pub = &p.u.publish;
    pub->qos = 1;
    pub->packet_id = m->packet_id = mqttc_next_packet_id(&s->conn);
    pub->topic = MQTT_BYTES_LIT("$iothub/telemetry");
    pub->payload = bytes_of(m->body);
    pub->props.content_type = MQTT_BYTES_LIT("application/json");
    MQTT_SET(&pub->props, MQTT_PROP_CONTENT_TYPE);
    /* 47 bytes of properties: they always fit the block */
    mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("content-encoding"),
                           MQTT_BYTES_LIT("utf-8"));
    mqtt_user_props_append(block, sizeof block, &len, MQTT_BYTES_LIT("@source"),
                           MQTT_BYTES_LIT("simulator"));
    pub->props.user = (mqtt_bytes){block, (uint32_t)len};
    pub->props.user_count = 2;
    if (!sim_send(s, &p))
        return false;
    s->inflight_count++;
    s->sent++;
    return true;
}

/* Whether anything still waits for the hub. */
static bool outstanding(const simulator *s)
{
    if (s->inflight_count)
        return true;
    for (size_t i = 0; i < SIM_PENDING_MAX; i++)
        if (s->requests[i].used)
            return true;
    return false;
}

/* The periodic duties: renew the token, keep the connection alive. */
static bool housekeeping(simulator *s)
{
    if (!s->reauth_sent && time_wall_ms() >= s->reauth_at_ms && !reauthenticate(s))
        return false;
    uint64_t idle = time_mono_ms() - s->last_write_ms;
    if (s->keep_alive_s && idle >= s->keep_alive_s * 500u) { /* half the keep-alive */
        if (s->ping_outstanding) {
            snprintf(s->err, sizeof s->err, "the hub stopped answering (no PINGRESP)");
            return false;
        }
        mqtt_packet p = {.type = MQTT_PINGREQ};
        s->ping_outstanding = true;
        return sim_send(s, &p);
    }
    return true;
}

/* Receives for at most wait_ms and handles what came. */
static bool receive_some(simulator *s, int wait_ms)
{
    mqtt_packet pkt;
    mqttc_status st = mqttc_receive(&s->conn, wait_ms, &pkt, s->err, sizeof s->err);
    if (st == MQTTC_CLOSED)
        snprintf(s->err, sizeof s->err, "the hub closed the connection");
    if (st == MQTTC_CLOSED || st == MQTTC_ERROR)
        return false;
    return st == MQTTC_TIMEOUT || sim_handle_packet(s, &pkt);
}

/* Sends telemetry on schedule until --count or a stop signal, then drains. */
static bool run_loop(simulator *s)
{
    uint64_t next_send = time_mono_ms();
    uint64_t drain_until = 0;
    for (;;) {
        uint64_t now = time_mono_ms();
        bool done_counting = s->set.count && s->sent >= s->set.count;
        if (!drain_until && (stop_requested || done_counting))
            drain_until = now + (stop_requested ? SIM_DRAIN_SIGNAL_MS : SIM_DRAIN_COUNT_MS);
        if (drain_until && (!outstanding(s) || now >= drain_until))
            return true;
        if (!drain_until && now >= next_send && s->inflight_count < s->receive_maximum) {
            if (!send_telemetry(s))
                return false;
            next_send = next_send + s->set.interval_ms > now ? next_send + s->set.interval_ms
                                                             : now + s->set.interval_ms;
        }
        if (!housekeeping(s))
            return false;
        uint64_t until_send = next_send > now ? next_send - now : 0;
        int wait = drain_until || until_send > SIM_TICK_MS ? SIM_TICK_MS : (int)until_send;
        if (!receive_some(s, wait))
            return false;
    }
}

/* Says goodbye (DISCONNECT 0x00) and prints the tally. */
static void finish(simulator *s)
{
    mqtt_packet p = {.type = MQTT_DISCONNECT};
    p.u.disconnect.reason = MQTT_RC_SUCCESS;
    sim_send(s, &p);
    uint64_t unacked = s->sent - s->acknowledged - s->refused;
    sim_emit(s, json_pack("{s:s, s:I, s:I, s:I, s:I}", "event", "stopped", "sent",
                          (json_int_t)s->sent, "acknowledged", (json_int_t)s->acknowledged,
                          "refused", (json_int_t)s->refused, "unacknowledged",
                          (json_int_t)unacked),
             "stopped: %" PRIu64 " sent, %" PRIu64 " acknowledged, %" PRIu64
             " refused, %" PRIu64 " unacknowledged",
             s->sent, s->acknowledged, s->refused, unacked);
}

/* Connect, subscribe, read the twin, loop. */
static bool simulate_session(simulator *s)
{
    return connect_device(s) && subscribe(s) && sim_send_request(s, SIM_TWIN_GET, NULL) &&
           run_loop(s);
}

/* Installs the stop handler (no SA_RESTART: poll must wake up). */
static void catch_stop_signals(struct sigaction *old_int, struct sigaction *old_term)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

/* The command: settings, key, the session, the exit status (0 after
 * --count or Ctrl-C; 1 with one line when the hub or the network failed
 * or refused messages). */
static int simulate(cli_ctx *ctx, const cli_invocation *inv)
{
    static simulator s; /* large (buffers, token): static storage, owned by this run */
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    int rc = read_settings(ctx, inv, &s.set);
    if (rc == CLI_EXIT_OK)
        rc = find_key(&s, inv);
    if (rc != CLI_EXIT_OK)
        return rc;
    sim_sensor_init(&s.sensor, time_wall_ms());
    struct sigaction old_int, old_term;
    catch_stop_signals(&old_int, &old_term);
    bool ok = simulate_session(&s);
    if (ok)
        finish(&s);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (s.connected)
        mqttc_close(&s.conn);
    cli_device_token_free(&s.token);
    sim_requests_clear(&s);
    if (!ok)
        return cli_fail(ctx, "%s", s.err);
    if (s.refused)
        return cli_fail(ctx, "the hub refused %" PRIu64 " of %" PRIu64 " messages", s.refused,
                        s.sent);
    return CLI_EXIT_OK;
}

static const cli_option simulate_options[] = {
    {"--device", "ID", "the device to simulate (required)"},
    {"--module", "M", "a module of the device"},
    {"--interval-ms", "N", "telemetry period in milliseconds (default 1000)"},
    {"--count", "N", "stop after N messages (default: until Ctrl-C)"},
    {"--mqtt", "HOST:PORT", "the hub's MQTT address (default 127.0.0.1:1883, 8883 with --tls)"},
    {"--tls", NULL, "connect over TLS (the certificate must name the hub's host name)"},
    {"--ca", "FILE", "trust this PEM CA bundle (with --tls; default: the system's)"},
    {"--hostname", "NAME", "the hub's host name (default: HostName of the connection string)"},
    {"--key", "primary|secondary", "which device key to use (default primary)"},
    {"--key-value", "K", "sign with this base64 key instead of asking the service"},
    {"--sas-duration", "SECONDS", "token lifetime, renewed at 80 % (default 3600)"},
    {NULL, NULL, NULL},
};

const cli_command cli_simulate_commands[] = {
    {"simulate", NULL,
     "--device ID [--module M] [--interval-ms N] [--count N] [--mqtt HOST:PORT] [--tls [--ca "
     "FILE]] [--hostname NAME] [--key primary|secondary | --key-value K] [--sas-duration S]",
     "run a simulated device over MQTT 5: telemetry, twin, methods, commands", 0, 0,
     simulate_options, simulate},
};
const size_t cli_simulate_command_count =
    sizeof cli_simulate_commands / sizeof cli_simulate_commands[0];
