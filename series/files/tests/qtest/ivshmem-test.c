/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * qtest for the ivshmem, ivshmem-plain and ivshmem-doorbell devices.
 *
 * The test plays the guest (config space, BARs, MSI-X table and PBA) and
 * the host side: it maps the shared memory, and runs a small ivshmem
 * server of its own (protocol version 0, SCM_RIGHTS) that can also act as
 * extra peers, so that doorbells can be checked in both directions.
 * With IVSHMEM_SERVER set, one case also runs against that server binary.
 *
 * The default run is quick and needs no privilege.  The cases that wait
 * out multi-second deadlines or server restarts, those that need root
 * (chroot, huge pages) and those with thousands of peers are registered
 * only with -m slow (g_test_slow()).
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <sys/un.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <poll.h>
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qemu/atomic.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "qemu/ivshmem-proto.h"
#include "qemu/units.h"
#include "hw/pci/pci_regs.h"
#include "qobject/qbool.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"

#define REG_INTR_MASK   0x00
#define REG_INTR_STATUS 0x04
#define REG_IV_POSITION 0x08
#define REG_DOORBELL    0x0c

#define SLOT            4
#define MAX_PEERS       16
#define MAX_VECTORS     8
#define WAIT_MS         5000
#define MSI_ADDR        0x100000    /* guest RAM where MSI-X writes land */

static char *tmpdir;
static int test_counter;

/* Guest side */

typedef struct Guest {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar0;
    QPCIBar bar2;
    uint64_t bar2_size;
    bool msix;
} Guest;

static void guest_attach(Guest *g, QTestState *qts, int slot)
{
    memset(g, 0, sizeof(*g));
    g->qts = qts;
    g->bus = qpci_new_pc(qts, NULL);
    g->dev = qpci_device_find(g->bus, QPCI_DEVFN(slot, 0));
    g_assert(g->dev);
    qpci_device_enable(g->dev);
    g->bar0 = qpci_iomap(g->dev, 0, NULL);
    g->bar2 = qpci_iomap(g->dev, 2, &g->bar2_size);
    if (qpci_find_capability(g->dev, PCI_CAP_ID_MSIX, 0)) {
        qpci_msix_enable(g->dev);
        g->msix = true;
    }
}

static void guest_detach(Guest *g)
{
    g_free(g->dev);
    qpci_free_pc(g->bus);
    g->dev = NULL;
    g->bus = NULL;
}

static void guest_quit(Guest *g)
{
    QTestState *qts = g->qts;

    guest_detach(g);
    qtest_quit(qts);
}

static Guest *guest_start(int slot, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static Guest *guest_start(int slot, const char *fmt, ...)
{
    Guest *g = g_new0(Guest, 1);
    g_autofree char *args = NULL;
    va_list ap;

    va_start(ap, fmt);
    args = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    guest_attach(g, qtest_init(args), slot);
    return g;
}

static void guest_destroy(Guest *g)
{
    guest_quit(g);
    g_free(g);
}

static uint32_t reg_read(Guest *g, uint64_t off)
{
    return qpci_io_readl(g->dev, g->bar0, off);
}

static void reg_write(Guest *g, uint64_t off, uint32_t val)
{
    qpci_io_writel(g->dev, g->bar0, off, val);
}

static void ring(Guest *g, uint16_t peer, uint16_t vector)
{
    reg_write(g, REG_DOORBELL, (uint32_t)peer << 16 | vector);
}

static uint64_t msi_addr(Guest *g, int vector)
{
    return MSI_ADDR + vector * 4;
}

static uint32_t msi_data(int vector)
{
    return 0x4000 + vector;
}

/* Program MSI-X entry @vector to write msi_data() to guest RAM. */
static void msix_program(Guest *g, int vector, bool masked)
{
    uint64_t off = g->dev->msix_table_off + vector * PCI_MSIX_ENTRY_SIZE;
    QPCIBar bar = g->dev->msix_table_bar;

    qtest_writel(g->qts, msi_addr(g, vector), 0);
    qpci_io_writel(g->dev, bar, off + PCI_MSIX_ENTRY_LOWER_ADDR,
                   msi_addr(g, vector));
    qpci_io_writel(g->dev, bar, off + PCI_MSIX_ENTRY_UPPER_ADDR, 0);
    qpci_io_writel(g->dev, bar, off + PCI_MSIX_ENTRY_DATA, msi_data(vector));
    qpci_io_writel(g->dev, bar, off + PCI_MSIX_ENTRY_VECTOR_CTRL,
                   masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
}

static bool msi_fired(Guest *g, int vector)
{
    if (qtest_readl(g->qts, msi_addr(g, vector)) == msi_data(vector)) {
        qtest_writel(g->qts, msi_addr(g, vector), 0);
        return true;
    }
    return false;
}

static bool wait_msi_ms(Guest *g, int vector, int ms)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;

    do {
        if (msi_fired(g, vector)) {
            return true;
        }
        g_usleep(1000);
    } while (g_get_monotonic_time() < end);
    return false;
}

static bool wait_msi(Guest *g, int vector)
{
    return wait_msi_ms(g, vector, WAIT_MS);
}

static bool wait_pending(Guest *g, int vector, int ms)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;

    do {
        if (qpci_msix_pending(g->dev, vector)) {
            return true;
        }
        g_usleep(1000);
    } while (g_get_monotonic_time() < end);
    return false;
}

/* Host side helpers */

static char *tmp_path(const char *what)
{
    return g_strdup_printf("%s/%s-%d", tmpdir, what, test_counter++);
}

static char *shm_name(const char *what)
{
    return g_strdup_printf("qtest-ivshmem-%d-%s-%d", getpid(), what,
                           test_counter++);
}

static bool shm_exists(const char *name)
{
    g_autofree char *path = g_strdup_printf("/dev/shm/%s", name);

    return access(path, F_OK) == 0;
}

static void *map_fd(int fd, size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

    g_assert(p != MAP_FAILED);
    return p;
}

static void *map_file(const char *path, size_t size)
{
    int fd = open(path, O_RDWR);
    void *p;

    g_assert_cmpint(fd, >=, 0);
    p = map_fd(fd, size);
    close(fd);
    return p;
}

static int make_memfd(size_t size)
{
    int fd = memfd_create("ivshmem-test", MFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, size), ==, 0);
    return fd;
}

static int make_eventfd(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    return fd;
}

static void event_set(int fd)
{
    uint64_t one = 1;

    g_assert_cmpint(write(fd, &one, sizeof(one)), ==, sizeof(one));
}

/* Rings counted on eventfd @fd within @ms (0: none arrived) */
static uint64_t event_count(int fd, int ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    uint64_t count;

    if (poll(&pfd, 1, ms) != 1 ||
        read(fd, &count, sizeof(count)) != sizeof(count)) {
        return 0;
    }
    return count;
}

/*
 * Did exactly one ring arrive on @fd within @ms?  More than one is a
 * failure whatever the caller expects: every test rings once.
 */
static bool event_wait(int fd, int ms)
{
    uint64_t count = event_count(fd, ms);

    g_assert_cmpuint(count, <=, 1);
    return count == 1;
}

static int count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", pid);
    GDir *dir = g_dir_open(path, 0, NULL);
    int n = 0;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    g_dir_close(dir);
    return n;
}

static bool wait_fd_count(pid_t pid, int expected)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    do {
        if (count_fds(pid) == expected) {
            return true;
        }
        g_usleep(10000);
    } while (g_get_monotonic_time() < end);
    g_test_message("fd count %d, expected %d", count_fds(pid), expected);
    return false;
}

static void send_msg(int sock, int64_t value, int fd)
{
    uint8_t buf[IVSHMEM_MSG_SIZE];
    struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
    union {
        struct cmsghdr align;
        char control[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct cmsghdr *cmsg;
    ssize_t ret;

    ivshmem_proto_encode(value, buf);
    if (fd >= 0) {
        memset(&u, 0, sizeof(u));
        msg.msg_control = u.control;
        msg.msg_controllen = sizeof(u.control);
        cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    }
    do {
        ret = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (ret < 0 && errno == EINTR);
    /* A peer that went away is noticed by the server loop. */
}

static int listen_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(strlen(path), <, sizeof(addr.sun_path));
    strcpy(addr.sun_path, path);
    unlink(path);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    g_assert_cmpint(listen(fd, 16), ==, 0);
    return fd;
}

/* A fake ivshmem server; it can also play peers itself ("local" peers). */

typedef struct FakePeer {
    bool present;
    int conn;                   /* socket to a QEMU, -1: played by test */
    int efd[MAX_VECTORS];
} FakePeer;

typedef struct FakeServer {
    char *path;
    int listen_fd;
    int shm_fd;
    size_t shm_size;
    int nvectors;
    int next_id;
    GMutex lock;
    GThread *thread;
    bool stop;
    FakePeer peers[MAX_PEERS];
} FakeServer;

static void server_announce(FakeServer *srv, int to, int id)
{
    int v;

    for (v = 0; v < srv->nvectors; v++) {
        send_msg(srv->peers[to].conn, id, srv->peers[id].efd[v]);
    }
}

/* Add a peer (a QEMU connection or, with conn < 0, a local one). */
static int server_join(FakeServer *srv, int conn)
{
    int id, other, v;
    FakePeer *p;

    g_mutex_lock(&srv->lock);
    id = srv->next_id++;
    g_assert_cmpint(id, <, MAX_PEERS);
    p = &srv->peers[id];
    p->conn = conn;
    for (v = 0; v < srv->nvectors; v++) {
        p->efd[v] = make_eventfd();
    }
    if (conn >= 0) {
        send_msg(conn, IVSHMEM_PROTOCOL_VERSION, -1);
        send_msg(conn, id, -1);
        send_msg(conn, IVSHMEM_MSG_SHM, srv->shm_fd);
        for (other = 0; other < MAX_PEERS; other++) {
            if (srv->peers[other].present) {
                server_announce(srv, id, other);
            }
        }
        server_announce(srv, id, id);
    }
    for (other = 0; other < MAX_PEERS; other++) {
        if (srv->peers[other].present && srv->peers[other].conn >= 0) {
            server_announce(srv, other, id);
        }
    }
    p->present = true;
    g_mutex_unlock(&srv->lock);
    return id;
}

static void server_leave_locked(FakeServer *srv, int id)
{
    FakePeer *p = &srv->peers[id];
    int other, v;

    p->present = false;
    for (other = 0; other < MAX_PEERS; other++) {
        if (srv->peers[other].present && srv->peers[other].conn >= 0) {
            send_msg(srv->peers[other].conn, id, -1);
        }
    }
    for (v = 0; v < srv->nvectors; v++) {
        close(p->efd[v]);
    }
    if (p->conn >= 0) {
        close(p->conn);
    }
}

static void server_leave(FakeServer *srv, int id)
{
    g_mutex_lock(&srv->lock);
    server_leave_locked(srv, id);
    g_mutex_unlock(&srv->lock);
}

static gpointer server_thread(gpointer opaque)
{
    FakeServer *srv = opaque;

    while (!qatomic_read(&srv->stop)) {
        struct pollfd pfd[MAX_PEERS + 1];
        int ids[MAX_PEERS + 1];
        int n = 0, i;

        pfd[n++] = (struct pollfd) { .fd = srv->listen_fd, .events = POLLIN };
        g_mutex_lock(&srv->lock);
        for (i = 0; i < MAX_PEERS; i++) {
            if (srv->peers[i].present && srv->peers[i].conn >= 0) {
                ids[n] = i;
                pfd[n++] = (struct pollfd) { .fd = srv->peers[i].conn,
                                             .events = POLLIN };
            }
        }
        g_mutex_unlock(&srv->lock);
        if (poll(pfd, n, 50) <= 0) {
            continue;
        }
        if (pfd[0].revents & POLLIN) {
            int conn = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);

            if (conn >= 0) {
                server_join(srv, conn);
            }
        }
        for (i = 1; i < n; i++) {
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                g_mutex_lock(&srv->lock);
                if (srv->peers[ids[i]].present) {
                    server_leave_locked(srv, ids[i]);
                }
                g_mutex_unlock(&srv->lock);
            }
        }
    }
    return NULL;
}

/*
 * A fake server on @path sharing (a duplicate of) @shm_fd, e.g. one that
 * restarts on the memory of the previous one.  @nlocal local peers join
 * before any connection is accepted: they take IDs first_id.. in order.
 */
static FakeServer *server_start_at(const char *path, int shm_fd,
                                   size_t shm_size, int nvectors,
                                   int first_id, int nlocal)
{
    FakeServer *srv = g_new0(FakeServer, 1);

    srv->path = g_strdup(path);
    srv->listen_fd = listen_unix(srv->path);
    srv->shm_size = shm_size;
    srv->shm_fd = fcntl(shm_fd, F_DUPFD_CLOEXEC, 0);
    g_assert_cmpint(srv->shm_fd, >=, 0);
    srv->nvectors = nvectors;
    srv->next_id = first_id;
    g_mutex_init(&srv->lock);
    while (nlocal-- > 0) {
        server_join(srv, -1);
    }
    srv->thread = g_thread_new("fake-ivshmem-server", server_thread, srv);
    return srv;
}

static FakeServer *server_start(size_t shm_size, int nvectors, int first_id)
{
    g_autofree char *path = tmp_path("server.sock");
    int shm_fd = make_memfd(shm_size);
    FakeServer *srv = server_start_at(path, shm_fd, shm_size, nvectors,
                                      first_id, 0);

    close(shm_fd);
    return srv;
}

static void server_free(FakeServer *srv)
{
    close(srv->listen_fd);
    close(srv->shm_fd);
    unlink(srv->path);
    g_free(srv->path);
    g_mutex_clear(&srv->lock);
    g_free(srv);
}

/* An orderly stop: the peers still present are told who left. */
static void server_stop(FakeServer *srv)
{
    int i;

    qatomic_set(&srv->stop, true);
    g_thread_join(srv->thread);
    for (i = 0; i < MAX_PEERS; i++) {
        if (srv->peers[i].present) {
            server_leave_locked(srv, i);
        }
    }
    server_free(srv);
}

/* The server dies: its connections close, nobody is told who left. */
static void server_crash(FakeServer *srv)
{
    FakePeer *p;
    int i, v;

    qatomic_set(&srv->stop, true);
    g_thread_join(srv->thread);
    for (i = 0; i < MAX_PEERS; i++) {
        p = &srv->peers[i];
        if (!p->present) {
            continue;
        }
        p->present = false;
        for (v = 0; v < srv->nvectors; v++) {
            close(p->efd[v]);
        }
        if (p->conn >= 0) {
            close(p->conn);
        }
    }
    server_free(srv);
}

static int server_efd(FakeServer *srv, int id, int vector)
{
    int fd;

    g_mutex_lock(&srv->lock);
    fd = srv->peers[id].present ? srv->peers[id].efd[vector] : -1;
    g_mutex_unlock(&srv->lock);
    return fd;
}

static Guest *doorbell_guest(FakeServer *srv, int slot, const char *extra)
{
    return guest_start(slot, "-M pc -chardev socket,id=c,path=%s "
                       "-device ivshmem-doorbell,chardev=c,vectors=%d,"
                       "addr=%d%s", srv->path, srv->nvectors, slot,
                       extra ? extra : "");
}

/* Spawning QEMU for command lines that must fail */

static void expect_start_failure(const char *args, const char *message)
{
    const char *qemu = g_getenv("QTEST_QEMU_BINARY");
    g_autofree char *cmd = g_strdup_printf("%s -M pc -nodefaults -display "
                                           "none -S -monitor none %s",
                                           qemu, args);
    g_auto(GStrv) argv = NULL;
    g_autofree char *err = NULL;
    GError *gerr = NULL;
    int out_fd, err_fd, status = 0;
    GPid pid;
    gint64 end;
    GString *buf = g_string_new("");
    char chunk[512];
    ssize_t n;

    g_assert(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    g_assert(g_spawn_async_with_pipes(NULL, argv, NULL,
                                      G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                      &pid, NULL, &out_fd, &err_fd, &gerr));
    end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (g_get_monotonic_time() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            g_test_message("QEMU did not fail: %s", args);
            g_assert_not_reached();
        }
        g_usleep(10000);
    }
    while ((n = read(err_fd, chunk, sizeof(chunk))) > 0) {
        g_string_append_len(buf, chunk, n);
    }
    close(out_fd);
    close(err_fd);
    g_spawn_close_pid(pid);
    err = g_string_free(buf, false);
    g_test_message("%s -> %s", args, err);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), !=, 0);
    g_assert_nonnull(strstr(err, message));
}

/*
 * Tests
 */

static void test_config_space(void)
{
    g_autofree char *file = tmp_path("cfg");
    Guest *g;

    g = guest_start(SLOT, "-M pc -object memory-backend-file,id=m,size=1M,"
                    "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                    "addr=%d", file, SLOT);
    g_assert_cmphex(qpci_config_readw(g->dev, PCI_VENDOR_ID), ==, 0x1af4);
    g_assert_cmphex(qpci_config_readw(g->dev, PCI_DEVICE_ID), ==, 0x1110);
    g_assert_cmphex(qpci_config_readw(g->dev, PCI_CLASS_DEVICE), ==, 0x0500);
    g_assert_cmphex(qpci_config_readw(g->dev, PCI_SUBSYSTEM_VENDOR_ID), ==,
                    0x1af4);
    g_assert_cmphex(qpci_config_readw(g->dev, PCI_SUBSYSTEM_ID), ==, 0x1100);
    g_assert_cmphex(qpci_config_readb(g->dev, PCI_REVISION_ID), ==, 1);
    g_assert_cmphex(qpci_config_readl(g->dev, PCI_BASE_ADDRESS_2) &
                    ~PCI_BASE_ADDRESS_MEM_MASK, ==,
                    PCI_BASE_ADDRESS_MEM_TYPE_64 |
                    PCI_BASE_ADDRESS_MEM_PREFETCH);
    g_assert_cmpuint(g->bar2_size, ==, 1 * MiB);
    g_assert_cmphex(qpci_find_capability(g->dev, PCI_CAP_ID_MSIX, 0), ==, 0);
    g_assert_cmphex(qpci_config_readl(g->dev, PCI_BASE_ADDRESS_1), ==, 0);
    /* BAR0 is 256 bytes */
    qpci_config_writel(g->dev, PCI_BASE_ADDRESS_0, 0xffffffff);
    g_assert_cmphex(qpci_config_readl(g->dev, PCI_BASE_ADDRESS_0) &
                    PCI_BASE_ADDRESS_MEM_MASK, ==, 0xffffff00);
    guest_destroy(g);
    unlink(file);
}

static void test_registers(void)
{
    static const uint32_t reset_zero[] = {
        REG_INTR_MASK, REG_INTR_STATUS, REG_IV_POSITION, REG_DOORBELL,
        0x10, 0xfc,
    };
    g_autofree char *file = tmp_path("regs");
    Guest *g;
    size_t i;

    g = guest_start(SLOT, "-M pc -object memory-backend-file,id=m,size=1M,"
                    "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                    "addr=%d", file, SLOT);
    /* Every register, reserved ones included, reads 0 after reset. */
    for (i = 0; i < ARRAY_SIZE(reset_zero); i++) {
        g_assert_cmphex(reg_read(g, reset_zero[i]), ==, 0);
    }

    reg_write(g, REG_INTR_MASK, 0xffffffff);
    g_assert_cmphex(reg_read(g, REG_INTR_MASK), ==, 0xffffffff);
    reg_write(g, REG_INTR_STATUS, 1);
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 1);
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 0);  /* read clears */
    reg_write(g, REG_IV_POSITION, 0x1234);                 /* read-only */
    g_assert_cmphex(reg_read(g, REG_IV_POSITION), ==, 0);
    reg_write(g, REG_DOORBELL, 0xffffffff);                /* no server */
    g_assert_cmphex(reg_read(g, REG_DOORBELL), ==, 0);     /* write-only */
    g_assert_cmphex(reg_read(g, 0x10), ==, 0);             /* reserved */
    g_assert_cmphex(reg_read(g, 0xfc), ==, 0);

    /* system_reset returns the registers to their reset values */
    qtest_qmp_assert_success(g->qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(g->qts, "RESET");
    guest_detach(g);
    guest_attach(g, g->qts, SLOT);
    g_assert_cmphex(reg_read(g, REG_INTR_MASK), ==, 0);
    guest_destroy(g);
    unlink(file);
}

static void check_coherence(Guest *g, void *host, size_t size)
{
    uint32_t *h = host;
    uint64_t off;

    for (off = 0; off < size; off += size / 16) {
        h[off / 4] = 0xa5a50000 | off >> 12;
        g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, off), ==,
                        0xa5a50000 | off >> 12);
        qpci_io_writel(g->dev, g->bar2, off + 4, 0x5a5a0000 | off >> 12);
        g_assert_cmphex(h[off / 4 + 1], ==, 0x5a5a0000 | off >> 12);
    }
    qpci_io_writel(g->dev, g->bar2, size - 4, 0xdeadbeef);
    g_assert_cmphex(h[size / 4 - 1], ==, 0xdeadbeef);
}

static void test_plain_file(void)
{
    g_autofree char *file = tmp_path("plain-file");
    Guest *g;
    void *host;

    g = guest_start(SLOT, "-M pc -object memory-backend-file,id=m,size=2M,"
                    "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                    "addr=%d", file, SLOT);
    host = map_file(file, 2 * MiB);
    check_coherence(g, host, 2 * MiB);
    munmap(host, 2 * MiB);
    guest_destroy(g);
    unlink(file);
}

/*
 * Open QEMU's memfd named @name through /proc/PID/fd, as any process
 * allowed to ptrace it could: returns a new fd of the same memory.
 */
static int open_qemu_memfd(QTestState *qts, const char *name)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", qtest_pid(qts));
    g_autofree char *want = g_strdup_printf("/memfd:%s", name);
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *e;
    int fd = -1;

    g_assert(d);
    while (fd < 0 && (e = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(dir, e, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);

        if (target && g_str_has_prefix(target, want)) {
            fd = open(link, O_RDWR);
        }
    }
    g_dir_close(d);
    g_assert_cmpint(fd, >=, 0);
    return fd;
}

/*
 * A memfd backend with share=on: the host side of the memfd sees what
 * the guest writes through BAR2 and the other way round (private RAM,
 * share=off, would keep the guest's writes to itself).
 */
static void test_plain_memfd(void)
{
    Guest *g;
    void *host;
    int fd;

    g = guest_start(SLOT, "-M pc -object memory-backend-memfd,id=m,size=1M,"
                    "share=on -device ivshmem-plain,memdev=m,addr=%d", SLOT);
    g_assert_cmpuint(g->bar2_size, ==, 1 * MiB);
    fd = open_qemu_memfd(g->qts, "memory-backend-memfd");
    host = map_fd(fd, 1 * MiB);
    close(fd);
    check_coherence(g, host, 1 * MiB);
    munmap(host, 1 * MiB);
    guest_destroy(g);
}

static void test_plain_two_devices(void)
{
    g_autofree char *file = tmp_path("two");
    Guest *g, g2;
    void *host;

    g = guest_start(SLOT, "-M pc -object memory-backend-file,id=m1,size=1M,"
                    "mem-path=%s,share=on -object memory-backend-file,id=m2,"
                    "size=1M,mem-path=%s,share=on "
                    "-device ivshmem-plain,memdev=m1,addr=%d "
                    "-device ivshmem-plain,memdev=m2,addr=%d",
                    file, file, SLOT, SLOT + 1);
    guest_attach(&g2, g->qts, SLOT + 1);
    host = map_file(file, 1 * MiB);
    qpci_io_writel(g->dev, g->bar2, 0x100, 0x11223344);
    g_assert_cmphex(qpci_io_readl(g2.dev, g2.bar2, 0x100), ==, 0x11223344);
    qpci_io_writel(g2.dev, g2.bar2, 0x200, 0x55667788);
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x200), ==, 0x55667788);
    g_assert_cmphex(((uint32_t *)host)[0x200 / 4], ==, 0x55667788);
    munmap(host, 1 * MiB);
    guest_detach(&g2);
    guest_destroy(g);
    unlink(file);
}

