/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem server protocol (version 0): codec and client-side decoder. */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/ivshmem-proto.h"

/*
 * A peer's fds array grows with the fds actually kept, never beyond
 * max_vectors: a server that announces many peers makes the decoder hold
 * memory in proportion to the fds it sent (which RLIMIT_NOFILE bounds),
 * not to peers times the vectors the guest was configured with.
 */
typedef struct IvshmemProtoPeer {
    uint32_t nvectors;          /* vector fds kept, at most max_vectors */
    uint32_t received;          /* vector fds the server sent, kept or not */
    uint32_t capacity;          /* length of fds */
    int *fds;
} IvshmemProtoPeer;

static void free_peer(gpointer data)
{
    IvshmemProtoPeer *peer = data;

    g_free(peer->fds);
    g_free(peer);
}

void ivshmem_proto_encode(int64_t value, uint8_t buf[IVSHMEM_MSG_SIZE])
{
    stq_le_p(buf, value);
}

int64_t ivshmem_proto_decode(const uint8_t buf[IVSHMEM_MSG_SIZE])
{
    return ldq_le_p(buf);
}

void ivshmem_proto_init(IvshmemProto *p, uint32_t max_vectors,
                        IvshmemActionFn action, void *opaque)
{
    *p = (IvshmemProto) {
        .state = IVSHMEM_PROTO_WAIT_VERSION,
        .max_vectors = MIN(max_vectors, IVSHMEM_MAX_VECTORS),
        .peers = g_hash_table_new_full(NULL, NULL, NULL, free_peer),
        .action = action,
        .opaque = opaque,
    };
}

static bool emit(IvshmemProto *p, IvshmemActionKind kind, uint16_t peer,
                 uint16_t vector, int fd, Error **errp)
{
    IvshmemAction a = {
        .kind = kind,
        .peer = peer,
        .vector = vector,
        .own = p->state == IVSHMEM_PROTO_RUNNING && peer == p->own_id,
        .fd = fd,
    };

    return p->action(p->opaque, &a, errp);
}

static IvshmemProtoPeer *lookup(const IvshmemProto *p, uint32_t peer)
{
    return p->peers ? g_hash_table_lookup(p->peers, GUINT_TO_POINTER(peer))
                    : NULL;
}

