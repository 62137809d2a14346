/*
 * Atomic, committing file writes and the other file helpers. Every write,
 * fsync and rename goes through the counted wrappers below so that power-cut
 * tests can fail the N-th one (see fault.c).
 */
#include "keel/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int counted_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        if (keel_fault_hit("write")) {
            errno = EIO;
            return -1;
        }
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int counted_fsync(int fd)
{
    if (keel_fault_hit("fsync")) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

static int counted_rename(const char *from, const char *to)
{
    if (keel_fault_hit("rename")) {
        errno = EIO;
        return -1;
    }
    return rename(from, to);
}

static keel_status_t parent_dir(const char *path, char *out, size_t cap)
{
    char tmp[KEEL_PATH_MAX];
    if (keel_strlcpy(tmp, path, sizeof tmp) != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "path too long: %s", path);
    return keel_strlcpy(out, dirname(tmp), cap);
}

keel_status_t keel_dir_sync(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    int rc = counted_fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0)
        return keel_errorf(KEEL_ERR_IO, "fsync %s: %s", path, strerror(err));
    return KEEL_OK;
}

keel_status_t keel_file_write_new(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return keel_errorf(errno == EEXIST ? KEEL_ERR_EXISTS : KEEL_ERR_IO, "create %s: %s", path,
                           strerror(errno));
    /* fchmod: the umask must not widen or narrow what the caller asked for. */
    if (fchmod(fd, mode) != 0 || counted_write_all(fd, data, len) != 0 || counted_fsync(fd) != 0) {
        int err = errno;
        close(fd);
        (void)unlink(path);
        return keel_errorf(KEEL_ERR_IO, "write %s: %s", path, strerror(err));
    }
    if (close(fd) != 0) {
        int err = errno;
        (void)unlink(path);
        return keel_errorf(KEEL_ERR_IO, "close %s: %s", path, strerror(err));
    }
    return KEEL_OK;
}

/* The temporary name beside `path`: fixed, so the next write of the same
 * file removes what an interrupted one left. */
static keel_status_t temp_name(const char *path, char *tmp, size_t cap)
{
    if (keel_snprintf(tmp, cap, "%s.tmp", path) != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "path too long: %s", path);
    if (unlink(tmp) != 0 && errno != ENOENT)
        return keel_errorf(KEEL_ERR_IO, "remove stale %s: %s", tmp, strerror(errno));
    return KEEL_OK;
}

keel_status_t keel_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char dir[KEEL_PATH_MAX], tmp[KEEL_PATH_MAX];
    keel_status_t st = parent_dir(path, dir, sizeof dir);
    if (st == KEEL_OK)
        st = temp_name(path, tmp, sizeof tmp);
    if (st == KEEL_OK)
        st = keel_file_write_new(tmp, data, len, mode);
    if (st != KEEL_OK)
        return st;
    if (counted_rename(tmp, path) != 0) {
        int err = errno;
        (void)unlink(tmp);
        return keel_errorf(KEEL_ERR_IO, "rename to %s: %s", path, strerror(err));
    }
    return keel_dir_sync(dir);
}

keel_status_t keel_file_create_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    char dir[KEEL_PATH_MAX], tmp[KEEL_PATH_MAX];
    keel_status_t st = parent_dir(path, dir, sizeof dir);
    if (st == KEEL_OK)
        st = temp_name(path, tmp, sizeof tmp);
    if (st == KEEL_OK)
        st = keel_file_write_new(tmp, data, len, mode);
    if (st != KEEL_OK)
        return st;
    /* link(2), unlike rename(2), refuses to replace an existing name. */
    int rc = keel_fault_hit("rename") ? (errno = EIO, -1) : link(tmp, path);
    int err = errno;
    (void)unlink(tmp);
    if (rc != 0)
        return keel_errorf(err == EEXIST ? KEEL_ERR_EXISTS : KEEL_ERR_IO, "create %s: %s", path,
                           strerror(err));
    return keel_dir_sync(dir);
}

keel_status_t keel_file_open_private(const char *path, int *fdout)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return keel_errorf(err == ENOENT ? KEEL_ERR_NOT_FOUND : KEEL_ERR_CONFIG, "%s: %s", path, strerror(err));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
        close(fd);
        return keel_errorf(KEEL_ERR_CONFIG, "%s must be a regular file that only its owner can read (mode 0600)",
                           path);
    }
    *fdout = fd;
    return KEEL_OK;
}

keel_status_t keel_fd_read(int fd, const char *name, size_t cap, keel_buf_t *out)
{
    keel_buf_init(out, cap);
    uint8_t chunk[4096];
    keel_status_t st = KEEL_OK;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = keel_errorf(KEEL_ERR_IO, "read %s: %s", name, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (keel_buf_append(out, chunk, (size_t)n) != KEEL_OK) {
            st = keel_errorf(KEEL_ERR_TOO_LARGE, "%s is larger than %zu bytes", name, cap);
            break;
        }
    }
    keel_wipe(chunk, sizeof chunk);
    /* An empty file still yields a NUL-terminated buffer, never NULL. */
    if (st == KEEL_OK && out->data == NULL)
        st = keel_buf_append(out, "", 0);
    if (st != KEEL_OK)
        keel_buf_free(out);
    return st;
}

