/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: event loop and peer table of the ivshmem server. */

#include "qemu/osdep.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <linux/sockios.h>
#include <glib-unix.h>
#include "qapi/error.h"
#include "qemu/host-utils.h"
#include "ivshmem-server.h"

#define EPOLL_BATCH 64
/* Accepts per wake-up, so that a connection storm cannot delay signals. */
#define ACCEPT_BATCH 32
/* Messages of a setup burst queued at a time; the rest waits its turn. */
#define SETUP_CHUNK 64
/* Period of the tick retrying throttled peers and checking setups. */
#define TICK_MS 50
/* Socket buffer cost of a message when it cannot be measured. */
#define DEFAULT_MSG_TRUESIZE 768

/* epoll tags for the fds that are not peers */
static char listen_tag;
static char signal_tag;
static char timer_tag;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void id_mark(IvshmemServer *s, uint16_t id, IvshmemServerPeer *peer)
{
    s->by_id[id] = peer;
    if (peer) {
        s->id_used[id / 64] |= 1ULL << (id % 64);
    } else {
        s->id_used[id / 64] &= ~(1ULL << (id % 64));
    }
}

/* The first used peer ID >= @from, or IVSHMEM_MAX_PEERS. */
static uint32_t id_next_used(IvshmemServer *s, uint32_t from)
{
    uint32_t word = from / 64;
    uint64_t bits;

    if (from >= IVSHMEM_MAX_PEERS) {
        return IVSHMEM_MAX_PEERS;
    }
    bits = s->id_used[word] & (~0ULL << (from % 64));
    while (!bits) {
        if (++word == IVSHMEM_MAX_PEERS / 64) {
            return IVSHMEM_MAX_PEERS;
        }
        bits = s->id_used[word];
    }
    return word * 64 + ctz64(bits);
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
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, peer->sock, &ev) < 0) {
            server_error("peer %u: epoll_ctl: %s", peer->id, strerror(errno));
            doom_peer(s, peer, "internal error (epoll_ctl)");
            return;
        }
        peer->want_out = on;
    }
}

static void set_throttled(IvshmemServer *s, IvshmemServerPeer *peer, bool on)
{
    if (peer->throttled != on) {
        peer->throttled = on;
        s->nthrottled += on ? 1 : -1;
    }
}

/* Messages sent to @peer that it has not read yet. */
static uint64_t unread_msgs(IvshmemServer *s, IvshmemServerPeer *peer)
{
    int queued = 0;

    if (ioctl(peer->sock, SIOCOUTQ, &queued) < 0) {
        return 0;
    }
    return DIV_ROUND_UP((uint64_t)queued, s->msg_truesize);
}

static bool budget_limited(IvshmemServer *s)
{
    return s->fd_budget != UINT32_MAX;
}

/* Count a connection of @uid, creating its entry on the first. */
static IvshmemServerUser *user_get(IvshmemServer *s, uid_t uid)
{
    IvshmemServerUser *u = g_hash_table_lookup(s->users,
                                               GUINT_TO_POINTER(uid));

    if (!u) {
        u = g_new0(IvshmemServerUser, 1);
        u->uid = uid;
        g_hash_table_insert(s->users, GUINT_TO_POINTER(uid), u);
    }
    u->nconns++;
    return u;
}

static void user_put(IvshmemServer *s, IvshmemServerUser *u)
{
    if (--u->nconns == 0 && !u->inflight && !u->lost) {
        g_hash_table_remove(s->users, GUINT_TO_POINTER(u->uid));
    }
}

static void set_inflight(IvshmemServer *s, IvshmemServerPeer *peer,
                         uint32_t n)
{
    peer->user->inflight += n - peer->inflight;
    s->inflight += n - peer->inflight;
    peer->inflight = n;
}

/* What @peer still has unread: it may have read some since. */
static void refresh_inflight(IvshmemServer *s, IvshmemServerPeer *peer)
{
    if (peer->inflight) {
        uint32_t n = outq_unread_fds(&peer->outq, unread_msgs(s, peer));

        set_inflight(s, peer, MIN(n, peer->inflight));
    }
}

