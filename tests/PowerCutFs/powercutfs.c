/*
 * powercutfs: a FUSE file system for power-loss tests.
 *
 * It passes every operation through to a backing directory, but remembers what a power cut would
 * lose, and on the "cut" command discards exactly that:
 *
 *   - file data written, and size changes (truncate, ftruncate, fallocate), since the file's last
 *     successful fsync/fdatasync. Tracked per inode (hard links share it) as undo records: the old
 *     bytes of every range overwritten below the size the file had at its last fsync, plus that
 *     size. Appends need no copy: a cut truncates back to the durable size.
 *   - directory entries created, linked, renamed or removed since the last fsync of the directory
 *     concerned (fsyncdir). Tracked as a journal of operations in global order; a removed entry is
 *     moved to a graveyard directory (same file system) instead of being deleted, so a cut can put it
 *     back. A cut undoes the uncommitted operations in reverse order, through directory descriptors
 *     (so a later rename of a directory does not change what an operation refers to).
 *
 * It can be told to fail fsync (and fsyncdir) with EIO, for every path or those matching an
 * fnmatch(3) pattern. A file whose fsync failed is "poisoned": like Linux, which marks the lost pages
 * clean, a later fsync of the same inode succeeds but makes nothing durable; only a new file (for
 * example a copy renamed over it) survives a cut.
 *
 * Not a durability barrier here, as on a real disk: close (FUSE flush/release), sync_file_range (the
 * kernel turns it into plain writes). O_DIRECT is accepted and ignored. Metadata other than size and
 * names (mode, owner, times) is passed through and not modelled.
 *
 * Every file is opened with direct_io and the kernel keeps no attribute or entry cache, so after a cut
 * readers see the backing files, not pages the kernel still held.
 *
 * Usage: powercutfs BACKING GRAVEYARD CONTROL_SOCKET MOUNTPOINT [fuse options]
 * Control: connect to CONTROL_SOCKET (a Unix stream socket), send one line, read one line back:
 *   ping | cut | stats | fail-fsync on [PATTERN] | fail-fsync off
 * Replies start with "ok" or "error". Paths given to PATTERN are relative to the mount, with a
 * leading '/', e.g. "*.log" or "/p/db-1/CURRENT".
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

/* One global lock: FUSE runs single-threaded (-s), the control thread takes it for every command. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_backing[PATH_MAX];
static char g_graveyard[PATH_MAX];
static char g_control[PATH_MAX];
static int g_graveyard_fd = -1;

static int g_fail_fsync;
static char g_fail_pattern[PATH_MAX];

static unsigned long long g_fsyncs, g_fsync_failures, g_fsyncdirs, g_cuts, g_seq;
static unsigned long long g_lost_bytes_last_cut, g_undone_ops_last_cut;

/* ------------------------------------------------------------------ files */

struct undo {
    off_t offset;
    size_t length;
    char *old; /* bytes of [offset, offset+length) before the write */
    struct undo *next;
};

struct file_state {
    ino_t ino;
    dev_t dev;
    int fd;            /* our own descriptor, kept so a cut can restore an inode that lost its name */
    off_t durable_size;
    int poisoned;      /* an fsync failed: nothing of this inode becomes durable again */
    struct undo *undos; /* newest first */
    size_t undo_bytes;
    struct file_state *next;
};

static struct file_state *g_files;

static void backing_path(char *out, const char *path)
{
    snprintf(out, PATH_MAX, "%s%s", g_backing, path);
}

static struct file_state *find_file(ino_t ino, dev_t dev)
{
    for (struct file_state *f = g_files; f; f = f->next)
        if (f->ino == ino && f->dev == dev)
            return f;
    return NULL;
}

/* The state of the inode behind fd, created (with the current size as durable) on the first change since its last fsync. */
static struct file_state *touch_file(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return NULL;
    struct file_state *f = find_file(st.st_ino, st.st_dev);
    if (f)
        return f;
    f = calloc(1, sizeof(*f));
    f->ino = st.st_ino;
    f->dev = st.st_dev;
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
    f->fd = open(self, O_RDWR | O_CLOEXEC);
    if (f->fd < 0)
        f->fd = dup(fd);
    f->durable_size = st.st_size;
    f->next = g_files;
    g_files = f;
    return f;
}

