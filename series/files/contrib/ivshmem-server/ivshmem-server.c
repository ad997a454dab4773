/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: shared memory and eventfd distribution to ivshmem peers. */

#include "qemu/osdep.h"
#include "ivshmem-server.h"

int ivshmem_server_run(int argc, char **argv)
{
    fprintf(stderr, "ivshmem-server: not implemented yet\n");
    return 1;
}