static void test_plain_large_bar(void)
{
    g_autofree char *file = tmp_path("large");
    Guest *g;
    uint32_t lo, hi;
    uint64_t size;

    /* 8 GiB sparse file: check the 64-bit BAR2 sizing from config space */
    g = g_new0(Guest, 1);
    g->qts = qtest_initf("-M q35 -object memory-backend-file,id=m,size=8G,"
                         "mem-path=%s,share=on,prealloc=off "
                         "-device ivshmem-plain,memdev=m,addr=%d", file, SLOT);
    g->bus = qpci_new_pc(g->qts, NULL);
    g->dev = qpci_device_find(g->bus, QPCI_DEVFN(SLOT, 0));
    g_assert(g->dev);
    qpci_config_writel(g->dev, PCI_BASE_ADDRESS_2, 0xffffffff);
    qpci_config_writel(g->dev, PCI_BASE_ADDRESS_3, 0xffffffff);
    lo = qpci_config_readl(g->dev, PCI_BASE_ADDRESS_2);
    hi = qpci_config_readl(g->dev, PCI_BASE_ADDRESS_3);
    size = ~(((uint64_t)hi << 32) | (lo & PCI_BASE_ADDRESS_MEM_MASK)) + 1;
    g_assert_cmphex(size, ==, 8 * GiB);
    /* map it at 8 GiB, inside q35's 64-bit PCI hole, and touch both ends */
    qpci_config_writel(g->dev, PCI_BASE_ADDRESS_2, 0);
    qpci_config_writel(g->dev, PCI_BASE_ADDRESS_3, 0x2);
    qpci_config_writew(g->dev, PCI_COMMAND,
                       PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    qtest_writel(g->qts, 8 * GiB, 0xcafe0001);
    qtest_writel(g->qts, 16 * GiB - 4, 0xcafe0002);
    g_assert_cmphex(qtest_readl(g->qts, 8 * GiB), ==, 0xcafe0001);
    g_assert_cmphex(qtest_readl(g->qts, 16 * GiB - 4), ==, 0xcafe0002);
    guest_destroy(g);
    unlink(file);
}

static void test_legacy_shm_create(void)
{
    g_autofree char *name = shm_name("create");
    g_autofree char *path = g_strdup_printf("/dev/shm/%s", name);
    struct stat st;
    Guest *g;
    void *host;

    g_assert_false(shm_exists(name));
    g = guest_start(SLOT, "-M pc -device ivshmem,shm=%s,addr=%d", name,
                    SLOT);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 4 * MiB);   /* default size */
    g_assert_cmpuint(g->bar2_size, ==, 4 * MiB);
    g_assert_cmphex(qpci_config_readb(g->dev, PCI_REVISION_ID), ==, 0);
    host = map_file(path, 4 * MiB);
    check_coherence(g, host, 4 * MiB);
    munmap(host, 4 * MiB);
    guest_destroy(g);
    shm_unlink(name);
}

static void test_legacy_shm_existing(void)
{
    g_autofree char *name = shm_name("existing");
    g_autofree char *path = g_strdup_printf("/dev/shm/%s", name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    g_autofree char *args = NULL;
    Guest *g;
    void *host;

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 2 * MiB), ==, 0);
    host = map_fd(fd, 2 * MiB);
    ((uint32_t *)host)[0x40] = 0x0badcafe;
    /* size smaller than the object: map the first 1 MiB ("-m" suffix) */
    g = guest_start(SLOT, "-M pc -device ivshmem,shm=%s,size=1m,addr=%d",
                    name, SLOT);
    g_assert_cmpuint(g->bar2_size, ==, 1 * MiB);
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x100), ==, 0x0badcafe);
    guest_destroy(g);
    /* a bare number is MiB, as with -m */
    g = guest_start(SLOT, "-M pc -device ivshmem,shm=%s,size=2,addr=%d",
                    name, SLOT);
    g_assert_cmpuint(g->bar2_size, ==, 2 * MiB);
    guest_destroy(g);
    /* larger than the object: refused, object left as it was */
    args = g_strdup_printf("-device ivshmem,shm=%s,size=4M", name);
    expect_start_failure(args, "larger than");
    g_assert_cmphex(((uint32_t *)host)[0x40], ==, 0x0badcafe);
    {
        struct stat st;

        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, 2 * MiB);
    }
    munmap(host, 2 * MiB);
    close(fd);
    shm_unlink(name);
}

static void test_cmdline_errors(void)
{
    g_autofree char *name = shm_name("err");
    g_autofree char *file = tmp_path("err");
    g_autofree char *a = NULL;

    a = g_strdup_printf("-device ivshmem,shm=%s,size=3M", name);
    expect_start_failure(a, "'size'");
    g_assert_false(shm_exists(name));
    g_free(a);
    a = g_strdup_printf("-device ivshmem,shm=%s,size=junk", name);
    expect_start_failure(a, "'size'");
    g_free(a);
    a = g_strdup_printf("-chardev socket,id=c,path=%s/nowhere,server=on,"
                        "wait=off -device ivshmem,shm=%s,chardev=c",
                        tmpdir, name);
    expect_start_failure(a, "exactly one of the properties 'shm' and "
                         "'chardev'");
    g_assert_false(shm_exists(name));
    expect_start_failure("-device ivshmem", "exactly one of the properties");
    g_free(a);
    a = g_strdup_printf("-device ivshmem,shm=%s,role=boss", name);
    expect_start_failure(a, "'role'");
    g_assert_false(shm_exists(name));
    /* failure after the object was created: it is removed again */
    g_free(a);
    a = g_strdup_printf("-only-migratable -device ivshmem,shm=%s", name);
    expect_start_failure(a, "role=master");
    g_assert_false(shm_exists(name));

    expect_start_failure("-device ivshmem-doorbell", "'chardev' is required");
    g_free(a);
    a = g_strdup_printf("-chardev socket,id=c,path=%s/nowhere,server=on,"
                        "wait=off -device ivshmem-doorbell,chardev=c,"
                        "vectors=0", tmpdir);
    expect_start_failure(a, "'vectors'");
    g_free(a);
    a = g_strdup_printf("-chardev socket,id=c,path=%s/nowhere,server=on,"
                        "wait=off -device ivshmem-doorbell,chardev=c,"
                        "vectors=2049", tmpdir);
    expect_start_failure(a, "'vectors'");

    expect_start_failure("-device ivshmem-plain", "'memdev' is required");
    g_free(a);
    a = g_strdup_printf("-object memory-backend-file,id=m,size=1M,"
                        "mem-path=%s,share=on -device ivshmem-plain,memdev=m "
                        "-device ivshmem-plain,memdev=m", file);
    expect_start_failure(a, "already in use");
    g_free(a);
    expect_start_failure("-object memory-backend-memfd,id=m,size=3M,share=on "
                         "-device ivshmem-plain,memdev=m", "power of two");
    a = g_strdup_printf("-only-migratable -object memory-backend-file,id=m,"
                        "size=1M,mem-path=%s,share=on "
                        "-device ivshmem-plain,memdev=m", file);
    expect_start_failure(a, "master=on");
    unlink(file);
    g_free(a);
    a = g_strdup_printf("%s/nowhere", tmpdir);
    unlink(a);
}

static void check_described(const char *type, const char *const *props)
{
    QTestState *qts = qtest_init("-M none");
    QDict *resp = qtest_qmp(qts, "{'execute': 'device-list-properties',"
                            " 'arguments': {'typename': %s}}", type);
    QList *list = qdict_get_qlist(resp, "return");
    g_autoptr(GHashTable) described = g_hash_table_new_full(g_str_hash,
                                                            g_str_equal,
                                                            g_free, NULL);
    QListEntry *e;

    g_assert(list);
    QLIST_FOREACH_ENTRY(list, e) {
        QDict *p = qobject_to(QDict, qlist_entry_obj(e));

        g_hash_table_insert(described, g_strdup(qdict_get_str(p, "name")),
                            GINT_TO_POINTER(qdict_haskey(p, "description")));
    }
    for (; *props; props++) {
        g_test_message("%s.%s", type, *props);
        g_assert_true(g_hash_table_contains(described, *props));
        g_assert_true(g_hash_table_lookup(described, *props));
    }
    qobject_unref(resp);
    qtest_quit(qts);
}

static void test_help(void)
{
    static const char *const legacy[] = {
        "size", "shm", "chardev", "msi", "vectors", "ioeventfd", "role", NULL
    };
    static const char *const plain[] = { "memdev", "master", NULL };
    static const char *const doorbell[] = {
        "chardev", "vectors", "ioeventfd", "master", NULL
    };

    check_described("ivshmem", legacy);
    check_described("ivshmem-plain", plain);
    check_described("ivshmem-doorbell", doorbell);
}

/* Guest errors name the device: its id, and its PCI address. */
static void test_guest_errors_named(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    g_autofree char *log = tmp_path("guest-errors");
    g_autofree char *text = NULL;
    QPCIDevice *plain;
    QPCIBar bar0;
    Guest *g;

    g = guest_start(SLOT, "-M pc -d guest_errors -D %s -chardev socket,"
                    "id=c,path=%s -device ivshmem-doorbell,id=iv0,"
                    "chardev=c,addr=%d -object memory-backend-file,id=m,"
                    "size=1M,mem-path=%s-plain,share=on -device "
                    "ivshmem-plain,memdev=m,addr=%d", log, srv->path, SLOT,
                    log, SLOT + 1);
    ring(g, 9, 0);
    qpci_io_writeb(g->dev, g->bar0, REG_IV_POSITION, 1);
    plain = qpci_device_find(g->bus, QPCI_DEVFN(SLOT + 1, 0));
    g_assert(plain);
    qpci_device_enable(plain);
    bar0 = qpci_iomap(plain, 0, NULL);
    qpci_io_writel(plain, bar0, REG_IV_POSITION, 1);
    g_free(plain);
    guest_destroy(g);
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_test_message("%s", text);
    g_assert_nonnull(strstr(text, "ivshmem-doorbell 'iv0' at 0000:00:04.0: "
                            "doorbell for unknown peer 9"));
    g_assert_nonnull(strstr(text, "ivshmem-doorbell 'iv0' at 0000:00:04.0: "
                            "1-byte write at 0x8 ignored"));
    g_assert_nonnull(strstr(text, "ivshmem-plain at 0000:00:05.0: "
                            "IVPosition is read-only"));
    unlink(log);
    g_free(text);
    text = g_strdup_printf("%s-plain", log);
    unlink(text);
    server_stop(srv);
}

/*
 * Compatibility with QEMU 10.0.2: property types, master=auto, share=off
 */

/*
 * Run QEMU with @args until its QMP monitor on stdin says quit; returns
 * its exit status, *@err its stderr.
 */
static int run_qemu_quit(const char *args, char **err)
{
    const char *qemu = g_getenv("QTEST_QEMU_BINARY");
    g_autofree char *cmd = g_strdup_printf(
        "printf '%%s\\n' '{\"execute\":\"qmp_capabilities\"}' "
        "'{\"execute\":\"quit\"}' | timeout 30 %s -M pc -nodefaults "
        "-display none -S -qmp stdio %s > /dev/null", qemu, args);
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    GError *gerr = NULL;
    int status;

    g_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL,
                          NULL, NULL, err, &status, &gerr));
    g_test_message("%s -> status %d, %s", args, status, *err);
    return status;
}

static void check_prop(QDict *props, const char *name, const char *type,
                       QObject *def)
{
    QDict *p = qdict_get_qdict(props, name);

    g_test_message("%s: %s", name, type);
    g_assert(p);
    g_assert_cmpstr(qdict_get_str(p, "type"), ==, type);
    if (def) {
        g_assert(qobject_is_equal(qdict_get(p, "default-value"), def));
    } else {
        g_assert_false(qdict_haskey(p, "default-value"));
    }
    qobject_unref(def);
}

/* name -> property description, for one device type */
static QDict *list_props(QTestState *qts, const char *type)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'device-list-properties',"
                            " 'arguments': {'typename': %s}}", type);
    QList *list = qdict_get_qlist(resp, "return");
    QDict *props = qdict_new();
    QListEntry *e;

    g_assert(list);
    QLIST_FOREACH_ENTRY(list, e) {
        QDict *p = qobject_to(QDict, qlist_entry_obj(e));

        qdict_put(props, qdict_get_str(p, "name"), qobject_ref(p));
    }
    qobject_unref(resp);
    return props;
}

static QObject *qom_get(QTestState *qts, const char *path, const char *prop)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'qom-get', 'arguments': "
                            "{'path': %s, 'property': %s}}", path, prop);
    QObject *ret = qobject_ref(qdict_get(resp, "return"));

    g_assert(ret);
    qobject_unref(resp);
    return ret;
}

static void check_qom_str(QTestState *qts, const char *path,
                          const char *prop, const char *value)
{
    QObject *o = qom_get(qts, path, prop);

    g_assert_cmpint(qobject_type(o), ==, QTYPE_QSTRING);
    g_assert_cmpstr(qstring_get_str(qobject_to(QString, o)), ==, value);
    qobject_unref(o);
}

/* The property types and defaults of 10.0.2, as libvirt sees them. */
static void test_compat_property_types(void)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    QTestState *qts;
    QDict *props, *resp;
    QObject *o;

    qts = qtest_initf("-M pc -object memory-backend-memfd,id=m,size=1M,"
                      "share=on -chardev socket,id=c,path=%s "
                      "-device '{\"driver\":\"ivshmem-plain\",\"id\":\"p\","
                      "\"memdev\":\"m\",\"master\":\"on\",\"addr\":\"4\"}' "
                      "-device '{\"driver\":\"ivshmem-doorbell\","
                      "\"id\":\"d\",\"chardev\":\"c\",\"vectors\":2,"
                      "\"ioeventfd\":false,\"master\":\"auto\","
                      "\"addr\":\"5\"}'", srv->path);
    props = list_props(qts, "ivshmem-plain");
    check_prop(props, "master", "OnOffAuto", QOBJECT(qstring_from_str("off")));
    check_prop(props, "memdev", "link<memory-backend>", NULL);
    qobject_unref(props);
    props = list_props(qts, "ivshmem-doorbell");
    check_prop(props, "master", "OnOffAuto", QOBJECT(qstring_from_str("off")));
    check_prop(props, "chardev", "str", NULL);
    check_prop(props, "vectors", "uint32", QOBJECT(qnum_from_uint(1)));
    check_prop(props, "ioeventfd", "bool", QOBJECT(qbool_from_bool(true)));
    qobject_unref(props);

    check_qom_str(qts, "/machine/peripheral/p", "master", "on");
    check_qom_str(qts, "/machine/peripheral/p", "memdev", "/objects/m");
    check_qom_str(qts, "/machine/peripheral/d", "master", "auto");
    check_qom_str(qts, "/machine/peripheral/d", "chardev", "c");
    o = qom_get(qts, "/machine/peripheral/d", "vectors");
    g_assert_cmpint(qnum_get_uint(qobject_to(QNum, o)), ==, 2);
    qobject_unref(o);
    o = qom_get(qts, "/machine/peripheral/d", "ioeventfd");
    g_assert_false(qbool_get_bool(qobject_to(QBool, o)));
    qobject_unref(o);

    /* what libvirt hot-plugs: object-add, then device_add with strings */
    qtest_qmp_assert_success(qts, "{'execute': 'object-add', 'arguments': "
                             "{'qom-type': 'memory-backend-memfd', "
                             "'id': 'm2', 'size': 1048576, 'share': true}}");
    qtest_qmp_assert_success(qts, "{'execute': 'device_add', 'arguments': "
                             "{'driver': 'ivshmem-plain', 'id': 'p2', "
                             "'memdev': 'm2', 'master': 'off'}}");
    check_qom_str(qts, "/machine/peripheral/p2", "master", "off");
    /* qom-set: realized devices refuse changes, as in 10.0.2 */
    resp = qtest_qmp(qts, "{'execute': 'qom-set', 'arguments': "
                     "{'path': '/machine/peripheral/p2', "
                     "'property': 'master', 'value': 'on'}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    check_qom_str(qts, "/machine/peripheral/p2", "master", "off");
    /* a boolean is not an OnOffAuto, in 10.0.2 either */
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'ivshmem-plain', 'id': 'p3', "
                     "'memdev': 'm2', 'master': true}}");
    g_assert(qdict_haskey(resp, "error"));
    qobject_unref(resp);
    qtest_quit(qts);
    server_stop(srv);
}

static void wait_migration_done(QTestState *qts);

static bool migration_blocked(QTestState *qts)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'migrate', 'arguments': "
                            "{'uri': 'exec:cat > /dev/null'}}");
    bool blocked = qdict_haskey(resp, "error");

    if (blocked) {
        g_test_message("migrate: %s",
                       qdict_get_str(qdict_get_qdict(resp, "error"), "desc"));
    } else {
        wait_migration_done(qts);
    }
    qobject_unref(resp);
    return blocked;
}

/* master=auto: always master for ivshmem-plain, peer 0 for -doorbell */
static void test_compat_master_auto(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    QTestState *plain;
    Guest *a, *b;

    plain = qtest_init("-M pc -object memory-backend-memfd,id=m,size=1M,"
                       "share=on -device ivshmem-plain,memdev=m,"
                       "master=auto");
    g_assert_false(migration_blocked(plain));
    qtest_quit(plain);
    a = doorbell_guest(srv, SLOT, ",master=auto");
    b = doorbell_guest(srv, SLOT, ",master=auto");
    g_assert_cmpint(reg_read(a, REG_IV_POSITION), ==, 0);
    g_assert_cmpint(reg_read(b, REG_IV_POSITION), ==, 1);
    g_assert_true(migration_blocked(b->qts));
    g_assert_false(migration_blocked(a->qts));
    guest_destroy(a);
    guest_destroy(b);
    server_stop(srv);
}

/* A backend without share=on: accepted as by 10.0.2, with a warning. */
static void test_compat_no_share(void)
{
    g_autofree char *err = NULL;
    Guest *g;
    int status;

    status = run_qemu_quit("-object memory-backend-ram,id=m,size=1M "
                           "-device ivshmem-plain,memdev=m,id=shm0", &err);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_nonnull(strstr(err, "warning"));
    g_assert_nonnull(strstr(err, "'shm0'"));
    g_assert_nonnull(strstr(err, "share=on"));
    g_free(err);
    status = run_qemu_quit("-object memory-backend-ram,id=m,size=1M,share=on "
                           "-device ivshmem-plain,memdev=m", &err);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_null(strstr(err, "share"));

    /* the guest still has working (private) memory in BAR2 */
    g = guest_start(SLOT, "-M pc -object memory-backend-ram,id=m,size=1M "
                    "-device ivshmem-plain,memdev=m,addr=%d", SLOT);
    g_assert_cmpuint(g->bar2_size, ==, 1 * MiB);
    qpci_io_writel(g->dev, g->bar2, 1 * MiB - 4, 0x5a5aa5a5);
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 1 * MiB - 4), ==,
                    0x5a5aa5a5);
    guest_destroy(g);
}

/*
 * QEMU 10.0.2 starts with a reconnecting chardev (reconnect-ms), whose
 * socket connects in the background: the device waits for it and for the
 * server's setup.
 */
static void test_compat_reconnect_startup(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    int local = server_join(srv, -1);
    Guest *g;

    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s,"
                    "reconnect-ms=100 -device ivshmem-doorbell,chardev=c,"
                    "vectors=1,addr=%d", srv->path, SLOT);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 1);
    ring(g, local, 0);
    g_assert_true(event_wait(server_efd(srv, local, 0), WAIT_MS));
    guest_destroy(g);
    server_stop(srv);
}

/*
 * Server tests
 */

/* Every pair of peers rings on every vector; @qemus are QEMU peers. */
static void check_all_doorbells(FakeServer *srv, Guest **qemus, int nqemu,
                                const int *qemu_ids)
{
    int i, j, v, id;

    for (i = 0; i < nqemu; i++) {
        for (v = 0; v < srv->nvectors; v++) {
            msix_program(qemus[i], v, false);
        }
    }
    /* QEMU peers ring everybody else */
    for (i = 0; i < nqemu; i++) {
        for (id = 0; id < MAX_PEERS; id++) {
            int target = -1;

            if (id == qemu_ids[i] || server_efd(srv, id, 0) < 0) {
                continue;
            }
            for (j = 0; j < nqemu; j++) {
                if (qemu_ids[j] == id) {
                    target = j;
                }
            }
            /* one ring, one interrupt, on that vector only */
            for (v = 0; v < srv->nvectors; v++) {
                ring(qemus[i], id, v);
                if (target >= 0) {
                    int w;

                    g_assert_true(wait_msi(qemus[target], v));
                    for (w = 0; w < srv->nvectors; w++) {
                        g_assert_false(msi_fired(qemus[target], w));
                    }
                } else {
                    g_assert_true(event_wait(server_efd(srv, id, v),
                                             WAIT_MS));
                }
            }
        }
    }
    /* local peers ring every QEMU peer */
    for (i = 0; i < nqemu; i++) {
        for (v = 0; v < srv->nvectors; v++) {
            int w;

            event_set(server_efd(srv, qemu_ids[i], v));
            g_assert_true(wait_msi(qemus[i], v));
            for (w = 0; w < srv->nvectors; w++) {
                g_assert_false(msi_fired(qemus[i], w));
            }
        }
    }
    /* nothing fired twice or elsewhere */
    g_usleep(100 * 1000);
    for (i = 0; i < nqemu; i++) {
        for (v = 0; v < srv->nvectors; v++) {
            g_assert_false(msi_fired(qemus[i], v));
        }
    }
    for (id = 0; id < MAX_PEERS; id++) {
        for (v = 0; v < srv->nvectors && server_efd(srv, id, 0) >= 0; v++) {
            g_assert_cmpuint(event_count(server_efd(srv, id, v), 0), ==, 0);
        }
    }
}

static void run_server_peers(int nqemu, int nlocal, int nvectors,
                             const char *extra)
{
    FakeServer *srv = server_start(1 * MiB, nvectors, 0);
    Guest *qemus[MAX_PEERS];
    int ids[MAX_PEERS], fds[MAX_PEERS];
    int i, j;
    uint32_t *host = map_fd(srv->shm_fd, 1 * MiB);

    for (i = 0; i < nlocal; i++) {
        server_join(srv, -1);
    }
    for (i = 0; i < nqemu; i++) {
        qemus[i] = doorbell_guest(srv, SLOT, extra);
        ids[i] = reg_read(qemus[i], REG_IV_POSITION);
        g_assert_cmpuint(ids[i], ==, nlocal + i);
        g_assert_true(qemus[i]->msix);
        g_assert_cmpuint(qpci_msix_table_size(qemus[i]->dev), ==, nvectors);
        g_assert_cmpuint(qemus[i]->bar2_size, ==, 1 * MiB);
        for (j = 0; j < i; j++) {
            g_assert_cmpuint(ids[i], !=, ids[j]);
        }
        fds[i] = count_fds(qtest_pid(qemus[i]->qts));
    }
    /*
     * Later QEMUs are announced to earlier ones asynchronously: wait until
     * each holds the eventfds of those that came after it, so that one
     * ring is enough.
     */
    for (i = 0; i < nqemu; i++) {
        g_assert_true(wait_fd_count(qtest_pid(qemus[i]->qts),
                                    fds[i] + nvectors * (nqemu - 1 - i)));
    }
    /* every QEMU sees the server's memory */
    for (i = 0; i < nqemu; i++) {
        host[i] = 0x1000 + i;
        for (j = 0; j < nqemu; j++) {
            g_assert_cmphex(qpci_io_readl(qemus[j]->dev, qemus[j]->bar2,
                                          i * 4), ==, 0x1000 + i);
        }
    }
    check_all_doorbells(srv, qemus, nqemu, ids);
    munmap(host, 1 * MiB);
    for (i = 0; i < nqemu; i++) {
        guest_destroy(qemus[i]);
    }
    server_stop(srv);
}

