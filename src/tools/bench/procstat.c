/*
 * tools/bench/procstat.c — see procstat.h. /proc/PID/stat's second field
 * (the command name) may contain spaces and parentheses, so the fields are
 * counted from the last ')'; utime and stime are fields 14 and 15.
 */
#include "tools/bench/procstat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool read_rss_kb(int pid, uint64_t *out)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            found = sscanf(line + 6, "%lu", (unsigned long *)out) == 1;
    fclose(f);
    return found;
}

static bool read_cpu_s(int pid, double *out, double *sys_out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    /* after ")": field 3 (state) is the first; utime is field 14 */
    unsigned long utime = 0, stime = 0;
    char *tok = strtok(p + 1, " ");
    for (int field = 3; tok && field <= 15; field++, tok = strtok(NULL, " ")) {
        if (field == 14)
            utime = strtoul(tok, NULL, 10);
        if (field == 15)
            stime = strtoul(tok, NULL, 10);
    }
    long ticks = sysconf(_SC_CLK_TCK);
    double hz = (double)(ticks > 0 ? ticks : 100);
    *out = (double)(utime + stime) / hz;
    *sys_out = (double)stime / hz;
    return true;
}

proc_sample proc_sample_take(int pid)
{
    proc_sample s = {0};
    if (pid <= 0)
        return s;
    s.ok = read_rss_kb(pid, &s.rss_kb) && read_cpu_s(pid, &s.cpu_s, &s.cpu_sys_s);
    return s;
}
