/* SPDX-License-Identifier: GPL-2.0-or-later WITH Linux-syscall-note */
/*
 * ivshmem guest driver: user-space interface of /dev/ivshmemN.
 *
 * Upstream this would be include/uapi/linux/ivshmem.h (hence the guard).
 *
 * mmap(MAP_SHARED, offset 0) maps the shared memory (BAR2).  MAP_PRIVATE
 * is refused (EINVAL): copy-on-write would silently stop sharing.  When the
 * device goes away (driver unbind, hot-unplug), every mapping of it is
 * revoked: the next access raises SIGBUS.
 *
 * read() blocks until the vector bound to the open file (IVSHMEM_IOCTL_BIND,
 * default 0) fires and returns a __u32: the number of interrupts since the
 * previous read() (or the BIND) on that file.
 *
 * poll() contract, per open file:
 *  - POLLIN | POLLRDNORM while the bound vector has interrupts that read()
 *    has not returned yet (level-triggered: it stays set until read()).
 *  - A bound vector without pending interrupts reports nothing and keeps
 *    waiting, also when no peer will ever ring it (a vector the server has
 *    not connected, or a peer that left): the driver cannot tell, so use a
 *    timeout.
 *  - A device without interrupts (vectors == 0): POLLERR at once; read()
 *    fails with ENXIO.
 *  - The device is gone: POLLERR | POLLHUP; read() fails with ENODEV, and
 *    so do the ioctls.  The file stays valid until closed.
 *  - The contract follows BIND: a poll(), epoll_wait() or read() waiting
 *    on the file when another thread binds it to another vector waits
 *    for the new vector from then on (epoll needs no new EPOLL_CTL_ADD).
 *
 * Growing the interface: ivshmem_info.version is IVSHMEM_UAPI_VERSION of
 * the driver.  New information takes over reserved fields (zero until
 * then) and is announced by a version bump or an IVSHMEM_INFO_F_* flag;
 * the flags of RING and BIND must be zero today, and a driver rejects
 * flags it does not know with EINVAL, so new options are detectable.
 */
#ifndef _UAPI_LINUX_IVSHMEM_H
#define _UAPI_LINUX_IVSHMEM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define IVSHMEM_UAPI_VERSION 3    /* 2: cache_mode is the real type;
				   3: IVSHMEM_INFO_F_PRESENCE, PEERS */

/* ivshmem_info.irq_mode */
#define IVSHMEM_IRQ_NONE  0     /* no interrupt available (plain device) */
#define IVSHMEM_IRQ_INTX  1     /* legacy INTx, acked through IntrStatus */
#define IVSHMEM_IRQ_MSIX  2     /* one MSI-X vector per doorbell vector */

/*
 * ivshmem_info.cache_mode: the memory type mappings of the region actually
 * get (x86 PAT may downgrade the request: write-back where the firmware's
 * MTRRs mark the range uncached becomes uncached-minus);
 * ivshmem_info.cache_requested: what the driver asked for (module
 * parameter cache=, UC, WC or WB).  Version 1 reported the request in
 * cache_mode.
 */
#define IVSHMEM_CACHE_UC        1       /* uncached */
#define IVSHMEM_CACHE_WC        2       /* write-combining */
#define IVSHMEM_CACHE_WB        3       /* write-back (cached) */
#define IVSHMEM_CACHE_UC_MINUS  4       /* uncached, MTRR may make it WC */
#define IVSHMEM_CACHE_WT        5       /* write-through */
#define IVSHMEM_CACHE_WP        6       /* write-protected */

struct ivshmem_info {
	__u32 version;          /* IVSHMEM_UAPI_VERSION of the driver */
	__u32 flags;            /* IVSHMEM_INFO_F_* */
	__u64 region_size;      /* BAR2 size in bytes */
	__u32 ivposition;       /* own peer ID (IVPosition, read live) */
	__u32 vectors;          /* interrupt vectors usable by read/poll */
	__u32 irq_mode;         /* IVSHMEM_IRQ_* */
	__u32 revision;         /* PCI revision ID */
	__u32 cache_mode;       /* IVSHMEM_CACHE_*: the mappings' type */
	__u32 cache_requested;  /* IVSHMEM_CACHE_*: the request (version 2) */
	__u32 reserved[6];      /* zero */
};

