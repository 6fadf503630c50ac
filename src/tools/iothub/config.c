/*
 * tools/iothub/config.c — connection strings, the config file, and the
 * precedence between flags, environment and file (see config.h).
 *
 * Every parser works on text already in memory; the only I/O is reading
 * small files whole. Fixed-size buffers keep ownership trivial; a value that
 * does not fit is an error rather than a silent truncation.
 */
#include "tools/iothub/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util/crypto.h"

/* ---- small text helpers ---------------------------------------------------------- */

/* Copies [s, s+n) into dst (capacity cap) with surrounding whitespace
 * removed. False when it does not fit. */
static bool copy_trimmed(char *dst, size_t cap, const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n >= cap)
        return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

static bool copy_string(char *dst, size_t cap, const char *s)
{
    return copy_trimmed(dst, cap, s, strlen(s));
}

static bool present(const char *s)
{
    return s && *s;
}

/* ---- connection strings ----------------------------------------------------------- */

/* Stores one "key=value" field if it is one the tool uses. */
static bool take_connstr_field(const char *field, size_t n, cli_connection *out, char *err,
                               size_t errlen)
{
    const char *equals = memchr(field, '=', n);
    if (!equals) {
        snprintf(err, errlen, "connection string field '%.*s' has no '='", (int)n, field);
        return false;
    }
    const char *value = equals + 1;
    size_t value_len = n - (size_t)(value - field);
    char key[32];
    if (!copy_trimmed(key, sizeof key, field, (size_t)(equals - field)))
        return true; /* longer than any name we use: not ours */
    char *slot = NULL;
    if (!strcasecmp(key, "HostName"))
        slot = out->host;
    else if (!strcasecmp(key, "SharedAccessKeyName"))
        slot = out->policy;
    else if (!strcasecmp(key, "SharedAccessKey"))
        slot = out->key;
    if (slot && !copy_trimmed(slot, CLI_FIELD_MAX, value, value_len)) {
        snprintf(err, errlen, "connection string field '%s' is too long", key);
        return false;
    }
    return true;
}

bool cli_connstr_parse(const char *text, cli_connection *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char probe[2];
        bool blank = copy_trimmed(probe, sizeof probe, p, n) && probe[0] == '\0';
        if (!blank && !take_connstr_field(p, n, out, err, errlen))
            return false;
        p += n + (end ? 1 : 0);
    }
    const char *missing = !out->host[0]     ? "HostName"
                          : !out->policy[0] ? "SharedAccessKeyName"
                          : !out->key[0]    ? "SharedAccessKey"
                                            : NULL;
    if (missing) {
        snprintf(err, errlen, "connection string has no %s (a service policy connection string "
                              "is needed)", missing);
        return false;
    }
    uint8_t raw[CLI_FIELD_MAX];
    size_t raw_len;
    if (!crypto_b64_decode(out->key, strlen(out->key), raw, sizeof raw, &raw_len)) {
        snprintf(err, errlen, "connection string's SharedAccessKey is not valid base64");
        return false;
    }
    return true;
}

/* ---- config file ------------------------------------------------------------------ */

/* Stores one non-blank, non-comment config line. */
static bool take_config_line(const char *line, size_t n, int lineno, cli_config_file *out,
                             char *err, size_t errlen)
{
    const char *equals = memchr(line, '=', n);
    char key[32];
    if (!equals || !copy_trimmed(key, sizeof key, line, (size_t)(equals - line))) {
        snprintf(err, errlen, "config line %d: expected key=value", lineno);
        return false;
    }
    char *slot = NULL;
    size_t cap = 0;
    if (!strcmp(key, "url")) {
        slot = out->url;
        cap = sizeof out->url;
    } else if (!strcmp(key, "connection-string")) {
        slot = out->connection_string;
        cap = sizeof out->connection_string;
    } else if (!strcmp(key, "data")) {
        slot = out->data;
        cap = sizeof out->data;
    } else {
        snprintf(err, errlen, "config line %d: unknown key '%s' (known: url, connection-string, "
                              "data)", lineno, key);
        return false;
    }
    const char *value = equals + 1;
    if (!copy_trimmed(slot, cap, value, n - (size_t)(value - line))) {
        snprintf(err, errlen, "config line %d: value too long", lineno);
        return false;
    }
    return true;
}

bool cli_config_parse(const char *text, cli_config_file *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int lineno = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        lineno++;
        const char *s = p;
        while (s < p + n && isspace((unsigned char)*s))
            s++;
        bool skip = s == p + n || *s == '#';
        if (!skip && !take_config_line(p, n, lineno, out, err, errlen))
            return false;
        p += n + (end ? 1 : 0);
    }
    return true;
}

