/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * ivshmem-guest: exercise an ivshmem device from inside a Linux guest.
 *
 * Access paths, chosen with -d (default: the first one found):
 *   /dev/ivshmemN             our guest driver: MSI-X or INTx doorbells
 *   /dev/uioN                 uio_pci_generic: INTx, registers and memory
 *                             through sysfs
 *   /sys/bus/pci/devices/BDF  stock sysfs resource mmap, no interrupts
 */

#define _GNU_SOURCE             /* pthread_timedjoin_np */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../driver/ivshmem-uapi.h"

#define MAX_VECTORS 64
#define SLOT_DATA 56
#define DEFAULT_SLOT_OFFSET 0x10000
#define HOLD_LEN 4096
#define REG_INTR_MASK   0x00
#define REG_INTR_STATUS 0x04
#define REG_IVPOSITION  0x08
#define REG_DOORBELL    0x0c

enum AccessMode { MODE_DRIVER, MODE_UIO, MODE_SYSFS };

typedef struct Device {
    enum AccessMode mode;
    char path[PATH_MAX];
    int fd;                         /* driver or uio file */
    volatile uint32_t *regs;        /* BAR0, sysfs and uio modes */
    volatile uint8_t *shm;
    uint64_t size;
    unsigned nvectors;
    int vector_fd[MAX_VECTORS];     /* driver mode: one file per vector */
    unsigned irq_mode;              /* IVSHMEM_IRQ_* */
    unsigned cache_mode;            /* IVSHMEM_CACHE_* of the mapping */
    unsigned cache_requested;       /* IVSHMEM_CACHE_* asked for */
    int config_fd;                  /* uio mode: PCI config space */
} Device;

/* One direction of a ping-pong exchange, in the shared memory. */
typedef struct Slot {
    /* volatile: the peer changes these behind the compiler's back */
    volatile uint32_t seq;
    /* volatile: see above */
    volatile uint32_t vector;
    /* volatile: see above */
    volatile uint8_t data[SLOT_DATA];
} Slot;

static unsigned long slot_offset = DEFAULT_SLOT_OFFSET;
static bool print_raw;              /* -r: every sample after the summary */
static bool fast_path;              /* -F: see usage() */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("ivshmem-guest: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void *map_file(const char *path, size_t *size)
{
    struct stat st;
    void *p;
    int fd;

    fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) {
        die("open %s: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) < 0 || st.st_size <= 0) {
        die("cannot size %s", path);
    }
    p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        die("mmap %s: %s", path, strerror(errno));
    }
    close(fd);
    *size = st.st_size;
    return p;
}

