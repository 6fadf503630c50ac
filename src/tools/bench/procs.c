/*
 * tools/bench/procs.c — the arithmetic and the pipe I/O of a run split
 * over processes (see procs.h); the fork and the conversation itself are
 * in main.c, next to the single-process run they mirror.
 *
 * Shares are contiguous slices rather than every n-th client so each
 * worker's client numbers, and therefore the device keys it needs, are
 * one range of the parent's key array.
 */
#include <errno.h>
#include <unistd.h>

#include "tools/bench/procs.h"

unsigned bench_procs_count(bench_scenario s, unsigned clients, unsigned requested,
                           unsigned long file_limit)
{
    if (!bench_scenario_splits(s) || clients == 0)
        return 1;
    if (requested)
        return requested < clients ? requested : clients;
    if (file_limit <= BENCH_FD_MARGIN)
        return 1; /* nothing fits anywhere; one process reports the errors */
    unsigned long per = file_limit - BENCH_FD_MARGIN;
    unsigned long n = (clients + per - 1) / per;
    return n > 64 ? 64 : (unsigned)n;
}

void bench_procs_share(unsigned clients, unsigned n, unsigned i, unsigned *first,
                       unsigned *count)
{
    unsigned base = clients / n, extra = clients % n;
    *count = base + (i < extra ? 1 : 0);
    *first = i * base + (i < extra ? i : extra);
}

/* part of total, in proportion count / clients, at least 1. */
static unsigned share_of(unsigned total, unsigned count, unsigned clients)
{
    unsigned long long v = (unsigned long long)total * count / clients;
    return v ? (unsigned)v : 1;
}

bench_options bench_procs_worker_options(const bench_options *o, unsigned n, unsigned i)
{
    bench_options w = *o;
    unsigned first, count;
    bench_procs_share(o->clients, n, i, &first, &count);
    w.clients = count;
    w.first_client = o->first_client + first;
    w.processes = 1;
    w.rate = o->rate * (double)count / (double)o->clients;
    w.concurrency = share_of(o->concurrency, count, o->clients);
    w.threads = (o->threads + n - 1) / n;
    return w;
}

/* Moves exactly len bytes through fd in the given direction, retrying
 * short transfers and EINTR; false on an error or end of file. */
static bool transfer_all(int fd, char *p, size_t len, bool writing)
{
    while (len) {
        ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

bool bench_write_all(int fd, const void *buf, size_t len)
{
    return transfer_all(fd, (char *)buf, len, true);
}

bool bench_read_all(int fd, void *buf, size_t len)
{
    return transfer_all(fd, buf, len, false);
}
