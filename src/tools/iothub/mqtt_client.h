/*
 * tools/iothub/mqtt_client.h — a small MQTT 5 client for the command line's
 * device simulator: one connection, one thread, no callbacks.
 *
 * It moves packets and nothing more: the caller builds mqtt_packet structs
 * and reads decoded ones, with our own codec (mqtt/codec.h) doing every
 * byte. The socket is non-blocking underneath; mqttc_receive() waits up to
 * a timeout for one whole packet, so the caller's loop can interleave its
 * own timers (telemetry, keep-alive, re-authentication) with what arrives.
 * Sends write the whole packet before returning. TLS (OpenSSL) is optional
 * and verifies the server's certificate against --ca or the system store
 * and its name against the host the caller gives.
 *
 * A packet returned by mqttc_receive() points into the client's receive
 * buffer and stays valid until the next call to mqttc_receive().
 */
#ifndef IOTHUB_CLI_MQTT_CLIENT_H
#define IOTHUB_CLI_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt/codec.h"

/* Where to connect and how. */
typedef struct mqttc_endpoint {
    const char *host;     /* name or address to connect to */
    uint16_t port;
    bool tls;
    const char *tls_name; /* SNI and the name the certificate must carry */
    const char *ca_file;  /* PEM bundle; NULL = the system's trust store */
    int timeout_ms;       /* for the TCP connect and the TLS handshake */
} mqttc_endpoint;

typedef struct mqttc {
    int fd;                    /* -1 when closed */
    void *tls_ctx, *tls;       /* SSL_CTX *, SSL * when TLS is on */
    uint8_t *in;               /* received bytes not yet consumed */
    size_t in_len, in_cap;
    size_t consumed;           /* length of the packet handed out last */
    uint32_t max_packet;       /* largest packet accepted from the server */
    uint16_t last_packet_id;
} mqttc;

/* Result of waiting for a packet. */
typedef enum mqttc_status {
    MQTTC_PACKET = 1,  /* *out holds a packet */
    MQTTC_TIMEOUT = 0, /* nothing complete arrived in time (or a signal came) */
    MQTTC_CLOSED = -1, /* the server closed the connection */
    MQTTC_ERROR = -2,  /* transport or protocol failure; err says which */
} mqttc_status;

/* Opens the connection (TCP, then TLS when asked). False with a one-line
 * reason in err. */
bool mqttc_open(mqttc *c, const mqttc_endpoint *ep, char *err, size_t errlen);

/* Encodes and writes one MQTT 5 packet. False with a reason. */
bool mqttc_send(mqttc *c, const mqtt_packet *pkt, char *err, size_t errlen);

/* Waits up to timeout_ms for one whole packet and decodes it. */
mqttc_status mqttc_receive(mqttc *c, int timeout_ms, mqtt_packet *out, char *err, size_t errlen);

/* A fresh non-zero packet identifier. */
uint16_t mqttc_next_packet_id(mqttc *c);

/* Closes a client that mqttc_open() opened and frees its buffers; calling
 * it again is harmless (it leaves fd at -1). */
void mqttc_close(mqttc *c);

#endif