static void test_server_2_peers(void)
{
    run_server_peers(2, 0, 2, NULL);
}

static void test_server_8_peers(void)
{
    run_server_peers(3, 5, 4, NULL);
}

static void test_server_ioeventfd_off(void)
{
    run_server_peers(2, 1, 3, ",ioeventfd=off");
}

/*
 * Lines of the trace log @path that name trace event @event and contain
 * @needle (NULL: any)
 */
static int trace_count_text(const char *path, const char *event,
                            const char *needle)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    int i, n = 0;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (i = 0; lines[i]; i++) {
        const char *word = strstr(lines[i], event);

        n += word && word[strlen(event)] == ' ' &&
             (!needle || strstr(word, needle));
    }
    return n;
}

static int trace_count(const char *path, const char *event)
{
    return trace_count_text(path, event, NULL);
}

/*
 * With ioeventfd=on under KVM a doorbell for a known peer is signalled by
 * the kernel and never reaches the register handler (/ivshmem/kvm/irqfd).
 * Without KVM, as here, the memory core's software ioeventfd dispatch
 * would write the eventfd from the vCPU, which a peer can make block
 * (/ivshmem/isolation/saturated-peer): the device registers ioeventfds
 * with KVM only, so every doorbell goes through the handler whatever
 * ioeventfd says.  Counted with the ivshmem_reg_write and
 * ivshmem_doorbell trace events, while the peer counts exactly one ring
 * per doorbell.
 */
static void check_doorbell_path(bool ioeventfd)
{
    enum { RINGS = 10 };
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    int local = server_join(srv, -1);
    g_autofree char *log = tmp_path("trace");
    Guest *g;
    int i;

    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                    "-device ivshmem-doorbell,chardev=c,vectors=2,"
                    "ioeventfd=%s,addr=%d -trace ivshmem_reg_write "
                    "-trace ivshmem_doorbell -D %s", srv->path,
                    ioeventfd ? "on" : "off", SLOT, log);
    for (i = 0; i < RINGS; i++) {
        ring(g, local, i % 2);
        g_assert_true(event_wait(server_efd(srv, local, i % 2), WAIT_MS));
    }
    guest_destroy(g);
    g_assert_cmpint(trace_count(log, "ivshmem_reg_write"), ==, RINGS);
    g_assert_cmpint(trace_count(log, "ivshmem_doorbell"), ==, RINGS);
    unlink(log);
    server_stop(srv);
}

static void test_server_ioeventfd_bypass(void)
{
    check_doorbell_path(true);
    check_doorbell_path(false);
}

/*
 * A doorbell pair confined as distributions and libvirt run QEMU: in a
 * chroot without /proc, under the seccomp sandbox, or both.  The second
 * QEMU and a local peer join after the first is set up, so each QEMU
 * checks the eventfds of peers that join later.
 */
static bool qemu_has_sandbox(void)
{
    g_autofree char *cmd = g_strdup_printf("%s -sandbox on -version",
                                           g_getenv("QTEST_QEMU_BINARY"));
    int status = -1;

    return g_spawn_command_line_sync(cmd, NULL, NULL, &status, NULL) &&
           WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/*
 * LeakSanitizer needs /proc at exit and would fail the exit of a QEMU
 * that runs in a chroot: turn the leak check off (ASan's other checks stay
 * on) for the QEMUs started until asan_leaks_restore().
 */
static char *asan_leaks_off(void)
{
    char *saved = g_strdup(g_getenv("ASAN_OPTIONS"));
    g_autofree char *opts = g_strdup_printf("%s%sdetect_leaks=0",
                                            saved ? saved : "",
                                            saved ? ":" : "");

    g_setenv("ASAN_OPTIONS", opts, true);
    return saved;
}

static void asan_leaks_restore(char *saved)
{
    if (saved) {
        g_setenv("ASAN_OPTIONS", saved, true);
    } else {
        g_unsetenv("ASAN_OPTIONS");
    }
    g_free(saved);
}

static void test_server_confined(gconstpointer opaque)
{
    const char *mode = opaque;
    bool chroot = strstr(mode, "chroot");
    bool sandbox = strstr(mode, "sandbox");
    g_autofree char *root = tmp_path("empty-root");
    g_autofree char *confine = NULL;
    char *asan = NULL;
    FakeServer *srv;
    Guest *qemus[2];
    int ids[2], i;

    if (chroot && geteuid() != 0) {
        g_test_skip("-run-with chroot= needs root");
        return;
    }
    if (sandbox && !qemu_has_sandbox()) {
        g_test_skip("QEMU is built without seccomp (-sandbox)");
        return;
    }
    g_assert_cmpint(mkdir(root, 0755), ==, 0);
    confine = g_strdup_printf("%s%s%s", chroot ? "-run-with chroot=" : "",
                              chroot ? root : "",
                              sandbox ? " -sandbox on" : "");
    if (chroot) {
        asan = asan_leaks_off();
    }
    srv = server_start(1 * MiB, 2, 0);
    for (i = 0; i < 2; i++) {
        qemus[i] = guest_start(SLOT, "-M pc %s -chardev socket,id=c,path=%s "
                               "-device ivshmem-doorbell,chardev=c,vectors=2,"
                               "addr=%d", confine, srv->path, SLOT);
        ids[i] = reg_read(qemus[i], REG_IV_POSITION);
        g_assert_cmpint(ids[i], ==, i);
    }
    if (chroot) {
        asan_leaks_restore(asan);
    }
    server_join(srv, -1);
    check_all_doorbells(srv, qemus, 2, ids);
    for (i = 0; i < 2; i++) {
        guest_destroy(qemus[i]);
    }
    server_stop(srv);
    g_assert_cmpint(rmdir(root), ==, 0);
}

static void test_server_16bit_vector(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    int local = server_join(srv, -1);
    Guest *g = doorbell_guest(srv, SLOT, NULL);

    /* vector 0x100 does not exist: it must not alias vector 0 */
    ring(g, local, 0x100);
    g_assert_false(event_wait(server_efd(srv, local, 0), 200));
    ring(g, local, 0xffff);
    ring(g, 0xffff, 0);
    g_assert_false(event_wait(server_efd(srv, local, 0), 200));
    ring(g, local, 0);
    g_assert_true(event_wait(server_efd(srv, local, 0), WAIT_MS));
    guest_destroy(g);
    server_stop(srv);
}

static void test_server_masked_pending(void)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    Guest *g = doorbell_guest(srv, SLOT, NULL);
    int id = reg_read(g, REG_IV_POSITION);

    msix_program(g, 0, true);
    msix_program(g, 1, false);
    event_set(server_efd(srv, id, 0));
    g_assert_true(wait_pending(g, 0, WAIT_MS));
    g_assert_false(msi_fired(g, 0));
    g_assert_false(qpci_msix_pending(g->dev, 1));
    /* unmasking delivers the pending message */
    msix_program(g, 0, false);
    g_assert_true(wait_msi(g, 0));
    g_assert_false(qpci_msix_pending(g->dev, 0));
    guest_destroy(g);
    server_stop(srv);
}

/*
 * INTx of the device in SLOT on -M pc: pin A of slot 4 is PIIX3's PIRQD
 * (pc_piix.c: (pin + slot - 1) & 3); route it to ISA IRQ INTX_IRQ as a
 * BIOS would, and watch that IOAPIC input.
 */
#define INTX_IRQ        11
#define PIIX_PIRQC      0x60

static void intx_route(Guest *g)
{
    QPCIDevice *isa = qpci_device_find(g->bus, QPCI_DEVFN(1, 0));

    g_assert(isa);
    qpci_config_writeb(isa, PIIX_PIRQC + ((SLOT - 1) & 3), INTX_IRQ);
    g_free(isa);
    qtest_irq_intercept_in(g->qts, "ioapic");
}

/* Is the INTx line high, as the IOAPIC sees it and as PCI status says? */
static bool intx_level(Guest *g)
{
    bool line = qtest_get_irq(g->qts, INTX_IRQ);

    g_assert_cmpint(line, ==, !!(qpci_config_readw(g->dev, PCI_STATUS) &
                                 PCI_STATUS_INTERRUPT));
    return line;
}

/* Wait up to @ms for the INTx line to reach @level */
static bool intx_wait(Guest *g, bool level, int ms)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;

    while (intx_level(g) != level) {
        if (g_get_monotonic_time() > end) {
            return false;
        }
        g_usleep(1000);
    }
    return true;
}

static void test_server_intx(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    Guest *g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                           "-device ivshmem,chardev=c,msi=off,addr=%d",
                           srv->path, SLOT);
    int id = reg_read(g, REG_IV_POSITION);
    gint64 end;

    g_assert_false(g->msix);
    g_assert_cmphex(qpci_config_readb(g->dev, PCI_REVISION_ID), ==, 0);
    g_assert_cmphex(qpci_config_readb(g->dev, PCI_INTERRUPT_PIN), ==, 1);
    intx_route(g);
    g_assert_false(intx_level(g));

    /* IntrMask bit 0 set: a peer's ring raises INTx until status is read */
    reg_write(g, REG_INTR_MASK, 1);
    event_set(server_efd(srv, id, 0));
    g_assert_true(intx_wait(g, true, WAIT_MS));
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 1);   /* clears */
    g_assert_false(intx_level(g));

    /*
     * IntrMask bit 0 clear: the ring sets IntrStatus, and the line stays
     * low for as long as we look (sampled for 500 ms after the ring)
     */
    reg_write(g, REG_INTR_MASK, 0);
    event_set(server_efd(srv, id, 0));
    end = g_get_monotonic_time() + 500 * 1000;
    while (g_get_monotonic_time() < end) {
        g_assert_false(intx_level(g));
        g_usleep(1000);
    }
    /* the ring did arrive: setting the mask bit raises the line at once */
    reg_write(g, REG_INTR_MASK, 1);
    g_assert_true(intx_level(g));
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 1);
    g_assert_false(intx_level(g));
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 0);
    guest_destroy(g);
    server_stop(srv);
}

/* The form libvirt emits: legacy device, server, msi=on. */
static void test_server_legacy_msi(void)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    int local = server_join(srv, -1);
    Guest *g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                           "-device ivshmem,id=shmem5,size=1m,chardev=c,"
                           "msi=on,vectors=2,ioeventfd=off,role=peer,"
                           "addr=%d", srv->path, SLOT);
    int id = reg_read(g, REG_IV_POSITION);
    gint64 end;

    g_assert_cmpint(id, ==, 1);
    g_assert_true(g->msix);
    g_assert_cmpuint(qpci_msix_table_size(g->dev), ==, 2);
    g_assert_cmphex(qpci_config_readb(g->dev, PCI_REVISION_ID), ==, 0);
    msix_program(g, 1, false);
    event_set(server_efd(srv, id, 1));
    g_assert_true(wait_msi(g, 1));
    ring(g, local, 1);
    g_assert_true(event_wait(server_efd(srv, local, 1), WAIT_MS));
    /* with MSI-X disabled by the guest, interrupts use IntrStatus */
    qpci_msix_disable(g->dev);
    reg_write(g, REG_INTR_MASK, 1);
    event_set(server_efd(srv, id, 0));
    end = g_get_monotonic_time() + WAIT_MS * 1000;
    while (reg_read(g, REG_INTR_STATUS) != 1) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(1000);
    }
    g_assert_false(msi_fired(g, 0));
    guest_destroy(g);
    server_stop(srv);
}

static void test_server_disconnect_join(void)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    int local = server_join(srv, -1);
    Guest *g = doorbell_guest(srv, SLOT, NULL);
    int keep = dup(server_efd(srv, local, 1));
    int late, v, fds;

    ring(g, local, 1);
    g_assert_true(event_wait(keep, WAIT_MS));
    server_leave(srv, local);
    g_usleep(300 * 1000);
    reg_read(g, REG_IV_POSITION);       /* main loop has run */
    ring(g, local, 1);
    g_assert_false(event_wait(keep, 300));
    close(keep);

    fds = count_fds(qtest_pid(g->qts));
    late = server_join(srv, -1);
    g_assert_cmpint(late, !=, local);
    /* once QEMU holds the newcomer's two eventfds, one ring each arrives */
    g_assert_true(wait_fd_count(qtest_pid(g->qts), fds + 2));
    for (v = 0; v < 2; v++) {
        ring(g, late, v);
        g_assert_true(event_wait(server_efd(srv, late, v), WAIT_MS));
    }
    guest_destroy(g);
    server_stop(srv);
}

/* The server goes away after setup: the device keeps working. */
static void test_server_gone(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    int local = server_join(srv, -1);
    Guest *g = doorbell_guest(srv, SLOT, NULL);
    int id = reg_read(g, REG_IV_POSITION);

    g_mutex_lock(&srv->lock);
    close(srv->peers[id].conn);
    srv->peers[id].conn = -1;
    g_mutex_unlock(&srv->lock);
    g_usleep(200 * 1000);
    g_assert_cmpint(reg_read(g, REG_IV_POSITION), ==, id);
    ring(g, local, 0);
    g_assert_true(event_wait(server_efd(srv, local, 0), WAIT_MS));
    msix_program(g, 0, false);
    event_set(server_efd(srv, id, 0));
    g_assert_true(wait_msi(g, 0));
    guest_destroy(g);
    server_stop(srv);
}

static void test_server_fewer_more_vectors(void)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    Guest *g;
    int id;
    gint64 t0 = g_get_monotonic_time();

    /* the server hands out 2 vectors, we want 4: no hang, 2 work */
    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                    "-device ivshmem-doorbell,chardev=c,vectors=4,addr=%d",
                    srv->path, SLOT);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 10 * G_USEC_PER_SEC);
    id = reg_read(g, REG_IV_POSITION);
    msix_program(g, 1, false);
    event_set(server_efd(srv, id, 1));
    g_assert_true(wait_msi(g, 1));
    ring(g, id, 3);                     /* unconnected: ignored */
    guest_destroy(g);

    /* we want 1 of the 2: the extra fd is closed, vector 0 works */
    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                    "-device ivshmem-doorbell,chardev=c,vectors=1,addr=%d",
                    srv->path, SLOT);
    id = reg_read(g, REG_IV_POSITION);
    msix_program(g, 0, false);
    event_set(server_efd(srv, id, 0));
    g_assert_true(wait_msi(g, 0));
    guest_destroy(g);
    server_stop(srv);
}

static void test_server_master_not_first(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 1);
    g_autofree char *a = g_strdup_printf("-chardev socket,id=c,path=%s "
                                         "-device ivshmem-doorbell,"
                                         "chardev=c,master=on", srv->path);
    g_autofree char *b = g_strdup_printf("-chardev socket,id=c,path=%s "
                                         "-device ivshmem,chardev=c,"
                                         "role=master", srv->path);

    expect_start_failure(a, "property 'master'");
    expect_start_failure(b, "property 'role'");
    server_stop(srv);
}

static void test_server_reset_keeps_connection(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    int local = server_join(srv, -1);
    Guest *g = doorbell_guest(srv, SLOT, NULL);

    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 1);
    qtest_qmp_assert_success(g->qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(g->qts, "RESET");
    guest_detach(g);
    guest_attach(g, g->qts, SLOT);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 1);
    ring(g, local, 0);
    g_assert_true(event_wait(server_efd(srv, local, 0), WAIT_MS));
    guest_destroy(g);
    server_stop(srv);
}

/* Server restarts: the chardev reconnects (reconnect-ms). */

static Guest *reconnect_guest(FakeServer *srv)
{
    return guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s,"
                       "reconnect-ms=100 -device ivshmem-doorbell,id=iv0,"
                       "chardev=c,vectors=%d,addr=%d", srv->path,
                       srv->nvectors, SLOT);
}

static bool wait_position(Guest *g, uint32_t id)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    do {
        if (reg_read(g, REG_IV_POSITION) == id) {
            return true;
        }
        g_usleep(10000);
    } while (g_get_monotonic_time() < end);
    g_test_message("IVPosition %u, expected %u",
                   reg_read(g, REG_IV_POSITION), id);
    return false;
}

/* Wait until the fake server has handed peer @id its setup. */
static bool wait_joined(FakeServer *srv, int id)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    while (server_efd(srv, id, 0) < 0) {
        if (g_get_monotonic_time() > end) {
            return false;
        }
        g_usleep(10000);
    }
    return true;
}

/* Peer 2 (local) and the device (3) on a first server session. */
typedef struct RestartCase {
    FakeServer *srv;
    Guest *g;
    char *path;
    int shm;                    /* the first session's memory */
    int old_peer_efd;           /* peer 2's vector 0 */
    int old_own_efd;            /* the device's vector 0 as peer 3 */
    int qemu_fds;               /* QEMU's open fds in the first session */
} RestartCase;

static void restart_case_start(RestartCase *rc)
{
    rc->srv = server_start(1 * MiB, 1, 2);
    g_assert_cmpint(server_join(rc->srv, -1), ==, 2);
    rc->g = reconnect_guest(rc->srv);
    g_assert_cmpuint(reg_read(rc->g, REG_IV_POSITION), ==, 3);
    rc->path = g_strdup(rc->srv->path);
    rc->shm = dup(rc->srv->shm_fd);
    rc->old_peer_efd = dup(server_efd(rc->srv, 2, 0));
    rc->old_own_efd = dup(server_efd(rc->srv, 3, 0));
    rc->qemu_fds = count_fds(qtest_pid(rc->g->qts));
    msix_program(rc->g, 0, false);
    qpci_io_writel(rc->g->dev, rc->g->bar2, 0x80, 0x12345678);
    server_crash(rc->srv);
    /* server gone: doorbells between connected peers keep working */
    ring(rc->g, 2, 0);
    g_assert_true(event_wait(rc->old_peer_efd, WAIT_MS));
}

static void restart_case_end(RestartCase *rc)
{
    guest_destroy(rc->g);
    server_stop(rc->srv);
    close(rc->shm);
    close(rc->old_peer_efd);
    close(rc->old_own_efd);
    g_free(rc->path);
}

/* Restarted on the same memory: new ID, new peers, old peers dropped. */
static void test_server_restart_same_memory(void)
{
    RestartCase rc;
    Guest *g;

    restart_case_start(&rc);
    g = rc.g;
    /* peer 4 is local, the device becomes 5 */
    rc.srv = server_start_at(rc.path, rc.shm, 1 * MiB, 1, 4, 1);
    g_assert_true(wait_position(g, 5));
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x80), ==, 0x12345678);
    ring(g, 4, 0);
    g_assert_true(event_wait(server_efd(rc.srv, 4, 0), WAIT_MS));
    ring(g, 2, 0);
    g_assert_false(event_wait(rc.old_peer_efd, 300));
    event_set(server_efd(rc.srv, 5, 0));
    g_assert_true(wait_msi(g, 0));
    event_set(rc.old_own_efd);          /* no longer one of ours */
    g_assert_false(wait_msi_ms(g, 0, 300));
    /* one peer, one own vector, one socket: the old session's fds closed */
    g_assert_true(wait_fd_count(qtest_pid(g->qts), rc.qemu_fds));
    restart_case_end(&rc);
}

/*
 * Restarted with no vectors (-n 0) on the same memory: the device adopts
 * the new session with shared memory only, after the 500 ms pause that
 * ends a setup without vectors.
 */
static void test_server_restart_no_vectors(void)
{
    RestartCase rc;
    Guest *g;

    restart_case_start(&rc);
    g = rc.g;
    /* peer 4 is local, the device becomes 5 */
    rc.srv = server_start_at(rc.path, rc.shm, 1 * MiB, 0, 4, 1);
    g_assert_true(wait_position(g, 5));
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x80), ==, 0x12345678);
    ring(g, 2, 0);                      /* the old session is gone */
    g_assert_false(event_wait(rc.old_peer_efd, 300));
    event_set(rc.old_own_efd);
    g_assert_false(wait_msi_ms(g, 0, 300));
    /* no peer vector, no own vector: two fds fewer than before */
    g_assert_true(wait_fd_count(qtest_pid(g->qts), rc.qemu_fds - 2));
    restart_case_end(&rc);
}

/*
 * A master (peer 0) whose restarted server would make it peer 1 keeps
 * its session: only peer 0 can be the master, after a restart too.
 */
static void test_server_restart_master(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    g_autofree char *path = g_strdup(srv->path);
    int shm = dup(srv->shm_fd);
    Guest *g;

    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s,"
                    "reconnect-ms=100 -device ivshmem-doorbell,id=iv0,"
                    "chardev=c,vectors=1,master=on,addr=%d", path, SLOT);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 0);
    server_crash(srv);
    /* a local peer takes ID 0 first: the device would become peer 1 */
    srv = server_start_at(path, shm, 1 * MiB, 1, 0, 1);
    g_assert_true(wait_joined(srv, 1));
    g_usleep(300 * 1000);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 0);
    ring(g, 0, 0);                  /* the new peer 0 is not ours */
    g_assert_false(event_wait(server_efd(srv, 0, 0), 300));
    guest_destroy(g);
    server_stop(srv);
    close(shm);
}

/*
 * Restarted on other memory: refused, the device stays peer 3 on the
 * old memory with the old peers.  A later restart on the right memory
 * is adopted.
 */
static void test_server_restart_other_memory(void)
{
    RestartCase rc;
    int other = make_memfd(1 * MiB);
    uint32_t *host;
    Guest *g;

    restart_case_start(&rc);
    g = rc.g;
    host = map_fd(rc.shm, 1 * MiB);
    rc.srv = server_start_at(rc.path, other, 1 * MiB, 1, 4, 1);
    g_assert_true(wait_joined(rc.srv, 5));
    g_usleep(500 * 1000);               /* refused on the shm message */
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 3);
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x80), ==, 0x12345678);
    host[0x84 / 4] = 0xcafef00d;
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0x84), ==, 0xcafef00d);
    ring(g, 2, 0);
    g_assert_true(event_wait(rc.old_peer_efd, WAIT_MS));
    ring(g, 4, 0);
    g_assert_false(event_wait(server_efd(rc.srv, 4, 0), 300));
    event_set(rc.old_own_efd);
    g_assert_true(wait_msi(g, 0));
    /* the refused session's memory fd is closed, its socket stays */
    g_assert_true(wait_fd_count(qtest_pid(g->qts), rc.qemu_fds));

    server_crash(rc.srv);
    rc.srv = server_start_at(rc.path, rc.shm, 1 * MiB, 1, 6, 1);
    g_assert_true(wait_position(g, 7));
    ring(g, 6, 0);
    g_assert_true(event_wait(server_efd(rc.srv, 6, 0), WAIT_MS));
    munmap(host, 1 * MiB);
    close(other);
    restart_case_end(&rc);
}

/* Malformed servers: a scripted sequence, then wait for QEMU to go. */

enum { FD_NONE, FD_SHM, FD_SHM_ODD, FD_EVENTFD, FD_PIPE };

typedef struct ScriptMsg {
    int64_t value;
    int fd_kind;
} ScriptMsg;

typedef struct Script {
    const char *name;
    ScriptMsg msgs[8];
    int nmsgs;
    bool close_early;           /* close right after the messages */
    const char *error;
} Script;

typedef struct ScriptServer {
    int listen_fd;
    const Script *script;
} ScriptServer;

static int bogus_fd(int kind);

static int script_fd(int kind)
{
    int p[2];

    switch (kind) {
    case FD_SHM:
        return make_memfd(1 * MiB);
    case FD_SHM_ODD:
        return make_memfd(3 * 4096);
    case FD_EVENTFD:
        return make_eventfd();
    case FD_PIPE:
        g_assert_cmpint(pipe(p), ==, 0);
        close(p[1]);
        return p[0];
    default:
        return bogus_fd(kind);
    }
}