static void map_sysfs_bars(Device *d, const char *pcidir)
{
    char path[PATH_MAX + 32];
    size_t size;
    FILE *f;

    snprintf(path, sizeof(path), "%s/enable", pcidir);
    f = fopen(path, "w");
    if (f) {
        fputs("1", f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/resource0", pcidir);
    d->regs = map_file(path, &size);
    snprintf(path, sizeof(path), "%s/resource2", pcidir);
    d->shm = map_file(path, &size);
    d->size = size;
    d->cache_mode = IVSHMEM_CACHE_UC;   /* sysfs resource2 is uncached */
}

static bool is_ivshmem(const char *pcidir)
{
    char path[PATH_MAX + 16], buf[32];
    bool ok = true;
    FILE *f;

    snprintf(path, sizeof(path), "%s/vendor", pcidir);
    f = fopen(path, "r");
    ok = f && fgets(buf, sizeof(buf), f) && !strncmp(buf, "0x1af4", 6);
    if (f) {
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/device", pcidir);
    f = fopen(path, "r");
    ok = ok && f && fgets(buf, sizeof(buf), f) && !strncmp(buf, "0x1110", 6);
    if (f) {
        fclose(f);
    }
    return ok;
}

/* Find the PCI directory of the first ivshmem device, or of /dev/uioN. */
static bool find_pci_dir(const char *uio, char *out, size_t len)
{
    const char *base = "/sys/bus/pci/devices";
    struct dirent *de;
    char path[PATH_MAX];
    DIR *dir;

    if (uio) {
        snprintf(path, sizeof(path), "/sys/class/uio/%s/device", uio);
        return realpath(path, out) && is_ivshmem(out);
    }
    dir = opendir(base);
    if (!dir) {
        return false;
    }
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(out, len, "%s/%s", base, de->d_name);
        if (is_ivshmem(out)) {
            closedir(dir);
            return true;
        }
    }
    closedir(dir);
    return false;
}

static void open_driver(Device *d)
{
    struct ivshmem_info info;
    unsigned i;

    d->fd = open(d->path, O_RDWR);
    if (d->fd < 0 || ioctl(d->fd, IVSHMEM_IOCTL_INFO, &info) < 0) {
        die("%s: %s", d->path, strerror(errno));
    }
    d->size = info.region_size;
    d->nvectors = info.vectors > MAX_VECTORS ? MAX_VECTORS : info.vectors;
    d->irq_mode = info.irq_mode;
    d->cache_mode = info.cache_mode;
    d->cache_requested = info.version >= 2 ? info.cache_requested
                                           : info.cache_mode;
    d->shm = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                  d->fd, 0);
    if (d->shm == MAP_FAILED) {
        die("mmap %s: %s", d->path, strerror(errno));
    }
    for (i = 0; i < d->nvectors; i++) {
        struct ivshmem_bind bind = { .vector = i };

        d->vector_fd[i] = open(d->path, O_RDWR);
        if (d->vector_fd[i] < 0 ||
            ioctl(d->vector_fd[i], IVSHMEM_IOCTL_BIND, &bind) < 0) {
            die("bind vector %u: %s", i, strerror(errno));
        }
    }
}

/*
 * Re-enable INTx after uio_pci_generic masked it in its handler.  That
 * driver has no irqcontrol: clear Interrupt Disable (bit 10) of the PCI
 * command register through sysfs config.
 */
static void uio_unmask(Device *d)
{
    uint32_t one = 1;
    uint16_t cmd;

    if (write(d->fd, &one, sizeof(one)) == sizeof(one)) {
        return;
    }
    if (errno != ENOSYS && errno != EINVAL) {
        die("enable INTx on %s: %s", d->path, strerror(errno));
    }
    if (pread(d->config_fd, &cmd, 2, 4) != 2) {
        die("read PCI command: %s", strerror(errno));
    }
    cmd &= ~(1u << 10);
    if (pwrite(d->config_fd, &cmd, 2, 4) != 2) {
        die("write PCI command: %s", strerror(errno));
    }
}

static void open_uio(Device *d, const char *pcidir)
{
    char path[PATH_MAX + 16];

    map_sysfs_bars(d, pcidir);
    d->fd = open(d->path, O_RDWR);
    snprintf(path, sizeof(path), "%s/config", pcidir);
    d->config_fd = open(path, O_RDWR);
    if (d->fd < 0 || d->config_fd < 0) {
        die("open %s: %s", d->fd < 0 ? d->path : path, strerror(errno));
    }
    d->nvectors = 1;
    d->irq_mode = IVSHMEM_IRQ_INTX;
    d->regs[REG_INTR_MASK / 4] = 1;
    (void)d->regs[REG_INTR_STATUS / 4];
    uio_unmask(d);
}

static void open_device(Device *d, const char *path)
{
    char pcidir[PATH_MAX];
    DIR *dir;

    memset(d, 0, sizeof(*d));
    d->fd = -1;
    if (!path) {
        if (access("/dev/ivshmem0", F_OK) == 0) {
            path = "/dev/ivshmem0";
        } else if (find_pci_dir(NULL, pcidir, sizeof(pcidir))) {
            char uiodir[PATH_MAX + 8];
            struct dirent *de;

            snprintf(uiodir, sizeof(uiodir), "%s/uio", pcidir);
            dir = opendir(uiodir);
            while (dir && (de = readdir(dir))) {
                if (!strncmp(de->d_name, "uio", 3)) {
                    snprintf(d->path, sizeof(d->path), "/dev/%s",
                             de->d_name);
                    closedir(dir);
                    d->mode = MODE_UIO;
                    open_uio(d, pcidir);
                    return;
                }
            }
            if (dir) {
                closedir(dir);
            }
            path = pcidir;
        } else {
            die("no ivshmem device found");
        }
    }
    snprintf(d->path, sizeof(d->path), "%s", path);
    if (!strncmp(path, "/dev/uio", 8)) {
        d->mode = MODE_UIO;
        if (!find_pci_dir(path + 5, pcidir, sizeof(pcidir))) {
            die("%s is not an ivshmem device", path);
        }
        open_uio(d, pcidir);
    } else if (!strncmp(path, "/sys/", 5)) {
        d->mode = MODE_SYSFS;
        map_sysfs_bars(d, path);
    } else {
        d->mode = MODE_DRIVER;
        open_driver(d);
    }
}

static const char *mode_name(const Device *d)
{
    static const char *const names[] = { "driver", "uio", "sysfs" };

    return names[d->mode];
}

static uint32_t peer_id(Device *d)
{
    struct ivshmem_info info;

    if (d->mode == MODE_DRIVER) {
        if (ioctl(d->fd, IVSHMEM_IOCTL_INFO, &info) < 0) {
            die("info: %s", strerror(errno));
        }
        return info.ivposition;
    }
    return d->regs[REG_IVPOSITION / 4];
}

static void ring(Device *d, unsigned peer, unsigned vector)
{
    struct ivshmem_ring r = { .peer = peer, .vector = vector };

    __sync_synchronize();
    if (d->mode == MODE_DRIVER) {
        if (ioctl(d->fd, IVSHMEM_IOCTL_RING, &r) < 0) {
            die("ring: %s", strerror(errno));
        }
    } else {
        d->regs[REG_DOORBELL / 4] = (peer << 16) | vector;
    }
}

static void on_alarm(int sig)
{
    (void)sig;                      /* only interrupts read() */
}

/*
 * -F in driver mode: block in read() on the one vector expected, without
 * poll() first; a SIGALRM after timeout_ms interrupts it.
 */
static int wait_vector(Device *d, unsigned vector, int timeout_ms)
{
    struct sigaction sa = { .sa_handler = on_alarm };
    struct itimerval it = {
        .it_value = { timeout_ms / 1000, timeout_ms % 1000 * 1000 },
    };
    uint32_t count;
    ssize_t n;

    sigaction(SIGALRM, &sa, NULL);      /* no SA_RESTART */
    setitimer(ITIMER_REAL, &it, NULL);
    n = read(d->vector_fd[vector], &count, sizeof(count));
    memset(&it, 0, sizeof(it));
    setitimer(ITIMER_REAL, &it, NULL);
    if (n == sizeof(count)) {
        return vector;
    }
    if (n < 0 && errno == EINTR) {
        return -1;
    }
    die("read: %s", n < 0 ? strerror(errno) : "short read");
    return -1;
}

/* Wait for an interrupt; returns the vector, or -1 after timeout_ms. */
static int wait_interrupt(Device *d, int timeout_ms)
{
    struct pollfd pfd[MAX_VECTORS];
    uint32_t count;
    unsigned i, n;
    int ret;

    if (d->mode == MODE_SYSFS || !d->nvectors) {
        die("%s: this access path has no interrupts", d->path);
    }
    n = d->mode == MODE_DRIVER ? d->nvectors : 1;
    for (i = 0; i < n; i++) {
        pfd[i].fd = d->mode == MODE_DRIVER ? d->vector_fd[i] : d->fd;
        pfd[i].events = POLLIN;
    }
    do {
        ret = poll(pfd, n, timeout_ms);
    } while (ret < 0 && errno == EINTR);
    if (ret < 0) {
        die("poll: %s", strerror(errno));
    }
    if (ret == 0) {
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (pfd[i].revents & (POLLERR | POLLHUP)) {
            die("%s: device gone", d->path);
        }
        if (!(pfd[i].revents & POLLIN)) {
            continue;
        }
        if (read(pfd[i].fd, &count, sizeof(count)) != sizeof(count)) {
            die("read: %s", strerror(errno));
        }
        if (d->mode == MODE_UIO) {
            /* Ack the device (read clears), then re-enable INTx. */
            (void)d->regs[REG_INTR_STATUS / 4];
            uio_unmask(d);
        }
        return i;
    }
    return -1;
}

static uint32_t pattern_next(uint32_t *state)
{
    uint32_t x = *state;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

static uint32_t pattern_seed(uint32_t seed, unsigned long offset)
{
    uint32_t s = seed * 2654435761u ^ (uint32_t)(offset >> 2);

    return s ? s : 1;
}

static void check_range(Device *d, unsigned long off, unsigned long len)
{
    if (off > d->size || len > d->size - off || (off | len) & 3) {
        die("range 0x%lx+0x%lx outside the 0x%" PRIx64 " byte region "
            "or not 4-byte aligned", off, len, d->size);
    }
}

static int cmd_write(Device *d, unsigned long off, unsigned long len,
                     uint32_t seed)
{
    /* volatile: shared memory, every store must reach it */
    volatile uint32_t *p = (volatile uint32_t *)(d->shm + off);
    uint32_t state = pattern_seed(seed, off);
    unsigned long i;

    check_range(d, off, len);
    for (i = 0; i < len / 4; i++) {
        p[i] = pattern_next(&state);
    }
    __sync_synchronize();
    printf("write: offset=0x%lx len=%lu seed=%u\n", off, len, seed);
    return 0;
}

static int cmd_verify(Device *d, unsigned long off, unsigned long len,
                      uint32_t seed)
{
    /* volatile: shared memory, every load must read it */
    volatile uint32_t *p = (volatile uint32_t *)(d->shm + off);
    uint32_t state = pattern_seed(seed, off);
    unsigned long i, bad = 0, first = 0;

    check_range(d, off, len);
    for (i = 0; i < len / 4; i++) {
        if (p[i] != pattern_next(&state) && !bad++) {
            first = off + i * 4;
        }
    }
    if (bad) {
        printf("verify: FAIL %lu bad words, first at 0x%lx\n", bad, first);
        return 1;
    }
    printf("verify: ok offset=0x%lx len=%lu seed=%u\n", off, len, seed);
    return 0;
}

static int cmd_put(Device *d, unsigned long off, const char *text)
{
    size_t len = strlen(text) + 1;

    if (off > d->size || len > d->size - off) {
        die("message does not fit");
    }
    memcpy((void *)(d->shm + off), text, len);
    __sync_synchronize();
    return 0;
}

static int cmd_get(Device *d, unsigned long off)
{
    unsigned long i;

    for (i = off; i < d->size && d->shm[i]; i++) {
        putchar(d->shm[i]);
    }
    putchar('\n');
    return 0;
}

static const char *cache_mode_name(unsigned mode)
{
    static const char *const names[] = {
        "unknown", "uc", "wc", "wb", "uc-minus", "wt", "wp"
    };

    return names[mode > 6 ? 0 : mode];
}

static const char *cache_name(const Device *d)
{
    return cache_mode_name(d->cache_mode);
}

static int cmd_info(Device *d)
{
    static const char *const irq_names[] = { "none", "intx", "msix" };

    printf("mode=%s path=%s id=%u size=%" PRIu64 " vectors=%u irq=%s "
           "cache=%s requested=%s\n", mode_name(d), d->path, peer_id(d),
           d->size, d->nvectors, irq_names[d->irq_mode > 2 ? 0 : d->irq_mode],
           cache_name(d), cache_mode_name(d->cache_requested));
    return 0;
}

static void fill_slot(Slot *s, uint32_t seq, uint32_t salt)
{
    unsigned i;

    for (i = 0; i < SLOT_DATA; i++) {
        s->data[i] = (uint8_t)(seq * 31 + i * 7 + salt);
    }
}

static bool slot_ok(const Slot *s, uint32_t seq, uint32_t salt)
{
    unsigned i;

    for (i = 0; i < SLOT_DATA; i++) {
        if (s->data[i] != (uint8_t)(seq * 31 + i * 7 + salt)) {
            return false;
        }
    }
    return true;
}

static Slot *slot(Device *d, unsigned which)
{
    if (slot_offset + 2 * sizeof(Slot) > d->size) {
        die("slot offset 0x%lx outside the region", slot_offset);
    }
    return (Slot *)(d->shm + slot_offset + which * sizeof(Slot));
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void report_latency(const char *what, uint64_t *ns, unsigned n,
                           unsigned vectors)
{
    unsigned i;

    if (print_raw) {
        printf("%s-raw_us:", what);
        for (i = 0; i < n; i++) {
            printf(" %.1f", ns[i] / 1e3);
        }
        printf("\n");
    }
    qsort(ns, n, sizeof(*ns), compare_u64);
    printf("%s: count=%u vectors=%u verified=%u p50_us=%.1f p90_us=%.1f "
           "p99_us=%.1f max_us=%.1f min_us=%.1f\n", what, n, vectors, n,
           ns[n / 2] / 1e3, ns[n * 9 / 10] / 1e3, ns[n * 99 / 100] / 1e3,
           ns[n - 1] / 1e3, ns[0] / 1e3);
}

/* Initiator: ring the peer, wait for its answer, COUNT times. */
static int cmd_ping(Device *d, unsigned peer, unsigned count, int timeout_ms)
{
    Slot *out = slot(d, 0), *in = slot(d, 1);
    uint64_t *lat = calloc(count, sizeof(*lat));
    unsigned i, vectors = d->nvectors;

    if (!lat || !count) {
        die("bad count");
    }
    for (i = 0; i < count; i++) {
        uint32_t seq = i + 1, vector = i % vectors;
        uint64_t t0 = now_ns();
        int got;

        fill_slot(out, seq, 0);
        out->vector = vector;
        out->seq = seq;
        ring(d, peer, vector);
        got = fast_path && d->mode == MODE_DRIVER ?
              wait_vector(d, vector, timeout_ms) :
              wait_interrupt(d, timeout_ms);
        if (got < 0) {
            printf("ping: TIMEOUT peer=%u round=%u\n", peer, seq);
            return 2;
        }
        if (in->seq != seq || !slot_ok(in, seq, 0x5a) ||
            (d->mode == MODE_DRIVER && (unsigned)got != vector)) {
            printf("ping: BAD REPLY round=%u seq=%u vector=%d want=%u\n",
                   seq, in->seq, got, vector);
            return 1;
        }
        lat[i] = now_ns() - t0;
    }
    report_latency("ping", lat, count, vectors);
    return 0;
}

/* Responder: answer COUNT doorbells of the peer on the vector it used. */
static int cmd_pong(Device *d, unsigned peer, unsigned count, int timeout_ms)
{
    Slot *in = slot(d, 0), *out = slot(d, 1);
    unsigned i;

    in->seq = 0;
    out->seq = 0;
    printf("pong: ready id=%u\n", peer_id(d));
    for (i = 0; i < count; i++) {
        uint32_t seq = i + 1;
        int got = fast_path && d->mode == MODE_DRIVER && d->nvectors == 1 ?
                  wait_vector(d, 0, timeout_ms) :
                  wait_interrupt(d, timeout_ms);

        if (got < 0) {
            printf("pong: TIMEOUT peer=%u round=%u\n", peer, seq);
            return 2;
        }
        if (in->seq != seq || !slot_ok(in, seq, 0) ||
            (d->mode == MODE_DRIVER && (unsigned)got != in->vector)) {
            printf("pong: BAD REQUEST round=%u seq=%u vector=%d want=%u\n",
                   seq, in->seq, got, in->vector);
            return 1;
        }
        fill_slot(out, seq, 0x5a);
        out->seq = seq;
        ring(d, peer, got);
    }
    printf("pong: count=%u verified=%u\n", count, count);
    return 0;
}

/* volatile: WORD is in shared memory, written by the peer */
static bool spin_until(volatile uint32_t *word, uint32_t want, int timeout_ms)
{
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
    unsigned spins = 0;

    while (*word != want) {
        if (!(++spins & 1023) && now_ns() > deadline) {
            return false;
        }
    }
    return true;
}

/* Ping-pong through shared memory only: no interrupts needed. */
static int cmd_spin(Device *d, bool initiator, unsigned count,
                    int timeout_ms)
{
    Slot *ping = slot(d, 0), *pong = slot(d, 1);
    uint64_t *lat = calloc(count, sizeof(*lat));
    unsigned i;

    if (!lat || !count) {
        die("bad count");
    }
    if (!initiator) {
        ping->seq = 0;
        pong->seq = 0;
        printf("spin-pong: ready\n");
    }
    for (i = 0; i < count; i++) {
        uint32_t seq = i + 1;
        uint64_t t0 = now_ns();

        if (initiator) {
            fill_slot(ping, seq, 1);
            __sync_synchronize();
            ping->seq = seq;
            if (!spin_until(&pong->seq, seq, timeout_ms)) {
                printf("spin-ping: TIMEOUT round=%u\n", seq);
                return 2;
            }
            if (!slot_ok(pong, seq, 2)) {
                printf("spin-ping: BAD REPLY round=%u\n", seq);
                return 1;
            }
        } else {
            if (!spin_until(&ping->seq, seq, timeout_ms)) {
                printf("spin-pong: TIMEOUT round=%u\n", seq);
                return 2;
            }
            if (!slot_ok(ping, seq, 1)) {
                printf("spin-pong: BAD REQUEST round=%u\n", seq);
                return 1;
            }
            fill_slot(pong, seq, 2);
            __sync_synchronize();
            pong->seq = seq;
        }
        lat[i] = now_ns() - t0;
    }
    if (initiator) {
        report_latency("spin-ping", lat, count, 0);
    } else {
        printf("spin-pong: count=%u verified=%u\n", count, count);
    }
    return 0;
}

/*
 * memcpy bandwidth into BAR2 and back.  With a SEED, the buffer holds the
 * pattern of "write 0 CHUNK SEED", so that a peer can check what arrived
 * with "verify 0 CHUNK SEED", and the read-back is checked here.
 */
static int cmd_bandwidth(Device *d, unsigned long total_mib, bool seeded,
                         uint32_t seed)
{
    size_t chunk = d->size < (1u << 20) ? d->size : (1u << 20);
    unsigned long rounds = total_mib * (1u << 20) / chunk, i;
    char *buf = malloc(chunk);
    uint32_t *words = (uint32_t *)buf, state = pattern_seed(seed, 0);
    uint64_t t0, wr_ns, rd_ns;

    if (!buf || !rounds) {
        die("bad size");
    }
    memset(buf, 0xa5, chunk);
    for (i = 0; seeded && i < chunk / 4; i++) {
        words[i] = pattern_next(&state);
    }
    t0 = now_ns();
    for (i = 0; i < rounds; i++) {
        memcpy((void *)d->shm, buf, chunk);
    }
    wr_ns = now_ns() - t0;
    t0 = now_ns();
    for (i = 0; i < rounds; i++) {
        memcpy(buf, (void *)d->shm, chunk);
    }
    rd_ns = now_ns() - t0;
    printf("bandwidth: bytes=%lu write_MBps=%.1f read_MBps=%.1f",
           rounds * chunk, rounds * chunk * 1e3 / wr_ns,
           rounds * chunk * 1e3 / rd_ns);
    if (seeded) {
        state = pattern_seed(seed, 0);
        for (i = 0; i < chunk / 4 && words[i] == pattern_next(&state); i++) {
            continue;
        }
        printf(" chunk=%zu seed=%u readback=%s", chunk, seed,
               i == chunk / 4 ? "ok" : "FAIL");
    }
    printf(" cache=%s requested=%s\n", cache_name(d),
           cache_mode_name(d->cache_requested));
    return 0;
}

/* How the device answers a private and a read-only shared mapping. */
static int cmd_mapcheck(Device *d)
{
    static const struct {
        const char *name;
        int open_flags, prot, flags;
    } tries[] = {
        { "private", O_RDWR, PROT_READ | PROT_WRITE, MAP_PRIVATE },
        { "shared-readonly", O_RDONLY, PROT_READ, MAP_SHARED },
    };
    unsigned i;

    printf("mapcheck:");
    for (i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        int fd = open(d->path, tries[i].open_flags);
        void *p = fd < 0 ? MAP_FAILED :
                  mmap(NULL, d->size, tries[i].prot, tries[i].flags, fd, 0);

        printf(" %s=%s", tries[i].name,
               p != MAP_FAILED ? "ok" : strerror(errno));
        if (p != MAP_FAILED) {
            munmap(p, d->size);
        }
        if (fd >= 0) {
            close(fd);
        }
    }
    printf("\n");
    return 0;
}

typedef struct BlockedRead {
    int fd;
    const char *how;                /* read, poll or epoll */
    int timeout_ms;
    volatile pid_t tid;             /* set by the thread */
    ssize_t n;
    uint32_t count;
    int err;
    int events;                     /* poll/epoll: what woke it */
    uint64_t done_ns;               /* when the wait returned */
} BlockedRead;

/* Block on R->fd in read(), poll() or epoll_wait(), then read. */
static void *blocked_read(void *opaque)
{
    BlockedRead *r = opaque;
    struct pollfd pfd = { .fd = r->fd, .events = POLLIN };
    struct epoll_event ev = { .events = EPOLLIN };
    int ep = -1, ret = 1;

    if (!strcmp(r->how, "epoll")) {
        /* Registered once, before the BIND. */
        ep = epoll_create1(0);
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, r->fd, &ev) < 0) {
            r->n = -1;
            r->err = errno;
            return NULL;
        }
    }
    r->tid = syscall(SYS_gettid);
    if (!strcmp(r->how, "poll")) {
        ret = poll(&pfd, 1, r->timeout_ms);
        r->events = pfd.revents;
    } else if (ep >= 0) {
        ret = epoll_wait(ep, &ev, 1, r->timeout_ms);
        r->events = ret > 0 ? (int)ev.events : 0;
        close(ep);
    }
    r->done_ns = now_ns();
    if (ret <= 0) {
        r->n = -1;
        r->err = ret ? errno : ETIMEDOUT;
        return NULL;
    }
    r->n = read(r->fd, &r->count, sizeof(r->count));
    r->err = errno;
    if (!strcmp(r->how, "read")) {
        r->done_ns = now_ns();
    }
    return NULL;
}

/* Whether thread TID sleeps (state S in /proc/self/task/TID/stat). */
static bool thread_sleeps(pid_t tid)
{
    char path[64], buf[256], *p;
    bool sleeps = false;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    f = fopen(path, "r");
    if (!f) {
        return false;
    }
    if (fgets(buf, sizeof(buf), f)) {
        p = strrchr(buf, ')');
        sleeps = p && p[1] == ' ' && p[2] == 'S';
    }
    fclose(f);
    return sleeps;
}

/*
 * Driver mode: a thread blocks in read() on one open file, bound to
 * vector 0; once it sleeps, this thread binds the same file to VECTOR.
 * The reader must follow and return that vector's next interrupt.
 */
static int cmd_rebind_wait(Device *d, unsigned vector, int timeout_ms,
                           const char *how)
{
    struct ivshmem_bind bind = { .vector = vector };
    BlockedRead r = { .fd = -1, .how = how, .timeout_ms = timeout_ms };
    struct timespec ts;
    pthread_t thread;
    uint64_t rebound;
    unsigned i;

    if (d->mode != MODE_DRIVER || vector >= d->nvectors) {
        die("rebind-wait needs our driver and a vector below %u",
            d->nvectors);
    }
    if (strcmp(how, "read") && strcmp(how, "poll") && strcmp(how, "epoll")) {
        die("rebind-wait: %s: use read, poll or epoll", how);
    }
    r.fd = open(d->path, O_RDWR);
    if (r.fd < 0 || pthread_create(&thread, NULL, blocked_read, &r)) {
        die("%s: %s", d->path, strerror(errno));
    }
    for (i = 0; i < 1000 && !(r.tid && thread_sleeps(r.tid)); i++) {
        usleep(10000);
    }
    usleep(100000);
    if (ioctl(r.fd, IVSHMEM_IOCTL_BIND, &bind) < 0) {
        die("bind: %s", strerror(errno));
    }
    /*
     * A BIND may wake the waiter (to re-check); have it asleep again
     * before the new vector fires, or a late re-check would find the
     * interrupt without being woken by it.
     */
    usleep(100000);
    for (i = 0; i < 1000 && !thread_sleeps(r.tid); i++) {
        usleep(10000);
    }
    usleep(200000);
    rebound = now_ns();
    printf("rebind-wait: rebound to %u, then the %s waiter slept: %s\n",
           vector, how, thread_sleeps(r.tid) ? "yes" : "no");
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000 + 5;
    if (pthread_timedjoin_np(thread, NULL, &ts)) {
        printf("rebind-wait: timeout\n");
        return 2;
    }
    if (r.n != sizeof(r.count)) {
        printf("rebind-wait: %s failed: %s\n", how, strerror(r.err));
        return 1;
    }
    /*
     * after_ms tells a wake-up by the interrupt from a poll() that only
     * found it when its timeout expired.
     */
    printf("rebind-wait: woke count=%u events=0x%x after_ms=%" PRIu64 "\n",
           r.count, r.events, (r.done_ns - rebound) / 1000000);
    return 0;
}

static sigjmp_buf sigbus_jmp;

static void on_sigbus(int sig)
{
    (void)sig;
    siglongjmp(sigbus_jmp, 1);
}

/*
 * Keep the device open and mapped until TRIGGER exists, then store the
 * pattern of SEED into HOLD_LEN bytes at OFF: what a process that mapped
 * the region sees when the device goes away under it.  Prints
 * "hold: result=sigbus word=N" if the Nth store faulted, else
 * "hold: result=written".
 */
static int cmd_hold(Device *d, unsigned long off, uint32_t seed,
                    const char *trigger, int timeout_ms)
{
    /* volatile: shared memory, every store must reach it */
    volatile uint32_t *p = (volatile uint32_t *)(d->shm + off);
    struct sigaction sa = { .sa_handler = on_sigbus };
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
    uint32_t state = pattern_seed(seed, off), words[HOLD_LEN / 4];
    /* volatile: read after siglongjmp */
    volatile unsigned long i = 0;

    check_range(d, off, HOLD_LEN);
    for (i = 0; i < HOLD_LEN / 4; i++) {
        words[i] = pattern_next(&state);
    }
    printf("hold: ready\n");
    while (access(trigger, F_OK) != 0) {
        if (now_ns() > deadline) {
            printf("hold: timeout\n");
            return 2;
        }
        usleep(10000);
    }
    sigaction(SIGBUS, &sa, NULL);
    i = 0;
    if (sigsetjmp(sigbus_jmp, 1)) {
        printf("hold: result=sigbus word=%lu\n", i);
        return 0;
    }
    for (i = 0; i < HOLD_LEN / 4; i++) {
        p[i] = words[i];
    }
    __sync_synchronize();
    printf("hold: result=written len=%d\n", HOLD_LEN);
    return 0;
}

/*
 * Like hold, but first store the pattern of SEED0 at OFF through the
 * mapping, so that its pages are mapped before the device goes away: what
 * revokes them then is the driver's zap, not its fault handler.
 */
static int cmd_hold_touched(Device *d, unsigned long off, uint32_t seed0,
                            uint32_t seed, const char *trigger,
                            int timeout_ms)
{
    /* volatile: shared memory, every store must reach it */
    volatile uint32_t *p = (volatile uint32_t *)(d->shm + off);
    uint32_t state = pattern_seed(seed0, off);
    unsigned long i;

    check_range(d, off, HOLD_LEN);
    for (i = 0; i < HOLD_LEN / 4; i++) {
        p[i] = pattern_next(&state);
    }
    __sync_synchronize();
    printf("hold: touched\n");
    return cmd_hold(d, off, seed, trigger, timeout_ms);
}

static const char *errname(int ret)
{
    static char buf[64];

    if (ret >= 0) {
        return "ok";
    }
    switch (errno) {
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENOTTY: return "ENOTTY";
    case ENOENT: return "ENOENT";
    case ENXIO: return "ENXIO";
    case EAGAIN: return "EAGAIN";
    default:
        snprintf(buf, sizeof(buf), "errno%d", errno);
        return buf;
    }
}

/*
 * Interface edges: the ioctl numbers of interface version 1 (type 0xBA),
 * and doorbell vectors the device cannot carry (above 255).
 */
static int cmd_abi(Device *d)
{
    struct ivshmem_info info;
    struct ivshmem_ring r = { .peer = peer_id(d) };
    struct ivshmem_bind b = { .vector = 0 };
    unsigned v[] = { 255, 256, 511, 65535 };
    unsigned i;

    printf("abi: magic=0x%x", IVSHMEM_IOCTL_MAGIC);
    printf(" old-info=%s", errname(ioctl(d->fd,
           _IOR(0xBA, 0x00, struct ivshmem_info), &info)));
    printf(" old-ring=%s", errname(ioctl(d->fd,
           _IOW(0xBA, 0x01, struct ivshmem_ring), &r)));
    printf(" old-bind=%s", errname(ioctl(d->fd,
           _IOW(0xBA, 0x02, struct ivshmem_bind), &b)));
    /* Rings our own, unconnected vector numbers: the device ignores them */
    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        r.vector = v[i];
        printf(" ring%u=%s", v[i],
               errname(ioctl(d->fd, IVSHMEM_IOCTL_RING, &r)));
    }
    printf("\n");
    return 0;
}

