/*
 * tools/iothub/config.h — where the iothub tool finds the service.
 *
 * Two things are needed: the service URL and a shared access policy
 * connection string ("HostName=..;SharedAccessKeyName=..;SharedAccessKey=..").
 * Each is taken from the first source that has it:
 *
 *   URL:                --url, $IOTHUB_URL, config "url"
 *   connection string:  --connection-string, --data DIR (DIR/owner.connstr),
 *                       $IOTHUB_CONNECTION_STRING, config "connection-string",
 *                       config "data" (DIR/owner.connstr)
 *
 * The config file is $IOTHUB_CONFIG if set (then it must exist), else
 * $XDG_CONFIG_HOME/iothub/config or ~/.config/iothub/config (optional).
 * Format: one "key=value" per line; blank lines and lines starting with '#'
 * are ignored; spaces around key and value are trimmed; keys are url,
 * connection-string and data; anything else is an error naming the line.
 *
 * The file is read only when flags and environment leave something unset.
 * A source that is present but bad (malformed connection string, unreadable
 * file) is an error; a value found nowhere is left empty and reported only
 * when a command needs it. The environment is passed in (cli_sources), so
 * everything here is testable without touching the process's own.
 */
#ifndef IOTHUB_CLI_CONFIG_H
#define IOTHUB_CLI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define CLI_URL_MAX 1024
#define CLI_PATH_MAX 4096
#define CLI_FIELD_MAX 512

typedef struct cli_connection {
    char host[CLI_FIELD_MAX];   /* HostName */
    char policy[CLI_FIELD_MAX]; /* SharedAccessKeyName */
    char key[CLI_FIELD_MAX];    /* SharedAccessKey, base64 */
} cli_connection;

typedef struct cli_config_file {
    char url[CLI_URL_MAX];
    char connection_string[CLI_URL_MAX];
    char data[CLI_PATH_MAX];
} cli_config_file;

/* Inputs to resolution; any may be NULL (absent). */
typedef struct cli_sources {
    const char *url_flag, *connstr_flag, *data_flag;
    const char *url_env, *connstr_env, *config_env, *xdg_config_home, *home;
} cli_sources;

typedef struct cli_settings {
    char url[CLI_URL_MAX];         /* "" when found nowhere; no trailing '/' */
    bool have_connection;
    cli_connection connection;
    char config_path[CLI_PATH_MAX]; /* the config file consulted, for messages */
} cli_settings;

/* Parses a service connection string. HostName, SharedAccessKeyName and
 * SharedAccessKey are required; key names are case-insensitive; other
 * fields are ignored. */
bool cli_connstr_parse(const char *text, cli_connection *out, char *err, size_t errlen);

/* Parses the text of a config file. */
bool cli_config_parse(const char *text, cli_config_file *out, char *err, size_t errlen);

/* Reads a small text file into buf (NUL-terminated). False if it cannot be
 * read or does not fit; errno tells why. */
bool cli_read_text_file(const char *path, char *buf, size_t cap);

/* Resolves URL and connection string as described above. */
bool cli_settings_resolve(const cli_sources *src, cli_settings *out, char *err, size_t errlen);

#endif
