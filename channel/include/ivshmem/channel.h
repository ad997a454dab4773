/* SPDX-License-Identifier: MIT */
/*
 * libivshmem-channel: message channels over ivshmem shared memory.
 *
 * A *region* is a shared memory area (an ivshmem BAR2 in a guest, the
 * server's memory on the host, or any file mapped MAP_SHARED) with a small
 * header and a directory of named *channels*.  A channel joins two sides
 * (IVC_SIDE_A and IVC_SIDE_B) with one single-producer single-consumer ring
 * per direction; messages are byte strings of variable size.
 *
 *   struct ivc_region *r;
 *   struct ivc_channel *ch;
 *   ivc_region_open_path("/dev/shm/demo", 1 << 20, IVC_F_CREATE, &r);
 *   ivc_channel_open(r, "ctl", NULL, IVC_SIDE_A, IVC_F_CREATE, &ch);
 *   ivc_send(ch, "hi", 2, IVC_F_WAIT);
 *   n = ivc_recv(ch, buf, sizeof(buf), IVC_F_WAIT);
 *
 * Conventions (as in liburing): functions return 0 or a non-negative count
 * on success and a negative errno on failure; nothing sets errno.  A
 * region or channel is used by one thread at a time (a channel's two
 * directions may be used by two threads: one sends, one receives).
 *
 * Errors that come from the other side (it can write anything into the
 * shared memory) are -EPROTO (the layout or a ring is inconsistent: the
 * channel is broken and stays so until ivc_channel_reset()), -ECONNRESET
 * (the other side restarted: returned once, then operations continue with
 * the new incarnation), -EPIPE (the other side is gone: left the server,
 * or its heartbeat stopped).  Nothing the other side writes makes the
 * library access memory outside the region, loop without bound or crash.
 *
 * Memory ordering: C11 atomics with acquire/release on ring indexes and a
 * sequentially consistent fence on both sides of the sleep handshake, so
 * the library is correct on weakly ordered CPUs.  The region's integers
 * are little-endian (x86 and arm64 hosts and guests).
 */
#ifndef IVSHMEM_CHANNEL_H
#define IVSHMEM_CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IVC_VERSION_MAJOR 0
#define IVC_VERSION_MINOR 1

struct ivc_region;
struct ivc_channel;

/* flags */
#define IVC_F_CREATE    0x0001u /* open: format the region / create the channel if absent */
#define IVC_F_FORMAT    0x0002u /* open: format the region even if it holds a layout */
#define IVC_F_WAIT      0x0004u /* send/recv/reserve/peek: wait instead of -EAGAIN */
#define IVC_F_MORE      0x0008u /* send: more follows, do not publish yet (batching) */
#define IVC_F_READONLY  0x0010u /* open: map read-only (inspection only) */

/* channel sides */
#define IVC_SIDE_A 0
#define IVC_SIDE_B 1

/* wait modes (struct ivc_channel_opts.wait_mode) */
#define IVC_WAIT_HYBRID 0       /* spin up to spin_ns, then sleep (default) */
#define IVC_WAIT_SPIN   1       /* spin only (burns a core, lowest latency) */
#define IVC_WAIT_SLEEP  2       /* sleep at once (no spin) */

/* default spin budget of the hybrid wait, in ns (chosen by `make -C bench/channel spin`) */
#define IVC_DEFAULT_SPIN_NS 20000

/* transports */
#define IVC_TRANSPORT_PLAIN  0  /* memory only: waits poll the memory */
#define IVC_TRANSPORT_SERVER 1  /* host peer of an ivshmem-server: eventfds */
#define IVC_TRANSPORT_DEVICE 2  /* /dev/ivshmemN of the guest driver */
#define IVC_TRANSPORT_LOCAL  3  /* doorbells given by hand (ivc_region_set_doorbell) */

/* ---------------------------------------------------------------- regions */