static sigjmp_buf gone_jmp;

static void on_gone_sigbus(int sig)
{
    (void)sig;
    siglongjmp(gone_jmp, 1);
}

/*
 * With the device open, mapped (a page touched) and a second file bound
 * to the last vector, wait until TRIGGER exists (the device is removed
 * meanwhile), then call everything the file offers and print what each
 * call returned.
 */
static int cmd_gone(Device *d, const char *trigger, int timeout_ms)
{
    struct sigaction sa = { .sa_handler = on_gone_sigbus };
    uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000;
    struct ivshmem_info info;
    struct ivshmem_ring r = { 0 };
    struct ivshmem_bind b = { 0 };
    struct epoll_event ev = { .events = EPOLLIN };
    struct pollfd pfd = { .fd = d->fd, .events = POLLIN };
    /* volatile: read after siglongjmp */
    volatile int faulted = 0;
    uint32_t count;
    int fd2, ep, ret, flags;
    void *p;

    d->shm[0] = d->shm[0];
    fd2 = d->nvectors ? d->vector_fd[d->nvectors - 1] : d->fd;
    printf("gone: ready\n");
    while (access(trigger, F_OK) != 0) {
        if (now_ns() > deadline) {
            printf("gone: timeout\n");
            return 2;
        }
        usleep(10000);
    }
    printf("gone:");
    printf(" info=%s", errname(ioctl(d->fd, IVSHMEM_IOCTL_INFO, &info)));
    printf(" ring=%s", errname(ioctl(d->fd, IVSHMEM_IOCTL_RING, &r)));
    printf(" bind=%s", errname(ioctl(d->fd, IVSHMEM_IOCTL_BIND, &b)));
    printf(" unknown=%s", errname(ioctl(d->fd, _IO(IVSHMEM_IOCTL_MAGIC,
                                                    0x0f))));
    printf(" read=%s", errname(read(fd2, &count, sizeof(count))));
    flags = fcntl(fd2, F_GETFL);
    fcntl(fd2, F_SETFL, flags | O_NONBLOCK);
    printf(" read-nonblock=%s", errname(read(fd2, &count, sizeof(count))));
    ret = poll(&pfd, 1, 5000);
    printf(" poll=%d/0x%x", ret, ret > 0 ? pfd.revents : 0);
    ep = epoll_create1(0);
    ret = epoll_ctl(ep, EPOLL_CTL_ADD, fd2, &ev);
    ret = ret < 0 ? -1 : epoll_wait(ep, &ev, 1, 5000);
    printf(" epoll=%d/0x%x", ret, ret > 0 ? ev.events : 0);
    close(ep);
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, d->fd, 0);
    printf(" mmap=%s", errname(p == MAP_FAILED ? -1 : 0));
    sigaction(SIGBUS, &sa, NULL);
    if (!sigsetjmp(gone_jmp, 1)) {
        d->shm[HOLD_LEN] = 1;           /* a page never touched */
        d->shm[0] = 1;                  /* the page touched before */
    } else {
        faulted = 1;
    }
    printf(" store=%s", faulted ? "sigbus" : "written");
    ret = open(d->path, O_RDWR);
    printf(" open=%s\n", errname(ret));
    return 0;
}

