/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: shared fds and bounded per-client outgoing queues. */

#include "qemu/osdep.h"
#include "qemu/host-utils.h"
#include "qemu/ivshmem-proto.h"
#include "outq.h"

#define OUTQ_MIN_CAP 16

SharedFd *shared_fd_new(int fd)
{
    SharedFd *sfd = g_new(SharedFd, 1);

    sfd->fd = fd;
    sfd->refs = 1;
    sfd->orphan = false;
    return sfd;
}

SharedFd *shared_fd_ref(SharedFd *sfd)
{
    sfd->refs++;
    return sfd;
}

void shared_fd_unref(SharedFd *sfd)
{
    if (sfd && --sfd->refs == 0) {
        close(sfd->fd);
        g_free(sfd);
    }
}

void outq_init(OutQueue *q, size_t limit, size_t fd_limit)
{
    *q = (OutQueue) { .limit = limit, .fd_limit = fd_limit };
}

static void outq_grow(OutQueue *q)
{
    size_t new_cap = MAX(q->cap * 2, OUTQ_MIN_CAP);
    OutMsg *ring = g_new(OutMsg, new_cap);
    size_t i;

    for (i = 0; i < q->len; i++) {
        ring[i] = q->ring[(q->head + i) % q->cap];
    }
    g_free(q->ring);
    q->ring = ring;
    q->cap = new_cap;
    q->head = 0;
}

OutPushResult outq_push(OutQueue *q, int64_t value, SharedFd *sfd)
{
    OutMsg *m;

    if (q->len >= q->limit) {
        return OUTQ_PUSH_FULL;
    }
    if (sfd && q->nfds >= q->fd_limit) {
        return OUTQ_PUSH_FDS_FULL;
    }
    if (q->len == q->cap) {
        outq_grow(q);
    }
    m = &q->ring[(q->head + q->len) % q->cap];
    m->value = value;
    m->sfd = sfd ? shared_fd_ref(sfd) : NULL;
    q->nfds += sfd != NULL;
    q->len++;
    return OUTQ_PUSH_OK;
}

static void outq_pop(OutQueue *q)
{
    q->nfds -= q->ring[q->head].sfd != NULL;
    shared_fd_unref(q->ring[q->head].sfd);
    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->sent_bytes = 0;
    if (q->len == 0) {
        /* Give the memory back: idle clients should cost nothing. */
        g_free(q->ring);
        q->ring = NULL;
        q->cap = 0;
        q->head = 0;
    }
}

/*
 * Send the remaining bytes of the head message.  Its fd travels with its
 * first byte, so a message resumed after a short send carries none.
 */
static ssize_t outq_send_head(OutQueue *q, int sock)
{
    const OutMsg *m = &q->ring[q->head];
    uint8_t buf[IVSHMEM_MSG_SIZE];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct iovec iov;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;
    ssize_t n;

    ivshmem_proto_encode(m->value, buf);
    iov.iov_base = buf + q->sent_bytes;
    iov.iov_len = sizeof(buf) - q->sent_bytes;

    if (m->sfd && q->sent_bytes == 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof(control.buf);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &m->sfd->fd, sizeof(int));
    }

    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    return n;
}

OutFlushResult outq_flush(OutQueue *q, int sock, uint32_t *fd_budget)
{
    while (q->len > 0) {
        bool fd = q->ring[q->head].sfd && q->sent_bytes == 0;
        ssize_t n;

        if (fd && *fd_budget == 0) {
            return OUTQ_FLUSH_OVER_BUDGET;
        }
        n = outq_send_head(q, sock);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return OUTQ_FLUSH_BLOCKED;
            }
            if (errno == ETOOMANYREFS) {
                /*
                 * The kernel limits the fds a user has in flight (sent,
                 * not yet received) to its RLIMIT_NOFILE, root excepted.
                 * Not this client's fault: retry once others have read.
                 */
                return OUTQ_FLUSH_THROTTLED;
            }
            return OUTQ_FLUSH_ERROR;
        }
        if (q->sent_bytes == 0) {
            q->fd_hist = (q->fd_hist << 1) | fd;
            *fd_budget -= fd;
        }
        q->sent_bytes += n;
        if (q->sent_bytes == IVSHMEM_MSG_SIZE) {
            q->sent++;
            outq_pop(q);
        }
    }
    return OUTQ_FLUSH_EMPTY;
}

uint32_t outq_unread_fds(const OutQueue *q, uint64_t unread)
{
    if (unread >= 64) {
        /* older messages: assume each carried one */
        return MIN(ctpop64(q->fd_hist) + (unread - 64), UINT32_MAX);
    }
    return ctpop64(q->fd_hist & ((1ULL << unread) - 1));
}

void outq_clear(OutQueue *q)
{
    while (q->len > 0) {
        outq_pop(q);
    }
}

size_t outq_count_orphans(const OutQueue *q)
{
    size_t i, n = 0;

    for (i = 0; i < q->len; i++) {
        const SharedFd *sfd = q->ring[(q->head + i) % q->cap].sfd;

        n += sfd && sfd->orphan;
    }
    return n;
}
