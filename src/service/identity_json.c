/*
 * service/identity_json.c — hub_identity <-> IoT Hub's Device (and Module)
 * JSON of service-rest.md, with jansson.
 *
 * Output always has every field, in IoT Hub's shape: absent text is null,
 * times are ISO 8601 UTC with milliseconds and "0001-01-01T00:00:00Z" for
 * "never", the etag is unquoted. Modules carry "moduleId" as well.
 *
 * Input is what a client may set: status, statusReason, authentication
 * (type, symmetric keys, thumbprints) and capabilities.iotEdge. deviceId /
 * moduleId may be present but must then name the identity of the path.
 * Fields the server owns (etag, generationId, connectionState, times,
 * counts) are ignored, as IoT Hub does, so a client can PUT back what it
 * got from GET. Every field present must have the right JSON type (null
 * counts as absent); anything else is ArgumentInvalid with the field's
 * name. Deeper checks (id alphabet, key and thumbprint formats, type
 * consistency) are registry_validate's.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "service/internal.h"
#include "util/json_load.h"
#include "util/time.h"

static const char *const auth_type_names[] = {
    [HUB_AUTH_SAS] = "sas",
    [HUB_AUTH_SELF_SIGNED] = "selfSigned",
    [HUB_AUTH_CA] = "certificateAuthority",
    [HUB_AUTH_NONE] = "none",
};

/* A JSON string, or null for "". */
static json_t *text_or_null(const char *s)
{
    return s && *s ? json_string(s) : json_null();
}

static json_t *time_value(int64_t ms)
{
    char buf[32];
    time_iso8601_ms(ms, buf);
    return json_string(buf);
}

json_t *identity_to_json(const hub_identity *id)
{
    const char *type = (unsigned)id->auth_type < sizeof auth_type_names / sizeof auth_type_names[0]
                           ? auth_type_names[id->auth_type]
                           : "none";
    json_t *o = json_object();
    json_object_set_new(o, "deviceId", json_string(id->device_id));
    if (id->module_id[0])
        json_object_set_new(o, "moduleId", json_string(id->module_id));
    json_object_set_new(o, "generationId", json_string(id->generation_id));
    json_object_set_new(o, "etag", json_string(id->etag));
    json_object_set_new(o, "connectionState",
                        json_string(id->connected ? "Connected" : "Disconnected"));
    json_object_set_new(o, "status", json_string(id->enabled ? "enabled" : "disabled"));
    json_object_set_new(o, "statusReason", text_or_null(id->status_reason));
    json_object_set_new(o, "connectionStateUpdatedTime",
                        time_value(id->connection_state_updated_ms));
    json_object_set_new(o, "statusUpdatedTime", time_value(id->status_updated_ms));
    json_object_set_new(o, "lastActivityTime", time_value(id->last_activity_ms));
    json_object_set_new(o, "cloudToDeviceMessageCount", json_integer(id->c2d_message_count));
    json_t *auth = json_pack("{s:s, s:{s:o, s:o}, s:{s:o, s:o}}", "type", type, "symmetricKey",
                             "primaryKey", text_or_null(id->primary_key), "secondaryKey",
                             text_or_null(id->secondary_key), "x509Thumbprint",
                             "primaryThumbprint", text_or_null(id->primary_thumbprint),
                             "secondaryThumbprint", text_or_null(id->secondary_thumbprint));
    json_object_set_new(o, "authentication", auth ? auth : json_null());
    json_object_set_new(o, "capabilities", json_pack("{s:b}", "iotEdge", id->iot_edge));
    return o;
}

/* ---- input --------------------------------------------------------------- */

typedef struct parse_ctx {
    char *err;
    size_t errlen;
} parse_ctx;

static bool bad(parse_ctx *pc, const char *fmt, const char *field)
{
    snprintf(pc->err, pc->errlen, fmt, field);
    return false;
}

/* Optional string member copied into out[cap]; null or absent leaves out
 * untouched. */
static bool take_string(parse_ctx *pc, json_t *obj, const char *key, char *out, size_t cap)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return bad(pc, "'%s' must be a string", key);
    if (json_string_length(v) >= cap)
        return bad(pc, "'%s' is too long", key);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad(pc, "'%s' contains a NUL character", key);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return true;
}