/* Saves the old bytes of [offset, offset+length) that lie below the durable size, before they change. */
static int save_range(struct file_state *f, off_t offset, off_t length)
{
    if (offset >= f->durable_size || length <= 0)
        return 0;
    off_t end = offset + length;
    if (end > f->durable_size)
        end = f->durable_size;
    size_t n = (size_t)(end - offset);
    struct undo *u = calloc(1, sizeof(*u));
    u->old = malloc(n);
    ssize_t got = pread(f->fd, u->old, n, offset);
    if (got < 0) {
        int e = errno;
        free(u->old);
        free(u);
        return -e;
    }
    /* Bytes past the current end (a shrink since the last fsync) read as nothing: they were zeros, or
     * are restored by the undo of that shrink, which comes later in the list. */
    u->offset = offset;
    u->length = (size_t)got;
    u->next = f->undos;
    f->undos = u;
    f->undo_bytes += (size_t)got;
    return 0;
}

static void free_file(struct file_state *f)
{
    struct undo *u = f->undos;
    while (u) {
        struct undo *next = u->next;
        free(u->old);
        free(u);
        u = next;
    }
    if (f->fd >= 0)
        close(f->fd);
    free(f);
}

static void drop_file(struct file_state *f)
{
    for (struct file_state **p = &g_files; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            free_file(f);
            return;
        }
    }
}

/* ------------------------------------------------------------------ directories */

struct dir_ref {
    ino_t ino;
    dev_t dev;
    int fd;
    int refs;
    struct dir_ref *next;
};

static struct dir_ref *g_dirs;

enum op_kind { OP_CREATE, OP_MKDIR, OP_LINK, OP_REMOVE, OP_RENAME };

struct dir_op {
    enum op_kind kind;
    unsigned long long seq;
    struct dir_ref *src; /* the directory of the (source) entry */
    struct dir_ref *dst; /* rename: the target's directory, else NULL */
    char *name;          /* entry name in src */
    char *dst_name;      /* rename: entry name in dst */
    char *buried;        /* REMOVE: graveyard name of the entry; RENAME: of the entry it replaced */
    int src_synced, dst_synced;
    struct dir_op *prev, *next; /* global order, oldest first */
};

static struct dir_op *g_ops_head, *g_ops_tail;
static unsigned long long g_pending_ops;

static struct dir_ref *ref_dir_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    for (struct dir_ref *d = g_dirs; d; d = d->next) {
        if (d->ino == st.st_ino && d->dev == st.st_dev) {
            close(fd);
            d->refs++;
            return d;
        }
    }
    struct dir_ref *d = calloc(1, sizeof(*d));
    d->ino = st.st_ino;
    d->dev = st.st_dev;
    d->fd = fd;
    d->refs = 1;
    d->next = g_dirs;
    g_dirs = d;
    return d;
}

static void unref_dir(struct dir_ref *d)
{
    if (!d || --d->refs > 0)
        return;
    for (struct dir_ref **p = &g_dirs; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            close(d->fd);
            free(d);
            return;
        }
    }
}

/* Splits a mount path into the backing directory (a reference) and the entry name. */
static struct dir_ref *parent_of(const char *path, const char **name)
{
    const char *slash = strrchr(path, '/');
    *name = slash + 1;
    char dir[PATH_MAX];
    size_t len = (size_t)(slash - path);
    snprintf(dir, sizeof(dir), "%s%.*s", g_backing, (int)len, path);
    if (len == 0)
        snprintf(dir, sizeof(dir), "%s/", g_backing);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    return ref_dir_fd(fd);
}

static struct dir_op *add_op(enum op_kind kind, struct dir_ref *src, const char *name)
{
    struct dir_op *op = calloc(1, sizeof(*op));
    op->kind = kind;
    op->seq = ++g_seq;
    op->src = src;
    op->name = strdup(name);
    op->dst_synced = 1;
    op->prev = g_ops_tail;
    if (g_ops_tail)
        g_ops_tail->next = op;
    else
        g_ops_head = op;
    g_ops_tail = op;
    g_pending_ops++;
    return op;
}