static gpointer script_thread(gpointer opaque)
{
    ScriptServer *ss = opaque;
    struct pollfd pfd = { .fd = ss->listen_fd, .events = POLLIN };
    char byte;
    int conn, i;

    if (poll(&pfd, 1, 10000) != 1) {
        return NULL;
    }
    conn = accept(ss->listen_fd, NULL, NULL);
    for (i = 0; i < ss->script->nmsgs; i++) {
        int fd = script_fd(ss->script->msgs[i].fd_kind);

        send_msg(conn, ss->script->msgs[i].value, fd);
        if (fd >= 0) {
            close(fd);
        }
    }
    if (!ss->script->close_early) {
        pfd.fd = conn;
        if (poll(&pfd, 1, 10000) == 1) {
            g_assert_cmpint(read(conn, &byte, 1), <=, 0);
        }
    }
    close(conn);
    return NULL;
}

static void test_malformed(gconstpointer opaque)
{
    const Script *script = opaque;
    g_autofree char *path = tmp_path("bad.sock");
    ScriptServer ss = { .listen_fd = listen_unix(path), .script = script };
    GThread *t = g_thread_new("script", script_thread, &ss);
    g_autofree char *args = g_strdup_printf("-chardev socket,id=c,path=%s "
                                            "-device ivshmem-doorbell,"
                                            "chardev=c,vectors=2", path);

    expect_start_failure(args, script->error);
    g_thread_join(t);
    close(ss.listen_fd);
    unlink(path);
}

static const Script scripts[] = {
    { "bad-version", { { 1, FD_NONE } }, 1, false, "protocol version 1" },
    { "id-too-big", { { 0, FD_NONE }, { 65536, FD_NONE } }, 2, false,
      "outside 0..65535" },
    { "id-negative", { { 0, FD_NONE }, { -7, FD_NONE } }, 2, false,
      "outside 0..65535" },
    { "shm-without-fd", { { 0, FD_NONE }, { 0, FD_NONE },
      { -1, FD_NONE } }, 3, false, "without the fd" },
    { "shm-is-eventfd", { { 0, FD_NONE }, { 0, FD_NONE },
      { -1, FD_EVENTFD } }, 3, false, "not a shared memory object" },
    { "shm-odd-size", { { 0, FD_NONE }, { 0, FD_NONE },
      { -1, FD_SHM_ODD } }, 3, false, "not a power of two" },
    { "fd-with-version", { { 0, FD_EVENTFD } }, 1, false,
      "sent an fd with message" },
    { "close-after-version", { { 0, FD_NONE } }, 1, true,
      "closed the connection during setup" },
    { "close-after-id", { { 0, FD_NONE }, { 3, FD_NONE } }, 2, true,
      "closed the connection during setup" },
    { "vector-is-pipe", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 5, FD_PIPE } }, 4, false, "not an eventfd" },
    { "own-vector-is-shm", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_SHM } }, 4, false, "not an eventfd" },
};

/* The same sequences on a hot-plugged device: no fd survives the error. */
static void test_malformed_hotplug(gconstpointer opaque)
{
    const Script *script = opaque;
    g_autofree char *path = tmp_path("bad-hp.sock");
    ScriptServer ss = { .listen_fd = listen_unix(path), .script = script };
    GThread *t = g_thread_new("script", script_thread, &ss);
    QTestState *qts = qtest_initf("-M pc -chardev socket,id=c,path=%s",
                                  path);
    pid_t pid = qtest_pid(qts);
    int before;
    QDict *resp;
    const char *desc;

    /* let the server's messages arrive; they wait in the socket */
    g_usleep(100 * 1000);
    before = count_fds(pid);
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'ivshmem-doorbell', 'chardev': 'c', "
                     "'vectors': 2, 'id': 'iv'}}");
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("device_add: %s", desc);
    g_assert_nonnull(strstr(desc, script->error));
    qobject_unref(resp);
    g_assert_true(wait_fd_count(pid, before));
    qtest_quit(qts);
    g_thread_join(t);
    close(ss.listen_fd);
    unlink(path);
}

/*
 * Servers that never complete a setup.  The device's one deadline for the
 * whole setup (5 s) must end each, at start-up and at hot-plug, with an
 * error naming the chardev, and QEMU must answer QMP right afterwards.
 */

#define SETUP_DEADLINE_MS 5000

typedef enum StallKind {
    STALL_SILENT,               /* accepts, sends nothing */
    STALL_PARTIAL,              /* version, then 3 bytes of the ID */
    STALL_DRIP,                 /* a new peer's vector every 150 ms */
} StallKind;

typedef struct Stall {
    const char *name;
    StallKind kind;
    const char *error;
} Stall;

static const Stall stalls[] = {
    { "silent", STALL_SILENT, "chardev 'c': the ivshmem server did not "
      "complete the setup within 5000 ms: it sent nothing" },
    { "partial", STALL_PARTIAL, "chardev 'c': the ivshmem server did not "
      "complete the setup within 5000 ms: it sent only the protocol "
      "version and part of a message" },
    { "drip", STALL_DRIP, "chardev 'c': the ivshmem server did not "
      "complete the setup within 5000 ms: it sent the shared memory but "
      "none of this peer's own vectors" },
};

typedef struct StallServer {
    int listen_fd;
    const Stall *stall;
    bool stop;
    int sent;                   /* drip: vector messages sent */
} StallServer;

static gpointer stall_thread(gpointer opaque)
{
    StallServer *ss = opaque;
    struct pollfd pfd = { .fd = ss->listen_fd, .events = POLLIN };
    uint8_t buf[IVSHMEM_MSG_SIZE];
    int conn, fd;

    if (poll(&pfd, 1, 10000) != 1) {
        return NULL;
    }
    conn = accept(ss->listen_fd, NULL, NULL);
    g_assert_cmpint(conn, >=, 0);
    switch (ss->stall->kind) {
    case STALL_SILENT:
        break;
    case STALL_PARTIAL:
        send_msg(conn, IVSHMEM_PROTOCOL_VERSION, -1);
        ivshmem_proto_encode(1, buf);
        g_assert_cmpint(write(conn, buf, 3), ==, 3);
        break;
    case STALL_DRIP:
        send_msg(conn, IVSHMEM_PROTOCOL_VERSION, -1);
        send_msg(conn, 1, -1);
        fd = make_memfd(1 * MiB);
        send_msg(conn, IVSHMEM_MSG_SHM, fd);
        close(fd);
        break;
    }
    /* until QEMU hangs up or the test is over */
    pfd.fd = conn;
    while (!qatomic_read(&ss->stop)) {
        if (poll(&pfd, 1, 150) == 1) {
            break;
        }
        if (ss->stall->kind == STALL_DRIP && ss->sent < 400) {
            fd = make_eventfd();
            send_msg(conn, 100 + ss->sent++, fd);
            close(fd);
        }
    }
    close(conn);
    return NULL;
}

static void stall_server_start(StallServer *ss, const Stall *stall,
                               const char *path, GThread **t)
{
    *ss = (StallServer) { .listen_fd = listen_unix(path), .stall = stall };
    *t = g_thread_new("stall", stall_thread, ss);
}

static void stall_server_stop(StallServer *ss, GThread *t, const char *path)
{
    qatomic_set(&ss->stop, true);
    g_thread_join(t);
    close(ss->listen_fd);
    unlink(path);
    if (ss->stall->kind == STALL_DRIP) {
        g_test_message("drip: %d vector messages sent", ss->sent);
    }
}

static void test_setup_deadline_startup(gconstpointer opaque)
{
    const Stall *stall = opaque;
    g_autofree char *path = tmp_path("stall.sock");
    g_autofree char *args = g_strdup_printf("-chardev socket,id=c,path=%s "
                                            "-device ivshmem-doorbell,"
                                            "chardev=c,vectors=2", path);
    StallServer ss;
    GThread *t;
    gint64 t0, ms;

    stall_server_start(&ss, stall, path, &t);
    t0 = g_get_monotonic_time();
    expect_start_failure(args, stall->error);     /* kills QEMU after 10 s */
    ms = (g_get_monotonic_time() - t0) / 1000;
    g_test_message("QEMU exited after %" PRId64 " ms", ms);
    g_assert_cmpint(ms, >=, SETUP_DEADLINE_MS - 100);
    g_assert_cmpint(ms, <, SETUP_DEADLINE_MS + 3000);
    stall_server_stop(&ss, t, path);
}

static void hang_detected(int sig)
{
    g_printerr("QMP did not answer within 30 s\n");
    abort();                    /* libqtest's abort hook kills QEMU */
}

static void test_setup_deadline_hotplug(gconstpointer opaque)
{
    const Stall *stall = opaque;
    g_autofree char *path = tmp_path("stall-hp.sock");
    struct sigaction sa = { .sa_handler = hang_detected };
    StallServer ss;
    GThread *t;
    QTestState *qts;
    QDict *resp;
    const char *desc;
    gint64 t0, ms;
    int before;

    stall_server_start(&ss, stall, path, &t);
    qts = qtest_initf("-M pc -chardev socket,id=c,path=%s", path);
    g_usleep(100 * 1000);
    before = count_fds(qtest_pid(qts));
    sigaction(SIGALRM, &sa, NULL);
    alarm(30);
    t0 = g_get_monotonic_time();
    resp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': "
                     "{'driver': 'ivshmem-doorbell', 'chardev': 'c', "
                     "'vectors': 2, 'id': 'iv'}}");
    ms = (g_get_monotonic_time() - t0) / 1000;
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("device_add after %" PRId64 " ms: %s", ms, desc);
    g_assert_nonnull(strstr(desc, stall->error));
    g_assert_cmpint(ms, >=, SETUP_DEADLINE_MS - 100);
    g_assert_cmpint(ms, <, SETUP_DEADLINE_MS + 2000);
    qobject_unref(resp);

    /* the monitor is back at once, and the device kept no fd */
    t0 = g_get_monotonic_time();
    resp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 1000 * 1000);
    alarm(0);
    g_assert_true(wait_fd_count(qtest_pid(qts), before));
    qtest_quit(qts);
    stall_server_stop(&ss, t, path);
}

/* Hot-plug and unplug: every fd taken by the device is released. */

/*
 * q35: the guest powers the root port's slot off, so that device_del
 * completes without a round trip through a guest driver.
 */
static void q35_power_off_slot(QTestState *qts)
{
    QPCIBus *bus = qpci_new_pc(qts, NULL);
    QPCIDevice *rp = qpci_device_find(bus, QPCI_DEVFN(0x10, 0));
    uint8_t cap = qpci_find_capability(rp, PCI_CAP_ID_EXP, 0);
    uint16_t ctl = qpci_config_readw(rp, cap + PCI_EXP_SLTCTL);

    qpci_config_writew(rp, cap + PCI_EXP_SLTCTL,
                       ctl | PCI_EXP_SLTCTL_PCC | PCI_EXP_SLTCTL_PWR_IND_OFF);
    g_free(rp);
    qpci_free_pc(bus);
}

static void hotplug_cycle(QTestState *qts, const char *driver,
                          QDict *args, bool q35)
{
    pid_t pid = qtest_pid(qts);
    int before = count_fds(pid);

    qdict_put_str(args, "id", "iv");
    if (q35) {
        qdict_put_str(args, "bus", "rp0");
        qdict_put_str(args, "addr", "0");
    } else {
        qdict_put_str(args, "addr", stringify(SLOT));
    }
    qtest_qmp_device_add_qdict(qts, driver, args);
    qobject_unref(args);
    if (q35) {
        qtest_qmp_device_del(qts, "iv");
    } else {
        qpci_unplug_acpi_device_test(qts, "iv", SLOT);
    }
    g_assert_true(wait_fd_count(pid, before));
}

static void run_hotplug(bool q35)
{
    FakeServer *srv = server_start(1 * MiB, 2, 0);
    g_autofree char *file = tmp_path("hotplug");
    g_autofree char *name = shm_name("hotplug");
    QTestState *qts;
    QDict *args;
    int i;

    server_join(srv, -1);
    qts = qtest_initf("-M %s %s -object memory-backend-file,id=m,size=1M,"
                      "mem-path=%s,share=on "
                      "-chardev socket,id=c1,path=%s "
                      "-chardev socket,id=c2,path=%s",
                      q35 ? "q35 -global ICH9-LPC.acpi-pci-hotplug-with-"
                      "bridge-support=off" : "pc",
                      q35 ? "-device pcie-root-port,id=rp0,chassis=1,"
                      "addr=10.0" : "", file, srv->path, srv->path);
    if (q35) {
        q35_power_off_slot(qts);
    }
    /* twice: the memdev can be used again after unplug */
    for (i = 0; i < 2; i++) {
        args = qdict_new();
        qdict_put_str(args, "memdev", "m");
        hotplug_cycle(qts, "ivshmem-plain", args, q35);
    }
    args = qdict_new();
    qdict_put_str(args, "chardev", "c1");
    qdict_put_int(args, "vectors", 2);
    hotplug_cycle(qts, "ivshmem-doorbell", args, q35);
    args = qdict_new();
    qdict_put_str(args, "chardev", "c2");
    qdict_put_bool(args, "msi", false);
    hotplug_cycle(qts, "ivshmem", args, q35);
    args = qdict_new();
    qdict_put_str(args, "shm", name);
    qdict_put_str(args, "size", "1M");
    hotplug_cycle(qts, "ivshmem", args, q35);
    qtest_quit(qts);
    server_stop(srv);
    shm_unlink(name);
    unlink(file);
}

/*
 * Hot-unplug a doorbell device after another peer joined, then remove its
 * chardev, as libvirt does: stock QEMU 10.0.2 corrupts its heap there.
 */
