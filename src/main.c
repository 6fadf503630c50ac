/*
 * main.c — the iothubd server: configuration, store, registry, listeners,
 * run, shutdown.
 *
 * Start-up is all-or-nothing: any setting, file or port that is not right
 * stops the process with one line on stderr and a non-zero exit status
 * before a single client is served (../shared/spec/cli.md).
 *
 * Order matters at both ends: the store opens first (the registry loads
 * from it) and closes last, after the loops have stopped, so every write a
 * loop queued is committed before the process exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/open_app.h"
#include "config.h"
#include "hub/hub.h"
#include "hub/methods.h"
#include "hub/registry.h"
#include "hub/sessions.h"
#include "net/server.h"
#include "service/service.h"
#include "store/store.h"
#include "util/log.h"

/* Creates the data directory if needed and checks that it is writable. */
static bool prepare_data_dir(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "data directory %s: %s", dir, strerror(errno));
        return false;
    }
    if (access(dir, R_OK | W_OK | X_OK) != 0) {
        snprintf(err, errlen, "data directory %s: %s", dir, strerror(errno));
        return false;
    }
    return true;
}

/* Writes DIR/owner.connstr (mode 0600) unless it exists: the iothubowner
 * connection string that the command line and people start from. */
static bool write_owner_connstr(const char *dir, const char *hostname, hub_registry *reg,
                                char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/owner.connstr", dir);
    if (access(path, F_OK) == 0)
        return true;
    hub_policy owner;
    if (!registry_policy_get(reg, "iothubowner", &owner)) {
        snprintf(err, errlen, "the store has no iothubowner policy");
        return false;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return false;
    }
    fprintf(f, "HostName=%s;SharedAccessKeyName=iothubowner;SharedAccessKey=%s\n", hostname,
            owner.primary_key);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
        return false;
    }
    log_info("wrote %s", path);
    return true;
}

static store *open_store(const iothubd_config *cfg, char *err, size_t errlen)
{
    store_config sc = {
        .dir = cfg->data_dir,
        .partitions = cfg->telemetry_partitions,
        .retention_ms = (int64_t)cfg->telemetry_retention_s * 1000,
        .retention_bytes = (int64_t)cfg->telemetry_retention_mb << 20,
        .commit_interval_us = cfg->commit_interval_us,
    };
    if (!store_durability_parse(cfg->durability, &sc.durability)) {
        snprintf(err, errlen, "--durability: expected fsync, os or none, not '%s'", cfg->durability);
        return NULL;
    }
    return store_open(&sc, err, errlen);
}

static bool start_service(service *svc, const iothubd_config *cfg, char *err, size_t errlen)
{
    int port = 0;
    if (cfg->http) {
        if (!service_listen(svc, cfg->http, NULL, &port, err, errlen))
            return false;
        log_info("service API listening on http://%s (port %d)", cfg->http, port);
    }
    if (cfg->https) {
        net_tls_config tls = {cfg->cert_file, cfg->key_file, cfg->ca_file};
        if (!service_listen(svc, cfg->https, &tls, &port, err, errlen))
            return false;
        log_info("service API listening on https://%s (port %d)", cfg->https, port);
    }
    return true;
}

/* Everything the running server is made of, in the order it is built;
 * torn down in reverse by iothubd_free (which also cleans up after a
 * start-up that stopped half-way). */
typedef struct iothubd {
    iothubd_config cfg;
    store *st;
    hub_registry *reg;
    hub_twins *twins;
    hub_telemetry *tel;
    hub_throttle *throttle;
    hub_c2d *c2d;
    open_app *app;
    net_server *server;
    hub *iothub;
    broker *b;
    service *svc;
} iothubd;