static void unlink_op(struct dir_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        g_ops_head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        g_ops_tail = op->prev;
    g_pending_ops--;
    unref_dir(op->src);
    unref_dir(op->dst);
    free(op->name);
    free(op->dst_name);
    free(op->buried);
    free(op);
}

static void remove_tree_at(int dirfd, const char *name)
{
    if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, ".."))
                remove_tree_at(fd, e->d_name);
        }
        if (d)
            closedir(d);
        else
            close(fd);
    }
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Moves an entry into the graveyard; returns its name there (to free) or NULL with errno set. */
static char *bury(int dirfd, const char *name)
{
    char buried[64];
    snprintf(buried, sizeof(buried), "g%llu", ++g_seq);
    if (renameat(dirfd, name, g_graveyard_fd, buried) != 0)
        return NULL;
    return strdup(buried);
}

/* Both sides of the op are on disk: the names it buried are gone for good. */
static void commit_op(struct dir_op *op)
{
    if (op->buried)
        remove_tree_at(g_graveyard_fd, op->buried);
    unlink_op(op);
}

static void undo_op(struct dir_op *op)
{
    switch (op->kind) {
    case OP_CREATE:
    case OP_LINK:
        unlinkat(op->src->fd, op->name, 0);
        break;
    case OP_MKDIR:
        remove_tree_at(op->src->fd, op->name);
        break;
    case OP_REMOVE:
        renameat(g_graveyard_fd, op->buried, op->src->fd, op->name);
        break;
    case OP_RENAME:
        renameat(op->dst->fd, op->dst_name, op->src->fd, op->name);
        if (op->buried)
            renameat(g_graveyard_fd, op->buried, op->dst->fd, op->dst_name);
        break;
    }
}

/* ------------------------------------------------------------------ open handles */

/* What fi->fh points to: the backing descriptor and the mount path it was opened by (FUSE passes no
 * path to descriptor operations with nullpath_ok, and the fault pattern is matched against it). */
struct handle {
    int fd;
    char path[];
};

#define FD(fi) (((struct handle *)(uintptr_t)(fi)->fh)->fd)
#define HANDLE_PATH(fi) (((struct handle *)(uintptr_t)(fi)->fh)->path)

static void set_handle(struct fuse_file_info *fi, int fd, const char *path)
{
    size_t n = strlen(path) + 1;
    struct handle *h = malloc(sizeof(*h) + n);
    h->fd = fd;
    memcpy(h->path, path, n);
    fi->fh = (uint64_t)(uintptr_t)h;
}

static void close_handle(struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    close(h->fd);
    free(h);
}

/* ------------------------------------------------------------------ fault switch */

static int should_fail(const char *path)
{
    if (!g_fail_fsync)
        return 0;
    if (g_fail_pattern[0] == '\0')
        return 1;
    return path != NULL && fnmatch(g_fail_pattern, path, 0) == 0;
}

/* ------------------------------------------------------------------ the cut */

static void power_cut(void)
{
    unsigned long long lost = 0, undone = 0;
    /* Directory entries first, newest first, so each undo sees the names as they were when it was done. */
    while (g_ops_tail) {
        struct dir_op *op = g_ops_tail;
        undo_op(op);
        unlink_op(op); /* what it buried is back in place: nothing to delete */
        undone++;
    }
    while (g_files) {
        struct file_state *f = g_files;
        g_files = f->next;
        for (struct undo *u = f->undos; u; u = u->next) {
            if (pwrite(f->fd, u->old, u->length, u->offset) < 0)
                fprintf(stderr, "powercutfs: restoring inode %lu failed: %s\n", (unsigned long)f->ino, strerror(errno));
            lost += u->length;
        }
        struct stat st;
        if (fstat(f->fd, &st) == 0 && st.st_size > f->durable_size)
            lost += (unsigned long long)(st.st_size - f->durable_size);
        if (ftruncate(f->fd, f->durable_size) != 0)
            fprintf(stderr, "powercutfs: truncating inode %lu failed: %s\n", (unsigned long)f->ino, strerror(errno));
        free_file(f);
    }
    g_cuts++;
    g_lost_bytes_last_cut = lost;
    g_undone_ops_last_cut = undone;
}