/* What the racers saw, in memory shared by them. */
typedef struct RaceStats {
    unsigned long ops;              /* successful opens */
    unsigned long open_failed;      /* no node, or ENODEV */
    unsigned long gone;             /* ENODEV from ioctl, read or mmap */
    unsigned long sigbus;           /* faults refused */
} RaceStats;

/* One racer: loop on PATH until DEADLINE, counting into ST. */
static void race_one(const char *path, int which, uint64_t deadline,
                     RaceStats *st)
{
    struct sigaction sa = { .sa_handler = on_gone_sigbus };
    struct ivshmem_info info;
    uint32_t count;

    sigaction(SIGBUS, &sa, NULL);
    while (now_ns() < deadline) {
        int fd = open(path, O_RDWR | (which == 2 ? O_NONBLOCK : 0));
        volatile uint8_t *p;

        if (fd < 0) {
            __sync_fetch_and_add(&st->open_failed, 1);
            usleep(1000);
            continue;
        }
        __sync_fetch_and_add(&st->ops, 1);
        if (which == 0) {
            if (ioctl(fd, IVSHMEM_IOCTL_INFO, &info) < 0 &&
                errno == ENODEV) {
                __sync_fetch_and_add(&st->gone, 1);
            }
        } else if (which == 1) {
            p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                     0);
            if (p == MAP_FAILED) {
                __sync_fetch_and_add(&st->gone, errno == ENODEV);
            } else {
                if (!sigsetjmp(gone_jmp, 1)) {
                    unsigned i;

                    for (i = 0; i < 16; i++) {
                        p[i << 12] = p[i << 12];
                    }
                } else {
                    __sync_fetch_and_add(&st->sigbus, 1);
                }
                munmap((void *)p, 1 << 16);
            }
        } else {
            struct pollfd pfd = { .fd = fd, .events = POLLIN };

            if (read(fd, &count, sizeof(count)) < 0) {
                if (errno == ENODEV) {
                    __sync_fetch_and_add(&st->gone, 1);
                } else if (errno == EAGAIN) {
                    poll(&pfd, 1, 2);
                }
            }
        }
        close(fd);
    }
}

