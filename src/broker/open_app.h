/*
 * broker/open_app.h — the open broker: iothubd as a plain MQTT server.
 *
 * The first application of the broker (see broker.h): every PUBLISH is
 * routed to subscribers. Who may connect and what they may touch:
 *   - anonymous clients only with allow_anonymous;
 *   - a password file (`user:password` per line) checks User Name and
 *     Password, or answers the enhanced authentication method
 *     IOTHUBD-HMAC-SHA256 (challenge: 16 random bytes; response:
 *     HMAC-SHA256(password, challenge)), also for re-authentication;
 *   - an ACL file in Mosquitto's acl_file syntax (`user`, `topic`, `pattern`
 *     with %c and %u; read, write, readwrite, deny) decides subscribe and
 *     publish; without one, everything is allowed.
 * With open_topics off there is no open topic space: every SUBSCRIBE and
 * PUBLISH is refused (0x87), which is what a hub without it must do.
 */
#ifndef IOTHUBD_BROKER_OPEN_APP_H
#define IOTHUBD_BROKER_OPEN_APP_H

#include <stdbool.h>
#include <stddef.h>

#include "broker/broker.h"

#define OPEN_APP_AUTH_METHOD "IOTHUBD-HMAC-SHA256"

typedef struct open_app_config {
    bool open_topics;
    bool allow_anonymous;
    const char *password_file; /* NULL = none */
    const char *acl_file;      /* NULL = none */
} open_app_config;

typedef struct open_app open_app;

/* Loads the files; NULL with a one-line reason in errbuf on failure. */
open_app *open_app_new(const open_app_config *cfg, char *errbuf, size_t errlen);
void open_app_free(open_app *a);
/* Fills `out` with the callbacks of this application. */
void open_app_bind(open_app *a, broker_app *out);

#endif