static void test_hotplug_unplug_after_join(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    QTestState *qts = qtest_init("-M pc");
    int before = count_fds(qtest_pid(qts));
    Guest g;
    QDict *resp;
    int local, efd;

    resp = qtest_qmp(qts, "{'execute': 'chardev-add', 'arguments': "
                     "{'id': 'c', 'backend': {'type': 'socket', 'data': "
                     "{'server': false, 'addr': {'type': 'unix', "
                     "'data': {'path': %s}}}}}}", srv->path);
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    qtest_qmp_device_add(qts, "ivshmem-doorbell", "iv", "{'chardev': 'c', "
                         "'vectors': 1, 'addr': %s}", stringify(SLOT));
    g_assert_true(wait_joined(srv, 0));
    local = server_join(srv, -1);           /* announced to the device */
    guest_attach(&g, qts, SLOT);
    efd = server_efd(srv, local, 0);
    g_usleep(100 * 1000);                   /* the announcement arrives */
    ring(&g, local, 0);
    g_assert_true(event_wait(efd, WAIT_MS));
    guest_detach(&g);
    qpci_unplug_acpi_device_test(qts, "iv", SLOT);
    resp = qtest_qmp(qts, "{'execute': 'chardev-remove', 'arguments': "
                     "{'id': 'c'}}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    resp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(resp, "return"));
    qobject_unref(resp);
    g_assert_true(wait_fd_count(qtest_pid(qts), before));
    qtest_quit(qts);
    server_stop(srv);
}

static void test_hotplug_pc(void)
{
    run_hotplug(false);
}

static void test_hotplug_q35(void)
{
    run_hotplug(true);
}

/* Migration */

static void wait_migration_done(QTestState *qts)
{
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    for (;;) {
        QDict *resp = qtest_qmp(qts, "{'execute': 'query-migrate'}");
        QDict *ret = qdict_get_qdict(resp, "return");
        const char *status = qdict_get_try_str(ret, "status");
        bool done = status && g_str_equal(status, "completed");

        g_assert(!status || !g_str_equal(status, "failed"));
        qobject_unref(resp);
        if (done) {
            return;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(20000);
    }
}

static void test_migrate_master(void)
{
    g_autofree char *src_file = tmp_path("mig-src");
    g_autofree char *dst_file = tmp_path("mig-dst");
    g_autofree char *sock = tmp_path("mig.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    Guest *src, *dst;
    uint32_t *host;

    src = guest_start(SLOT, "-M pc -object memory-backend-file,id=m,size=1M,"
                      "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                      "master=on,addr=%d", src_file, SLOT);
    dst = g_new0(Guest, 1);
    dst->qts = qtest_initf("-M pc -object memory-backend-file,id=m,size=1M,"
                           "mem-path=%s,share=on -device ivshmem-plain,"
                           "memdev=m,master=on,addr=%d -incoming %s",
                           dst_file, SLOT, uri);
    qpci_io_writel(src->dev, src->bar2, 0x800, 0x13572468);
    qpci_io_writel(src->dev, src->bar2, 1 * MiB - 4, 0x24681357);
    reg_write(src, REG_INTR_MASK, 0xabcd);
    qtest_qmp_assert_success(src->qts, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    wait_migration_done(src->qts);
    qtest_qmp_eventwait(dst->qts, "RESUME");
    host = map_file(dst_file, 1 * MiB);
    g_assert_cmphex(host[0x800 / 4], ==, 0x13572468);
    g_assert_cmphex(host[1 * MiB / 4 - 1], ==, 0x24681357);
    munmap(host, 1 * MiB);
    /* the guest on the destination sees the same device state */
    dst->bus = qpci_new_pc(dst->qts, NULL);
    dst->dev = qpci_device_find(dst->bus, QPCI_DEVFN(SLOT, 0));
    dst->bar0 = qpci_iomap(dst->dev, 0, NULL);
    dst->bar2 = qpci_iomap(dst->dev, 2, NULL);
    g_assert_cmphex(reg_read(dst, REG_INTR_MASK), ==, 0xabcd);
    g_assert_cmphex(qpci_io_readl(dst->dev, dst->bar2, 0x800), ==,
                    0x13572468);
    guest_destroy(src);
    guest_destroy(dst);
    unlink(src_file);
    unlink(dst_file);
}

/*
 * QEMU <= 3.1's legacy ivshmem sent a section 'ivshmem', version 1: PCI
 * device state, MSI-X state, uint32 IntrStatus, uint32 IntrMask.  Ours
 * has IntrMask first, so it must not accept that version: an old stream
 * would be misread.  The old stream is reproduced from one of ours
 * (same PCI and MSI-X encoding): version set to 1 and the two registers,
 * which carry marker values, swapped.
 */
#define OLD_MARK_MASK   0x4d41534b      /* "MASK" on the (big-endian) wire */
#define OLD_MARK_STATUS 0x53544154      /* "STAT" */
#define LEGACY_VERSION  2               /* the device's section version */

static void make_old_legacy_stream(const char *in, const char *out)
{
    /* the legacy device at SLOT 4: "0000:00:04.0/ivshmem", instance 0 */
    static const char idstr[] = "0000:00:04.0/ivshmem";
    const uint8_t regs[8] = { 'M', 'A', 'S', 'K', 'S', 'T', 'A', 'T' };
    const uint8_t old_regs[8] = { 'S', 'T', 'A', 'T', 'M', 'A', 'S', 'K' };
    g_autofree uint8_t *hdr = g_malloc(1 + strlen(idstr) + 4);
    g_autofree char *buf = NULL;
    uint8_t *p, *end, *data;
    gsize len;

    g_assert_true(g_file_get_contents(in, &buf, &len, NULL));
    end = (uint8_t *)buf + len;
    /* header: type FULL, section ID, idstr length, idstr, instance ID */
    hdr[0] = strlen(idstr);
    memcpy(hdr + 1, idstr, strlen(idstr));
    memset(hdr + 1 + strlen(idstr), 0, 4);
    p = memmem(buf, len, hdr, 1 + strlen(idstr) + 4);
    g_assert_nonnull(p);
    g_assert_cmpint(p[-5], ==, 4);              /* QEMU_VM_SECTION_FULL */
    p += 1 + strlen(idstr) + 4;                  /* the version */
    g_assert_cmpint(ldl_be_p(p), ==, LEGACY_VERSION);
    stl_be_p(p, 1);
    /* the registers end the section, right before its footer */
    data = memmem(p, end - p, regs, sizeof(regs));
    g_assert_nonnull(data);
    g_assert_cmpint(data[8], ==, 0x7e);         /* QEMU_VM_SECTION_FOOTER */
    memcpy(data, old_regs, sizeof(old_regs));
    g_assert_true(g_file_set_contents(out, buf, len, NULL));
}

static void test_migrate_legacy_old_stream(void)
{
    const char *qemu = g_getenv("QTEST_QEMU_BINARY");
    g_autofree char *src_name = shm_name("old-src");
    g_autofree char *dst_name = shm_name("old-dst");
    g_autofree char *file = tmp_path("legacy.mig");
    g_autofree char *old = tmp_path("legacy-old.mig");
    g_autofree char *uri = g_strdup_printf("exec:cat > %s", file);
    g_autofree char *cmd = NULL;
    g_autofree char *err = NULL;
    const char *argv[] = { "/bin/sh", "-c", NULL, NULL };
    GError *gerr = NULL;
    Guest *src, *dst;
    int status;

    src = guest_start(SLOT, "-M pc -device ivshmem,shm=%s,size=1M,"
                      "role=master,addr=%d", src_name, SLOT);
    reg_write(src, REG_INTR_MASK, OLD_MARK_MASK);
    reg_write(src, REG_INTR_STATUS, OLD_MARK_STATUS);
    qtest_qmp_assert_success(src->qts, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    wait_migration_done(src->qts);
    guest_destroy(src);

    /* our own stream loads, registers in place */
    dst = g_new0(Guest, 1);
    dst->qts = qtest_initf("-M pc -device ivshmem,shm=%s,size=1M,"
                           "role=master,addr=%d -incoming 'exec:cat %s'",
                           dst_name, SLOT, file);
    qtest_qmp_eventwait(dst->qts, "RESUME");
    dst->bus = qpci_new_pc(dst->qts, NULL);
    dst->dev = qpci_device_find(dst->bus, QPCI_DEVFN(SLOT, 0));
    dst->bar0 = qpci_iomap(dst->dev, 0, NULL);
    g_assert_cmphex(reg_read(dst, REG_INTR_MASK), ==, OLD_MARK_MASK);
    g_assert_cmphex(reg_read(dst, REG_INTR_STATUS), ==, OLD_MARK_STATUS);
    guest_destroy(dst);

    /* the old layout is refused, with an error naming the section */
    make_old_legacy_stream(file, old);
    cmd = g_strdup_printf("timeout 20 %s -M pc -accel qtest -display none "
                          "-monitor none -device ivshmem,shm=%s,size=1M,"
                          "role=master,addr=%d -incoming 'exec:cat %s' "
                          "< /dev/null > /dev/null", qemu, dst_name, SLOT,
                          old);
    argv[2] = cmd;
    g_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL,
                          NULL, NULL, &err, &status, &gerr));
    g_test_message("old stream -> status %d, %s", status, err);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    g_assert_nonnull(strstr(err, "ivshmem: incoming version_id 1 is too old "
                            "for local minimum version_id"));
    shm_unlink(src_name);
    shm_unlink(dst_name);
    unlink(file);
    unlink(old);
}

/*
 * A doorbell master migrates.  Source and destination have servers of
 * their own with distinct memory, so only the migration can bring the
 * region's content over; the destination server has a live peer that
 * the migrated guest then rings and is rung by, through the MSI-X table
 * and pending bits programmed on the source.
 */
static void test_migrate_doorbell_master(void)
{
    FakeServer *srv_src = server_start(1 * MiB, 2, 0);
    FakeServer *srv_dst = server_start(1 * MiB, 2, 0);
    int local_dst = server_join(srv_dst, -1);
    g_autofree char *sock = tmp_path("mig-db.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    uint32_t *mem_src = map_fd(srv_src->shm_fd, 1 * MiB);
    uint32_t *mem_dst = map_fd(srv_dst->shm_fd, 1 * MiB);
    Guest *src = doorbell_guest(srv_src, SLOT, ",master=on");
    Guest *dst = g_new0(Guest, 1);
    int src_id = reg_read(src, REG_IV_POSITION);

    g_assert_cmpint(src_id, ==, 0);        /* a master is peer 0 */
    dst->qts = qtest_initf("-M pc -chardev socket,id=c,path=%s "
                           "-device ivshmem-doorbell,chardev=c,vectors=2,"
                           "master=on,addr=%d -incoming %s",
                           srv_dst->path, SLOT, uri);
    /* guest state on the source: memory, MSI-X table, a pending vector */
    qpci_io_writel(src->dev, src->bar2, 0x10, 0x0ddba11);
    qpci_io_writel(src->dev, src->bar2, 1 * MiB - 4, 0xfeedf00d);
    g_assert_cmphex(mem_src[0x10 / 4], ==, 0x0ddba11);
    msix_program(src, 0, false);
    msix_program(src, 1, true);
    event_set(server_efd(srv_src, src_id, 1));
    g_assert_true(wait_pending(src, 1, WAIT_MS));
    g_assert_cmphex(mem_dst[0x10 / 4], ==, 0);     /* distinct memory */

    qtest_qmp_assert_success(src->qts, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    wait_migration_done(src->qts);
    qtest_qmp_eventwait(dst->qts, "RESUME");

    /* the region came with the migration, into the destination's memory */
    g_assert_cmphex(mem_dst[0x10 / 4], ==, 0x0ddba11);
    g_assert_cmphex(mem_dst[1 * MiB / 4 - 1], ==, 0xfeedf00d);
    guest_attach(dst, dst->qts, SLOT);
    g_assert_cmpint(reg_read(dst, REG_IV_POSITION), ==, local_dst + 1);
    g_assert_cmphex(qpci_io_readl(dst->dev, dst->bar2, 0x10), ==, 0x0ddba11);
    /* MSI-X state: vector 1 still masked and pending, vector 0 not */
    g_assert_true(qpci_msix_masked(dst->dev, 1));
    g_assert_true(qpci_msix_pending(dst->dev, 1));
    g_assert_false(qpci_msix_pending(dst->dev, 0));
    /* the live peer rings vector 0: the source's table entry delivers it */
    event_set(server_efd(srv_dst, local_dst + 1, 0));
    g_assert_true(wait_msi(dst, 0));
    /* unmasking vector 1 delivers what was pending on the source */
    msix_program(dst, 1, false);
    g_assert_true(wait_msi(dst, 1));
    g_assert_false(qpci_msix_pending(dst->dev, 1));
    /* and a doorbell after the migration reaches the live peer, once */
    ring(dst, local_dst, 1);
    g_assert_true(event_wait(server_efd(srv_dst, local_dst, 1), WAIT_MS));
    g_usleep(100 * 1000);
    g_assert_false(msi_fired(dst, 0));
    g_assert_false(msi_fired(dst, 1));

    munmap(mem_src, 1 * MiB);
    munmap(mem_dst, 1 * MiB);
    guest_destroy(src);
    guest_destroy(dst);
    server_stop(srv_src);
    server_stop(srv_dst);
}

static void test_migrate_peer_blocked(void)
{
    g_autofree char *file = tmp_path("mig-peer");
    g_autofree char *sock = tmp_path("mig-peer.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    QTestState *qts;
    QDict *resp;
    const char *desc;

    qts = qtest_initf("-M pc -object memory-backend-file,id=m,size=1M,"
                      "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                      "id=shm0,addr=%d", file, SLOT);
    resp = qtest_qmp(qts, "{'execute': 'migrate', 'arguments': "
                     "{'uri': %s}}", uri);
    g_assert(qdict_haskey(resp, "error"));
    desc = qdict_get_str(qdict_get_qdict(resp, "error"), "desc");
    g_test_message("migrate: %s", desc);
    g_assert_nonnull(strstr(desc, "shm0"));
    g_assert_nonnull(strstr(desc, "nplug"));
    g_assert_nonnull(strstr(desc, "master=on"));
    qobject_unref(resp);
    /* unplugging the device lifts the blocker */
    qpci_unplug_acpi_device_test(qts, "shm0", SLOT);
    qtest_qmp_assert_success(qts, "{'execute': 'migrate', 'arguments': "
                             "{'uri': 'exec:cat > /dev/null'}}");
    wait_migration_done(qts);
    qtest_quit(qts);
    unlink(file);
}

/* A destination that is not master refuses the state, as 10.0.2 does. */
static void test_migrate_peer_destination(void)
{
    const char *qemu = g_getenv("QTEST_QEMU_BINARY");
    g_autofree char *src_file = tmp_path("mig-pd-src");
    g_autofree char *dst_file = tmp_path("mig-pd-dst");
    g_autofree char *sock = tmp_path("mig-pd.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    g_autofree char *cmd = NULL;
    g_auto(GStrv) argv = NULL;
    GString *buf = g_string_new("");
    GError *gerr = NULL;
    QTestState *src;
    char chunk[512];
    int err_fd, wstatus;
    ssize_t n;
    GPid pid;
    gint64 end;

    cmd = g_strdup_printf("%s -M pc -accel qtest -display none -monitor none "
                          "-object memory-backend-file,id=m,size=1M,"
                          "mem-path=%s,share=on -device ivshmem-plain,"
                          "memdev=m,master=off,id=peer0,addr=%d -incoming %s",
                          qemu, dst_file, SLOT, uri);
    g_assert(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    g_assert(g_spawn_async_with_pipes(NULL, argv, NULL,
                                      G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                      &pid, NULL, NULL, &err_fd, &gerr));
    end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (access(sock, F_OK) != 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(10000);
    }
    src = qtest_initf("-M pc -object memory-backend-file,id=m,size=1M,"
                      "mem-path=%s,share=on -device ivshmem-plain,memdev=m,"
                      "master=on,addr=%d", src_file, SLOT);
    qtest_qmp_assert_success(src, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    /* the destination fails and exits */
    end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (waitpid(pid, &wstatus, WNOHANG) == 0) {
        if (g_get_monotonic_time() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &wstatus, 0);
            g_test_message("the destination accepted the state");
            g_assert_not_reached();
        }
        g_usleep(10000);
    }
    while ((n = read(err_fd, chunk, sizeof(chunk))) > 0) {
        g_string_append_len(buf, chunk, n);
    }
    close(err_fd);
    g_spawn_close_pid(pid);
    g_test_message("destination: %s", buf->str);
    g_assert_true(WIFEXITED(wstatus));
    g_assert_cmpint(WEXITSTATUS(wstatus), !=, 0);
    g_assert_nonnull(strstr(buf->str, "'peer0'"));
    g_assert_nonnull(strstr(buf->str, "peer devices are not migratable"));
    g_assert_nonnull(strstr(buf->str, "master=on"));
    g_string_free(buf, true);
    qtest_quit(src);
    unlink(src_file);
    unlink(dst_file);
}

/* KVM: irqfd set-up and teardown (these hosts cannot run a guest) */

/* Skips the running test unless QEMU can use /dev/kvm here. */
/*
 * Skip a KVM case visibly; with REQUIRE_KVM=1 (machines where KVM
 * works) fail it instead.
 */
static void kvm_skip(const char *why)
{
    if (g_strcmp0(g_getenv("REQUIRE_KVM"), "1") == 0) {
        g_test_message("REQUIRE_KVM=1: %s", why);
        g_test_fail();
    } else {
        g_test_skip(why);
    }
}

static bool kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR);

    if (fd < 0) {
        kvm_skip("/dev/kvm is not usable");
        return false;
    }
    close(fd);
    if (!qtest_has_accel("kvm")) {
        kvm_skip("KVM support not built in");
        return false;
    }
    return true;
}

/*
 * Thousands of peers.  Every ioeventfd lengthens each doorbell's lookup
 * (KVM's and, without KVM, QEMU's linear scan) and each memory
 * transaction, so the device gives the first IOEVENTFD_BUDGET peer
 * vectors an ioeventfd and rings the others from its register handler.
 * A bulk server announces @npeers peers with one vector each, then the
 * device's own vector.
 */

#define IOEVENTFD_BUDGET 256    /* the device's default */

typedef struct BulkServer {
    char *path;
    int listen_fd;
    int npeers;
    int *efds;                  /* [npeers + 1]: the peers', then ours */
    bool stop;
    GThread *thread;
} BulkServer;

static gpointer bulk_thread(gpointer opaque)
{
    BulkServer *bs = opaque;
    struct pollfd pfd = { .fd = bs->listen_fd, .events = POLLIN };
    int conn, shm, i;

    if (poll(&pfd, 1, 10000) != 1) {
        return NULL;
    }
    conn = accept(bs->listen_fd, NULL, NULL);
    g_assert_cmpint(conn, >=, 0);
    send_msg(conn, IVSHMEM_PROTOCOL_VERSION, -1);
    send_msg(conn, bs->npeers, -1);
    shm = make_memfd(1 * MiB);
    send_msg(conn, IVSHMEM_MSG_SHM, shm);
    close(shm);
    for (i = 0; i <= bs->npeers; i++) {
        send_msg(conn, i, bs->efds[i]);
    }
    pfd.fd = conn;
    while (!qatomic_read(&bs->stop) && poll(&pfd, 1, 50) == 0) {
        /* until QEMU hangs up or the test is over */
    }
    close(conn);
    return NULL;
}

static BulkServer *bulk_server_start(int npeers)
{
    BulkServer *bs = g_new0(BulkServer, 1);
    struct rlimit rl;
    int i;

    /* the test and QEMU each hold an fd per peer */
    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < npeers + 512) {
        g_free(bs);
        return NULL;
    }
    rl.rlim_cur = rl.rlim_max;
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    bs->path = tmp_path("bulk.sock");
    bs->listen_fd = listen_unix(bs->path);
    bs->npeers = npeers;
    bs->efds = g_new(int, npeers + 1);
    for (i = 0; i <= npeers; i++) {
        bs->efds[i] = make_eventfd();
    }
    bs->thread = g_thread_new("bulk", bulk_thread, bs);
    return bs;
}

static void bulk_server_stop(BulkServer *bs)
{
    int i;

    qatomic_set(&bs->stop, true);
    g_thread_join(bs->thread);
    for (i = 0; i <= bs->npeers; i++) {
        close(bs->efds[i]);
    }
    close(bs->listen_fd);
    unlink(bs->path);
    g_free(bs->path);
    g_free(bs->efds);
    g_free(bs);
}

/* How many times the register handler rang @peer, from the trace log. */
static int handler_rings(const char *log, int peer)
{
    g_autofree char *text = NULL;
    g_autofree char *needle = g_strdup_printf("ring peer %d vector 0\n",
                                              peer);
    const char *p;
    int n = 0;

    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    for (p = text; (p = strstr(p, needle)); p += strlen(needle)) {
        n += p == text || p[-1] == ' ';
    }
    return n;
}

static void run_many_peers(const char *accel, int npeers, bool kvm)
{
    BulkServer *bs = bulk_server_start(npeers);
    g_autofree char *log = tmp_path("rings.log");
    const int sample[] = {
        0, 1, IOEVENTFD_BUDGET - 1, IOEVENTFD_BUDGET, IOEVENTFD_BUDGET + 1,
        npeers / 2, npeers - 2, npeers - 1,
    };
    Guest *g;
    int i, peer;

    if (!bs) {
        g_test_skip("RLIMIT_NOFILE too low for this many peers");
        return;
    }
    g = g_new0(Guest, 1);
    /*
     * -S: under KVM a running vCPU (the BIOS) would program the PCI
     * devices at the same time as libqos does.
     */
    g->qts = qtest_initf("-M pc %s -S -trace ivshmem_doorbell -D %s "
                         "-chardev socket,id=c,path=%s -device "
                         "ivshmem-doorbell,chardev=c,vectors=1,addr=%d",
                         accel, log, bs->path, SLOT);
    if (kvm) {
        /*
         * BAR0 only: mapping it hands every doorbell ioeventfd to KVM.
         * (A 64-bit BAR2 is briefly mapped at 0xffffffffe0100000 while
         * libqos programs it, which KVM refuses.)
         */
        g->bus = qpci_new_pc(g->qts, NULL);
        g->dev = qpci_device_find(g->bus, QPCI_DEVFN(SLOT, 0));
        g_assert(g->dev);
        g->bar0 = qpci_iomap(g->dev, 0, NULL);
        qpci_device_enable(g->dev);
    } else {
        guest_attach(g, g->qts, SLOT);
    }
    g_assert_cmpint(reg_read(g, REG_IV_POSITION), ==, npeers);
    for (i = 0; i < ARRAY_SIZE(sample); i++) {
        peer = sample[i];
        ring(g, peer, 0);
        g_assert_true(event_wait(bs->efds[peer], WAIT_MS));
        g_assert_false(event_wait(bs->efds[(peer + 1) % npeers], 0));
        /*
         * The register handler, for every peer: without KVM the device
         * takes no ioeventfd (the software dispatch would write from the
         * vCPU), and under KVM QEMU's own writes bypass KVM's ioeventfds.
         */
        g_assert_cmpint(handler_rings(log, peer), ==, 1);
    }
    /* the device's own vector still interrupts it (KVM: in its irqchip) */
    if (!kvm) {
        msix_program(g, 0, false);
        event_set(bs->efds[npeers]);
        g_assert_true(wait_msi(g, 0));
    }
    guest_destroy(g);
    bulk_server_stop(bs);
    unlink(log);
}

static void test_server_4000_peers(void)
{
    run_many_peers("", 4000, false);
}

/* Field @name of /proc/@pid/status, in KiB */
static long proc_status_kib(pid_t pid, const char *name)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *text = NULL;
    g_autofree char *key = g_strdup_printf("\n%s:", name);
    const char *p, *end;
    long kib;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    p = strstr(text, key);
    g_assert_nonnull(p);
    p += strlen(key);
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    g_assert_cmpint(qemu_strtol(p, &end, 10, &kib), ==, 0);
    return kib;
}

/*
 * What QEMU holds once a bulk server announced @npeers peers (one vector
 * each) to a device with @vectors vectors: @rss and @data in KiB.
 */
static void peers_footprint(int npeers, int vectors, long *rss, long *data)
{
    BulkServer *bs = bulk_server_start(npeers);
    QTestState *qts;
    pid_t pid;

    g_assert_nonnull(bs);
    qts = qtest_initf("-M pc -S -chardev socket,id=c,path=%s "
                      "-device ivshmem-doorbell,chardev=c,vectors=%d,addr=%d",
                      bs->path, vectors, SLOT);
    pid = qtest_pid(qts);
    /* realize completed the setup: every peer's fd is in QEMU */
    g_assert_cmpint(count_fds(pid), >, npeers);
    *rss = proc_status_kib(pid, "VmRSS");
    *data = proc_status_kib(pid, "VmData");
    g_test_message("%d peers, vectors=%d: VmRSS %ld KiB, VmData %ld KiB",
                   npeers, vectors, *rss, *data);
    qtest_quit(qts);
    bulk_server_stop(bs);
}

/*
 * A server sizes QEMU's memory only by the fds it actually sends: 4000
 * peers announced with one vector each cost a device with vectors=2048
 * (the most MSI-X allows) no more than one with vectors=1.  Per-peer
 * arrays of 'vectors' entries would cost 4000 * 2048 * 4 bytes = 32 MiB.
 */
static void test_server_peer_memory(void)
{
    const int npeers = 4000;
    struct rlimit rl;
    long rss1, data1, rss2048, data2048;

    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < npeers + 512) {
        g_test_skip("RLIMIT_NOFILE too low for this many peers");
        return;
    }
    peers_footprint(npeers, 1, &rss1, &data1);
    peers_footprint(npeers, 2048, &rss2048, &data2048);
    /* 8 MiB: MSI-X state of 2048 vectors and noise, a quarter of 32 MiB */
    g_assert_cmpint(data2048 - data1, <, 8 * 1024);
    g_assert_cmpint(rss2048 - rss1, <, 8 * 1024);
}

/* Wait up to @ms for vector @vector's PBA bit to clear */
static bool wait_not_pending(Guest *g, int vector, int ms)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;

    while (qpci_msix_pending(g->dev, vector)) {
        if (g_get_monotonic_time() > end) {
            return false;
        }
        g_usleep(1000);
    }
    return true;
}

/*
 * Under KVM an unmasked vector is delivered through an irqfd, bypassing
 * the main loop; a masked one through the main loop into the PBA, and
 * unmasking delivers what is pending.  The ivshmem_irqfd and
 * ivshmem_interrupt trace events tell the two paths apart.
 */
static void test_kvm_irqfd(void)
{
    g_autofree char *log = tmp_path("kvm-trace");
    FakeServer *srv;
    Guest *g;
    int local, id, fds;
    QTestState *qts;
    QDict *resp;
    bool kvm;

    if (!kvm_usable()) {
        return;
    }
    srv = server_start(1 * MiB, 2, 0);
    local = server_join(srv, -1);
    qts = qtest_initf("-M pc -accel kvm -S -chardev socket,id=c,path=%s "
                      "-trace ivshmem_irqfd -trace ivshmem_interrupt -D %s",
                      srv->path, log);
    resp = qtest_qmp(qts, "{'execute': 'query-kvm'}");
    kvm = qdict_get_bool(qdict_get_qdict(resp, "return"), "enabled");
    qobject_unref(resp);
    if (!kvm) {
        qtest_quit(qts);
        server_stop(srv);
        unlink(log);
        kvm_skip("KVM could not be initialized here");
        return;
    }
    fds = count_fds(qtest_pid(qts));
    qtest_qmp_device_add(qts, "ivshmem-doorbell", "iv", "{'chardev': 'c', "
                         "'vectors': 2, 'addr': %s}", stringify(SLOT));
    g = g_new0(Guest, 1);
    guest_attach(g, qts, SLOT);
    id = reg_read(g, REG_IV_POSITION);
    g_assert_cmpint(id, ==, 1);
    /* unmasked: vector 0 goes through an irqfd; masked: main loop + PBA */
    msix_program(g, 0, false);
    msix_program(g, 1, true);
    event_set(server_efd(srv, id, 1));
    g_assert_true(wait_pending(g, 1, WAIT_MS));
    /* a ring on the irqfd: KVM takes it, the main loop never sees it */
    event_set(server_efd(srv, id, 0));
    g_usleep(200 * 1000);
    g_assert_false(qpci_msix_pending(g->dev, 0));
    msix_program(g, 0, true);            /* irqfd torn down */
    event_set(server_efd(srv, id, 0));
    g_assert_true(wait_pending(g, 0, WAIT_MS));
    msix_program(g, 0, false);           /* irqfd again, pending delivered */
    g_assert_true(wait_not_pending(g, 0, WAIT_MS));
    g_assert_true(qpci_msix_pending(g->dev, 1));    /* still masked */
    ring(g, local, 1);
    g_assert_true(event_wait(server_efd(srv, local, 1), WAIT_MS));
    /* hot-unplug with vector 0 on an irqfd: routes and fds released */
    qpci_unplug_acpi_device_test(g->qts, "iv", SLOT);
    g_assert_true(wait_fd_count(qtest_pid(g->qts), fds));
    guest_destroy(g);
    server_stop(srv);
    /*
     * vector 0 was put on an irqfd twice and taken off at the mask and
     * the unplug; the main loop handled exactly two interrupts: vector 1
     * and vector 0 while masked, not the ring that went to the irqfd
     */
    g_assert_cmpint(trace_count_text(log, "ivshmem_irqfd",
                                     "vector 0 KVM irqfd"), >=, 3);
    g_assert_cmpint(trace_count_text(log, "ivshmem_irqfd", " on 1"), ==, 2);
    g_assert_cmpint(trace_count_text(log, "ivshmem_interrupt",
                                     "on vector 0 "), ==, 1);
    g_assert_cmpint(trace_count_text(log, "ivshmem_interrupt",
                                     "on vector 1 "), ==, 1);
    unlink(log);
}

/*
 * A restart adopted while vector 0 is on a KVM irqfd: the old route is
 * released and the new eventfds are wired, through the irqfd and
 * through the main loop (masked: PBA).
 */
/* Under KVM, 4000 peers used to abort QEMU in kvm_mem_ioeventfd_add(). */
static void test_kvm_4000_peers(void)
{
    if (kvm_usable()) {
        run_many_peers("-accel kvm", 4000, true);
    }
}

/*
 * KVM does not cap ioeventfds at its I/O bus limit of about 1000 devices
 * (NR_IOBUS_DEVS): with the budget raised to 4000, 4000 peer vectors all
 * get one, KVM takes them when BAR0 is mapped, and QEMU (which aborts
 * when KVM refuses an ioeventfd) carries on.  The budget bounds costs,
 * not a kernel limit.
 */
static void test_kvm_ioeventfds_beyond_bus_limit(void)
{
    const int npeers = 4000;
    const int sample[] = { 0, 999, 1000, 1024, npeers - 1 };
    g_autofree char *log = tmp_path("budget.log");
    BulkServer *bs;
    Guest *g;
    gint64 start;
    int i;

    if (!kvm_usable()) {
        return;
    }
    bs = bulk_server_start(npeers);
    if (!bs) {
        g_test_skip("RLIMIT_NOFILE too low for this many peers");
        return;
    }
    g = g_new0(Guest, 1);
    g->qts = qtest_initf("-M pc -accel kvm -S -trace ivshmem_ioeventfd_budget "
                         "-D %s -chardev socket,id=c,path=%s -device "
                         "ivshmem-doorbell,chardev=c,vectors=1,addr=%d,"
                         "x-ioeventfd-budget=%d", log, bs->path, SLOT,
                         npeers);
    g->bus = qpci_new_pc(g->qts, NULL);
    g->dev = qpci_device_find(g->bus, QPCI_DEVFN(SLOT, 0));
    g_assert(g->dev);
    start = g_get_monotonic_time();
    g->bar0 = qpci_iomap(g->dev, 0, NULL);
    qpci_device_enable(g->dev);     /* KVM takes every ioeventfd here */
    g_assert_cmpint(reg_read(g, REG_IV_POSITION), ==, npeers);
    g_test_message("BAR0 with %d ioeventfds mapped in %" PRId64 " ms",
                   npeers, (g_get_monotonic_time() - start) / 1000);
    /* no peer vector was left to the register handler */
    g_assert_cmpint(trace_count(log, "ivshmem_ioeventfd_budget"), ==, 0);
    for (i = 0; i < ARRAY_SIZE(sample); i++) {
        ring(g, sample[i], 0);
        g_assert_true(event_wait(bs->efds[sample[i]], WAIT_MS));
    }
    guest_destroy(g);
    bulk_server_stop(bs);
    unlink(log);
}

static void test_kvm_restart(void)
{
    FakeServer *srv;
    g_autofree char *path = NULL;
    int shm, fds;
    QDict *resp;
    Guest *g;
    bool kvm;

    if (!kvm_usable()) {
        return;
    }
    srv = server_start(1 * MiB, 2, 0);
    server_join(srv, -1);
    g = guest_start(SLOT, "-M pc -accel kvm -S -chardev socket,id=c,path=%s,"
                    "reconnect-ms=100 -device ivshmem-doorbell,chardev=c,"
                    "vectors=2,addr=%d", srv->path, SLOT);
    resp = qtest_qmp(g->qts, "{'execute': 'query-kvm'}");
    kvm = qdict_get_bool(qdict_get_qdict(resp, "return"), "enabled");
    qobject_unref(resp);
    if (!kvm) {
        guest_destroy(g);
        server_stop(srv);
        kvm_skip("KVM could not be initialized here");
        return;
    }
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 1);
    msix_program(g, 0, false);          /* on an irqfd */
    msix_program(g, 1, true);
    fds = count_fds(qtest_pid(g->qts));
    path = g_strdup(srv->path);
    shm = dup(srv->shm_fd);
    server_crash(srv);
    srv = server_start_at(path, shm, 1 * MiB, 2, 4, 1);
    g_assert_true(wait_position(g, 5));
    g_assert_true(wait_fd_count(qtest_pid(g->qts), fds));
    event_set(server_efd(srv, 5, 1));
    g_assert_true(wait_pending(g, 1, WAIT_MS));
    msix_program(g, 0, true);           /* irqfd torn down */
    event_set(server_efd(srv, 5, 0));
    g_assert_true(wait_pending(g, 0, WAIT_MS));
    ring(g, 4, 1);
    g_assert_true(event_wait(server_efd(srv, 4, 1), WAIT_MS));
    guest_destroy(g);
    server_stop(srv);
    close(shm);
}

/* The real server binary */

/* A failed assertion aborts the test: the server must not outlive it */
static void real_server_kill(void *opaque)
{
    pid_t pid = GPOINTER_TO_INT(opaque);

    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/*
 * Start $IVSHMEM_SERVER on @sock and @name (1M, @nvectors vectors), wait
 * for it; it is killed if the test aborts before real_server_stop().
 */
static GPid real_server_spawn_n(const char *sock, const char *name,
                                const char *pidfile, int nvectors)
{
    g_autofree char *cmd = g_strdup_printf("%s -F -S %s -M %s -l 1M -n %d "
                                           "-p %s",
                                           g_getenv("IVSHMEM_SERVER"), sock,
                                           name, nvectors, pidfile);
    g_auto(GStrv) argv = NULL;
    gint64 end;
    GPid pid;

    g_assert(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    g_assert(g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                           NULL, NULL, &pid, NULL));
    qtest_add_abrt_handler(real_server_kill, GINT_TO_POINTER(pid));
    end = g_get_monotonic_time() + WAIT_MS * 1000;
    while (access(sock, F_OK) != 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(10000);
    }
    return pid;
}

static GPid real_server_spawn(const char *sock, const char *name,
                              const char *pidfile)
{
    return real_server_spawn_n(sock, name, pidfile, 2);
}

/* SIGTERM, then SIGKILL after WAIT_MS: the wait is bounded */
static void real_server_stop(GPid pid)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    kill(pid, SIGTERM);
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (g_get_monotonic_time() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            break;
        }
        g_usleep(10000);
    }
    qtest_remove_abrt_handler(GINT_TO_POINTER(pid));
    g_spawn_close_pid(pid);
}

/*
 * A server that hands out no vectors (ivshmem-server -n 0, which QEMU
 * 10.0.2's server accepts and stock QEMU starts against): the device
 * starts with a warning, shares the memory, and takes doorbells and peers
 * leaving that were never announced as the no-ops they are.
 */
static const Script no_vectors_script = {
    "no-vectors", { { 0, FD_NONE }, { 3, FD_NONE }, { -1, FD_SHM },
                    { 7, FD_NONE } }, 4, false, NULL,
};

static void no_vectors_check_guest(Guest *g, uint32_t *host, int peer)
{
    int v;

    g_assert_true(g->msix);
    g_assert_cmpuint(qpci_msix_table_size(g->dev), ==, 2);
    host[0] = 0x600d0000 + peer;
    g_assert_cmphex(qpci_io_readl(g->dev, g->bar2, 0), ==, 0x600d0000 + peer);
    qpci_io_writel(g->dev, g->bar2, 4, 0xbeef);
    g_assert_cmphex(host[1], ==, 0xbeef);
    for (v = 0; v < 2; v++) {
        msix_program(g, v, false);
        ring(g, peer, v);       /* a peer with no vectors: ignored */
    }
    g_usleep(100 * 1000);
    for (v = 0; v < 2; v++) {
        g_assert_false(msi_fired(g, v));
    }
}

static void test_server_no_vectors(void)
{
    g_autofree char *path = tmp_path("novec.sock");
    ScriptServer ss = { .listen_fd = listen_unix(path),
                        .script = &no_vectors_script };
    GThread *t = g_thread_new("script", script_thread, &ss);
    g_autofree char *args = g_strdup_printf("-chardev socket,id=c,path=%s "
                                            "-device ivshmem-doorbell,"
                                            "chardev=c,vectors=2,id=nv",
                                            path);
    g_autofree char *sock = tmp_path("novec-real.sock");
    g_autofree char *pidfile = tmp_path("novec-real.pid");
    g_autofree char *name = shm_name("novec");
    FakeServer *srv;
    uint32_t *host;
    char *err = NULL;
    Guest *a, *b;
    int status, local, fd;
    gint64 start;
    GPid pid;

    /* version, ID 3, memory, peer 7 (never announced) leaves; then quiet */
    start = g_get_monotonic_time();
    status = run_qemu_quit(args, &err);
    g_test_message("QEMU quit after %" PRId64 " ms",
                   (g_get_monotonic_time() - start) / 1000);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_assert_nonnull(strstr(err, "warning: ivshmem 'nv': the ivshmem server "
                            "(chardev 'c') hands out no interrupt vectors "
                            "(was it started with -n 0?): peer 3 has shared "
                            "memory only"));
    g_assert_null(strstr(err, "unknown peer"));
    g_free(err);
    g_thread_join(t);
    close(ss.listen_fd);
    unlink(path);

    /* a fake server with 0 vectors and a local peer 0 */
    srv = server_start(1 * MiB, 0, 0);
    server_join(srv, -1);
    host = map_fd(srv->shm_fd, 1 * MiB);
    a = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d",
                    srv->path, SLOT);
    g_assert_cmpuint(reg_read(a, REG_IV_POSITION), ==, 1);
    no_vectors_check_guest(a, host, 0);
    /* a peer joins and leaves: QEMU was never told of it, nor hurt */
    fd = count_fds(qtest_pid(a->qts));
    local = server_join(srv, -1);
    server_leave(srv, local);
    g_usleep(100 * 1000);
    g_assert_cmpuint(reg_read(a, REG_IV_POSITION), ==, 1);
    g_assert_cmpint(count_fds(qtest_pid(a->qts)), ==, fd);
    guest_destroy(a);
    munmap(host, 1 * MiB);
    server_stop(srv);

    /* the real server with -n 0: two QEMUs share its memory */
    if (!g_getenv("IVSHMEM_SERVER")) {
        g_test_skip("IVSHMEM_SERVER is not set: real server part not run");
        return;
    }
    pid = real_server_spawn_n(sock, name, pidfile, 0);
    a = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d", sock,
                    SLOT);
    b = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d", sock,
                    SLOT);
    g_assert_cmpuint(reg_read(a, REG_IV_POSITION), ==, 0);
    g_assert_cmpuint(reg_read(b, REG_IV_POSITION), ==, 1);
    qpci_io_writel(a->dev, a->bar2, 0x40, 0x11223344);
    g_assert_cmphex(qpci_io_readl(b->dev, b->bar2, 0x40), ==, 0x11223344);
    fd = shm_open(name, O_RDWR, 0);
    g_assert_cmpint(fd, >=, 0);
    host = map_fd(fd, 1 * MiB);
    close(fd);
    no_vectors_check_guest(a, host, 1);
    /* b leaves: a hears of a peer it never knew, and carries on */
    guest_destroy(b);
    g_usleep(200 * 1000);
    g_assert_cmpuint(reg_read(a, REG_IV_POSITION), ==, 0);
    guest_destroy(a);
    munmap(host, 1 * MiB);
    real_server_stop(pid);
    shm_unlink(name);
    unlink(pidfile);
    unlink(sock);
}

