/*
 * tools/bench/hub.c — see hub.h.
 */
#include "tools/bench/hub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/crypto.h"
#include "util/sas.h"

#define PROVISION_CONNECTIONS 16
#define HTTP_TIMEOUT_S 30
#define KEY_LABEL "iothub-bench"

static bool copy_field(char *dst, size_t cap, const char *v, size_t len)
{
    if (len == 0 || len >= cap)
        return false;
    memcpy(dst, v, len);
    dst[len] = '\0';
    return true;
}

bool bench_connstr_parse(const char *text, bench_connstr *out)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (eq) {
            size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
            bool ok = true;
            if (klen == 8 && !strncmp(p, "HostName", 8))
                ok = copy_field(out->host, sizeof out->host, eq + 1, vlen);
            else if (klen == 19 && !strncmp(p, "SharedAccessKeyName", 19))
                ok = copy_field(out->policy, sizeof out->policy, eq + 1, vlen);
            else if (klen == 15 && !strncmp(p, "SharedAccessKey", 15))
                ok = copy_field(out->key, sizeof out->key, eq + 1, vlen);
            if (!ok)
                return false;
        }
        p += len;
        if (*p == ';')
            p++;
    }
    return out->host[0] && out->key[0];
}

bool bench_url_parse(const char *url, char *host, size_t cap, uint16_t *port)
{
    if (strncmp(url, "http://", 7) != 0)
        return false;
    const char *h = url + 7;
    const char *colon = strchr(h, ':');
    if (!colon || !copy_field(host, cap, h, (size_t)(colon - h)))
        return false;
    char *end;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || v == 0 || v > 65535 || (*end && strcmp(end, "/") != 0))
        return false;
    *port = (uint16_t)v;
    return true;
}

void bench_device_key(const char *id, char out[48])
{
    uint8_t mac[CRYPTO_SHA256_LEN];
    crypto_hmac_sha256((const uint8_t *)KEY_LABEL, strlen(KEY_LABEL), (const uint8_t *)id,
                       strlen(id), mac);
    crypto_b64_encode(mac, sizeof mac, out, 48);
}

/* ---- a tiny blocking HTTP/1.1 client ------------------------------------- */

typedef struct provision_job {
    const bench_options *opt;
    struct sockaddr_in addr;
    const char *host;        /* Host header */
    const char *token;       /* Authorization */
    unsigned count;
    unsigned first;          /* this worker does first, first + step, ... */
    unsigned step;
    char (*keys)[48];
    char err[256];           /* empty on success */
} provision_job;

static int connect_blocking(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = HTTP_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Reads one response; returns its status code, or -1 on a socket error or
 * a response this client does not understand. */
static int read_response(int fd)
{
    char buf[8192];
    size_t len = 0;
    char *head_end = NULL;
    while (!head_end) {
        if (len == sizeof buf - 1)
            return -1;
        ssize_t r = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        head_end = strstr(buf, "\r\n\r\n");
    }
    int status;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    size_t body = 0;
    for (char *line = strstr(buf, "\r\n"); line && line < head_end; line = strstr(line + 2, "\r\n"))
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
            body = strtoul(line + 17, NULL, 10);
    size_t have = len - (size_t)(head_end + 4 - buf);
    while (have < body) {
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return status;
}

/* PUT /devices/{id} with both keys set to `key`. */
static int put_device(int fd, const provision_job *job, const char *id, const char *key)
{
    char body[512], req[2048];
    int blen = snprintf(body, sizeof body,
                        "{\"deviceId\":\"%s\",\"status\":\"enabled\",\"authentication\":{\"type\":"
                        "\"sas\",\"symmetricKey\":{\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}}",
                        id, key, key);
    int rlen = snprintf(req, sizeof req,
                        "PUT /devices/%s?api-version=2021-04-12 HTTP/1.1\r\nHost: %s\r\n"
                        "Authorization: %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n\r\n%s",
                        id, job->host, job->token, blen, body);
    if (rlen <= 0 || (size_t)rlen >= sizeof req || !send_all(fd, req, (size_t)rlen))
        return -1;
    return read_response(fd);
}

static void *provision_worker(void *arg)
{
    provision_job *job = arg;
    int fd = -1;
    for (unsigned i = job->first; i < job->count && !job->err[0]; i += job->step) {
        char id[128];
        snprintf(id, sizeof id, "%s%06u", job->opt->device_prefix, i);
        bench_device_key(id, job->keys[i]);
        for (int attempt = 0; attempt < 2; attempt++) {
            if (fd < 0)
                fd = connect_blocking(&job->addr);
            int status = fd >= 0 ? put_device(fd, job, id, job->keys[i]) : -1;
            if (status == 200 || status == 201)
                break;
            if (fd >= 0)
                close(fd);
            fd = -1;
            if (status > 0 || attempt == 1)
                snprintf(job->err, sizeof job->err, "PUT /devices/%s: %s %d", id,
                         status > 0 ? "HTTP" : "connection failed, errno", status > 0 ? status : errno);
            if (status > 0)
                break;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

bool bench_hub_provision(const bench_options *o, const bench_connstr *cs, unsigned count,
                         char (*keys)[48], char *err, size_t errlen)
{
    char host[256];
    uint16_t port;
    struct sockaddr_in addr = {.sin_family = AF_INET};
    if (!bench_url_parse(o->hub_url, host, sizeof host, &port) ||
        inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "--hub: expected http://IPv4:PORT, got %s", o->hub_url);
        return false;
    }
    addr.sin_port = htons(port);
    char *token = sas_token_build(cs->host, cs->key, cs->policy[0] ? cs->policy : NULL,
                                  (uint64_t)time(NULL) + 3600);
    if (!token) {
        snprintf(err, errlen, "--connstr: the key is not base64");
        return false;
    }
    unsigned workers = count < PROVISION_CONNECTIONS ? count : PROVISION_CONNECTIONS;
    provision_job jobs[PROVISION_CONNECTIONS];
    pthread_t tids[PROVISION_CONNECTIONS];
    unsigned started = 0;
    for (unsigned w = 0; w < workers; w++) {
        jobs[w] = (provision_job){o, addr, cs->host, token, count, w, workers, keys, ""};
        if (pthread_create(&tids[w], NULL, provision_worker, &jobs[w]) != 0)
            break;
        started++;
    }
    bool ok = started == workers;
    if (!ok)
        snprintf(err, errlen, "could not start provisioning threads");
    for (unsigned w = 0; w < started; w++) {
        pthread_join(tids[w], NULL);
        if (ok && jobs[w].err[0]) {
            snprintf(err, errlen, "%s", jobs[w].err);
            ok = false;
        }
    }
    free(token);
    return ok;
}
