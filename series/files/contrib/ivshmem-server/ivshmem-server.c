/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: event loop and peer table of the ivshmem server. */

#include "qemu/osdep.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <syslog.h>
#include <glib-unix.h>
#include "qapi/error.h"
#include "ivshmem-server.h"

#define EPOLL_BATCH 64

/* epoll tags for the two fds that are not peers */
static char listen_tag;
static char signal_tag;

static bool log_to_syslog;
static bool log_verbose;

void server_log_setup(bool use_syslog, bool verbose)
{
    log_to_syslog = use_syslog;
    log_verbose = verbose;
    if (use_syslog) {
        openlog("ivshmem-server", LOG_PID, LOG_DAEMON);
    }
}

static void G_GNUC_PRINTF(2, 0)
server_vlog(int priority, const char *fmt, va_list ap)
{
    if (log_to_syslog) {
        vsyslog(priority, fmt, ap);
    } else {
        fprintf(stderr, "ivshmem-server: ");
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
}

void server_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    server_vlog(LOG_INFO, fmt, ap);
    va_end(ap);
}

void server_debug(const char *fmt, ...)
{
    va_list ap;

    if (!log_verbose) {
        return;
    }
    va_start(ap, fmt);
    server_vlog(LOG_DEBUG, fmt, ap);
    va_end(ap);
}

void server_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    server_vlog(LOG_ERR, fmt, ap);
    va_end(ap);
}

/*
 * Peer ID policy: IDs are handed out in increasing order, starting at 0,
 * and wrap around after 65535, skipping IDs still in use.  A peer that
 * leaves therefore does not see its ID given to a newcomer until all the
 * other IDs have been used, so a doorbell still aimed at a departed peer
 * (or a reconnecting peer's stale view) never reaches a stranger.
 */
static bool alloc_peer_id(IvshmemServer *s, uint16_t *id)
{
    uint32_t i;

    for (i = 0; i < IVSHMEM_MAX_PEERS; i++) {
        uint32_t candidate = (s->next_id + i) % IVSHMEM_MAX_PEERS;

        if (!s->by_id[candidate]) {
            *id = candidate;
            s->next_id = (candidate + 1) % IVSHMEM_MAX_PEERS;
            return true;
        }
    }
    return false;
}

static void doom_peer(IvshmemServer *s, IvshmemServerPeer *peer,
                      const char *reason)
{
    if (!peer->doomed) {
        peer->doomed = true;
        peer->doom_reason = reason;
        QSLIST_INSERT_HEAD(&s->doomed, peer, doomed_next);
    }
}

static void set_want_out(IvshmemServer *s, IvshmemServerPeer *peer, bool on)
{
    struct epoll_event ev = {
        .events = EPOLLIN | (on ? EPOLLOUT : 0),
        .data.ptr = peer,
    };

    if (peer->want_out != on) {
        peer->want_out = on;
        epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, peer->sock, &ev);
    }
}

static void flush_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    switch (outq_flush(&peer->outq, peer->sock)) {
    case OUTQ_FLUSH_EMPTY:
        set_want_out(s, peer, false);
        break;
    case OUTQ_FLUSH_BLOCKED:
        server_debug("peer %u: socket full, %zu messages queued",
                     peer->id, peer->outq.len);
        set_want_out(s, peer, true);
        break;
    case OUTQ_FLUSH_ERROR:
        server_debug("peer %u: send failed: %s", peer->id, strerror(errno));
        doom_peer(s, peer, "send failed");
        break;
    }
}

/* Flush unless already waiting for EPOLLOUT, which will flush. */
static void kick_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    if (!peer->doomed && !peer->want_out) {
        flush_peer(s, peer);
    }
}

static void send_to_peer(IvshmemServer *s, IvshmemServerPeer *peer,
                         int64_t value, SharedFd *sfd)
{
    if (peer->doomed) {
        return;
    }
    if (!outq_push(&peer->outq, value, sfd)) {
        doom_peer(s, peer, "stopped reading (outgoing queue full)");
    }
}

static void free_peer(IvshmemServerPeer *peer, uint32_t nvectors)
{
    uint32_t v;

    if (peer->sock >= 0) {
        close(peer->sock);
    }
    for (v = 0; v < nvectors; v++) {
        shared_fd_unref(peer->vectors[v]);
    }
    outq_clear(&peer->outq);
    g_free(peer->vectors);
    g_free(peer);
}