/* ------------------------------------------------------------------ FUSE operations */

#define LOCKED(expr)                          \
    do {                                      \
        pthread_mutex_lock(&g_lock);          \
        int _r = (expr);                      \
        pthread_mutex_unlock(&g_lock);        \
        return _r;                            \
    } while (0)

static int do_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    if (fi)
        return fstat(FD(fi), st) == 0 ? 0 : -errno;
    char p[PATH_MAX];
    backing_path(p, path);
    return lstat(p, st) == 0 ? 0 : -errno;
}

static int pcfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) { LOCKED(do_getattr(path, st, fi)); }

static int do_access(const char *path, int mask)
{
    char p[PATH_MAX];
    backing_path(p, path);
    return access(p, mask) == 0 ? 0 : -errno;
}

static int pcfs_access(const char *path, int mask) { LOCKED(do_access(path, mask)); }

static int do_readlink(const char *path, char *buf, size_t size)
{
    char p[PATH_MAX];
    backing_path(p, path);
    ssize_t n = readlink(p, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

static int pcfs_readlink(const char *path, char *buf, size_t size) { LOCKED(do_readlink(path, buf, size)); }

static int do_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)path; /* may be NULL (nullpath_ok): the descriptor from opendir is what counts */
    (void)offset;
    (void)flags;
    int fd = dup(FD(fi));
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return -e;
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof(st));
        st.st_ino = e->d_ino;
        st.st_mode = (mode_t)DTTOIF(e->d_type);
        if (filler(buf, e->d_name, &st, 0, 0))
            break;
    }
    closedir(d);
    return 0;
}

static int pcfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    LOCKED(do_readdir(path, buf, filler, offset, fi, flags));
}

/* Journals a new entry (file, node, symlink, directory) after it was made. */
static void journal_new(enum op_kind kind, const char *path)
{
    const char *name;
    struct dir_ref *dir = parent_of(path, &name);
    if (dir)
        add_op(kind, dir, name);
}

static int do_mknod(const char *path, mode_t mode, dev_t rdev)
{
    char p[PATH_MAX];
    backing_path(p, path);
    if (mknod(p, mode, rdev) != 0)
        return -errno;
    journal_new(OP_CREATE, path);
    return 0;
}

static int pcfs_mknod(const char *path, mode_t mode, dev_t rdev) { LOCKED(do_mknod(path, mode, rdev)); }

static int do_mkdir(const char *path, mode_t mode)
{
    char p[PATH_MAX];
    backing_path(p, path);
    if (mkdir(p, mode) != 0)
        return -errno;
    journal_new(OP_MKDIR, path);
    return 0;
}

static int pcfs_mkdir(const char *path, mode_t mode) { LOCKED(do_mkdir(path, mode)); }

static int do_symlink(const char *target, const char *path)
{
    char p[PATH_MAX];
    backing_path(p, path);
    if (symlink(target, p) != 0)
        return -errno;
    journal_new(OP_CREATE, path);
    return 0;
}

static int pcfs_symlink(const char *target, const char *path) { LOCKED(do_symlink(target, path)); }

/* unlink and rmdir: the entry goes to the graveyard, so a cut can bring it back. */
static int do_remove(const char *path, int is_dir)
{
    const char *name;
    struct dir_ref *dir = parent_of(path, &name);
    if (!dir)
        return -errno;
    struct stat st;
    if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        int e = errno;
        unref_dir(dir);
        return -e;
    }
    if (is_dir && !S_ISDIR(st.st_mode)) {
        unref_dir(dir);
        return -ENOTDIR;
    }
    if (!is_dir && S_ISDIR(st.st_mode)) {
        unref_dir(dir);
        return -EISDIR;
    }
    if (is_dir) {
        /* rmdir's own checks (empty), without removing it yet. */
        int fd = openat(dir->fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        int entries = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                entries++;
        if (d)
            closedir(d);
        if (entries > 0) {
            unref_dir(dir);
            return -ENOTEMPTY;
        }
    }
    char *buried = bury(dir->fd, name);
    if (!buried) {
        int e = errno;
        unref_dir(dir);
        return -e;
    }
    struct dir_op *op = add_op(OP_REMOVE, dir, name);
    op->buried = buried;
    return 0;
}

