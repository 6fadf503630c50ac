/*
 * store/wal_gather.c — a SQLite VFS shim that gathers a commit's WAL
 * writes into few system calls.
 *
 * SQLite writes each WAL frame with two pwrite calls, its 24-byte header
 * and then the page, so a commit of 18 pages costs 36 system calls. On
 * these machines most of a pwrite into the page cache is ext4's work per
 * call, not the copy: a frame cost 3.2-3.6 us of CPU written SQLite's way
 * and 0.95 us as one write per 15 frames (scripts/wal_write_cost.c,
 * docs/PERFORMANCE.md). This shim keeps contiguous WAL writes in a buffer
 * and passes them down as one write.
 *
 * When the buffer goes down (each case comes before anyone can need the
 * bytes):
 *   - when SQLite publishes a commit's frames to other connections: it
 *     writes every frame first, then the WAL index header, with a memory
 *     barrier (xShmBarrier on the database file) between the header's two
 *     copies. That is the guarantee: the file is complete before the
 *     checkpointer's connection can look for the frames, and before COMMIT
 *     returns. (SQLite skips the barrier only in locking_mode=EXCLUSIVE,
 *     which the store does not use: its connections share the WAL index
 *     through the VFS, below);
 *   - earlier, after the page of a commit frame, so that a failed write
 *     fails the COMMIT with its own error (a full disk stays SQLITE_FULL)
 *     instead of being found at the barrier, which cannot return one and
 *     only logs it. A frame header is the only 24-byte write to a WAL,
 *     and its bytes 4-7 (the database size after the commit) are non-zero
 *     only in a commit frame (sqlite.org/fileformat2.html). When SQLite
 *     has overwritten frames of the transaction in place, it rewrites
 *     their headers' checksums after the commit frame; the last of those
 *     goes down at the barrier, or at the sync that follows with
 *     durability "fsync", which does return an error;
 *   - before a write that does not continue the buffer, and when it would
 *     overflow;
 *   - before every other operation on the file (read, sync, truncate,
 *     size, file control, close): SQLite reads frames of the transaction
 *     under way back through the same file (pages it spilled, checksum
 *     rewrites).
 *
 * Files other than the WAL pass straight through. The shim sits on
 * SQLite's "unix-excl" VFS (store_wal_base_vfs), whose locks and shared
 * memory it forwards; the checkpointer's connection opens on that VFS
 * directly, so both see the same files and locks. "unix-excl" is the
 * default "unix" VFS except that the first lock a connection takes on the
 * database becomes one exclusive lock for the whole process, held until
 * the last connection closes: the process's connections then lock each
 * other in memory, and the WAL index lives in heap memory they share
 * instead of a mapped -shm file. That saves about six fcntl calls per
 * transaction (the WAL index's locks; 0.76 per telemetry message in
 * scripts/telemetry-cost's small batches) and the -shm file, which a full
 * disk may not let SQLite create. The price is that no other process can
 * open the database while the hub runs, readers included; the lock file
 * (open.c) already keeps other writers out. Where "unix-excl" is missing
 * (every unix build of SQLite has it), neither the shim nor the
 * checkpointer asks for a VFS: both connections get the default one.
 *
 * The shim is registered once per process (SQLite's VFS list is
 * process-wide) and used by name by the store thread's connection.
 */
#include "store/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define GATHER_VFS_NAME "iothubd-gather"
/* The unix VFSes write at most 128 KiB - 1 bytes per call (os_unix.c
 * masks the length with 0x1ffff: more is silently cut, and the short write
 * reported as a full disk); 64 KiB is 15 frames of 4 KiB. */
#define GATHER_CAP (64 * 1024)
#define WAL_FRAME_HEADER 24

typedef struct gather_file {
    sqlite3_file base;
    sqlite3_file *real; /* the base VFS's file, right after this struct */
    bool commit_page_next; /* the last write was a commit frame's header */
    char *buf; /* GATHER_CAP bytes for a WAL; NULL: writes pass straight through */
    sqlite3_int64 buf_off; /* file offset of buf[0] */
    int buf_len;
    uint64_t writes_in, writes_out; /* SQLite's writes, and ours down */
    /* a WAL and its database file know each other (see gather_shm_barrier) */
    struct gather_file *db, *wal;
} gather_file;

static sqlite3_vfs *base_vfs;

/* One write to the base VFS, counted; SQLITE_OK or its error code. */
static int write_down(gather_file *f, const void *p, int amt, sqlite3_int64 off)
{
    f->writes_out++;
    return f->real->pMethods->xWrite(f->real, p, amt, off);
}

/* Sends the buffer down. */
static int gather_flush(gather_file *f)
{
    if (!f->buf_len)
        return SQLITE_OK;
    int n = f->buf_len;
    f->buf_len = 0;
    return write_down(f, f->buf, n, f->buf_off);
}

