/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Inter-VM shared memory PCI devices: ivshmem, ivshmem-plain and
 * ivshmem-doorbell.
 *
 * All three expose the same PCI function: BAR0 holds four 32-bit
 * registers, BAR1 the MSI-X table and PBA (devices with interrupts),
 * BAR2 the shared memory.  The memory comes from a host memory backend
 * (ivshmem-plain), a POSIX shared memory object (legacy shm=) or an
 * ivshmem server (chardev=), which also hands out the eventfds that let
 * peers interrupt each other.  The server protocol is decoded by
 * IvshmemProto (util/ivshmem-proto.c); this file wires its actions to
 * memory, MSI-X, INTx, ioeventfd and KVM irqfd.
 *
 * A server connection is set up (version, own ID, shared memory, peers,
 * own vectors) before realize returns, within one deadline for the whole
 * setup (IVSHMEM_SETUP_TIMEOUT_MS, or realize fails naming the chardev).
 * So when a guest can first see the device, BAR2 is backed, IVPosition
 * holds the device's own ID, every peer the server listed is known, and
 * own vectors 0..N-1 are wired, N = min(vectors, the server's count).
 * Alone with a server that hands out fewer than 'vectors', the device sees
 * the end of its list only as a pause (IVSHMEM_VECTOR_GAP_MS, which
 * realize then waits); an own vector sent after that is wired on arrival.
 * Vectors N..vectors-1 never fire.
 *
 * When the server goes away the device keeps its peers and memory.  If
 * the chardev reconnects (reconnect-ms) to a restarted server, the new
 * session is set up in the background, in a second IvshmemProto, while
 * doorbells keep using the old peer table.  The device switches to it
 * (new ID, new peers and own vectors) only once it is complete and only
 * if the server hands out the very memory object BAR2 already maps.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/event_notifier.h"
#include "qemu/ivshmem-proto.h"
#include "qemu/log.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "hw/pci/pci_device.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "hw/registerfields.h"
#include "chardev/char-fe.h"
#include "migration/blocker.h"
#include "migration/vmstate.h"
#include "system/hostmem.h"
#include "system/kvm.h"
#include "system/cpus.h"
#include "system/runstate.h"
#include "trace.h"

#define TYPE_IVSHMEM_COMMON   "ivshmem-common"
#define TYPE_IVSHMEM          "ivshmem"
#define TYPE_IVSHMEM_PLAIN    "ivshmem-plain"
#define TYPE_IVSHMEM_DOORBELL "ivshmem-doorbell"

OBJECT_DECLARE_SIMPLE_TYPE(IvshmemState, IVSHMEM_COMMON)

#define IVSHMEM_VENDOR_ID       0x1af4
#define IVSHMEM_DEVICE_ID       0x1110
#define IVSHMEM_SUBSYS_ID       0x1100

#define IVSHMEM_REG_BAR         0
#define IVSHMEM_MSIX_BAR        1
#define IVSHMEM_SHM_BAR         2
#define IVSHMEM_REG_BAR_SIZE    0x100

#define IVSHMEM_DEFAULT_SIZE    (4 * MiB)
#define IVSHMEM_MAX_MSIX        2048        /* PCI_MSIX_FLAGS_QSIZE + 1 */
#define IVSHMEM_SETUP_TIMEOUT_MS 5000       /* the whole of a setup */
#define IVSHMEM_VECTOR_GAP_MS   200         /* pause ending a short own list */
#define IVSHMEM_NO_VECTOR_GAP_MS 500        /* pause meaning "-n 0" */
/*
 * Peer vectors per device that get an ioeventfd.  KVM does not count
 * ioeventfds against its I/O bus limit (NR_IOBUS_DEVS, about 1000:
 * kvm_io_bus_register_dev() leaves them to the descriptor limit), but
 * each one costs on every path that touches them:
 * - a doorbell: KVM finds the Doorbell address by binary search, then
 *   tries the datamatch of its ioeventfds one by one; without KVM (TCG,
 *   qtest) QEMU's memory core scans the region's ioeventfds linearly on
 *   every write to BAR0, in the vCPU thread;
 * - adding or removing one: QEMU re-sorts the region's list and commits
 *   a memory transaction that rebuilds each address space's ioeventfd
 *   list (O(all ioeventfds), so O(n^2) for n), and KVM copies its bus
 *   array and waits for an SRCU grace period (QEMU aborts if KVM refuses
 *   one);
 * - each holds kernel memory and a reference to the peer's eventfd,
 *   bounded by nothing but the descriptor limit.
 * A guest that meets thousands of peers must not take one per peer
 * vector: the others are rung by the register handler, O(1) per doorbell.
 */
#define IVSHMEM_IOEVENTFD_BUDGET 256

/* What the chardev's traffic means. */
typedef enum IvshmemSession {
    IVSHMEM_SESSION_SETUP,      /* realize runs the first setup */
    IVSHMEM_SESSION_LIVE,       /* fed to proto, the table in use */
    IVSHMEM_SESSION_CLOSED,     /* server gone; proto kept as it is */
    IVSHMEM_SESSION_JOINING,    /* a reconnection fills next */
    IVSHMEM_SESSION_REFUSED,    /* reconnection refused, traffic dropped */
} IvshmemSession;

REG32(INTR_MASK, 0x00)
REG32(INTR_STATUS, 0x04)
REG32(IV_POSITION, 0x08)
REG32(DOORBELL, 0x0c)
    FIELD(DOORBELL, VECTOR, 0, 16)
    FIELD(DOORBELL, PEER, 16, 16)

typedef enum IvshmemKind {
    IVSHMEM_KIND_LEGACY,
    IVSHMEM_KIND_PLAIN,
    IVSHMEM_KIND_DOORBELL,
} IvshmemKind;

/*
 * Doorbells QEMU writes itself (TCG, ioeventfd=off, beyond the ioeventfd
 * budget) are written by a thread of the device, never by the vCPU or
 * the main loop: any holder of a peer's eventfd (the peer, the server)
 * can clear O_NONBLOCK on the open file description all holders share
 * and saturate the counter, and a write to it then blocks.
 */
typedef struct IvshmemBell {
    uint32_t key;               /* peer << 16 | vector */
    int fd;                     /* our duplicate of the peer's eventfd */
    uint64_t count;             /* rings the next write carries */
    uint64_t more;              /* rings since the write in flight began */
    bool busy;                  /* being written now */
    QSIMPLEQ_ENTRY(IvshmemBell) next;
} IvshmemBell;

/* A peer vector whose eventfd was found saturated */
typedef struct IvshmemBackoff {
    int64_t until;              /* its doorbells are dropped until (ms) */
    int64_t period;             /* ms, doubled on each failure */
} IvshmemBackoff;

typedef struct IvshmemBells {
    QemuThread thread;
    QemuMutex lock;
    QemuCond cond;
    bool started;
    bool stop;
    bool exited;                /* the thread returned */
    GHashTable *pending;        /* key -> IvshmemBell: queued or busy */
    GHashTable *backoff;        /* key -> IvshmemBackoff */
    QSIMPLEQ_HEAD(, IvshmemBell) queue;
    uint64_t dropped;           /* doorbells dropped since the last log */
    int64_t last_log;           /* ms */
    char *name;                 /* the device, for the guest error log */
} IvshmemBells;

/* One of our own vectors: the eventfd peers ring to interrupt us. */
typedef struct IvshmemVector {
    IvshmemState *s;
    EventNotifier notifier;     /* wraps the fd owned by IvshmemProto */
    bool connected;
    bool irqfd;                 /* delivered by a KVM irqfd right now */
    int virq;                   /* KVM MSI route, -1 when none */
} IvshmemVector;

struct IvshmemState {
    PCIDevice parent_obj;

    /* Properties */
    HostMemoryBackend *memdev;
    CharBackend server;
    char *shm_name;
    char *size_str;
    char *role;
    uint32_t vectors;
    bool msi;
    bool ioeventfd;
    uint32_t ioeventfd_budget;
    OnOffAuto master_opt;       /* ivshmem-plain, ivshmem-doorbell */

    /* Configuration derived at realize */
    bool master;                /* owns the memory: migrates it */
    IvshmemKind kind;
    uint64_t size;              /* wanted BAR2 size, 0: the object's size */
    bool use_msix;
    bool use_irqfd;

    /* Resources */
    MemoryRegion regs;
    MemoryRegion shm_mr;        /* mapping of a server or shm= fd */
    dev_t shm_dev;              /* identity of the mapped server memory */
    ino_t shm_ino;
    off_t shm_obj_size;
    MemoryRegion *shm;          /* what BAR2 maps */
    struct IvshmemMapping *mapping; /* BAR2 watched for shrinking */
    QEMUBH *shrunk_bh;          /* the SIGBUS handler's report */
    QEMUTimer *shrunk_timer;    /* next report, rate-limited */
    int64_t shrunk_last_report; /* when (ms), 0: never */
    uint64_t shrunk_reported;   /* lost range reported: from here on */
    uint64_t shrunk_traced;     /* lost range traced: from here on */
    bool memdev_taken;
    bool ram_registered;
    Error *migration_blocker;
    char *created_shm;          /* shm= object we created (unlink on error) */

    /* Server connection */
    IvshmemProto proto;
    bool proto_inited;
    bool setup_done;            /* IVPosition valid, doorbells accepted */
    Error *setup_err;           /* why the first setup failed */
    int64_t setup_last_msg;     /* when a setup's last message came (ms) */
    IvshmemSession session;
    IvshmemProto *next;         /* session being set up after a reconnect */
    QEMUTimer *next_timer;      /* setup deadline, or end of its own list */
    int64_t next_deadline;
    IvshmemVector *vec;         /* [vectors] */
    GHashTable *doorbells;      /* (peer << 16 | vector) -> EventNotifier */
    uint32_t ioeventfds;        /* doorbells with an ioeventfd, <= budget */
    IvshmemBells bells;
    uint8_t msg[IVSHMEM_MSG_SIZE];
    uint32_t msg_len;
    int msg_fd;

    /* Registers */
    uint32_t intr_mask;
    uint32_t intr_status;

    /* Peer presence (presence=on, docs/specs/ivshmem-spec.rst) */
    bool presence;
    uint32_t pr_generation;
    uint32_t pr_event_status;
    uint32_t pr_event_control;
    uint32_t pr_page;
    uint32_t pr_generation_in;  /* the source's, while loading */
    QEMUBH *pr_bh;              /* sends the change interrupt */
    GArray *pr_table;           /* sorted entries, NULL when stale */
};

/* Registers and interrupts */

/* How messages name the device: "ivshmem-doorbell 'id' at 0000:00:04.0" */
static char *ivshmem_describe(IvshmemState *s)
{
    DeviceState *dev = DEVICE(s);
    g_autofree char *path = qdev_get_dev_path(dev);

    return g_strdup_printf("%s%s%s%s at %s", object_get_typename(OBJECT(s)),
                           dev->id ? " '" : "", dev->id ? dev->id : "",
                           dev->id ? "'" : "", path ? path : "?");
}

/* A guest error, naming the device */
static void G_GNUC_PRINTF(2, 3) ivshmem_guest_error(IvshmemState *s,
                                                    const char *fmt, ...)
{
    g_autofree char *name = NULL;
    g_autofree char *msg = NULL;
    va_list ap;

    if (!qemu_loglevel_mask(LOG_GUEST_ERROR)) {
        return;
    }
    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    name = ivshmem_describe(s);
    qemu_log_mask(LOG_GUEST_ERROR, "%s: %s\n", name, msg);
}

static bool ivshmem_uses_intx(IvshmemState *s)
{
    return s->kind == IVSHMEM_KIND_LEGACY;
}

static void ivshmem_update_intx(IvshmemState *s)
{
    if (ivshmem_uses_intx(s)) {
        pci_set_irq(PCI_DEVICE(s), (s->intr_status & s->intr_mask) != 0);
    }
}

static void ivshmem_raise(IvshmemState *s, unsigned vector)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    bool msix = s->use_msix && (!ivshmem_uses_intx(s) || msix_enabled(pdev));

    trace_ivshmem_interrupt(vector, msix);
    if (msix) {
        msix_notify(pdev, vector);      /* sets the pending bit if masked */
    } else if (ivshmem_uses_intx(s)) {
        s->intr_status |= 1;
        ivshmem_update_intx(s);
    }
}

/*
 * Doorbell writes that cannot block the vCPU (issue 23).
 *
 * The vCPU only queues: per peer vector at most one write is queued or in
 * flight, and later rings add to its count (an eventfd adds what is
 * written, so no ring is lost).  The queue holds a duplicate of the fd,
 * so a peer that leaves meanwhile cannot make us write to a reused fd
 * number.  The thread checks that the counter has room (POLLOUT) and
 * writes; should a holder saturate the counter and clear O_NONBLOCK in
 * between, the write blocks, and a per-thread timer signal (without
 * SA_RESTART) interrupts it every IVSHMEM_BELL_TICK_NS until
 * IVSHMEM_BELL_TIMEOUT_NS have passed.  A peer vector found saturated
 * loses its doorbells for a back-off that doubles on each failure
 * (IVSHMEM_BELL_BACKOFF_MIN_MS..IVSHMEM_BELL_BACKOFF_MAX_MS) and is
 * reset by a successful write.  So a hostile holder costs only the
 * doorbells to its own vectors, plus a delay of at most
 * IVSHMEM_BELL_TIMEOUT_NS to the other peers' doorbells per back-off
 * period of each vector it saturates in that window.
 */
