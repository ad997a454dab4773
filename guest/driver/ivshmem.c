// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * ivshmem: Linux guest driver for the QEMU inter-VM shared memory device.
 *
 * Binds PCI 1af4:1110 and exposes /dev/ivshmemN: mmap of the shared
 * memory (BAR2), ioctls for the peer ID, region size and vector count and
 * for ringing a peer's doorbell, and a blocking read()/poll() per
 * interrupt vector.  MSI-X is used when the device has it; otherwise the
 * driver falls back to INTx and acknowledges through IntrStatus.
 */

#include <linux/atomic.h>
#include <linux/cdev.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "ivshmem-uapi.h"

#define DRV_NAME "ivshmem"
#define IVSHMEM_MAX_DEVICES 64
#define IVSHMEM_MAX_VECTORS 64

/* BAR0 register offsets */
#define REG_INTR_MASK   0x00
#define REG_INTR_STATUS 0x04
#define REG_IVPOSITION  0x08
#define REG_DOORBELL    0x0c

struct ivshmem_vector {
	atomic_t events;                /* interrupts received so far */
	wait_queue_head_t wait;
};

struct ivshmem_dev {
	struct kref ref;
	struct pci_dev *pdev;           /* NULL once the device is gone */
	struct mutex lock;              /* protects pdev against removal */
	void __iomem *regs;
	resource_size_t shm_start;
	resource_size_t shm_size;
	unsigned int irq_mode;
	unsigned int nvectors;
	int minor;
	struct cdev cdev;
	struct device *dev;
	struct ivshmem_vector vec[];
};

struct ivshmem_file {
	struct ivshmem_dev *idev;
	unsigned int vector;
	int seen;                       /* events already returned by read */
};

static dev_t ivshmem_devt;
static struct class *ivshmem_class;
static DEFINE_IDA(ivshmem_minors);

static void ivshmem_release_dev(struct kref *ref)
{
	struct ivshmem_dev *idev = container_of(ref, struct ivshmem_dev, ref);

	ida_free(&ivshmem_minors, idev->minor);
	kfree(idev);
}

static void ivshmem_vector_fired(struct ivshmem_dev *idev, unsigned int v)
{
	atomic_inc(&idev->vec[v].events);
	wake_up_interruptible(&idev->vec[v].wait);
}

static irqreturn_t ivshmem_msix_irq(int irq, void *opaque)
{
	struct ivshmem_vector *vec = opaque;

	atomic_inc(&vec->events);
	wake_up_interruptible(&vec->wait);
	return IRQ_HANDLED;
}

static irqreturn_t ivshmem_intx_irq(int irq, void *opaque)
{
	struct ivshmem_dev *idev = opaque;

	/* Reading IntrStatus clears it and deasserts the line. */
	if (!readl(idev->regs + REG_INTR_STATUS))
		return IRQ_NONE;
	ivshmem_vector_fired(idev, 0);
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
	mutex_lock(&idev->lock);
	if (!idev->pdev) {
		mutex_unlock(&idev->lock);
		kfree(f);
		return -ENODEV;
	}
	kref_get(&idev->ref);
	mutex_unlock(&idev->lock);
	f->idev = idev;
	f->seen = atomic_read(&idev->vec[0].events);
	filp->private_data = f;
	return 0;
}

static int ivshmem_release(struct inode *inode, struct file *filp)
{
	struct ivshmem_file *f = filp->private_data;

	kref_put(&f->idev->ref, ivshmem_release_dev);
	kfree(f);
	return 0;
}

static bool ivshmem_pending(struct ivshmem_file *f)
{
	return atomic_read(&f->idev->vec[f->vector].events) != f->seen ||
	       !READ_ONCE(f->idev->pdev);
}

static ssize_t ivshmem_read(struct file *filp, char __user *buf,
			    size_t len, loff_t *ppos)
{
	struct ivshmem_file *f = filp->private_data;
	struct ivshmem_vector *vec;
	u32 count;
	int now;
	int ret;

	if (len < sizeof(count))
		return -EINVAL;
	if (f->vector >= f->idev->nvectors)
		return -ENXIO;
	vec = &f->idev->vec[f->vector];
	if (!ivshmem_pending(f)) {
		if (filp->f_flags & O_NONBLOCK)
			return -EAGAIN;
		ret = wait_event_interruptible(vec->wait, ivshmem_pending(f));
		if (ret)
			return ret;
	}
	if (!READ_ONCE(f->idev->pdev))
		return -ENODEV;
	now = atomic_read(&vec->events);
	count = now - f->seen;
	f->seen = now;
	if (copy_to_user(buf, &count, sizeof(count)))
		return -EFAULT;
	return sizeof(count);
}

