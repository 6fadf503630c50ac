/*
 * tools/iothub/monitor.c — `iothub monitor`: print device-to-cloud
 * telemetry as it arrives, like `az iot hub monitor-events`, by following
 * the service's GET /events/stream (Server-Sent Events).
 *
 * The stream is one long libcurl transfer. The write callback splits the
 * body into lines and assembles SSE messages ("id:", "data:" lines up to a
 * blank line; ":" comments are the server's keep-alives and are skipped);
 * each complete message is one event in the JSON the service renders, which
 * is printed at once and flushed, so `iothub monitor | grep` works. A reply
 * other than 200 is collected whole and reported like every other command
 * (the service's ErrorCode and text).
 *
 * Stopping: --timeout S ends the run after S seconds, Ctrl-C at once; both
 * exit 0 (the user asked for it). The transfer's progress callback, which
 * libcurl calls about once a second even when nothing arrives, checks both.
 * The Ctrl-C flag is the one piece of process-wide state: a signal handler
 * can reach nothing else. A stream that the service ends is a failure
 * (exit 1): monitoring was meant to go on.
 *
 * Output: per event "DEVICE[/MODULE]  ENQUEUED-TIME  partition P seq N" and
 * the body on the next line, indented (bodies that are not UTF-8 come as
 * base64 and say so); --props adds the system and application properties;
 * --json prints one compact JSON object per line instead
 * ({"deviceId","moduleId"?,"enqueuedTime","partition","sequenceNumber",
 * "body"|"bodyBase64", and with --props "systemProperties","properties"}).
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/iothub/cli.h"
#include "tools/iothub/http.h"
#include "tools/iothub/output.h"
#include "tools/iothub/token.h"
#include "util/crypto.h"

#define MONITOR_TIMEOUT_MAX (30u * 24u * 3600u)
#define MONITOR_LINE_MAX (2u * 1024u * 1024u) /* an event's data line (256 KiB body, escaped) */

static volatile sig_atomic_t interrupted; /* set by SIGINT only */

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct monitor {
    cli_ctx *ctx;
    bool props;
    time_t deadline;   /* 0 = none */
    bool timed_out;
    long status;       /* HTTP status, once known */
    char *line;        /* the current, incomplete line */
    size_t line_len, line_cap;
    char *data;        /* the current message's data lines, joined by '\n' */
    size_t data_len, data_cap;
    bool failed;       /* out of memory or a line too long */
    unsigned long events;
} monitor;

/* ---- growable text ------------------------------------------------------------- */