/*
 * @a and @b (2 vectors, each knowing the other) ring each other once per
 * vector: exactly that interrupt arrives, once, and no other.
 */
static void ring_each_other(Guest *a, Guest *b)
{
    Guest *from[2] = { a, b }, *to[2] = { b, a };
    int i, v, w;

    for (i = 0; i < 2; i++) {
        for (v = 0; v < 2; v++) {
            msix_program(to[i], v, false);
        }
    }
    for (i = 0; i < 2; i++) {
        for (v = 0; v < 2; v++) {
            ring(from[i], reg_read(to[i], REG_IV_POSITION), v);
            g_assert_true(wait_msi(to[i], v));
            for (w = 0; w < 2; w++) {
                g_assert_false(msi_fired(to[i], w));
            }
        }
    }
    g_usleep(100 * 1000);
    for (v = 0; v < 2; v++) {
        g_assert_false(msi_fired(a, v));
        g_assert_false(msi_fired(b, v));
    }
}

static void test_real_server(void)
{
    g_autofree char *sock = tmp_path("real.sock");
    g_autofree char *pidfile = tmp_path("real.pid");
    g_autofree char *name = shm_name("real");
    Guest *a, *b;
    GPid pid;
    int ida, idb, fds;

    if (!g_getenv("IVSHMEM_SERVER")) {
        g_test_skip("IVSHMEM_SERVER is not set");
        return;
    }
    pid = real_server_spawn(sock, name, pidfile);
    a = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d", sock,
                    SLOT);
    fds = count_fds(qtest_pid(a->qts));
    b = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d", sock,
                    SLOT);
    /* b's arrival reaches a asynchronously: its two eventfds */
    g_assert_true(wait_fd_count(qtest_pid(a->qts), fds + 2));
    ida = reg_read(a, REG_IV_POSITION);
    idb = reg_read(b, REG_IV_POSITION);
    g_assert_cmpint(ida, !=, idb);
    qpci_io_writel(a->dev, a->bar2, 0x40, 0x77665544);
    g_assert_cmphex(qpci_io_readl(b->dev, b->bar2, 0x40), ==, 0x77665544);
    ring_each_other(a, b);
    guest_destroy(a);
    guest_destroy(b);
    real_server_stop(pid);
    shm_unlink(name);
    unlink(pidfile);
    unlink(sock);
}

/*
 * hugetlbfs for real: reserve huge pages, mount hugetlbfs in a temporary
 * directory, run the server with -m there and a QEMU with a hugetlbfs
 * memory backend beside its doorbell device; restore the host on every
 * path, an assertion's abort included.
 */
#define HUGE_PAGES_SYSCTL "/proc/sys/vm/nr_hugepages"
#define HUGETLBFS_MAGIC_NUMBER 0x958458f6
#define HUGE_PAGES      4       /* 4 MiB region + 2 MiB plain, + 1 spare */

typedef struct HugeHost {
    char *mnt;
    char saved[32];     /* nr_hugepages before the test */
    int lock;
    bool mounted;
    bool reserved;
    GPid server;
} HugeHost;

/* Undo what huge_setup() did; async-signal-safe for the abort path */
static void huge_restore(void *opaque)
{
    HugeHost *h = opaque;
    int fd;

    if (h->server > 0) {
        kill(h->server, SIGKILL);
        h->server = 0;
    }
    if (h->mounted && umount2(h->mnt, MNT_DETACH) == 0) {
        h->mounted = false;
    }
    if (h->reserved) {
        fd = open(HUGE_PAGES_SYSCTL, O_WRONLY);
        if (fd >= 0 && write(fd, h->saved, strlen(h->saved)) > 0) {
            h->reserved = false;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
}

/* Fatal signals (a SIGBUS on a bad mapping, a kill) restore the host too */
static const int huge_signals[] = { SIGBUS, SIGSEGV, SIGTERM, SIGINT, SIGHUP };
static HugeHost *huge_current;
static struct sigaction huge_old_actions[ARRAY_SIZE(huge_signals)];

static void huge_fatal(int sig)
{
    if (huge_current) {
        huge_restore(huge_current);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void huge_catch_signals(HugeHost *h)
{
    struct sigaction sa = { .sa_handler = huge_fatal };
    size_t i;

    huge_current = h;
    for (i = 0; i < ARRAY_SIZE(huge_signals); i++) {
        sigaction(huge_signals[i], h ? &sa : &huge_old_actions[i],
                  h ? &huge_old_actions[i] : NULL);
    }
}

static long meminfo_value(const char *key)
{
    g_autofree char *text = NULL;
    const char *p, *end;
    long value;

    g_assert_true(g_file_get_contents("/proc/meminfo", &text, NULL, NULL));
    p = strstr(text, key);
    g_assert_nonnull(p);
    g_assert_cmpint(qemu_strtol(p + strlen(key), &end, 10, &value), ==, 0);
    return value;
}

/* Huge pages in use right now (HugePages_Total - HugePages_Free) */
static long huge_pages_used(void)
{
    return meminfo_value("HugePages_Total:") -
           meminfo_value("HugePages_Free:");
}

/* false: skipped (the kernel has no huge pages, or we are not root) */
static bool huge_setup(HugeHost *h)
{
    g_autofree char *fs = NULL;
    g_autofree char *want = NULL;
    const char *end;
    long before, saved;
    int fd;

    if (!g_file_get_contents("/proc/filesystems", &fs, NULL, NULL) ||
        !strstr(fs, "\thugetlbfs\n") || access(HUGE_PAGES_SYSCTL, F_OK)) {
        g_test_skip("the kernel has no huge pages (hugetlbfs)");
        return false;
    }
    if (geteuid() != 0) {
        g_test_skip("reserving huge pages needs root");
        return false;
    }
    /* one test at a time on this host owns the reservation it adds */
    h->lock = open("/tmp/ivshmem-test-hugepages.lock", O_RDWR | O_CREAT,
                   0600);
    g_assert_cmpint(h->lock, >=, 0);
    g_assert_cmpint(flock(h->lock, LOCK_EX), ==, 0);
    fd = open(HUGE_PAGES_SYSCTL, O_RDWR);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(read(fd, h->saved, sizeof(h->saved) - 1), >, 0);
    h->mnt = g_strdup_printf("%s/hugetlbfs-%d", tmpdir, test_counter++);
    g_assert_cmpint(mkdir(h->mnt, 0700), ==, 0);
    qtest_add_abrt_handler(huge_restore, h);
    huge_catch_signals(h);
    before = meminfo_value("HugePages_Total:");
    g_assert_cmpint(qemu_strtol(h->saved, &end, 10, &saved), ==, 0);
    want = g_strdup_printf("%ld", saved + HUGE_PAGES);
    h->reserved = true;
    g_assert_cmpint(pwrite(fd, want, strlen(want), 0), ==, strlen(want));
    close(fd);
    g_assert_cmpint(meminfo_value("HugePages_Total:"), >=,
                    before + HUGE_PAGES);
    g_assert_cmpint(mount("ivshmem-test", h->mnt, "hugetlbfs", 0,
                          "pagesize=2M"), ==, 0);
    h->mounted = true;
    return true;
}

static void huge_teardown(HugeHost *h)
{
    huge_restore(h);
    huge_catch_signals(NULL);
    qtest_remove_abrt_handler(h);
    g_assert_false(h->mounted);
    g_assert_false(h->reserved);
    rmdir(h->mnt);
    flock(h->lock, LOCK_UN);
    close(h->lock);
    g_free(h->mnt);
}

/*
 * Map @size bytes of QEMU's descriptor whose target starts with @prefix
 * and ends with @suffix; its file system type goes to @fs_type
 */
static void *map_qemu_fd(QTestState *qts, const char *prefix,
                         const char *suffix, size_t size, long *fs_type)
{
    g_autofree char *dir = g_strdup_printf("/proc/%d/fd", qtest_pid(qts));
    GDir *d = g_dir_open(dir, 0, NULL);
    const char *e;
    void *p = NULL;

    g_assert(d);
    while (!p && (e = g_dir_read_name(d))) {
        g_autofree char *link = g_build_filename(dir, e, NULL);
        g_autofree char *target = g_file_read_link(link, NULL);
        struct statfs st;
        int fd;

        if (target && g_str_has_prefix(target, prefix) &&
            g_str_has_suffix(target, suffix)) {
            fd = open(link, O_RDWR);
            g_assert_cmpint(fd, >=, 0);
            g_assert_cmpint(fstatfs(fd, &st), ==, 0);
            *fs_type = st.f_type;
            p = map_fd(fd, size);
            close(fd);
        }
    }
    g_dir_close(d);
    g_assert_nonnull(p);
    return p;
}

static void test_real_server_hugetlbfs(void)
{
    HugeHost h = { 0 };
    g_autofree char *sock = tmp_path("huge.sock");
    g_autofree char *cmd = NULL;
    g_autofree char *plain = NULL;
    g_auto(GStrv) argv = NULL;
    Guest *g, g2;
    void *host;
    long fs_type = 0, used;
    gint64 end;

    if (!g_getenv("IVSHMEM_SERVER")) {
        g_test_skip("IVSHMEM_SERVER is not set");
        return;
    }
    if (!huge_setup(&h)) {
        return;
    }
    used = huge_pages_used();
    cmd = g_strdup_printf("%s -F -S %s -m %s -l 4M -n 1",
                          g_getenv("IVSHMEM_SERVER"), sock, h.mnt);
    g_assert(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    g_assert(g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                           NULL, NULL, &h.server, NULL));
    end = g_get_monotonic_time() + WAIT_MS * 1000;
    while (access(sock, F_OK) != 0) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(10000);
    }
    plain = g_strdup_printf("%s/plain", h.mnt);
    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                    "-device ivshmem-doorbell,chardev=c,vectors=1,addr=%d "
                    "-object memory-backend-file,id=hp,mem-path=%s,size=2M,"
                    "share=on -device ivshmem-plain,memdev=hp,addr=%d",
                    sock, SLOT, plain, SLOT + 1);
    guest_attach(&g2, g->qts, SLOT + 1);
    g_assert_cmpuint(g->bar2_size, ==, 4 * MiB);
    g_assert_cmpuint(g2.bar2_size, ==, 2 * MiB);

    /* the server's region: QEMU's fd of it is a hugetlbfs file */
    host = map_qemu_fd(g->qts, h.mnt, " (deleted)", 4 * MiB, &fs_type);
    g_assert_cmphex(fs_type, ==, HUGETLBFS_MAGIC_NUMBER);
    check_coherence(g, host, 4 * MiB);
    munmap(host, 4 * MiB);
    /* the memdev: the file in the mount */
    host = map_file(plain, 2 * MiB);
    check_coherence(&g2, host, 2 * MiB);
    munmap(host, 2 * MiB);
    /* both regions touched: three 2 MiB huge pages more are in use */
    g_assert_cmpint(huge_pages_used() - used, ==, 3);

    guest_detach(&g2);
    guest_destroy(g);
    real_server_stop(h.server);
    h.server = 0;
    unlink(plain);
    unlink(sock);
    huge_teardown(&h);
    g_assert_cmpint(huge_pages_used(), ==, used);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(strlen(path), <, sizeof(addr.sun_path));
    strcpy(addr.sun_path, path);
    g_assert_cmpint(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), ==,
                    0);
    return fd;
}

/* Both IVPositions read 0 and 1 (in some order): both QEMUs rejoined. */
static bool wait_rejoined(Guest *a, Guest *b)
{
    gint64 end = g_get_monotonic_time() + 2 * WAIT_MS * 1000;
    uint32_t ida, idb;

    do {
        ida = reg_read(a, REG_IV_POSITION);
        idb = reg_read(b, REG_IV_POSITION);
        if (ida <= 1 && idb <= 1 && ida != idb) {
            return true;
        }
        g_usleep(10000);
    } while (g_get_monotonic_time() < end);
    g_test_message("IVPositions %u and %u after the restart", ida, idb);
    return false;
}


/* SigBlk of @pid's thread named @comm (-name debug-threads=on) */
static bool thread_sigblk(pid_t pid, const char *comm, uint64_t *mask)
{
    g_autofree char *tasks = g_strdup_printf("/proc/%d/task", pid);
    GDir *dir = g_dir_open(tasks, 0, NULL);
    const char *tid;
    bool found = false;

    g_assert_nonnull(dir);
    while (!found && (tid = g_dir_read_name(dir))) {
        g_autofree char *path = g_strdup_printf("%s/%s/comm", tasks, tid);
        g_autofree char *name = NULL;
        g_autofree char *status = NULL;
        const char *p;

        if (!g_file_get_contents(path, &name, NULL, NULL) ||
            strcmp(g_strchomp(name), comm)) {
            continue;
        }
        g_free(path);
        path = g_strdup_printf("%s/%s/status", tasks, tid);
        p = g_file_get_contents(path, &status, NULL, NULL) ?
            strstr(status, "\nSigBlk:") : NULL;
        if (p) {
            *mask = g_ascii_strtoull(p + strlen("\nSigBlk:"), NULL, 16);
            found = true;
        }
    }
    g_dir_close(dir);
    return found;
}

/*
 * A shrunk region's lost range is backed again from QEMU's SIGBUS
 * handler, which a thread only reaches with SIGBUS unblocked: a thread
 * that blocks it dies of the fault.  An iothread (virtio-blk or -scsi
 * with iothread=, DMA from a guest into BAR2) is created before the
 * accelerator, so it must take SIGBUS too.
 */
static void test_shrink_iothread_sigbus(void)
{
    g_autofree char *file = tmp_path("shrink-io");
    QTestState *qts;
    uint64_t mask = 0;
    gint64 end;
    bool found;

    qts = qtest_initf("-M pc -name debug-threads=on -object iothread,id=io0 "
                      "-object memory-backend-file,id=hm,mem-path=%s,"
                      "size=1M,share=on -device ivshmem-plain,memdev=hm",
                      file);
    end = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!(found = thread_sigblk(qtest_pid(qts), "IO io0", &mask)) &&
           g_get_monotonic_time() < end) {
        g_usleep(10000);
    }
    g_assert_true(found);
    g_test_message("iothread SigBlk %016" PRIx64, mask);
    g_assert_cmphex(mask & (1ULL << (SIGBUS - 1)), ==, 0);
    qtest_quit(qts);
    unlink(file);
}

/*
 * The real server restarts on an object it did not create (so SIGTERM
 * leaves it): both QEMUs reconnect, get new IDs and ring each other.
 * Two placeholder clients take IDs 0 and 1 first, so that the QEMUs'
 * IDs before (2, 3) and after (0, 1) the restart differ.
 */
static void test_real_server_restart(void)
{
    g_autofree char *sock = tmp_path("restart.sock");
    g_autofree char *pidfile = tmp_path("restart.pid");
    g_autofree char *name = shm_name("restart");
    g_autofree char *path = g_strdup_printf("/%s", name);
    const char *fmt = "-M pc -chardev socket,id=c,path=%s,reconnect-ms=100 "
                      "-device ivshmem-doorbell,chardev=c,vectors=2,addr=%d";
    int shm, placeholder[2], fds_a, fds_b;
    Guest *a, *b;
    GPid pid;

    if (!g_getenv("IVSHMEM_SERVER")) {
        g_test_skip("IVSHMEM_SERVER is not set");
        return;
    }
    shm = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    g_assert_cmpint(shm, >=, 0);
    g_assert_cmpint(ftruncate(shm, 1 * MiB), ==, 0);
    close(shm);
    pid = real_server_spawn(sock, name, pidfile);
    placeholder[0] = connect_unix(sock);
    placeholder[1] = connect_unix(sock);
    a = guest_start(SLOT, fmt, sock, SLOT);
    fds_a = count_fds(qtest_pid(a->qts));
    b = guest_start(SLOT, fmt, sock, SLOT);
    fds_b = count_fds(qtest_pid(b->qts));
    g_assert_cmpuint(reg_read(a, REG_IV_POSITION), ==, 2);
    g_assert_cmpuint(reg_read(b, REG_IV_POSITION), ==, 3);
    close(placeholder[0]);
    close(placeholder[1]);
    /* a gets b's two eventfds; both drop the placeholders' four */
    fds_a += 2 - 4;
    fds_b -= 4;
    g_assert_true(wait_fd_count(qtest_pid(a->qts), fds_a));
    g_assert_true(wait_fd_count(qtest_pid(b->qts), fds_b));
    ring_each_other(a, b);
    qpci_io_writel(a->dev, a->bar2, 0x40, 0x77665544);

    real_server_stop(pid);
    g_assert_true(shm_exists(name));
    pid = real_server_spawn(sock, name, pidfile);
    g_assert_true(wait_rejoined(a, b));
    /* rejoined and knowing each other again: the same fds as before */
    g_assert_true(wait_fd_count(qtest_pid(a->qts), fds_a));
    g_assert_true(wait_fd_count(qtest_pid(b->qts), fds_b));
    g_assert_cmphex(qpci_io_readl(b->dev, b->bar2, 0x40), ==, 0x77665544);
    ring_each_other(a, b);

    guest_destroy(a);
    guest_destroy(b);
    real_server_stop(pid);
    shm_unlink(name);
    unlink(pidfile);
    unlink(sock);
}

