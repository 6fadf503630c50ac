/*
 * tools/iothub/http.c — requests to the service API through libcurl (see
 * http.h).
 *
 * The easy handle lives in the run context and is reset before each request
 * so settings never leak from one call into the next, while libcurl keeps
 * the connection alive between them. Response bodies are collected into a
 * growable buffer and parsed with jansson only after the status is known.
 */
#include "tools/iothub/http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/iothub/output.h"
#include "tools/iothub/token.h"
#include "util/crypto.h"

#define HTTP_CONNECT_TIMEOUT_S 10L
#define HTTP_TOTAL_TIMEOUT_S 120L

typedef struct body_buffer {
    char *data;
    size_t len, cap;
    bool failed;
} body_buffer;

/* libcurl write callback: appends to the body buffer, keeping a NUL. */
static size_t collect_body(char *chunk, size_t size, size_t count, void *user)
{
    body_buffer *b = user;
    size_t n = size * count;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = true;
            return 0;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, chunk, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

bool http_path_append_id(char *path, size_t cap, const char *id)
{
    size_t used = strlen(path);
    if (used >= cap)
        return false;
    return crypto_url_encode(id, strlen(id), path + used, cap - used) > 0 || !*id;
}

bool http_identity_path(char *path, size_t cap, const char *root, const char *device,
                        const char *module, const char *suffix)
{
    snprintf(path, cap, "%s", root);
    if (!http_path_append_id(path, cap, device))
        return false;
    if (module) {
        size_t used = strlen(path);
        if ((size_t)snprintf(path + used, cap - used, "/modules/") >= cap - used ||
            !http_path_append_id(path, cap, module))
            return false;
    }
    size_t used = strlen(path);
    return (size_t)snprintf(path + used, cap - used, "%s", suffix) < cap - used;
}

/* {url}{path}?api-version=...[&query] into a malloc'd string. */
static char *build_url(const cli_ctx *ctx, const http_request *req)
{
    const char *query = req->query ? req->query : "";
    size_t n = strlen(ctx->settings.url) + strlen(req->path) + strlen(query) + 64;
    char *url = malloc(n);
    if (url)
        snprintf(url, n, "%s%s?api-version=%s%s%s", ctx->settings.url, req->path, CLI_API_VERSION,
                 *query ? "&" : "", query);
    return url;
}

/* Adds "Name: value" to the list; false when out of memory. */
static bool add_header(struct curl_slist **headers, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line)
        return false;
    snprintf(line, n, "%s: %s", name, value);
    struct curl_slist *grown = curl_slist_append(*headers, line);
    free(line);
    if (!grown)
        return false;
    *headers = grown;
    return true;
}

/* Authorization, conditions and content type for one request. */
static bool build_headers(const cli_ctx *ctx, const http_request *req, struct curl_slist **out)
{
    const cli_connection *conn = &ctx->settings.connection;
    char *token = cli_service_token(conn->host, conn->policy, conn->key,
                                    (uint64_t)time(NULL) + CLI_SERVICE_TOKEN_SECONDS);
    bool ok = token && add_header(out, "Authorization", token) &&
              add_header(out, "Accept", "application/json") && add_header(out, "Expect", "") &&
              (!req->if_match || add_header(out, "If-Match", req->if_match)) &&
              (!req->if_none_match || add_header(out, "If-None-Match", req->if_none_match)) &&
              (!req->body || add_header(out, "Content-Type", "application/json; charset=utf-8"));
    for (size_t i = 0; ok && req->headers && req->headers[i]; i++) {
        struct curl_slist *grown = curl_slist_append(*out, req->headers[i]);
        ok = grown != NULL;
        *out = grown ? grown : *out;
    }
    free(token);
    return ok;
}