static void remove_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    IvshmemServerPeer *other;

    QTAILQ_REMOVE(&s->peers, peer, next);
    s->by_id[peer->id] = NULL;
    s->npeers--;
    epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, peer->sock, NULL);
    server_log("peer %u left: %s (%u peers)", peer->id, peer->doom_reason,
               s->npeers);

    QTAILQ_FOREACH(other, &s->peers, next) {
        send_to_peer(s, other, peer->id, NULL);
        kick_peer(s, other);
    }
    free_peer(peer, s->nvectors);
}

/* Remove doomed peers; telling the others may doom more of them. */
static void reap_doomed_peers(IvshmemServer *s)
{
    while (!QSLIST_EMPTY(&s->doomed)) {
        IvshmemServerPeer *peer = QSLIST_FIRST(&s->doomed);

        QSLIST_REMOVE_HEAD(&s->doomed, doomed_next);
        remove_peer(s, peer);
    }
}

static bool create_vectors(IvshmemServer *s, IvshmemServerPeer *peer)
{
    uint32_t v;

    peer->vectors = g_new0(SharedFd *, s->nvectors);
    for (v = 0; v < s->nvectors; v++) {
        int fd = eventfd(0, EFD_CLOEXEC);

        if (fd < 0) {
            return false;
        }
        peer->vectors[v] = shared_fd_new(fd);
    }
    return true;
}

static void send_vectors(IvshmemServer *s, IvshmemServerPeer *to,
                         const IvshmemServerPeer *of)
{
    uint32_t v;

    for (v = 0; v < s->nvectors; v++) {
        send_to_peer(s, to, of->id, of->vectors[v]);
    }
}

/* The setup burst of protocol version 0 for a newcomer. */
static void queue_setup(IvshmemServer *s, IvshmemServerPeer *peer)
{
    IvshmemServerPeer *other;

    send_to_peer(s, peer, IVSHMEM_PROTOCOL_VERSION, NULL);
    send_to_peer(s, peer, peer->id, NULL);
    send_to_peer(s, peer, IVSHMEM_MSG_SHM, s->shm);
    QTAILQ_FOREACH(other, &s->peers, next) {
        send_vectors(s, peer, other);
    }
    send_vectors(s, peer, peer);
}

static void refuse_client(int sock, const char *why)
{
    server_log("refused a new client: %s", why);
    close(sock);
}

static void join_peer(IvshmemServer *s, int sock)
{
    g_autofree IvshmemServerPeer *peer = g_new0(IvshmemServerPeer, 1);
    struct epoll_event ev = { .events = EPOLLIN };
    IvshmemServerPeer *other;
    size_t burst = 3 + (size_t)(s->npeers + 1) * s->nvectors;

    peer->sock = -1;
    if (!create_vectors(s, peer)) {
        int err = errno;

        free_peer(g_steal_pointer(&peer), s->nvectors);
        refuse_client(sock, strerror(err));
        return;
    }
    if (!alloc_peer_id(s, &peer->id)) {
        free_peer(g_steal_pointer(&peer), s->nvectors);
        refuse_client(sock, "all 65536 peer IDs are in use");
        return;
    }
    peer->sock = sock;
    ev.data.ptr = peer;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, sock, &ev) < 0) {
        int err = errno;

        peer->sock = -1;    /* refuse_client closes it */
        free_peer(g_steal_pointer(&peer), s->nvectors);
        refuse_client(sock, strerror(err));
        return;
    }

    outq_init(&peer->outq, burst + s->queue_limit);
    queue_setup(s, peer);
    QTAILQ_FOREACH(other, &s->peers, next) {
        send_vectors(s, other, peer);
        kick_peer(s, other);
    }
    s->by_id[peer->id] = peer;
    s->npeers++;
    QTAILQ_INSERT_TAIL(&s->peers, peer, next);
    server_log("peer %u joined with %u vectors (%u peers)", peer->id,
               s->nvectors, s->npeers);
    kick_peer(s, g_steal_pointer(&peer));
}

/*
 * Out of fds: accept the pending client with the reserve fd freed, and
 * close it at once, so it is told no instead of spinning the loop.
 * Returns false when no client was pending (Linux reports EMFILE before
 * it looks at the queue).
 */
static bool refuse_with_reserve_fd(IvshmemServer *s)
{
    int sock;

    close(s->reserve_fd);
    sock = accept4(s->listen_sock, NULL, NULL, SOCK_CLOEXEC);
    if (sock >= 0) {
        refuse_client(sock, "out of file descriptors");
    }
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return sock >= 0;
}

