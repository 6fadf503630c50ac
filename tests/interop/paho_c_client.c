/*
 * paho_c_client.c — interoperability check of a broker against the Eclipse
 * Paho C client (synchronous API, MQTT 5).
 *
 *   paho_c_client HOST PORT MODE      MODE: pubsub | will | retained
 *
 * pubsub    subscribes at QoS 2 to a topic of its own, publishes one message
 *           at each QoS 0, 1 and 2 with a user property and a Content Type,
 *           and checks all three come back once, at their QoS, with both
 *           properties intact.
 * will      a second client connects with a Will (QoS 1, with properties)
 *           and leaves with DISCONNECT 0x04 (Disconnect with Will Message);
 *           the first client must receive the Will with its properties.
 * retained  publishes a retained message with properties; a client that
 *           subscribes afterwards gets it with RETAIN set; after an empty
 *           retained message clears it, a new subscriber gets nothing.
 *
 * Messages are read with MQTTClient_receive (no callbacks: the client stays
 * single-threaded from our side). Exits 0 when every check holds; otherwise
 * prints what went wrong on stderr and exits 1 (2 for usage errors).
 */
#include <MQTTClient.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 5000L
#define SILENCE_MS 1000L
#define CONTENT_TYPE "text/plain; charset=utf-8"
#define USER_KEY "origin"
#define USER_VALUE "paho-c-interop"

static char server_uri[300];
static char run_tag[64]; /* makes client ids and topics unique per run */

static bool failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("paho_c_client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return false;
}

static void add_string_prop(MQTTProperties *props, enum MQTTPropertyCodes id, const char *s)
{
    MQTTProperty p = {.identifier = id};
    p.value.data.data = (char *)s;
    p.value.data.len = (int)strlen(s);
    MQTTProperties_add(props, &p);
}

static void add_user_prop(MQTTProperties *props, const char *key, const char *value)
{
    MQTTProperty p = {.identifier = MQTTPROPERTY_CODE_USER_PROPERTY};
    p.value.data.data = (char *)key;
    p.value.data.len = (int)strlen(key);
    p.value.value.data = (char *)value;
    p.value.value.len = (int)strlen(value);
    MQTTProperties_add(props, &p);
}

/* The Content Type and user property every test message carries. */
static MQTTProperties message_props(void)
{
    MQTTProperties props = MQTTProperties_initializer;
    add_string_prop(&props, MQTTPROPERTY_CODE_CONTENT_TYPE, CONTENT_TYPE);
    add_user_prop(&props, USER_KEY, USER_VALUE);
    return props;
}

static bool lenstring_is(const MQTTLenString *s, const char *want)
{
    return s->len == (int)strlen(want) && memcmp(s->data, want, (size_t)s->len) == 0;
}

/* Whether a received message still carries exactly our properties. */
static bool props_intact(const MQTTClient_message *m, const char *what)
{
    MQTTProperties *props = (MQTTProperties *)&m->properties;
    MQTTProperty *ct = MQTTProperties_getProperty(props, MQTTPROPERTY_CODE_CONTENT_TYPE);
    if (!ct || !lenstring_is(&ct->value.data, CONTENT_TYPE))
        return failed("%s: Content Type missing or changed", what);
    int users = 0;
    for (int i = 0; i < props->count; i++) {
        MQTTProperty *p = &props->array[i];
        if (p->identifier != MQTTPROPERTY_CODE_USER_PROPERTY)
            continue;
        users++;
        if (!lenstring_is(&p->value.data, USER_KEY) || !lenstring_is(&p->value.value, USER_VALUE))
            return failed("%s: user property changed to %.*s=%.*s", what, p->value.data.len,
                          p->value.data.data, p->value.value.len, p->value.value.data);
    }
    if (users != 1)
        return failed("%s: expected 1 user property, got %d", what, users);
    return true;
}

static bool client_open(MQTTClient *client, const char *role)
{
    char client_id[128];
    snprintf(client_id, sizeof client_id, "paho-c-%s-%s", run_tag, role);
    MQTTClient_createOptions create = MQTTClient_createOptions_initializer;
    create.MQTTVersion = MQTTVERSION_5;
    int rc = MQTTClient_createWithOptions(client, server_uri, client_id,
                                          MQTTCLIENT_PERSISTENCE_NONE, NULL, &create);
    if (rc != MQTTCLIENT_SUCCESS)
        return failed("create %s: %s", role, MQTTClient_strerror(rc));
    return true;
}

/* Connects with Clean Start; `will` may be NULL. */
static bool client_connect(MQTTClient client, const char *role, MQTTClient_willOptions *will,
                           MQTTProperties *will_props)
{
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer5;
    opts.keepAliveInterval = 30;
    opts.cleanstart = 1;
    opts.will = will;
    MQTTResponse r = MQTTClient_connect5(client, &opts, NULL, will_props);
    bool ok = r.reasonCode == MQTTREASONCODE_SUCCESS;
    if (!ok)
        failed("connect %s: %s (reason %d)", role, MQTTClient_strerror(r.reasonCode),
               r.reasonCode);
    MQTTResponse_free(r);
    return ok;
}

