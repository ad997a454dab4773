/* SPDX-License-Identifier: MIT */
/*
 * libivshmem-channel: attaching to a region (plain mapping, ivshmem server
 * peer, guest /dev/ivshmemN) and its doorbells.
 *
 * The server client is this library's own, written from the protocol
 * specification (docs/specs/ivshmem-spec.rst, version 0): every message is
 * a little-endian int64, optionally with one descriptor (SCM_RIGHTS).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"
#include "ivshmem-uapi.h"       /* guest/driver: the driver's ioctls */

#define SETUP_TIMEOUT_MS    5000
#define SETUP_PAUSE_MS      200

struct ivc_region *ivc_region_alloc(void)
{
    struct ivc_region *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->mem_fd = r->sock = r->dev_fd = -1;
    for (unsigned i = 0; i < IVC_MAX_VEC; i++)
        r->vec_fd[i] = -1;
    return r;
}

static void peer_free(struct ivc_peer *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n; i++)
        if (p->fd[i] >= 0)
            close(p->fd[i]);
    free(p);
}

void ivc_region_close(struct ivc_region *r)
{
    if (!r)
        return;
    if (r->base && !r->borrowed)
        munmap(r->base, r->size);
    for (unsigned i = 0; i < IVC_MAX_VEC; i++)
        if (r->vec_fd[i] >= 0 && r->vec_fd[i] != r->dev_fd)
            close(r->vec_fd[i]);
    if (r->peers) {
        for (unsigned i = 0; i < IVC_MAX_PEERS; i++)
            peer_free(r->peers[i]);
        free(r->peers);
    }
    if (r->mem_fd >= 0)
        close(r->mem_fd);
    if (r->sock >= 0)
        close(r->sock);
    if (r->dev_fd >= 0)
        close(r->dev_fd);
    free(r->present);
    free(r);
}

void *ivc_region_base(struct ivc_region *r) { return r->base; }
uint64_t ivc_region_size(struct ivc_region *r) { return r->size; }
int ivc_region_transport(struct ivc_region *r) { return r->transport; }
int ivc_region_id(struct ivc_region *r) { return r->own_id; }

int ivc_map_fd(struct ivc_region *r, int fd, uint64_t size, unsigned flags)
{
    struct stat st;
    int prot = PROT_READ | ((flags & IVC_F_READONLY) ? 0 : PROT_WRITE);

    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < size) {
        if (!(flags & IVC_F_CREATE) || st.st_size != 0)
            return -ENOSPC;             /* never grow what someone else sized */
        if (ftruncate(fd, (off_t)size) < 0)
            return -errno;
    }
    if (!size)
        size = (uint64_t)st.st_size;
    if (!size || size > (uint64_t)SIZE_MAX)
        return -EINVAL;
    void *p = mmap(NULL, size, prot, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    r->base = p;
    r->size = size;
    return 0;
}

static int is_ivshmem_dev(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISCHR(st.st_mode);
}

int ivc_region_open_fd(int fd, uint64_t size, unsigned flags,
                       struct ivc_region **out)
{
    struct ivc_region *r;
    int ret;

    if (!out || fd < 0)
        return -EINVAL;
    r = ivc_region_alloc();
    if (!r)
        return -ENOMEM;
    r->mem_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (r->mem_fd < 0) {
        ret = -errno;
        goto fail;
    }
    ret = ivc_map_fd(r, r->mem_fd, size, flags);
    if (ret < 0)
        goto fail;
    ret = ivc_layout_attach(r, flags);
    if (ret < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    ivc_region_close(r);
    return ret;
}

int ivc_region_attach_mem(void *base, uint64_t size, unsigned flags,
                          struct ivc_region **out)
{
    struct ivc_region *r;
    int ret;

