// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * ivshmem: Linux guest driver for the QEMU inter-VM shared memory device.
 *
 * Binds PCI 1af4:1110 and exposes /dev/ivshmemN: mmap of the shared
 * memory (BAR2), ioctls for the peer ID, region size and vector count and
 * for ringing a peer's doorbell, and a blocking read()/poll() per
 * interrupt vector.  MSI-X is used when the device has it; otherwise the
 * driver falls back to INTx and acknowledges through IntrStatus.
 *
 * Lifetime: struct ivshmem_dev embeds the struct device of /dev/ivshmemN
 * and its cdev (cdev_device_add), and is freed by the device's release
 * once the last open file is closed; remove() only cuts it off from the
 * hardware.  All open files share one address_space (an inode of a small
 * pseudo file system), so remove() revokes every user mapping of BAR2 with
 * unmap_mapping_range(); the fault handler, which inserts the pages
 * under the same lock, answers SIGBUS from then on.
 */

#include <linux/atomic.h>
#include <linux/cdev.h>
#include <linux/device.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/pseudo_fs.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/wait.h>

#include "ivshmem-uapi.h"

#define DRV_NAME "ivshmem"
#define IVSHMEM_MAX_DEVICES 64
#define IVSHMEM_MAX_VECTORS 64
#define IVSHMEM_FS_MAGIC 0x6976736d     /* "ivsm" */

/* BAR0 register offsets */
#define REG_INTR_MASK   0x00
#define REG_INTR_STATUS 0x04
#define REG_IVPOSITION  0x08
#define REG_DOORBELL    0x0c

/* Peer presence window (QEMU presence=on) */
#define PR_CAP_TYPE             0x01
#define PR_VERSION              0x01
#define REG_PR_STATE            0x40
#define REG_PR_OWN_VECTORS      0x44
#define REG_PR_GENERATION       0x48
#define REG_PR_PEER_COUNT       0x4c
#define REG_PR_EVENT_STATUS     0x50
#define REG_PR_EVENT_CONTROL    0x54
#define REG_PR_PAGE_SELECT      0x58
#define REG_PR_PAGE_SIZE        0x5c
#define REG_PR_ENTRY            0x80
#define PR_ENTRY_VALID          0x80000000u
#define PR_INTR_STATUS          0x2     /* IntrStatus bit without MSI-X */

static char *cache = "wb";
module_param(cache, charp, 0444);
MODULE_PARM_DESC(cache,
		 "memory type of user mappings of the shared memory: wb (cached, default), wc (write-combining) or uc (uncached)");

struct ivshmem_dev;

struct ivshmem_vector {
	struct ivshmem_dev *idev;
	atomic_t events;                /* interrupts received so far */
	struct list_head files;         /* bound to it, under files_lock */
	char name[24];                  /* IRQ name, e.g. ivshmem0-v3 */
};

struct ivshmem_dev {
	struct device dev;              /* /dev/ivshmemN; release frees all */
	struct cdev cdev;
	struct mutex lock;              /* serialises users against removal */
	struct pci_dev *pdev;           /* NULL once the device is gone */
	void __iomem *regs;
	void __iomem *shm;              /* holds the memory type, see probe */
	struct inode *inode;            /* address_space of all user mappings */
	resource_size_t shm_start;
	resource_size_t shm_size;
	unsigned int irq_mode;
	unsigned int nvectors;
	int minor;                      /* -1 once given back */
	unsigned int cache_mode;        /* IVSHMEM_CACHE_* mappings get */
	bool presence;                  /* the presence window is there */
	unsigned int pr_vector;         /* its interrupt (MSI-X vector) */
	unsigned int pr_page_size;      /* entries a page */
	atomic_t pr_events;             /* presence interrupts so far */
	/* Open files, on the list of their vector; taken in hard IRQ. */
	spinlock_t files_lock;
	struct ivshmem_vector vec[IVSHMEM_MAX_VECTORS];
};

/*
 * Each open file has its own wait queue, which read() and poll() (and so
 * epoll, which registers once) wait on whatever vector the file is bound
 * to: an interrupt wakes the files on its vector's list, and BIND only
 * moves the file to another list.
 */
struct ivshmem_file {
	struct ivshmem_dev *idev;
	wait_queue_head_t wait;
	struct list_head node;          /* on vec[vector].files */
	unsigned int vector;            /* under idev->files_lock */
	u32 seen;                       /* events already returned by read */
	u32 pr_seen;                    /* pr_events at the last PEERS */
};

static dev_t ivshmem_devt;
static DEFINE_IDA(ivshmem_minors);
static unsigned int ivshmem_cache_mode;

/* A pseudo file system that provides one inode per device. */
static struct vfsmount *ivshmem_mnt;
static int ivshmem_mnt_count;

static int ivshmem_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, IVSHMEM_FS_MAGIC) ? 0 : -ENOMEM;
}