keel_status_t keel_file_read(const char *path, size_t cap, keel_buf_t *out)
{
    keel_buf_init(out, cap);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return keel_errorf(err == ENOENT ? KEEL_ERR_NOT_FOUND : KEEL_ERR_IO, "open %s: %s", path,
                           strerror(err));
    }
    keel_status_t st = keel_fd_read(fd, path, cap, out);
    close(fd);
    return st;
}

keel_status_t keel_file_append_sync(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    if (counted_write_all(fd, data, len) != 0 || counted_fsync(fd) != 0) {
        int err = errno;
        close(fd);
        return keel_errorf(KEEL_ERR_IO, "append %s: %s", path, strerror(err));
    }
    if (close(fd) != 0)
        return keel_errorf(KEEL_ERR_IO, "close %s: %s", path, strerror(errno));
    return KEEL_OK;
}

keel_status_t keel_file_shred(const char *path)
{
    char dir[KEEL_PATH_MAX];
    keel_status_t st = parent_dir(path, dir, sizeof dir);
    if (st != KEEL_OK)
        return st;
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return KEEL_OK;
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return keel_errorf(KEEL_ERR_IO, "stat %s: %s", path, strerror(err));
    }
    static const uint8_t zeros[4096];
    for (off_t left = sb.st_size; left > 0;) {
        size_t n = left > (off_t)sizeof zeros ? sizeof zeros : (size_t)left;
        if (counted_write_all(fd, zeros, n) != 0) {
            int err = errno;
            close(fd);
            return keel_errorf(KEEL_ERR_IO, "overwrite %s: %s", path, strerror(err));
        }
        left -= (off_t)n;
    }
    if (counted_fsync(fd) != 0) {
        int err = errno;
        close(fd);
        return keel_errorf(KEEL_ERR_IO, "fsync %s: %s", path, strerror(err));
    }
    close(fd);
    if (unlink(path) != 0)
        return keel_errorf(KEEL_ERR_IO, "unlink %s: %s", path, strerror(errno));
    return keel_dir_sync(dir);
}

keel_status_t keel_dir_make(const char *path, mode_t mode)
{
    if (mkdir(path, mode) == 0) {
        char parent[KEEL_PATH_MAX];
        keel_status_t st = parent_dir(path, parent, sizeof parent);
        if (st == KEEL_OK && chmod(path, mode) != 0)
            st = keel_errorf(KEEL_ERR_IO, "chmod %s: %s", path, strerror(errno));
        /* The new entry survives a power cut only once its parent is synced. */
        return st == KEEL_OK ? keel_dir_sync(parent) : st;
    }
    if (errno != EEXIST)
        return keel_errorf(KEEL_ERR_IO, "mkdir %s: %s", path, strerror(errno));
    /* An existing directory is used only if it is really ours. */
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return keel_errorf(KEEL_ERR_IO, "stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return keel_errorf(KEEL_ERR_EXISTS, "%s exists and is not a directory", path);
    if (sb.st_uid != geteuid())
        return keel_errorf(KEEL_ERR_ARG, "%s belongs to another user", path);
    if ((sb.st_mode & 022) != 0)
        return keel_errorf(KEEL_ERR_ARG, "%s is writable by other users (mode %03o); use a private directory",
                           path, (unsigned)(sb.st_mode & 0777));
    return KEEL_OK;
}

keel_status_t keel_dir_make_public(const char *path)
{
    if (mkdir(path, 0755) == 0) {
        char parent[KEEL_PATH_MAX];
        keel_status_t st = parent_dir(path, parent, sizeof parent);
        /* mkdir honoured the umask; these files are for others to read */
        if (st == KEEL_OK && chmod(path, 0755) != 0)
            st = keel_errorf(KEEL_ERR_IO, "chmod %s: %s", path, strerror(errno));
        return st == KEEL_OK ? keel_dir_sync(parent) : st;
    }
    if (errno != EEXIST)
        return keel_errorf(KEEL_ERR_IO, "mkdir %s: %s%s", path, strerror(errno),
                           errno == ENOENT ? " (its parent must exist)" : "");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return keel_errorf(KEEL_ERR_IO, "stat %s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return keel_errorf(KEEL_ERR_IO, "%s exists and is not a directory", path);
    return KEEL_OK;
}

keel_status_t keel_file_publish(const char *dir, const char *name, const void *data, size_t len)
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = keel_path_join(path, sizeof path, dir, name);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, data, len, 0644);
    if (st != KEEL_OK) {
        char msg[KEEL_ERROR_MAX];
        if (keel_strlcpy(msg, keel_error_message(), sizeof msg) != KEEL_OK)
            msg[0] = '\0';
        st = keel_errorf(KEEL_ERR_IO, "%s/%s: %s", dir, name, msg);
    }
    return st;
}