    if (!base || !size || !out)
        return -EINVAL;
    r = ivc_region_alloc();
    if (!r)
        return -ENOMEM;
    r->base = base;
    r->size = size;
    r->borrowed = true;
    ret = ivc_layout_attach(r, flags);
    if (ret < 0) {
        ivc_region_close(r);
        return ret;
    }
    *out = r;
    return 0;
}

int ivc_region_open_path(const char *path, uint64_t size, unsigned flags,
                         struct ivc_region **out)
{
    int oflags = ((flags & IVC_F_READONLY) ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    int fd, ret;

    if (!path || !out)
        return -EINVAL;
    fd = open(path, oflags | ((flags & IVC_F_CREATE) && size ? O_CREAT : 0), 0600);
    if (fd < 0)
        return -errno;
    if (is_ivshmem_dev(fd)) {
        close(fd);
        return ivc_region_open_device(path, flags, out);
    }
    ret = ivc_region_open_fd(fd, size, flags, out);
    close(fd);
    return ret;
}

/* ------------------------------------------------------------- doorbells */

static int peers_table(struct ivc_region *r)
{
    if (!r->peers) {
        r->peers = calloc(IVC_MAX_PEERS, sizeof(*r->peers));
        if (!r->peers)
            return -ENOMEM;
    }
    return 0;
}

static struct ivc_peer *peer_get(struct ivc_region *r, unsigned id)
{
    if (id >= IVC_MAX_PEERS || peers_table(r) < 0)
        return NULL;
    if (!r->peers[id]) {
        r->peers[id] = calloc(1, sizeof(struct ivc_peer));
    }
    return r->peers[id];
}

int ivc_region_set_id(struct ivc_region *r, unsigned id)
{
    if (id >= IVC_MAX_PEERS || r->transport == IVC_TRANSPORT_SERVER ||
        r->transport == IVC_TRANSPORT_DEVICE)
        return -EINVAL;
    r->own_id = (int)id;
    return 0;
}

int ivc_region_set_doorbell(struct ivc_region *r, unsigned peer,
                            unsigned vector, int efd)
{
    struct ivc_peer *p;

    if (vector >= IVC_MAX_VEC || efd < 0 || r->transport == IVC_TRANSPORT_DEVICE)
        return -EINVAL;
    p = peer_get(r, peer);
    if (!p)
        return peer >= IVC_MAX_PEERS ? -EINVAL : -ENOMEM;
    while (p->n <= vector)
        p->fd[p->n++] = -1;
    if (p->fd[vector] >= 0)
        close(p->fd[vector]);
    p->fd[vector] = fcntl(efd, F_DUPFD_CLOEXEC, 3);
    if (p->fd[vector] < 0)
        return -errno;
    if (r->transport == IVC_TRANSPORT_PLAIN)
        r->transport = IVC_TRANSPORT_LOCAL;
    return 0;
}

int ivc_region_set_own_vector(struct ivc_region *r, unsigned vector, int efd)
{
    if (vector >= IVC_MAX_VEC || efd < 0 || r->transport == IVC_TRANSPORT_DEVICE)
        return -EINVAL;
    if (r->vec_fd[vector] >= 0)
        close(r->vec_fd[vector]);
    /* a dup shares the caller's flags: left alone, see read_nowait() */
    r->vec_fd[vector] = fcntl(efd, F_DUPFD_CLOEXEC, 3);
    if (r->vec_fd[vector] < 0)
        return -errno;
    if (r->transport == IVC_TRANSPORT_PLAIN)
        r->transport = IVC_TRANSPORT_LOCAL;
    return 0;
}

int ivc_region_ring(struct ivc_region *r, unsigned peer, unsigned vector)
{
    if (r->transport == IVC_TRANSPORT_PLAIN)
        return -ENOTSUP;
    if (peer >= IVC_MAX_PEERS || vector >= IVC_MAX_VEC)
        return -ENOENT;
    if (r->transport == IVC_TRANSPORT_DEVICE) {
        struct ivshmem_ring ring = { .peer = (uint16_t)peer,
                                     .vector = (uint16_t)vector };

        return ioctl(r->dev_fd, IVSHMEM_IOCTL_RING, &ring) < 0 ? -errno : 0;
    }
    struct ivc_peer *p = r->peers ? r->peers[peer] : NULL;
    if (!p || vector >= p->n || p->fd[vector] < 0)
        return -ENOENT;
    uint64_t one = 1;
    if (write(p->fd[vector], &one, sizeof(one)) != sizeof(one))
        return errno == EAGAIN ? 0 : -errno;    /* counter full: it is rung */
    return 0;
}

int ivc_region_vector_fd(struct ivc_region *r, unsigned vector)
{
    if (vector >= IVC_MAX_VEC || r->vec_fd[vector] < 0)
        return -ENOENT;
    return r->vec_fd[vector];
}

/*
 * Read one counter without blocking, whatever the descriptor's flags: 1 if
 * something was read, 0 if nothing was pending, -errno.
 *
 * The flags cannot be relied on.  An eventfd from the server is one file
 * description shared (SCM_RIGHTS) with the server and with every peer that
 * rings it, so O_NONBLOCK is shared too, and QEMU's chardev resets every
 * descriptor it receives to blocking (char-socket.c, "O_NONBLOCK is
 * preserved across SCM_RIGHTS so reset it"): a guest that learnt of us
 * after our own fcntl() at join left our drain blocked in read() until the
 * next ring.  So the library never changes the flags of a descriptor it
 * did not open, and reads with RWF_NOWAIT, or only after poll() says there
 * is something where the kernel refuses RWF_NOWAIT.
 */
static int read_nowait(int fd, void *buf, size_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    ssize_t n = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);