/*
 * ivc_region_open_path - map a plain region: a file, a /dev/shm object
 * ("/dev/shm/NAME"), a PCI BAR2 "/sys/bus/pci/devices/.../resource2", or
 * the guest driver's "/dev/ivshmemN" (then with its doorbells, as
 * ivc_region_open_device()).  @size 0 takes the file's size; otherwise a
 * missing or empty file is created with @size when IVC_F_CREATE is given.
 * With IVC_F_CREATE an all-zero region is formatted (race-free: one of
 * several concurrent openers formats it, the others wait for it).
 * Returns 0 and sets *@out, or -errno (-EPROTO: not a channel region).
 */
int ivc_region_open_path(const char *path, uint64_t size, unsigned flags,
                         struct ivc_region **out);

/*
 * ivc_region_open_fd - as ivc_region_open_path() on an open descriptor
 * (memfd, shm, file); the descriptor is duplicated, the caller keeps its own.
 */
int ivc_region_open_fd(int fd, uint64_t size, unsigned flags,
                       struct ivc_region **out);

/*
 * ivc_region_connect - join an ivshmem server on the UNIX socket @path as a
 * host peer (protocol version 0): receive the own ID, the shared memory and
 * the eventfds, and follow peers joining and leaving afterwards (see
 * ivc_region_poll_server()).  @vectors: how many own vectors to use (1 if
 * 0); extra ones the server hands out are closed.  Waits at most 5 s.
 */
int ivc_region_connect(const char *path, unsigned vectors, unsigned flags,
                       struct ivc_region **out);

/*
 * ivc_region_open_device - open the guest driver's /dev/ivshmemN: mmap its
 * BAR2, ring peers through IVSHMEM_IOCTL_RING, wait on vectors through
 * read()/poll() of one descriptor per vector (IVSHMEM_IOCTL_BIND).
 */
int ivc_region_open_device(const char *path, unsigned flags,
                           struct ivc_region **out);

/*
 * ivc_region_attach_mem - use memory the caller has mapped already (a UIO
 * or VFIO mapping, a test buffer) as a plain region; the caller keeps the
 * mapping, ivc_region_close() does not unmap it.
 */
int ivc_region_attach_mem(void *base, uint64_t size, unsigned flags,
                          struct ivc_region **out);

/* ivc_region_close - unmap, close every descriptor, free.  NULL is a no-op. */
void ivc_region_close(struct ivc_region *r);

/* ivc_region_base / ivc_region_size - the mapping and its size in bytes. */
void *ivc_region_base(struct ivc_region *r);
uint64_t ivc_region_size(struct ivc_region *r);

/* ivc_region_transport - IVC_TRANSPORT_* of the region. */
int ivc_region_transport(struct ivc_region *r);

/*
 * ivc_region_id - own peer ID (server or device: the ID it assigned;
 * plain/local: set by ivc_region_set_id(), default 0).
 */
int ivc_region_id(struct ivc_region *r);

/*
 * ivc_region_set_id / ivc_region_set_doorbell / ivc_region_set_own_vector
 * - doorbells by hand (IVC_TRANSPORT_LOCAL), e.g. two processes that share
 * a memfd and eventfds without a server.  set_doorbell: ringing @vector of
 * @peer writes to @efd; set_own_vector: waits on @vector read @efd.
 * Descriptors are duplicated.  A region with doorbells becomes LOCAL.
 * The library never changes the flags of a descriptor it did not open (a
 * dup, or an eventfd from the server, shares them with every holder, and
 * QEMU resets received descriptors to blocking): it reads doorbells
 * without blocking whatever their flags.
 */
int ivc_region_set_id(struct ivc_region *r, unsigned id);
int ivc_region_set_doorbell(struct ivc_region *r, unsigned peer,
                            unsigned vector, int efd);
int ivc_region_set_own_vector(struct ivc_region *r, unsigned vector, int efd);

/*
 * ivc_region_ring - ring @vector of @peer (the device or server doorbell).
 * Returns 0, -ENOENT if no such doorbell is known, -ENOTSUP on a plain
 * region.
 */
int ivc_region_ring(struct ivc_region *r, unsigned peer, unsigned vector);

/*
 * ivc_region_vector_fd - descriptor that becomes readable (POLLIN) when
 * own @vector is rung, for poll/epoll; -ENOENT if none (plain region).
 * Drain it with ivc_region_drain() before sleeping again.
 */