/*
 * No .owner: each device pins the mount, and a module reference held by it
 * would keep rmmod from ever removing the devices.  The mount is released
 * synchronously (an internal mount) by the last device's release, which
 * runs in remove() or under the module reference of the last open file.
 */
static struct file_system_type ivshmem_fs_type = {
	.name = DRV_NAME,
	.init_fs_context = ivshmem_init_fs_context,
	.kill_sb = kill_anon_super,
};

static struct inode *ivshmem_inode_new(void)
{
	struct inode *inode;
	int ret;

	ret = simple_pin_fs(&ivshmem_fs_type, &ivshmem_mnt, &ivshmem_mnt_count);
	if (ret)
		return ERR_PTR(ret);
	inode = alloc_anon_inode(ivshmem_mnt->mnt_sb);
	if (IS_ERR(inode))
		simple_release_fs(&ivshmem_mnt, &ivshmem_mnt_count);
	return inode;
}

static void ivshmem_inode_put(struct inode *inode)
{
	iput(inode);
	simple_release_fs(&ivshmem_mnt, &ivshmem_mnt_count);
}

static struct ivshmem_dev *to_ivshmem(struct device *dev)
{
	return container_of(dev, struct ivshmem_dev, dev);
}

static bool ivshmem_gone(struct ivshmem_dev *idev)
{
	return !READ_ONCE(idev->pdev);
}

static void ivshmem_dev_release(struct device *dev)
{
	struct ivshmem_dev *idev = to_ivshmem(dev);

	if (idev->inode)
		ivshmem_inode_put(idev->inode);
	if (idev->minor >= 0)
		ida_free(&ivshmem_minors, idev->minor);
	kfree(idev);
}

/* Wakes the files bound to VEC (all files if VEC is NULL) with KEY. */
static void ivshmem_wake(struct ivshmem_dev *idev, struct ivshmem_vector *vec,
			 __poll_t key)
{
	struct ivshmem_file *f;
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&idev->files_lock, flags);
	for (i = 0; i < IVSHMEM_MAX_VECTORS; i++) {
		if (vec && vec != &idev->vec[i])
			continue;
		list_for_each_entry(f, &idev->vec[i].files, node)
			wake_up_interruptible_poll(&f->wait, key);
	}
	spin_unlock_irqrestore(&idev->files_lock, flags);
}

/* Acknowledge a presence event and tell every file (EPOLLPRI). */
static void ivshmem_presence_event(struct ivshmem_dev *idev)
{
	u32 status = readl(idev->regs + REG_PR_EVENT_STATUS);

	if (!status)
		return;
	/* Cleared before PEERS reads: a change after this interrupts again. */
	writel(status, idev->regs + REG_PR_EVENT_STATUS);
	atomic_inc(&idev->pr_events);
	ivshmem_wake(idev, NULL, EPOLLPRI);
}

static irqreturn_t ivshmem_vector_irq(int irq, void *opaque)
{
	struct ivshmem_vector *vec = opaque;
	struct ivshmem_dev *idev = vec->idev;

	if (idev->presence && idev->irq_mode == IVSHMEM_IRQ_MSIX &&
	    vec == &idev->vec[idev->pr_vector])
		ivshmem_presence_event(idev);
	atomic_inc(&vec->events);
	ivshmem_wake(vec->idev, vec, EPOLLIN | EPOLLRDNORM);
	return IRQ_HANDLED;
}

static irqreturn_t ivshmem_intx_irq(int irq, void *opaque)
{
	struct ivshmem_dev *idev = opaque;

	/* Reading IntrStatus clears it and deasserts the line. */
	u32 status = readl(idev->regs + REG_INTR_STATUS);

	if (!status)
		return IRQ_NONE;
	if (idev->presence && (status & PR_INTR_STATUS))
		ivshmem_presence_event(idev);
	if (!idev->presence || (status & ~PR_INTR_STATUS))
		ivshmem_vector_irq(irq, &idev->vec[0]);
	return IRQ_HANDLED;
}

static int ivshmem_open(struct inode *inode, struct file *filp)
{
	struct ivshmem_dev *idev = container_of(inode->i_cdev,
						struct ivshmem_dev, cdev);
	struct ivshmem_file *f;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	init_waitqueue_head(&f->wait);
	mutex_lock(&idev->lock);
	if (ivshmem_gone(idev)) {
		mutex_unlock(&idev->lock);
		kfree(f);
		return -ENODEV;
	}
	get_device(&idev->dev);
	mutex_unlock(&idev->lock);
	f->idev = idev;
	spin_lock_irq(&idev->files_lock);
	f->seen = atomic_read(&idev->vec[0].events);
	f->pr_seen = atomic_read(&idev->pr_events);
	list_add_tail(&f->node, &idev->vec[0].files);
	spin_unlock_irq(&idev->files_lock);
	filp->private_data = f;
	/* One address_space for every open: remove() zaps all mappings. */
	filp->f_mapping = idev->inode->i_mapping;
	return 0;
}