/*
 * Isolation (issue 23): no holder of a shared eventfd can wedge the QEMU
 * that rings it or reads it, and only eventfds are taken as vectors.
 *
 * Every holder of an eventfd received by SCM_RIGHTS shares its open file
 * description: O_NONBLOCK and the counter.  The attacker here is the
 * fake server (or a peer it plays), which keeps a copy.  A QEMU that
 * blocks on such an fd is released after RESCUE_MS by the test itself,
 * so that a failing check fails instead of hanging the suite.
 */

#define ISOLATION_BOUND_MS  1000    /* QMP must answer within this */
#define RESCUE_MS           4000    /* a wedged QEMU is released after */

typedef struct Rescue {
    int fd;
    bool by_write;              /* a wedged reader needs a write */
    bool done;
    bool fired;
    GMutex lock;
    GCond cond;
    GThread *thread;
} Rescue;

static gpointer rescue_thread(gpointer opaque)
{
    Rescue *r = opaque;
    gint64 end = g_get_monotonic_time() + RESCUE_MS * G_TIME_SPAN_MILLISECOND;
    uint64_t value = 1;

    g_mutex_lock(&r->lock);
    while (!r->done && g_cond_wait_until(&r->cond, &r->lock, end)) {
        /* woken: look at done again */
    }
    if (!r->done) {
        r->fired = true;
        if (r->by_write) {
            g_assert_cmpint(write(r->fd, &value, sizeof(value)), ==, 8);
        } else {
            g_assert_cmpint(read(r->fd, &value, sizeof(value)), ==, 8);
        }
    }
    g_mutex_unlock(&r->lock);
    return NULL;
}

static void rescue_start(Rescue *r, int fd, bool by_write)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->by_write = by_write;
    g_mutex_init(&r->lock);
    g_cond_init(&r->cond);
    r->thread = g_thread_new("rescue", rescue_thread, r);
}

/* Did the rescue have to release QEMU? */
static bool rescue_stop(Rescue *r)
{
    g_mutex_lock(&r->lock);
    r->done = true;
    g_cond_signal(&r->cond);
    g_mutex_unlock(&r->lock);
    g_thread_join(r->thread);
    g_mutex_clear(&r->lock);
    g_cond_clear(&r->cond);
    return r->fired;
}

static void set_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    g_assert_cmpint(flags, >=, 0);
    g_assert_cmpint(fcntl(fd, F_SETFL, flags & ~O_NONBLOCK), ==, 0);
}

static void qmp_ping(QTestState *qts)
{
    QDict *resp = qtest_qmp(qts, "{'execute': 'query-status'}");

    g_assert_true(qdict_haskey(resp, "return"));
    qobject_unref(resp);
}

static double ms_since(gint64 start)
{
    return (g_get_monotonic_time() - start) / 1000.0;
}

/*
 * Peer 0 clears O_NONBLOCK on its vector's eventfd and saturates the
 * counter (0xfffffffffffffffe: the next write of 1 would block).  The
 * guest rings peer 0: the vCPU and QMP must not notice, a ring to peer 1
 * must still count exactly one, the guest error log must say peer 0's
 * doorbells were dropped, and peer 0 gets doorbells again once drained.
 * @opaque: the ioeventfd= value (under qtest, "on" is the memory core's
 * software ioeventfd dispatch, "off" the register handler).
 */
static void test_isolation_saturated_peer(gconstpointer opaque)
{
    const char *ioeventfd = opaque;
    FakeServer *srv = server_start(1 * MiB, 1, 0);
    int bad = server_join(srv, -1);
    int good = server_join(srv, -1);
    int bad_fd = server_efd(srv, bad, 0);
    int good_fd = server_efd(srv, good, 0);
    g_autofree char *log = tmp_path("guest-errors");
    g_autofree char *extra = g_strdup_printf(",ioeventfd=%s -d guest_errors "
                                             "-D %s", ioeventfd, log);
    g_autofree char *text = NULL;
    uint64_t full = 0xfffffffffffffffeULL;
    bool recovered = false;
    Rescue rescue;
    Guest *g = doorbell_guest(srv, SLOT, extra);
    gint64 start;
    double took;
    int i;

    set_blocking(bad_fd);
    g_assert_cmpint(write(bad_fd, &full, sizeof(full)), ==, sizeof(full));
    rescue_start(&rescue, bad_fd, false);
    start = g_get_monotonic_time();
    for (i = 0; i < 3; i++) {
        ring(g, bad, 0);
    }
    qmp_ping(g->qts);
    took = ms_since(start);
    g_test_message("3 rings of a saturated blocking peer, then QMP: %.1f ms",
                   took);
    g_assert_false(rescue_stop(&rescue));
    g_assert_cmpfloat(took, <, ISOLATION_BOUND_MS);

    /* The other peer's doorbells arrive, one count per ring. */
    for (i = 0; i < 5; i++) {
        ring(g, good, 0);
        g_assert_cmpuint(event_count(good_fd, WAIT_MS), ==, 1);
        ring(g, bad, 0);
    }
    g_assert_cmpuint(event_count(good_fd, 200), ==, 0);

    /* Drained, peer 0 is rung again after the back-off. */
    g_assert_cmpint(read(bad_fd, &full, sizeof(full)), ==, sizeof(full));
    start = g_get_monotonic_time();
    while (!recovered && ms_since(start) < WAIT_MS) {
        ring(g, bad, 0);
        recovered = event_count(bad_fd, 100) > 0;
    }
    g_test_message("peer 0 rung again %.0f ms after it was drained",
                   ms_since(start));
    g_assert_true(recovered);
    guest_destroy(g);
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_test_message("guest errors: %s", text);
    g_assert_nonnull(strstr(text, "doorbells to peer 0 vector 0 dropped"));
    unlink(log);
    server_stop(srv);
}

typedef struct DupServer {
    int listen_fd;
    int efd;                    /* sent as own vectors 0 and 1 */
    int conn;
} DupServer;

static gpointer dup_server_thread(gpointer opaque)
{
    DupServer *ds = opaque;
    struct pollfd pfd = { .fd = ds->listen_fd, .events = POLLIN };
    int shm = make_memfd(1 * MiB);

    if (poll(&pfd, 1, 10000) == 1) {
        ds->conn = accept4(ds->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        send_msg(ds->conn, IVSHMEM_PROTOCOL_VERSION, -1);
        send_msg(ds->conn, 0, -1);
        send_msg(ds->conn, IVSHMEM_MSG_SHM, shm);
        send_msg(ds->conn, 0, ds->efd);
        send_msg(ds->conn, 0, ds->efd);
    }
    close(shm);
    return NULL;
}

/*
 * A holder drains our own vector between our poll and our read.  Made
 * deterministic: the server sends one blocking eventfd as both own
 * vectors, so one ring makes both readable in the same poll and the
 * first handler drains what the second then reads.
 */
static void test_isolation_own_vector_drain(void)
{
    g_autofree char *path = tmp_path("dup.sock");
    DupServer ds = { .listen_fd = listen_unix(path), .efd = make_eventfd(),
                     .conn = -1 };
    GThread *t = g_thread_new("dup-server", dup_server_thread, &ds);
    Guest *g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s "
                           "-device ivshmem-doorbell,chardev=c,vectors=2,"
                           "addr=%d", path, SLOT);
    uint64_t one = 1;
    Rescue rescue;
    gint64 start;
    double took;

    g_thread_join(t);
    g_assert_cmpint(ds.conn, >=, 0);
    set_blocking(ds.efd);
    rescue_start(&rescue, ds.efd, true);
    start = g_get_monotonic_time();
    g_assert_cmpint(write(ds.efd, &one, sizeof(one)), ==, sizeof(one));
    g_usleep(100 * 1000);           /* both handlers run meanwhile */
    qmp_ping(g->qts);
    took = ms_since(start);
    g_test_message("own vector drained under the reader, then QMP: %.1f ms",
                   took);
    g_assert_false(rescue_stop(&rescue));
    g_assert_cmpfloat(took, <, 100 + ISOLATION_BOUND_MS);
    /* the ring was delivered once, on whichever vector read it */
    g_assert_true(wait_pending(g, 0, WAIT_MS) || wait_pending(g, 1, 1));
    guest_destroy(g);
    close(ds.conn);
    close(ds.efd);
    close(ds.listen_fd);
    unlink(path);
}

/* What a server could send instead of an eventfd */
enum {
    FD_BOGUS_LANDLOCK = 100,
    FD_BOGUS_TIMERFD,
    FD_BOGUS_SIGNALFD,
    FD_BOGUS_PIDFD,
    FD_BOGUS_MEMFD,
    FD_BOGUS_PIPE_WRITE,
    FD_BOGUS_SOCKET,
    FD_BOGUS_FILE,
    FD_BOGUS_SEMAPHORE,
};

static int bogus_fd(int kind)
{
    g_autofree char *file = NULL;
    sigset_t none;
    int p[2], fd;

    switch (kind) {
    case FD_BOGUS_LANDLOCK: {
#ifdef SYS_landlock_create_ruleset
        uint64_t handled_access_fs = 1;     /* LANDLOCK_ACCESS_FS_EXECUTE */

        return syscall(SYS_landlock_create_ruleset, &handled_access_fs,
                       sizeof(handled_access_fs), 0);
#else
        errno = ENOSYS;
        return -1;
#endif
    }
    case FD_BOGUS_TIMERFD:
        return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    case FD_BOGUS_SIGNALFD:
        sigemptyset(&none);
        return signalfd(-1, &none, SFD_CLOEXEC);
    case FD_BOGUS_PIDFD:
#ifdef SYS_pidfd_open
        return syscall(SYS_pidfd_open, getpid(), 0);
#else
        errno = ENOSYS;
        return -1;
#endif
    case FD_BOGUS_MEMFD:
        return make_memfd(4096);
    case FD_BOGUS_PIPE_WRITE:
        g_assert_cmpint(pipe(p), ==, 0);
        close(p[0]);
        return p[1];                /* writable, as an eventfd */
    case FD_BOGUS_SOCKET:
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, p), ==, 0);
        close(p[1]);
        return p[0];
    case FD_BOGUS_FILE:
        file = g_strdup_printf("%s/bogus-regular-file", tmpdir);
        fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        unlink(file);
        return fd;
    case FD_BOGUS_SEMAPHORE:
        return eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
    default:
        return -1;
    }
}

/* each sent as this QEMU's own vector 0 */
static const Script bogus_scripts[] = {
    { "landlock-ruleset", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_LANDLOCK } }, 4, false, "landlock-ruleset" },
    { "timerfd", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_TIMERFD } }, 4, false, "[timerfd]" },
    { "signalfd", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_SIGNALFD } }, 4, false, "[signalfd]" },
    { "pidfd", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_PIDFD } }, 4, false, "pidfd" },
    { "memfd", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_MEMFD } }, 4, false, "memfd:ivshmem-test" },
    { "pipe", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_PIPE_WRITE } }, 4, false, "pipe:[" },
    { "socket", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_SOCKET } }, 4, false, "socket:[" },
    { "regular-file", { { 0, FD_NONE }, { 0, FD_NONE }, { -1, FD_SHM },
      { 0, FD_BOGUS_FILE } }, 4, false, "bogus-regular-file" },
    /* the same, as another peer's vector */
    { "peer-landlock-ruleset", { { 0, FD_NONE }, { 0, FD_NONE },
      { -1, FD_SHM }, { 7, FD_BOGUS_LANDLOCK } }, 4, false,
      "landlock-ruleset" },
};

/*
 * Each refused at setup, with an error naming what was sent.  The
 * generic "not an eventfd" is checked by the script; the name here.
 */
static void test_isolation_bogus_fd(gconstpointer opaque)
{
    const Script *script = opaque;
    int kind = script->msgs[3].fd_kind;
    int fd = bogus_fd(kind);
    Script named = *script;

    if (fd < 0) {
        g_autofree char *why = g_strdup_printf("this kernel cannot make a "
                                               "%s fd: %s", script->name,
                                               g_strerror(errno));
        g_test_skip(why);
        return;
    }
    close(fd);
    named.error = "not an eventfd";
    test_malformed(&named);
    test_malformed(script);
}

/*
 * An eventfd in semaphore mode (EFD_SEMAPHORE) as this QEMU's own vector:
 * each read takes 1 from the counter, so one write of 2^64 - 2 by the
 * server would keep the main loop reading and the guest interrupted
 * forever.  Refused at setup, naming it.
 */
static void test_isolation_semaphore_eventfd(void)
{
    static const Script script = {
        "semaphore-eventfd", { { 0, FD_NONE }, { 0, FD_NONE },
        { -1, FD_SHM }, { 0, FD_BOGUS_SEMAPHORE } }, 4, false,
        "semaphore"
    };

    test_malformed(&script);
}

/*
 * The same descriptors, announced after setup to a QEMU in a chroot
 * without /proc, where the eventfd check falls back to the filesystem
 * and a write of 0: each refused (a doorbell to it is a guest error for
 * an unknown peer), nothing is written to the pipe, socket or file, and
 * a real eventfd announced last is still taken and rung exactly once.
 */
static void test_isolation_bogus_fd_no_proc(void)
{
    static const int kinds[] = {
        FD_BOGUS_LANDLOCK, FD_BOGUS_TIMERFD, FD_BOGUS_SIGNALFD,
        FD_BOGUS_PIDFD, FD_BOGUS_MEMFD, FD_BOGUS_PIPE_WRITE,
        FD_BOGUS_SOCKET, FD_BOGUS_FILE,
    };
    enum { FIRST = 20, REAL = 40 };
    g_autofree char *root = tmp_path("empty-root");
    g_autofree char *log = tmp_path("guest-errors");
    g_autofree char *text = NULL;
    char *asan;
    FakeServer *srv;
    int real = make_eventfd();
    int fds[ARRAY_SIZE(kinds)];
    int conn, i, refused = 0;
    struct stat st;
    gint64 start;
    Guest *g;

    if (geteuid() != 0) {
        g_test_skip("-run-with chroot= needs root");
        return;
    }
    g_assert_cmpint(mkdir(root, 0755), ==, 0);
    srv = server_start(1 * MiB, 1, 0);
    asan = asan_leaks_off();
    g = guest_start(SLOT, "-M pc -run-with chroot=%s -d guest_errors -D %s "
                    "-chardev socket,id=c,path=%s -device ivshmem-doorbell,"
                    "chardev=c,vectors=1,addr=%d", root, log, srv->path,
                    SLOT);
    asan_leaks_restore(asan);
    g_assert_cmpint(reg_read(g, REG_IV_POSITION), ==, 0);
    g_mutex_lock(&srv->lock);
    conn = srv->peers[0].conn;
    for (i = 0; i < ARRAY_SIZE(kinds); i++) {
        fds[i] = bogus_fd(kinds[i]);
        if (fds[i] >= 0) {
            send_msg(conn, FIRST + i, fds[i]);
        }
    }
    send_msg(conn, REAL, real);
    g_mutex_unlock(&srv->lock);

    /* the real one is taken once QEMU has read the announcements */
    start = g_get_monotonic_time();
    do {
        ring(g, REAL, 0);
    } while (!event_count(real, 100) && ms_since(start) < WAIT_MS);
    ring(g, REAL, 0);
    g_assert_cmpuint(event_count(real, WAIT_MS), ==, 1);
    for (i = 0; i < ARRAY_SIZE(kinds); i++) {
        if (fds[i] >= 0) {
            ring(g, FIRST + i, 0);
        }
    }
    qmp_ping(g->qts);
    guest_destroy(g);
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    for (i = 0; i < ARRAY_SIZE(kinds); i++) {
        g_autofree char *line = g_strdup_printf("doorbell for unknown peer "
                                                "%d or unconnected vector 0 "
                                                "ignored", FIRST + i);

        if (fds[i] < 0) {
            g_test_message("fd kind %d: not available here", kinds[i]);
            continue;
        }
        g_assert_nonnull(strstr(text, line));
        refused++;
        /* nothing written into what a file descriptor reaches */
        g_assert_cmpint(fstat(fds[i], &st), ==, 0);
        if (S_ISREG(st.st_mode)) {
            g_assert_cmpint(st.st_size, ==, kinds[i] == FD_BOGUS_MEMFD ?
                            4096 : 0);
        }
        close(fds[i]);
    }
    g_test_message("%d descriptor types refused without /proc", refused);
    g_assert_cmpint(refused, >=, 6);
    close(real);
    unlink(log);
    server_stop(srv);
    g_assert_cmpint(rmdir(root), ==, 0);
}

static void register_isolation_tests(void)
{
    int i;

    qtest_add_data_func("/ivshmem/isolation/saturated-peer/ioeventfd-on",
                        "on", test_isolation_saturated_peer);
    qtest_add_data_func("/ivshmem/isolation/saturated-peer/ioeventfd-off",
                        "off", test_isolation_saturated_peer);
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/isolation/own-vector-drain",
                       test_isolation_own_vector_drain);
    }
    for (i = 0; i < ARRAY_SIZE(bogus_scripts); i++) {
        g_autofree char *path = g_strdup_printf("/ivshmem/isolation/bogus-fd/"
                                                "%s", bogus_scripts[i].name);

        qtest_add_data_func(path, &bogus_scripts[i], test_isolation_bogus_fd);
    }
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/isolation/bogus-fd-no-proc",
                       test_isolation_bogus_fd_no_proc);
    }
    qtest_add_func("/ivshmem/isolation/semaphore-eventfd",
                   test_isolation_semaphore_eventfd);
    qtest_add_func("/ivshmem/isolation/shrink-iothread-sigbus",
                   test_shrink_iothread_sigbus);
}

/*
 * Peer presence (presence=on, docs/specs/ivshmem-spec.rst): the
 * capability, the registers and the paged peer table with many peers
 * joining and leaving, the interrupt on change, reset, the server going
 * away, INTx, and migration with and without it.
 */

#define PR_STATE            0x40
#define PR_OWN_VECTORS      0x44
#define PR_GENERATION       0x48
#define PR_PEER_COUNT       0x4c
#define PR_EVENT_STATUS     0x50
#define PR_EVENT_CONTROL    0x54
#define PR_PAGE_SELECT      0x58
#define PR_PAGE_SIZE        0x5c
#define PR_ENTRY            0x80
#define PR_PAGE             32
#define PR_CONNECTED        1
#define PR_RECONNECTING     2
#define PR_EV_PEERS         1
#define PR_EV_STATE         2
#define PR_ENABLE(vector)   ((uint32_t)(vector) << 16 | 1)

/* A server whose traffic the test scripts: setup in a thread, then live. */
typedef struct PrServer {
    char *path;
    int listen_fd;
    int conn;
    int efd;                    /* the eventfd sent for every vector */
    int own_id;
    int own_vectors;
    int vecs[65536];            /* what the server sent, 0: absent */
    GThread *thread;
} PrServer;

static void pr_send_peer(PrServer *ps, int id, int nvec)
{
    int v;

    for (v = 0; v < nvec; v++) {
        send_msg(ps->conn, id, ps->efd);
    }
}

static gpointer pr_setup_thread(gpointer opaque)
{
    PrServer *ps = opaque;
    struct pollfd pfd = { .fd = ps->listen_fd, .events = POLLIN };
    int shm, id;

    if (poll(&pfd, 1, 10000) != 1) {
        return NULL;
    }
    ps->conn = accept4(ps->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    g_assert_cmpint(ps->conn, >=, 0);
    send_msg(ps->conn, IVSHMEM_PROTOCOL_VERSION, -1);
    send_msg(ps->conn, ps->own_id, -1);
    shm = make_memfd(1 * MiB);
    send_msg(ps->conn, IVSHMEM_MSG_SHM, shm);
    close(shm);
    for (id = 0; id < 65536; id++) {
        pr_send_peer(ps, id, ps->vecs[id]);
    }
    pr_send_peer(ps, ps->own_id, ps->own_vectors);
    return NULL;
}

/* @npeers peers with IDs 2 + 3 i and 1 or 2 vectors; own ID 1500 */
static PrServer *pr_server_start(int npeers, int own_vectors)
{
    PrServer *ps = g_new0(PrServer, 1);
    struct rlimit rl;
    int i;

    g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < npeers * 2 + 512) {
        g_free(ps);
        return NULL;
    }
    rl.rlim_cur = rl.rlim_max;
    g_assert_cmpint(setrlimit(RLIMIT_NOFILE, &rl), ==, 0);
    ps->path = tmp_path("presence.sock");
    ps->listen_fd = listen_unix(ps->path);
    ps->conn = -1;
    ps->efd = make_eventfd();
    ps->own_id = 1500;
    ps->own_vectors = own_vectors;
    for (i = 0; i < npeers; i++) {
        g_assert_cmpint(2 + 3 * i, !=, ps->own_id);
        ps->vecs[2 + 3 * i] = 1 + i % 2;
    }
    ps->thread = g_thread_new("presence-server", pr_setup_thread, ps);
    return ps;
}

static void pr_setup_done(PrServer *ps)
{
    g_thread_join(ps->thread);
    g_assert_cmpint(ps->conn, >=, 0);
}

static void pr_join(PrServer *ps, int id, int nvec)
{
    g_assert_cmpint(ps->vecs[id], ==, 0);
    ps->vecs[id] = nvec;
    pr_send_peer(ps, id, nvec);
}

static void pr_leave(PrServer *ps, int id)
{
    g_assert_cmpint(ps->vecs[id], >, 0);
    ps->vecs[id] = 0;
    send_msg(ps->conn, id, -1);
}

static void pr_server_stop(PrServer *ps)
{
    if (ps->conn >= 0) {
        close(ps->conn);
    }
    close(ps->efd);
    close(ps->listen_fd);
    unlink(ps->path);
    g_free(ps->path);
    g_free(ps);
}

/* Wait until Generation reads @gen (the device applied every change). */
static void pr_wait_generation(Guest *g, uint32_t gen)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    while (reg_read(g, PR_GENERATION) != gen) {
        if (g_get_monotonic_time() > end) {
            g_test_message("Generation %u, expected %u",
                           reg_read(g, PR_GENERATION), gen);
            g_assert_not_reached();
        }
        g_usleep(1000);
    }
}

/* The whole table, page by page, against what the server sent. */
static void pr_check_table(Guest *g, PrServer *ps, int max_vectors)
{
    uint32_t count = reg_read(g, PR_PEER_COUNT);
    uint32_t pages = (count + PR_PAGE - 1) / PR_PAGE;
    uint32_t expected = 0, idx = 0, page, i, entry;
    int id = 0;

    for (id = 0; id < 65536; id++) {
        expected += ps->vecs[id] > 0;
    }
    g_assert_cmpuint(count, ==, expected);
    id = 0;
    for (page = 0; page <= pages; page++) {      /* one page past the end */
        reg_write(g, PR_PAGE_SELECT, page);
        g_assert_cmpuint(reg_read(g, PR_PAGE_SELECT), ==, page);
        for (i = 0; i < PR_PAGE; i++, idx++) {
            entry = reg_read(g, PR_ENTRY + 4 * i);
            if (idx >= count) {
                g_assert_cmphex(entry, ==, 0);
                continue;
            }
            while (!ps->vecs[id]) {
                id++;
            }
            g_assert_cmphex(entry, ==, 1u << 31 |
                            (uint32_t)MIN(ps->vecs[id], max_vectors) << 16 |
                            id);
            id++;
        }
    }
}

static uint8_t pr_find_cap(Guest *g)
{
    uint8_t pos = qpci_find_capability(g->dev, PCI_CAP_ID_VNDR, 0);

    while (pos && qpci_config_readb(g->dev, pos + 3) != 0x01) {
        pos = qpci_find_capability(g->dev, PCI_CAP_ID_VNDR, pos);
    }
    return pos;
}