static int pcfs_unlink(const char *path) { LOCKED(do_remove(path, 0)); }
static int pcfs_rmdir(const char *path) { LOCKED(do_remove(path, 1)); }

static int do_rename(const char *from, const char *to, unsigned int flags)
{
    if (flags & ~RENAME_NOREPLACE)
        return -EINVAL; /* RENAME_EXCHANGE / WHITEOUT: not needed by the code under test */
    const char *sname, *dname;
    struct dir_ref *src = parent_of(from, &sname);
    if (!src)
        return -errno;
    struct dir_ref *dst = parent_of(to, &dname);
    if (!dst) {
        int e = errno;
        unref_dir(src);
        return -e;
    }
    struct stat sst, dst_st;
    if (fstatat(src->fd, sname, &sst, AT_SYMLINK_NOFOLLOW) != 0) {
        int e = errno;
        unref_dir(src);
        unref_dir(dst);
        return -e;
    }
    char *buried = NULL;
    if (fstatat(dst->fd, dname, &dst_st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (sst.st_ino == dst_st.st_ino && sst.st_dev == dst_st.st_dev) {
            unref_dir(src);
            unref_dir(dst);
            return 0; /* same file: rename(2) does nothing */
        }
        if (flags & RENAME_NOREPLACE) {
            unref_dir(src);
            unref_dir(dst);
            return -EEXIST;
        }
        if (S_ISDIR(dst_st.st_mode) != S_ISDIR(sst.st_mode)) {
            unref_dir(src);
            unref_dir(dst);
            return S_ISDIR(dst_st.st_mode) ? -EISDIR : -ENOTDIR;
        }
        /* The replaced entry is kept in the graveyard until the rename is on disk. */
        buried = bury(dst->fd, dname);
        if (!buried) {
            int e = errno;
            unref_dir(src);
            unref_dir(dst);
            return -e;
        }
    }
    if (renameat(src->fd, sname, dst->fd, dname) != 0) {
        int e = errno;
        if (buried) {
            renameat(g_graveyard_fd, buried, dst->fd, dname);
            free(buried);
        }
        unref_dir(src);
        unref_dir(dst);
        return -e;
    }
    struct dir_op *op = add_op(OP_RENAME, src, sname);
    op->dst = dst;
    op->dst_name = strdup(dname);
    op->buried = buried;
    op->dst_synced = 0;
    return 0;
}

static int pcfs_rename(const char *from, const char *to, unsigned int flags) { LOCKED(do_rename(from, to, flags)); }

static int do_link(const char *from, const char *to)
{
    char a[PATH_MAX], b[PATH_MAX];
    backing_path(a, from);
    backing_path(b, to);
    if (link(a, b) != 0)
        return -errno;
    journal_new(OP_LINK, to);
    return 0;
}

static int pcfs_link(const char *from, const char *to) { LOCKED(do_link(from, to)); }

static int do_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (fi)
        return fchmod(FD(fi), mode) == 0 ? 0 : -errno;
    char p[PATH_MAX];
    backing_path(p, path);
    return chmod(p, mode) == 0 ? 0 : -errno;
}

static int pcfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) { LOCKED(do_chmod(path, mode, fi)); }

static int do_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    if (fi)
        return fchown(FD(fi), uid, gid) == 0 ? 0 : -errno;
    char p[PATH_MAX];
    backing_path(p, path);
    return lchown(p, uid, gid) == 0 ? 0 : -errno;
}

static int pcfs_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) { LOCKED(do_chown(path, uid, gid, fi)); }

