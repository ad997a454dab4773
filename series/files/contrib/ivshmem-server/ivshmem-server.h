/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: event loop and peer table of the ivshmem server. */
#ifndef IVSHMEM_SERVER_H
#define IVSHMEM_SERVER_H

#include "qemu/queue.h"
#include "qemu/ivshmem-proto.h"
#include "outq.h"

/*
 * Messages a client may have queued beyond its initial burst before it
 * counts as stuck and is dropped.  A join costs the others N messages, a
 * leave one; the kernel socket buffer holds a few hundred more.
 */
/*
 * Default bound on a client's unread messages, per vector: a client that
 * keeps reading while 16384 peers join at once is never dropped, and one
 * that never reads costs at most 256 KiB per vector.
 */
#define IVSHMEM_SERVER_QUEUE_PER_VECTOR 16384

typedef struct IvshmemServerPeer {
    uint16_t id;
    int sock;
    bool doomed;                /* scheduled for removal */
    bool want_out;              /* EPOLLOUT armed */
    const char *doom_reason;
    SharedFd **vectors;         /* nvectors eventfds, owned */
    OutQueue outq;
    QTAILQ_ENTRY(IvshmemServerPeer) next;       /* join order */
    QSLIST_ENTRY(IvshmemServerPeer) doomed_next;
} IvshmemServerPeer;

typedef struct IvshmemServer {
    uint32_t nvectors;
    size_t queue_limit;
    SharedFd *shm;              /* the region; one reference held here */
    int listen_sock;
    int epoll_fd;
    int signal_fd;
    int reserve_fd;             /* spare fd to refuse clients on EMFILE */
    uint32_t next_id;           /* where the ID search starts */
    uint32_t npeers;
    IvshmemServerPeer **by_id;  /* IVSHMEM_MAX_PEERS slots */
    QTAILQ_HEAD(, IvshmemServerPeer) peers;
    QSLIST_HEAD(, IvshmemServerPeer) doomed;
    bool quit;
} IvshmemServer;

/* Logging: stderr, or syslog once daemonized; -v enables DEBUG lines. */
void server_log_setup(bool use_syslog, bool verbose);
void G_GNUC_PRINTF(1, 2) server_log(const char *fmt, ...);
void G_GNUC_PRINTF(1, 2) server_debug(const char *fmt, ...);
void G_GNUC_PRINTF(1, 2) server_error(const char *fmt, ...);

/*
 * Set up the server on an already listening socket.  Takes ownership of
 * @listen_sock and @shm_fd.  SIGTERM and SIGINT end ivshmem_server_run.
 */
bool ivshmem_server_init(IvshmemServer *s, int listen_sock, int shm_fd,
                         uint32_t nvectors, size_t queue_limit, Error **errp);
void ivshmem_server_run(IvshmemServer *s);
void ivshmem_server_cleanup(IvshmemServer *s);

#endif
