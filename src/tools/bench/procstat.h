/*
 * tools/bench/procstat.h — samples another process's resident memory and
 * CPU time from /proc, so a run can report what the server spent on it
 * (the server is a separate process; the load generator only reads).
 */
#ifndef IOTHUBD_BENCH_PROCSTAT_H
#define IOTHUBD_BENCH_PROCSTAT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct proc_sample {
    bool ok;
    uint64_t rss_kb;     /* VmRSS */
    double cpu_s;        /* utime + stime */
    double cpu_sys_s;    /* stime: system calls, and on loopback the peer's TCP receive */
} proc_sample;

/* Reads /proc/PID/status and /proc/PID/stat; ok = false when pid is 0 or
 * the process is gone. */
proc_sample proc_sample_take(int pid);

#endif