/* A size change: the bytes a shrink cuts off below the durable size are saved first. */
static int resize_fd(int fd, off_t size)
{
    struct file_state *f = touch_file(fd);
    if (!f)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    if (size < st.st_size) {
        int r = save_range(f, size, st.st_size - size);
        if (r)
            return r;
    }
    return ftruncate(fd, size) == 0 ? 0 : -errno;
}

static int do_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (fi)
        return resize_fd(FD(fi), size);
    char p[PATH_MAX];
    backing_path(p, path);
    int fd = open(p, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = resize_fd(fd, size);
    close(fd);
    return r;
}

static int pcfs_truncate(const char *path, off_t size, struct fuse_file_info *fi) { LOCKED(do_truncate(path, size, fi)); }

static int do_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    if (fi)
        return futimens(FD(fi), tv) == 0 ? 0 : -errno;
    char p[PATH_MAX];
    backing_path(p, path);
    return utimensat(AT_FDCWD, p, tv, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : -errno;
}

static int pcfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) { LOCKED(do_utimens(path, tv, fi)); }

/* Backing descriptors are always read-write (we are root) and never O_APPEND: the kernel passes the
 * offset of every write, and undo records need to read what a write replaces. */
static int backing_flags(int flags)
{
    return (flags & ~(O_ACCMODE | O_APPEND | O_DIRECT | O_TRUNC | O_CREAT | O_EXCL)) | O_RDWR | O_CLOEXEC;
}

static int do_open(const char *path, struct fuse_file_info *fi)
{
    char p[PATH_MAX];
    backing_path(p, path);
    int fd = open(p, backing_flags(fi->flags));
    if (fd < 0 && (errno == EISDIR || errno == EACCES))
        fd = open(p, (fi->flags & ~(O_ACCMODE | O_DIRECT)) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fi->flags & O_TRUNC) {
        int r = resize_fd(fd, 0);
        if (r) {
            close(fd);
            return r;
        }
    }
    set_handle(fi, fd, path);
    fi->direct_io = 1;
    return 0;
}

static int pcfs_open(const char *path, struct fuse_file_info *fi) { LOCKED(do_open(path, fi)); }

static int do_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    char p[PATH_MAX];
    backing_path(p, path);
    struct stat st;
    int existed = lstat(p, &st) == 0;
    int fd = open(p, backing_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL), mode);
    if (fd < 0)
        return -errno;
    if (!existed)
        journal_new(OP_CREATE, path);
    else if (fi->flags & O_TRUNC) {
        int r = resize_fd(fd, 0);
        if (r) {
            close(fd);
            return r;
        }
    }
    set_handle(fi, fd, path);
    fi->direct_io = 1;
    return 0;
}

static int pcfs_create(const char *path, mode_t mode, struct fuse_file_info *fi) { LOCKED(do_create(path, mode, fi)); }

static int pcfs_read(const char *path, char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
    (void)path;
    /* Reads change nothing we track; no lock needed beyond the descriptor being ours until release. */
    ssize_t n = pread(FD(fi), buf, size, offset);
    return n < 0 ? -errno : (int)n;
}

static int do_write(const char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
    int fd = FD(fi);
    struct file_state *f = touch_file(fd);
    if (!f)
        return -errno;
    int r = save_range(f, offset, (off_t)size);
    if (r)
        return r;
    ssize_t n = pwrite(fd, buf, size, offset);
    return n < 0 ? -errno : (int)n;
}

static int pcfs_write(const char *path, const char *buf, size_t size, off_t offset, struct fuse_file_info *fi)
{
    (void)path;
    LOCKED(do_write(buf, size, offset, fi));
}

static int do_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return statvfs(g_backing, st) == 0 ? 0 : -errno;
}

static int pcfs_statfs(const char *path, struct statvfs *st) { LOCKED(do_statfs(path, st)); }

/* close(2): not a sync. */
static int pcfs_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    (void)fi;
    return 0;
}

static int pcfs_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    pthread_mutex_lock(&g_lock);
    close_handle(fi);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