static int ivshmem_release(struct inode *inode, struct file *filp)
{
	struct ivshmem_file *f = filp->private_data;
	struct ivshmem_dev *idev = f->idev;

	spin_lock_irq(&idev->files_lock);
	list_del(&f->node);
	spin_unlock_irq(&idev->files_lock);
	put_device(&idev->dev);
	kfree(f);
	return 0;
}

/*
 * The events of the bound vector that read() has not returned yet; with
 * TAKE, they count as returned from now on.
 */
static u32 ivshmem_pending(struct ivshmem_file *f, bool take)
{
	struct ivshmem_dev *idev = f->idev;
	unsigned long flags;
	u32 count;

	spin_lock_irqsave(&idev->files_lock, flags);
	count = (u32)atomic_read(&idev->vec[f->vector].events) - f->seen;
	if (take)
		f->seen += count;
	spin_unlock_irqrestore(&idev->files_lock, flags);
	return count;
}

static ssize_t ivshmem_read(struct file *filp, char __user *buf,
			    size_t len, loff_t *ppos)
{
	struct ivshmem_file *f = filp->private_data;
	struct ivshmem_dev *idev = f->idev;
	u32 count;
	int ret;

	if (len < sizeof(count))
		return -EINVAL;
	if (!idev->nvectors)
		return ivshmem_gone(idev) ? -ENODEV : -ENXIO;
	for (;;) {
		if (ivshmem_gone(idev))
			return -ENODEV;
		count = ivshmem_pending(f, true);
		if (count)
			break;
		if (filp->f_flags & O_NONBLOCK)
			return -EAGAIN;
		/* The file's own queue: a BIND meanwhile changes nothing. */
		ret = wait_event_interruptible(f->wait,
					       ivshmem_pending(f, false) ||
					       ivshmem_gone(idev));
		if (ret)
			return ret;
	}
	if (copy_to_user(buf, &count, sizeof(count)))
		return -EFAULT;
	return sizeof(count);
}

static __poll_t ivshmem_poll(struct file *filp, poll_table *wait)
{
	struct ivshmem_file *f = filp->private_data;
	struct ivshmem_dev *idev = f->idev;
	__poll_t mask = 0;

	if (!idev->nvectors)
		return EPOLLERR | (ivshmem_gone(idev) ? EPOLLHUP : 0);
	poll_wait(filp, &f->wait, wait);
	if (ivshmem_gone(idev))
		return EPOLLERR | EPOLLHUP;
	if (idev->presence &&
	    (u32)atomic_read(&idev->pr_events) != READ_ONCE(f->pr_seen))
		mask |= EPOLLPRI;
	if (ivshmem_pending(f, false))
		mask |= EPOLLIN | EPOLLRDNORM;
	return mask;
}

/*
 * Pages are inserted here, one by one, under the lock that remove() takes
 * to zap them: a mapping set up while the device goes away cannot keep a
 * page (with pages inserted at mmap() time, a VMA linked into the
 * address_space only after ->mmap returned could escape the zap).
 */
static vm_fault_t ivshmem_vm_fault(struct vm_fault *vmf)
{
	struct ivshmem_file *f = vmf->vma->vm_file->private_data;
	struct ivshmem_dev *idev = f->idev;
	vm_fault_t ret = VM_FAULT_SIGBUS;

	mutex_lock(&idev->lock);
	if (!ivshmem_gone(idev) && vmf->pgoff < idev->shm_size >> PAGE_SHIFT)
		ret = vmf_insert_pfn(vmf->vma, vmf->address,
				     PHYS_PFN(idev->shm_start) + vmf->pgoff);
	mutex_unlock(&idev->lock);
	return ret;
}

static const struct vm_operations_struct ivshmem_vm_ops = {
	.fault = ivshmem_vm_fault,
};

static pgprot_t ivshmem_pgprot(pgprot_t prot)
{
	/*
	 * What is asked for: on x86, vmf_insert_pfn() gives each page the
	 * memory type reserved by ivshmem_map_shm() (idev->cache_mode).
	 */
	switch (ivshmem_cache_mode) {
	case IVSHMEM_CACHE_UC:
		return pgprot_noncached(prot);
	case IVSHMEM_CACHE_WC:
		return pgprot_writecombine(prot);
	default:
		return prot;
	}
}

static void __iomem *ivshmem_map_shm(resource_size_t start,
				     resource_size_t size)
{
	switch (ivshmem_cache_mode) {
	case IVSHMEM_CACHE_WB:
		return ioremap_cache(start, size);
	case IVSHMEM_CACHE_WC:
		return ioremap_wc(start, size);
	default:
		return ioremap(start, size);
	}
}

/*
 * The memory type the kernel actually gave the mapping at ADDR: on x86,
 * PAT may downgrade a request (write-back where the MTRRs say uncached
 * becomes uncached-minus), and user mappings get the same type.
 */