/*
 * Descriptors @peer may be sent now.  Linux refuses to put more than the
 * server's RLIMIT_NOFILE in flight (CAP_SYS_RESOURCE exempt); one user's
 * connections may hold at most 1/--user-share of that budget, so that a
 * user whose clients never read cannot starve another user's newcomers.
 */
static uint32_t fd_allowance(IvshmemServer *s, IvshmemServerPeer *peer)
{
    uint64_t user_used, all_used;

    if (!budget_limited(s)) {
        return UINT32_MAX;
    }
    user_used = (uint64_t)peer->user->inflight + peer->user->lost;
    all_used = (uint64_t)s->inflight + s->lost;
    if (user_used >= s->user_fd_cap || all_used >= s->fd_budget) {
        return 0;
    }
    return MIN(s->user_fd_cap - user_used, s->fd_budget - all_used);
}

static void send_to_peer(IvshmemServer *s, IvshmemServerPeer *peer,
                         int64_t value, SharedFd *sfd)
{
    if (peer->doomed) {
        return;
    }
    switch (outq_push(&peer->outq, value, sfd)) {
    case OUTQ_PUSH_OK:
        break;
    case OUTQ_PUSH_FULL:
        doom_peer(s, peer, "stopped reading (outgoing queue full)");
        break;
    case OUTQ_PUSH_FDS_FULL:
        doom_peer(s, peer, "stopped reading (too many descriptors queued, "
                  "see --queue-fds)");
        break;
    }
}

static void send_vectors(IvshmemServer *s, IvshmemServerPeer *to,
                         const IvshmemServerPeer *of)
{
    uint32_t v;

    for (v = 0; v < s->nvectors; v++) {
        send_to_peer(s, to, of->id, of->vectors[v]);
    }
}

/*
 * Does @peer still have to learn about peer @id from its setup burst?
 * Then joins and leaves of @id are not queued for it separately.
 */
static bool setup_will_cover(const IvshmemServerPeer *peer, uint32_t id)
{
    return peer->generating && id >= peer->cursor;
}

/*
 * The setup burst is built lazily from the peer table, a chunk at a
 * time as the client reads: a client that never reads costs a chunk,
 * not a copy of the whole table.  Order: other peers by increasing ID,
 * then the client's own vectors.
 */
static void fill_setup(IvshmemServer *s, IvshmemServerPeer *peer)
{
    while (peer->generating && !peer->doomed &&
           peer->outq.len < SETUP_CHUNK) {
        uint32_t id = id_next_used(s, peer->cursor);

        if (id < IVSHMEM_MAX_PEERS) {
            peer->cursor = id + 1;
            if (id != peer->id) {
                send_vectors(s, peer, s->by_id[id]);
            }
            continue;
        }
        peer->cursor = IVSHMEM_MAX_PEERS;
        send_vectors(s, peer, peer);
        peer->generating = false;
        peer->setup_len = peer->outq.sent + peer->outq.len;
    }
}

static void flush_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    for (;;) {
        uint32_t budget, before;
        OutFlushResult res;

        fill_setup(s, peer);
        if (peer->doomed) {
            return;
        }
        budget = fd_allowance(s, peer);
        if (!budget && peer->inflight) {
            refresh_inflight(s, peer);
            budget = fd_allowance(s, peer);
        }
        before = budget;
        res = outq_flush(&peer->outq, peer->sock, &budget);
        if (budget_limited(s)) {
            set_inflight(s, peer, peer->inflight + (before - budget));
        }
        switch (res) {
        case OUTQ_FLUSH_EMPTY:
            if (peer->generating) {
                continue;
            }
            set_throttled(s, peer, false);
            set_want_out(s, peer, false);
            return;
        case OUTQ_FLUSH_BLOCKED:
            server_debug("peer %u: socket full, %zu messages queued",
                         peer->id, peer->outq.len);
            set_throttled(s, peer, false);
            set_want_out(s, peer, true);
            return;
        case OUTQ_FLUSH_THROTTLED:
            if (!peer->throttled) {
                server_debug("peer %u: too many descriptors in flight, "
                             "waiting", peer->id);
            }
            set_want_out(s, peer, false);
            set_throttled(s, peer, true);
            return;
        case OUTQ_FLUSH_OVER_BUDGET:
            if (!peer->throttled) {
                server_debug("peer %u: too many descriptors in flight for "
                             "uid %u (%u unread, its share is %u; see "
                             "--user-share), waiting", peer->id,
                             peer->user->uid, peer->user->inflight,
                             s->user_fd_cap);
            }
            set_want_out(s, peer, false);
            set_throttled(s, peer, true);
            return;
        case OUTQ_FLUSH_ERROR:
            server_debug("peer %u: send failed: %s", peer->id,
                         strerror(errno));
            doom_peer(s, peer, "send failed");
            return;
        }
    }
}