    if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS)) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (poll(&pfd, 1, 0) != 1 || !(pfd.revents & POLLIN))
            return 0;
        n = read(fd, buf, len);
    }
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
    return n == (ssize_t)len;
}

int ivc_region_drain(struct ivc_region *r, unsigned vector)
{
    int fd = ivc_region_vector_fd(r, vector);
    uint64_t v;
    int ret = 0;

    if (fd < 0)
        return fd;
    if (r->transport == IVC_TRANSPORT_DEVICE) {
        uint32_t n;     /* the driver returns the events since the last read */

        ret = read_nowait(fd, &n, sizeof(n));
        return ret < 0 ? ret : 0;
    }
    /* eventfd: one read empties it (more with EFD_SEMAPHORE: bounded) */
    for (int i = 0; i < 64 && (ret = read_nowait(fd, &v, sizeof(v))) > 0; i++)
        ;
    return ret < 0 ? ret : 0;
}

/* Sleep until own @vector is rung or @timeout_ms passes, then drain it. */
int ivc_transport_wait(struct ivc_region *r, unsigned vector, int timeout_ms)
{
    int fd = ivc_region_vector_fd(r, vector);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };

    if (fd < 0)
        return fd;
    int n = poll(&pfd, 1, timeout_ms);
    if (n < 0)
        return -errno;
    if (n > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)))
        return r->transport == IVC_TRANSPORT_DEVICE ? -EPIPE : -EIO;
    if (n > 0)
        ivc_region_drain(r, vector);
    return 0;
}

/* ---------------------------------------------------------------- server */