static unsigned int ivshmem_cache_mode_of(void __iomem *addr)
{
#ifdef CONFIG_X86
	static const struct {
		enum page_cache_mode pcm;
		unsigned int mode;
	} modes[] = {
		{ _PAGE_CACHE_MODE_WB, IVSHMEM_CACHE_WB },
		{ _PAGE_CACHE_MODE_WC, IVSHMEM_CACHE_WC },
		{ _PAGE_CACHE_MODE_UC_MINUS, IVSHMEM_CACHE_UC_MINUS },
		{ _PAGE_CACHE_MODE_UC, IVSHMEM_CACHE_UC },
		{ _PAGE_CACHE_MODE_WT, IVSHMEM_CACHE_WT },
		{ _PAGE_CACHE_MODE_WP, IVSHMEM_CACHE_WP },
	};
	unsigned int level, i;
	unsigned long bits;
	pgprot_t prot;
	pte_t *pte = lookup_address((unsigned long)addr, &level);

	if (!pte)
		return ivshmem_cache_mode;
	/* pgprot2cachemode() is not exported: compare with each mode. */
	prot = pte_pgprot(*pte);
	/* Huge ioremap: the PAT bit of a large page is bit 12, not 7. */
	if (level != PG_LEVEL_4K)
		prot = pgprot_large_2_4k(prot);
	bits = pgprot_val(prot) & _PAGE_CACHE_MASK;
	for (i = 0; i < ARRAY_SIZE(modes); i++)
		if (cachemode2protval(modes[i].pcm) == bits)
			return modes[i].mode;
	return ivshmem_cache_mode;
#else
	return ivshmem_cache_mode;
#endif
}

/* vm_flags became read-only, behind vm_flags_set(), in 6.3. */
static void ivshmem_set_vm_flags(struct vm_area_struct *vma,
				 unsigned long flags)
{
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
	vma->vm_flags |= flags;
#else
	vm_flags_set(vma, flags);
#endif
}

static int ivshmem_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct ivshmem_file *f = filp->private_data;
	struct ivshmem_dev *idev = f->idev;
	unsigned long npages = idev->shm_size >> PAGE_SHIFT;

	/* A private (copy-on-write) mapping would silently stop sharing. */
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_pgoff > npages || vma_pages(vma) > npages - vma->vm_pgoff)
		return -EINVAL;
	if (ivshmem_gone(idev))
		return -ENODEV;
	vma->vm_page_prot = ivshmem_pgprot(vma->vm_page_prot);
	ivshmem_set_vm_flags(vma, VM_IO | VM_PFNMAP | VM_DONTEXPAND |
			     VM_DONTDUMP);
	vma->vm_ops = &ivshmem_vm_ops;
	return 0;
}

static long ivshmem_get_info(struct ivshmem_dev *idev, void __user *arg)
{
	struct ivshmem_info info = {
		.version = IVSHMEM_UAPI_VERSION,
		.region_size = idev->shm_size,
		.vectors = idev->nvectors,
		.irq_mode = idev->irq_mode,
		.cache_mode = idev->cache_mode,
		.cache_requested = ivshmem_cache_mode,
		.flags = idev->presence ? IVSHMEM_INFO_F_PRESENCE : 0,
	};

	mutex_lock(&idev->lock);
	if (ivshmem_gone(idev)) {
		mutex_unlock(&idev->lock);
		return -ENODEV;
	}
	info.ivposition = readl(idev->regs + REG_IVPOSITION);
	info.revision = idev->pdev->revision;
	mutex_unlock(&idev->lock);
	return copy_to_user(arg, &info, sizeof(info)) ? -EFAULT : 0;
}

static long ivshmem_ring(struct ivshmem_dev *idev, void __user *arg)
{
	struct ivshmem_ring ring;

	if (copy_from_user(&ring, arg, sizeof(ring)))
		return -EFAULT;
	/* The device decodes 8 bits: 256 would ring vector 0. */
	if (ring.flags || ring.vector > IVSHMEM_RING_VECTOR_MAX)
		return -EINVAL;
	mutex_lock(&idev->lock);
	if (ivshmem_gone(idev)) {
		mutex_unlock(&idev->lock);
		return -ENODEV;
	}
	writel(((u32)ring.peer << 16) | ring.vector,
	       idev->regs + REG_DOORBELL);
	mutex_unlock(&idev->lock);
	return 0;
}

static long ivshmem_bind(struct ivshmem_file *f, void __user *arg)
{
	struct ivshmem_dev *idev = f->idev;
	struct ivshmem_bind bind;

	if (copy_from_user(&bind, arg, sizeof(bind)))
		return -EFAULT;
	if (ivshmem_gone(idev))
		return -ENODEV;
	if (bind.flags || bind.vector >= idev->nvectors)
		return -EINVAL;
	spin_lock_irq(&idev->files_lock);
	f->vector = bind.vector;
	f->seen = atomic_read(&idev->vec[bind.vector].events);
	list_move_tail(&f->node, &idev->vec[bind.vector].files);
	spin_unlock_irq(&idev->files_lock);
	/*
	 * Waiters (read, poll, epoll) sleep on the file's own queue, which
	 * the new vector wakes from now on: nothing to move.
	 */
	return 0;
}