static void test_presence_registers(void)
{
    const int npeers = 1000;
    PrServer *ps = pr_server_start(npeers, 2);
    Guest *g;
    uint32_t gen;
    uint8_t cap;
    int i, sum;

    if (!ps) {
        g_test_skip("RLIMIT_NOFILE too low for this many peers");
        return;
    }
    /* vectors=3 against a server's 2: vector 2 is for presence alone */
    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=3,presence=on,"
                    "addr=%d", ps->path, SLOT);
    pr_setup_done(ps);

    /* the capability locates the window in BAR0; MSI-X is still there */
    cap = pr_find_cap(g);
    g_assert_cmpuint(cap, !=, 0);
    g_assert_cmphex(qpci_config_readb(g->dev, cap + 2), ==, 0x10);
    g_assert_cmphex(qpci_config_readb(g->dev, cap + 4), ==, 0x01);
    g_assert_cmphex(qpci_config_readb(g->dev, cap + 5), ==, 0);
    g_assert_cmphex(qpci_config_readw(g->dev, cap + 6), ==, 0);
    g_assert_cmphex(qpci_config_readl(g->dev, cap + 8), ==, 0x40);
    g_assert_cmphex(qpci_config_readl(g->dev, cap + 12), ==, 0xc0);
    g_assert_cmpuint(qpci_find_capability(g->dev, PCI_CAP_ID_MSIX, 0), !=, 0);
    qpci_config_writel(g->dev, cap + 8, 0);                 /* read-only */
    g_assert_cmphex(qpci_config_readl(g->dev, cap + 8), ==, 0x40);

    /* after setup: connected, own vectors, the table, no event */
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 1500);
    g_assert_cmphex(reg_read(g, PR_STATE), ==, PR_CONNECTED);
    g_assert_cmpuint(reg_read(g, PR_OWN_VECTORS), ==, 2);
    g_assert_cmpuint(reg_read(g, PR_PAGE_SIZE), ==, PR_PAGE);
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, 0);
    g_assert_cmphex(reg_read(g, PR_EVENT_CONTROL), ==, 0);
    g_assert_cmphex(reg_read(g, 0x60), ==, 0);              /* reserved */
    pr_check_table(g, ps, 3);
    gen = reg_read(g, PR_GENERATION);
    reg_write(g, PR_GENERATION, 0);                         /* read-only */
    g_assert_cmpuint(reg_read(g, PR_GENERATION), ==, gen);

    /* enabling with nothing latched sends nothing */
    msix_program(g, 2, false);
    msix_program(g, 0, false);
    reg_write(g, PR_EVENT_CONTROL, 0xfff0 | PR_ENABLE(2));
    g_assert_cmphex(reg_read(g, PR_EVENT_CONTROL), ==, PR_ENABLE(2));
    g_assert_false(wait_msi_ms(g, 2, 100));

    /* a join: one change per vector (capped at 3), one interrupt */
    pr_join(ps, 0, 4);
    gen += 3;
    pr_wait_generation(g, gen);
    g_assert_true(wait_msi(g, 2));
    g_assert_false(msi_fired(g, 0));
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, PR_EV_PEERS);
    pr_check_table(g, ps, 3);

    /* latched: a further join is counted but not signalled */
    pr_join(ps, 65535, 1);
    pr_wait_generation(g, ++gen);
    g_assert_false(wait_msi_ms(g, 2, 200));
    reg_write(g, PR_EVENT_STATUS, PR_EV_STATE);             /* not set */
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, PR_EV_PEERS);
    reg_write(g, PR_EVENT_STATUS, PR_EV_PEERS);             /* W1C */
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, 0);

    /* half of them leave at once: one interrupt, the table follows */
    sum = 0;
    for (i = 0; i < npeers; i += 2) {
        sum += ps->vecs[2 + 3 * i];
        pr_leave(ps, 2 + 3 * i);
    }
    gen += sum;
    pr_wait_generation(g, gen);
    g_assert_true(wait_msi(g, 2));
    g_assert_false(wait_msi_ms(g, 2, 100));
    pr_check_table(g, ps, 3);
    g_assert_cmpuint(reg_read(g, PR_PEER_COUNT), ==, npeers / 2 + 2);

    /* reset: events and selection cleared, connection state kept */
    reg_write(g, PR_PAGE_SELECT, 7);
    qtest_qmp_assert_success(g->qts, "{'execute': 'system_reset'}");
    qtest_qmp_eventwait(g->qts, "RESET");
    guest_detach(g);
    guest_attach(g, g->qts, SLOT);
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, 0);
    g_assert_cmphex(reg_read(g, PR_EVENT_CONTROL), ==, 0);
    g_assert_cmphex(reg_read(g, PR_PAGE_SELECT), ==, 0);
    g_assert_cmpuint(reg_read(g, PR_GENERATION), ==, gen);
    g_assert_cmphex(reg_read(g, PR_STATE), ==, PR_CONNECTED);
    pr_check_table(g, ps, 3);

    /* the server goes away: RECONNECTING, table retained, interrupt */
    msix_program(g, 1, false);
    reg_write(g, PR_EVENT_CONTROL, PR_ENABLE(1));
    close(ps->conn);
    ps->conn = -1;
    pr_wait_generation(g, ++gen);
    g_assert_true(wait_msi(g, 1));
    g_assert_cmphex(reg_read(g, PR_STATE), ==, PR_RECONNECTING);
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, PR_EV_STATE);
    g_assert_cmpuint(reg_read(g, PR_OWN_VECTORS), ==, 2);
    pr_check_table(g, ps, 3);

    guest_destroy(g);
    pr_server_stop(ps);
}

/* Wait until PresenceState reads @state. */
static void pr_wait_state(Guest *g, uint32_t state)
{
    gint64 end = g_get_monotonic_time() + WAIT_MS * 1000;

    while (reg_read(g, PR_STATE) != state) {
        if (g_get_monotonic_time() > end) {
            g_test_message("PresenceState 0x%x, expected 0x%x",
                           reg_read(g, PR_STATE), state);
            g_assert_not_reached();
        }
        g_usleep(1000);
    }
}

/* Exactly the peers @ids (one vector each) on page 0, nothing after. */
static void pr_check_ids(Guest *g, const int *ids, int n)
{
    int i;

    g_assert_cmpuint(reg_read(g, PR_PEER_COUNT), ==, n);
    reg_write(g, PR_PAGE_SELECT, 0);
    for (i = 0; i < n; i++) {
        g_assert_cmphex(reg_read(g, PR_ENTRY + 4 * i), ==,
                        1u << 31 | 1 << 16 | ids[i]);
    }
    g_assert_cmphex(reg_read(g, PR_ENTRY + 4 * n), ==, 0);
}

/*
 * The server restarts: RECONNECTING with the old table while it is gone,
 * REFUSED (old table) for a restarted server on other memory, then the
 * new session's table and ID at once on the same memory; an interrupt
 * for each step.
 */
static void test_presence_reconnect(void)
{
    FakeServer *srv = server_start(1 * MiB, 1, 2);
    g_autofree char *path = g_strdup(srv->path);
    int shm = dup(srv->shm_fd), other = make_memfd(1 * MiB);
    const int old_ids[] = { 2 }, new_ids[] = { 4, 5 };
    Guest *g;

    g_assert_cmpint(server_join(srv, -1), ==, 2);
    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s,"
                    "reconnect-ms=100 -device ivshmem-doorbell,chardev=c,"
                    "vectors=2,presence=on,addr=%d", srv->path, SLOT);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 3);
    g_assert_cmphex(reg_read(g, PR_STATE), ==, PR_CONNECTED);
    g_assert_cmpuint(reg_read(g, PR_OWN_VECTORS), ==, 1);
    pr_check_ids(g, old_ids, 1);
    msix_program(g, 1, false);
    reg_write(g, PR_EVENT_CONTROL, PR_ENABLE(1));

    /* gone: the table is retained */
    server_crash(srv);
    pr_wait_state(g, PR_RECONNECTING);
    g_assert_true(wait_msi(g, 1));
    pr_check_ids(g, old_ids, 1);
    reg_write(g, PR_EVENT_STATUS, reg_read(g, PR_EVENT_STATUS));

    /* back on other memory: refused, table retained */
    srv = server_start_at(path, other, 1 * MiB, 1, 4, 2);
    pr_wait_state(g, 4);
    g_assert_true(wait_msi(g, 1));
    pr_check_ids(g, old_ids, 1);
    g_assert_cmpuint(reg_read(g, REG_IV_POSITION), ==, 3);
    reg_write(g, PR_EVENT_STATUS, reg_read(g, PR_EVENT_STATUS));
    server_crash(srv);
    pr_wait_state(g, PR_RECONNECTING);
    g_assert_true(wait_msi(g, 1));
    reg_write(g, PR_EVENT_STATUS, reg_read(g, PR_EVENT_STATUS));

    /* back on the same memory: the new session's peers, ID and vectors */
    srv = server_start_at(path, shm, 1 * MiB, 1, 4, 2);
    g_assert_true(wait_position(g, 6));
    g_assert_cmphex(reg_read(g, PR_STATE), ==, PR_CONNECTED);
    g_assert_true(wait_msi(g, 1));
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==,
                    PR_EV_PEERS | PR_EV_STATE);
    g_assert_cmpuint(reg_read(g, PR_OWN_VECTORS), ==, 1);
    pr_check_ids(g, new_ids, 2);

    guest_destroy(g);
    server_stop(srv);
    close(shm);
    close(other);
}

/* Without presence=on nothing of it shows; where it cannot be, refused */
static void test_presence_off(void)
{
    PrServer *ps = pr_server_start(4, 1);
    g_autofree char *shm = shm_name("pr-off");
    g_autofree char *args = g_strdup_printf("-device ivshmem,shm=%s,"
                                            "presence=on", shm);
    Guest *g;
    uint64_t off;

    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem-doorbell,chardev=c,vectors=2,addr=%d",
                    ps->path, SLOT);
    pr_setup_done(ps);
    g_assert_cmpuint(qpci_find_capability(g->dev, PCI_CAP_ID_VNDR, 0), ==, 0);
    reg_write(g, PR_EVENT_CONTROL, PR_ENABLE(0));
    reg_write(g, PR_PAGE_SELECT, 1);
    pr_join(ps, 0, 1);
    g_usleep(100 * 1000);
    for (off = 0x10; off < 0x100; off += 4) {
        g_assert_cmphex(reg_read(g, off), ==, 0);
    }
    guest_destroy(g);
    pr_server_stop(ps);

    expect_start_failure(args, "property 'presence' needs a server");
    g_assert_false(shm_exists(shm));
    expect_start_failure("-object memory-backend-ram,id=m,size=1M "
                         "-device ivshmem-plain,memdev=m,presence=on",
                         "presence");
}

/* The legacy device without MSI-X: IntrStatus bit 1 and INTx */
static void test_presence_intx(void)
{
    PrServer *ps = pr_server_start(2, 1);
    Guest *g;
    uint32_t gen;

    g = guest_start(SLOT, "-M pc -chardev socket,id=c,path=%s -device "
                    "ivshmem,chardev=c,msi=off,presence=on,addr=%d",
                    ps->path, SLOT);
    pr_setup_done(ps);
    intx_route(g);
    g_assert_cmpuint(pr_find_cap(g), !=, 0);
    g_assert_cmpuint(reg_read(g, PR_PEER_COUNT), ==, 2);
    gen = reg_read(g, PR_GENERATION);
    reg_write(g, REG_INTR_MASK, 2);
    reg_write(g, PR_EVENT_CONTROL, 1);
    pr_leave(ps, 2);
    pr_wait_generation(g, gen + 1);
    g_assert_true(intx_wait(g, true, WAIT_MS));
    g_assert_cmphex(reg_read(g, REG_INTR_STATUS), ==, 2);  /* read clears */
    g_assert_true(intx_wait(g, false, WAIT_MS));
    g_assert_cmphex(reg_read(g, PR_EVENT_STATUS), ==, PR_EV_PEERS);
    g_assert_cmpuint(reg_read(g, PR_PEER_COUNT), ==, 1);
    guest_destroy(g);
    pr_server_stop(ps);
}

/* A doorbell master with presence=on migrates to one with presence=on. */
static void test_presence_migrate(void)
{
    FakeServer *srv_src = server_start(1 * MiB, 2, 0);
    FakeServer *srv_dst = server_start(1 * MiB, 2, 0);
    int local_dst = server_join(srv_dst, -1);
    g_autofree char *sock = tmp_path("mig-pr.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    Guest *src = doorbell_guest(srv_src, SLOT, ",master=on,presence=on");
    Guest *dst = g_new0(Guest, 1);
    uint32_t gen_src, gen_dst;

    dst->qts = qtest_initf("-M pc -chardev socket,id=c,path=%s "
                           "-device ivshmem-doorbell,chardev=c,vectors=2,"
                           "master=on,presence=on,addr=%d -incoming %s",
                           srv_dst->path, SLOT, uri);
    /* the destination's setup: its peer's 2 vectors and its own 2 */
    gen_dst = 4;
    msix_program(src, 1, false);
    reg_write(src, PR_EVENT_CONTROL, PR_ENABLE(1));
    reg_write(src, PR_PAGE_SELECT, 3);
    gen_src = reg_read(src, PR_GENERATION);
    g_assert_cmpuint(reg_read(src, PR_PEER_COUNT), ==, 0);

    qtest_qmp_assert_success(src->qts, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    wait_migration_done(src->qts);
    qtest_qmp_eventwait(dst->qts, "RESUME");
    guest_attach(dst, dst->qts, SLOT);
    g_assert_true(wait_msi(dst, 1));                /* told once */
    g_assert_false(wait_msi_ms(dst, 1, 100));
    g_assert_cmphex(reg_read(dst, PR_EVENT_CONTROL), ==, PR_ENABLE(1));
    g_assert_cmphex(reg_read(dst, PR_PAGE_SELECT), ==, 3);
    g_assert_cmphex(reg_read(dst, PR_EVENT_STATUS), ==,
                    PR_EV_PEERS | PR_EV_STATE);
    g_assert_cmpuint(reg_read(dst, PR_GENERATION), ==, gen_src + gen_dst + 1);
    g_assert_cmphex(reg_read(dst, PR_STATE), ==, PR_CONNECTED);
    /* the destination's own session: its server's peer */
    g_assert_cmpuint(reg_read(dst, PR_PEER_COUNT), ==, 1);
    reg_write(dst, PR_PAGE_SELECT, 0);
    g_assert_cmphex(reg_read(dst, PR_ENTRY), ==, 1u << 31 | 2 << 16 |
                    local_dst);
    guest_destroy(src);
    guest_destroy(dst);
    server_stop(srv_src);
    server_stop(srv_dst);
}

/* presence differs between the ends: the destination refuses, cleanly */
static void test_presence_migrate_mismatch(gconstpointer opaque)
{
    bool src_on = GPOINTER_TO_INT(opaque);
    FakeServer *srv_src = server_start(1 * MiB, 1, 0);
    FakeServer *srv_dst = server_start(1 * MiB, 1, 0);
    g_autofree char *sock = tmp_path("mig-prm.sock");
    g_autofree char *uri = g_strdup_printf("unix:%s", sock);
    Guest *src = doorbell_guest(srv_src, SLOT, src_on ?
                                ",master=on,presence=on" : ",master=on");
    QTestState *dst;
    QDict *resp;
    const char *status;
    gint64 end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;

    dst = qtest_initf("-M pc -chardev socket,id=c,path=%s -device "
                      "ivshmem-doorbell,chardev=c,vectors=1,master=on,"
                      "presence=%s,addr=%d -incoming defer", srv_dst->path,
                      src_on ? "off" : "on", SLOT);
    qtest_set_expected_status(dst, 1);
    /* the return path tells the source that the destination refused */
    qtest_qmp_assert_success(dst, "{'execute': 'migrate-set-capabilities', "
                             "'arguments': {'capabilities': [{"
                             "'capability': 'return-path', 'state': true}]}}");
    qtest_qmp_assert_success(src->qts, "{'execute': "
                             "'migrate-set-capabilities', 'arguments': {"
                             "'capabilities': [{'capability': 'return-path', "
                             "'state': true}]}}");
    qtest_qmp_assert_success(dst, "{'execute': 'migrate-incoming', "
                             "'arguments': {'uri': %s}}", uri);
    qpci_io_writel(src->dev, src->bar2, 0, 0x600dcafe);
    qtest_qmp_assert_success(src->qts, "{'execute': 'migrate', "
                             "'arguments': {'uri': %s}}", uri);
    for (;;) {
        resp = qtest_qmp(src->qts, "{'execute': 'query-migrate'}");
        status = qdict_get_try_str(qdict_get_qdict(resp, "return"),
                                   "status");
        g_assert(status);
        g_assert_cmpstr(status, !=, "completed");
        if (g_str_equal(status, "failed")) {
            qobject_unref(resp);
            break;
        }
        qobject_unref(resp);
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(20000);
    }
    qtest_wait_qemu(dst);
    qtest_quit(dst);
    /* the guest runs on at the source, device and memory intact */
    resp = qtest_qmp(src->qts, "{'execute': 'query-status'}");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(resp, "return"),
                                  "status"), ==, "running");
    qobject_unref(resp);
    g_assert_cmphex(qpci_io_readl(src->dev, src->bar2, 0), ==, 0x600dcafe);
    g_assert_cmphex(reg_read(src, PR_STATE), ==, src_on ? PR_CONNECTED : 0);
    guest_destroy(src);
    server_stop(srv_src);
    server_stop(srv_dst);
}

int main(int argc, char **argv)
{
    int ret, i;

    g_test_init(&argc, &argv, NULL);
    tmpdir = g_dir_make_tmp("ivshmem-test-XXXXXX", NULL);
    g_assert(tmpdir);

    qtest_add_func("/ivshmem/config-space", test_config_space);
    qtest_add_func("/ivshmem/registers", test_registers);
    qtest_add_func("/ivshmem/help", test_help);
    qtest_add_func("/ivshmem/plain/file", test_plain_file);
    qtest_add_func("/ivshmem/plain/memfd", test_plain_memfd);
    qtest_add_func("/ivshmem/plain/two-devices", test_plain_two_devices);
    qtest_add_func("/ivshmem/plain/bar-above-4g", test_plain_large_bar);
    qtest_add_func("/ivshmem/legacy/shm-create", test_legacy_shm_create);
    qtest_add_func("/ivshmem/legacy/shm-existing", test_legacy_shm_existing);
    qtest_add_func("/ivshmem/cmdline-errors", test_cmdline_errors);
    qtest_add_func("/ivshmem/compat/property-types",
                   test_compat_property_types);
    qtest_add_func("/ivshmem/compat/master-auto", test_compat_master_auto);
    qtest_add_func("/ivshmem/compat/no-share", test_compat_no_share);
    qtest_add_func("/ivshmem/compat/reconnect-startup",
                   test_compat_reconnect_startup);
    qtest_add_func("/ivshmem/guest-errors-named", test_guest_errors_named);
    qtest_add_func("/ivshmem/server/2-peers", test_server_2_peers);
    qtest_add_func("/ivshmem/server/8-peers", test_server_8_peers);
    qtest_add_func("/ivshmem/server/ioeventfd-off",
                   test_server_ioeventfd_off);
    qtest_add_func("/ivshmem/server/ioeventfd-bypass",
                   test_server_ioeventfd_bypass);
    qtest_add_data_func("/ivshmem/server/confined/sandbox", "sandbox",
                        test_server_confined);
    if (g_test_slow()) {
        qtest_add_data_func("/ivshmem/server/confined/chroot", "chroot",
                            test_server_confined);
        qtest_add_data_func("/ivshmem/server/confined/chroot-sandbox",
                            "chroot sandbox", test_server_confined);
        qtest_add_func("/ivshmem/server/4000-peers", test_server_4000_peers);
        qtest_add_func("/ivshmem/server/peer-memory",
                       test_server_peer_memory);
    }
    qtest_add_func("/ivshmem/server/16bit-vector", test_server_16bit_vector);
    qtest_add_func("/ivshmem/server/masked-pending",
                   test_server_masked_pending);
    qtest_add_func("/ivshmem/server/intx", test_server_intx);
    qtest_add_func("/ivshmem/server/legacy-msi", test_server_legacy_msi);
    qtest_add_func("/ivshmem/server/server-gone", test_server_gone);
    qtest_add_func("/ivshmem/server/disconnect-join",
                   test_server_disconnect_join);
    qtest_add_func("/ivshmem/server/fewer-more-vectors",
                   test_server_fewer_more_vectors);
    qtest_add_func("/ivshmem/server/master-not-first",
                   test_server_master_not_first);
    qtest_add_func("/ivshmem/server/reset", test_server_reset_keeps_connection);
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/server/restart-master",
                       test_server_restart_master);
        qtest_add_func("/ivshmem/server/restart-same-memory",
                       test_server_restart_same_memory);
        qtest_add_func("/ivshmem/server/restart-no-vectors",
                       test_server_restart_no_vectors);
        qtest_add_func("/ivshmem/server/restart-other-memory",
                       test_server_restart_other_memory);
    }
    for (i = 0; i < ARRAY_SIZE(scripts); i++) {
        g_autofree char *path = g_strdup_printf("/ivshmem/malformed/%s",
                                                scripts[i].name);
        qtest_add_data_func(path, &scripts[i], test_malformed);
        if (!scripts[i].close_early) {
            g_autofree char *hp = g_strdup_printf("/ivshmem/malformed-hotplug/"
                                                  "%s", scripts[i].name);
            qtest_add_data_func(hp, &scripts[i], test_malformed_hotplug);
        }
    }
    if (g_test_slow()) {
        for (i = 0; i < ARRAY_SIZE(stalls); i++) {
            g_autofree char *st = g_strdup_printf("/ivshmem/setup-deadline/"
                                                  "startup/%s", stalls[i].name);
            g_autofree char *hp = g_strdup_printf("/ivshmem/setup-deadline/"
                                                  "hotplug/%s", stalls[i].name);

            qtest_add_data_func(st, &stalls[i], test_setup_deadline_startup);
            qtest_add_data_func(hp, &stalls[i], test_setup_deadline_hotplug);
        }
    }
    qtest_add_func("/ivshmem/hotplug/pc", test_hotplug_pc);
    qtest_add_func("/ivshmem/hotplug/unplug-after-join",
                   test_hotplug_unplug_after_join);
    qtest_add_func("/ivshmem/hotplug/q35", test_hotplug_q35);
    qtest_add_func("/ivshmem/migration/master", test_migrate_master);
    qtest_add_func("/ivshmem/migration/legacy-old-stream",
                   test_migrate_legacy_old_stream);
    qtest_add_func("/ivshmem/migration/doorbell-master",
                   test_migrate_doorbell_master);
    qtest_add_func("/ivshmem/migration/peer-blocked",
                   test_migrate_peer_blocked);
    qtest_add_func("/ivshmem/migration/peer-destination",
                   test_migrate_peer_destination);
    qtest_add_func("/ivshmem/kvm/irqfd", test_kvm_irqfd);
    qtest_add_func("/ivshmem/kvm/restart", test_kvm_restart);
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/kvm/4000-peers", test_kvm_4000_peers);
        qtest_add_func("/ivshmem/kvm/ioeventfds-beyond-bus-limit",
                       test_kvm_ioeventfds_beyond_bus_limit);
    }
    qtest_add_func("/ivshmem/real-server", test_real_server);
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/server/no-vectors", test_server_no_vectors);
    }
    qtest_add_func("/ivshmem/real-server-restart", test_real_server_restart);
    if (g_test_slow()) {
        qtest_add_func("/ivshmem/real-server-hugetlbfs",
                       test_real_server_hugetlbfs);
    }
    register_isolation_tests();
    qtest_add_func("/ivshmem/presence/registers", test_presence_registers);
    qtest_add_func("/ivshmem/presence/off", test_presence_off);
    qtest_add_func("/ivshmem/presence/intx", test_presence_intx);
    qtest_add_func("/ivshmem/presence/reconnect", test_presence_reconnect);
    qtest_add_func("/ivshmem/presence/migration", test_presence_migrate);
    qtest_add_data_func("/ivshmem/presence/migration/on-to-off",
                        GINT_TO_POINTER(true),
                        test_presence_migrate_mismatch);
    qtest_add_data_func("/ivshmem/presence/migration/off-to-on",
                        GINT_TO_POINTER(false),
                        test_presence_migrate_mismatch);

    ret = g_test_run();
    rmdir(tmpdir);
    g_free(tmpdir);
    return ret;
}
