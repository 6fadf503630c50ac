/*
 * mqtt/packet.h — MQTT 3.1.1 and 5.0 control packets as plain structs.
 *
 * Design: decoding is zero-copy. Every string or binary field is an
 * `mqtt_bytes` slice that points into the buffer the packet was decoded from,
 * so a decoded packet is only valid while that buffer is. Nothing here
 * allocates. Repeated elements whose count is unbounded (user properties,
 * SUBSCRIBE/UNSUBSCRIBE entries) are kept as the raw, already-validated
 * encoded region plus a count, and read with the iterators in codec.h; this
 * keeps a decoded packet a fixed-size struct that lives on the stack.
 *
 * The same structs are the input of the encoder. For encoding, SUBSCRIBE and
 * UNSUBSCRIBE may instead point at an array of entries (`list`), and user
 * properties may be given as a pre-encoded block built with
 * mqtt_user_props_append() (codec.h).
 *
 * Protocol level: the decoder needs to know whether the connection speaks
 * 3.1.1 (level 4) or 5 (level 5); CONNECT announces it. In 3.1.1 all property
 * sets are empty and reason codes are the 3.1.1 return codes.
 */
#ifndef IOTHUBD_MQTT_PACKET_H
#define IOTHUBD_MQTT_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MQTT_V311 4
#define MQTT_V5 5

/* Largest packet the protocol can express: 1 + 4 + 268,435,455. */
#define MQTT_MAX_REMAINING_LENGTH 268435455u
/* A PUBLISH to a client may carry one Subscription Identifier per matching
 * subscription; we keep at most this many (the broker never sends more). */
#define MQTT_MAX_SUB_IDS 8

/* A slice of bytes: not NUL-terminated, may point into a receive buffer. */
typedef struct mqtt_bytes {
    const uint8_t *p;
    uint32_t len;
} mqtt_bytes;

/* b equals the C string s. (An empty slice may have p == NULL, which
 * memcmp must not see even with length 0.) */
static inline bool mqtt_bytes_eq_str(mqtt_bytes b, const char *s)
{
    size_t n = __builtin_strlen(s);
    return b.len == n && (n == 0 || __builtin_memcmp(b.p, s, n) == 0);
}

#define MQTT_BYTES_LIT(s) ((mqtt_bytes){(const uint8_t *)(s), sizeof(s) - 1})

enum mqtt_packet_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
};

/* MQTT 5 reason codes (section 2.4). 3.1.1 return codes are mapped by the
 * codec where they differ (CONNACK, SUBACK failure 0x80). */
enum mqtt_reason {
    MQTT_RC_SUCCESS = 0x00, /* also Normal disconnection, Granted QoS 0 */
    MQTT_RC_GRANTED_QOS1 = 0x01,
    MQTT_RC_GRANTED_QOS2 = 0x02,
    MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQTT_RC_CONTINUE_AUTHENTICATION = 0x18,
    MQTT_RC_REAUTHENTICATE = 0x19,
    MQTT_RC_UNSPECIFIED_ERROR = 0x80,
    MQTT_RC_MALFORMED_PACKET = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_IMPLEMENTATION_SPECIFIC = 0x83,
    MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    MQTT_RC_CLIENT_ID_NOT_VALID = 0x85,
    MQTT_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
    MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQTT_RC_SERVER_BUSY = 0x89,
    MQTT_RC_BANNED = 0x8A,
    MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQTT_RC_BAD_AUTHENTICATION_METHOD = 0x8C,
    MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
    MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_PACKET_ID_IN_USE = 0x91,
    MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQTT_RC_ADMINISTRATIVE_ACTION = 0x98,
    MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
    MQTT_RC_SERVER_MOVED = 0x9D,
    MQTT_RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E,
    MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQTT_RC_MAXIMUM_CONNECT_TIME = 0xA0,
    MQTT_RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1,
    MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2,
};

/* MQTT 3.1.1 CONNACK return codes (section 3.2.2.3 of 3.1.1). */
enum mqtt311_connack_rc {
    MQTT311_CONNACK_ACCEPTED = 0,
    MQTT311_CONNACK_BAD_PROTOCOL = 1,
    MQTT311_CONNACK_ID_REJECTED = 2,
    MQTT311_CONNACK_UNAVAILABLE = 3,
    MQTT311_CONNACK_BAD_CREDENTIALS = 4,
    MQTT311_CONNACK_NOT_AUTHORIZED = 5,
};

/* Property identifiers (section 2.2.2.2). */
enum mqtt_prop_id {
    MQTT_PROP_PAYLOAD_FORMAT_INDICATOR = 0x01,
    MQTT_PROP_MESSAGE_EXPIRY_INTERVAL = 0x02,
    MQTT_PROP_CONTENT_TYPE = 0x03,
    MQTT_PROP_RESPONSE_TOPIC = 0x08,
    MQTT_PROP_CORRELATION_DATA = 0x09,
    MQTT_PROP_SUBSCRIPTION_IDENTIFIER = 0x0B,
    MQTT_PROP_SESSION_EXPIRY_INTERVAL = 0x11,
    MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER = 0x12,
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
    MQTT_PROP_AUTHENTICATION_METHOD = 0x15,
    MQTT_PROP_AUTHENTICATION_DATA = 0x16,
    MQTT_PROP_REQUEST_PROBLEM_INFORMATION = 0x17,
    MQTT_PROP_WILL_DELAY_INTERVAL = 0x18,
    MQTT_PROP_REQUEST_RESPONSE_INFORMATION = 0x19,
    MQTT_PROP_RESPONSE_INFORMATION = 0x1A,
    MQTT_PROP_SERVER_REFERENCE = 0x1C,
    MQTT_PROP_REASON_STRING = 0x1F,
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    MQTT_PROP_TOPIC_ALIAS = 0x23,
    MQTT_PROP_MAXIMUM_QOS = 0x24,
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,
    MQTT_PROP_USER_PROPERTY = 0x26,
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28,
    MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29,
    MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE = 0x2A,
};