/*
 * A consistent snapshot of the peer table: read Generation, the table
 * page by page, and Generation again; retry while it moves.  Called with
 * idev->lock held and the device present.  Returns the entries read.
 */
static int ivshmem_presence_snapshot(struct ivshmem_dev *idev,
				     struct ivshmem_peers *out,
				     struct ivshmem_peer *buf, u32 room)
{
	u32 gen, i, n, entry;
	int tries;

	for (tries = 0; tries < 100; tries++) {
		gen = readl(idev->regs + REG_PR_GENERATION);
		out->state = readl(idev->regs + REG_PR_STATE);
		out->own_vectors = readl(idev->regs + REG_PR_OWN_VECTORS);
		out->count = readl(idev->regs + REG_PR_PEER_COUNT);
		n = min(out->count, room);
		for (i = 0; i < n; i++) {
			if (i % idev->pr_page_size == 0)
				writel(i / idev->pr_page_size,
				       idev->regs + REG_PR_PAGE_SELECT);
			entry = readl(idev->regs + REG_PR_ENTRY +
				      4 * (i % idev->pr_page_size));
			if (!(entry & PR_ENTRY_VALID))
				break;          /* the table shrank: retry */
			buf[i].peer = entry & 0xffff;
			buf[i].vectors = (entry >> 16) & 0xfff;
		}
		if (i == n && readl(idev->regs + REG_PR_GENERATION) == gen) {
			out->generation = gen;
			return n;
		}
	}
	return -EAGAIN;
}

static long ivshmem_peers(struct ivshmem_file *f, void __user *arg)
{
	struct ivshmem_dev *idev = f->idev;
	struct ivshmem_peer *buf = NULL;
	struct ivshmem_peers req;
	int n;

	if (copy_from_user(&req, arg, sizeof(req)))
		return -EFAULT;
	if (req.flags || req.max > 65536)
		return -EINVAL;
	if (!idev->presence)
		return ivshmem_gone(idev) ? -ENODEV : -EOPNOTSUPP;
	if (req.max) {
		buf = kvmalloc_array(req.max, sizeof(*buf), GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
	}
	mutex_lock(&idev->lock);
	if (ivshmem_gone(idev)) {
		mutex_unlock(&idev->lock);
		kvfree(buf);
		return -ENODEV;
	}
	/* Seen from here on: a change during the read polls again. */
	WRITE_ONCE(f->pr_seen, atomic_read(&idev->pr_events));
	n = ivshmem_presence_snapshot(idev, &req, buf, req.max);
	mutex_unlock(&idev->lock);
	if (n > 0 && copy_to_user(u64_to_user_ptr(req.entries), buf,
				  n * sizeof(*buf)))
		n = -EFAULT;
	kvfree(buf);
	if (n < 0)
		return n;
	return copy_to_user(arg, &req, sizeof(req)) ? -EFAULT : 0;
}

static long ivshmem_ioctl(struct file *filp, unsigned int cmd,
			  unsigned long arg)
{
	struct ivshmem_file *f = filp->private_data;

	switch (cmd) {
	case IVSHMEM_IOCTL_INFO:
		return ivshmem_get_info(f->idev, (void __user *)arg);
	case IVSHMEM_IOCTL_RING:
		return ivshmem_ring(f->idev, (void __user *)arg);
	case IVSHMEM_IOCTL_BIND:
		return ivshmem_bind(f, (void __user *)arg);
	case IVSHMEM_IOCTL_PEERS:
		return ivshmem_peers(f, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations ivshmem_fops = {
	.owner = THIS_MODULE,
	.open = ivshmem_open,
	.release = ivshmem_release,
	.read = ivshmem_read,
	.poll = ivshmem_poll,
	.mmap = ivshmem_mmap,
	.unlocked_ioctl = ivshmem_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* sysfs: /sys/class/ivshmem/ivshmemN/{ivposition,region_size} */
static ssize_t ivposition_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	struct ivshmem_dev *idev = to_ivshmem(dev);
	ssize_t ret = -ENODEV;

	mutex_lock(&idev->lock);
	if (!ivshmem_gone(idev))
		ret = sysfs_emit(buf, "%u\n",
				 readl(idev->regs + REG_IVPOSITION));
	mutex_unlock(&idev->lock);
	return ret;
}
static DEVICE_ATTR_RO(ivposition);

static ssize_t region_size_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n",
			  (unsigned long long)to_ivshmem(dev)->shm_size);
}
static DEVICE_ATTR_RO(region_size);

/*
 * .../presence: "state=connected generation=N own_vectors=N peers=N";
 * .../peers: one "ID VECTORS" line a peer, as many as fit in a page.
 * Only on devices with presence.
 */
static const char *ivshmem_presence_state_name(u32 state)
{
	if (state & IVSHMEM_PRESENCE_CONNECTED)
		return "connected";
	if (state & IVSHMEM_PRESENCE_RECONNECTING)
		return "reconnecting";
	if (state & IVSHMEM_PRESENCE_REFUSED)
		return "refused";
	return "none";
}

static ssize_t ivshmem_presence_show_list(struct device *dev, char *buf,
					  bool list)
{
	struct ivshmem_dev *idev = to_ivshmem(dev);
	u32 room = list ? PAGE_SIZE / 12 : 0;
	struct ivshmem_peers p = { 0 };
	struct ivshmem_peer *peers = NULL;
	ssize_t len = 0;
	int n, i;

	if (room) {
		peers = kvmalloc_array(room, sizeof(*peers), GFP_KERNEL);
		if (!peers)
			return -ENOMEM;
	}
	mutex_lock(&idev->lock);
	n = ivshmem_gone(idev) ? -ENODEV :
	    ivshmem_presence_snapshot(idev, &p, peers, room);
	mutex_unlock(&idev->lock);
	if (n < 0) {
		kvfree(peers);
		return n;
	}
	if (!list)
		len = sysfs_emit(buf, "state=%s generation=%u own_vectors=%u "
				 "peers=%u\n",
				 ivshmem_presence_state_name(p.state),
				 p.generation, p.own_vectors, p.count);
	for (i = 0; i < n; i++)
		len += sysfs_emit_at(buf, len, "%u %u\n", peers[i].peer,
				     peers[i].vectors);
	kvfree(peers);
	return len;
}

static ssize_t presence_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	return ivshmem_presence_show_list(dev, buf, false);
}
static DEVICE_ATTR_RO(presence);

static ssize_t peers_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	return ivshmem_presence_show_list(dev, buf, true);
}
static DEVICE_ATTR_RO(peers);