#define IVSHMEM_BELL_SIGNAL         (SIGRTMIN + 4)
#define IVSHMEM_BELL_TICK_NS        (2 * SCALE_MS)
#define IVSHMEM_BELL_TIMEOUT_NS     (10 * SCALE_MS)
#define IVSHMEM_BELL_BACKOFF_MIN_MS 100
#define IVSHMEM_BELL_BACKOFF_MAX_MS 2000
#define IVSHMEM_BELL_MAX_PENDING    4096    /* peer vectors in flight */
#define IVSHMEM_BELL_LOG_MS         1000    /* at most one log line per */

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static void ivshmem_bell_free(gpointer data)
{
    IvshmemBell *bell = data;

    close(bell->fd);
    g_free(bell);
}

/*
 * Count @n dropped doorbells of @key; returns the guest error line to
 * log once the lock is released, at most one every IVSHMEM_BELL_LOG_MS.
 */
static char *ivshmem_bell_drop_locked(IvshmemBells *b, uint32_t key,
                                      uint64_t n, const char *why)
{
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    char *line;

    trace_ivshmem_doorbell_dropped(key >> 16, key & 0xffff, n, why);
    b->dropped += n;
    if (b->last_log && now - b->last_log < IVSHMEM_BELL_LOG_MS) {
        return NULL;
    }
    line = g_strdup_printf("%s: doorbells to peer %u vector %u dropped: %s "
                           "(%" PRIu64 " dropped since the last message)",
                           b->name, key >> 16, key & 0xffff, why,
                           b->dropped);
    b->dropped = 0;
    b->last_log = now;
    return line;
}

static void ivshmem_bell_log(char *line)
{
    if (line) {
        qemu_log_mask(LOG_GUEST_ERROR, "%s\n", line);
        g_free(line);
    }
}

/* Queue one ring of @peer's @vector, rung through eventfd @fd. */
static void ivshmem_bell_post(IvshmemState *s, uint16_t peer,
                              uint16_t vector, int fd)
{
    IvshmemBells *b = &s->bells;
    uint32_t key = (uint32_t)peer << 16 | vector;
    IvshmemBackoff *off;
    IvshmemBell *bell;
    char *line = NULL;
    int dup_fd;

    qemu_mutex_lock(&b->lock);
    bell = g_hash_table_lookup(b->pending, GUINT_TO_POINTER(key));
    if (bell) {
        if (bell->busy) {
            bell->more++;
        } else {
            bell->count++;
        }
        trace_ivshmem_doorbell_coalesced(peer, vector);
        goto out;
    }
    off = g_hash_table_lookup(b->backoff, GUINT_TO_POINTER(key));
    if (off && qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < off->until) {
        line = ivshmem_bell_drop_locked(b, key, 1, "its eventfd was found "
                                        "saturated by another holder, "
                                        "backing off");
        goto out;
    }
    if (g_hash_table_size(b->pending) >= IVSHMEM_BELL_MAX_PENDING) {
        line = ivshmem_bell_drop_locked(b, key, 1, "too many peer vectors "
                                        "have doorbells in flight");
        goto out;
    }
    dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        line = ivshmem_bell_drop_locked(b, key, 1, "cannot duplicate its "
                                        "eventfd");
        goto out;
    }
    bell = g_new0(IvshmemBell, 1);
    bell->key = key;
    bell->fd = dup_fd;
    bell->count = 1;
    g_hash_table_insert(b->pending, GUINT_TO_POINTER(key), bell);
    QSIMPLEQ_INSERT_TAIL(&b->queue, bell, next);
    qemu_cond_signal(&b->cond);
out:
    qemu_mutex_unlock(&b->lock);
    ivshmem_bell_log(line);
}

static void ivshmem_bell_tick(int sig)
{
    /* only there to interrupt a blocked write() with EINTR */
}

/* The thread's timer, signalling only the thread; false: none. */
static bool ivshmem_bell_timer_init(timer_t *timer)
{
    struct sigevent sev = {
        .sigev_notify = SIGEV_THREAD_ID,
        .sigev_signo = IVSHMEM_BELL_SIGNAL,
    };
    sigset_t set;

    /* unblocked even without a timer: ivshmem_bells_stop() signals too */
    sigemptyset(&set);
    sigaddset(&set, IVSHMEM_BELL_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    sev.sigev_notify_thread_id = qemu_get_thread_id();
    if (timer_create(CLOCK_MONOTONIC, &sev, timer) < 0) {
        warn_report_once("ivshmem: cannot create the timer that bounds "
                         "doorbell writes (%s): a peer that blocks its "
                         "eventfd can delay every doorbell of the device",
                         strerror(errno));
        return false;
    }
    return true;
}

/* Write @count to eventfd @fd within IVSHMEM_BELL_TIMEOUT_NS; 0 or -errno */
static int ivshmem_bell_write(int fd, uint64_t count, timer_t *timer)
{
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    struct itimerspec tick = {
        .it_interval.tv_nsec = IVSHMEM_BELL_TICK_NS,
        .it_value.tv_nsec = IVSHMEM_BELL_TICK_NS,
    };
    struct itimerspec stop = { };
    int64_t deadline = get_clock() + IVSHMEM_BELL_TIMEOUT_NS;
    ssize_t ret;
    int err;

    if (poll(&pfd, 1, 0) != 1 || (pfd.revents & POLLOUT) == 0) {
        return -EAGAIN;         /* saturated now: no need to try */
    }
    if (timer) {
        timer_settime(*timer, 0, &tick, NULL);
    }
    do {
        ret = write(fd, &count, sizeof(count));
        err = ret == sizeof(count) ? 0 : ret < 0 ? -errno : -EIO;
    } while (err == -EINTR && get_clock() < deadline);
    if (timer) {
        timer_settime(*timer, 0, &stop, NULL);
    }
    return err == -EINTR ? -ETIMEDOUT : err;
}

static void *ivshmem_bell_thread(void *opaque)
{
    IvshmemBells *b = opaque;
    timer_t timer;
    bool have_timer = ivshmem_bell_timer_init(&timer);

    qemu_mutex_lock(&b->lock);
    while (!b->stop) {
        IvshmemBell *bell = QSIMPLEQ_FIRST(&b->queue);
        gpointer key;
        char *line = NULL;
        uint64_t count;
        int err;

        if (!bell) {
            qemu_cond_wait(&b->cond, &b->lock);
            continue;
        }
        QSIMPLEQ_REMOVE_HEAD(&b->queue, next);
        key = GUINT_TO_POINTER(bell->key);
        bell->busy = true;
        count = bell->count;
        qemu_mutex_unlock(&b->lock);

        err = ivshmem_bell_write(bell->fd, count,
                                 have_timer ? &timer : NULL);

        qemu_mutex_lock(&b->lock);
        bell->busy = false;
        trace_ivshmem_doorbell_write(bell->key >> 16, bell->key & 0xffff,
                                     count, err);
        if (err) {
            IvshmemBackoff *off = g_hash_table_lookup(b->backoff, key);
            int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
            g_autofree char *why = g_strdup_printf("its eventfd %s, backing "
                "off", err == -EAGAIN || err == -ETIMEDOUT ?
                "is saturated by another holder" : strerror(-err));

            if (!off) {
                off = g_new0(IvshmemBackoff, 1);
                off->period = IVSHMEM_BELL_BACKOFF_MIN_MS;
                g_hash_table_insert(b->backoff, key, off);
            } else {
                off->period = MIN(off->period * 2,
                                  IVSHMEM_BELL_BACKOFF_MAX_MS);
            }
            off->until = now + off->period;
            line = ivshmem_bell_drop_locked(b, bell->key,
                                            count + bell->more, why);
            g_hash_table_remove(b->pending, key);
        } else {
            g_hash_table_remove(b->backoff, key);
            if (bell->more) {
                bell->count = bell->more;
                bell->more = 0;
                QSIMPLEQ_INSERT_TAIL(&b->queue, bell, next);
            } else {
                g_hash_table_remove(b->pending, key);
            }
        }
        if (line) {
            qemu_mutex_unlock(&b->lock);
            ivshmem_bell_log(line);
            qemu_mutex_lock(&b->lock);
        }
    }
    qemu_mutex_unlock(&b->lock);
    if (have_timer) {
        timer_delete(timer);
    }
    qatomic_store_release(&b->exited, true);
    return NULL;
}

static void ivshmem_bells_start(IvshmemState *s)
{
    static bool handler_installed;
    IvshmemBells *b = &s->bells;

    if (!handler_installed) {
        struct sigaction sa = { .sa_handler = ivshmem_bell_tick };

        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;                /* no SA_RESTART: write() fails */
        sigaction(IVSHMEM_BELL_SIGNAL, &sa, NULL);
        handler_installed = true;
    }
    b->name = ivshmem_describe(s);
    qemu_mutex_init(&b->lock);
    qemu_cond_init(&b->cond);
    b->pending = g_hash_table_new_full(NULL, NULL, NULL, ivshmem_bell_free);
    b->backoff = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    QSIMPLEQ_INIT(&b->queue);
    b->stop = false;
    b->exited = false;
    qemu_thread_create(&b->thread, "ivshmem-bells", ivshmem_bell_thread, b,
                       QEMU_THREAD_JOINABLE);
    b->started = true;
}

/*
 * A peer vector that left: a newcomer with its ID starts without back-off,
 * and rings still queued for the one that left are dropped (they would go
 * to its eventfd, not the newcomer's).
 */
static void ivshmem_bell_forget(IvshmemState *s, uint16_t peer,
                                uint16_t vector)
{
    IvshmemBells *b = &s->bells;
    gpointer key = GUINT_TO_POINTER((uint32_t)peer << 16 | vector);
    IvshmemBell *bell;

    if (b->started) {
        qemu_mutex_lock(&b->lock);
        g_hash_table_remove(b->backoff, key);
        bell = g_hash_table_lookup(b->pending, key);
        if (bell && bell->busy) {
            bell->more = 0;     /* the thread drops it after this write */
        } else if (bell) {
            QSIMPLEQ_REMOVE(&b->queue, bell, IvshmemBell, next);
            g_hash_table_remove(b->pending, key);
        }
        qemu_mutex_unlock(&b->lock);
    }
}

/*
 * Waits at most IVSHMEM_BELL_TIMEOUT_NS for a write in flight, even if
 * the thread has no timer: the signal is sent from here too.
 */
static void ivshmem_bells_stop(IvshmemState *s)
{
    IvshmemBells *b = &s->bells;

    if (!b->started) {
        return;
    }
    qemu_mutex_lock(&b->lock);
    b->stop = true;
    qemu_cond_signal(&b->cond);
    qemu_mutex_unlock(&b->lock);
    while (!qatomic_load_acquire(&b->exited)) {
        pthread_kill(b->thread.thread, IVSHMEM_BELL_SIGNAL);
        g_usleep(1000);
    }
    qemu_thread_join(&b->thread);
    g_hash_table_destroy(b->pending);   /* closes the duplicates */
    g_hash_table_destroy(b->backoff);
    qemu_cond_destroy(&b->cond);
    qemu_mutex_destroy(&b->lock);
    g_clear_pointer(&b->name, g_free);
    b->started = false;
}

static void ivshmem_ring(IvshmemState *s, uint32_t value)
{
    uint16_t peer = FIELD_EX32(value, DOORBELL, PEER);
    uint16_t vector = FIELD_EX32(value, DOORBELL, VECTOR);
    int fd;

    if (!s->setup_done) {
        ivshmem_guest_error(s, "doorbell 0x%08x rung, but the device has "
                            "no server connection", value);
        return;
    }
    fd = ivshmem_proto_peer_fd(&s->proto, peer, vector);
    if (fd < 0) {
        ivshmem_guest_error(s, "doorbell for unknown peer %u or "
                            "unconnected vector %u ignored", peer, vector);
        return;
    }
    trace_ivshmem_doorbell(peer, vector);
    ivshmem_bell_post(s, peer, vector, fd);
}

/* Peer presence: the opt-in window at BAR0 0x40..0xff */

#define IVSHMEM_PR_CAP_SIZE     0x10
#define IVSHMEM_PR_CAP_TYPE     0x01
#define IVSHMEM_PR_VERSION      0x01
#define IVSHMEM_PR_WINDOW       0x40
#define IVSHMEM_PR_PAGE_SIZE    32

REG32(PR_STATE, 0x40)
    FIELD(PR_STATE, CONNECTED, 0, 1)
    FIELD(PR_STATE, RECONNECTING, 1, 1)
    FIELD(PR_STATE, REFUSED, 2, 1)
REG32(PR_OWN_VECTORS, 0x44)
REG32(PR_GENERATION, 0x48)
REG32(PR_PEER_COUNT, 0x4c)
REG32(PR_EVENT_STATUS, 0x50)
    FIELD(PR_EVENT_STATUS, PEERS, 0, 1)
    FIELD(PR_EVENT_STATUS, STATE, 1, 1)
REG32(PR_EVENT_CONTROL, 0x54)
    FIELD(PR_EVENT_CONTROL, ENABLE, 0, 1)
    FIELD(PR_EVENT_CONTROL, VECTOR, 16, 16)
REG32(PR_PAGE_SELECT, 0x58)
REG32(PR_PAGE_SIZE, 0x5c)
REG32(PR_ENTRY, 0x80)
    FIELD(PR_ENTRY, PEER, 0, 16)
    FIELD(PR_ENTRY, VECTORS, 16, 12)
    FIELD(PR_ENTRY, VALID, 31, 1)

#define IVSHMEM_PR_EVENTS       (R_PR_EVENT_STATUS_PEERS_MASK | \
                                 R_PR_EVENT_STATUS_STATE_MASK)