static __poll_t ivshmem_poll(struct file *filp, poll_table *wait)
{
	struct ivshmem_file *f = filp->private_data;

	if (f->vector >= f->idev->nvectors)
		return EPOLLERR;
	poll_wait(filp, &f->idev->vec[f->vector].wait, wait);
	if (!READ_ONCE(f->idev->pdev))
		return EPOLLERR | EPOLLHUP;
	return ivshmem_pending(f) ? EPOLLIN | EPOLLRDNORM : 0;
}

static int ivshmem_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct ivshmem_dev *idev = ((struct ivshmem_file *)
				    filp->private_data)->idev;

	if (!READ_ONCE(idev->pdev))
		return -ENODEV;
	/* Uncached, like sysfs resource2: stores are visible at once. */
	vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	return vm_iomap_memory(vma, idev->shm_start, idev->shm_size);
}

static long ivshmem_get_info(struct ivshmem_dev *idev, void __user *arg)
{
	struct ivshmem_info info = {
		.region_size = idev->shm_size,
		.vectors = idev->nvectors,
		.irq_mode = idev->irq_mode,
	};

	mutex_lock(&idev->lock);
	if (!idev->pdev) {
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
	mutex_lock(&idev->lock);
	if (!idev->pdev) {
		mutex_unlock(&idev->lock);
		return -ENODEV;
	}
	writel(((u32)ring.peer << 16) | ring.vector,
	       idev->regs + REG_DOORBELL);
	mutex_unlock(&idev->lock);
	return 0;
}

static long ivshmem_bind(struct ivshmem_file *f, u32 __user *arg)
{
	u32 vector;

	if (get_user(vector, arg))
		return -EFAULT;
	if (vector >= f->idev->nvectors)
		return -EINVAL;
	f->vector = vector;
	f->seen = atomic_read(&f->idev->vec[vector].events);
	return 0;
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
		return ivshmem_bind(f, (u32 __user *)arg);
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

static int ivshmem_setup_msix(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	unsigned int i;
	int nvec;
	int ret;

	nvec = pci_msix_vec_count(pdev);
	if (nvec <= 0)
		return -ENODEV;
	nvec = min(nvec, IVSHMEM_MAX_VECTORS);
	nvec = pci_alloc_irq_vectors(pdev, 1, nvec, PCI_IRQ_MSIX);
	if (nvec < 0)
		return nvec;
	for (i = 0; i < nvec; i++) {
		ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, i),
				       ivshmem_msix_irq, 0, DRV_NAME,
				       &idev->vec[i]);
		if (ret) {
			while (i--)
				devm_free_irq(&pdev->dev,
					      pci_irq_vector(pdev, i),
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
	/* Unmask the peer interrupt, then drop anything stale. */
	writel(1, idev->regs + REG_INTR_MASK);
	readl(idev->regs + REG_INTR_STATUS);
	ret = devm_request_irq(&pdev->dev, pdev->irq, ivshmem_intx_irq,
			       IRQF_SHARED, DRV_NAME, idev);
	if (ret)
		return ret;
	idev->nvectors = 1;
	idev->irq_mode = IVSHMEM_IRQ_INTX;
	return 0;
}

static void ivshmem_free_irqs(struct ivshmem_dev *idev)
{
	struct pci_dev *pdev = idev->pdev;
	unsigned int i;

	if (idev->irq_mode == IVSHMEM_IRQ_INTX) {
		writel(0, idev->regs + REG_INTR_MASK);
		devm_free_irq(&pdev->dev, pdev->irq, idev);
	} else if (idev->irq_mode == IVSHMEM_IRQ_MSIX) {
		for (i = 0; i < idev->nvectors; i++)
			devm_free_irq(&pdev->dev, pci_irq_vector(pdev, i),
				      &idev->vec[i]);
		pci_free_irq_vectors(pdev);
	}
	idev->irq_mode = IVSHMEM_IRQ_NONE;
}

static void ivshmem_setup_irq(struct ivshmem_dev *idev)
{
	/* Only doorbell-capable devices have BAR1 (the MSI-X table). */
	if (pci_resource_len(idev->pdev, 1) && !ivshmem_setup_msix(idev))
		return;
	if (!ivshmem_setup_intx(idev))
		return;
	idev->nvectors = 0;
	idev->irq_mode = IVSHMEM_IRQ_NONE;
}

static int ivshmem_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct ivshmem_dev *idev;
	unsigned int i;
	int ret;

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = pcim_iomap_regions(pdev, BIT(0), DRV_NAME);
	if (ret)
		return ret;
	if (!pci_resource_len(pdev, 2))
		return -ENODEV;

	idev = kzalloc(struct_size(idev, vec, IVSHMEM_MAX_VECTORS),
		       GFP_KERNEL);
	if (!idev)
		return -ENOMEM;
	kref_init(&idev->ref);
	mutex_init(&idev->lock);
	for (i = 0; i < IVSHMEM_MAX_VECTORS; i++)
		init_waitqueue_head(&idev->vec[i].wait);
	idev->pdev = pdev;
	idev->regs = pcim_iomap_table(pdev)[0];
	idev->shm_start = pci_resource_start(pdev, 2);
	idev->shm_size = pci_resource_len(pdev, 2);
	idev->minor = ida_alloc_max(&ivshmem_minors, IVSHMEM_MAX_DEVICES - 1,
				    GFP_KERNEL);
	if (idev->minor < 0) {
		ret = idev->minor;
		kfree(idev);
		return ret;
	}
	pci_set_master(pdev);
	ivshmem_setup_irq(idev);

	cdev_init(&idev->cdev, &ivshmem_fops);
	idev->cdev.owner = THIS_MODULE;
	ret = cdev_add(&idev->cdev, MKDEV(MAJOR(ivshmem_devt), idev->minor), 1);
	if (ret)
		goto err_put;
	idev->dev = device_create(ivshmem_class, &pdev->dev,
				  MKDEV(MAJOR(ivshmem_devt), idev->minor),
				  idev, DRV_NAME "%d", idev->minor);
	if (IS_ERR(idev->dev)) {
		ret = PTR_ERR(idev->dev);
		cdev_del(&idev->cdev);
		goto err_put;
	}
	pci_set_drvdata(pdev, idev);
	dev_info(&pdev->dev,
		 "/dev/%s%d: %llu bytes, %s, %u vector(s), peer ID %u\n",
		 DRV_NAME, idev->minor, (unsigned long long)idev->shm_size,
		 idev->irq_mode == IVSHMEM_IRQ_MSIX ? "MSI-X" :
		 idev->irq_mode == IVSHMEM_IRQ_INTX ? "INTx" : "no interrupts",
		 idev->nvectors, readl(idev->regs + REG_IVPOSITION));
	return 0;

err_put:
	ivshmem_free_irqs(idev);
	kref_put(&idev->ref, ivshmem_release_dev);
	return ret;
}

static void ivshmem_remove(struct pci_dev *pdev)
{
	struct ivshmem_dev *idev = pci_get_drvdata(pdev);
	unsigned int i;

	device_destroy(ivshmem_class, MKDEV(MAJOR(ivshmem_devt), idev->minor));
	cdev_del(&idev->cdev);
	ivshmem_free_irqs(idev);
	mutex_lock(&idev->lock);
	WRITE_ONCE(idev->pdev, NULL);
	mutex_unlock(&idev->lock);
	/* Wake up blocked readers: they return -ENODEV. */
	for (i = 0; i < IVSHMEM_MAX_VECTORS; i++)
		wake_up_interruptible(&idev->vec[i].wait);
	kref_put(&idev->ref, ivshmem_release_dev);
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

static int __init ivshmem_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&ivshmem_devt, 0, IVSHMEM_MAX_DEVICES,
				  DRV_NAME);
	if (ret)
		return ret;
	ivshmem_class = class_create(THIS_MODULE, DRV_NAME);
	if (IS_ERR(ivshmem_class)) {
		ret = PTR_ERR(ivshmem_class);
		goto err_region;
	}
	ret = pci_register_driver(&ivshmem_driver);
	if (ret)
		goto err_class;
	return 0;

err_class:
	class_destroy(ivshmem_class);
err_region:
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
	return ret;
}

static void __exit ivshmem_exit(void)
{
	pci_unregister_driver(&ivshmem_driver);
	class_destroy(ivshmem_class);
	unregister_chrdev_region(ivshmem_devt, IVSHMEM_MAX_DEVICES);
}

module_init(ivshmem_init);
module_exit(ivshmem_exit);

MODULE_DESCRIPTION("QEMU inter-VM shared memory (ivshmem) guest driver");
MODULE_LICENSE("GPL");