/*
 * Race open+INFO, open+mmap+fault and open+read+poll against removal:
 * three processes loop on PATH for MS milliseconds while the caller
 * takes the device away and brings it back.  Prints what they saw.
 */
static int cmd_race(const char *path, unsigned long ms)
{
    uint64_t deadline = now_ns() + (uint64_t)ms * 1000000;
    RaceStats *st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid[3];
    int i, status, failed = 0;

    if (st == MAP_FAILED) {
        die("mmap: %s", strerror(errno));
    }
    for (i = 0; i < 3; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            race_one(path, i, deadline, st);
            _exit(0);
        }
    }
    for (i = 0; i < 3; i++) {
        if (waitpid(pid[i], &status, 0) < 0 || !WIFEXITED(status) ||
            WEXITSTATUS(status)) {
            failed++;
        }
    }
    printf("race: %s opens=%lu open_failed=%lu enodev=%lu sigbus=%lu\n",
           failed ? "a racer died" : "done", st->ops, st->open_failed,
           st->gone, st->sigbus);
    return failed ? 1 : 0;
}

static int cmd_wait(Device *d, int timeout_ms)
{
    int v;

    printf("wait: ready id=%u\n", peer_id(d));
    v = wait_interrupt(d, timeout_ms);

    if (v < 0) {
        printf("wait: timeout\n");
        return 2;
    }
    printf("wait: vector=%d\n", v);
    return 0;
}