#define IVSHMEM_PR_CONTROL      (R_PR_EVENT_CONTROL_ENABLE_MASK | \
                                 R_PR_EVENT_CONTROL_VECTOR_MASK)
#define IVSHMEM_INTR_PRESENCE   2   /* IntrStatus bit without MSI-X */

static void ivshmem_presence_irq(void *opaque)
{
    IvshmemState *s = opaque;
    PCIDevice *pdev = PCI_DEVICE(s);
    uint32_t vector = FIELD_EX32(s->pr_event_control, PR_EVENT_CONTROL,
                                 VECTOR);

    if (!FIELD_EX32(s->pr_event_control, PR_EVENT_CONTROL, ENABLE) ||
        !s->pr_event_status) {
        return;
    }
    if (s->use_msix && (!ivshmem_uses_intx(s) || msix_enabled(pdev))) {
        if (vector < s->vectors) {
            msix_notify(pdev, vector);
        }
    } else if (ivshmem_uses_intx(s)) {
        s->intr_status |= IVSHMEM_INTR_PRESENCE;
        ivshmem_update_intx(s);
    }
}

/* Something in the window changed: count it, latch it, maybe interrupt. */
static void ivshmem_presence_note(IvshmemState *s, uint32_t event)
{
    bool was_clear = !s->pr_event_status;

    if (!s->presence) {
        return;
    }
    s->pr_generation++;
    s->pr_event_status |= event;
    if (event & R_PR_EVENT_STATUS_PEERS_MASK) {
        g_clear_pointer(&s->pr_table, g_array_unref);
    }
    if (was_clear && s->pr_bh) {
        qemu_bh_schedule(s->pr_bh);
    }
}

static uint32_t ivshmem_presence_state(IvshmemState *s)
{
    switch (s->session) {
    case IVSHMEM_SESSION_LIVE:
        return R_PR_STATE_CONNECTED_MASK;
    case IVSHMEM_SESSION_CLOSED:
    case IVSHMEM_SESSION_JOINING:
        return R_PR_STATE_RECONNECTING_MASK;
    case IVSHMEM_SESSION_REFUSED:
        return R_PR_STATE_REFUSED_MASK;
    default:
        return 0;
    }
}

/* The other peers, by ID, as entries; rebuilt after a change. */
static GArray *ivshmem_presence_table(IvshmemState *s)
{
    g_autoptr(GArray) ids = NULL;
    uint32_t entry, id;
    guint i;

    if (s->pr_table) {
        return s->pr_table;
    }
    s->pr_table = g_array_new(false, false, sizeof(uint32_t));
    ids = ivshmem_proto_peer_ids(&s->proto);
    for (i = 0; i < ids->len; i++) {
        id = g_array_index(ids, uint32_t, i);
        if (id == s->proto.own_id) {
            continue;
        }
        entry = FIELD_DP32(0, PR_ENTRY, PEER, id);
        entry = FIELD_DP32(entry, PR_ENTRY, VECTORS,
                           ivshmem_proto_peer_vectors(&s->proto, id));
        entry = FIELD_DP32(entry, PR_ENTRY, VALID, 1);
        g_array_append_val(s->pr_table, entry);
    }
    return s->pr_table;
}

static uint32_t ivshmem_presence_read(IvshmemState *s, hwaddr addr)
{
    GArray *table;
    uint64_t index;

    switch (addr) {
    case A_PR_STATE:
        return ivshmem_presence_state(s);
    case A_PR_OWN_VECTORS:
        return ivshmem_proto_peer_vectors(&s->proto, s->proto.own_id);
    case A_PR_GENERATION:
        return s->pr_generation;
    case A_PR_PEER_COUNT:
        return ivshmem_presence_table(s)->len;
    case A_PR_EVENT_STATUS:
        return s->pr_event_status;
    case A_PR_EVENT_CONTROL:
        return s->pr_event_control;
    case A_PR_PAGE_SELECT:
        return s->pr_page;
    case A_PR_PAGE_SIZE:
        return IVSHMEM_PR_PAGE_SIZE;
    }
    if (addr < A_PR_ENTRY) {
        return 0;               /* reserved */
    }
    table = ivshmem_presence_table(s);
    index = (uint64_t)s->pr_page * IVSHMEM_PR_PAGE_SIZE +
            (addr - A_PR_ENTRY) / 4;
    return index < table->len ? g_array_index(table, uint32_t, index) : 0;
}

static void ivshmem_presence_write(IvshmemState *s, hwaddr addr,
                                   uint32_t value)
{
    uint32_t vector;

    switch (addr) {
    case A_PR_EVENT_STATUS:
        s->pr_event_status &= ~value;
        break;
    case A_PR_EVENT_CONTROL:
        s->pr_event_control = value & IVSHMEM_PR_CONTROL;
        vector = FIELD_EX32(value, PR_EVENT_CONTROL, VECTOR);
        if (FIELD_EX32(value, PR_EVENT_CONTROL, ENABLE) && s->use_msix &&
            vector >= s->vectors) {
            ivshmem_guest_error(s, "presence EventControl names vector %u, "
                                "the device has %u", vector, s->vectors);
        }
        if (s->pr_event_status) {
            qemu_bh_schedule(s->pr_bh);
        }
        break;
    case A_PR_PAGE_SELECT:
        s->pr_page = value;
        break;
    default:
        ivshmem_guest_error(s, "write to read-only presence register 0x%"
                            HWADDR_PRIx " ignored", addr);
        break;
    }
}

static bool ivshmem_presence_realize(IvshmemState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    int pos;

    if (!s->presence) {
        return true;
    }
    pos = pci_add_capability(pdev, PCI_CAP_ID_VNDR, 0, IVSHMEM_PR_CAP_SIZE,
                             errp);
    if (pos < 0) {
        return false;
    }
    pdev->config[pos + PCI_CAP_FLAGS] = IVSHMEM_PR_CAP_SIZE;
    pdev->config[pos + 3] = IVSHMEM_PR_CAP_TYPE;
    pdev->config[pos + 4] = IVSHMEM_PR_VERSION;
    pdev->config[pos + 5] = IVSHMEM_REG_BAR;
    pci_set_long(pdev->config + pos + 8, IVSHMEM_PR_WINDOW);
    pci_set_long(pdev->config + pos + 12,
                 IVSHMEM_REG_BAR_SIZE - IVSHMEM_PR_WINDOW);
    s->pr_bh = qemu_bh_new_guarded(ivshmem_presence_irq, s,
                                   &DEVICE(s)->mem_reentrancy_guard);
    return true;
}

static void ivshmem_presence_teardown(IvshmemState *s)
{
    g_clear_pointer(&s->pr_bh, qemu_bh_delete);
    g_clear_pointer(&s->pr_table, g_array_unref);
}

static void ivshmem_presence_reset(IvshmemState *s)
{
    s->pr_event_status = 0;
    s->pr_event_control = 0;
    s->pr_page = 0;
}

static bool ivshmem_presence_needed(void *opaque)
{
    return ((IvshmemState *)opaque)->presence;
}

static const char *ivshmem_id(IvshmemState *s);

static int ivshmem_presence_pre_save(void *opaque)
{
    IvshmemState *s = opaque;

    s->pr_generation_in = s->pr_generation;
    return 0;
}

static int ivshmem_presence_pre_load(void *opaque)
{
    IvshmemState *s = opaque;

    if (!s->presence) {
        error_report("ivshmem '%s': the incoming state has peer presence",
                     ivshmem_id(s));
        error_printf("Start the destination with presence=on.\n");
        return -EINVAL;
    }
    return 0;
}

/* The destination has its own session: count on, tell the guest. */
static int ivshmem_presence_post_load(void *opaque, int version_id)
{
    IvshmemState *s = opaque;

    s->pr_generation += s->pr_generation_in + 1;
    s->pr_event_status = IVSHMEM_PR_EVENTS;
    s->pr_event_control &= IVSHMEM_PR_CONTROL;
    g_clear_pointer(&s->pr_table, g_array_unref);
    qemu_bh_schedule(s->pr_bh);
    return 0;
}

#define IVSHMEM_PRESENCE_SECTION(type) {                                \
        .name = type "/presence",                                       \
        .version_id = 1,                                                \
        .minimum_version_id = 1,                                        \
        .needed = ivshmem_presence_needed,                              \
        .pre_save = ivshmem_presence_pre_save,                          \
        .pre_load = ivshmem_presence_pre_load,                          \
        .post_load = ivshmem_presence_post_load,                        \
        .fields = ivshmem_presence_fields,                              \
    }

static const VMStateField ivshmem_presence_fields[] = {
    VMSTATE_UINT32(pr_event_control, IvshmemState),
    VMSTATE_UINT32(pr_event_status, IvshmemState),
    VMSTATE_UINT32(pr_page, IvshmemState),
    VMSTATE_UINT32(pr_generation_in, IvshmemState),
    VMSTATE_END_OF_LIST()
};

static const VMStateDescription ivshmem_doorbell_presence_vmstate =
    IVSHMEM_PRESENCE_SECTION(TYPE_IVSHMEM_DOORBELL);
static const VMStateDescription ivshmem_legacy_presence_vmstate =
    IVSHMEM_PRESENCE_SECTION(TYPE_IVSHMEM);

/*
 * Subsections of each device's section, named after its field list
 * (IVSHMEM_SECTION): a subsection's name starts with its section's.
 */
#define ivshmem_plain_fields_subsections NULL    /* as 10.0.2: none */
static const VMStateDescription *const
ivshmem_doorbell_fields_subsections[] = {
    &ivshmem_doorbell_presence_vmstate,
    NULL
};
static const VMStateDescription *const ivshmem_legacy_fields_subsections[] = {
    &ivshmem_legacy_presence_vmstate,
    NULL
};

static const char *const ivshmem_descr_presence =
    "on: a vendor-specific capability and BAR0 registers tell the guest "
    "which peers are present and interrupt it when that changes "
    "(docs/specs/ivshmem-spec.rst); off: the 10.0.2 interface";

static uint64_t ivshmem_reg_read(void *opaque, hwaddr addr, unsigned size)
{
    IvshmemState *s = opaque;
    uint32_t value = 0;

    if (size != 4) {
        ivshmem_guest_error(s, "%u-byte read at 0x%" HWADDR_PRIx
                            ", registers are 32-bit", size, addr);
        return 0;
    }
    switch (addr) {
    case A_INTR_MASK:
        value = s->intr_mask;
        break;
    case A_INTR_STATUS:
        value = s->intr_status;
        s->intr_status = 0;
        ivshmem_update_intx(s);
        break;
    case A_IV_POSITION:
        value = s->setup_done ? s->proto.own_id : 0;
        break;
    case A_DOORBELL:
        ivshmem_guest_error(s, "Doorbell is write-only");
        break;
    default:
        if (s->presence && addr >= IVSHMEM_PR_WINDOW) {
            value = ivshmem_presence_read(s, addr);
        }
        break;                  /* reserved */
    }
    trace_ivshmem_reg_read(addr, value);
    return value;
}

static void ivshmem_reg_write(void *opaque, hwaddr addr, uint64_t data,
                              unsigned size)
{
    IvshmemState *s = opaque;
    uint32_t value = data;

    if (size != 4) {
        ivshmem_guest_error(s, "%u-byte write at 0x%" HWADDR_PRIx
                            " ignored, registers are 32-bit", size, addr);
        return;
    }
    trace_ivshmem_reg_write(addr, value);
    switch (addr) {
    case A_INTR_MASK:
        s->intr_mask = value;
        ivshmem_update_intx(s);
        break;
    case A_INTR_STATUS:
        s->intr_status = value;
        ivshmem_update_intx(s);
        break;
    case A_IV_POSITION:
        ivshmem_guest_error(s, "IVPosition is read-only");
        break;
    case A_DOORBELL:
        ivshmem_ring(s, value);
        break;
    default:
        if (s->presence && addr >= IVSHMEM_PR_WINDOW) {
            ivshmem_presence_write(s, addr, value);
        }
        break;                  /* reserved */
    }
}

/* Every width reaches the handlers, which refuse all but 32-bit ones. */
static const MemoryRegionOps ivshmem_reg_ops = {
    .valid.min_access_size = 1,
    .valid.max_access_size = 8,
    .impl.min_access_size = 1,
    .impl.max_access_size = 8,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .read = ivshmem_reg_read,
    .write = ivshmem_reg_write,
};

/* Own vectors: main loop delivery, or KVM irqfd while MSI-X is unmasked */

static unsigned ivshmem_vector_index(IvshmemVector *v)
{
    return v - v->s->vec;
}

/*
 * Take the count of own vector @v, never blocking: another holder of the
 * eventfd can clear O_NONBLOCK and drain the counter between the main
 * loop's poll and this read.  RWF_NOWAIT makes the read fail with EAGAIN
 * on an empty counter whatever the file's flags.  Kernels whose eventfd
 * refuses RWF_NOWAIT (EOPNOTSUPP: those before eventfd's read_iter,
 * around Linux 5.11) get O_NONBLOCK set right before a plain read, which
 * leaves a holder that clears it again in between a window of a few
 * instructions.
 */