static struct attribute *ivshmem_attrs[] = {
	&dev_attr_ivposition.attr,
	&dev_attr_region_size.attr,
	&dev_attr_presence.attr,
	&dev_attr_peers.attr,
	NULL,
};

static umode_t ivshmem_attr_visible(struct kobject *kobj,
				    struct attribute *attr, int n)
{
	struct ivshmem_dev *idev = to_ivshmem(kobj_to_dev(kobj));

	if ((attr == &dev_attr_presence.attr || attr == &dev_attr_peers.attr) &&
	    !idev->presence)
		return 0;
	return attr->mode;
}

static const struct attribute_group ivshmem_group = {
	.attrs = ivshmem_attrs,
	.is_visible = ivshmem_attr_visible,
};
__ATTRIBUTE_GROUPS(ivshmem);

static struct class ivshmem_class = {
	.name = DRV_NAME,
	.dev_groups = ivshmem_groups,
};

/*
 * Interrupts are requested and freed explicitly (no devm): remove() must
 * have them quiesced before it declares the device gone.
 */
static int ivshmem_setup_msix(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	int nvec, want, i, ret;

	want = pci_msix_vec_count(pdev);
	if (want <= 0)
		return -ENODEV;
	want = min(want, IVSHMEM_MAX_VECTORS);
	nvec = pci_alloc_irq_vectors(pdev, 1, want, PCI_IRQ_MSIX);
	if (nvec < 0)
		return nvec;
	if (nvec < want)
		dev_warn(&pdev->dev, "only %d of %d MSI-X vectors available\n",
			 nvec, want);
	for (i = 0; i < nvec; i++) {
		snprintf(idev->vec[i].name, sizeof(idev->vec[i].name),
			 DRV_NAME "%d-v%d", idev->minor, i);
		ret = request_irq(pci_irq_vector(pdev, i), ivshmem_vector_irq, 0,
				  idev->vec[i].name, &idev->vec[i]);
		if (ret) {
			while (i--)
				free_irq(pci_irq_vector(pdev, i),
					 &idev->vec[i]);
			pci_free_irq_vectors(pdev);
			return ret;
		}
	}
	idev->nvectors = nvec;
	idev->irq_mode = IVSHMEM_IRQ_MSIX;
	return 0;
}

static int ivshmem_setup_intx(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	int ret;

	if (!pdev->irq)
		return -ENODEV;
	/* Keep the peer interrupt masked and drop anything stale... */
	writel(0, idev->regs + REG_INTR_MASK);
	readl(idev->regs + REG_INTR_STATUS);
	snprintf(idev->vec[0].name, sizeof(idev->vec[0].name),
		 DRV_NAME "%d-v0", idev->minor);
	ret = request_irq(pdev->irq, ivshmem_intx_irq, IRQF_SHARED,
			  idev->vec[0].name, idev);
	if (ret)
		return ret;
	idev->nvectors = 1;
	idev->irq_mode = IVSHMEM_IRQ_INTX;
	/* ...until the handler is in place: a ring from now on is seen. */
	writel(1, idev->regs + REG_INTR_MASK);
	return 0;
}