int ivc_region_vector_fd(struct ivc_region *r, unsigned vector);
int ivc_region_drain(struct ivc_region *r, unsigned vector);

/*
 * ivc_region_poll_server - process what the server sent since the last
 * call (peers joining and leaving), without blocking.  Returns the number
 * of messages handled, -EPIPE once the server closed the connection,
 * -ENOTSUP if the region has no server.  ivc_region_server_fd() gives the
 * socket for poll/epoll (POLLIN: call this).
 */
int ivc_region_poll_server(struct ivc_region *r);
int ivc_region_server_fd(struct ivc_region *r);

/*
 * ivc_region_peer_present - 1 if the server says @peer is connected, 0 if
 * not: on the host from the server's messages, in a guest from the
 * device's peer presence (QEMU's presence=on, the driver's PEERS ioctl,
 * read again on its POLLPRI); -ENOTSUP without either (use the channel
 * heartbeat).
 */
int ivc_region_peer_present(struct ivc_region *r, unsigned peer);

/* ivc_region_max_channels - directory size of the layout. */
unsigned ivc_region_max_channels(struct ivc_region *r);

/* --------------------------------------------------------------- channels */

struct ivc_channel_opts {
    uint32_t ring_size;     /* data bytes per direction, power of two, >= 256 (default 64 KiB); creating side only */
    uint32_t vector;        /* own vector the other side rings (default 0) */
    uint32_t wait_mode;     /* IVC_WAIT_* */
    uint32_t reserved0;
    uint64_t spin_ns;       /* hybrid spin budget (0: IVC_DEFAULT_SPIN_NS) */
    uint64_t peer_timeout_ns; /* heartbeat timeout; 0: no heartbeat check */
};

/*
 * ivc_channel_open - open (IVC_F_CREATE: create if absent) the channel
 * @name (1..31 bytes) as @side.  Creation is race-free across processes:
 * two openers of one name get the same channel.  @opts may be NULL
 * (defaults).  Opening starts a new incarnation of @side: messages the
 * previous incarnation of this side sent and the other side has not read
 * are dropped by the other side, which is told with -ECONNRESET.
 * Returns 0, -ENOENT (absent, no IVC_F_CREATE), -ENOSPC (directory or
 * region full), -EINVAL, -EPROTO (hostile or corrupt layout).
 */
int ivc_channel_open(struct ivc_region *r, const char *name,
                     const struct ivc_channel_opts *opts, int side,
                     unsigned flags, struct ivc_channel **out);

/* ivc_channel_close - mark this side detached and free the handle. */
void ivc_channel_close(struct ivc_channel *ch);

/* ivc_channel_max_msg - the largest message size the channel accepts. */
size_t ivc_channel_max_msg(struct ivc_channel *ch);

/*
 * ivc_send - copy one message of @len bytes into the ring and publish it
 * (IVC_F_MORE: publish later, with ivc_flush() or the next send).  Full
 * ring: -EAGAIN, or with IVC_F_WAIT wait for room (-ETIMEDOUT never:
 * waits without bound unless the peer is gone: -EPIPE).  -EMSGSIZE if
 * @len > ivc_channel_max_msg().  Returns 0.
 */
int ivc_send(struct ivc_channel *ch, const void *buf, size_t len,
             unsigned flags);

/*
 * ivc_reserve - zero-copy send: reserve @len bytes in the ring and set
 * *@buf to them (8-byte aligned).  Fill them, then ivc_commit().  Several
 * reserve/commit pairs may precede one ivc_flush() (a batch).  Flags as
 * ivc_send().  Only one reservation may be open at a time.
 */
int ivc_reserve(struct ivc_channel *ch, size_t len, void **buf,
                unsigned flags);

/*
 * ivc_commit - finish the open reservation with its final length @len
 * (<= the reserved length).  Not visible to the peer until ivc_flush().
 */
int ivc_commit(struct ivc_channel *ch, size_t len);

/*
 * ivc_flush - publish every committed message and ring the peer if (and
 * only if) it said it is going to sleep.  Returns 1 if it rang, 0 if not.
 */