/*
 * Peer presence (driver mode, a device with presence=on): a snapshot,
 * printed as "WHAT: generation=G state=S own_vectors=N count=C
 * list=ID:VECTORS,..." (list: the first 64 by ID).
 */
static struct ivshmem_peers get_peers(Device *d, const char *what,
                                      bool print)
{
    static struct ivshmem_peer list[64];
    struct ivshmem_peers p = {
        .max = 64, .entries = (uintptr_t)list,
    };
    unsigned i;

    if (d->mode != MODE_DRIVER) {
        die("%s needs our driver", what);
    }
    if (ioctl(d->fd, IVSHMEM_IOCTL_PEERS, &p) < 0) {
        die("%s: %s", what, errno == EOPNOTSUPP ?
            "the device has no peer presence (presence=on)" :
            strerror(errno));
    }
    if (print) {
        printf("%s: generation=%u state=0x%x own_vectors=%u count=%u list=",
               what, p.generation, p.state, p.own_vectors, p.count);
        for (i = 0; i < p.count && i < 64; i++) {
            printf("%s%u:%u", i ? "," : "", list[i].peer, list[i].vectors);
        }
        printf("\n");
    }
    return p;
}

/*
 * Wait up to TIMEOUT_MS for a presence change: EPOLLPRI, and a Generation
 * other than the one read when armed (an event the driver took before
 * arming wakes poll too), then print the new snapshot; exit 2 on timeout.
 * "presence-wait: ready" once armed.
 */
