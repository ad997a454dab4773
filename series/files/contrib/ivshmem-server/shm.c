/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: creation of the shared memory region. */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <sys/vfs.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "shm.h"

static bool shm_set_size(int fd, uint64_t size, const char *what,
                         Error **errp)
{
    if (ftruncate(fd, size) < 0) {
        error_setg_errno(errp, errno, "%s: cannot size to %" PRIu64 " bytes",
                         what, size);
        return false;
    }
    return true;
}

/*
 * Allocate the whole region now.  tmpfs and hugetlbfs allocate on first
 * touch: checking the free space at start is not enough, a local user
 * who fills the filesystem later makes the guests' next touch of a page
 * not yet allocated fail with SIGBUS.
 */
static bool shm_reserve(int fd, uint64_t size, const char *what,
                        Error **errp)
{
    int ret;

    do {
        ret = fallocate(fd, 0, 0, size);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0) {
        return true;
    }
    if (errno == EOPNOTSUPP) {
        fprintf(stderr, "ivshmem-server: warning: %s cannot reserve memory "
                "ahead (fallocate: %s): the region is allocated as peers "
                "touch it\n", what, strerror(errno));
        return true;
    }
    error_setg_errno(errp, errno, "-l: cannot reserve %" PRIu64 " bytes in "
                     "%s (make room, use a smaller -l, or --sparse to "
                     "allocate on first touch)", size, what);
    return false;
}

/*
 * Will @size bytes fit in the filesystem of @fd?  tmpfs and hugetlbfs
 * allocate on first touch: a region larger than the free space maps
 * fine and then kills the peers with SIGBUS when they touch its end.
 */
static bool shm_check_space(int fd, uint64_t size, const char *what,
                            Error **errp)
{
    struct statvfs fs;
    struct stat st;
    uint64_t avail, allocated;

    if (fstat(fd, &st) < 0 || fstatvfs(fd, &fs) < 0) {
        error_setg_errno(errp, errno, "%s: cannot statvfs", what);
        return false;
    }
    if (fs.f_blocks == 0) {
        return true;            /* no size limit (e.g. tmpfs size=0) */
    }
    /* what an existing object already has allocated needs no room */
    allocated = MIN((uint64_t)st.st_blocks * 512, size);
    avail = (uint64_t)fs.f_bavail * fs.f_frsize;
    if (size - allocated > avail) {
        g_autofree char *want = size_to_str(size);
        g_autofree char *have = size_to_str(avail);

        error_setg(errp, "-l: %s do not fit in %s, which has %s free; the "
                   "peers would crash with SIGBUS when they touch the "
                   "rest: use a smaller -l or make room", want, what, have);
        return false;
    }
    return true;
}

/*
 * An existing object must already have the requested size: resizing it
 * under peers that mapped it would break them.  An empty one (created but
 * never sized) is sized.  It must also be the server's alone: someone
 * who can open it reads and rewrites the guests' memory.
 */
static bool shm_check_existing(int fd, const char *name, uint64_t size,
                               gid_t group, bool reserve, Error **errp)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "-M %s: cannot stat", name);
        return false;
    }
    if (st.st_uid != geteuid()) {
        error_setg(errp, "-M %s: the existing object belongs to uid %u, not "
                   "to this server's user (uid %u): whoever owns it can "
                   "read and change the guests' memory; remove it, or "
                   "create it as uid %u with mode 0600",
                   name, st.st_uid, geteuid(), geteuid());
        return false;
    }
    if (st.st_mode & 0007) {
        error_setg(errp, "-M %s: the existing object is accessible to every "
                   "user (mode %04o); remove it or chmod o-rwx it",
                   name, st.st_mode & 07777);
        return false;
    }
    if ((st.st_mode & 0070) && (group == (gid_t)-1 || st.st_gid != group)) {
        error_setg(errp, "-M %s: the existing object gives group %u access "
                   "(mode %04o); chmod g-rwx it, or allow that group with "
                   "--shm-group %u", name, st.st_gid, st.st_mode & 07777,
                   st.st_gid);
        return false;
    }
    if (st.st_size == 0) {
        return shm_check_space(fd, size, "/dev/shm", errp) &&
               shm_set_size(fd, size, name, errp) &&
               (!reserve || shm_reserve(fd, size, "/dev/shm", errp));
    }
    if ((uint64_t)st.st_size != size) {
        error_setg(errp, "-M %s: existing shared memory object has %" PRIu64
                   " bytes, not the %" PRIu64 " requested with -l",
                   name, (uint64_t)st.st_size, size);
        return false;
    }
    return shm_check_space(fd, size, "/dev/shm", errp) &&
           (!reserve || shm_reserve(fd, size, "/dev/shm", errp));
}