int ivc_flush(struct ivc_channel *ch);

/*
 * ivc_peek - zero-copy receive: set *@buf and *@len to the next message,
 * in the shared memory (the peer can still write there: validate what you
 * read, copy before trusting).  Empty: -EAGAIN, or wait with IVC_F_WAIT.
 * Call ivc_release() when done.  Returns 0.
 */
int ivc_peek(struct ivc_channel *ch, const void **buf, size_t *len,
             unsigned flags);

/*
 * ivc_release - consume the message ivc_peek() returned, and every
 * message skipped before it; the room is given back to the sender (who
 * is rung if it waits for room).
 */
int ivc_release(struct ivc_channel *ch);

/*
 * ivc_recv - copy the next message into @buf (@cap bytes) and consume it.
 * Returns its length; -EMSGSIZE if it does not fit (it stays in the ring,
 * ivc_peek() gives its length); -EAGAIN when empty without IVC_F_WAIT.
 */
ssize_t ivc_recv(struct ivc_channel *ch, void *buf, size_t cap,
                 unsigned flags);

/*
 * ivc_wait_recv / ivc_wait_send - wait at most @timeout_ns (UINT64_MAX:
 * no limit) until a message is there / @len bytes of room are.  The wait
 * follows the channel's wait mode; sleeping arms the event flag, re-checks
 * the ring and only then blocks (no lost wake-up).  Returns 0, -ETIMEDOUT,
 * -EPIPE, -ECONNRESET or -EPROTO.
 */
int ivc_wait_recv(struct ivc_channel *ch, uint64_t timeout_ns);
int ivc_wait_send(struct ivc_channel *ch, size_t len, uint64_t timeout_ns);

/*
 * ivc_channel_fd - descriptor to poll for this channel's wake-ups (own
 * vector), -ENOENT on a plain region.  Before sleeping on it call
 * ivc_channel_arm(): it returns 1 if there is already work (do not sleep),
 * 0 if the peer will ring.  After waking, call ivc_region_drain().
 */
int ivc_channel_fd(struct ivc_channel *ch);
int ivc_channel_arm(struct ivc_channel *ch);

/*
 * ivc_heartbeat - tell the other side this side is alive (call more often
 * than its peer_timeout_ns; waits call it as they go).
 */
void ivc_heartbeat(struct ivc_channel *ch);

/* peer states, ivc_peer_state() */
#define IVC_PEER_NEVER   0  /* the other side never attached */
#define IVC_PEER_UP      1  /* attached and alive */
#define IVC_PEER_LEFT    2  /* detached (closed) */
#define IVC_PEER_GONE    3  /* left the server, or heartbeat timed out */

/*
 * ivc_peer_state - IVC_PEER_* of the other side: from the server's peer
 * list on the host and in a guest whose device has peer presence,
 * otherwise from its attach flag and heartbeat.
 */
int ivc_peer_state(struct ivc_channel *ch);

/*
 * ivc_peer_epoch / ivc_epoch - incarnation numbers of the other side and
 * of this side (each open of a side increments it).
 */
uint64_t ivc_peer_epoch(struct ivc_channel *ch);
uint64_t ivc_epoch(struct ivc_channel *ch);

/*
 * ivc_channel_reset - after -EPROTO: start this side again on the shared
 * state (new incarnation, as a fresh ivc_channel_open()).
 */
int ivc_channel_reset(struct ivc_channel *ch);

/* statistics of one side */
struct ivc_stats {
    uint64_t sent, received;        /* messages */
    uint64_t notifies;              /* doorbells rung */
    uint64_t sleeps;                /* waits that blocked */
    uint64_t spins_won;             /* waits that ended in the spin phase */
    uint64_t dropped_stale;         /* messages of a previous incarnation dropped */
    uint64_t resets_seen;           /* restarts of the other side noticed */
};
void ivc_channel_stats(struct ivc_channel *ch, struct ivc_stats *st);

/* ivc_strerror - a short text for a negative return value. */
const char *ivc_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* IVSHMEM_CHANNEL_H */