/* Flush unless waiting for EPOLLOUT or for the tick, which will flush. */
static void kick_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    if (!peer->doomed && !peer->want_out && !peer->throttled) {
        flush_peer(s, peer);
    }
}

/* Its vectors and queue; a zombie keeps only its socket. */
static void release_peer_fds(IvshmemServerPeer *peer, uint32_t nvectors)
{
    uint32_t v;

    for (v = 0; v < nvectors && peer->vectors; v++) {
        if (peer->vectors[v]) {
            peer->vectors[v]->orphan = true;
        }
        shared_fd_unref(peer->vectors[v]);
    }
    outq_clear(&peer->outq);
    g_free(peer->vectors);
    peer->vectors = NULL;
}

/*
 * Descriptors still unread when the server closes a connection stay
 * charged to the server until the client reads them or exits, which the
 * server can no longer see: they stay charged to the client's user.
 */
static void free_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    release_peer_fds(peer, s->nvectors);
    if (peer->sock >= 0) {
        close(peer->sock);
    }
    if (peer->user) {
        uint32_t n = peer->inflight;

        set_inflight(s, peer, 0);
        peer->user->lost += n;
        s->lost += n;
        user_put(s, peer->user);
    }
    g_free(peer);
}

static void remove_peer(IvshmemServer *s, IvshmemServerPeer *peer)
{
    IvshmemServerPeer *other;

    QTAILQ_REMOVE(&s->peers, peer, next);
    if (peer->in_setup) {
        QTAILQ_REMOVE(&s->in_setup, peer, setup_next);
    }
    set_throttled(s, peer, false);
    id_mark(s, peer->id, NULL);
    s->npeers--;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, peer->sock, NULL) < 0) {
        server_error("peer %u: epoll_ctl: %s", peer->id, strerror(errno));
    }
    server_log("peer %u left: %s (%u peers)", peer->id, peer->doom_reason,
               s->npeers);

    QTAILQ_FOREACH(other, &s->peers, next) {
        if (!setup_will_cover(other, peer->id)) {
            send_to_peer(s, other, peer->id, NULL);
            kick_peer(s, other);
        }
    }
    refresh_inflight(s, peer);
    if (peer->inflight) {
        /*
         * Closing the socket would not free what it holds unread; keep
         * it, charged to its user, until the client reads or exits.
         */
        server_debug("peer %u holds %u unread descriptors: its socket "
                     "stays open until they are read", peer->id,
                     peer->inflight);
        release_peer_fds(peer, s->nvectors);
        peer->zombie = true;
        QTAILQ_INSERT_TAIL(&s->zombies, peer, next);
        return;
    }
    free_peer(s, peer);
}

static void reap_zombies(IvshmemServer *s)
{
    IvshmemServerPeer *peer, *tmp;

    QTAILQ_FOREACH_SAFE(peer, &s->zombies, next, tmp) {
        refresh_inflight(s, peer);
        if (!peer->inflight) {
            QTAILQ_REMOVE(&s->zombies, peer, next);
            free_peer(s, peer);
        }
    }
}

typedef enum EvictResult {
    EVICT_NONE,                 /* nobody to evict */
    EVICT_NOW,                  /* a connection was closed */
    EVICT_LATER,                /* a peer was doomed: retry after reaping */
} EvictResult;

/*
 * No room for a newcomer of @uid (out of descriptors, or at --max-peers
 * when @need_peer): if another user holds more connections than @uid's
 * user would with the newcomer, close one of them, a dropped connection
 * (zombie) first unless @need_peer, else its newest peer still in setup,
 * else its newest peer.  So a user may use free room beyond its share,
 * but never keeps another user out.
 */
