/* SPDX-License-Identifier: GPL-2.0-or-later WITH Linux-syscall-note */
/*
 * ivshmem guest driver: user-space interface of /dev/ivshmemN.
 *
 * mmap(offset 0) maps the shared memory (BAR2).  read() blocks until the
 * vector bound to the open file (IVSHMEM_IOCTL_BIND, default 0) fired
 * and returns a __u32: the number of interrupts since the previous read.
 * poll() reports POLLIN while such interrupts are pending.
 */
#ifndef IVSHMEM_UAPI_H
#define IVSHMEM_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define IVSHMEM_IRQ_NONE  0     /* no interrupt available (plain device) */
#define IVSHMEM_IRQ_INTX  1     /* legacy INTx, acked through IntrStatus */
#define IVSHMEM_IRQ_MSIX  2     /* one MSI-X vector per doorbell vector */

struct ivshmem_info {
	__u64 region_size;      /* BAR2 size in bytes */
	__u32 ivposition;       /* own peer ID (IVPosition register) */
	__u32 vectors;          /* interrupt vectors usable by read/poll */
	__u32 irq_mode;         /* IVSHMEM_IRQ_* */
	__u32 revision;         /* PCI revision ID */
};

struct ivshmem_ring {
	__u16 peer;             /* destination peer ID */
	__u16 vector;           /* destination vector */
};

#define IVSHMEM_IOCTL_MAGIC 0xB5
#define IVSHMEM_IOCTL_INFO _IOR(IVSHMEM_IOCTL_MAGIC, 0, struct ivshmem_info)
#define IVSHMEM_IOCTL_RING _IOW(IVSHMEM_IOCTL_MAGIC, 1, struct ivshmem_ring)
#define IVSHMEM_IOCTL_BIND _IOW(IVSHMEM_IOCTL_MAGIC, 2, __u32)

#endif /* IVSHMEM_UAPI_H */
