/*
 * mqtt/names.c — names of packet types and reason codes, for logs.
 *
 * Design: static tables indexed by the code; unknown values get a fixed
 * placeholder rather than NULL so callers can print without checking.
 * Reason codes that have several meanings (0x00 is Success / Normal
 * disconnection / Granted QoS 0) get the generic one.
 */
#include "mqtt/codec.h"

static const char *const type_names[16] = {
    [MQTT_CONNECT] = "CONNECT",         [MQTT_CONNACK] = "CONNACK",
    [MQTT_PUBLISH] = "PUBLISH",         [MQTT_PUBACK] = "PUBACK",
    [MQTT_PUBREC] = "PUBREC",           [MQTT_PUBREL] = "PUBREL",
    [MQTT_PUBCOMP] = "PUBCOMP",         [MQTT_SUBSCRIBE] = "SUBSCRIBE",
    [MQTT_SUBACK] = "SUBACK",           [MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [MQTT_UNSUBACK] = "UNSUBACK",       [MQTT_PINGREQ] = "PINGREQ",
    [MQTT_PINGRESP] = "PINGRESP",       [MQTT_DISCONNECT] = "DISCONNECT",
    [MQTT_AUTH] = "AUTH",
};

const char *mqtt_packet_type_name(uint8_t type)
{
    if (type < 16 && type_names[type])
        return type_names[type];
    return "RESERVED";
}

static const char *const reason_names[256] = {
    [0x00] = "Success",
    [0x01] = "Granted QoS 1",
    [0x02] = "Granted QoS 2",
    [0x04] = "Disconnect with Will Message",
    [0x10] = "No matching subscribers",
    [0x11] = "No subscription existed",
    [0x18] = "Continue authentication",
    [0x19] = "Re-authenticate",
    [0x80] = "Unspecified error",
    [0x81] = "Malformed Packet",
    [0x82] = "Protocol Error",
    [0x83] = "Implementation specific error",
    [0x84] = "Unsupported Protocol Version",
    [0x85] = "Client Identifier not valid",
    [0x86] = "Bad User Name or Password",
    [0x87] = "Not authorized",
    [0x88] = "Server unavailable",
    [0x89] = "Server busy",
    [0x8A] = "Banned",
    [0x8B] = "Server shutting down",
    [0x8C] = "Bad authentication method",
    [0x8D] = "Keep Alive timeout",
    [0x8E] = "Session taken over",
    [0x8F] = "Topic Filter invalid",
    [0x90] = "Topic Name invalid",
    [0x91] = "Packet Identifier in use",
    [0x92] = "Packet Identifier not found",
    [0x93] = "Receive Maximum exceeded",
    [0x94] = "Topic Alias invalid",
    [0x95] = "Packet too large",
    [0x96] = "Message rate too high",
    [0x97] = "Quota exceeded",
    [0x98] = "Administrative action",
    [0x99] = "Payload format invalid",
    [0x9A] = "Retain not supported",
    [0x9B] = "QoS not supported",
    [0x9C] = "Use another server",
    [0x9D] = "Server moved",
    [0x9E] = "Shared Subscriptions not supported",
    [0x9F] = "Connection rate exceeded",
    [0xA0] = "Maximum connect time",
    [0xA1] = "Subscription Identifiers not supported",
    [0xA2] = "Wildcard Subscriptions not supported",
};

const char *mqtt_reason_name(uint8_t reason)
{
    return reason_names[reason] ? reason_names[reason] : "Unknown reason";
}