static EvictResult evict_for(IvshmemServer *s, uid_t uid, bool need_peer)
{
    IvshmemServerUser *u = g_hash_table_lookup(s->users,
                                               GUINT_TO_POINTER(uid));
    IvshmemServerUser *hog = NULL;
    IvshmemServerPeer *peer, *victim = NULL, *newest = NULL;
    uint32_t mine = u ? u->nconns : 0;
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, s->users);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        IvshmemServerUser *other = value;

        if (other->uid != uid && (!hog || other->nconns > hog->nconns)) {
            hog = other;
        }
    }
    if (!hog || hog->nconns <= mine + 1) {
        return EVICT_NONE;
    }
    if (!need_peer) {
        QTAILQ_FOREACH(peer, &s->zombies, next) {
            if (peer->user == hog) {
                server_log("closing a dropped connection of uid %u (%u "
                           "connections, the most) for a newcomer of uid "
                           "%u", hog->uid, hog->nconns, uid);
                QTAILQ_REMOVE(&s->zombies, peer, next);
                free_peer(s, peer);
                return EVICT_NOW;
            }
        }
    }
    QTAILQ_FOREACH_REVERSE(peer, &s->peers, next) {
        if (peer->user != hog || peer->doomed) {
            continue;
        }
        if (!newest) {
            newest = peer;
        }
        if (peer->in_setup) {
            victim = peer;
            break;
        }
    }
    victim = victim ? victim : newest;
    if (!victim) {
        return EVICT_NONE;
    }
    server_log("no room for a newcomer of uid %u: evicting peer %u of uid "
               "%u (%u connections, the most)", uid, victim->id, hog->uid,
               hog->nconns);
    doom_peer(s, victim, "evicted for a newcomer of another user (its "
              "user held the most connections)");
    return EVICT_LATER;
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

/*
 * Out of descriptors: drop the client whose queue pins the most
 * descriptors of departed peers (a client that stopped reading), rather
 * than refusing the newcomer.  False if no client pins any.
 */
static bool drop_fd_hog(IvshmemServer *s)
{
    IvshmemServerPeer *peer, *hog = NULL;
    size_t most = 0;

    QTAILQ_FOREACH(peer, &s->peers, next) {
        size_t n = peer->doomed ? 0 : outq_count_orphans(&peer->outq);

        if (n > most) {
            most = n;
            hog = peer;
        }
    }
    if (!hog) {
        return false;
    }
    server_log("out of file descriptors: dropping peer %u, whose queue "
               "holds %zu descriptors of departed peers", hog->id, most);
    doom_peer(s, hog, "dropped to free file descriptors (it stopped "
              "reading)");
    return true;
}

static bool create_vectors(IvshmemServer *s, IvshmemServerPeer *peer)
{
    uint32_t v;

    peer->vectors = g_new0(SharedFd *, s->nvectors);
    for (v = 0; v < s->nvectors; v++) {
        int fd = eventfd(0, EFD_CLOEXEC);

        if (fd < 0) {
            int err = errno;

            release_peer_fds(peer, s->nvectors);
            errno = err;
            return false;
        }
        peer->vectors[v] = shared_fd_new(fd);
    }
    return true;
}

static void refuse_client(int sock, const char *why)
{
    server_log("refused a new client: %s", why);
    close(sock);
}

static bool in_array(GArray *a, uint32_t val)
{
    guint i;

    for (i = 0; a && i < a->len; i++) {
        if (g_array_index(a, uint32_t, i) == val) {
            return true;
        }
    }
    return false;
}

/* The allow lists: a listed uid, or a listed primary or supplementary gid. */
static bool peer_allowed(IvshmemServer *s, int sock, const struct ucred *cred)
{
    gid_t groups[256];
    socklen_t len = sizeof(groups);
    int i, n;

    if ((!s->cfg.allow_uids || !s->cfg.allow_uids->len) &&
        (!s->cfg.allow_gids || !s->cfg.allow_gids->len)) {
        return true;
    }
    if (in_array(s->cfg.allow_uids, cred->uid) ||
        in_array(s->cfg.allow_gids, cred->gid)) {
        return true;
    }
    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
        return false;
    }
    n = len / sizeof(gid_t);
    for (i = 0; i < n; i++) {
        if (in_array(s->cfg.allow_gids, groups[i])) {
            return true;
        }
    }
    return false;
}