/* One message: 0 and *val and *fd, -EAGAIN (nothing yet), -EPIPE (closed). */
static int srv_recv(int sock, int64_t *val, int *fd)
{
    char cbuf[CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov = { .iov_base = val, .iov_len = sizeof(*val) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
    ssize_t n;

    *fd = -1;
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN :
               errno == EINTR ? -EAGAIN : -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[4];
        memcpy(fds, CMSG_DATA(c), cnt * sizeof(int) < sizeof(fds) ?
               cnt * sizeof(int) : sizeof(fds));
        for (size_t i = 0; i < cnt && i < 4; i++) {
            if (*fd < 0)
                *fd = fds[i];
            else
                close(fds[i]);      /* one descriptor per message */
        }
    }
    if (n == 0) {
        if (*fd >= 0)
            close(*fd);
        return -EPIPE;
    }
    if (n != sizeof(*val) || (msg.msg_flags & MSG_CTRUNC)) {
        /* a stream socket may split the 8 bytes: read the rest */
        if (n > 0 && n < (ssize_t)sizeof(*val)) {
            size_t got = (size_t)n;
            struct pollfd pfd = { .fd = sock, .events = POLLIN };
            while (got < sizeof(*val)) {
                if (poll(&pfd, 1, 1000) <= 0)
                    return -EPROTO;
                n = recv(sock, (char *)val + got, sizeof(*val) - got, 0);
                if (n <= 0)
                    return n == 0 ? -EPIPE : -errno;
                got += (size_t)n;
            }
        }
    }
    *val = (int64_t)le64toh((uint64_t)*val);
    return 0;
}

/* Handle one message after setup: a peer's vector, or a peer leaving. */
static void srv_handle(struct ivc_region *r, int64_t val, int fd)
{
    if (val < 0 || val >= IVC_MAX_PEERS || val == r->own_id) {
        if (fd >= 0)
            close(fd);              /* not for us: ignored, as QEMU does */
        return;
    }
    if (fd < 0) {                   /* the peer left */
        if (r->peers && r->peers[val]) {
            peer_free(r->peers[val]);
            r->peers[val] = NULL;
        }
        return;
    }
    struct ivc_peer *p = peer_get(r, (unsigned)val);
    if (!p || p->n >= IVC_MAX_VEC) {
        close(fd);
        return;
    }
    p->fd[p->n++] = fd;
}

int ivc_region_connect(const char *path, unsigned vectors, unsigned flags,
                       struct ivc_region **out)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct ivc_region *r;
    unsigned own_n = 0, step = 0;
    int ret;

    if (!path || !out || strlen(path) >= sizeof(sa.sun_path) ||
        vectors > IVC_MAX_VEC)
        return -EINVAL;
    if (!vectors)
        vectors = 1;
    r = ivc_region_alloc();
    if (!r)
        return -ENOMEM;
    r->transport = IVC_TRANSPORT_SERVER;
    r->want_vectors = vectors;
    if (peers_table(r) < 0) {
        ret = -ENOMEM;
        goto fail;
    }
    strcpy(sa.sun_path, path);
    r->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->sock < 0 || connect(r->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ret = -errno;
        goto fail;
    }
    uint64_t deadline = ivc_now_ns() + SETUP_TIMEOUT_MS * 1000000ull;
    uint64_t pause_end = UINT64_MAX;
    for (;;) {
        int64_t val;
        int fd;
        uint64_t now = ivc_now_ns();

        /* own vectors complete: as many as wanted, or as a peer has */
        if (step == 3 && own_n > 0) {
            bool done = own_n >= vectors;
            for (unsigned i = 0; !done && i < IVC_MAX_PEERS; i++)
                if (r->peers[i] && r->peers[i]->n > 0)
                    done = own_n >= r->peers[i]->n;
            if (done || now >= pause_end)
                break;
        }
        if (now >= deadline) {
            ret = step == 3 ? 0 : -ETIMEDOUT;
            if (ret == 0 && own_n > 0)
                break;
            ret = -ETIMEDOUT;
            goto fail;
        }
        struct pollfd pfd = { .fd = r->sock, .events = POLLIN };
        uint64_t until = pause_end < deadline ? pause_end : deadline;
        int ms = (int)((until - now) / 1000000) + 1;
        if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
            ret = -errno;
            goto fail;
        }
        ret = srv_recv(r->sock, &val, &fd);
        if (ret == -EAGAIN)
            continue;
        if (ret < 0)
            goto fail;
        if (step == 0) {            /* protocol version */
            if (val != 0 || fd >= 0) {
                if (fd >= 0)
                    close(fd);
                ret = -EPROTONOSUPPORT;
                goto fail;
            }
            step = 1;
        } else if (step == 1) {     /* own ID */
            if (val < 0 || val >= IVC_MAX_PEERS || fd >= 0) {
                if (fd >= 0)
                    close(fd);
                ret = -EPROTO;
                goto fail;
            }
            r->own_id = (int)val;
            step = 2;
        } else if (step == 2) {     /* -1 with the memory */
            if (val != -1 || fd < 0) {
                if (fd >= 0)
                    close(fd);
                ret = -EPROTO;
                goto fail;
            }
            r->mem_fd = fd;
            ret = ivc_map_fd(r, fd, 0, flags & IVC_F_READONLY);
            if (ret < 0)
                goto fail;
            step = 3;
        } else if (val == r->own_id && fd >= 0) {
            if (own_n < vectors) {
                r->vec_fd[own_n] = fd;  /* flags untouched: see read_nowait() */
            } else {
                close(fd);
            }
            own_n++;
            pause_end = ivc_now_ns() + SETUP_PAUSE_MS * 1000000ull;
        } else {
            srv_handle(r, val, fd);
        }
    }
    ret = ivc_layout_attach(r, flags);
    if (ret < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    ivc_region_close(r);
    return ret;
}

int ivc_region_poll_server(struct ivc_region *r)
{
    int handled = 0;

    if (r->sock < 0)
        return r->transport == IVC_TRANSPORT_SERVER ? -EPIPE : -ENOTSUP;
    if (r->server_gone)
        return -EPIPE;
    for (int i = 0; i < 4096; i++) {
        int64_t val;
        int fd;
        int ret = srv_recv(r->sock, &val, &fd);

        if (ret == -EAGAIN)
            break;
        if (ret < 0) {
            /* the server left: keep memory and doorbells, as QEMU does */
            r->server_gone = true;
            return handled ? handled : -EPIPE;
        }
        if (val == r->own_id && fd >= 0)
            close(fd);              /* late own vector beyond the wanted ones */
        else
            srv_handle(r, val, fd);
        handled++;
    }
    return handled;
}