static int cmd_presence_wait(Device *d, int timeout_ms)
{
    struct pollfd pfd = { .fd = d->fd, .events = POLLPRI };
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000;
    uint32_t armed = get_peers(d, "before", true).generation;
    uint64_t now;
    int n;

    printf("presence-wait: ready\n");
    for (;;) {
        now = now_ns();
        n = now < end ? poll(&pfd, 1, (end - now) / 1000000 + 1) : 0;
        if (n < 0) {
            die("poll: %s", strerror(errno));
        }
        if (n == 0 || !(pfd.revents & POLLPRI)) {
            printf("presence-wait: TIMEOUT revents=0x%x\n", pfd.revents);
            return 2;
        }
        if (get_peers(d, "event", false).generation != armed) {
            break;
        }
    }
    printf("presence-wait: changed\n");
    get_peers(d, "after", true);
    return 0;
}

static void usage(void)
{
    fputs("usage: ivshmem-guest [-d DEVICE] [-o SLOT_OFFSET] [-r] COMMAND "
          "ARGS\n"
          "  info                         peer ID, region size, vectors\n"
          "  write OFFSET LEN SEED        fill with a pseudo-random pattern\n"
          "  verify OFFSET LEN SEED       check that pattern\n"
          "  put OFFSET TEXT | get OFFSET store / print a string\n"
          "  ring PEER VECTOR             ring a peer's doorbell\n"
          "  wait TIMEOUT_MS              wait for one interrupt\n"
          "  ping PEER COUNT [TIMEOUT_MS] doorbell ping-pong, initiator\n"
          "  pong PEER COUNT [TIMEOUT_MS] doorbell ping-pong, responder\n"
          "  spin-ping COUNT | spin-pong COUNT   polling ping-pong\n"
          "  bandwidth [MIB [SEED]]       memcpy bandwidth to/from BAR2; with\n"
          "                               SEED, data for verify 0 CHUNK SEED\n"
          "  flood PEER VECTOR SECONDS    ring a doorbell in a tight loop\n"
          "  count VECTOR SECONDS         count a vector's interrupts\n"
          "  mapcheck                     try a private and a read-only map\n"
          "  rebind-wait VECTOR TIMEOUT_MS [read|poll|epoll]  a thread\n"
          "                               blocks in read(), poll() or\n"
          "                               epoll_wait() on vector 0, then its\n"
          "                               file is bound to VECTOR: it must\n"
          "                               follow\n"
          "  hold-touched OFF SEED0 SEED FILE TIMEOUT_MS  hold, after\n"
          "                               storing the pattern of SEED0 at OFF\n"
          "  peers                        peer presence snapshot\n"
          "  presence-wait TIMEOUT_MS     wait for a presence change\n"
          "  abi                          try the old ioctl numbers and\n"
          "                               doorbell vectors 255..65535\n"
          "  gone FILE TIMEOUT_MS         keep the device open and mapped\n"
          "                               until FILE exists, then call every\n"
          "                               file operation and print results\n"
          "  race MS                      open/ioctl, open/mmap/fault and\n"
          "                               open/read/poll in 3 processes for\n"
          "                               MS ms (the device may come and go)\n"
          "  hold OFF SEED FILE TIMEOUT_MS  keep the region mapped until FILE\n"
          "                               exists, then write 4 KiB at OFF and\n"
          "                               report whether that raised SIGBUS\n"
          "-r: print every ping/spin-ping sample (us) before the summary\n"
          "-F: driver mode, ping/pong: block in read() on the expected\n"
          "    vector instead of poll() then read()\n"
          "DEVICE: /dev/ivshmemN, /dev/uioN or /sys/bus/pci/devices/BDF\n",
          stderr);
    exit(1);
}

/* A decimal, 0x hexadecimal or 0 octal number, nothing else. */
static unsigned long num(const char *s)
{
    long v;
    int len = -1;

    if (sscanf(s, "%li%n", &v, &len) != 1 || len != (int)strlen(s) ||
        v < 0) {
        die("not a number: %s", s);
    }
    return v;
}

