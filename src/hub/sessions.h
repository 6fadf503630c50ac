/*
 * hub/sessions.h — keeps the broker's persistent MQTT sessions in the store.
 */
#ifndef IOTHUBD_HUB_SESSIONS_H
#define IOTHUBD_HUB_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>

#include "broker/broker.h"

struct store;

/* Restores the stored sessions into the broker, then has it write
 * sessions through the store. Before net_server_run. */
bool hub_sessions_attach(broker *b, struct store *st, char *err, size_t errlen);

#endif
