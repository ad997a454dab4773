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
    size_t sent_bytes;          /* of the head message, after a short send */
} OutQueue;

typedef enum OutFlushResult {
    OUTQ_FLUSH_EMPTY,           /* everything sent */
    OUTQ_FLUSH_BLOCKED,         /* socket full: wait for EPOLLOUT */
    OUTQ_FLUSH_ERROR,           /* the client is gone; errno is set */
} OutFlushResult;

void outq_init(OutQueue *q, size_t limit);
/* Queue a message; takes a new reference on @sfd.  False when full. */
bool outq_push(OutQueue *q, int64_t value, SharedFd *sfd);
/* Send as much as the non-blocking socket @sock takes. */
OutFlushResult outq_flush(OutQueue *q, int sock);
void outq_clear(OutQueue *q);

#endif