static int do_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync; /* fdatasync also makes the size durable, as for an append on a real file system */
    int fd = FD(fi);
    (void)path;
    g_fsyncs++;
    if (should_fail(HANDLE_PATH(fi))) {
        g_fsync_failures++;
        struct file_state *f = touch_file(fd);
        if (f)
            f->poisoned = 1;
        return -EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    struct file_state *f = find_file(st.st_ino, st.st_dev);
    if (f && !f->poisoned)
        drop_file(f); /* everything written so far is now what the disk holds */
    return 0;
}

static int pcfs_fsync(const char *path, int datasync, struct fuse_file_info *fi) { LOCKED(do_fsync(path, datasync, fi)); }

static int do_opendir(const char *path, struct fuse_file_info *fi)
{
    char p[PATH_MAX];
    backing_path(p, path);
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    set_handle(fi, fd, path);
    return 0;
}

static int pcfs_opendir(const char *path, struct fuse_file_info *fi) { LOCKED(do_opendir(path, fi)); }

static int do_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    (void)path;
    g_fsyncdirs++;
    if (should_fail(HANDLE_PATH(fi))) {
        g_fsync_failures++;
        return -EIO;
    }
    struct stat st;
    if (fstat(FD(fi), &st) != 0)
        return -errno;
    /* Every operation on this directory's entries so far is on disk; one that also touched another
     * directory (a rename across directories) waits for that one's fsync too. */
    struct dir_op *op = g_ops_head;
    while (op) {
        struct dir_op *next = op->next;
        if (op->src->ino == st.st_ino && op->src->dev == st.st_dev)
            op->src_synced = 1;
        if (op->dst && op->dst->ino == st.st_ino && op->dst->dev == st.st_dev)
            op->dst_synced = 1;
        if (op->src_synced && op->dst_synced)
            commit_op(op);
        op = next;
    }
    return 0;
}

static int pcfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) { LOCKED(do_fsyncdir(path, datasync, fi)); }

static int do_fallocate(const char *path, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
    (void)path;
    if (mode & ~FALLOC_FL_KEEP_SIZE)
        return -EOPNOTSUPP; /* punching or zeroing ranges: not used by the code under test */
    int fd = FD(fi);
    if (!touch_file(fd))
        return -errno;
    /* Growth needs no undo record: a cut truncates back to the durable size. */
    return fallocate(fd, mode, offset, length) == 0 ? 0 : -errno;
}

static int pcfs_fallocate(const char *path, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
    LOCKED(do_fallocate(path, mode, offset, length, fi));
}

/* ------------------------------------------------------------------ control channel */

static void reply(int fd, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t ignored = write(fd, line, (size_t)n);
    (void)ignored;
}

static void handle_command(int fd, char *line)
{
    line[strcspn(line, "\r\n")] = '\0';
    pthread_mutex_lock(&g_lock);
    if (strcmp(line, "ping") == 0) {
        reply(fd, "ok");
    } else if (strcmp(line, "cut") == 0) {
        power_cut();
        reply(fd, "ok cut lost_bytes=%llu undone_dir_ops=%llu", g_lost_bytes_last_cut, g_undone_ops_last_cut);
    } else if (strncmp(line, "fail-fsync on", 13) == 0) {
        const char *pattern = line + 13;
        while (*pattern == ' ')
            pattern++;
        snprintf(g_fail_pattern, sizeof(g_fail_pattern), "%s", pattern);
        g_fail_fsync = 1;
        reply(fd, "ok fail-fsync on %s", g_fail_pattern[0] ? g_fail_pattern : "*");
    } else if (strcmp(line, "fail-fsync off") == 0) {
        g_fail_fsync = 0;
        g_fail_pattern[0] = '\0';
        reply(fd, "ok fail-fsync off");
    } else if (strcmp(line, "stats") == 0) {
        unsigned long long files = 0, undo_bytes = 0, poisoned = 0;
        for (struct file_state *f = g_files; f; f = f->next) {
            files++;
            undo_bytes += f->undo_bytes;
            poisoned += (unsigned long long)f->poisoned;
        }
        reply(fd, "ok unsynced_files=%llu undo_bytes=%llu poisoned_files=%llu pending_dir_ops=%llu fsyncs=%llu fsyncdirs=%llu fsync_failures=%llu cuts=%llu",
              files, undo_bytes, poisoned, g_pending_ops, g_fsyncs, g_fsyncdirs, g_fsync_failures, g_cuts);
    } else {
        reply(fd, "error unknown command '%s' (ping | cut | stats | fail-fsync on [PATTERN] | fail-fsync off)", line);
    }
    pthread_mutex_unlock(&g_lock);
}