static void ivshmem_free_irqs(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	unsigned int i;

	if (idev->presence)
		writel(0, idev->regs + REG_PR_EVENT_CONTROL);
	if (idev->irq_mode == IVSHMEM_IRQ_INTX) {
		writel(0, idev->regs + REG_INTR_MASK);
		free_irq(pdev->irq, idev);
	} else if (idev->irq_mode == IVSHMEM_IRQ_MSIX) {
		for (i = 0; i < idev->nvectors; i++)
			free_irq(pci_irq_vector(pdev, i), &idev->vec[i]);
		pci_free_irq_vectors(pdev);
	}
}

static void ivshmem_setup_irq(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	/* Only doorbell-capable devices have BAR1 (the MSI-X table). */
	bool doorbell = pci_resource_len(pdev, 1);
	int ret = -ENODEV;

	if (doorbell) {
		ret = ivshmem_setup_msix(idev);
		if (!ret)
			return;
		dev_warn(&pdev->dev, "MSI-X set-up failed (%d), trying INTx\n",
			 ret);
	}
	if (pdev->irq || doorbell) {
		ret = ivshmem_setup_intx(idev);
		if (!ret)
			return;
		dev_warn(&pdev->dev,
			 "no interrupts (%d): doorbells can be rung, not received\n",
			 ret);
	}
	idev->nvectors = 0;
	idev->irq_mode = IVSHMEM_IRQ_NONE;
}

/*
 * The presence capability (vendor-specific, type 1) and its window in
 * BAR0; with interrupts, enable its event on the last MSI-X vector or on
 * INTx (IntrStatus bit 1).
 */
static void ivshmem_presence_probe(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	u8 pos = pci_find_capability(pdev, PCI_CAP_ID_VNDR);
	u8 type = 0, version, bar;
	u32 off;

	while (pos) {
		pci_read_config_byte(pdev, pos + 3, &type);
		if (type == PR_CAP_TYPE)
			break;
		pos = pci_find_next_capability(pdev, pos, PCI_CAP_ID_VNDR);
	}
	if (!pos)
		return;
	pci_read_config_byte(pdev, pos + 4, &version);
	pci_read_config_byte(pdev, pos + 5, &bar);
	pci_read_config_dword(pdev, pos + 8, &off);
	if (version != PR_VERSION || bar != 0 || off != REG_PR_STATE) {
		dev_warn(&pdev->dev, "presence capability version %u, BAR %u, "
			 "offset 0x%x not supported\n", version, bar, off);
		return;
	}
	idev->pr_page_size = readl(idev->regs + REG_PR_PAGE_SIZE);
	if (!idev->pr_page_size || idev->pr_page_size > 32)
		return;
	idev->presence = true;
	writel(~0u, idev->regs + REG_PR_EVENT_STATUS);
	if (idev->irq_mode == IVSHMEM_IRQ_MSIX) {
		idev->pr_vector = idev->nvectors - 1;
		writel(idev->pr_vector << 16 | 1,
		       idev->regs + REG_PR_EVENT_CONTROL);
	} else if (idev->irq_mode == IVSHMEM_IRQ_INTX) {
		writel(1 | PR_INTR_STATUS, idev->regs + REG_INTR_MASK);
		writel(1, idev->regs + REG_PR_EVENT_CONTROL);
	}
}

static int ivshmem_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct ivshmem_dev *idev;
	unsigned int i;
	int ret;

	if (!pci_resource_len(pdev, 2))
		return -ENODEV;
	idev = kzalloc(sizeof(*idev), GFP_KERNEL);
	if (!idev)
		return -ENOMEM;
	mutex_init(&idev->lock);
	spin_lock_init(&idev->files_lock);
	for (i = 0; i < IVSHMEM_MAX_VECTORS; i++) {
		idev->vec[i].idev = idev;
		INIT_LIST_HEAD(&idev->vec[i].files);
	}
	device_initialize(&idev->dev);
	idev->dev.class = &ivshmem_class;
	idev->dev.parent = &pdev->dev;
	idev->dev.release = ivshmem_dev_release;
	/* From here on, put_device() frees idev. */
	idev->minor = ida_alloc_max(&ivshmem_minors, IVSHMEM_MAX_DEVICES - 1,
				    GFP_KERNEL);
	if (idev->minor < 0) {
		ret = idev->minor;
		goto err_put;
	}
	idev->dev.devt = MKDEV(MAJOR(ivshmem_devt), idev->minor);
	ret = dev_set_name(&idev->dev, DRV_NAME "%d", idev->minor);
	if (ret)
		goto err_put;
	idev->inode = ivshmem_inode_new();
	if (IS_ERR(idev->inode)) {
		ret = PTR_ERR(idev->inode);
		idev->inode = NULL;
		goto err_put;
	}

	ret = pci_enable_device(pdev);
	if (ret)
		goto err_put;
	ret = pci_request_region(pdev, 0, DRV_NAME);
	if (ret)
		goto err_disable;
	ret = pci_request_region(pdev, 2, DRV_NAME);
	if (ret)
		goto err_release0;
	idev->regs = pci_iomap(pdev, 0, 0);
	if (!idev->regs) {
		ret = -ENOMEM;
		goto err_release2;
	}
	idev->shm_start = pci_resource_start(pdev, 2);
	idev->shm_size = pci_resource_len(pdev, 2);
	/*
	 * Unused by the driver: this kernel mapping reserves the memory type
	 * (x86 PAT) that user mappings, filled in at fault time, inherit.
	 */
	idev->shm = ivshmem_map_shm(idev->shm_start, idev->shm_size);
	if (!idev->shm) {
		ret = -ENOMEM;
		goto err_unmap_regs;
	}
	idev->cache_mode = ivshmem_cache_mode_of(idev->shm);
	idev->pdev = pdev;
	pci_set_master(pdev);
	ivshmem_setup_irq(idev);
	ivshmem_presence_probe(idev);

	cdev_init(&idev->cdev, &ivshmem_fops);
	idev->cdev.owner = THIS_MODULE;
	ret = cdev_device_add(&idev->cdev, &idev->dev);
	if (ret)
		goto err_irq;
	pci_set_drvdata(pdev, idev);
	dev_info(&pdev->dev,
		 "/dev/%s: %llu bytes, %s, %u vector(s), peer ID %u\n",
		 dev_name(&idev->dev), (unsigned long long)idev->shm_size,
		 idev->irq_mode == IVSHMEM_IRQ_MSIX ? "MSI-X" :
		 idev->irq_mode == IVSHMEM_IRQ_INTX ? "INTx" : "no interrupts",
		 idev->nvectors, readl(idev->regs + REG_IVPOSITION));
	return 0;