keel_status_t keel_rename_commit(const char *from, const char *to)
{
    char dir[KEEL_PATH_MAX];
    keel_status_t st = parent_dir(to, dir, sizeof dir);
    if (st != KEEL_OK)
        return st;
    if (counted_rename(from, to) != 0)
        return keel_errorf(KEEL_ERR_IO, "rename %s to %s: %s", from, to, strerror(errno));
    return keel_dir_sync(dir);
}

/* Removes `name` under the directory `parent` without following symbolic
 * links: a link is removed itself, never what it points to. */
static keel_status_t remove_at(int parent, const char *name, const char *shown)
{
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return KEEL_OK;
        if (errno == ENOTDIR || errno == ELOOP) {
            if (unlinkat(parent, name, 0) != 0 && errno != ENOENT)
                return keel_errorf(KEEL_ERR_IO, "unlink %s: %s", shown, strerror(errno));
            return KEEL_OK;
        }
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", shown, strerror(errno));
    }
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return keel_errorf(KEEL_ERR_IO, "opendir %s: %s", shown, strerror(errno));
    }
    keel_status_t st = KEEL_OK;
    struct dirent *e;
    while (st == KEEL_OK && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            st = keel_errorf(KEEL_ERR_IO, "stat %s/%s: %s", shown, e->d_name, strerror(errno));
        else if (S_ISDIR(sb.st_mode))
            st = remove_at(dirfd(d), e->d_name, shown);
        else if (unlinkat(dirfd(d), e->d_name, 0) != 0)
            st = keel_errorf(KEEL_ERR_IO, "unlink %s/%s: %s", shown, e->d_name, strerror(errno));
    }
    closedir(d);
    if (st == KEEL_OK && unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        st = keel_errorf(KEEL_ERR_IO, "rmdir %s: %s", shown, strerror(errno));
    return st;
}

keel_status_t keel_dir_remove_tree(const char *path)
{
    char dir[KEEL_PATH_MAX], tmp[KEEL_PATH_MAX];
    keel_status_t st = parent_dir(path, dir, sizeof dir);
    if (st == KEEL_OK)
        st = keel_strlcpy(tmp, path, sizeof tmp);
    if (st != KEEL_OK)
        return st;
    int parent = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0)
        return errno == ENOENT ? KEEL_OK : keel_errorf(KEEL_ERR_IO, "open %s: %s", dir, strerror(errno));
    st = remove_at(parent, basename(tmp), path);
    close(parent);
    return st;
}

int keel_path_exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

keel_status_t keel_secret_read(const char *file, const char *env, char *out, size_t cap, size_t *len)
{
    if (file != NULL && env != NULL)
        return keel_errorf(KEEL_ERR_ARG, "give the secret by file or by environment variable, not both");
    const char *src = NULL;
    size_t srclen = 0;
    keel_buf_t b;
    keel_buf_init(&b, 0);
    if (file != NULL) {
        int fd = -1;
        if (keel_file_open_private(file, &fd) != KEEL_OK) {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            return keel_errorf(KEEL_ERR_CONFIG, "secret file %s", why);
        }
        keel_status_t st = keel_fd_read(fd, file, cap, &b);
        close(fd);
        if (st != KEEL_OK)
            return keel_errorf(st == KEEL_ERR_TOO_LARGE ? KEEL_ERR_CONFIG : st,
                               "secret file %s is unreadable or longer than %zu bytes", file, cap - 1);
        src = (const char *)b.data;
        srclen = b.len;
    } else if (env != NULL) {
        src = getenv(env);
        if (src == NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "environment variable %s is not set", env);
        srclen = strlen(src);
    } else {
        return keel_errorf(KEEL_ERR_ARG, "no secret source");
    }
    /* The first line; a NUL inside it would silently shorten the secret. */
    size_t n = 0;
    while (n < srclen && src[n] != '\n' && src[n] != '\r' && src[n] != '\0')
        n++;
    keel_status_t st = KEEL_OK;
    if (n < srclen && src[n] == '\0')
        st = keel_errorf(KEEL_ERR_CONFIG, "the secret contains a NUL byte");
    else if (n == 0)
        st = keel_errorf(KEEL_ERR_CONFIG, "the secret is empty");
    else if (n >= cap)
        st = keel_errorf(KEEL_ERR_CONFIG, "the secret is longer than %zu bytes", cap - 1);
    else {
        memcpy(out, src, n);
        out[n] = '\0';
        *len = n;
    }
    keel_buf_free(&b);
    return st;
}