static bool append(char **buf, size_t *len, size_t *cap, const char *text, size_t n)
{
    if (*len + n + 1 > MONITOR_LINE_MAX)
        return false;
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 1024;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *p = realloc(*buf, ncap);
        if (!p)
            return false;
        *buf = p;
        *cap = ncap;
    }
    memcpy(*buf + *len, text, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

/* ---- printing ------------------------------------------------------------------ */

/* Prints "  name: value" for every string member of obj. */
static void print_properties(FILE *out, const char *title, const json_t *obj)
{
    const char *key;
    json_t *value;
    fprintf(out, "  %s:\n", title);
    json_object_foreach((json_t *)obj, key, value)
        fprintf(out, "    %s: %s\n", key, json_is_string(value) ? json_string_value(value) : "?");
}

static void print_human(monitor *m, const json_t *ev)
{
    FILE *out = m->ctx->out;
    const json_t *sys = json_object_get(ev, "systemProperties");
    const char *dev = out_json_str(sys, "iothub-connection-device-id");
    const char *mod = out_json_str(sys, "iothub-connection-module-id");
    const char *body = out_json_str(ev, "body");
    const char *b64 = out_json_str(ev, "bodyBase64");
    fprintf(out, "%s%s%s  %s  partition %lld seq %lld\n", dev ? dev : "?", mod ? "/" : "",
            mod ? mod : "", out_json_str(ev, "enqueuedTime") ? out_json_str(ev, "enqueuedTime")
                                                              : "?",
            (long long)json_integer_value(json_object_get(ev, "partition")),
            (long long)json_integer_value(json_object_get(ev, "sequenceNumber")));
    if (body)
        fprintf(out, "  %s\n", body);
    else if (b64)
        fprintf(out, "  (binary, base64) %s\n", b64);
    if (m->props) {
        print_properties(out, "system properties", sys);
        print_properties(out, "application properties", json_object_get(ev, "properties"));
    }
}

static void print_json(monitor *m, const json_t *ev)
{
    const json_t *sys = json_object_get(ev, "systemProperties");
    json_t *o = json_object();
    const char *mod = out_json_str(sys, "iothub-connection-module-id");
    json_object_set(o, "deviceId", json_object_get(sys, "iothub-connection-device-id"));
    if (mod)
        json_object_set_new(o, "moduleId", json_string(mod));
    static const char *const copied[] = {"enqueuedTime", "partition", "sequenceNumber", "body",
                                         "bodyBase64"};
    for (size_t i = 0; i < sizeof copied / sizeof copied[0]; i++)
        if (json_object_get(ev, copied[i]))
            json_object_set(o, copied[i], json_object_get(ev, copied[i]));
    if (m->props) {
        json_object_set(o, "systemProperties", (json_t *)sys);
        json_object_set(o, "properties", json_object_get(ev, "properties"));
    }
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        fprintf(m->ctx->out, "%s\n", text);
    free(text);
    json_decref(o);
}

/* One complete SSE message's data: an event. */
static void dispatch_event(monitor *m)
{
    if (m->data_len == 0)
        return; /* a message with no data (e.g. only an id) */
    json_t *ev = json_loadb(m->data, m->data_len, JSON_ALLOW_NUL, NULL);
    if (json_is_object(ev)) {
        if (m->ctx->json)
            print_json(m, ev);
        else
            print_human(m, ev);
        fflush(m->ctx->out);
        m->events++;
    } else {
        fprintf(m->ctx->err, "iothub: skipped an event that is not JSON\n");
    }
    json_decref(ev);
    m->data_len = 0;
}

/* One SSE line (without its end of line). */
static bool handle_line(monitor *m, const char *line, size_t n)
{
    if (n == 0) {
        dispatch_event(m);
        return true;
    }
    if (line[0] == ':')
        return true; /* comment: keep-alive */
    if (n >= 5 && strncmp(line, "data:", 5) == 0) {
        size_t skip = n > 5 && line[5] == ' ' ? 6 : 5;
        if (m->data_len && !append(&m->data, &m->data_len, &m->data_cap, "\n", 1))
            return false;
        return append(&m->data, &m->data_len, &m->data_cap, line + skip, n - skip);
    }
    return true; /* id:, event:, retry: — nothing to do for a one-shot reader */
}

/* ---- libcurl callbacks --------------------------------------------------------- */

static size_t on_body(char *chunk, size_t size, size_t count, void *user)
{
    monitor *m = user;
    size_t n = size * count;
    if (!m->status)
        curl_easy_getinfo(m->ctx->curl, CURLINFO_RESPONSE_CODE, &m->status);
    if (m->status != 200) { /* an error body: keep it whole for the report */
        if (!append(&m->data, &m->data_len, &m->data_cap, chunk, n))
            m->failed = true;
        return m->failed ? 0 : n;
    }
    for (size_t i = 0; i < n; i++) {
        if (chunk[i] != '\n') {
            if (!append(&m->line, &m->line_len, &m->line_cap, chunk + i, 1)) {
                m->failed = true;
                return 0;
            }
            continue;
        }
        size_t len = m->line_len;
        if (len && m->line[len - 1] == '\r')
            len--;
        if (!handle_line(m, m->line ? m->line : "", len)) {
            m->failed = true;
            return 0;
        }
        m->line_len = 0;
    }
    return n;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    monitor *m = user;
    if (m->deadline && time(NULL) >= m->deadline)
        m->timed_out = true;
    return interrupted || m->timed_out; /* non-zero aborts the transfer */
}

/* ---- the command ----------------------------------------------------------------- */

/* Appends "&name=encoded(value)" to url (capacity cap). */
static bool add_param(char *url, size_t cap, const char *name, const char *value)
{
    size_t used = strlen(url);
    int n = snprintf(url + used, cap - used, "&%s=", name);
    if (n < 0 || (size_t)n >= cap - used)
        return false;
    return http_path_append_id(url, cap, value);
}

/* The stream URL from the options; non-zero (after the message) on misuse. */
static int stream_url(cli_ctx *ctx, const cli_invocation *inv, char *url, size_t cap)
{
    const char *device = cli_value(inv, "--device");
    const char *partition = cli_value(inv, "--partition");
    const char *from = cli_value(inv, "--from");
    const char *group = cli_value(inv, "--consumer-group");
    bool from_start = cli_flag(inv, "--from-start");
    uint64_t v;
    if (from_start && (from || partition))
        return cli_usage_error(ctx, "--from-start and --partition/--from exclude each other");
    if ((from != NULL) != (partition != NULL))
        return cli_usage_error(ctx, "--partition and --from go together");
    if ((partition && !cli_parse_u64(partition, UINT32_MAX, &v)) ||
        (from && !cli_parse_u64(from, INT64_MAX, &v)))
        return cli_usage_error(ctx, "--partition and --from take a number");
    if (device && !*device)
        return cli_usage_error(ctx, "the device id must not be empty");
    snprintf(url, cap, "%s/events/stream?api-version=%s", ctx->settings.url, CLI_API_VERSION);
    bool ok = (!device || add_param(url, cap, "deviceId", device)) &&
              (!partition || add_param(url, cap, "partition", partition)) &&
              (!from || add_param(url, cap, "from", from)) &&
              (!from_start || add_param(url, cap, "from", "start")) &&
              (!group || add_param(url, cap, "consumerGroup", group));
    return ok ? CLI_EXIT_OK : cli_usage_error(ctx, "option values too long");
}

static bool prepare(cli_ctx *ctx, monitor *m, const char *url, struct curl_slist *headers,
                    char *errbuf)
{
    CURL *curl = ctx->curl;
    curl_easy_reset(curl);
    bool ok = curl_easy_setopt(curl, CURLOPT_URL, url) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEDATA, m) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_XFERINFODATA, m) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_USERAGENT, "iothub-cli") == CURLE_OK;
    return ok;
}

