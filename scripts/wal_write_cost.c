/*
 * wal_write_cost.c — what writing WAL frames into the page cache costs,
 * SQLite's way (two pwrites per frame: the 24-byte header, then the 4 KiB
 * page) against one write per batch of frames (store/wal_gather.c's way).
 *
 *   cc -O2 -Wall -Wextra -o /tmp/wal-write-cost scripts/wal_write_cost.c
 *   /tmp/wal-write-cost [DIR] [FRAMES_PER_WRITE]    (default: . and 15)
 *
 * It overwrites a 20,000-frame file in DIR (written and synced once
 * first, as a WAL is reused after it restarts) three times each way and
 * prints the process CPU time per frame. Nothing is synced while timing:
 * the fsync is the same either way. The file is removed at the end.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { FRAMES = 20000, HEADER = 24, PAGE = 4096, FRAME = HEADER + PAGE, MAX_PER_WRITE = 64 };

static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int write_frames_singly(int fd, const char *header, const char *page)
{
    for (int i = 0; i < FRAMES; i++) {
        off_t off = (off_t)i * FRAME;
        if (pwrite(fd, header, HEADER, off) != HEADER ||
            pwrite(fd, page, PAGE, off + HEADER) != PAGE)
            return -1;
    }
    return 0;
}

static int write_frames_gathered(int fd, const char *header, const char *page, int per_write)
{
    struct iovec iov[2 * MAX_PER_WRITE];
    for (int k = 0; k < per_write; k++) {
        iov[2 * k] = (struct iovec){(void *)header, HEADER};
        iov[2 * k + 1] = (struct iovec){(void *)page, PAGE};
    }
    for (int i = 0; i < FRAMES; i += per_write) {
        int n = FRAMES - i < per_write ? FRAMES - i : per_write;
        if (pwritev(fd, iov, 2 * n, (off_t)i * FRAME) != (ssize_t)n * FRAME)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    int per_write = argc > 2 ? atoi(argv[2]) : 15;
    if (per_write < 1 || per_write > MAX_PER_WRITE) {
        fprintf(stderr, "frames per write: 1 to %d\n", MAX_PER_WRITE);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/wal-write-cost.tmp", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    static char header[HEADER], page[PAGE];
    memset(header, 1, sizeof header);
    memset(page, 2, sizeof page);
    int rc = write_frames_singly(fd, header, page) || fdatasync(fd);
    for (int round = 0; round < 3 && rc == 0; round++) {
        double t0 = cpu_seconds();
        rc |= write_frames_singly(fd, header, page);
        double t1 = cpu_seconds();
        rc |= write_frames_gathered(fd, header, page, per_write);
        double t2 = cpu_seconds();
        printf("two pwrites a frame: %.2f us/frame; one write per %d frames: %.2f us/frame\n",
               (t1 - t0) / FRAMES * 1e6, per_write, (t2 - t1) / FRAMES * 1e6);
    }
    close(fd);
    unlink(path);
    if (rc)
        perror("write");
    return rc ? 1 : 0;
}