/* The per-client cap on unread messages, hence on fds in flight. */
static void limit_in_flight(IvshmemServer *s, int sock)
{
    /* A send fits while less than sndbuf is queued; Linux doubles it. */
    int val = ((s->cfg.fds_in_flight - 1) * s->msg_truesize + 2) / 2;

    if (setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &val, sizeof(val)) < 0) {
        server_error("setsockopt(SO_SNDBUF): %s", strerror(errno));
    }
}

/* false: out of descriptors, with a hog to drop; retry after the reap */
static bool join_peer(IvshmemServer *s, int sock)
{
    g_autofree IvshmemServerPeer *peer = NULL;
    struct epoll_event ev = { .events = EPOLLIN };
    struct ucred cred = { .pid = 0, .uid = -1, .gid = -1 };
    socklen_t len = sizeof(cred);
    IvshmemServerPeer *other;
    g_autofree char *why = NULL;

    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        refuse_client(sock, "cannot get its credentials (SO_PEERCRED)");
        return true;
    }
    if (!peer_allowed(s, sock, &cred)) {
        why = g_strdup_printf("uid %u gid %u (pid %d) is not in the allow "
                              "list (--allow-user, --allow-group)",
                              cred.uid, cred.gid, cred.pid);
        refuse_client(sock, why);
        return true;
    }
    if (s->npeers >= s->cfg.max_peers) {
        if (evict_for(s, cred.uid, true) == EVICT_LATER) {
            return false;
        }
        why = g_strdup_printf("%u peers already, the --max-peers limit "
                              "(uid %u pid %d)", s->npeers, cred.uid,
                              cred.pid);
        refuse_client(sock, why);
        return true;
    }
    peer = g_new0(IvshmemServerPeer, 1);
    peer->sock = -1;
    peer->pid = cred.pid;
    peer->uid = cred.uid;
    while (!create_vectors(s, peer)) {
        int err = errno;
        EvictResult res = EVICT_NONE;

        if (err == EMFILE || err == ENFILE) {
            res = drop_fd_hog(s) ? EVICT_LATER : evict_for(s, cred.uid,
                                                           false);
        }
        if (res == EVICT_NOW) {
            continue;
        }
        free_peer(s, g_steal_pointer(&peer));
        if (res == EVICT_LATER) {
            return false;
        }
        refuse_client(sock, strerror(err));
        return true;
    }
    if (!alloc_peer_id(s, &peer->id)) {
        free_peer(s, g_steal_pointer(&peer));
        refuse_client(sock, "all 65536 peer IDs are in use");
        return true;
    }
    peer->sock = sock;
    ev.data.ptr = peer;
    if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, sock, &ev) < 0) {
        int err = errno;

        peer->sock = -1;    /* refuse_client closes it */
        free_peer(s, g_steal_pointer(&peer));
        refuse_client(sock, strerror(err));
        return true;
    }
    limit_in_flight(s, sock);
    peer->user = user_get(s, cred.uid);

    outq_init(&peer->outq, s->cfg.queue_limit + SETUP_CHUNK +
              s->nvectors + 3, s->cfg.queue_fds + SETUP_CHUNK +
              s->nvectors + 1);
    send_to_peer(s, peer, IVSHMEM_PROTOCOL_VERSION, NULL);
    send_to_peer(s, peer, peer->id, NULL);
    send_to_peer(s, peer, IVSHMEM_MSG_SHM, s->shm);
    peer->generating = true;
    peer->cursor = 0;
    peer->in_setup = true;
    peer->setup_deadline = now_ns() +
                           (int64_t)s->cfg.setup_timeout_ms * 1000000;
    QTAILQ_INSERT_TAIL(&s->in_setup, peer, setup_next);

    QTAILQ_FOREACH(other, &s->peers, next) {
        if (!setup_will_cover(other, peer->id)) {
            send_vectors(s, other, peer);
            kick_peer(s, other);
        }
    }
    id_mark(s, peer->id, peer);
    s->npeers++;
    QTAILQ_INSERT_TAIL(&s->peers, peer, next);
    server_log("peer %u joined with %u vectors (%u peers; uid %u pid %d)",
               peer->id, s->nvectors, s->npeers, cred.uid, cred.pid);
    kick_peer(s, g_steal_pointer(&peer));
    return true;
}