/*
 * make bench's device-only rates, self-contained:
 *   flood PEER VECTOR SECONDS  ring PEER's VECTOR in a tight loop for
 *                              SECONDS (the bench's peer never reads):
 *                              "flood: writes=N seconds=S"
 *   count VECTOR SECONDS       count the interrupts of VECTOR until none
 *                              came for 1 s after the first, or SECONDS:
 *                              "count: deliveries=N reads=R span_s=S"
 */
static int cmd_rate(Device *d, char **argv)
{
    bool flood = !strcmp(argv[0], "flood");
    unsigned long vector = num(argv[flood ? 2 : 1]);
    double seconds = strtod(argv[flood ? 3 : 2], NULL);
    uint64_t t0, t, first = 0, last = 0, deliveries = 0, reads = 0;
    unsigned i;

    if (!(seconds > 0) || seconds > 3600) {
        die("%s: SECONDS must be in (0, 3600]: %s", argv[0],
            argv[flood ? 3 : 2]);
    }
    if (flood) {
        unsigned long peer = num(argv[1]), writes = 0;

        if (peer > 0xffff || vector > 0xffff) {
            die("flood: PEER and VECTOR are 16-bit: %lu %lu", peer, vector);
        }
        t0 = now_ns();
        do {
            for (i = 0; i < 64; i++) {
                ring(d, peer, vector);
            }
            writes += 64;
            t = now_ns();
        } while (t - t0 < seconds * 1e9);
        printf("flood: writes=%lu seconds=%.6f\n", writes, (t - t0) / 1e9);
        return 0;
    }
    if (d->mode != MODE_DRIVER || vector >= d->nvectors) {
        die("count: needs the driver and a vector below %u", d->nvectors);
    }
    printf("count: ready id=%u\n", peer_id(d));
    t0 = now_ns();
    for (;;) {
        struct pollfd pfd = { .fd = d->vector_fd[vector], .events = POLLIN };
        uint32_t n;
        int r = poll(&pfd, 1, 100);

        t = now_ns();
        if (r < 0 && errno != EINTR) {
            die("poll: %s", strerror(errno));
        }
        if (r > 0) {
            if (pfd.revents & (POLLERR | POLLHUP)) {
                die("%s: device gone", d->path);
            }
            if (read(pfd.fd, &n, sizeof(n)) != sizeof(n)) {
                die("read: %s", strerror(errno));
            }
            deliveries += n;
            reads++;
            first = first ? first : t;
            last = t;
        }
        if ((first && t - last > 1000000000ull) || t - t0 > seconds * 1e9) {
            break;
        }
    }
    printf("count: deliveries=%" PRIu64 " reads=%" PRIu64 " span_s=%.6f\n",
           deliveries, reads, first ? (last - first) / 1e9 : 0.0);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *cmd;
    Device d;
    int timeout = 5000;
    int opt;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((opt = getopt(argc, argv, "d:o:rFh")) != -1) {
        switch (opt) {
        case 'd':
            path = optarg;
            break;
        case 'o':
            slot_offset = num(optarg);
            break;
        case 'r':
            print_raw = true;
            break;
        case 'F':
            fast_path = true;
            break;
        default:
            usage();
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage();
    }
    cmd = argv[0];
    if (!strcmp(cmd, "race") && argc == 2) {
        /* The device comes and goes: nothing is opened up front. */
        return cmd_race(path ? path : "/dev/ivshmem0", num(argv[1]));
    }
    open_device(&d, path);
    if (!strcmp(cmd, "info")) {
        return cmd_info(&d);
    } else if (!strcmp(cmd, "write") && argc == 4) {
        return cmd_write(&d, num(argv[1]), num(argv[2]), num(argv[3]));
    } else if (!strcmp(cmd, "verify") && argc == 4) {
        return cmd_verify(&d, num(argv[1]), num(argv[2]), num(argv[3]));
    } else if (!strcmp(cmd, "put") && argc == 3) {
        return cmd_put(&d, num(argv[1]), argv[2]);
    } else if (!strcmp(cmd, "get") && argc == 2) {
        return cmd_get(&d, num(argv[1]));
    } else if (!strcmp(cmd, "ring") && argc == 3) {
        ring(&d, num(argv[1]), num(argv[2]));
        return 0;
    } else if (!strcmp(cmd, "wait") && argc == 2) {
        return cmd_wait(&d, num(argv[1]));
    } else if ((!strcmp(cmd, "ping") || !strcmp(cmd, "pong")) &&
               (argc == 3 || argc == 4)) {
        if (argc == 4) {
            timeout = num(argv[3]);
        }
        if (!d.nvectors) {
            die("%s: no interrupts on this access path", d.path);
        }
        return (cmd[1] == 'i' ? cmd_ping : cmd_pong)(&d, num(argv[1]),
                                                      num(argv[2]), timeout);
    } else if (!strcmp(cmd, "spin-ping") && argc == 2) {
        return cmd_spin(&d, true, num(argv[1]), timeout);
    } else if (!strcmp(cmd, "spin-pong") && argc == 2) {
        return cmd_spin(&d, false, num(argv[1]), timeout);
    } else if (!strcmp(cmd, "rebind-wait") && (argc == 3 || argc == 4)) {
        return cmd_rebind_wait(&d, num(argv[1]), num(argv[2]),
                               argc == 4 ? argv[3] : "read");
    } else if (!strcmp(cmd, "hold-touched") && argc == 6) {
        return cmd_hold_touched(&d, num(argv[1]), num(argv[2]),
                                num(argv[3]), argv[4], num(argv[5]));
    } else if (!strcmp(cmd, "peers") && argc == 1) {
        get_peers(&d, "peers", true);
        return 0;
    } else if (!strcmp(cmd, "presence-wait") && argc == 2) {
        return cmd_presence_wait(&d, num(argv[1]));
    } else if (!strcmp(cmd, "abi") && argc == 1) {
        return cmd_abi(&d);
    } else if (!strcmp(cmd, "gone") && argc == 3) {
        return cmd_gone(&d, argv[1], num(argv[2]));
    } else if (!strcmp(cmd, "mapcheck") && argc == 1) {
        return cmd_mapcheck(&d);
    } else if (!strcmp(cmd, "hold") && argc == 5) {
        return cmd_hold(&d, num(argv[1]), num(argv[2]), argv[3],
                        num(argv[4]));
    } else if ((!strcmp(cmd, "flood") && argc == 4) ||
               (!strcmp(cmd, "count") && argc == 3)) {
        return cmd_rate(&d, argv);
    } else if (!strcmp(cmd, "bandwidth") && argc <= 3) {
        return cmd_bandwidth(&d, argc >= 2 ? num(argv[1]) : 64, argc == 3,
                             argc == 3 ? num(argv[2]) : 0);
    }
    usage();
    return 1;
}
