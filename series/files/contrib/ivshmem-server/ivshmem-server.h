/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: event loop and peer table of the ivshmem server. */
#ifndef IVSHMEM_SERVER_H
#define IVSHMEM_SERVER_H

#include "qemu/queue.h"
#include "qemu/ivshmem-proto.h"
#include "outq.h"
#include "log.h"

/*
 * Default bound on a client's unread messages, per vector: a client that
 * keeps reading while 16384 peers join at once is never dropped, and one
 * that never reads costs at most 256 KiB per vector.
 */
#define IVSHMEM_SERVER_QUEUE_PER_VECTOR 16384
/*
 * Default bound on the descriptors queued for one client, per vector: a
 * client may fall 4096 joins behind.  Queued descriptors of peers that
 * left stay open until sent, so this bounds what one client can pin.
 */
#define IVSHMEM_SERVER_QUEUE_FDS_PER_VECTOR 4096
/* Default bound on the descriptors a client leaves unread in its socket. */
#define IVSHMEM_SERVER_FDS_IN_FLIGHT 16
/*
 * Default share of the descriptor budget one user may use: 1/4, so that
 * three hostile local users cannot lock out a fourth.
 */
#define IVSHMEM_SERVER_USER_SHARE 4
/* Default time a client has to read its setup. */
#define IVSHMEM_SERVER_SETUP_TIMEOUT_MS 30000

typedef struct IvshmemServerConfig {
    uint32_t nvectors;
    size_t queue_limit;         /* -q */
    size_t queue_fds;           /* --queue-fds */
    uint32_t fds_in_flight;     /* --fds-in-flight */
    uint32_t max_peers;         /* --max-peers */
    uint32_t setup_timeout_ms;  /* --setup-timeout */
    uint32_t user_share;        /* --user-share */
    GArray *allow_uids;         /* uid_t; NULL or empty: anyone */
    GArray *allow_gids;         /* gid_t; NULL or empty: anyone */
} IvshmemServerConfig;

/*
 * One client user (uid), for fairness: the connections it holds (peers
 * and zombies), and the descriptors the server sent them that they have
 * not read yet, which Linux charges to the server's user.
 */
typedef struct IvshmemServerUser {
    uid_t uid;
    uint32_t nconns;
    uint32_t inflight;
    uint32_t lost;              /* unread by connections the server closed */
} IvshmemServerUser;

typedef struct IvshmemServerPeer {
    uint16_t id;
    int sock;
    bool doomed;                /* scheduled for removal */
    bool want_out;              /* EPOLLOUT armed */
    bool throttled;             /* ETOOMANYREFS: retried on the tick */
    bool generating;            /* setup burst not fully queued yet */
    bool in_setup;              /* setup not known to be read yet */
    uint32_t cursor;            /* next peer ID the setup burst looks at */
    uint64_t setup_len;         /* messages up to the end of the setup */
    int64_t setup_deadline;     /* ns, CLOCK_MONOTONIC */
    pid_t pid;                  /* SO_PEERCRED */
    uid_t uid;
    IvshmemServerUser *user;
    uint32_t inflight;          /* descriptors sent, not known to be read */
    bool zombie;                /* gone from the table; socket kept open */
                                /* until its unread descriptors are read */
    const char *doom_reason;
    SharedFd **vectors;         /* nvectors eventfds, owned */
    OutQueue outq;
    QTAILQ_ENTRY(IvshmemServerPeer) next;       /* join order; zombies */
    QTAILQ_ENTRY(IvshmemServerPeer) setup_next; /* while in_setup */
    QSLIST_ENTRY(IvshmemServerPeer) doomed_next;
} IvshmemServerPeer;

typedef struct IvshmemServer {
    IvshmemServerConfig cfg;
    uint32_t nvectors;
    SharedFd *shm;              /* the region; one reference held here */
    int listen_sock;
    int epoll_fd;
    int signal_fd;
    int timer_fd;               /* ticks while peers are throttled/in setup */
    bool timer_armed;
    int reserve_fd;             /* spare fd to refuse clients on EMFILE */
    uint32_t msg_truesize;      /* socket buffer cost of one message */
    uint32_t next_id;           /* where the ID search starts */
    uint32_t npeers;
    uint32_t nthrottled;
    bool listen_paused;         /* out of fds: accepts wait for the tick */
    uint32_t fd_budget;         /* fds in flight allowed; UINT32_MAX: any */
    uint32_t user_fd_cap;       /* of them, for one user */
    uint32_t inflight;          /* of all users */
    uint32_t lost;              /* of all users */
    GHashTable *users;          /* uid -> IvshmemServerUser */
    uint64_t id_used[IVSHMEM_MAX_PEERS / 64];  /* bitmap of by_id */
    IvshmemServerPeer **by_id;  /* IVSHMEM_MAX_PEERS slots */
    QTAILQ_HEAD(, IvshmemServerPeer) peers;
    QTAILQ_HEAD(, IvshmemServerPeer) in_setup;
    QTAILQ_HEAD(, IvshmemServerPeer) zombies;
    QSLIST_HEAD(, IvshmemServerPeer) doomed;
    GArray *deferred;           /* accepted sockets waiting for fds */
    bool quit;
} IvshmemServer;

/*
 * Set up the server on an already listening socket.  Takes ownership of
 * @listen_sock and @shm_fd.  SIGTERM, SIGINT and SIGHUP end
 * ivshmem_server_run; SIGUSR1 logs the server's state.
 */
bool ivshmem_server_init(IvshmemServer *s, int listen_sock, int shm_fd,
                         const IvshmemServerConfig *cfg, Error **errp);
/* False if the log writer is stuck: the caller must leave with _exit(). */
bool ivshmem_server_run(IvshmemServer *s);
void ivshmem_server_cleanup(IvshmemServer *s);

#endif
