/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: scriptable debug client for the ivshmem server protocol. */

#include "qemu/osdep.h"
#include "ivshmem-client.h"

int ivshmem_client_run(int argc, char **argv)
{
    fprintf(stderr, "ivshmem-client: not implemented yet\n");
    return 1;
}
