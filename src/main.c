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

static int fail(const char *what)
{
    fprintf(stderr, "iothubd: %s\n", what);
    return 2;
}

int main(int argc, char **argv)
{
    char err[512];
    iothubd_config cfg;
    int rc = config_load(&cfg, argc, argv, err, sizeof err);
    if (rc != 0)
        return rc > 0 ? 0 : fail(err);
    log_set_level(cfg.log_level);
    /* SQLite allocates and frees a 64 KiB statement-journal chunk for every
     * store request's savepoint; with glibc's defaults each free shrinks
     * the store thread's arena again (one madvise per request). Free memory
     * up to 4 MiB stays in each arena instead, and blocks below 512 KiB (a
     * maximal telemetry body with its copies) come from the arenas rather
     * than their own mmap, which a fixed trim threshold would otherwise
     * pin at 128 KiB. See docs/PERFORMANCE.md. */
    mallopt(M_MMAP_THRESHOLD, 512 * 1024);
    mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    signal(SIGPIPE, SIG_IGN);
    /* SIGINT/SIGTERM are read by loop 0 from a signalfd (net/server.c);
     * block them before any thread exists (the store's is created below),
     * or the kernel may hand one to a thread that would die of it. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    if (!cfg.mqtt && !cfg.mqtts)
        cfg.mqtt = "127.0.0.1:1883";
    if (!prepare_data_dir(cfg.data_dir, err, sizeof err))
        return fail(err);
    store *st = open_store(&cfg, err, sizeof err);
    if (!st)
        return fail(err);
    hub_registry *reg = registry_open(st, err, sizeof err);
    if (!reg)
        return fail(err);
    if (!write_owner_connstr(cfg.data_dir, cfg.hostname, reg, err, sizeof err))
        return fail(err);

    open_app_config app_cfg = {
        .open_topics = cfg.open_topics,
        .allow_anonymous = cfg.allow_anonymous,
        .password_file = cfg.password_file,
        .acl_file = cfg.acl_file,
    };
    open_app *app = open_app_new(&app_cfg, err, sizeof err);
    if (!app)
        return fail(err);
    net_server *server = net_server_new(cfg.threads, err, sizeof err);
    if (!server)
        return fail(err);
    hub_twins *twins = twins_open(st, reg, err, sizeof err);
    if (!twins)
        return fail(err);
    hub_telemetry *tel = telemetry_new(st);
    if (!tel)
        return fail("out of memory");
    /* One throttle for the devices' and the service's operations alike. */
    hub_throttle *throttle = hub_throttle_new(&cfg.throttle);
    if (!throttle)
        return fail("out of memory");
    /* The hub is the broker's application; the open broker its delegate. */
    hub_config hub_cfg = {
        .hostname = cfg.hostname,
        .server_limits = &cfg.limits,
        .open_topics = cfg.open_topics,
        .open_clients = cfg.open_topics || cfg.allow_anonymous || cfg.password_file,
        .throttle = throttle,
    };
    hub *iothub = hub_new(&hub_cfg, reg, twins, tel, app);
    if (!iothub)
        return fail("out of memory");
    /* Command queues: loaded now; the hub delivers, the service sends. */
    cfg.c2d.default_ttl_ms =
        cfg.c2d_default_ttl_s > UINT32_MAX / 1000 ? UINT32_MAX : cfg.c2d_default_ttl_s * 1000u;
    hub_c2d *c2d = c2d_open(&cfg.c2d, st, reg, err, sizeof err);
    if (!c2d)
        return fail(err);
    hub_set_c2d(iothub, c2d);
    c2d_start(c2d, net_server_loop(server, 0));
    broker_app bapp;
    hub_bind(iothub, &bapp);
    broker *b = broker_new(server, &cfg.limits, &bapp);
    if (!b)
        return fail("out of memory");
    if (!hub_sessions_attach(b, st, err, sizeof err))
        return fail(err);

    int port = 0;
    if (cfg.mqtt && !broker_listen(b, cfg.mqtt, NULL, &port, err, sizeof err))
        return fail(err);
    if (cfg.mqtt)
        log_info("MQTT listening on %s (port %d)", cfg.mqtt, port);
    if (cfg.mqtts) {
        net_tls_config tls = {cfg.cert_file, cfg.key_file, cfg.ca_file};
        if (!broker_listen(b, cfg.mqtts, &tls, &port, err, sizeof err))
            return fail(err);
        log_info("MQTT over TLS listening on %s (port %d)", cfg.mqtts, port);
    }
    service_config scfg;
    service_config_defaults(&scfg);
    scfg.hostname = cfg.hostname;
    service *svc = service_new(server, reg, &scfg);
    if (!svc)
        return fail("out of memory");
    service_set_twins(svc, twins);
    service_set_c2d(svc, c2d);
    service_set_methods(svc, hub_methods_of(iothub));
    service_set_throttle(svc, throttle);
    service_set_telemetry(svc, tel, st);
    if (!start_service(svc, &cfg, err, sizeof err))
        return fail(err);
    log_info("iothubd ready: %u event loops, open topics %s, anonymous %s",
             net_server_loop_count(server), cfg.open_topics ? "on" : "off",
             cfg.allow_anonymous ? "allowed" : "refused");
    rc = net_server_run(server);
    log_info("iothubd stopped");
    /* The loops have stopped: commit what they queued, then run the
     * completions the store posted to them (on this thread: the loop
     * threads are gone). Their clients are gone, so they only free. */
    store_close(st);
    net_server_drain(server);
    service_free(svc);
    broker_free(b);
    net_server_free(server);
    hub_free(iothub);
    c2d_free(c2d);
    hub_throttle_free(throttle);
    telemetry_free(tel);
    twins_free(twins);
    registry_free(reg);
    open_app_free(app);
    config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