static bool is_commit_header(const void *p, int amt)
{
    const unsigned char *h = p;
    return amt == WAL_FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int gather_write(sqlite3_file *file, const void *p, int amt, sqlite3_int64 off)
{
    gather_file *f = (gather_file *)file;
    if (!f->buf)
        return f->real->pMethods->xWrite(f->real, p, amt, off);
    f->writes_in++;
    bool commit_page = f->commit_page_next;
    f->commit_page_next = is_commit_header(p, amt);
    bool continues = f->buf_len && off == f->buf_off + f->buf_len;
    if (f->buf_len && (!continues || f->buf_len + amt > GATHER_CAP)) {
        int rc = gather_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (amt > GATHER_CAP)
        return write_down(f, p, amt, off);
    if (!f->buf_len)
        f->buf_off = off;
    memcpy(f->buf + f->buf_len, p, (size_t)amt);
    f->buf_len += amt;
    return commit_page ? gather_flush(f) : SQLITE_OK;
}

/* Every other operation sends the buffer down first, then forwards. */
#define FLUSH_OR_RETURN(file)                                                                      \
    gather_file *f = (gather_file *)(file);                                                        \
    int flushed = gather_flush(f);                                                                 \
    if (flushed != SQLITE_OK)                                                                      \
        return flushed

static int gather_close(sqlite3_file *file)
{
    gather_file *f = (gather_file *)file;
    int flushed = gather_flush(f);
    int rc = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    if (f->db)
        f->db->wal = NULL;
    if (f->wal)
        f->wal->db = NULL;
    return flushed != SQLITE_OK ? flushed : rc;
}

static int gather_read(sqlite3_file *file, void *p, int amt, sqlite3_int64 off)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xRead(f->real, p, amt, off);
}

static int gather_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xTruncate(f->real, size);
}

static int gather_sync(sqlite3_file *file, int flags)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xSync(f->real, flags);
}

static int gather_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xFileSize(f->real, size);
}

static int gather_lock(sqlite3_file *file, int level)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xLock(f->real, level);
}

static int gather_unlock(sqlite3_file *file, int level)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xUnlock(f->real, level);
}

static int gather_check_reserved(sqlite3_file *file, int *out)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int gather_file_control(sqlite3_file *file, int op, void *arg)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int gather_sector_size(sqlite3_file *file)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int gather_device_characteristics(sqlite3_file *file)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int gather_shm_map(sqlite3_file *file, int region, int size, int extend,
                          void volatile **out)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xShmMap(f->real, region, size, extend, out);
}

static int gather_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

/* SQLite calls this on the database file between writing the WAL index's
 * two header copies, that is when it publishes a commit's frames to other
 * connections. Everything before the commit frame went down already (and
 * failures there failed the commit); this makes the file complete before
 * publication even if that detection ever missed, e.g. after a change of
 * how SQLite writes frames. A failure here cannot be returned. */
static void gather_shm_barrier(sqlite3_file *file)
{
    gather_file *f = (gather_file *)file;
    if (f->wal && gather_flush(f->wal) != SQLITE_OK)
        log_error("store: a WAL write failed as its commit was published");
    f->real->pMethods->xShmBarrier(f->real);
}

static int gather_shm_unmap(sqlite3_file *file, int delete_flag)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xShmUnmap(f->real, delete_flag);
}

static int gather_fetch(sqlite3_file *file, sqlite3_int64 off, int amt, void **out)
{
    FLUSH_OR_RETURN(file);
    return f->real->pMethods->xFetch(f->real, off, amt, out);
}

static int gather_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    gather_file *f = (gather_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods gather_methods = {
    .iVersion = 3,
    .xClose = gather_close,
    .xRead = gather_read,
    .xWrite = gather_write,
    .xTruncate = gather_truncate,
    .xSync = gather_sync,
    .xFileSize = gather_file_size,
    .xLock = gather_lock,
    .xUnlock = gather_unlock,
    .xCheckReservedLock = gather_check_reserved,
    .xFileControl = gather_file_control,
    .xSectorSize = gather_sector_size,
    .xDeviceCharacteristics = gather_device_characteristics,
    .xShmMap = gather_shm_map,
    .xShmLock = gather_shm_lock,
    .xShmBarrier = gather_shm_barrier,
    .xShmUnmap = gather_shm_unmap,
    .xFetch = gather_fetch,
    .xUnfetch = gather_unfetch,
};

static int gather_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                       int *out_flags)
{
    (void)vfs;
    gather_file *f = (gather_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)&f[1];
    int rc = base_vfs->xOpen(base_vfs, name, f->real, flags, out_flags);
    /* SQLite calls xClose after a failed xOpen only if pMethods is set */
    f->base.pMethods = f->real->pMethods ? &gather_methods : NULL;
    /* without the buffer (out of memory) the WAL is written as SQLite
     * writes it, which is slower and as safe */
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL))
        f->buf = malloc(GATHER_CAP);
    if (f->buf && name) {
        sqlite3_file *db = sqlite3_database_file_object(name);
        if (db && db->pMethods == &gather_methods) {
            f->db = (gather_file *)db;
            f->db->wal = f;
        }
    }
    return rc;
}

static sqlite3_vfs gather_vfs;

static void register_gather_vfs(void)
{
    base_vfs = sqlite3_vfs_find("unix-excl");
    if (!base_vfs)
        return;
    gather_vfs = *base_vfs;
    gather_vfs.pNext = NULL;
    gather_vfs.zName = GATHER_VFS_NAME;
    gather_vfs.szOsFile = (int)sizeof(gather_file) + base_vfs->szOsFile;
    gather_vfs.xOpen = gather_open;
    if (sqlite3_vfs_register(&gather_vfs, 0) != SQLITE_OK)
        base_vfs = NULL;
}

static void register_once(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_gather_vfs);
}

const char *store_wal_gather_vfs(void)
{
    register_once();
    return base_vfs ? GATHER_VFS_NAME : NULL;
}

const char *store_wal_base_vfs(void)
{
    register_once();
    return base_vfs ? base_vfs->zName : NULL;
}

bool store_wal_gather_counts(sqlite3 *db, uint64_t *writes_in, uint64_t *writes_out,
                             int *buffered)
{
    sqlite3_file *file = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK ||
        !file || file->pMethods != &gather_methods)
        return false;
    gather_file *f = (gather_file *)file;
    *writes_in = f->writes_in;
    *writes_out = f->writes_out;
    *buffered = f->buf_len;
    return true;
}
