/*
 * tools/bench/procs.h — splitting one run's clients over several
 * load-generator processes.
 *
 * Why processes and not more threads: every client is a socket, and one
 * process may hold at most RLIMIT_NOFILE of them (20,000 hard here), so a
 * run with more clients than that needs more processes. The parent forks
 * N workers after the hub devices exist; worker i runs the ordinary engine
 * on a contiguous slice of the clients (global numbers first..first+count,
 * so client ids, topics and source addresses are the same as in one
 * process) and a share of --rate and --concurrency.
 *
 * Protocol, over one pipe each way per worker (same binary on both ends,
 * so structs go as raw bytes):
 *   worker → parent  bench_proc_hello   when its setup is over
 *   parent → worker  'g'                start measuring (all at once)
 *   parent → worker  's'                stop (after the parent's duration)
 *   worker → parent  bench_stats        its counters and histograms
 * The parent merges the statistics (bench_stats_merge: sums, exact for the
 * histograms too) and samples the server itself, so a split run reports
 * exactly what a single process would. A worker whose pipe closes (the
 * parent died) stops; a worker that dies makes the run fail.
 */
#ifndef IOTHUBD_BENCH_PROCS_H
#define IOTHUBD_BENCH_PROCS_H

#include <stdbool.h>
#include <stddef.h>

#include "tools/bench/engine.h"
#include "tools/bench/options.h"

/* File descriptors a process needs besides its clients' sockets (epoll
 * sets, stdio, the HTTP side, the pipes). */
#define BENCH_FD_MARGIN 64u

typedef struct bench_proc_hello {
    unsigned ready;
    unsigned failed;
} bench_proc_hello;

/* How many processes a run uses: `requested` when non-zero (at most
 * `clients`), else the fewest whose share of the clients fits in
 * `file_limit` minus BENCH_FD_MARGIN each; 1 for scenarios that do not
 * split. */
unsigned bench_procs_count(bench_scenario s, unsigned clients, unsigned requested,
                           unsigned long file_limit);

/* Worker i of n: its first client and how many (the first clients % n
 * workers take one more). */
void bench_procs_share(unsigned clients, unsigned n, unsigned i, unsigned *first,
                       unsigned *count);

/* The options worker i of n runs with: its clients, first_client, and its
 * share of --rate and --concurrency (at least 1) and of --threads (at
 * least 1); everything else as given. */
bench_options bench_procs_worker_options(const bench_options *o, unsigned n, unsigned i);

/* Whole-buffer I/O on a pipe, retrying on EINTR and short transfers;
 * false on an error or end of file. */
bool bench_write_all(int fd, const void *buf, size_t len);
bool bench_read_all(int fd, void *buf, size_t len);

#endif