static bool subscribe(MQTTClient client, const char *topic, int qos)
{
    MQTTResponse r = MQTTClient_subscribe5(client, topic, qos, NULL, NULL);
    bool ok = (int)r.reasonCode == qos;
    if (!ok)
        failed("subscribe %s at QoS %d: reason %d", topic, qos, r.reasonCode);
    MQTTResponse_free(r);
    return ok;
}

static bool publish(MQTTClient client, const char *topic, const char *payload, int qos,
                    bool retained, bool with_props)
{
    MQTTClient_message msg = MQTTClient_message_initializer;
    msg.payload = (void *)payload;
    msg.payloadlen = (int)strlen(payload);
    msg.qos = qos;
    msg.retained = retained;
    if (with_props)
        msg.properties = message_props();
    MQTTClient_deliveryToken token = 0;
    MQTTResponse r = MQTTClient_publishMessage5(client, topic, &msg, &token);
    int rc = r.reasonCode;
    MQTTResponse_free(r);
    MQTTProperties_free(&msg.properties);
    if (rc != MQTTCLIENT_SUCCESS && rc != MQTTREASONCODE_NO_MATCHING_SUBSCRIBERS)
        return failed("publish %s at QoS %d: %s (%d)", payload, qos, MQTTClient_strerror(rc), rc);
    if (qos > 0) {
        rc = MQTTClient_waitForCompletion(client, token, TIMEOUT_MS);
        if (rc != MQTTCLIENT_SUCCESS)
            return failed("publish %s at QoS %d not completed: %s", payload, qos,
                          MQTTClient_strerror(rc));
    }
    return true;
}

/* Waits up to `timeout_ms` for the next message; NULL if none came. */
static MQTTClient_message *receive(MQTTClient client, long timeout_ms, char **topic)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        MQTTClient_message *m = NULL;
        int topic_len = 0;
        *topic = NULL;
        int rc = MQTTClient_receive(client, topic, &topic_len, &m, 100);
        if (m)
            return m;
        if (*topic)
            MQTTClient_free(*topic);
        if (rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED) {
            failed("receive: %s", MQTTClient_strerror(rc));
            return NULL;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000L + (now.tv_nsec - start.tv_nsec) / 1000000L;
        if (elapsed >= timeout_ms)
            return NULL;
    }
}

static void release(MQTTClient_message *m, char *topic)
{
    MQTTClient_freeMessage(&m);
    MQTTClient_free(topic);
}

static void client_close(MQTTClient *client, bool connected)
{
    if (connected)
        MQTTClient_disconnect5(*client, 1000, MQTTREASONCODE_SUCCESS, NULL);
    MQTTClient_destroy(client);
}

/* ---- modes ---------------------------------------------------------------- */

static bool run_pubsub(void)
{
    char topic[160];
    snprintf(topic, sizeof topic, "interop/paho-c/%s/pubsub", run_tag);
    MQTTClient client;
    if (!client_open(&client, "pubsub"))
        return false;
    bool ok = client_connect(client, "pubsub", NULL, NULL) && subscribe(client, topic, 2);
    static const char *const payloads[3] = {"at-qos-0", "at-qos-1", "at-qos-2"};
    for (int qos = 0; ok && qos <= 2; qos++)
        ok = publish(client, topic, payloads[qos], qos, false, true);
    int seen[3] = {0, 0, 0};
    for (int got = 0; ok && got < 3; got++) {
        char *rtopic;
        MQTTClient_message *m = receive(client, TIMEOUT_MS, &rtopic);
        if (!m) {
            ok = failed("pubsub: only %d of 3 messages received", got);
            break;
        }
        int which = -1;
        for (int i = 0; i < 3; i++)
            if (m->payloadlen == (int)strlen(payloads[i]) &&
                memcmp(m->payload, payloads[i], (size_t)m->payloadlen) == 0)
                which = i;
        if (which < 0)
            ok = failed("pubsub: unexpected payload %.*s", m->payloadlen, (char *)m->payload);
        else if (seen[which]++)
            ok = failed("pubsub: %s received twice", payloads[which]);
        else if (strcmp(rtopic, topic) != 0)
            ok = failed("pubsub: topic %s, expected %s", rtopic, topic);
        else if (m->qos != which)
            ok = failed("pubsub: %s arrived at QoS %d", payloads[which], m->qos);
        else
            ok = props_intact(m, payloads[which]);
        release(m, rtopic);
    }
    if (ok) {
        char *rtopic;
        MQTTClient_message *extra = receive(client, SILENCE_MS, &rtopic);
        if (extra) {
            ok = failed("pubsub: unexpected extra message %.*s", extra->payloadlen,
                        (char *)extra->payload);
            release(extra, rtopic);
        }
    }
    client_close(&client, true);
    return ok;
}