/* Optional object member: *out NULL when absent or null. */
static bool take_object(parse_ctx *pc, json_t *obj, const char *key, json_t **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_object(v))
        return bad(pc, "'%s' must be an object", key);
    *out = v;
    return true;
}

/* An id member that, when given, must equal the path's. */
static bool check_id(parse_ctx *pc, json_t *obj, const char *key, const char *expected)
{
    char given[HUB_ID_MAX + 2] = "";
    if (!take_string(pc, obj, key, given, sizeof given))
        return false;
    if (given[0] && strcmp(given, expected) != 0)
        return bad(pc, "'%s' in the body does not match the path", key);
    return true;
}

static bool take_status(parse_ctx *pc, json_t *obj, hub_identity *out)
{
    char status[16] = "";
    if (!take_string(pc, obj, "status", status, sizeof status))
        return false;
    if (!status[0] || strcasecmp(status, "enabled") == 0)
        out->enabled = true;
    else if (strcasecmp(status, "disabled") == 0)
        out->enabled = false;
    else
        return bad(pc, "'%s' must be \"enabled\" or \"disabled\"", "status");
    return take_string(pc, obj, "statusReason", out->status_reason, sizeof out->status_reason);
}

static bool take_auth(parse_ctx *pc, json_t *obj, hub_identity *out)
{
    json_t *auth, *keys = NULL, *thumbs = NULL;
    if (!take_object(pc, obj, "authentication", &auth))
        return false;
    out->auth_type = HUB_AUTH_SAS;
    if (!auth)
        return true;
    char type[32] = "";
    if (!take_string(pc, auth, "type", type, sizeof type))
        return false;
    if (type[0]) {
        size_t i = 0, n = sizeof auth_type_names / sizeof auth_type_names[0];
        while (i < n && strcasecmp(type, auth_type_names[i]) != 0)
            i++;
        if (i == n)
            return bad(pc, "'%s' must be sas, selfSigned, certificateAuthority or none",
                       "authentication.type");
        out->auth_type = (hub_auth_type)i;
    }
    if (!take_object(pc, auth, "symmetricKey", &keys) ||
        !take_object(pc, auth, "x509Thumbprint", &thumbs))
        return false;
    if (keys && (!take_string(pc, keys, "primaryKey", out->primary_key, sizeof out->primary_key) ||
                 !take_string(pc, keys, "secondaryKey", out->secondary_key,
                              sizeof out->secondary_key)))
        return false;
    if (thumbs &&
        (!take_string(pc, thumbs, "primaryThumbprint", out->primary_thumbprint,
                      sizeof out->primary_thumbprint) ||
         !take_string(pc, thumbs, "secondaryThumbprint", out->secondary_thumbprint,
                      sizeof out->secondary_thumbprint)))
        return false;
    return true;
}

static bool take_capabilities(parse_ctx *pc, json_t *obj, hub_identity *out)
{
    json_t *caps;
    if (!take_object(pc, obj, "capabilities", &caps))
        return false;
    json_t *edge = caps ? json_object_get(caps, "iotEdge") : NULL;
    if (!edge || json_is_null(edge))
        return true;
    if (!json_is_boolean(edge))
        return bad(pc, "'%s' must be true or false", "capabilities.iotEdge");
    out->iot_edge = json_is_true(edge);
    return true;
}

bool identity_from_json(const uint8_t *body, size_t len, const char *device_id,
                        const char *module_id, hub_identity *out, char *err, size_t errlen)
{
    parse_ctx pc = {err, errlen};
    memset(out, 0, sizeof *out);
    snprintf(out->device_id, sizeof out->device_id, "%s", device_id);
    snprintf(out->module_id, sizeof out->module_id, "%s", module_id ? module_id : "");
    json_error_t jerr;
    json_t *obj = json_load_untrusted(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        snprintf(err, errlen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return false;
    }
    bool ok = json_is_object(obj) ? true : bad(&pc, "the body must be a JSON %s", "object");
    ok = ok && check_id(&pc, obj, "deviceId", device_id);
    if (ok && module_id && module_id[0])
        ok = check_id(&pc, obj, "moduleId", module_id);
    else if (ok)
        ok = check_id(&pc, obj, "moduleId", "");
    ok = ok && take_status(&pc, obj, out) && take_auth(&pc, obj, out) &&
         take_capabilities(&pc, obj, out);
    json_decref(obj);
    return ok;
}
