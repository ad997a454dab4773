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

#define IVSHMEM_UAPI_VERSION 1

/* ivshmem_info.irq_mode */
#define IVSHMEM_IRQ_NONE  0     /* no interrupt available (plain device) */
#define IVSHMEM_IRQ_INTX  1     /* legacy INTx, acked through IntrStatus */
#define IVSHMEM_IRQ_MSIX  2     /* one MSI-X vector per doorbell vector */

/* ivshmem_info.cache_mode: the memory type mmap() requests */
#define IVSHMEM_CACHE_UC  1     /* uncached */
#define IVSHMEM_CACHE_WC  2     /* write-combining */
#define IVSHMEM_CACHE_WB  3     /* write-back (cached) */

struct ivshmem_info {
	__u32 version;          /* IVSHMEM_UAPI_VERSION of the driver */
	__u32 flags;            /* IVSHMEM_INFO_F_*, none defined yet */
	__u64 region_size;      /* BAR2 size in bytes */
	__u32 ivposition;       /* own peer ID (IVPosition, read live) */
	__u32 vectors;          /* interrupt vectors usable by read/poll */
	__u32 irq_mode;         /* IVSHMEM_IRQ_* */
	__u32 revision;         /* PCI revision ID */
	__u32 cache_mode;       /* IVSHMEM_CACHE_* */
	__u32 reserved[7];      /* zero */
};

struct ivshmem_ring {
	__u16 peer;             /* destination peer ID */
	__u16 vector;           /* destination vector */
	__u32 flags;            /* must be zero */
};

struct ivshmem_bind {
	__u32 vector;           /* vector that read/poll wait for */
	__u32 flags;            /* must be zero */
};

/*
 * 0xBA is free in Documentation/userspace-api/ioctl/ioctl-number.rst
 * (checked against 6.12); we use sequence numbers 0x00-0x0F.
 */
#define IVSHMEM_IOCTL_MAGIC 0xBA
#define IVSHMEM_IOCTL_INFO _IOR(IVSHMEM_IOCTL_MAGIC, 0x00, struct ivshmem_info)
#define IVSHMEM_IOCTL_RING _IOW(IVSHMEM_IOCTL_MAGIC, 0x01, struct ivshmem_ring)
#define IVSHMEM_IOCTL_BIND _IOW(IVSHMEM_IOCTL_MAGIC, 0x02, struct ivshmem_bind)

#endif /* _UAPI_LINUX_IVSHMEM_H */
