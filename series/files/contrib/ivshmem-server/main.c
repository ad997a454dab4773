/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: command line entry point. */

#include "qemu/osdep.h"
#include "ivshmem-server.h"

int main(int argc, char **argv)
{
    return ivshmem_server_run(argc, argv);
}
