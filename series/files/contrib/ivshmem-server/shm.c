/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: creation of the shared memory region. */

#include "qemu/osdep.h"
#include <sys/mman.h>
#include <sys/vfs.h>
#include "qapi/error.h"
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
 * An existing object must already have the requested size: resizing it
 * under peers that mapped it would break them.  An empty one (created but
 * never sized) is sized.
 */
static bool shm_check_existing(int fd, const char *name, uint64_t size,
                               Error **errp)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "-M %s: cannot stat", name);
        return false;
    }
    if (st.st_size == 0) {
        return shm_set_size(fd, size, name, errp);
    }
    if ((uint64_t)st.st_size != size) {
        error_setg(errp, "-M %s: existing shared memory object has %" PRIu64
                   " bytes, not the %" PRIu64 " requested with -l",
                   name, (uint64_t)st.st_size, size);
        return false;
    }
    return true;
}

bool server_shm_open_posix(ServerShm *shm, const char *name, uint64_t size,
                           Error **errp)
{
    g_autofree char *path = g_strdup_printf("%s%s",
                                            name[0] == '/' ? "" : "/", name);
    int fd;

    *shm = (ServerShm) { .fd = -1, .size = size };
    fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) {
        shm->created = true;
        if (!shm_set_size(fd, size, name, errp)) {
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
        if (!shm_check_existing(fd, name, size, errp)) {
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
                         Error **errp)
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
    unlink(path);
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
    if (!shm_set_size(fd, size, dir, errp)) {
        close(fd);
        return false;
    }
    shm->fd = fd;
    shm->size = size;
    return true;
}

void server_shm_cleanup(ServerShm *shm)
{
    if (shm->fd >= 0) {
        close(shm->fd);
        shm->fd = -1;
    }
    if (shm->created && shm->posix_name) {
        shm_unlink(shm->posix_name);
    }
    g_free(shm->posix_name);
    shm->posix_name = NULL;
}