/* Process-wide settings, before any thread exists. */
static void prepare_process(void)
{
    /* These matter only on glibc's malloc (sanitizer builds and
     * `make MALLOC_LIB=`); the default build links jemalloc, which ignores
     * them. SQLite allocates and frees a 64 KiB statement-journal chunk for
     * every store request's savepoint; with glibc's defaults each free
     * shrinks the store thread's arena again (one madvise per request).
     * Free memory up to 4 MiB stays in each arena instead, and blocks below
     * 512 KiB (a maximal telemetry body with its copies) come from the
     * arenas rather than their own mmap, which a fixed trim threshold would
     * otherwise pin at 128 KiB. See docs/PERFORMANCE.md. */
    mallopt(M_MMAP_THRESHOLD, 512 * 1024);
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    signal(SIGPIPE, SIG_IGN);
    /* Past a file-size limit (RLIMIT_FSIZE) a write must fail with EFBIG,
     * which the store reports as an error to the one request, rather than
     * kill the whole server. */
    signal(SIGXFSZ, SIG_IGN);
    /* SIGINT/SIGTERM are read by loop 0 from a signalfd (net/server.c);
     * block them before any thread exists (the store's is created next),
     * or the kernel may hand one to a thread that would die of it. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
}

/* The durable state: store, registry (+ owner.connstr), twins, telemetry,
 * command queues, and the throttle that guards them. */
static bool open_state(iothubd *d, char *err, size_t errlen)
{
    const iothubd_config *cfg = &d->cfg;
    if (!prepare_data_dir(cfg->data_dir, err, errlen) || !(d->st = open_store(cfg, err, errlen)) ||
        !(d->reg = registry_open(d->st, err, errlen)) ||
        !write_owner_connstr(cfg->data_dir, cfg->hostname, d->reg, err, errlen) ||
        !(d->twins = twins_open(d->st, d->reg, err, errlen)))
        return false;
    d->cfg.c2d.default_ttl_ms = cfg->c2d_default_ttl_s > UINT32_MAX / 1000
                                    ? UINT32_MAX : cfg->c2d_default_ttl_s * 1000u;
    if (!(d->c2d = c2d_open(&d->cfg.c2d, d->st, d->reg, err, errlen)))
        return false;
    /* One throttle for the devices' and the service's operations alike. */
    d->tel = telemetry_new(d->st);
    d->throttle = hub_throttle_new(&cfg->throttle);
    if (!d->tel || !d->throttle) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    return true;
}

/* The loops and what runs on them: the hub as the broker's application
 * (the open broker its delegate), the broker with its restored sessions,
 * the service API. Nothing listens yet. */
static bool build_engine(iothubd *d, char *err, size_t errlen)
{
    const iothubd_config *cfg = &d->cfg;
    open_app_config app_cfg = {
        .open_topics = cfg->open_topics,
        .allow_anonymous = cfg->allow_anonymous,
        .password_file = cfg->password_file,
        .acl_file = cfg->acl_file,
    };
    if (!(d->app = open_app_new(&app_cfg, err, errlen)) ||
        !(d->server = net_server_new(cfg->threads, err, errlen)))
        return false;
    hub_config hub_cfg = {
        .hostname = cfg->hostname,
        .server_limits = &cfg->limits,
        .open_topics = cfg->open_topics,
        .open_clients = cfg->open_topics || cfg->allow_anonymous || cfg->password_file,
        .throttle = d->throttle,
    };
    service_config scfg;
    service_config_defaults(&scfg);
    scfg.hostname = cfg->hostname;
    scfg.request_timeout_ms = cfg->http_request_timeout_ms; /* 0 keeps the default */
    scfg.idle_timeout_ms = cfg->http_idle_timeout_ms;
    broker_app bapp;
    d->iothub = hub_new(&hub_cfg, d->reg, d->twins, d->tel, d->app);
    if (d->iothub) {
        hub_bind(d->iothub, &bapp);
        d->b = broker_new(d->server, &cfg->limits, &bapp);
        hub_set_broker(d->iothub, d->b);
    }
    if (d->b)
        d->svc = service_new(d->server, d->reg, &scfg);
    if (!d->svc) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    /* Command queues: the hub delivers, the service sends. */
    hub_set_c2d(d->iothub, d->c2d);
    c2d_start(d->c2d, net_server_loop(d->server, 0));
    service_set_twins(d->svc, d->twins);
    service_set_c2d(d->svc, d->c2d);
    service_set_methods(d->svc, hub_methods_of(d->iothub));
    service_set_throttle(d->svc, d->throttle);
    service_set_telemetry(d->svc, d->tel, d->st);
    return hub_sessions_attach(d->b, d->st, err, errlen);
}

static bool start_listeners(iothubd *d, char *err, size_t errlen)
{
    const iothubd_config *cfg = &d->cfg;
    int port = 0;
    if (cfg->mqtt) {
        if (!broker_listen(d->b, cfg->mqtt, NULL, &port, err, errlen))
            return false;
        log_info("MQTT listening on %s (port %d)", cfg->mqtt, port);
    }
    if (cfg->mqtts) {
        net_tls_config tls = {cfg->cert_file, cfg->key_file, cfg->ca_file};
        if (!broker_listen(d->b, cfg->mqtts, &tls, &port, err, errlen))
            return false;
        log_info("MQTT over TLS listening on %s (port %d)", cfg->mqtts, port);
    }
    return start_service(d->svc, cfg, err, errlen);
}

/* Tears down whatever was built, in reverse order. The store closes after
 * the loops have stopped: it commits what they queued, and the completions
 * it posts to them run here (their clients are gone: they only free). */
static void iothubd_free(iothubd *d)
{
    if (d->st) {
        store_close(d->st);
        if (d->server)
            net_server_drain(d->server);
    }
    service_free(d->svc);
    broker_free(d->b);
    net_server_free(d->server);
    hub_free(d->iothub);
    c2d_free(d->c2d);
    hub_throttle_free(d->throttle);
    telemetry_free(d->tel);
    twins_free(d->twins);
    registry_free(d->reg);
    open_app_free(d->app);
    config_free(&d->cfg);
}

int main(int argc, char **argv)
{
    char err[512];
    iothubd d = {0};
    int rc = config_load(&d.cfg, argc, argv, err, sizeof err);
    if (rc != 0) {
        config_free(&d.cfg);
        if (rc > 0)
            return 0; /* --help */
        fprintf(stderr, "iothubd: %s\n", err);
        return 2;
    }
    log_set_level(d.cfg.log_level);
    prepare_process();
    if (!d.cfg.mqtt && !d.cfg.mqtts)
        d.cfg.mqtt = "127.0.0.1:1883";
    if (!open_state(&d, err, sizeof err) || !build_engine(&d, err, sizeof err) ||
        !start_listeners(&d, err, sizeof err)) {
        fprintf(stderr, "iothubd: %s\n", err);
        iothubd_free(&d);
        return 2;
    }
    log_info("iothubd ready: %u event loops, open topics %s, anonymous %s",
             net_server_loop_count(d.server), d.cfg.open_topics ? "on" : "off",
             d.cfg.allow_anonymous ? "allowed" : "refused");
    rc = net_server_run(d.server);
    log_info("iothubd stopped");
    iothubd_free(&d);
    return rc == 0 ? 0 : 1;
}