static void accept_clients(IvshmemServer *s)
{
    for (;;) {
        int sock = accept4(s->listen_sock, NULL, NULL,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (sock >= 0) {
            server_debug("accepted connection (fd %d)", sock);
            join_peer(s, sock);     /* doomed peers are reaped later */
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) {
            continue;
        }
        if ((errno == EMFILE || errno == ENFILE) && s->reserve_fd >= 0 &&
            refuse_with_reserve_fd(s)) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            server_error("accept: %s", strerror(errno));
        }
        return;
    }
}

/* Traffic is one way; anything readable on a peer ends it. */
static void check_peer_input(IvshmemServer *s, IvshmemServerPeer *peer)
{
    char byte;
    ssize_t n = recv(peer->sock, &byte, 1, MSG_DONTWAIT);

    if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        doom_peer(s, peer, "closed the connection");
    } else if (n > 0) {
        doom_peer(s, peer, "sent data (the protocol is server to client)");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        doom_peer(s, peer, "connection error");
    }
}

static void handle_peer_event(IvshmemServer *s, IvshmemServerPeer *peer,
                              uint32_t events)
{
    if (peer->doomed) {
        return;
    }
    if (events & EPOLLIN) {
        check_peer_input(s, peer);
    }
    if (events & (EPOLLERR | EPOLLHUP)) {
        doom_peer(s, peer, "connection hung up");
    }
    if ((events & EPOLLOUT) && !peer->doomed) {
        flush_peer(s, peer);
    }
}

static void handle_signal(IvshmemServer *s)
{
    struct signalfd_siginfo si;

    if (read(s->signal_fd, &si, sizeof(si)) == sizeof(si)) {
        server_log("signal %u received, shutting down", si.ssi_signo);
        s->quit = true;
    }
}

void ivshmem_server_run(IvshmemServer *s)
{
    struct epoll_event events[EPOLL_BATCH];

    while (!s->quit) {
        int n = epoll_wait(s->epoll_fd, events, EPOLL_BATCH, -1);
        int i;

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            server_error("epoll_wait: %s", strerror(errno));
            return;
        }
        for (i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;

            if (tag == &listen_tag) {
                accept_clients(s);
            } else if (tag == &signal_tag) {
                handle_signal(s);
            } else {
                handle_peer_event(s, tag, events[i].events);
            }
        }
        /* Only now: a doomed peer may still appear later in events[]. */
        reap_doomed_peers(s);
    }
}

static bool watch_fd(IvshmemServer *s, int fd, void *tag, Error **errp)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = tag };

    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        error_setg_errno(errp, errno, "epoll_ctl");
        return false;
    }
    return true;
}

static int open_signal_fd(Error **errp)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "signalfd");
    }
    return fd;
}

bool ivshmem_server_init(IvshmemServer *s, int listen_sock, int shm_fd,
                         uint32_t nvectors, size_t queue_limit, Error **errp)
{
    *s = (IvshmemServer) {
        .nvectors = nvectors,
        .queue_limit = queue_limit,
        .shm = shared_fd_new(shm_fd),
        .listen_sock = listen_sock,
        .signal_fd = -1,
        .by_id = g_new0(IvshmemServerPeer *, IVSHMEM_MAX_PEERS),
    };
    QTAILQ_INIT(&s->peers);
    QSLIST_INIT(&s->doomed);

    g_unix_set_fd_nonblocking(listen_sock, true, NULL);
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll_fd < 0) {
        error_setg_errno(errp, errno, "epoll_create1");
        return false;
    }
    s->signal_fd = open_signal_fd(errp);
    return s->signal_fd >= 0 &&
           watch_fd(s, listen_sock, &listen_tag, errp) &&
           watch_fd(s, s->signal_fd, &signal_tag, errp);
}

void ivshmem_server_cleanup(IvshmemServer *s)
{
    IvshmemServerPeer *peer, *tmp;

    QTAILQ_FOREACH_SAFE(peer, &s->peers, next, tmp) {
        QTAILQ_REMOVE(&s->peers, peer, next);
        free_peer(peer, s->nvectors);
    }
    g_free(s->by_id);
    s->by_id = NULL;
    shared_fd_unref(s->shm);
    s->shm = NULL;
    if (s->listen_sock >= 0) {
        close(s->listen_sock);
    }
    if (s->epoll_fd >= 0) {
        close(s->epoll_fd);
    }
    if (s->signal_fd >= 0) {
        close(s->signal_fd);
    }
    if (s->reserve_fd >= 0) {
        close(s->reserve_fd);
    }
}