bool cli_read_text_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, cap - 1, f);
    bool fits = !ferror(f) && fgetc(f) == EOF;
    int saved = ferror(f) ? EIO : EFBIG;
    fclose(f);
    if (!fits) {
        errno = saved;
        return false;
    }
    buf[n] = '\0';
    return true;
}

/* ---- resolution --------------------------------------------------------------------- */

/* Picks the config file path; *required is true when the user named it. */
static bool choose_config_path(const cli_sources *src, cli_settings *out, bool *required)
{
    int n = 0;
    *required = present(src->config_env);
    if (*required)
        n = snprintf(out->config_path, sizeof out->config_path, "%s", src->config_env);
    else if (present(src->xdg_config_home))
        n = snprintf(out->config_path, sizeof out->config_path, "%s/iothub/config",
                     src->xdg_config_home);
    else if (present(src->home))
        n = snprintf(out->config_path, sizeof out->config_path, "%s/.config/iothub/config",
                     src->home);
    return n >= 0 && (size_t)n < sizeof out->config_path;
}

/* Loads the config file if there is one; a missing optional file is empty. */
static bool load_config_file(const cli_sources *src, cli_settings *out, cli_config_file *file,
                             char *err, size_t errlen)
{
    bool required;
    if (!choose_config_path(src, out, &required) || !out->config_path[0])
        return true;
    char text[3 * CLI_PATH_MAX];
    if (!cli_read_text_file(out->config_path, text, sizeof text)) {
        if (!required && errno == ENOENT)
            return true;
        snprintf(err, errlen, "cannot read config file %s: %s", out->config_path, strerror(errno));
        return false;
    }
    char why[256];
    if (!cli_config_parse(text, file, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", out->config_path, why);
        return false;
    }
    return true;
}

/* Parses a connection string, naming its origin in the error. */
static bool take_connstr(const char *text, const char *origin, cli_settings *out, char *err,
                         size_t errlen)
{
    char why[256];
    if (!cli_connstr_parse(text, &out->connection, why, sizeof why)) {
        snprintf(err, errlen, "%s: %s", origin, why);
        return false;
    }
    out->have_connection = true;
    return true;
}

/* Reads DIR/owner.connstr as the connection string. */
static bool take_data_dir(const char *dir, cli_settings *out, char *err, size_t errlen)
{
    char path[CLI_PATH_MAX + 32];
    char text[CLI_URL_MAX];
    snprintf(path, sizeof path, "%s/owner.connstr", dir);
    if (!cli_read_text_file(path, text, sizeof text)) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return false;
    }
    return take_connstr(text, path, out, err, errlen);
}

static bool take_url(const char *url, const char *origin, cli_settings *out, char *err,
                     size_t errlen)
{
    if (!copy_string(out->url, sizeof out->url, url) ||
        (strncmp(out->url, "http://", 7) && strncmp(out->url, "https://", 8))) {
        snprintf(err, errlen, "%s: service URL must start with http:// or https://", origin);
        return false;
    }
    size_t n = strlen(out->url);
    while (n && out->url[n - 1] == '/')
        out->url[--n] = '\0';
    return true;
}

static bool resolve_url(const cli_sources *src, const cli_config_file *file, cli_settings *out,
                        char *err, size_t errlen)
{
    if (present(src->url_flag))
        return take_url(src->url_flag, "--url", out, err, errlen);
    if (present(src->url_env))
        return take_url(src->url_env, "IOTHUB_URL", out, err, errlen);
    if (file->url[0])
        return take_url(file->url, out->config_path, out, err, errlen);
    return true;
}

static bool resolve_connection(const cli_sources *src, const cli_config_file *file,
                               cli_settings *out, char *err, size_t errlen)
{
    if (present(src->connstr_flag))
        return take_connstr(src->connstr_flag, "--connection-string", out, err, errlen);
    if (present(src->data_flag))
        return take_data_dir(src->data_flag, out, err, errlen);
    if (present(src->connstr_env))
        return take_connstr(src->connstr_env, "IOTHUB_CONNECTION_STRING", out, err, errlen);
    if (file->connection_string[0])
        return take_connstr(file->connection_string, out->config_path, out, err, errlen);
    if (file->data[0])
        return take_data_dir(file->data, out, err, errlen);
    return true;
}

bool cli_settings_resolve(const cli_sources *src, cli_settings *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    bool url_given = present(src->url_flag) || present(src->url_env);
    bool connection_given =
        present(src->connstr_flag) || present(src->data_flag) || present(src->connstr_env);
    cli_config_file file;
    memset(&file, 0, sizeof file);
    bool file_needed = !url_given || !connection_given;
    return (!file_needed || load_config_file(src, out, &file, err, errlen)) &&
           resolve_url(src, &file, out, err, errlen) &&
           resolve_connection(src, &file, out, err, errlen);
}
