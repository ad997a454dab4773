/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: scriptable debug client for the ivshmem server protocol. */
#ifndef IVSHMEM_CLIENT_H
#define IVSHMEM_CLIENT_H

int ivshmem_client_run(int argc, char **argv);

#endif