static void *control_loop(void *arg)
{
    int server = (int)(intptr_t)arg;
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        char line[PATH_MAX + 64];
        size_t used = 0;
        while (used < sizeof(line) - 1) {
            ssize_t n = read(client, line + used, sizeof(line) - 1 - used);
            if (n <= 0)
                break;
            used += (size_t)n;
            if (memchr(line, '\n', used))
                break;
        }
        line[used] = '\0';
        if (used > 0)
            handle_command(client, line);
        close(client);
    }
}

static void *pcfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    cfg->nullpath_ok = 1;
    cfg->hard_remove = 1;
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;

    /* The control socket opens only once the file system is mounted: "ping" answering means ready. */
    int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", g_control);
    unlink(g_control);
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(server, 8) != 0) {
        fprintf(stderr, "powercutfs: cannot listen on %s: %s\n", g_control, strerror(errno));
        exit(3);
    }
    pthread_t thread;
    pthread_create(&thread, NULL, control_loop, (void *)(intptr_t)server);
    pthread_detach(thread);
    return NULL;
}

static const struct fuse_operations ops = {
    .init = pcfs_init,
    .getattr = pcfs_getattr,
    .access = pcfs_access,
    .readlink = pcfs_readlink,
    .readdir = pcfs_readdir,
    .mknod = pcfs_mknod,
    .mkdir = pcfs_mkdir,
    .symlink = pcfs_symlink,
    .unlink = pcfs_unlink,
    .rmdir = pcfs_rmdir,
    .rename = pcfs_rename,
    .link = pcfs_link,
    .chmod = pcfs_chmod,
    .chown = pcfs_chown,
    .truncate = pcfs_truncate,
    .utimens = pcfs_utimens,
    .open = pcfs_open,
    .create = pcfs_create,
    .read = pcfs_read,
    .write = pcfs_write,
    .statfs = pcfs_statfs,
    .flush = pcfs_flush,
    .release = pcfs_release,
    .fsync = pcfs_fsync,
    .opendir = pcfs_opendir,
    .releasedir = pcfs_release, /* a directory handle is released like a file handle */
    .fsyncdir = pcfs_fsyncdir,
    .fallocate = pcfs_fallocate,
};

int main(int argc, char *argv[])
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s BACKING GRAVEYARD CONTROL_SOCKET MOUNTPOINT [fuse options]\n", argv[0]);
        return 2;
    }
    if (!realpath(argv[1], g_backing) || !realpath(argv[2], g_graveyard)) {
        fprintf(stderr, "powercutfs: backing or graveyard directory missing: %s\n", strerror(errno));
        return 2;
    }
    if (strlen(argv[3]) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "powercutfs: the control socket path is too long (at most 107 bytes): %s\n", argv[3]);
        return 2;
    }
    snprintf(g_control, sizeof(g_control), "%s", argv[3]);
    struct stat a, b;
    if (stat(g_backing, &a) != 0 || stat(g_graveyard, &b) != 0 || a.st_dev != b.st_dev) {
        fprintf(stderr, "powercutfs: the graveyard must be on the backing directory's file system\n");
        return 2;
    }
    g_graveyard_fd = open(g_graveyard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    /* fuse_main gets: program, mount point, then "-f -s" (foreground, one thread: the global lock
     * orders everything anyway) and the caller's options. */
    char **fargs = calloc((size_t)argc + 4, sizeof(char *));
    int n = 0;
    fargs[n++] = argv[0];
    fargs[n++] = argv[4];
    fargs[n++] = "-f";
    fargs[n++] = "-s";
    for (int i = 5; i < argc; i++)
        fargs[n++] = argv[i];
    return fuse_main(n, fargs, &ops, NULL);
}
