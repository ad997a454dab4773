/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: scriptable debug client for the ivshmem server protocol. */
#ifndef IVSHMEM_CLIENT_H
#define IVSHMEM_CLIENT_H

#include "qemu/ivshmem-proto.h"

typedef struct IvshmemClient {
    int sock;
    IvshmemProto proto;
    uint8_t buf[IVSHMEM_MSG_SIZE];  /* message being received */
    size_t buf_len;
    int buf_fd;                     /* fd that came with it, or -1 */
    int shm_fd;
    uint64_t shm_size;
    bool have_id;
    bool ready;                     /* setup burst fully received */
    bool quit;
    bool closing;                   /* tearing down the peer table */
    int exit_status;
    GString *input;                 /* stdin bytes not yet a full line */
} IvshmemClient;

/* Connect to @path; the decoder keeps at most @max_vectors per peer. */
bool ivshmem_client_connect(IvshmemClient *c, const char *path,
                            uint32_t max_vectors, Error **errp);
/* Serve the socket, the interrupts and stdin until quit or EOF. */
int ivshmem_client_run(IvshmemClient *c);
/* Execute one command line; output goes to stdout. */
void ivshmem_client_command(IvshmemClient *c, const char *line);
void ivshmem_client_cleanup(IvshmemClient *c);

#endif