static bool ivshmem_vector_take(IvshmemVector *v)
{
    static bool no_nowait;
    int fd = event_notifier_get_fd(&v->notifier);
    uint64_t count = 0;
    ssize_t ret;
    int flags;

#ifdef RWF_NOWAIT
    if (!qatomic_read(&no_nowait)) {
        struct iovec iov = { .iov_base = &count, .iov_len = sizeof(count) };

        do {
            ret = preadv2(fd, &iov, 1, -1, RWF_NOWAIT);
        } while (ret < 0 && errno == EINTR);
        if (ret >= 0 || errno != EOPNOTSUPP) {
            return ret == sizeof(count) && count;
        }
        qatomic_set(&no_nowait, true);
        trace_ivshmem_vector_read_fallback(errno);
    }
#endif
    flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) {
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    do {
        ret = read(fd, &count, sizeof(count));
    } while (ret < 0 && errno == EINTR);
    return ret == sizeof(count) && count;
}

static void ivshmem_vector_event(void *opaque)
{
    IvshmemVector *v = opaque;

    if (ivshmem_vector_take(v)) {
        ivshmem_raise(v->s, ivshmem_vector_index(v));
    }
}

static void ivshmem_vector_poll_main_loop(IvshmemVector *v, bool on)
{
    qemu_set_fd_handler(event_notifier_get_fd(&v->notifier),
                        on ? ivshmem_vector_event : NULL, NULL, v);
}

static int ivshmem_irqfd_start(IvshmemVector *v, MSIMessage msg)
{
    IvshmemState *s = v->s;
    PCIDevice *pdev = PCI_DEVICE(s);
    unsigned vector = ivshmem_vector_index(v);
    int ret;

    if (v->virq < 0) {
        KVMRouteChange c = kvm_irqchip_begin_route_changes(kvm_state);

        ret = kvm_irqchip_add_msi_route(&c, vector, pdev);
        if (ret < 0) {
            return ret;
        }
        kvm_irqchip_commit_route_changes(&c);
        v->virq = ret;
    } else {
        ret = kvm_irqchip_update_msi_route(kvm_state, v->virq, msg, pdev);
        if (ret < 0) {
            return ret;
        }
        kvm_irqchip_commit_routes(kvm_state);
    }
    ivshmem_vector_poll_main_loop(v, false);
    ret = kvm_irqchip_add_irqfd_notifier_gsi(kvm_state, &v->notifier, NULL,
                                             v->virq);
    if (ret < 0) {
        ivshmem_vector_poll_main_loop(v, true);
        return ret;
    }
    v->irqfd = true;
    trace_ivshmem_irqfd(vector, v->virq, true);
    /* An event that arrived while masked is now pending in the PBA. */
    return 0;
}

static void ivshmem_irqfd_stop(IvshmemVector *v)
{
    if (!v->irqfd) {
        return;
    }
    kvm_irqchip_remove_irqfd_notifier_gsi(kvm_state, &v->notifier, v->virq);
    v->irqfd = false;
    trace_ivshmem_irqfd(ivshmem_vector_index(v), v->virq, false);
    ivshmem_vector_poll_main_loop(v, true);
}

static void ivshmem_irqfd_release_route(IvshmemVector *v)
{
    ivshmem_irqfd_stop(v);
    if (v->virq >= 0) {
        kvm_irqchip_release_virq(kvm_state, v->virq);
        v->virq = -1;
    }
}

static int ivshmem_msix_unmasked(PCIDevice *pdev, unsigned vector,
                                 MSIMessage msg)
{
    IvshmemState *s = IVSHMEM_COMMON(pdev);
    IvshmemVector *v = &s->vec[vector];

    /* On failure the vector stays with the main loop: still delivered. */
    if (v->connected && !v->irqfd && ivshmem_irqfd_start(v, msg) < 0) {
        warn_report_once("ivshmem: cannot route vector %u through a KVM "
                         "irqfd, using the main loop", vector);
    }
    return 0;
}

static void ivshmem_msix_masked(PCIDevice *pdev, unsigned vector)
{
    IvshmemState *s = IVSHMEM_COMMON(pdev);

    ivshmem_irqfd_stop(&s->vec[vector]);
}

static void ivshmem_own_vector_add(IvshmemState *s, uint16_t vector, int fd)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    IvshmemVector *v = &s->vec[vector];

    event_notifier_init_fd(&v->notifier, fd);
    v->connected = true;
    if (s->use_irqfd && msix_enabled(pdev) && !msix_is_masked(pdev, vector)) {
        if (ivshmem_irqfd_start(v, msix_get_message(pdev, vector)) == 0) {
            return;
        }
    }
    ivshmem_vector_poll_main_loop(v, true);
}

static void ivshmem_own_vector_del(IvshmemState *s, uint16_t vector)
{
    IvshmemVector *v = &s->vec[vector];

    if (!v->connected) {
        return;
    }
    ivshmem_irqfd_release_route(v);
    ivshmem_vector_poll_main_loop(v, false);
    v->connected = false;
}

/* Other peers' vectors: optional ioeventfd on the Doorbell register */

static gpointer ivshmem_doorbell_key(uint16_t peer, uint16_t vector)
{
    return GUINT_TO_POINTER((uint32_t)peer << 16 | vector);
}

static void ivshmem_doorbell_route_add(IvshmemState *s, uint16_t peer,
                                       uint16_t vector, int fd)
{
    EventNotifier *e;

    if (s->ioeventfds >= s->ioeventfd_budget) {
        trace_ivshmem_ioeventfd_budget(peer, vector, s->ioeventfd_budget);
        return;                 /* rung by ivshmem_ring() */
    }
    s->ioeventfds++;
    e = g_new(EventNotifier, 1);
    event_notifier_init_fd(e, fd);
    memory_region_add_eventfd(&s->regs, A_DOORBELL, 4, true,
                              (uint32_t)peer << 16 | vector, e);
    g_hash_table_insert(s->doorbells, ivshmem_doorbell_key(peer, vector), e);
}

static void ivshmem_doorbell_route_del(IvshmemState *s, uint16_t peer,
                                       uint16_t vector)
{
    gpointer key = ivshmem_doorbell_key(peer, vector);
    EventNotifier *e = g_hash_table_lookup(s->doorbells, key);

    if (e) {
        memory_region_del_eventfd(&s->regs, A_DOORBELL, 4, true,
                                  (uint32_t)peer << 16 | vector, e);
        g_hash_table_remove(s->doorbells, key);
        s->ioeventfds--;
    }
}

/* Shared memory */

static bool ivshmem_check_size(uint64_t size, const char *what, Error **errp)
{
    if (!size || !is_power_of_2(size)) {
        error_setg(errp, "%s size 0x%" PRIx64 " is not a power of two",
                   what, size);
        return false;
    }
    return true;
}

/*
 * Map @fd (a server's region or a shm= object) as BAR2.  The RAMBlock
 * takes the fd on success; on failure the caller still owns it.
 */
static bool ivshmem_map_fd(IvshmemState *s, int fd, const char *what,
                           Error **errp)
{
    struct stat st;
    uint64_t size;
    int seals;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat the %s", what);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        error_setg(errp, "the %s is not a shared memory object or file",
                   what);
        return false;
    }
    if (!ivshmem_check_size(st.st_size, what, errp)) {
        return false;
    }
    size = s->size ? s->size : st.st_size;
    if (size > st.st_size) {
        error_setg(errp, "property 'size' (0x%" PRIx64 ") is larger than "
                   "the %s (0x%" PRIx64 " bytes)", size, what,
                   (uint64_t)st.st_size);
        return false;
    }
    if (!memory_region_init_ram_from_fd(&s->shm_mr, OBJECT(s), "ivshmem.bar2",
                                        size, RAM_SHARED, fd, 0, errp)) {
        error_prepend(errp, "cannot map the %s: ", what);
        return false;
    }
    s->shm = &s->shm_mr;
    /* Whoever holds a shrinkable fd can truncate it under us: SIGBUS. */
    seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
        trace_ivshmem_shm_shrinkable(object_get_typename(OBJECT(s)), seals);
        warn_report_once("ivshmem: the %s can be shrunk by any process "
                         "holding it, and this VM would then lose what lay "
                         "beyond the new end; ivshmem-server --memfd "
                         "serves sealed memory", what);
    }
    s->shm_dev = st.st_dev;
    s->shm_ino = st.st_ino;
    s->shm_obj_size = st.st_size;
    return true;
}

/*
 * Shrunk memory
 *
 * Whoever holds a region's fd can truncate it: every peer of a server
 * started with -M or -m, whoever can open a shm= object or a
 * memory-backend-file.  A later access to a page past the new end
 * faults with SIGBUS, which used to end QEMU.  QEMU's SIGBUS handler
 * now asks ivshmem_sigbus() first: if the address lies in a BAR2
 * mapping beyond the end of its (shrunk) file, the lost range, from
 * the new end rounded up to the mapping's page size to the end of BAR2,
 * is replaced by private anonymous pages and the access restarts.  This
 * VM then reads zeroes there and its writes stay its own; the rest of
 * the region stays shared.  A bottom half reports it from the main loop.
 * The range stays private for the life of the device, even if the file
 * grows back.
 *
 * ivshmem_sigbus() runs in a signal handler, in whatever thread touched
 * the memory (vCPU, main loop, migration): no locks, no allocation, only
 * fstat(), mmap() and atomics.  Mappings live in a fixed table that
 * realize and unrealize change under the BQL.
 */
#define IVSHMEM_MAPPINGS        64
#define IVSHMEM_SHRUNK_REPORT_MS 10000  /* at most one warning per 10 s */
/*
 * Under KVM, every vCPU that touched a lost range before it was backed
 * fails KVM_RUN with EFAULT, without the address: the first one to look
 * remaps, the others find nothing left to do.  For this long after a
 * remap, such an EFAULT is taken as one of those and retried.
 */
#define IVSHMEM_REMAP_RETRY_NS  (100 * SCALE_MS)

typedef struct IvshmemMapping {
    uint8_t *host;              /* NULL: free slot */
    uint64_t size;
    uint64_t pagesize;
    int fd;
    int busy;                   /* a handler is remapping */
    bool failed;                /* mmap failed: let SIGBUS end QEMU */
    uint64_t shared_end;        /* offset where the private range starts */
    uint64_t file_size;         /* file size the last remap saw */
    int64_t remapped_ns;        /* when the last remap was done */
    QEMUBH *bh;
} IvshmemMapping;

static IvshmemMapping ivshmem_mappings[IVSHMEM_MAPPINGS];

/*
 * Back @m from the end of its file on with private pages, if @off lies
 * there.  Returns 1 when the access can be retried, 0 when @off is not
 * in a lost range, -1 when remapping failed.  With @scan (no faulting
 * address known), 1 only if a lost range was backed just now (or
 * within IVSHMEM_REMAP_RETRY_NS).
 */