static void close_fd(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

static void remove_peer(IvshmemProto *p, uint16_t id, IvshmemProtoPeer *peer)
{
    uint32_t v;

    for (v = 0; v < peer->nvectors; v++) {
        emit(p, IVSHMEM_ACTION_DEL_VECTOR, id, v, peer->fds[v], NULL);
        close_fd(peer->fds[v]);
    }
    g_hash_table_remove(p->peers, GUINT_TO_POINTER(id));
}

static bool add_vector(IvshmemProto *p, uint16_t id, int fd, Error **errp)
{
    IvshmemProtoPeer *peer = lookup(p, id);

    if (!peer) {
        peer = g_new0(IvshmemProtoPeer, 1);
        g_hash_table_insert(p->peers, GUINT_TO_POINTER(id), peer);
    }
    peer->received++;
    if (id != p->own_id) {
        p->peer_vectors = MAX(p->peer_vectors, peer->received);
    }
    if (peer->nvectors >= p->max_vectors) {
        close_fd(fd);           /* more vectors than we use */
        return true;
    }
    if (!emit(p, IVSHMEM_ACTION_ADD_VECTOR, id, peer->nvectors, fd, errp)) {
        close_fd(fd);
        if (!peer->nvectors) {
            g_hash_table_remove(p->peers, GUINT_TO_POINTER(id));
        }
        return false;
    }
    if (peer->nvectors == peer->capacity) {
        peer->capacity = MIN(MAX(peer->capacity * 2, 4), p->max_vectors);
        peer->fds = g_renew(int, peer->fds, peer->capacity);
    }
    peer->fds[peer->nvectors++] = fd;
    return true;
}

static bool feed_setup(IvshmemProto *p, int64_t value, int fd, Error **errp)
{
    switch (p->state) {
    case IVSHMEM_PROTO_WAIT_VERSION:
        if (value != IVSHMEM_PROTOCOL_VERSION) {
            error_setg(errp, "ivshmem server speaks protocol version %" PRId64
                       ", only version %d is supported", value,
                       IVSHMEM_PROTOCOL_VERSION);
            return false;
        }
        p->state = IVSHMEM_PROTO_WAIT_ID;
        return true;
    case IVSHMEM_PROTO_WAIT_ID:
        if (value < 0 || value >= IVSHMEM_MAX_PEERS) {
            error_setg(errp, "ivshmem server sent peer ID %" PRId64
                       ", outside 0..%d", value, IVSHMEM_MAX_PEERS - 1);
            return false;
        }
        p->own_id = value;
        p->state = IVSHMEM_PROTO_WAIT_SHM;
        return emit(p, IVSHMEM_ACTION_OWN_ID, p->own_id, 0, -1, errp);
    case IVSHMEM_PROTO_WAIT_SHM:
        if (value != IVSHMEM_MSG_SHM || fd < 0) {
            error_setg(errp, "ivshmem server sent %" PRId64 " %s the fd, "
                       "expected the shared memory (-1 with an fd)", value,
                       fd < 0 ? "without" : "with");
            close_fd(fd);
            return false;
        }
        if (!emit(p, IVSHMEM_ACTION_SHM, 0, 0, fd, errp)) {
            close_fd(fd);
            return false;
        }
        p->state = IVSHMEM_PROTO_RUNNING;
        return true;
    default:
        g_assert_not_reached();
    }
}

bool ivshmem_proto_feed(IvshmemProto *p, int64_t value, int fd, Error **errp)
{
    IvshmemProtoPeer *peer;

    if (p->state != IVSHMEM_PROTO_RUNNING) {
        if (fd >= 0 && p->state != IVSHMEM_PROTO_WAIT_SHM) {
            error_setg(errp, "ivshmem server sent an fd with message %"
                       PRId64 " during setup", value);
            close_fd(fd);
            return false;
        }
        return feed_setup(p, value, fd, errp);
    }
    if (value < 0 || value >= IVSHMEM_MAX_PEERS) {
        error_setg(errp, "ivshmem server sent peer ID %" PRId64
                   ", outside 0..%d", value, IVSHMEM_MAX_PEERS - 1);
        close_fd(fd);
        return false;
    }
    if (fd >= 0) {
        return add_vector(p, value, fd, errp);
    }
    peer = lookup(p, value);
    if (!peer) {
        error_setg(errp, "ivshmem server says unknown peer %" PRId64 " left",
                   value);
        return false;
    }
    remove_peer(p, value, peer);
    return true;
}

int ivshmem_proto_peer_fd(const IvshmemProto *p, uint32_t peer,
                          uint32_t vector)
{
    IvshmemProtoPeer *entry = lookup(p, peer);

    return entry && vector < entry->nvectors ? entry->fds[vector] : -1;
}

uint32_t ivshmem_proto_peer_vectors(const IvshmemProto *p, uint32_t peer)
{
    IvshmemProtoPeer *entry = lookup(p, peer);

    return entry ? entry->nvectors : 0;
}

uint32_t ivshmem_proto_peer_received(const IvshmemProto *p, uint32_t peer)
{
    IvshmemProtoPeer *entry = lookup(p, peer);

    return entry ? entry->received : 0;
}

static gint compare_ids(gconstpointer a, gconstpointer b)
{
    return *(const uint32_t *)a - *(const uint32_t *)b;
}

GArray *ivshmem_proto_peer_ids(const IvshmemProto *p)
{
    GArray *ids = g_array_new(false, false, sizeof(uint32_t));
    GHashTableIter iter;
    gpointer key;

    if (p->peers) {
        g_hash_table_iter_init(&iter, p->peers);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
            uint32_t id = GPOINTER_TO_UINT(key);
            g_array_append_val(ids, id);
        }
    }
    g_array_sort(ids, compare_ids);
    return ids;
}

void ivshmem_proto_cleanup(IvshmemProto *p)
{
    g_autoptr(GArray) ids = NULL;
    guint i;

    if (!p->peers) {
        return;
    }
    ids = ivshmem_proto_peer_ids(p);
    for (i = 0; i < ids->len; i++) {
        uint32_t id = g_array_index(ids, uint32_t, i);
        remove_peer(p, id, lookup(p, id));
    }
    g_hash_table_destroy(p->peers);
    p->peers = NULL;
}