/*
 * Out of fds: accept the pending client with the reserve fd freed, so
 * that it is told no, or joins by evicting a connection of a user that
 * holds more (see evict_for), instead of spinning the loop.  Returns
 * false when no client was pending (Linux reports EMFILE before it looks
 * at the queue).  The reserve is taken again after the reap.
 */
static bool accept_with_reserve_fd(IvshmemServer *s)
{
    int sock;

    close(s->reserve_fd);
    s->reserve_fd = -1;
    sock = accept4(s->listen_sock, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (sock < 0) {
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        return false;
    }
    if (!join_peer(s, sock)) {
        g_array_append_val(s->deferred, sock);
    }
    return true;
}

/* Out of fds and no reserve: accepts wait for the tick, not spinning. */
static void pause_listening(IvshmemServer *s, bool on)
{
    struct epoll_event ev = {
        .events = on ? 0 : EPOLLIN,
        .data.ptr = &listen_tag,
    };

    if (s->listen_paused != on &&
        epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, s->listen_sock, &ev) == 0) {
        s->listen_paused = on;
    }
}

/*
 * At most ACCEPT_BATCH per wake-up: the listening socket is level
 * triggered, so the rest come with the next epoll_wait, after signals.
 */
static void accept_clients(IvshmemServer *s)
{
    int i;

    for (i = 0; i < ACCEPT_BATCH; i++) {
        int sock = accept4(s->listen_sock, NULL, NULL,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (sock >= 0) {
            server_debug("accepted connection (fd %d)", sock);
            if (!join_peer(s, sock)) {
                g_array_append_val(s->deferred, sock);
                return;
            }
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) {
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            if (drop_fd_hog(s)) {
                return;     /* accepted again once the hog is reaped */
            }
            if (s->reserve_fd >= 0) {
                if (accept_with_reserve_fd(s)) {
                    return;     /* the reserve is taken again later */
                }
            } else {
                pause_listening(s, true);
                return;
            }
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            server_error("accept: %s", strerror(errno));
        }
        return;
    }
}

/* Joins that waited for a hog to be dropped. */
static void join_deferred(IvshmemServer *s)
{
    g_autoptr(GArray) socks = s->deferred;
    guint i;

    s->deferred = g_array_new(false, false, sizeof(int));
    for (i = 0; i < socks->len; i++) {
        int sock = g_array_index(socks, int, i);

        if (!join_peer(s, sock)) {
            g_array_append_val(s->deferred, sock);
        }
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

/* Has @peer read its setup?  Drop it if its time is up. */
static void check_setup(IvshmemServer *s, IvshmemServerPeer *peer,
                        int64_t now)
{
    if (!peer->generating &&
        peer->setup_len + unread_msgs(s, peer) <= peer->outq.sent) {
        peer->in_setup = false;
        QTAILQ_REMOVE(&s->in_setup, peer, setup_next);
        server_debug("peer %u read its setup", peer->id);
    } else if (now >= peer->setup_deadline) {
        if (!unread_msgs(s, peer)) {
            /* it read all it was sent: the server holds the rest back */
            peer->setup_deadline = now +
                                   (int64_t)s->cfg.setup_timeout_ms * 1000000;
            server_debug("peer %u: setup held back by the server, its "
                         "deadline is extended", peer->id);
            return;
        }
        doom_peer(s, peer, "did not read its setup in time "
                  "(see --setup-timeout)");
    }
}

static void handle_tick(IvshmemServer *s)
{
    IvshmemServerPeer *peer, *tmp;
    uint64_t expirations;
    int64_t now = now_ns();

    if (read(s->timer_fd, &expirations, sizeof(expirations)) < 0) {
        /* EAGAIN: nothing expired */
    }
    if (s->inflight) {
        QTAILQ_FOREACH(peer, &s->peers, next) {
            refresh_inflight(s, peer);
        }
        reap_zombies(s);
    }
    pause_listening(s, false);
    if (s->nthrottled) {
        QTAILQ_FOREACH(peer, &s->peers, next) {
            if (peer->throttled && !peer->doomed) {
                flush_peer(s, peer);
            }
        }
    }
    QTAILQ_FOREACH_SAFE(peer, &s->in_setup, setup_next, tmp) {
        if (!peer->doomed) {
            check_setup(s, peer, now);
        }
    }
}

/* Tick only while a peer is throttled or has a setup to read. */
static void update_timer(IvshmemServer *s)
{
    bool need = s->nthrottled || !QTAILQ_EMPTY(&s->in_setup) ||
                s->inflight || s->listen_paused;
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };

    if (need == s->timer_armed) {
        return;
    }
    if (need) {
        its.it_interval.tv_nsec = TICK_MS * 1000000;
        its.it_value.tv_nsec = TICK_MS * 1000000;
    }
    if (timerfd_settime(s->timer_fd, 0, &its, NULL) < 0) {
        server_error("timerfd_settime: %s", strerror(errno));
        return;
    }
    s->timer_armed = need;
}

static void log_state(IvshmemServer *s)
{
    IvshmemServerPeer *peer;
    size_t queued = 0, fds = 0;
    uint32_t setup = 0;

    QTAILQ_FOREACH(peer, &s->peers, next) {
        queued += peer->outq.len;
        fds += peer->outq.nfds;
        setup += peer->in_setup;
    }
    server_log("state: %u peers (%u reading their setup, %u waiting for "
               "descriptors in flight to drop); %zu messages queued, %zu "
               "with descriptors", s->npeers, setup, s->nthrottled, queued,
               fds);
}

static void handle_signal(IvshmemServer *s)
{
    struct signalfd_siginfo si;

    while (read(s->signal_fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGUSR1 || si.ssi_signo == SIGUSR2) {
            log_state(s);
            continue;
        }
        server_log("signal %u received, shutting down", si.ssi_signo);
        s->quit = true;
    }
}

bool ivshmem_server_run(IvshmemServer *s)
{
    struct epoll_event events[EPOLL_BATCH];

    server_log_start_thread();
    while (!s->quit) {
        int n = epoll_wait(s->epoll_fd, events, EPOLL_BATCH, -1);
        int i;

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            server_error("epoll_wait: %s", strerror(errno));
            break;
        }
        for (i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;

            if (tag == &listen_tag) {
                accept_clients(s);
            } else if (tag == &signal_tag) {
                handle_signal(s);
            } else if (tag == &timer_tag) {
                handle_tick(s);
            } else {
                handle_peer_event(s, tag, events[i].events);
            }
        }
        /* Only now: a doomed peer may still appear later in events[]. */
        reap_doomed_peers(s);
        while (s->deferred->len) {
            join_deferred(s);
            if (QSLIST_EMPTY(&s->doomed)) {
                break;
            }
            reap_doomed_peers(s);
        }
        if (s->reserve_fd < 0) {
            s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        }
        update_timer(s);
    }
    return server_log_stop_thread();
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
    static const int signals[] = {
        SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2,
    };
    sigset_t set;
    size_t i;
    int fd;

    /* A vanished log reader or peer must not kill the server. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    for (i = 0; i < ARRAY_SIZE(signals); i++) {
        sigaddset(&set, signals[i]);
    }
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "signalfd");
    }
    return fd;
}

/* Does Linux let this process put any number of fds in flight? */
static bool fds_in_flight_unlimited(void)
{
    g_autofree char *status = NULL;
    const char *p;
    uint64_t caps;

    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
        return geteuid() == 0;
    }
    p = strstr(status, "\nCapEff:");
    if (!p) {
        return geteuid() == 0;
    }
    caps = g_ascii_strtoull(p + strlen("\nCapEff:"), NULL, 16);
    /* too_many_unix_fds(): CAP_SYS_RESOURCE or CAP_SYS_ADMIN */
    return caps & ((1ULL << 24) | (1ULL << 21));
}

/* The fds in flight Linux allows this process, and one user's share. */
static void set_fd_budget(IvshmemServer *s)
{
    struct rlimit rl;
    uint32_t share = MAX(s->cfg.user_share, 1);

    s->fd_budget = UINT32_MAX;
    s->user_fd_cap = UINT32_MAX;
    if (fds_in_flight_unlimited() || getrlimit(RLIMIT_NOFILE, &rl) < 0 ||
        rl.rlim_cur == RLIM_INFINITY) {
        return;
    }
    /* a margin for what other processes of the server's user send */
    s->fd_budget = MIN(rl.rlim_cur, UINT32_MAX - 1) * 15 / 16;
    s->user_fd_cap = MAX(s->fd_budget / share, 1);
}

/* What one queued message costs in a socket buffer, for SO_SNDBUF. */
static uint32_t measure_msg_truesize(void)
{
    uint8_t msg[IVSHMEM_MSG_SIZE] = { 0 };
    int sv[2], queued = 0;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return DEFAULT_MSG_TRUESIZE;
    }
    if (send(sv[0], msg, sizeof(msg), MSG_DONTWAIT) != sizeof(msg) ||
        ioctl(sv[0], SIOCOUTQ, &queued) < 0 || queued <= 0) {
        queued = DEFAULT_MSG_TRUESIZE;
    }
    close(sv[0]);
    close(sv[1]);
    return queued;
}