static bool shm_give_group(int fd, const char *name, gid_t group,
                           Error **errp)
{
    if (group == (gid_t)-1) {
        return true;
    }
    if (fchown(fd, -1, group) < 0 || fchmod(fd, 0660) < 0) {
        error_setg_errno(errp, errno, "-M %s: cannot give group %u access",
                         name, group);
        return false;
    }
    return true;
}

bool server_shm_open_posix(ServerShm *shm, const char *name, uint64_t size,
                           gid_t group, bool reserve, Error **errp)
{
    g_autofree char *path = g_strdup_printf("%s%s",
                                            name[0] == '/' ? "" : "/", name);
    int fd;

    *shm = (ServerShm) { .fd = -1, .size = size };
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        shm->created = true;
        if (!shm_give_group(fd, name, group, errp) ||
            !shm_check_space(fd, size, "/dev/shm", errp) ||
            !shm_set_size(fd, size, name, errp) ||
            (reserve && !shm_reserve(fd, size, "/dev/shm", errp))) {
            close(fd);
            shm_unlink(path);
            return false;
        }
    } else if (errno == EEXIST) {
        fd = shm_open(path, O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) {
            error_setg_errno(errp, errno, "-M %s: cannot open", name);
            return false;
        }
        if (!shm_check_existing(fd, name, size, group, reserve, errp)) {
            close(fd);
            return false;
        }
    } else {
        error_setg_errno(errp, errno, "-M %s: cannot create", name);
        return false;
    }
    shm->fd = fd;
    shm->posix_name = g_steal_pointer(&path);
    return true;
}

bool server_shm_open_dir(ServerShm *shm, const char *dir, uint64_t size,
                         bool reserve, Error **errp)
{
    g_autofree char *path = g_build_filename(dir, "ivshmem.XXXXXX", NULL);
    struct statfs fs;
    int fd;

    *shm = (ServerShm) { .fd = -1 };
    fd = mkstemp(path);
    if (fd < 0) {
        error_setg_errno(errp, errno, "-m %s: cannot create a file", dir);
        return false;
    }
    if (unlink(path) < 0) {
        error_setg_errno(errp, errno, "-m %s: cannot unlink %s", dir, path);
        close(fd);
        return false;
    }
    qemu_set_cloexec(fd);
    if (fstatfs(fd, &fs) < 0) {
        error_setg_errno(errp, errno, "-m %s: cannot statfs", dir);
        close(fd);
        return false;
    }
    /* hugetlbfs reports its page size as the block size. */
    if (fs.f_bsize > 0) {
        size = QEMU_ALIGN_UP(size, (uint64_t)fs.f_bsize);
    }
    if (!shm_check_space(fd, size, dir, errp) ||
        !shm_set_size(fd, size, dir, errp) ||
        (reserve && !shm_reserve(fd, size, dir, errp))) {
        close(fd);
        return false;
    }
    shm->fd = fd;
    shm->size = size;
    return true;
}

bool server_shm_open_memfd(ServerShm *shm, uint64_t size, Error **errp)
{
    struct sysinfo si;
    uint64_t ram;
    int fd;

    *shm = (ServerShm) { .fd = -1, .size = size };
    /* A memfd has no filesystem limit: RAM and swap are the bound. */
    if (sysinfo(&si) == 0) {
        ram = ((uint64_t)si.totalram + si.totalswap) * si.mem_unit;
        if (size > ram) {
            g_autofree char *want = size_to_str(size);
            g_autofree char *have = size_to_str(ram);

            error_setg(errp, "-l: %s is more than the host's RAM and swap "
                       "(%s)", want, have);
            return false;
        }
    }
    fd = memfd_create("ivshmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        error_setg_errno(errp, errno, "--memfd: memfd_create");
        return false;
    }
    if (!shm_set_size(fd, size, "--memfd", errp)) {
        close(fd);
        return false;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
        error_setg_errno(errp, errno, "--memfd: cannot seal the memfd");
        close(fd);
        return false;
    }
    shm->fd = fd;
    return true;
}

void server_shm_cleanup(ServerShm *shm)
{
    if (shm->fd >= 0) {
        close(shm->fd);
        shm->fd = -1;
    }
    if (shm->created && shm->posix_name &&
        shm_unlink(shm->posix_name) < 0 && errno != ENOENT) {
        fprintf(stderr, "ivshmem-server: cannot remove %s: %s\n",
                shm->posix_name, strerror(errno));
    }
    g_free(shm->posix_name);
    shm->posix_name = NULL;
}
