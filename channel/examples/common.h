/* SPDX-License-Identifier: MIT */
/* Examples: attach a region from the command line (-S server, -p file, -d device, or a memfd shared with a forked child). */
#ifndef EXAMPLES_COMMON_H
#define EXAMPLES_COMMON_H
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <ivshmem/channel.h>

struct ex_attach {
    const char *server, *path, *device;
    uint64_t size;
    int memfd, efd[2];
};

#define EX_USAGE_ATTACH \
    "  -S SOCKET   join the ivshmem server on SOCKET (host peer, eventfd doorbells)\n" \
    "  -p FILE     plain region in FILE (/dev/shm/NAME, a memdev file, resource2): polling\n" \
    "  -d DEVICE   the guest driver's /dev/ivshmemN (doorbells through the driver)\n" \
    "  (none)      both sides in this command: a memfd and eventfds, two processes\n"

static int ex_attach_opt(struct ex_attach *a, int opt, const char *arg)
{
    switch (opt) {
    case 'S': a->server = arg; return 1;
    case 'p': a->path = arg; return 1;
    case 'd': a->device = arg; return 1;
    }
    return 0;
}

static void ex_die(const char *what, int err)
{
    fprintf(stderr, "%s: %s\n", what, ivc_strerror(err));
    exit(1);
}

/* Before fork in the one-command mode: the memfd and one eventfd per side. */
static void ex_prepare(struct ex_attach *a, uint64_t size)
{
    a->memfd = -1;
    if (a->server || a->path || a->device)
        return;
    a->memfd = memfd_create("ivc-example", MFD_CLOEXEC);
    if (a->memfd < 0 || ftruncate(a->memfd, (off_t)size) < 0)
        ex_die("memfd", -errno);
    a->efd[0] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    a->efd[1] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

static struct ivc_region *ex_region(struct ex_attach *a, int side)
{
    struct ivc_region *r;
    int ret;

    if (a->server)
        ret = ivc_region_connect(a->server, 1, IVC_F_CREATE, &r);
    else if (a->device)
        ret = ivc_region_open_device(a->device, IVC_F_CREATE, &r);
    else if (a->path)
        ret = ivc_region_open_path(a->path, a->size, IVC_F_CREATE, &r);
    else {
        ret = ivc_region_open_fd(a->memfd, 0, IVC_F_CREATE, &r);
        if (ret == 0) {
            ivc_region_set_id(r, (unsigned)side);
            ivc_region_set_own_vector(r, 0, a->efd[side]);
            ivc_region_set_doorbell(r, (unsigned)!side, 0, a->efd[!side]);
        }
    }
    if (ret < 0)
        ex_die(a->server ? a->server : a->device ? a->device : a->path ? a->path : "memfd", ret);
    return r;
}

static int __attribute__((unused)) ex_cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}
#endif