static int ivshmem_mapping_recover(IvshmemMapping *m, uint64_t off,
                                   bool scan)
{
    struct stat st;
    uint64_t end;
    int ret = 0;

    if (qatomic_cmpxchg(&m->busy, 0, 1) != 0) {
        return 1;               /* another thread remaps: retry */
    }
    if (!qatomic_read(&m->host)) {
        goto out;               /* being unwatched */
    }
    if (qatomic_read(&m->failed) || fstat(m->fd, &st) < 0) {
        ret = -1;
        goto out;
    }
    end = ROUND_UP((uint64_t)st.st_size, m->pagesize);
    if (end >= m->shared_end || off < end) {
        /*
         * Not lost to a truncation: either @off is private already (a
         * retry works) or the file covers it (somebody else's SIGBUS).
         * A scan retries if another vCPU remapped just now.
         */
        if (scan) {
            ret = m->shared_end < m->size &&
                  get_clock() - qatomic_read(&m->remapped_ns) <
                  IVSHMEM_REMAP_RETRY_NS;
        } else {
            ret = off >= m->shared_end ? 1 : 0;
        }
        goto out;
    }
    if (mmap(m->host + end, m->shared_end - end, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        qatomic_set(&m->failed, true);
        ret = -1;
        goto out;
    }
    qatomic_set(&m->file_size, st.st_size);
    qatomic_set(&m->remapped_ns, get_clock());
    qatomic_set(&m->shared_end, end);
    qemu_bh_schedule(m->bh);
    ret = 1;
out:
    qatomic_set(&m->busy, 0);
    return ret;
}

/* QemuRamSigbusHook: @addr faulted, or NULL: check every mapping. */
static bool ivshmem_sigbus(void *addr)
{
    uint8_t *p = addr;
    bool done = false;
    unsigned i;

    for (i = 0; i < IVSHMEM_MAPPINGS; i++) {
        IvshmemMapping *m = &ivshmem_mappings[i];
        uint8_t *host = qatomic_load_acquire(&m->host);

        if (!host) {
            continue;
        }
        if (!p) {
            uint64_t end = qatomic_read(&m->shared_end);

            done |= end && ivshmem_mapping_recover(m, end - 1, true) == 1;
        } else if (p >= host && p < host + m->size) {
            return ivshmem_mapping_recover(m, p - host, false) == 1;
        }
    }
    return done;
}

static void ivshmem_shrunk_report(void *opaque)
{
    IvshmemState *s = opaque;
    IvshmemMapping *m = s->mapping;
    g_autofree char *name = NULL;
    uint64_t from, file_size;
    int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (!m) {
        return;
    }
    from = qatomic_read(&m->shared_end);
    file_size = qatomic_read(&m->file_size);
    if (from == s->shrunk_reported) {
        return;
    }
    if (from != s->shrunk_traced) {
        s->shrunk_traced = from;
        trace_ivshmem_shm_shrunk(object_get_typename(OBJECT(s)), m->size,
                                 file_size, from);
    }
    if (s->shrunk_last_report &&
        now - s->shrunk_last_report < IVSHMEM_SHRUNK_REPORT_MS) {
        timer_mod(s->shrunk_timer,
                  s->shrunk_last_report + IVSHMEM_SHRUNK_REPORT_MS);
        return;
    }
    s->shrunk_last_report = now;
    s->shrunk_reported = from;
    name = ivshmem_describe(s);
    warn_report("%s: the shared memory shrank from 0x%" PRIx64 " to 0x%"
                PRIx64 " bytes (truncated by a process holding it); BAR2 "
                "from offset 0x%" PRIx64 " on is no longer shared: this VM "
                "reads zeroes there and keeps its writes; share a sealed "
                "region (ivshmem-server --memfd) to prevent it", name,
                m->size, file_size, from);
}

static void ivshmem_shrunk_timer(void *opaque)
{
    ivshmem_shrunk_report(opaque);
}

/* Watch BAR2 for shrinking, if its fd can be shrunk. */
static void ivshmem_watch_shrink(IvshmemState *s)
{
    MemoryRegion *mr = s->shm;
    int fd = memory_region_get_fd(mr);
    int seals;
    unsigned i;

    if (fd < 0) {
        return;                 /* anonymous memory: nobody can shrink it */
    }
    seals = fcntl(fd, F_GET_SEALS);
    if (seals >= 0 && (seals & F_SEAL_SHRINK)) {
        return;
    }
    for (i = 0; i < IVSHMEM_MAPPINGS; i++) {
        if (!ivshmem_mappings[i].host) {
            break;
        }
    }
    if (i == IVSHMEM_MAPPINGS) {
        warn_report("%s: more than %d ivshmem devices; this one's shared "
                    "memory is not protected against shrinking",
                    object_get_typename(OBJECT(s)), IVSHMEM_MAPPINGS);
        return;
    }
    s->shrunk_bh = qemu_bh_new_guarded(ivshmem_shrunk_report, s,
                                       &DEVICE(s)->mem_reentrancy_guard);
    s->shrunk_timer = timer_new_ms(QEMU_CLOCK_REALTIME,
                                   ivshmem_shrunk_timer, s);
    s->shrunk_reported = memory_region_size(mr);
    s->shrunk_traced = s->shrunk_reported;
    s->shrunk_last_report = 0;
    s->mapping = &ivshmem_mappings[i];
    *s->mapping = (IvshmemMapping) {
        .size = memory_region_size(mr),
        .pagesize = qemu_ram_pagesize(mr->ram_block),
        .fd = fd,
        .shared_end = memory_region_size(mr),
        .file_size = memory_region_size(mr),
        .bh = s->shrunk_bh,
    };
    qatomic_store_release(&s->mapping->host,
                          (uint8_t *)memory_region_get_ram_ptr(mr));
    qemu_set_ram_sigbus_hook(ivshmem_sigbus);
}

static void ivshmem_unwatch_shrink(IvshmemState *s)
{
    if (!s->mapping) {
        return;
    }
    qatomic_set(&s->mapping->host, NULL);
    /* A handler may still be on it: let it finish with the BH. */
    while (qatomic_read(&s->mapping->busy)) {
        g_usleep(1000);
    }
    s->mapping = NULL;
    g_clear_pointer(&s->shrunk_bh, qemu_bh_delete);
    g_clear_pointer(&s->shrunk_timer, timer_free);
}

static char *ivshmem_shm_path(const char *name)
{
    return name[0] == '/' ? g_strdup(name) : g_strdup_printf("/%s", name);
}

static bool ivshmem_open_shm(IvshmemState *s, Error **errp)
{
    g_autofree char *path = ivshmem_shm_path(s->shm_name);
    bool created = false;
    struct stat st;
    int fd;

    if (strchr(path + 1, '/') || !path[1]) {
        error_setg(errp, "property 'shm': '%s' is not a valid shared "
                   "memory object name", s->shm_name);
        return false;
    }
    /*
     * Open, else create: two QEMUs started together with the same name
     * may both find it missing; the one whose O_EXCL create loses opens
     * the object the other one created.
     */
    for (int attempt = 0; attempt < 3; attempt++) {
        fd = shm_open(path, O_RDWR, 0600);
        if (fd >= 0 || errno != ENOENT) {
            break;
        }
        fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 || errno != EEXIST) {
            created = fd >= 0;
            break;
        }
    }
    if (fd < 0) {
        error_setg_errno(errp, errno, "property 'shm': cannot open "
                         "shared memory object '%s'", path);
        return false;
    }
    if (created) {
        s->created_shm = g_strdup(path);
    }
    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat '%s'", path);
        goto fail;
    }
    if (st.st_size == 0) {
        if (ftruncate(fd, s->size) < 0) {
            error_setg_errno(errp, errno, "cannot size '%s' to 0x%" PRIx64,
                             path, s->size);
            goto fail;
        }
    } else if (st.st_size < s->size) {
        error_setg(errp, "property 'size' (0x%" PRIx64 ") is larger than "
                   "the existing shared memory object '%s' (0x%" PRIx64
                   " bytes)", s->size, path, (uint64_t)st.st_size);
        goto fail;
    }
    if (!memory_region_init_ram_from_fd(&s->shm_mr, OBJECT(s), "ivshmem.bar2",
                                        s->size, RAM_SHARED, fd, 0, errp)) {
        error_prepend(errp, "cannot map '%s': ", path);
        goto fail;
    }
    s->shm = &s->shm_mr;
    return true;

fail:
    close(fd);
    return false;
}

static const char *ivshmem_id(IvshmemState *s)
{
    DeviceState *dev = DEVICE(s);

    return dev->id ? dev->id : object_get_typename(OBJECT(s));
}

static bool ivshmem_take_memdev(IvshmemState *s, Error **errp)
{
    g_autofree char *name = NULL;

    if (!s->memdev) {
        error_setg(errp, "property 'memdev' is required");
        return false;
    }
    name = host_memory_backend_get_name(s->memdev);
    if (host_memory_backend_is_mapped(s->memdev)) {
        error_setg(errp, "property 'memdev': memory backend '%s' is "
                   "already in use", name);
        return false;
    }
    if (!s->memdev->share) {
        warn_report("ivshmem-plain '%s': memory backend '%s' has share=off, "
                    "so the memory is private to this VM and shared with no "
                    "one; create the backend with share=on to share it",
                    ivshmem_id(s), name);
    }
    s->shm = host_memory_backend_get_memory(s->memdev);
    if (!ivshmem_check_size(memory_region_size(s->shm),
                            "property 'memdev': memory backend", errp)) {
        s->shm = NULL;
        return false;
    }
    host_memory_backend_set_mapped(s->memdev, true);
    s->memdev_taken = true;
    return true;
}

/* Server protocol */

static bool ivshmem_check_master_id(IvshmemState *s, uint16_t id,
                                    Error **errp)
{
    /* master=auto: the peer the server numbers 0 owns the memory. */
    if (s->master_opt == ON_OFF_AUTO_AUTO) {
        s->master = id == 0;
    }
    /*
     * An incoming master connects while its source still holds ID 0: the
     * check was made on the source.
     */
    if (s->master && id != 0 && !runstate_check(RUN_STATE_INMIGRATE)) {
        error_setg(errp, "property '%s': this device is peer %u of the "
                   "ivshmem server, only peer 0 can be the master",
                   s->kind == IVSHMEM_KIND_LEGACY ? "role" : "master", id);
        return false;
    }
    return true;
}

#define IVSHMEM_ANON_INODE_FS_MAGIC 0x09041934

/*
 * Whether @fd is an eventfd (issue 23).  The kernel says so itself: only
 * an eventfd's /proc/self/fdinfo has an "eventfd-count:" line.  Without
 * /proc (-run-with chroot=, some sandboxes) the fd must live on the
 * anonymous-inode filesystem and accept an 8-byte write of 0, which an
 * eventfd takes without effect and without waiting, whatever its counter
 * and flags, and which every other anonymous-inode fd a server could
 * pass (timerfd, signalfd, epoll, inotify, fanotify, landlock ruleset,
 * userfaultfd, io_uring, pidfd before Linux 6.9...) refuses.  Neither
 * test depends on how the kernel numbers the inodes of eventfds.
 */
static bool ivshmem_fd_is_eventfd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *info = NULL;
    uint64_t zero = 0;
    struct statfs fs;

    if (g_file_get_contents(path, &info, NULL, NULL)) {
        return g_str_has_prefix(info, "eventfd-count:") ||
               strstr(info, "\neventfd-count:");
    }
    if (fstatfs(fd, &fs) < 0 || fs.f_type != IVSHMEM_ANON_INODE_FS_MAGIC) {
        return false;
    }
    return write(fd, &zero, sizeof(zero)) == sizeof(zero);
}

/* What @fd is, for an error: its /proc/self/fd link, else its kind */
static char *ivshmem_fd_describe(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);
    g_autofree char *link = g_file_read_link(path, NULL);
    struct statfs fs;
    struct stat st;

    if (link && g_str_has_prefix(link, "anon_inode:")) {
        return g_strdup_printf("an anonymous-inode fd of type %s",
                               link + strlen("anon_inode:"));
    }
    if (link) {
        return g_strdup_printf("'%s'", link);
    }
    if (fstatfs(fd, &fs) == 0 && fs.f_type == IVSHMEM_ANON_INODE_FS_MAGIC) {
        return g_strdup("an anonymous-inode fd of another type (timerfd, "
                        "signalfd, landlock ruleset...)");
    }
    if (fstat(fd, &st) < 0) {
        return g_strdup_printf("an fd QEMU cannot stat (%s)",
                               strerror(errno));
    }
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
        return g_strdup("a regular file or memfd");
    case S_IFIFO:
        return g_strdup("a pipe");
    case S_IFSOCK:
        return g_strdup("a socket");
    case S_IFCHR:
        return g_strdup("a character device");
    case S_IFDIR:
        return g_strdup("a directory");
    case 0:
        return g_strdup("a pseudo-file fd without a file type (a pidfd...)");
    default:
        return g_strdup_printf("an fd of file type 0%o",
                               (unsigned)(st.st_mode & S_IFMT));
    }
}

/*
 * Whether eventfd @fd is in semaphore mode (EFD_SEMAPHORE): a read takes
 * 1, not the whole count, so one write of 2^64 - 2 by another holder
 * keeps it readable for ever.  Only /proc says so (Linux 6.6 on); without
 * it such an fd passes.
 */
static bool ivshmem_eventfd_is_semaphore(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *info = NULL;

    return g_file_get_contents(path, &info, NULL, NULL) &&
           strstr(info, "\neventfd-semaphore: 1");
}

static bool ivshmem_check_eventfd(const IvshmemAction *a, Error **errp)
{
    ERRP_GUARD();

    if (!ivshmem_fd_is_eventfd(a->fd)) {
        g_autofree char *what = ivshmem_fd_describe(a->fd);

        error_setg(errp, "ivshmem server sent peer %u vector %u with an "
                   "fd that is not an eventfd but %s", a->peer, a->vector,
                   what);
        error_append_hint(errp, "The server must send an eventfd for every "
                          "vector.\n");
        return false;
    }
    if (a->own && ivshmem_eventfd_is_semaphore(a->fd)) {
        error_setg(errp, "ivshmem server sent own vector %u as an eventfd "
                   "in semaphore mode, which a read cannot drain; the "
                   "server must send plain eventfds", a->vector);
        return false;
    }
    return true;
}

static void ivshmem_wire_vector(IvshmemState *s, uint16_t peer,
                                uint16_t vector, int fd, bool own)
{
    if (own) {
        ivshmem_own_vector_add(s, vector, fd);
    } else if (s->ioeventfd && kvm_enabled()) {
        /*
         * Only KVM's ioeventfds: the kernel never blocks on them.  The
         * memory core's software dispatch (TCG, qtest) would write from
         * the vCPU, so those doorbells take ivshmem_ring() instead.
         */
        ivshmem_doorbell_route_add(s, peer, vector, fd);
    }
}

static bool ivshmem_server_action(void *opaque, const IvshmemAction *a,
                                  Error **errp)
{
    IvshmemState *s = opaque;

    switch (a->kind) {
    case IVSHMEM_ACTION_OWN_ID:
        trace_ivshmem_own_id(a->peer);
        return ivshmem_check_master_id(s, a->peer, errp);
    case IVSHMEM_ACTION_SHM:
        return ivshmem_map_fd(s, a->fd, "ivshmem server's shared memory",
                              errp);
    case IVSHMEM_ACTION_ADD_VECTOR:
        if (!ivshmem_check_eventfd(a, errp)) {
            return false;
        }
        trace_ivshmem_peer_vector_add(a->peer, a->vector, a->own);
        ivshmem_wire_vector(s, a->peer, a->vector, a->fd, a->own);
        ivshmem_presence_note(s, a->own ? R_PR_EVENT_STATUS_STATE_MASK :
                                          R_PR_EVENT_STATUS_PEERS_MASK);
        return true;
    case IVSHMEM_ACTION_DEL_VECTOR:
        trace_ivshmem_peer_vector_del(a->peer, a->vector, a->own);
        if (a->own) {
            ivshmem_own_vector_del(s, a->vector);
        } else {
            ivshmem_doorbell_route_del(s, a->peer, a->vector);
            ivshmem_bell_forget(s, a->peer, a->vector);
        }
        ivshmem_presence_note(s, a->own ? R_PR_EVENT_STATUS_STATE_MASK :
                                          R_PR_EVENT_STATUS_PEERS_MASK);
        return true;
    }
    g_assert_not_reached();
}

