/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * ivshmem server protocol (version 0): message codec and client-side decoder.
 *
 * The server sends a stream of signed 64-bit little-endian integers, some
 * carrying one file descriptor.  IvshmemProto turns that stream into
 * actions (own ID, shared memory, peer vectors added/removed) and keeps the
 * table of peers and their vector eventfds.  It does no I/O of its own, so
 * the device, the debug client, the tests and a fuzzer all drive the same
 * code with (value, fd) pairs.
 */
#ifndef QEMU_IVSHMEM_PROTO_H
#define QEMU_IVSHMEM_PROTO_H

#define IVSHMEM_PROTOCOL_VERSION 0
#define IVSHMEM_MSG_SIZE         8          /* bytes per message */
#define IVSHMEM_MSG_SHM          (-1)       /* value of the shm fd message */
#define IVSHMEM_MAX_PEERS        65536      /* peer IDs are 0..65535 */
#define IVSHMEM_MAX_VECTORS      65536      /* 16-bit doorbell vector */

typedef enum IvshmemActionKind {
    IVSHMEM_ACTION_OWN_ID,      /* @peer: the ID the server gave us */
    IVSHMEM_ACTION_SHM,         /* @fd: the shared memory; caller owns it */
    IVSHMEM_ACTION_ADD_VECTOR,  /* @peer/@vector/@fd: wire it; table keeps fd */
    IVSHMEM_ACTION_DEL_VECTOR,  /* @peer/@vector/@fd: unwire it; then closed */
} IvshmemActionKind;

typedef struct IvshmemAction {
    IvshmemActionKind kind;
    uint16_t peer;
    uint16_t vector;
    bool own;                   /* @peer is our own ID */
    int fd;
} IvshmemAction;

/*
 * Called for every action.  Returning false rejects it (only SHM and
 * ADD_VECTOR can be rejected): the fd is closed and the feed fails with
 * the error the callback set.
 */
typedef bool (*IvshmemActionFn)(void *opaque, const IvshmemAction *action,
                                Error **errp);

typedef enum IvshmemProtoState {
    IVSHMEM_PROTO_WAIT_VERSION,
    IVSHMEM_PROTO_WAIT_ID,
    IVSHMEM_PROTO_WAIT_SHM,
    IVSHMEM_PROTO_RUNNING,
} IvshmemProtoState;

typedef struct IvshmemProto {
    IvshmemProtoState state;
    uint16_t own_id;
    uint32_t max_vectors;       /* vectors kept per peer; extra fds closed */
    uint32_t peer_vectors;      /* most vector fds sent for another peer */
    GHashTable *peers;          /* peer ID -> IvshmemProtoPeer */
    IvshmemActionFn action;
    void *opaque;
} IvshmemProto;

/* Encode/decode one message value (little-endian on the wire). */
void ivshmem_proto_encode(int64_t value, uint8_t buf[IVSHMEM_MSG_SIZE]);
int64_t ivshmem_proto_decode(const uint8_t buf[IVSHMEM_MSG_SIZE]);

void ivshmem_proto_init(IvshmemProto *p, uint32_t max_vectors,
                        IvshmemActionFn action, void *opaque);

/*
 * Feed one message.  Ownership of @fd (-1 for none) always passes to the
 * decoder: it is handed on through an action or closed.  Returns false
 * with @errp set when the message breaks the protocol; during setup that
 * is fatal for the connection, afterwards the message is just dropped.
 */
bool ivshmem_proto_feed(IvshmemProto *p, int64_t value, int fd, Error **errp);

/* The eventfd for ringing @vector of @peer, or -1 when not connected. */
int ivshmem_proto_peer_fd(const IvshmemProto *p, uint32_t peer,
                          uint32_t vector);
/* How many vectors of @peer are connected (0 for an unknown peer). */
uint32_t ivshmem_proto_peer_vectors(const IvshmemProto *p, uint32_t peer);
/* How many vector fds the server sent for @peer, including closed extras. */
uint32_t ivshmem_proto_peer_received(const IvshmemProto *p, uint32_t peer);
/* Known peer IDs (own ID included once its vectors arrive), ascending. */
GArray *ivshmem_proto_peer_ids(const IvshmemProto *p);

/* Drop every peer (DEL_VECTOR for each fd) and free the table. */
void ivshmem_proto_cleanup(IvshmemProto *p);

#endif