err_irq:
	ivshmem_free_irqs(idev);
	pci_clear_master(pdev);
	idev->pdev = NULL;
	iounmap(idev->shm);
err_unmap_regs:
	pci_iounmap(pdev, idev->regs);
err_release2:
	pci_release_region(pdev, 2);
err_release0:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
err_put:
	put_device(&idev->dev);
	return ret;
}

static void ivshmem_remove(struct pci_dev *pdev)
{
	struct ivshmem_dev *idev = pci_get_drvdata(pdev);

	/* No new opens, no sysfs readers. */
	cdev_device_del(&idev->cdev, &idev->dev);
	ivshmem_free_irqs(idev);
	mutex_lock(&idev->lock);
	WRITE_ONCE(idev->pdev, NULL);
	/* Revoke every user mapping: later accesses get SIGBUS. */
#ifndef IVSHMEM_TEST_NO_ZAP
	unmap_mapping_range(idev->inode->i_mapping, 0, 0, 1);
#endif
	mutex_unlock(&idev->lock);
	/* Wake up blocked readers and pollers: -ENODEV, POLLERR | POLLHUP. */
	ivshmem_wake(idev, NULL, EPOLLERR | EPOLLHUP);
	/* Nothing touches the hardware any more. */
	pci_clear_master(pdev);
	iounmap(idev->shm);
	pci_iounmap(pdev, idev->regs);
	pci_release_region(pdev, 2);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	/* The name can be reused at once; open files keep the rest. */
	ida_free(&ivshmem_minors, idev->minor);
	idev->minor = -1;
	put_device(&idev->dev);
}

static const struct pci_device_id ivshmem_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) },
	{ }
};
MODULE_DEVICE_TABLE(pci, ivshmem_ids);

static struct pci_driver ivshmem_driver = {
	.name = DRV_NAME,
	.id_table = ivshmem_ids,
	.probe = ivshmem_probe,
	.remove = ivshmem_remove,
};

static int ivshmem_parse_cache(void)
{
	if (!strcmp(cache, "wb"))
		ivshmem_cache_mode = IVSHMEM_CACHE_WB;
	else if (!strcmp(cache, "wc"))
		ivshmem_cache_mode = IVSHMEM_CACHE_WC;
	else if (!strcmp(cache, "uc"))
		ivshmem_cache_mode = IVSHMEM_CACHE_UC;
	else
		return -EINVAL;
	return 0;
}

static int __init ivshmem_init(void)
{
	int ret;

	ret = ivshmem_parse_cache();
	if (ret) {
		pr_err(DRV_NAME ": cache=%s: use wb, wc or uc\n", cache);
		return ret;
	}
	ret = alloc_chrdev_region(&ivshmem_devt, 0, IVSHMEM_MAX_DEVICES,
				  DRV_NAME);
	if (ret)
		return ret;
	ret = class_register(&ivshmem_class);
	if (ret)
		goto err_region;
	ret = pci_register_driver(&ivshmem_driver);
	if (ret)
		goto err_class;
	return 0;

err_class:
	class_unregister(&ivshmem_class);
err_region:
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
	return ret;
}

static void __exit ivshmem_exit(void)
{
	pci_unregister_driver(&ivshmem_driver);
	class_unregister(&ivshmem_class);
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
}

module_init(ivshmem_init);
module_exit(ivshmem_exit);

MODULE_AUTHOR("The QEMU ivshmem series authors");
MODULE_DESCRIPTION("QEMU inter-VM shared memory (ivshmem) guest driver");
MODULE_LICENSE("GPL");
