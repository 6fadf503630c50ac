/*
 * tools/bench/procstat.h — samples another process's resident memory, CPU
 * time and wait for a CPU, and the whole machine's CPU time, from /proc, so
 * a run can report what the server spent on it (the server is a separate
 * process; the load generator only reads) and how busy the machine was.
 *
 * The machine figures are there because the server, the load generator and
 * the kernel's loopback work share the same CPUs: a latency tail at a paced
 * rate is CPU queueing when the machine is (nearly) all busy and the
 * server's threads spend much of their runnable time waiting for a CPU.
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
    bool wait_ok;        /* the kernel keeps schedstat (CONFIG_SCHED_INFO) */
    double wait_s;       /* runnable but waiting for a CPU, summed over its threads */
} proc_sample;

/* /proc/stat's "cpu" line, in CPU-seconds summed over every CPU. */
typedef struct machine_sample {
    bool ok;
    unsigned cpus;       /* "cpuN" lines */
    double user_s;       /* user + nice */
    double system_s;
    double softirq_s;    /* irq + softirq: on loopback, most of TCP receive */
    double iowait_s;
    double steal_s;      /* taken by the hypervisor for other guests */
    double idle_s;
} machine_sample;

/* Reads PROC_ROOT/PID/status, PROC_ROOT/PID/stat and the schedstat of each
 * thread under PROC_ROOT/PID/task; ok = false when pid is 0 or the process
 * is gone (wait_ok alone is false when schedstat is missing). */
proc_sample proc_sample_take_at(const char *proc_root, int pid);
proc_sample proc_sample_take(int pid); /* from /proc */

/* Reads PROC_ROOT/stat; ok = false when it cannot be read or parsed. */
machine_sample machine_sample_take_at(const char *proc_root);
machine_sample machine_sample_take(void); /* from /proc */

/* end - start, field by field (cpus from end); ok only when both are. */
machine_sample machine_sample_delta(const machine_sample *start, const machine_sample *end);
/* The busy part of a sample or delta: user, system and softirq. */
double machine_busy_s(const machine_sample *m);

#endif