/* The checks every request needs before it can be sent. */
static int check_ready(cli_ctx *ctx)
{
    if (!ctx->settings.url[0])
        return cli_fail(ctx, "no service URL: give --url URL, set IOTHUB_URL, or put url=... in %s",
                        ctx->settings.config_path[0] ? ctx->settings.config_path
                                                     : "~/.config/iothub/config");
    if (!ctx->settings.have_connection)
        return cli_fail(ctx, "no connection string: give --connection-string CS or --data DIR, "
                             "set IOTHUB_CONNECTION_STRING, or put connection-string=... in the "
                             "config file");
    if (!ctx->curl)
        ctx->curl = curl_easy_init();
    return ctx->curl ? CLI_EXIT_OK : cli_fail(ctx, "cannot initialise libcurl");
}

/* Configures the easy handle for req; false when out of memory. */
static bool prepare(CURL *curl, const http_request *req, const char *url, const char *payload,
                    size_t payload_len, struct curl_slist *headers, body_buffer *body,
                    char *errbuf)
{
    curl_easy_reset(curl);
    bool ok = curl_easy_setopt(curl, CURLOPT_URL, url) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect_body) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_WRITEDATA, body) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, HTTP_CONNECT_TIMEOUT_S) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_TIMEOUT,
                           req->timeout_s > 0 ? req->timeout_s : HTTP_TOTAL_TIMEOUT_S) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(curl, CURLOPT_USERAGENT, "iothub-cli") == CURLE_OK;
    if (payload) {
        ok &= curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload) == CURLE_OK;
        ok &= curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)payload_len) == CURLE_OK;
    } else if (!strcmp(req->method, "GET")) {
        ok &= curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    }
    return ok;
}

/* Turns the outcome of curl_easy_perform into an exit code and a reply. */
static int finish(cli_ctx *ctx, CURLcode rc, const char *errbuf, const body_buffer *body,
                  json_t **reply)
{
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_COULDNT_CONNECT)
        return cli_fail(ctx, "cannot connect to %s (is iothubd running with --http?): %s",
                        ctx->settings.url, why);
    if (rc != CURLE_OK)
        return cli_fail(ctx, "request to %s failed: %s", ctx->settings.url, why);
    if (body->failed)
        return cli_fail(ctx, "out of memory reading the response");
    long status = 0;
    curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        char line[700];
        out_service_error(status, body->data, body->len, line, sizeof line);
        return cli_fail(ctx, "%s", line);
    }
    if (!reply || body->len == 0)
        return CLI_EXIT_OK;
    json_error_t jerr;
    *reply = json_loadb(body->data, body->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    return *reply ? CLI_EXIT_OK
                  : cli_fail(ctx, "the service sent a response that is not JSON: %s", jerr.text);
}

int http_call(cli_ctx *ctx, const http_request *req, json_t **reply)
{
    if (reply)
        *reply = NULL;
    int rc = check_ready(ctx);
    if (rc != CLI_EXIT_OK)
        return rc;
    char errbuf[CURL_ERROR_SIZE] = "";
    body_buffer body = {0};
    struct curl_slist *headers = NULL;
    char *url = build_url(ctx, req);
    char *json = req->body && !req->raw_body ? json_dumps(req->body, JSON_COMPACT | JSON_ENCODE_ANY)
                                             : NULL;
    const char *payload = req->raw_body ? req->raw_body : json;
    size_t payload_len = req->raw_body ? req->raw_len : json ? strlen(json) : 0;
    if (!url || (req->body && !payload) || !build_headers(ctx, req, &headers) ||
        !prepare(ctx->curl, req, url, payload, payload_len, headers, &body, errbuf))
        rc = cli_fail(ctx, "cannot prepare the request (bad key in the connection string?)");
    else
        rc = finish(ctx, curl_easy_perform(ctx->curl), errbuf, &body, reply);
    curl_slist_free_all(headers);
    free(json);
    free(url);
    free(body.data);
    return rc;
}

void http_close(cli_ctx *ctx)
{
    if (ctx->curl)
        curl_easy_cleanup(ctx->curl);
    ctx->curl = NULL;
}
