/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: command line entry point. */

#include "qemu/osdep.h"
#include "ivshmem-client.h"

int main(int argc, char **argv)
{
    return ivshmem_client_run(argc, argv);
}
