/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: creation of the shared memory region. */
#ifndef IVSHMEM_SERVER_SHM_H
#define IVSHMEM_SERVER_SHM_H

typedef struct ServerShm {
    int fd;
    uint64_t size;              /* actual size (rounded up for -m DIR) */
    char *posix_name;           /* "/NAME" for -M; NULL for -m */
    bool created;               /* we created the POSIX object */
} ServerShm;

/*
 * -M NAME: open or create the POSIX shared memory object NAME.  An
 * existing object is used only if it belongs to the server's user and
 * gives no access to others, nor to a group other than @group (-1: none).
 * A new one is created 0600, or 0660 owned by @group.  With @reserve,
 * -M and -m allocate the whole region at once (fallocate), so that a
 * filesystem filled later cannot make the peers' accesses fail.
 */
bool server_shm_open_posix(ServerShm *shm, const char *name, uint64_t size,
                           gid_t group, bool reserve, Error **errp);
/* --memfd: a memfd sealed against shrinking, growing and further seals. */
bool server_shm_open_memfd(ServerShm *shm, uint64_t size, Error **errp);
/* -m DIR: an unlinked file in DIR, rounded up to its block size. */
bool server_shm_open_dir(ServerShm *shm, const char *dir, uint64_t size,
                         bool reserve, Error **errp);
/* Close the fd; unlink the POSIX object if we created it. */
void server_shm_cleanup(ServerShm *shm);

#endif