/* Exit status for how the transfer ended. */
static int outcome(cli_ctx *ctx, monitor *m, CURLcode rc, const char *errbuf)
{
    if (m->status && m->status != 200) {
        char line[700];
        out_service_error(m->status, m->data, m->data_len, line, sizeof line);
        return cli_fail(ctx, "%s", line);
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK && (interrupted || m->timed_out))
        return CLI_EXIT_OK;
    if (m->failed)
        return cli_fail(ctx, "out of memory or an oversized event in the stream");
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT)
        return cli_fail(ctx, "cannot connect to %s (is iothubd running with --http?): %s",
                        ctx->settings.url, why);
    if (rc != CURLE_OK)
        return cli_fail(ctx, "the event stream from %s failed: %s", ctx->settings.url, why);
    return cli_fail(ctx, "the service ended the event stream");
}

static int monitor_run(cli_ctx *ctx, const cli_invocation *inv)
{
    uint64_t timeout = 0;
    const char *t = cli_value(inv, "--timeout");
    if (t && (!cli_parse_u64(t, MONITOR_TIMEOUT_MAX, &timeout) || timeout == 0))
        return cli_usage_error(ctx, "--timeout takes 1..%u seconds", MONITOR_TIMEOUT_MAX);
    if (!ctx->settings.url[0] || !ctx->settings.have_connection)
        return cli_fail(ctx, "no service URL or connection string: give --url and "
                             "--connection-string (or --data DIR)");
    char url[4096];
    int rc = stream_url(ctx, inv, url, sizeof url);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (!ctx->curl && !(ctx->curl = curl_easy_init()))
        return cli_fail(ctx, "cannot initialise libcurl");
    const cli_connection *conn = &ctx->settings.connection;
    /* the token must outlive a long stream: it is checked once, at the start */
    char *token = cli_service_token(conn->host, conn->policy, conn->key,
                                    (uint64_t)time(NULL) + CLI_SERVICE_TOKEN_SECONDS);
    char *auth = token ? malloc(strlen(token) + 16) : NULL;
    struct curl_slist *headers = NULL;
    if (auth) {
        sprintf(auth, "Authorization: %s", token);
        headers = curl_slist_append(curl_slist_append(NULL, auth), "Accept: text/event-stream");
    }
    monitor m = {.ctx = ctx, .props = cli_flag(inv, "--props"),
                 .deadline = timeout ? time(NULL) + (time_t)timeout : 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    if (!headers || !prepare(ctx, &m, url, headers, errbuf)) {
        rc = cli_fail(ctx, "cannot prepare the request (bad key in the connection string?)");
    } else {
        void (*previous)(int) = signal(SIGINT, on_sigint);
        rc = outcome(ctx, &m, curl_easy_perform(ctx->curl), errbuf);
        signal(SIGINT, previous);
    }
    curl_slist_free_all(headers);
    free(auth);
    free(token);
    free(m.line);
    free(m.data);
    return rc;
}

static const cli_option monitor_options[] = {
    {"--device", "ID", "only this device's events"},
    {"--props", NULL, "also print system and application properties"},
    {"--from-start", NULL, "begin with the oldest retained event (default: new events only)"},
    {"--partition", "P", "follow one partition (with --from)"},
    {"--from", "SEQ", "begin at this sequence number of --partition"},
    {"--consumer-group", "G", "resume at the group's checkpoint and advance it"},
    {"--timeout", "S", "stop after S seconds (default: until Ctrl-C)"},
    {NULL, NULL, NULL},
};

const cli_command cli_monitor_commands[] = {
    {"monitor", NULL,
     "[--device ID] [--props] [--from-start | --partition P --from SEQ] [--consumer-group G] "
     "[--timeout S]",
     "print device-to-cloud telemetry as it arrives", 0, 0, monitor_options, monitor_run},
};
const size_t cli_monitor_command_count = sizeof cli_monitor_commands / sizeof cli_monitor_commands[0];