int ivc_region_server_fd(struct ivc_region *r)
{
    return r->sock >= 0 ? r->sock : -ENOTSUP;
}

/*
 * A guest device with peer presence (the driver's IVSHMEM_IOCTL_PEERS):
 * read the peer list again when the driver says it changed (POLLPRI on
 * the device file) or on the first call.
 */
static int ivc_presence_refresh(struct ivc_region *r)
{
    struct pollfd pfd = { .fd = r->dev_fd, .events = POLLPRI };
    struct ivshmem_peers p;
    struct ivshmem_peer *list;

    if (r->present && (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLPRI)))
        return 0;
    list = calloc(IVC_MAX_PEERS, sizeof(*list));
    if (!list)
        return -ENOMEM;
    if (!r->present && !(r->present = malloc(IVC_MAX_PEERS))) {
        free(list);
        return -ENOMEM;
    }
    memset(&p, 0, sizeof(p));
    p.max = IVC_MAX_PEERS;
    p.entries = (uintptr_t)list;
    if (ioctl(r->dev_fd, IVSHMEM_IOCTL_PEERS, &p) < 0) {
        int err = -errno;

        free(list);
        free(r->present);
        r->present = NULL;
        return err;
    }
    memset(r->present, 0, IVC_MAX_PEERS);
    for (uint32_t i = 0; i < p.count && i < IVC_MAX_PEERS; i++)
        r->present[list[i].peer] = 1;
    free(list);
    return 0;
}

int ivc_region_peer_present(struct ivc_region *r, unsigned peer)
{
    if (r->transport == IVC_TRANSPORT_DEVICE && r->presence) {
        int ret;

        if (peer == (unsigned)r->own_id)
            return 1;
        ret = ivc_presence_refresh(r);
        if (ret < 0)
            return ret;
        return peer < IVC_MAX_PEERS && r->present[peer];
    }
    if (r->transport != IVC_TRANSPORT_SERVER)
        return -ENOTSUP;
    if (peer == (unsigned)r->own_id)
        return 1;
    return peer < IVC_MAX_PEERS && r->peers && r->peers[peer] &&
           r->peers[peer]->n > 0;
}

/* ---------------------------------------------------------------- device */

int ivc_region_open_device(const char *path, unsigned flags,
                           struct ivc_region **out)
{
    struct ivshmem_info info;
    struct ivc_region *r;
    int ret;

    if (!path || !out)
        return -EINVAL;
    r = ivc_region_alloc();
    if (!r)
        return -ENOMEM;
    r->transport = IVC_TRANSPORT_DEVICE;
    r->dev_fd = open(path, O_RDWR | O_CLOEXEC);
    if (r->dev_fd < 0) {
        ret = -errno;
        goto fail;
    }
    memset(&info, 0, sizeof(info));
    if (ioctl(r->dev_fd, IVSHMEM_IOCTL_INFO, &info) < 0) {
        ret = -errno;
        goto fail;
    }
    if (!info.region_size || info.region_size > SIZE_MAX) {
        ret = -EINVAL;
        goto fail;
    }
    r->own_id = (int)(info.ivposition & 0xffff);
    r->presence = info.version >= 3 && (info.flags & IVSHMEM_INFO_F_PRESENCE);
    ret = ivc_map_fd(r, r->dev_fd, info.region_size, flags & IVC_F_READONLY);
    if (ret < 0)
        goto fail;
    /* one open file per vector: each BINDs one and is read/polled alone */
    for (uint32_t v = 0; v < info.vectors && v < IVC_MAX_VEC; v++) {
        struct ivshmem_bind b = { .vector = v };
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);  /* our own */

        if (fd < 0) {
            ret = -errno;
            goto fail;
        }
        if (ioctl(fd, IVSHMEM_IOCTL_BIND, &b) < 0) {
            ret = -errno;
            close(fd);
            goto fail;
        }
        r->vec_fd[v] = fd;
    }
    ret = ivc_layout_attach(r, flags);
    if (ret < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    ivc_region_close(r);
    return ret;
}