/*
 * A setup ends with the peer's own vectors, sent back to back.  They are
 * complete at 'vectors', or at as many as the server sent for any other
 * peer (it hands out the same number to every peer).  A peer alone with a
 * server that has fewer vectors than 'vectors' can only tell from a pause
 * of IVSHMEM_VECTOR_GAP_MS after its last own vector.
 */
static bool ivshmem_own_vectors_started(const IvshmemProto *p)
{
    return p->state == IVSHMEM_PROTO_RUNNING &&
           ivshmem_proto_peer_received(p, p->own_id) > 0;
}

static bool ivshmem_own_vectors_complete(IvshmemState *s,
                                         const IvshmemProto *p)
{
    uint32_t own;

    if (!ivshmem_own_vectors_started(p)) {
        return false;
    }
    own = ivshmem_proto_peer_received(p, p->own_id);
    return own >= s->vectors || (p->peer_vectors && own >= p->peer_vectors);
}

/*
 * A server that hands out no vectors at all (ivshmem-server -n 0, which
 * QEMU 10.0.2's server accepts) sends nothing after the shared memory.
 * Nothing can say so on the wire: a pause of IVSHMEM_NO_VECTOR_GAP_MS
 * after the last message, with no vector fd received for any peer, ends
 * the setup with no own vectors.  Should a slow server send vectors after
 * all, they are wired as they come, as after any setup.
 */
static bool ivshmem_no_vectors_yet(const IvshmemProto *p)
{
    return p->state == IVSHMEM_PROTO_RUNNING && !p->peer_vectors &&
           !ivshmem_proto_peer_received(p, p->own_id);
}

/*
 * A peer leaving that was never announced: with no vectors, that is every
 * peer, so from such a server it is no error.
 */
static bool ivshmem_stray_leave(const IvshmemProto *p, int fd)
{
    return fd < 0 && ivshmem_no_vectors_yet(p);
}

/* May a setup end without more messages, now that they paused? */
static bool ivshmem_setup_may_end(const IvshmemProto *p)
{
    return ivshmem_own_vectors_started(p) || ivshmem_no_vectors_yet(p);
}

/* When a setup that started at @deadline - timeout should be looked at */
static int64_t ivshmem_setup_wake_time(const IvshmemProto *p,
                                       int64_t last_msg, int64_t deadline)
{
    if (ivshmem_own_vectors_started(p)) {
        return MIN(deadline, last_msg + IVSHMEM_VECTOR_GAP_MS);
    }
    if (ivshmem_no_vectors_yet(p)) {
        return MIN(deadline, last_msg + IVSHMEM_NO_VECTOR_GAP_MS);
    }
    return deadline;
}

static const char *ivshmem_chardev_name(IvshmemState *s)
{
    return qemu_chr_fe_get_driver(&s->server)->label;
}

/* A setup ended with no vector for this peer: say what the guest lacks. */
static void ivshmem_warn_no_vectors(IvshmemState *s, const IvshmemProto *p)
{
    if (ivshmem_proto_peer_received(p, p->own_id)) {
        return;
    }
    warn_report("ivshmem '%s': the ivshmem server (chardev '%s') hands out "
                "no interrupt vectors (was it started with -n 0?): peer %u "
                "has shared memory only: no doorbell reaches it and none of "
                "its vectors fires", ivshmem_id(s), ivshmem_chardev_name(s),
                p->own_id);
}

/* What a setup that ran out of time had received, for the error */
static void ivshmem_setup_expired(IvshmemState *s, const IvshmemProto *p,
                                  Error **errp)
{
    static const char *const got[] = {
        [IVSHMEM_PROTO_WAIT_VERSION] = "nothing",
        [IVSHMEM_PROTO_WAIT_ID] = "only the protocol version",
        [IVSHMEM_PROTO_WAIT_SHM] = "its version and peer ID but no shared "
                                   "memory",
        [IVSHMEM_PROTO_RUNNING] = "the shared memory but none of this "
                                  "peer's own vectors",
    };

    error_setg(errp, "chardev '%s': the ivshmem server did not complete "
               "the setup within %d ms: it sent %s%s",
               ivshmem_chardev_name(s), IVSHMEM_SETUP_TIMEOUT_MS,
               got[p->state], s->msg_len ? " and part of a message" : "");
}

/* Reconnection: a second session, adopted once it is complete */

/* The restarted server must share the object BAR2 already maps. */
static bool ivshmem_same_memory(IvshmemState *s, int fd, Error **errp)
{
    ERRP_GUARD();
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat the restarted ivshmem "
                         "server's shared memory");
        return false;
    }
    if (st.st_dev != s->shm_dev || st.st_ino != s->shm_ino ||
        st.st_size != s->shm_obj_size) {
        error_setg(errp, "the restarted ivshmem server shares another "
                   "memory object (inode %" PRIu64 ", 0x%" PRIx64 " bytes) "
                   "than the one the device maps (inode %" PRIu64 ", 0x%"
                   PRIx64 " bytes)", (uint64_t)st.st_ino,
                   (uint64_t)st.st_size, (uint64_t)s->shm_ino,
                   (uint64_t)s->shm_obj_size);
        error_append_hint(errp, "Restart the server on the same -M object, "
                          "one that outlives it.\n");
        return false;
    }
    return true;
}

/* Actions of the new session: checked and kept, wired only on adoption. */
static bool ivshmem_next_action(void *opaque, const IvshmemAction *a,
                                Error **errp)
{
    IvshmemState *s = opaque;

    switch (a->kind) {
    case IVSHMEM_ACTION_OWN_ID:
        trace_ivshmem_reconnect_own_id(a->peer);
        /* a master, 'auto' ones included, stays peer 0 */
        if (s->master && a->peer != 0) {
            error_setg(errp, "property '%s': this device would be peer %u "
                       "of the restarted ivshmem server, only peer 0 can "
                       "be the master",
                       s->kind == IVSHMEM_KIND_LEGACY ? "role" : "master",
                       a->peer);
            return false;
        }
        return true;
    case IVSHMEM_ACTION_SHM:
        if (!ivshmem_same_memory(s, a->fd, errp)) {
            return false;
        }
        close(a->fd);           /* BAR2 maps this object already */
        return true;
    case IVSHMEM_ACTION_ADD_VECTOR:
        if (!ivshmem_check_eventfd(a, errp)) {
            return false;
        }
        trace_ivshmem_reconnect_vector(a->peer, a->vector, a->own, true);
        return true;
    case IVSHMEM_ACTION_DEL_VECTOR:
        trace_ivshmem_reconnect_vector(a->peer, a->vector, a->own, false);
        return true;
    }
    g_assert_not_reached();
}

static void ivshmem_next_free(IvshmemState *s)
{
    timer_del(s->next_timer);
    if (s->next) {
        ivshmem_proto_cleanup(s->next);     /* closes the session's fds */
        g_clear_pointer(&s->next, g_free);
    }
}

static void ivshmem_next_start(IvshmemState *s)
{
    s->next = g_new0(IvshmemProto, 1);
    ivshmem_proto_init(s->next, s->vectors, ivshmem_next_action, s);
    s->session = IVSHMEM_SESSION_JOINING;
    s->next_deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                       IVSHMEM_SETUP_TIMEOUT_MS;
    timer_mod(s->next_timer, s->next_deadline);
    trace_ivshmem_reconnect_start(s->proto.own_id);
}

/* Keep the old session; ignore the new connection until it closes. */
static void ivshmem_next_refuse(IvshmemState *s, Error *err)
{
    error_prepend(&err, "ivshmem '%s' keeps peer ID %u and its old peers: ",
                  ivshmem_id(s), s->proto.own_id);
    error_report_err(err);
    ivshmem_next_free(s);
    s->session = IVSHMEM_SESSION_REFUSED;
    ivshmem_presence_note(s, R_PR_EVENT_STATUS_STATE_MASK);
    trace_ivshmem_reconnect_refused(s->proto.own_id);
}

static void ivshmem_wire_table(IvshmemState *s)
{
    g_autoptr(GArray) ids = ivshmem_proto_peer_ids(&s->proto);
    uint32_t peer, v;
    guint i;

    for (i = 0; i < ids->len; i++) {
        peer = g_array_index(ids, uint32_t, i);
        for (v = 0; v < ivshmem_proto_peer_vectors(&s->proto, peer); v++) {
            trace_ivshmem_peer_vector_add(peer, v, peer == s->proto.own_id);
            ivshmem_wire_vector(s, peer, v,
                                ivshmem_proto_peer_fd(&s->proto, peer, v),
                                peer == s->proto.own_id);
        }
    }
}

/* Switch to the new session: unwire the old table, wire the new one. */
static void ivshmem_next_adopt(IvshmemState *s)
{
    uint16_t old_id = s->proto.own_id;

    timer_del(s->next_timer);
    ivshmem_proto_cleanup(&s->proto);       /* DEL_VECTOR for every fd */
    s->proto = *s->next;
    g_clear_pointer(&s->next, g_free);
    s->proto.action = ivshmem_server_action;
    s->session = IVSHMEM_SESSION_LIVE;
    ivshmem_wire_table(s);
    ivshmem_presence_note(s, IVSHMEM_PR_EVENTS);
    trace_ivshmem_reconnect_adopted(old_id, s->proto.own_id,
                                    ivshmem_proto_peer_vectors(&s->proto,
                                                        s->proto.own_id));
}

static void ivshmem_next_timeout(void *opaque)
{
    IvshmemState *s = opaque;
    Error *err = NULL;

    if (!s->next) {
        return;
    }
    if (ivshmem_setup_may_end(s->next)) {
        ivshmem_warn_no_vectors(s, s->next);
        ivshmem_next_adopt(s);  /* fewer own vectors than configured */
        return;
    }
    ivshmem_setup_expired(s, s->next, &err);
    ivshmem_next_refuse(s, err);
}

static void ivshmem_next_feed(IvshmemState *s, int64_t value, int fd)
{
    bool in_setup = s->next->state != IVSHMEM_PROTO_RUNNING;
    bool stray = ivshmem_stray_leave(s->next, fd);
    Error *err = NULL;

    if (!ivshmem_proto_feed(s->next, value, fd, &err)) {
        if (in_setup) {
            ivshmem_next_refuse(s, err);
            return;
        }
        if (stray) {
            error_free(err);
        } else {
            warn_report_err(err);
        }
    }
    if (ivshmem_own_vectors_complete(s, s->next)) {
        ivshmem_next_adopt(s);
    } else {
        int64_t now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

        timer_mod(s->next_timer, ivshmem_setup_wake_time(s->next, now,
                                                         s->next_deadline));
    }
}

/* The first setup, fed by the handlers below during realize */

static void ivshmem_setup_complete(IvshmemState *s)
{
    s->setup_done = true;
    s->session = IVSHMEM_SESSION_LIVE;  /* what follows is live traffic */
    trace_ivshmem_setup_done(s->proto.own_id,
                             ivshmem_proto_peer_vectors(&s->proto,
                                                        s->proto.own_id));
}

static void ivshmem_setup_feed(IvshmemState *s, int64_t value, int fd)
{
    Error *err = NULL;
    bool stray;

    if (s->setup_err) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    trace_ivshmem_setup_msg(value, fd);
    s->setup_last_msg = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    stray = ivshmem_stray_leave(&s->proto, fd);
    if (!ivshmem_proto_feed(&s->proto, value, fd, &err)) {
        if (stray) {
            error_free(err);
        } else {
            s->setup_err = err;
        }
        return;
    }
    if (ivshmem_own_vectors_complete(s, &s->proto)) {
        ivshmem_setup_complete(s);
    }
}

static void ivshmem_setup_closed(IvshmemState *s)
{
    if (!s->setup_err) {
        error_setg(&s->setup_err, "ivshmem server closed the connection "
                   "during setup");
    }
    /* Back to the main loop, where a reconnect-ms timer must run. */
    qemu_chr_fe_set_handlers(&s->server, NULL, NULL, NULL, NULL, NULL, NULL,
                             false);
}

/* Asynchronous messages after setup: peers joining and leaving. */

static int ivshmem_server_can_receive(void *opaque)
{
    IvshmemState *s = opaque;

    return sizeof(s->msg) - s->msg_len;
}

static void ivshmem_msg_reset(IvshmemState *s)
{
    s->msg_len = 0;
    if (s->msg_fd >= 0) {
        close(s->msg_fd);
        s->msg_fd = -1;
    }
}