static bool run_will(void)
{
    char topic[160];
    snprintf(topic, sizeof topic, "interop/paho-c/%s/will", run_tag);
    MQTTClient watcher, dying;
    if (!client_open(&watcher, "watcher"))
        return false;
    if (!client_open(&dying, "dying")) {
        MQTTClient_destroy(&watcher);
        return false;
    }
    bool ok = client_connect(watcher, "watcher", NULL, NULL) && subscribe(watcher, topic, 1);
    MQTTClient_willOptions will = MQTTClient_willOptions_initializer;
    will.topicName = topic;
    will.message = "gone";
    will.qos = 1;
    MQTTProperties will_props = message_props();
    bool dying_connected = ok && client_connect(dying, "dying", &will, &will_props);
    MQTTProperties_free(&will_props);
    ok = ok && dying_connected;
    if (ok) {
        int rc = MQTTClient_disconnect5(dying, 1000, MQTTREASONCODE_DISCONNECT_WITH_WILL_MESSAGE,
                                        NULL);
        if (rc != MQTTCLIENT_SUCCESS)
            ok = failed("disconnect with Will: %s", MQTTClient_strerror(rc));
    }
    MQTTClient_destroy(&dying);
    if (ok) {
        char *rtopic;
        MQTTClient_message *m = receive(watcher, TIMEOUT_MS, &rtopic);
        if (!m) {
            ok = failed("will: the Will message did not arrive");
        } else {
            if (strcmp(rtopic, topic) != 0 || m->payloadlen != 4 || memcmp(m->payload, "gone", 4))
                ok = failed("will: got %.*s on %s", m->payloadlen, (char *)m->payload, rtopic);
            else if (m->qos != 1)
                ok = failed("will: arrived at QoS %d", m->qos);
            else
                ok = props_intact(m, "will");
            release(m, rtopic);
        }
    }
    client_close(&watcher, true);
    return ok;
}

static bool run_retained(void)
{
    char topic[160];
    snprintf(topic, sizeof topic, "interop/paho-c/%s/retained", run_tag);
    MQTTClient publisher, late, later;
    if (!client_open(&publisher, "retainer"))
        return false;
    bool ok = client_connect(publisher, "retainer", NULL, NULL) &&
              publish(publisher, topic, "kept", 1, true, true);
    if (ok && client_open(&late, "late")) {
        ok = client_connect(late, "late", NULL, NULL) && subscribe(late, topic, 1);
        char *rtopic;
        MQTTClient_message *m = ok ? receive(late, TIMEOUT_MS, &rtopic) : NULL;
        if (ok && !m) {
            ok = failed("retained: a new subscriber did not get the retained message");
        } else if (m) {
            if (m->payloadlen != 4 || memcmp(m->payload, "kept", 4) != 0)
                ok = failed("retained: got %.*s", m->payloadlen, (char *)m->payload);
            else if (!m->retained)
                ok = failed("retained: RETAIN flag not set for a retained message");
            else
                ok = props_intact(m, "retained");
            release(m, rtopic);
        }
        client_close(&late, true);
    } else {
        ok = false;
    }
    /* an empty retained message removes it */
    ok = ok && publish(publisher, topic, "", 1, true, false);
    if (ok && client_open(&later, "later")) {
        ok = client_connect(later, "later", NULL, NULL) && subscribe(later, topic, 1);
        char *rtopic;
        MQTTClient_message *m = ok ? receive(later, SILENCE_MS, &rtopic) : NULL;
        if (m) {
            ok = failed("retained: cleared message still delivered (%.*s)", m->payloadlen,
                        (char *)m->payload);
            release(m, rtopic);
        }
        client_close(&later, true);
    } else {
        ok = false;
    }
    client_close(&publisher, true);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT pubsub|will|retained\n", argv[0]);
        return 2;
    }
    snprintf(server_uri, sizeof server_uri, "tcp://%s:%s", argv[1], argv[2]);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(run_tag, sizeof run_tag, "%ld-%ld", (long)getpid(), (long)(now.tv_nsec / 1000));
    bool ok;
    if (strcmp(argv[3], "pubsub") == 0)
        ok = run_pubsub();
    else if (strcmp(argv[3], "will") == 0)
        ok = run_will();
    else if (strcmp(argv[3], "retained") == 0)
        ok = run_retained();
    else {
        fprintf(stderr, "%s: unknown mode %s\n", argv[0], argv[3]);
        return 2;
    }
    if (ok)
        printf("paho_c_client %s: ok\n", argv[3]);
    return ok ? 0 : 1;
}
