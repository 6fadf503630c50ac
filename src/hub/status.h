/*
 * hub/status.h — the IoT Hub MQTT 5 API's status codes
 * (../shared/spec/iothub-mqtt5.md §4) and the MQTT reason code that goes
 * with each where a PUBACK carries the outcome.
 *
 * A status is four hex digits on the wire ("0104"); here it is the number
 * 0x0104. HUB_OK (0) means success: no `status` property is sent.
 */
#ifndef IOTHUBD_HUB_STATUS_H
#define IOTHUBD_HUB_STATUS_H

#include <stdint.h>

typedef enum hub_status {
    HUB_OK = 0x0000,
    HUB_NOT_MODIFIED = 0x0001,
    HUB_BAD_REQUEST = 0x0100,
    HUB_NOT_AUTHORIZED = 0x0101,
    HUB_NOT_ALLOWED = 0x0102,
    HUB_CONFLICT = 0x0103,
    HUB_PRECONDITION_FAILED = 0x0104,
    HUB_THROTTLED = 0x0501,
    HUB_QUOTA_EXCEEDED = 0x0502,
    HUB_RESOURCE_EXHAUSTED = 0x0503,
    HUB_NOT_FOUND = 0x0504,
    HUB_SERVER_ERROR = 0x0601,
    HUB_TIMEOUT = 0x0602,
    HUB_SERVER_BUSY = 0x0603,
    HUB_TARGET_UNAVAILABLE = 0x06A0,
    HUB_TARGET_TIMEOUT = 0x06A1,
    HUB_TARGET_FAILED = 0x06A2,
} hub_status;

/* The PUBACK reason code for a status (0, 131, 135 or 151). */
static inline uint8_t hub_status_reason_code(hub_status s)
{
    switch (s) {
    case HUB_OK:
    case HUB_NOT_MODIFIED:
        return 0x00;
    case HUB_NOT_AUTHORIZED:
        return 0x87;
    case HUB_THROTTLED:
    case HUB_QUOTA_EXCEEDED:
        return 0x97;
    default:
        return 0x83;
    }
}

/* "0104" into out (5 bytes). */
static inline void hub_status_text(hub_status s, char out[5])
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned v = (unsigned)s;
    out[0] = hex[(v >> 12) & 15];
    out[1] = hex[(v >> 8) & 15];
    out[2] = hex[(v >> 4) & 15];
    out[3] = hex[v & 15];
    out[4] = '\0';
}

#endif
