/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: shared memory and eventfd distribution to ivshmem peers. */
#ifndef IVSHMEM_SERVER_H
#define IVSHMEM_SERVER_H

int ivshmem_server_run(int argc, char **argv);

#endif