/* Collect bytes into a message; true with @value and @fd once complete. */
static bool ivshmem_msg_collect(IvshmemState *s, const uint8_t *buf,
                                int size, int64_t *value, int *fd)
{
    int new_fd = qemu_chr_fe_get_msgfd(&s->server);

    if (new_fd >= 0) {
        if (s->msg_fd >= 0) {
            close(s->msg_fd);
        }
        s->msg_fd = new_fd;
    }
    size = MIN(size, sizeof(s->msg) - s->msg_len);
    memcpy(s->msg + s->msg_len, buf, size);
    s->msg_len += size;
    if (s->msg_len < sizeof(s->msg)) {
        return false;
    }
    *value = ivshmem_proto_decode(s->msg);
    *fd = s->msg_fd;
    s->msg_fd = -1;
    s->msg_len = 0;
    return true;
}

static void ivshmem_server_receive(void *opaque, const uint8_t *buf, int size)
{
    IvshmemState *s = opaque;
    Error *err = NULL;
    int64_t value;
    bool stray;
    int fd;

    if (!ivshmem_msg_collect(s, buf, size, &value, &fd)) {
        return;
    }
    trace_ivshmem_server_msg(value, fd);
    switch (s->session) {
    case IVSHMEM_SESSION_SETUP:
        ivshmem_setup_feed(s, value, fd);
        break;
    case IVSHMEM_SESSION_LIVE:
        stray = ivshmem_stray_leave(&s->proto, fd);
        if (!ivshmem_proto_feed(&s->proto, value, fd, &err)) {
            if (stray) {
                error_free(err);
            } else {
                warn_report_err(err);
            }
        }
        break;
    case IVSHMEM_SESSION_JOINING:
        ivshmem_next_feed(s, value, fd);
        break;
    default:
        if (fd >= 0) {
            close(fd);          /* a session the device does not use */
        }
        break;
    }
}

static void ivshmem_server_event(void *opaque, QEMUChrEvent event)
{
    IvshmemState *s = opaque;

    if (s->session == IVSHMEM_SESSION_SETUP) {
        if (event == CHR_EVENT_CLOSED) {
            ivshmem_setup_closed(s);
        }
        return;
    }
    if (event == CHR_EVENT_CLOSED) {
        trace_ivshmem_server_closed(s->session);
        ivshmem_next_free(s);
        ivshmem_msg_reset(s);
        s->session = IVSHMEM_SESSION_CLOSED;
        ivshmem_presence_note(s, R_PR_EVENT_STATUS_STATE_MASK);
    } else if (event == CHR_EVENT_OPENED &&
               s->session == IVSHMEM_SESSION_CLOSED) {
        ivshmem_msg_reset(s);
        ivshmem_next_start(s);
    }
}

/*
 * The first setup runs in realize, so that the device is complete when a
 * guest first sees it.  The chardev's handlers move to a private
 * GMainContext that realize iterates until the setup is complete, fails or
 * runs out of time: only this chardev is served meanwhile, reads never
 * block (the handlers get what has arrived), and one deadline bounds the
 * whole setup, however the server sends it.
 */
static gboolean ivshmem_setup_wakeup(gpointer opaque)
{
    return G_SOURCE_REMOVE;
}

static bool ivshmem_server_connected(IvshmemState *s, Error **errp)
{
    ERRP_GUARD();
    Chardev *chr = qemu_chr_fe_get_driver(&s->server);

    if (!qemu_chr_has_feature(chr, QEMU_CHAR_FEATURE_FD_PASS)) {
        error_setg(errp, "property 'chardev': '%s' cannot pass file "
                   "descriptors", chr->label);
        error_append_hint(errp, "Use a UNIX socket chardev.\n");
        return false;
    }
    /*
     * With reconnect-ms the first connection is made in the background:
     * at startup wait for it (and for the server), as vhost-user does.
     * A hot-plugged device needs a connected chardev.
     */
    if (!qemu_chr_fe_backend_open(&s->server) &&
        !phase_check(PHASE_MACHINE_READY) &&
        qemu_chr_fe_wait_connected(&s->server, errp) < 0) {
        return false;
    }
    if (!qemu_chr_fe_backend_open(&s->server)) {
        error_setg(errp, "property 'chardev': '%s' is not connected to an "
                   "ivshmem server", chr->label);
        return false;
    }
    return true;
}

static bool ivshmem_server_setup(IvshmemState *s, Error **errp)
{
    g_autoptr(GMainContext) ctx = NULL;
    int64_t deadline, now, wake;
    GSource *timer;

    if (!ivshmem_server_connected(s, errp)) {
        return false;
    }
    ivshmem_proto_init(&s->proto, s->vectors, ivshmem_server_action, s);
    s->proto_inited = true;
    s->session = IVSHMEM_SESSION_SETUP;
    ctx = g_main_context_new();
    qemu_chr_fe_set_handlers(&s->server, ivshmem_server_can_receive,
                             ivshmem_server_receive, ivshmem_server_event,
                             NULL, s, ctx, false);
    deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
               IVSHMEM_SETUP_TIMEOUT_MS;
    while (!s->setup_done && !s->setup_err) {
        now = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
        wake = ivshmem_setup_wake_time(&s->proto, s->setup_last_msg,
                                       deadline);
        if (now >= wake) {
            if (ivshmem_setup_may_end(&s->proto)) {
                ivshmem_warn_no_vectors(s, &s->proto);
                ivshmem_setup_complete(s);  /* fewer vectors than wanted */
            } else {
                ivshmem_setup_expired(s, &s->proto, &s->setup_err);
            }
            break;
        }
        timer = g_timeout_source_new(wake - now);
        g_source_set_callback(timer, ivshmem_setup_wakeup, NULL, NULL);
        g_source_attach(timer, ctx);
        g_main_context_iteration(ctx, true);
        g_source_destroy(timer);
        g_source_unref(timer);
    }
    qemu_chr_fe_set_handlers(&s->server, NULL, NULL, NULL, NULL, NULL, NULL,
                             false);
    if (s->setup_err) {
        error_propagate(errp, s->setup_err);
        s->setup_err = NULL;
        return false;
    }
    return true;
}

/* Realize and teardown */

static void ivshmem_teardown(IvshmemState *s)
{
    PCIDevice *pdev = PCI_DEVICE(s);

    ivshmem_presence_teardown(s);
    qemu_chr_fe_set_handlers(&s->server, NULL, NULL, NULL, NULL, NULL, NULL,
                             false);
    ivshmem_bells_stop(s);
    if (s->next_timer) {
        ivshmem_next_free(s);
        g_clear_pointer(&s->next_timer, timer_free);
    }
    if (s->use_irqfd && pdev->msix_vector_use_notifier) {
        msix_unset_vector_notifiers(pdev);
    }
    if (s->proto_inited) {
        ivshmem_proto_cleanup(&s->proto);  /* DEL_VECTOR for every fd */
        s->proto_inited = false;
    }
    s->setup_done = false;
    if (s->msg_fd >= 0) {
        close(s->msg_fd);
        s->msg_fd = -1;
    }
    g_clear_pointer(&s->doorbells, g_hash_table_destroy);
    g_clear_pointer(&s->vec, g_free);
    if (s->migration_blocker) {
        migrate_del_blocker(&s->migration_blocker);
    }
    ivshmem_unwatch_shrink(s);
    if (s->ram_registered) {
        vmstate_unregister_ram(s->shm, DEVICE(s));
        s->ram_registered = false;
    }
    if (s->memdev_taken) {
        host_memory_backend_set_mapped(s->memdev, false);
        s->memdev_taken = false;
    }
    /*
     * shm_mr stays: a region is destroyed with its owner, once nothing
     * (an address_space_map() say) still holds it (docs/devel/memory.rst).
     */
    s->shm = NULL;
    if (msix_present(pdev)) {
        msix_uninit_exclusive_bar(pdev);
    }
}

static bool ivshmem_parse_legacy(IvshmemState *s, Error **errp)
{
    ERRP_GUARD();
    bool has_chr = qemu_chr_fe_backend_connected(&s->server);

    if (!!s->shm_name == has_chr) {
        error_setg(errp, "use exactly one of the properties 'shm' and "
                   "'chardev'");
        return false;
    }
    if (s->role && !g_str_equal(s->role, "peer")) {
        if (!g_str_equal(s->role, "master")) {
            error_setg(errp, "property 'role' must be 'master' or 'peer', "
                       "not '%s'", s->role);
            return false;
        }
        s->master = true;
    }
    if (s->size_str) {
        if (qemu_strtosz_MiB(s->size_str, NULL, &s->size) < 0) {
            error_setg(errp, "property 'size': invalid size '%s'",
                       s->size_str);
            return false;
        }
        if (!is_power_of_2(s->size)) {
            error_setg(errp, "property 'size': %s is not a power of two",
                       s->size_str);
            return false;
        }
    } else if (s->shm_name) {
        s->size = IVSHMEM_DEFAULT_SIZE;
    }
    s->use_msix = has_chr && s->msi;
    if (s->presence && !has_chr) {
        error_setg(errp, "property 'presence' needs a server");
        error_append_hint(errp, "Use 'chardev' instead of 'shm', or "
                          "presence=off.\n");
        return false;
    }
    return true;
}

static bool ivshmem_parse_config(IvshmemState *s, Error **errp)
{
    if (s->kind == IVSHMEM_KIND_LEGACY) {
        if (!ivshmem_parse_legacy(s, errp)) {
            return false;
        }
    } else if (s->kind == IVSHMEM_KIND_DOORBELL) {
        if (!qemu_chr_fe_backend_connected(&s->server)) {
            error_setg(errp, "property 'chardev' is required");
            return false;
        }
        s->use_msix = true;
        s->master = s->master_opt == ON_OFF_AUTO_ON;   /* auto: at setup */
    } else {
        s->master = s->master_opt != ON_OFF_AUTO_OFF;  /* auto: always */
    }
    if (qemu_chr_fe_backend_connected(&s->server) &&
        (s->vectors == 0 || s->vectors > IVSHMEM_MAX_MSIX)) {
        error_setg(errp, "property 'vectors' must be between 1 and %d, "
                   "not %u", IVSHMEM_MAX_MSIX, s->vectors);
        return false;
    }
    s->use_irqfd = s->use_msix && kvm_msi_via_irqfd_enabled();
    return true;
}

static bool ivshmem_init_msix(IvshmemState *s, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(s);
    unsigned v;

    if (msix_init_exclusive_bar(pdev, s->vectors, IVSHMEM_MSIX_BAR,
                                errp) < 0) {
        return false;
    }
    for (v = 0; v < s->vectors; v++) {
        msix_vector_use(pdev, v);
    }
    return true;
}

/*
 * The region is registered on every peer, as 10.0.2 does: a destination
 * that is not master then gets as far as ivshmem_pre_load(), which says
 * why it refuses the state, instead of failing on an unknown RAM block.
 */
static bool ivshmem_setup_migration(IvshmemState *s, Error **errp)
{
    vmstate_register_ram(s->shm, DEVICE(s));
    s->ram_registered = true;
    if (s->master) {
        return true;
    }
    error_setg(&s->migration_blocker, "Migration is disabled while the "
               "ivshmem device '%s' is present: its shared memory is owned "
               "by another peer.  Unplug it before migrating and plug it "
               "back in afterwards, or use %s on the one peer that owns "
               "the memory",
               ivshmem_id(s),
               s->kind == IVSHMEM_KIND_LEGACY ? "role=master" : "master=on");
    return migrate_add_blocker(&s->migration_blocker, errp) == 0;
}

static void ivshmem_realize(PCIDevice *pdev, Error **errp)
{
    IvshmemState *s = IVSHMEM_COMMON(pdev);
    bool has_server;

    if (!ivshmem_parse_config(s, errp)) {
        return;
    }
    has_server = qemu_chr_fe_backend_connected(&s->server);
    if (ivshmem_uses_intx(s)) {
        pdev->config[PCI_INTERRUPT_PIN] = 1;
    }
    memory_region_init_io(&s->regs, OBJECT(s), &ivshmem_reg_ops, s,
                          "ivshmem.regs", IVSHMEM_REG_BAR_SIZE);
    pci_register_bar(pdev, IVSHMEM_REG_BAR, PCI_BASE_ADDRESS_SPACE_MEMORY,
                     &s->regs);
    s->msg_fd = -1;
    s->doorbells = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    if (has_server) {
        unsigned v;

        s->next_timer = timer_new_ms(QEMU_CLOCK_REALTIME,
                                     ivshmem_next_timeout, s);
        ivshmem_bells_start(s);
        s->vec = g_new0(IvshmemVector, s->vectors);
        for (v = 0; v < s->vectors; v++) {
            s->vec[v].s = s;
            s->vec[v].virq = -1;
        }
    }
    if (s->use_msix && !ivshmem_init_msix(s, errp)) {
        goto fail;
    }
    if (!ivshmem_presence_realize(s, errp)) {
        goto fail;
    }
    if (s->kind == IVSHMEM_KIND_PLAIN) {
        if (!ivshmem_take_memdev(s, errp)) {
            goto fail;
        }
    } else if (has_server) {
        if (!ivshmem_server_setup(s, errp)) {
            goto fail;
        }
    } else if (!ivshmem_open_shm(s, errp)) {
        goto fail;
    }
    if (!ivshmem_setup_migration(s, errp)) {
        goto fail;
    }
    ivshmem_watch_shrink(s);
    pci_register_bar(pdev, IVSHMEM_SHM_BAR,
                     PCI_BASE_ADDRESS_SPACE_MEMORY |
                     PCI_BASE_ADDRESS_MEM_PREFETCH |
                     PCI_BASE_ADDRESS_MEM_TYPE_64, s->shm);
    if (has_server) {
        qemu_chr_fe_set_handlers(&s->server, ivshmem_server_can_receive,
                                 ivshmem_server_receive, ivshmem_server_event,
                                 NULL, s, NULL, false);
        if (s->use_irqfd &&
            msix_set_vector_notifiers(pdev, ivshmem_msix_unmasked,
                                      ivshmem_msix_masked, NULL) < 0) {
            error_setg(errp, "cannot set up KVM irqfd for MSI-X");
            goto fail;
        }
    }
    g_clear_pointer(&s->created_shm, g_free);
    trace_ivshmem_realized(object_get_typename(OBJECT(s)),
                           memory_region_size(s->shm), s->vectors);
    return;

fail:
    ivshmem_teardown(s);
    if (s->created_shm) {
        shm_unlink(s->created_shm);
        g_clear_pointer(&s->created_shm, g_free);
    }
}