/* ivshmem_info.flags */
#define IVSHMEM_INFO_F_PRESENCE 0x1     /* device has peer presence */

/*
 * The Doorbell register carries the vector in bits 0..15, but QEMU's
 * ivshmem (10.0.2 and earlier) decodes only bits 0..7: vector 256 would
 * ring vector 0.  The device has no capability announcing a wider field,
 * so 8 bits is the contract: RING refuses a vector above
 * IVSHMEM_RING_VECTOR_MAX with EINVAL.  A device that offers more would
 * announce it through an IVSHMEM_INFO_F_* flag.
 */
#define IVSHMEM_RING_VECTOR_MAX 255

struct ivshmem_ring {
	__u16 peer;             /* destination peer ID */
	__u16 vector;           /* destination vector, <= 255, see above */
	__u32 flags;            /* must be zero */
};

struct ivshmem_bind {
	__u32 vector;           /* vector that read/poll wait for */
	__u32 flags;            /* must be zero */
};

/*
 * Peer presence (QEMU's presence=on, docs/specs/ivshmem-spec.rst): who
 * else the device's server lists, as a consistent snapshot.  Devices
 * without it (IVSHMEM_INFO_F_PRESENCE clear) fail PEERS with EOPNOTSUPP.
 *
 * poll() reports EPOLLPRI on every file of the device once presence
 * changed (a peer joined or left, the server went away or came back)
 * since that file last called PEERS; PEERS clears it for the file.  The
 * driver takes the device's presence interrupt on its last MSI-X vector
 * (give QEMU's device one vector more than the server's -n to keep
 * doorbells off it), or on INTx.
 */
#define IVSHMEM_PRESENCE_CONNECTED      0x1     /* ivshmem_peers.state */
#define IVSHMEM_PRESENCE_RECONNECTING   0x2
#define IVSHMEM_PRESENCE_REFUSED        0x4

struct ivshmem_peer {
	__u16 peer;             /* peer ID */
	__u16 vectors;          /* its vectors this device can ring */
};

struct ivshmem_peers {
	__u32 generation;       /* out: the device's Generation */
	__u32 state;            /* out: IVSHMEM_PRESENCE_* */
	__u32 own_vectors;      /* out: own vectors wired */
	__u32 count;            /* out: peers present (all of them) */
	__u32 max;              /* in: room at entries, in struct ivshmem_peer */
	__u32 flags;            /* in: must be zero */
	__u64 entries;          /* in: user pointer, the first max peers by ID */
};

/*
 * Type 0xD3, sequence numbers 0x00-0x0F: free in
 * Documentation/userspace-api/ioctl/ioctl-number.rst of Linux 6.12.118
 * (the newest kernel source Debian 12 ships, linux-source-6.12), and no
 * uapi header of that tree uses type 0xD3.  Kernels after 6.12 were not
 * checked.  Interface version 1 used 0xBA, which Linux 6.19 registers for
 * uapi/linux/liveupdate.h (sequence numbers 0x00-0x0F); nothing outside
 * this project used those numbers, as far as we know, so they are gone,
 * not kept as aliases: they fail with ENOTTY.
 */
#define IVSHMEM_IOCTL_MAGIC 0xD3
#define IVSHMEM_IOCTL_INFO _IOR(IVSHMEM_IOCTL_MAGIC, 0x00, struct ivshmem_info)
#define IVSHMEM_IOCTL_RING _IOW(IVSHMEM_IOCTL_MAGIC, 0x01, struct ivshmem_ring)
#define IVSHMEM_IOCTL_BIND _IOW(IVSHMEM_IOCTL_MAGIC, 0x02, struct ivshmem_bind)
#define IVSHMEM_IOCTL_PEERS \
	_IOWR(IVSHMEM_IOCTL_MAGIC, 0x03, struct ivshmem_peers)

#endif /* _UAPI_LINUX_IVSHMEM_H */
