/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: shared fds and bounded per-client outgoing queues. */
#ifndef IVSHMEM_SERVER_OUTQ_H
#define IVSHMEM_SERVER_OUTQ_H

/*
 * A file descriptor shared by several queued messages and by its owner
 * (a peer's vector eventfd, or the shared memory).  It is closed when
 * the last reference goes away, so a message queued for a slow client
 * still carries a valid fd after the fd's owner has left.
 */
typedef struct SharedFd {
    int fd;
    unsigned refs;
    bool orphan;                /* its owner left; only queues hold it */
} SharedFd;

SharedFd *shared_fd_new(int fd);
SharedFd *shared_fd_ref(SharedFd *sfd);
void shared_fd_unref(SharedFd *sfd);

typedef struct OutMsg {
    int64_t value;
    SharedFd *sfd;              /* NULL: the message carries no fd */
} OutMsg;

/* A ring of messages waiting to be sent to one client. */
typedef struct OutQueue {
    OutMsg *ring;
    size_t cap;
    size_t head;
    size_t len;
    size_t limit;               /* push fails once len reaches it */
    size_t nfds;                /* queued messages that carry an fd */
    size_t fd_limit;            /* push of an fd fails once nfds reaches it */
    size_t sent_bytes;          /* of the head message, after a short send */
    uint64_t sent;              /* messages handed to the kernel in all */
    uint64_t fd_hist;           /* bit i: the i-th last message begun */
                                /* carried a descriptor */
} OutQueue;

typedef enum OutPushResult {
    OUTQ_PUSH_OK,
    OUTQ_PUSH_FULL,             /* @limit messages queued */
    OUTQ_PUSH_FDS_FULL,         /* @fd_limit descriptors queued */
} OutPushResult;

typedef enum OutFlushResult {
    OUTQ_FLUSH_EMPTY,           /* everything sent */
    OUTQ_FLUSH_BLOCKED,         /* socket full: wait for EPOLLOUT */
    OUTQ_FLUSH_THROTTLED,       /* ETOOMANYREFS: too many fds in flight */
    OUTQ_FLUSH_OVER_BUDGET,     /* the next message's fd is over *fd_budget */
    OUTQ_FLUSH_ERROR,           /* the client is gone; errno is set */
} OutFlushResult;

void outq_init(OutQueue *q, size_t limit, size_t fd_limit);
/* Queue a message; takes a new reference on @sfd unless it fails. */
OutPushResult outq_push(OutQueue *q, int64_t value, SharedFd *sfd);
/*
 * Send as much as the non-blocking socket @sock takes, at most
 * *@fd_budget descriptors; *@fd_budget is decreased by those sent.
 */
OutFlushResult outq_flush(OutQueue *q, int sock, uint32_t *fd_budget);
/* Descriptors among the last @unread messages begun (an upper bound). */
uint32_t outq_unread_fds(const OutQueue *q, uint64_t unread);
void outq_clear(OutQueue *q);
/* Queued messages whose fd is held only because they are queued. */
size_t outq_count_orphans(const OutQueue *q);

#endif