static void ivshmem_unrealize(PCIDevice *pdev)
{
    ivshmem_teardown(IVSHMEM_COMMON(pdev));
}

/* The PCI core resets MSI-X; the server connection stays up. */
static void ivshmem_reset_enter(Object *obj, ResetType type)
{
    IvshmemState *s = IVSHMEM_COMMON(obj);

    s->intr_mask = 0;
    s->intr_status = 0;
    ivshmem_presence_reset(s);
}

static void ivshmem_reset_hold(Object *obj, ResetType type)
{
    ivshmem_update_intx(IVSHMEM_COMMON(obj));
}

/*
 * Only the peer that owns the memory migrates: the source of a non-master
 * is blocked, and a non-master destination refuses the state.
 */
static int ivshmem_pre_load(void *opaque)
{
    IvshmemState *s = opaque;

    if (!s->master) {
        error_report("ivshmem '%s': cannot load the incoming state: peer "
                     "devices are not migratable", ivshmem_id(s));
        error_printf("Start the destination with %s.\n",
                     s->kind == IVSHMEM_KIND_LEGACY ? "role=master" :
                     "master=on");
        return -EINVAL;
    }
    return 0;
}

static int ivshmem_post_load(void *opaque, int version_id)
{
    IvshmemState *s = opaque;

    ivshmem_update_intx(s);
    return 0;
}

/*
 * Migration.  The sections of ivshmem-plain and ivshmem-doorbell are
 * those of QEMU 10.0.2 (name, version 0, field order), so guests migrate
 * between the two both ways; the legacy ivshmem's section is this
 * series' own (docs/specs/ivshmem-spec.rst).  Only the field lists
 * differ; the shared memory itself travels as a RAM block.
 */
static const VMStateField ivshmem_plain_fields[] = {
    VMSTATE_PCI_DEVICE(parent_obj, IvshmemState),
    VMSTATE_UINT32(intr_status, IvshmemState),
    VMSTATE_UINT32(intr_mask, IvshmemState),
    VMSTATE_END_OF_LIST()
};

static const VMStateField ivshmem_doorbell_fields[] = {
    VMSTATE_PCI_DEVICE(parent_obj, IvshmemState),
    VMSTATE_MSIX(parent_obj, IvshmemState),
    VMSTATE_UINT32(intr_status, IvshmemState),
    VMSTATE_UINT32(intr_mask, IvshmemState),
    VMSTATE_END_OF_LIST()
};

static const VMStateField ivshmem_legacy_fields[] = {
    VMSTATE_PCI_DEVICE(parent_obj, IvshmemState),
    VMSTATE_MSIX(parent_obj, IvshmemState),
    VMSTATE_UINT32(intr_mask, IvshmemState),
    VMSTATE_UINT32(intr_status, IvshmemState),
    VMSTATE_END_OF_LIST()
};

#define IVSHMEM_SECTION(type, version, field_list) {                     \
        .name = (type),                                                 \
        .version_id = (version),                                        \
        .minimum_version_id = (version),                                \
        .pre_load = ivshmem_pre_load,                                   \
        .post_load = ivshmem_post_load,                                 \
        .fields = (field_list),                                         \
        .subsections = field_list##_subsections,                       \
    }

static const VMStateDescription ivshmem_plain_vmstate =
    IVSHMEM_SECTION(TYPE_IVSHMEM_PLAIN, 0, ivshmem_plain_fields);
static const VMStateDescription ivshmem_doorbell_vmstate =
    IVSHMEM_SECTION(TYPE_IVSHMEM_DOORBELL, 0, ivshmem_doorbell_fields);
/*
 * QEMU <= 3.1's ivshmem sent a section of this name, versions 0 and 1,
 * with another layout (IntrStatus before IntrMask).  Version 2, also the
 * minimum, makes the migration core refuse such a stream ("incoming
 * version_id 1 is too old") instead of misreading it.
 */
static const VMStateDescription ivshmem_legacy_vmstate =
    IVSHMEM_SECTION(TYPE_IVSHMEM, 2, ivshmem_legacy_fields);

static void ivshmem_common_class_init(ObjectClass *oc, void *data)
{
    PCIDeviceClass *pci = PCI_DEVICE_CLASS(oc);
    DeviceClass *dc = DEVICE_CLASS(oc);
    ResettableClass *rc = RESETTABLE_CLASS(oc);

    pci->realize = ivshmem_realize;
    pci->exit = ivshmem_unrealize;
    rc->phases.enter = ivshmem_reset_enter;
    rc->phases.hold = ivshmem_reset_hold;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);

    /*
     * The guest-visible identity (docs/specs/ivshmem-spec.rst): Red Hat's
     * vendor ID as both vendor and subsystem vendor, a RAM controller.
     */
    pci->vendor_id = pci->subsystem_vendor_id = IVSHMEM_VENDOR_ID;
    pci->device_id = IVSHMEM_DEVICE_ID;
    pci->subsystem_id = IVSHMEM_SUBSYS_ID;
    pci->class_id = PCI_CLASS_MEMORY_RAM;
}

static const char *const ivshmem_descr_plain_master =
    "on/auto: this peer owns the shared memory and migrates its contents; "
    "off: migration is blocked while the device is present";
static const char *const ivshmem_descr_doorbell_master =
    "on: this peer owns the shared memory and migrates its contents; "
    "auto: the same if the server makes it peer 0; "
    "off: migration is blocked while the device is present";
static const char *const ivshmem_descr_chardev =
    "socket chardev connected to an ivshmem server";
static const char *const ivshmem_descr_vectors =
    "number of interrupt vectors (1..2048)";
static const char *const ivshmem_descr_ioeventfd =
    "deliver doorbell writes straight to the peer's eventfd";
static const char *const ivshmem_descr_ioeventfd_budget =
    "with ioeventfd=on, at most this many peer vectors get an ioeventfd "
    "(each one lengthens every doorbell's lookup and every memory "
    "transaction); the others are rung by QEMU";

/* ivshmem-plain */

static const Property ivshmem_plain_properties[] = {
    DEFINE_PROP_LINK("memdev", IvshmemState, memdev, TYPE_MEMORY_BACKEND,
                     HostMemoryBackend *),
    DEFINE_PROP_ON_OFF_AUTO("master", IvshmemState, master_opt,
                            ON_OFF_AUTO_OFF),
};

static void ivshmem_plain_init(Object *obj)
{
    IVSHMEM_COMMON(obj)->kind = IVSHMEM_KIND_PLAIN;
}

static void ivshmem_plain_class_init(ObjectClass *oc, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(oc);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(oc);

    k->revision = 1;
    dc->vmsd = &ivshmem_plain_vmstate;
    device_class_set_props(dc, ivshmem_plain_properties);
    dc->desc = "Inter-VM shared memory";
    object_class_property_set_description(oc, "memdev",
        "host memory backend (share=on) holding the shared memory");
    object_class_property_set_description(oc, "master",
                                          ivshmem_descr_plain_master);
}

/* ivshmem-doorbell */

static const Property ivshmem_doorbell_properties[] = {
    DEFINE_PROP_CHR("chardev", IvshmemState, server),
    DEFINE_PROP_UINT32("vectors", IvshmemState, vectors, 1),
    DEFINE_PROP_BOOL("ioeventfd", IvshmemState, ioeventfd, true),
    DEFINE_PROP_UINT32("x-ioeventfd-budget", IvshmemState, ioeventfd_budget,
                       IVSHMEM_IOEVENTFD_BUDGET),
    DEFINE_PROP_ON_OFF_AUTO("master", IvshmemState, master_opt,
                            ON_OFF_AUTO_OFF),
    DEFINE_PROP_BOOL("presence", IvshmemState, presence, false),
};

static void ivshmem_doorbell_init(Object *obj)
{
    IVSHMEM_COMMON(obj)->kind = IVSHMEM_KIND_DOORBELL;
}

static void ivshmem_doorbell_class_init(ObjectClass *oc, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(oc);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(oc);

    k->revision = 1;
    dc->vmsd = &ivshmem_doorbell_vmstate;
    device_class_set_props(dc, ivshmem_doorbell_properties);
    dc->desc = "Inter-VM shared memory with doorbell interrupts";
    object_class_property_set_description(oc, "chardev",
                                          ivshmem_descr_chardev);
    object_class_property_set_description(oc, "vectors",
                                          ivshmem_descr_vectors);
    object_class_property_set_description(oc, "ioeventfd",
                                          ivshmem_descr_ioeventfd);
    object_class_property_set_description(oc, "x-ioeventfd-budget",
                                          ivshmem_descr_ioeventfd_budget);
    object_class_property_set_description(oc, "master",
                                          ivshmem_descr_doorbell_master);
    object_class_property_set_description(oc, "presence",
                                          ivshmem_descr_presence);
}

/* ivshmem: the original interface, still generated by libvirt */

static const Property ivshmem_legacy_properties[] = {
    DEFINE_PROP_STRING("size", IvshmemState, size_str),
    DEFINE_PROP_STRING("shm", IvshmemState, shm_name),
    DEFINE_PROP_CHR("chardev", IvshmemState, server),
    DEFINE_PROP_BOOL("msi", IvshmemState, msi, true),
    DEFINE_PROP_UINT32("vectors", IvshmemState, vectors, 1),
    DEFINE_PROP_BOOL("ioeventfd", IvshmemState, ioeventfd, false),
    DEFINE_PROP_UINT32("x-ioeventfd-budget", IvshmemState, ioeventfd_budget,
                       IVSHMEM_IOEVENTFD_BUDGET),
    DEFINE_PROP_STRING("role", IvshmemState, role),
    DEFINE_PROP_BOOL("presence", IvshmemState, presence, false),
};

static void ivshmem_legacy_init(Object *obj)
{
    IvshmemState *s = IVSHMEM_COMMON(obj);

    s->kind = IVSHMEM_KIND_LEGACY;
    s->master_opt = ON_OFF_AUTO_OFF;    /* role=master sets master */
}

static void ivshmem_legacy_class_init(ObjectClass *oc, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(oc);
    PCIDeviceClass *k = PCI_DEVICE_CLASS(oc);

    k->revision = 0;
    dc->vmsd = &ivshmem_legacy_vmstate;
    device_class_set_props(dc, ivshmem_legacy_properties);
    dc->desc = "Inter-VM shared memory (legacy interface)";
    object_class_property_set_description(oc, "size",
        "size of the shared memory, a power of two with the -m suffixes "
        "(default 4M with shm=, the server's size with chardev=)");
    object_class_property_set_description(oc, "shm",
        "POSIX shared memory object name, created and sized when missing");
    object_class_property_set_description(oc, "chardev",
                                          ivshmem_descr_chardev);
    object_class_property_set_description(oc, "msi",
        "on: interrupts through MSI-X; off: INTx through IntrStatus");
    object_class_property_set_description(oc, "vectors",
                                          ivshmem_descr_vectors);
    object_class_property_set_description(oc, "ioeventfd",
                                          ivshmem_descr_ioeventfd);
    object_class_property_set_description(oc, "x-ioeventfd-budget",
                                          ivshmem_descr_ioeventfd_budget);
    object_class_property_set_description(oc, "role",
        "master: this peer owns the shared memory and migrates it; "
        "peer: migration is blocked while the device is present");
    object_class_property_set_description(oc, "presence",
                                          ivshmem_descr_presence);
}

static const TypeInfo ivshmem_types[] = {
    {
        /* what the three have in common: a conventional PCI device */
        .name = TYPE_IVSHMEM_COMMON,
        .abstract = true,
        .parent = TYPE_PCI_DEVICE,
        .interfaces = (InterfaceInfo[]) {
            { INTERFACE_CONVENTIONAL_PCI_DEVICE }, { }
        },
        .class_init = ivshmem_common_class_init,
        .instance_size = sizeof(IvshmemState),
    }, {
        .name = TYPE_IVSHMEM_PLAIN,
        .parent = TYPE_IVSHMEM_COMMON,
        .instance_init = ivshmem_plain_init,
        .class_init = ivshmem_plain_class_init,
    }, {
        .name = TYPE_IVSHMEM_DOORBELL,
        .parent = TYPE_IVSHMEM_COMMON,
        .instance_init = ivshmem_doorbell_init,
        .class_init = ivshmem_doorbell_class_init,
    }, {
        .name = TYPE_IVSHMEM,
        .parent = TYPE_IVSHMEM_COMMON,
        .instance_init = ivshmem_legacy_init,
        .class_init = ivshmem_legacy_class_init,
    },
};

DEFINE_TYPES(ivshmem_types)
