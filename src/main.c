/*
 * main.c — the iothubd server: configuration, listeners, run, shutdown.
 *
 * Start-up is all-or-nothing: any setting, file or port that is not right
 * stops the process with one line on stderr and a non-zero exit status
 * before a single client is served (../shared/spec/cli.md).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "broker/open_app.h"
#include "config.h"
#include "net/server.h"
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
    signal(SIGPIPE, SIG_IGN);
    if (!cfg.mqtt && !cfg.mqtts)
        cfg.mqtt = "127.0.0.1:1883";
    if (cfg.data_dir && !prepare_data_dir(cfg.data_dir, err, sizeof err))
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
    broker_app bapp;
    open_app_bind(app, &bapp);
    broker *b = broker_new(server, &cfg.limits, &bapp);
    if (!b)
        return fail("out of memory");

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
    log_info("iothubd ready: %u event loops, open topics %s, anonymous %s",
             net_server_loop_count(server), cfg.open_topics ? "on" : "off",
             cfg.allow_anonymous ? "allowed" : "refused");
    rc = net_server_run(server);
    log_info("iothubd stopped");
    broker_free(b);
    net_server_free(server);
    open_app_free(app);
    config_free(&cfg);
    return rc == 0 ? 0 : 1;
}
