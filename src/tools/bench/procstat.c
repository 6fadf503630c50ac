/*
 * tools/bench/procstat.c — see procstat.h.
 *
 * /proc/PID/stat's second field (the command name) may contain spaces and
 * parentheses, so its fields are counted from the last ')'; utime and
 * stime are fields 14 and 15, in clock ticks. Each thread's
 * /proc/PID/task/TID/schedstat holds three numbers, the second being the
 * nanoseconds it spent runnable on a run queue without running; summing
 * them over the threads alive at the sample leaves out threads that ended
 * between two samples, which for a server's long-lived threads is none.
 * /proc/stat's first line sums every CPU, also in clock ticks.
 */
#include "tools/bench/procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double ticks_per_s(void)
{
    long ticks = sysconf(_SC_CLK_TCK);
    return (double)(ticks > 0 ? ticks : 100);
}

/* Reads at most size - 1 bytes of a small /proc file, NUL-terminated. */
static bool read_small_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

static bool read_rss_kb(const char *root, int pid, uint64_t *out)
{
    char path[4096], line[256];
    snprintf(path, sizeof path, "%s/%d/status", root, pid);
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

static bool read_cpu_s(const char *root, int pid, double *out, double *sys_out)
{
    char path[4096], buf[1024];
    snprintf(path, sizeof path, "%s/%d/stat", root, pid);
    if (!read_small_file(path, buf, sizeof buf))
        return false;
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    /* after ")": field 3 (state) is the first; utime is field 14 */
    unsigned long utime = 0, stime = 0;
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p + 1, " ", &save); tok && field <= 15;
         tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 14)
            utime = strtoul(tok, NULL, 10);
        if (field == 15)
            stime = strtoul(tok, NULL, 10);
    }
    if (field <= 15)
        return false;
    *out = (double)(utime + stime) / ticks_per_s();
    *sys_out = (double)stime / ticks_per_s();
    return true;
}

/* Sums the run-queue wait of every thread of pid; false when the task
 * directory or every schedstat is unreadable. */
static bool read_wait_s(const char *root, int pid, double *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%d/task", root, pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    unsigned long long total_ns = 0;
    bool any = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char stat_path[4096 + 300], buf[128];
        unsigned long long run_ns, wait_ns;
        snprintf(stat_path, sizeof stat_path, "%s/%s/schedstat", path, e->d_name);
        if (read_small_file(stat_path, buf, sizeof buf) &&
            sscanf(buf, "%llu %llu", &run_ns, &wait_ns) == 2) {
            total_ns += wait_ns;
            any = true;
        }
    }
    closedir(d);
    *out = (double)total_ns / 1e9;
    return any;
}

proc_sample proc_sample_take_at(const char *proc_root, int pid)
{
    proc_sample s = {0};
    if (pid <= 0)
        return s;
    s.ok = read_rss_kb(proc_root, pid, &s.rss_kb) &&
           read_cpu_s(proc_root, pid, &s.cpu_s, &s.cpu_sys_s);
    s.wait_ok = s.ok && read_wait_s(proc_root, pid, &s.wait_s);
    return s;
}

proc_sample proc_sample_take(int pid)
{
    return proc_sample_take_at("/proc", pid);
}

machine_sample machine_sample_take_at(const char *proc_root)
{
    machine_sample m = {0};
    char path[4096], line[512];
    snprintf(path, sizeof path, "%s/stat", proc_root);
    FILE *f = fopen(path, "r");
    if (!f)
        return m;
    /* user nice system idle iowait irq softirq steal */
    unsigned long long v[8] = {0};
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "cpu ", 4) == 0)
            m.ok = sscanf(line + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                          &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) == 8;
        else if (strncmp(line, "cpu", 3) == 0 && line[3] >= '0' && line[3] <= '9')
            m.cpus++;
    }
    fclose(f);
    double hz = ticks_per_s();
    m.user_s = (double)(v[0] + v[1]) / hz;
    m.system_s = (double)v[2] / hz;
    m.idle_s = (double)v[3] / hz;
    m.iowait_s = (double)v[4] / hz;
    m.softirq_s = (double)(v[5] + v[6]) / hz;
    m.steal_s = (double)v[7] / hz;
    m.ok = m.ok && m.cpus > 0;
    return m;
}

machine_sample machine_sample_take(void)
{
    return machine_sample_take_at("/proc");
}

machine_sample machine_sample_delta(const machine_sample *start, const machine_sample *end)
{
    machine_sample d = {
        .ok = start->ok && end->ok,
        .cpus = end->cpus,
        .user_s = end->user_s - start->user_s,
        .system_s = end->system_s - start->system_s,
        .softirq_s = end->softirq_s - start->softirq_s,
        .iowait_s = end->iowait_s - start->iowait_s,
        .steal_s = end->steal_s - start->steal_s,
        .idle_s = end->idle_s - start->idle_s,
    };
    return d;
}

double machine_busy_s(const machine_sample *m)
{
    return m->user_s + m->system_s + m->softirq_s;
}