#define MQTT_PROP_BIT(id) (1ull << (id))

/*
 * The properties of one packet (or of a Will). `present` has bit
 * MQTT_PROP_BIT(id) set for every single-valued property that was decoded
 * (or is to be encoded); the matching field holds its value. User
 * properties are not in `present`: `user_count` says how many there are and
 * `user` is a region of encoded property entries in which those with id
 * 0x26 are the user properties, in order (other entries in the region are
 * skipped). Subscription identifiers may repeat (PUBLISH to a client):
 * the decoder keeps the first MQTT_MAX_SUB_IDS in order and also sets the
 * present bit of 0x0B; the encoder writes subscription_identifier_count of
 * them and ignores that bit.
 */
typedef struct mqtt_props {
    uint64_t present;
    uint8_t payload_format_indicator;
    uint8_t request_problem_information;
    uint8_t request_response_information;
    uint8_t maximum_qos;
    uint8_t retain_available;
    uint8_t wildcard_subscription_available;
    uint8_t subscription_identifier_available;
    uint8_t shared_subscription_available;
    uint16_t server_keep_alive;
    uint16_t receive_maximum;
    uint16_t topic_alias_maximum;
    uint16_t topic_alias;
    uint32_t message_expiry_interval;
    uint32_t session_expiry_interval;
    uint32_t will_delay_interval;
    uint32_t maximum_packet_size;
    uint8_t subscription_identifier_count;
    uint32_t subscription_identifier[MQTT_MAX_SUB_IDS];
    mqtt_bytes content_type;
    mqtt_bytes response_topic;
    mqtt_bytes correlation_data;
    mqtt_bytes assigned_client_identifier;
    mqtt_bytes authentication_method;
    mqtt_bytes authentication_data;
    mqtt_bytes response_information;
    mqtt_bytes server_reference;
    mqtt_bytes reason_string;
    mqtt_bytes user;
    uint32_t user_count;
} mqtt_props;

#define MQTT_HAS(props, id) (((props)->present & MQTT_PROP_BIT(id)) != 0)
#define MQTT_SET(props, id) ((props)->present |= MQTT_PROP_BIT(id))

typedef struct mqtt_connect {
    mqtt_bytes protocol_name; /* "MQTT" */
    uint8_t protocol_version; /* MQTT_V311 or MQTT_V5 */
    bool clean_start;
    uint16_t keep_alive;
    mqtt_props props;
    mqtt_bytes client_id;
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    mqtt_props will_props;
    mqtt_bytes will_topic;
    mqtt_bytes will_payload;
    bool username_flag;
    mqtt_bytes username;
    bool password_flag;
    mqtt_bytes password;
} mqtt_connect;

typedef struct mqtt_connack {
    bool session_present;
    uint8_t reason; /* 5.0 reason code, or 3.1.1 return code */
    mqtt_props props;
} mqtt_connack;

typedef struct mqtt_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    mqtt_bytes topic; /* may be empty in 5.0 when a Topic Alias is used */
    uint16_t packet_id; /* only when qos > 0 */
    mqtt_props props;
    mqtt_bytes payload;
} mqtt_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
typedef struct mqtt_ack {
    uint16_t packet_id;
    uint8_t reason;
    mqtt_props props;
} mqtt_ack;

/* Subscription Options byte (section 3.8.3.1). */
#define MQTT_SUBOPT_QOS(o) ((o) & 0x03)
#define MQTT_SUBOPT_NO_LOCAL 0x04
#define MQTT_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define MQTT_SUBOPT_RETAIN_HANDLING(o) (((o) >> 4) & 0x03)

typedef struct mqtt_sub_entry {
    mqtt_bytes filter;
    uint8_t options; /* 3.1.1: requested QoS only */
} mqtt_sub_entry;

typedef struct mqtt_subscribe {
    uint16_t packet_id;
    mqtt_props props;
    uint32_t count;
    mqtt_bytes entries;          /* decoded: the raw, validated payload */
    const mqtt_sub_entry *list;  /* encode: if non-NULL, used instead */
} mqtt_subscribe;

typedef struct mqtt_unsubscribe {
    uint16_t packet_id;
    mqtt_props props;
    uint32_t count;
    mqtt_bytes entries;          /* decoded: the raw, validated payload */
    const mqtt_bytes *list;      /* encode: if non-NULL, used instead */
} mqtt_unsubscribe;

/* SUBACK and UNSUBACK (3.1.1 UNSUBACK has no reason codes). */
typedef struct mqtt_suback {
    uint16_t packet_id;
    mqtt_props props;
    uint32_t count;
    const uint8_t *reasons;
} mqtt_suback;

/* DISCONNECT and AUTH. */
typedef struct mqtt_reason_packet {
    uint8_t reason;
    mqtt_props props;
} mqtt_reason_packet;

typedef struct mqtt_packet {
    uint8_t type;  /* enum mqtt_packet_type */
    uint8_t flags; /* low nibble of the fixed header as received */
    union {
        mqtt_connect connect;
        mqtt_connack connack;
        mqtt_publish publish;
        mqtt_ack ack;              /* PUBACK, PUBREC, PUBREL, PUBCOMP */
        mqtt_subscribe subscribe;
        mqtt_suback suback;        /* SUBACK, UNSUBACK */
        mqtt_unsubscribe unsubscribe;
        mqtt_reason_packet disconnect;
        mqtt_reason_packet auth;
    } u;
} mqtt_packet;

#endif