bool ivshmem_server_init(IvshmemServer *s, int listen_sock, int shm_fd,
                         const IvshmemServerConfig *cfg, Error **errp)
{
    *s = (IvshmemServer) {
        .cfg = *cfg,
        .nvectors = cfg->nvectors,
        .shm = shared_fd_new(shm_fd),
        .listen_sock = listen_sock,
        .epoll_fd = -1,
        .signal_fd = -1,
        .timer_fd = -1,
        .reserve_fd = -1,
        .by_id = g_new0(IvshmemServerPeer *, IVSHMEM_MAX_PEERS),
        .deferred = g_array_new(false, false, sizeof(int)),
        .msg_truesize = measure_msg_truesize(),
    };
    QTAILQ_INIT(&s->peers);
    QTAILQ_INIT(&s->in_setup);
    QTAILQ_INIT(&s->zombies);
    QSLIST_INIT(&s->doomed);
    s->users = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                     g_free);
    set_fd_budget(s);

    if (!g_unix_set_fd_nonblocking(listen_sock, true, NULL)) {
        error_setg_errno(errp, errno, "cannot make the socket non-blocking");
        return false;
    }
    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll_fd < 0) {
        error_setg_errno(errp, errno, "epoll_create1");
        return false;
    }
    s->timer_fd = timerfd_create(CLOCK_MONOTONIC,
                                 TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->timer_fd < 0) {
        error_setg_errno(errp, errno, "timerfd_create");
        return false;
    }
    s->signal_fd = open_signal_fd(errp);
    return s->signal_fd >= 0 &&
           watch_fd(s, listen_sock, &listen_tag, errp) &&
           watch_fd(s, s->signal_fd, &signal_tag, errp) &&
           watch_fd(s, s->timer_fd, &timer_tag, errp);
}

void ivshmem_server_cleanup(IvshmemServer *s)
{
    IvshmemServerPeer *peer, *tmp;
    guint i;

    QTAILQ_FOREACH_SAFE(peer, &s->peers, next, tmp) {
        QTAILQ_REMOVE(&s->peers, peer, next);
        free_peer(s, peer);
    }
    QTAILQ_FOREACH_SAFE(peer, &s->zombies, next, tmp) {
        QTAILQ_REMOVE(&s->zombies, peer, next);
        free_peer(s, peer);
    }
    if (s->users) {
        g_hash_table_destroy(s->users);
        s->users = NULL;
    }
    for (i = 0; s->deferred && i < s->deferred->len; i++) {
        close(g_array_index(s->deferred, int, i));
    }
    if (s->deferred) {
        g_array_free(s->deferred, true);
        s->deferred = NULL;
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
    if (s->timer_fd >= 0) {
        close(s->timer_fd);
    }
    if (s->reserve_fd >= 0) {
        close(s->reserve_fd);
    }
}
