/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: guest config/BAR0/BAR1/BAR2 accesses over qtest. */

/*
 * The harness runs an ivshmem-server and two QEMUs with -accel qtest:
 * the target T with four devices (ivshmem-doorbell with 4 vectors,
 * legacy ivshmem on the server with msi=off, ivshmem-plain, legacy
 * ivshmem with shm=) and a peer P with one ivshmem-doorbell.  Each input
 * is a list of guest accesses of every width to T's config space and
 * BARs, plus doorbells rung both ways, clock steps and MSI-X toggles.
 * After every input T's BARs are programmed again and T must still work:
 * it answers, IVPosition is unchanged, each device's BAR2 reaches its
 * shared memory (checked through P and through the harness's own
 * mapping), and (every 8th input) a doorbell rung by P arrives as an
 * MSI-X write in T.
 * A QEMU that dies or stops answering for 30 s aborts the harness (with
 * its threads' stacks, when gdb is installed).
 *
 * Op: one byte, then operands.
 *   bit 7 clear: access. bits 0-1 region (config, BAR0, BAR1, BAR2),
 *     bits 2-3 device, bits 4-5 width (1, 2, 4, 8), bit 6 write;
 *     then a LE u16 offset (BAR2: times 16) and for writes the value.
 *   bit 7 set: bits 0-2 pick clock step, T rings a peer, P rings T,
 *     re-program a device, MSI-X enable/mask, doorbell storm, read
 *     IVPosition everywhere, sleep; operands as each needs.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "fuzz.h"

#define NDEV            4
#define SHM_SIZE        (1 << 20)
#define VECTORS         4
#define MAX_OPS         512
#define REPLY_TIMEOUT   30000   /* ms (ASan builds on a loaded machine) */
#define MSI_BASE        0x10000 /* guest RAM where MSI-X writes land */
#define BAR0_BASE       0xfeb00000u
#define BAR1_BASE       0xfeb80000u
#define BAR2_BASE       0xe0000000u
#define REG_IVPOSITION  0x08
#define REG_DOORBELL    0x0c

#define CHECK(cond) do {                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fuzz-guest: %s:%d: check failed: %s\n",    \
                    __FILE__, __LINE__, #cond);                         \
            fail();                                                     \
        }                                                               \
    } while (0)

typedef struct Machine {
    const char *name;
    pid_t pid;
    int fd;
    char log[128];
    char buf[4096];
    size_t len;
} Machine;

typedef struct Device {
    unsigned slot;
    bool has_bar1;
    bool on_server;
    uint8_t msix_cap;           /* 0: none */
    uint32_t id;                /* IVPosition after setup */
    uint8_t *mem;               /* the harness's own mapping, or NULL */
} Device;

static Machine qt = { .name = "target" }, qp = { .name = "peer" };
static Device devs[NDEV] = {
    { .slot = 4, .has_bar1 = true, .on_server = true },
    { .slot = 5, .on_server = true },
    { .slot = 6 },
    { .slot = 7 },
};
static Device peer_dev = { .slot = 4, .has_bar1 = true, .on_server = true };
static pid_t server_pid;
static char dir[64], server_log[160];
static uint32_t check_round;

static void fail(void);

static void dump_file(const char *what, const char *path)
{
    char line[512];
    FILE *f = fopen(path, "r");
    int n = 0;

    if (!f) {
        return;
    }
    fprintf(stderr, "fuzz-guest: %s log (%s):\n", what, path);
    while (fgets(line, sizeof(line), f) && n++ < 200) {
        fprintf(stderr, "  %s", line);
    }
    fclose(f);
}

static void dump_logs(void)
{
    dump_file("target QEMU", qt.log);
    dump_file("peer QEMU", qp.log);
    dump_file("server", server_log);
}

/* Where a silent QEMU is: its threads, its fds, its sockets' queues. */
static void dump_stacks(pid_t pid)
{
    char cmd[320];

    snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2; "
             "ss -xpn 2>/dev/null | grep 'pid=%d,' >&2; "
             "command -v gdb > /dev/null && gdb -q -batch "
             "-p %d -ex 'thread apply all bt' >&2 2>&1", (int)pid, (int)pid,
             (int)pid);
    if (system(cmd)) {
        /* no gdb: no stacks */
    }
}

static void check_alive(pid_t pid, const char *what)
{
    int status;

    if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
        fprintf(stderr, "fuzz-guest: %s died: %s %d\n", what,
                WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        fail();
    }
}

/*
 * poll() that a signal does not cut short: libFuzzer's SIGALRM (its
 * -timeout watchdog) fires every timeout/2 seconds, and an EINTR taken
 * for a silent QEMU made false "QEMU hangs" findings.
 */
static int poll_retrying(struct pollfd *pfd, int timeout_ms)
{
    struct timespec t0, t;
    int r, left = timeout_ms;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        r = poll(pfd, 1, left);
        if (r >= 0 || errno != EINTR) {
            return r;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        left = timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 +
                             (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0) {
            return 0;
        }
    }
}

/* Send one qtest command and return the value of its "OK [value]" reply. */
static uint64_t qtest_cmd(Machine *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static uint64_t qtest_cmd(Machine *q, const char *fmt, ...)
{
    char cmd[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
    va_end(ap);
    cmd[n++] = '\n';
    if (send(q->fd, cmd, n, MSG_NOSIGNAL) != n) {
        check_alive(q->pid, q->name);
        CHECK(!"cannot send to qtest");
    }
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);
        struct pollfd pfd = { .fd = q->fd, .events = POLLIN };
        ssize_t r;

        if (nl) {
            uint64_t v = 0;
            size_t linelen = nl - q->buf + 1;

            *nl = 0;
            if (strncmp(q->buf, "IRQ", 3) == 0) {
                memmove(q->buf, nl + 1, q->len - linelen);
                q->len -= linelen;
                continue;
            }
            if (strncmp(q->buf, "OK", 2) != 0) {
                fprintf(stderr, "fuzz-guest: %s: '%.*s' -> '%s'\n", q->name,
                        n - 1, cmd, q->buf);
                CHECK(!"qtest command failed");
            }
            if (q->buf[2] == ' ') {
                sscanf(q->buf + 3, "%" SCNx64, &v);
            }
            memmove(q->buf, nl + 1, q->len - linelen);
            q->len -= linelen;
            return v;
        }
        if (poll_retrying(&pfd, REPLY_TIMEOUT) <= 0) {
            check_alive(q->pid, q->name);
            fprintf(stderr, "fuzz-guest: %s: no reply to '%.*s'\n", q->name,
                    n - 1, cmd);
            dump_stacks(q->pid);
            /* a reply that only needed another nudge? */
            if (send(q->fd, "\n", 1, MSG_NOSIGNAL) == 1 &&
                poll(&pfd, 1, 1000) > 0) {
                fprintf(stderr, "fuzz-guest: %s answered after a newline\n",
                        q->name);
            }
            CHECK(!"QEMU hangs");
        }
        r = read(q->fd, q->buf + q->len, sizeof(q->buf) - q->len);
        if (r <= 0) {
            check_alive(q->pid, q->name);
            usleep(200000);
            check_alive(q->pid, q->name);
            CHECK(!"qtest connection closed");
        }
        q->len += r;
    }
}

static uint32_t cfg_addr(const Device *d, unsigned off)
{
    return 0x80000000u | d->slot << 11 | (off & 0xfc);
}

static uint32_t cfg_read(Machine *q, const Device *d, unsigned off, int width)
{
    qtest_cmd(q, "outl 0xcf8 0x%x", cfg_addr(d, off));
    switch (width) {
    case 1:
        return qtest_cmd(q, "inb 0x%x", 0xcfc + (off & 3));
    case 2:
        return qtest_cmd(q, "inw 0x%x", 0xcfc + (off & 2));
    default:
        return qtest_cmd(q, "inl 0xcfc");
    }
}

static void cfg_write(Machine *q, const Device *d, unsigned off, int width,
                      uint32_t v)
{
    qtest_cmd(q, "outl 0xcf8 0x%x", cfg_addr(d, off));
    switch (width) {
    case 1:
        qtest_cmd(q, "outb 0x%x 0x%x", 0xcfc + (off & 3), v & 0xff);
        break;
    case 2:
        qtest_cmd(q, "outw 0x%x 0x%x", 0xcfc + (off & 2), v & 0xffff);
        break;
    default:
        qtest_cmd(q, "outl 0xcfc 0x%x", v);
        break;
    }
}

static uint64_t bar_base(const Device *d, int bar)
{
    unsigned i = d - devs < NDEV && d >= devs ? d - devs : 0;

    switch (bar) {
    case 0:
        return BAR0_BASE + i * 0x1000;
    case 1:
        return BAR1_BASE + i * 0x1000;
    default:
        return BAR2_BASE + (uint64_t)i * SHM_SIZE;
    }
}

static uint8_t find_msix_cap(Machine *q, const Device *d)
{
    uint8_t pos = cfg_read(q, d, 0x34, 1);
    int n = 0;

    while (pos && n++ < 48) {
        if (cfg_read(q, d, pos, 1) == 0x11) {
            return pos;
        }
        pos = cfg_read(q, d, pos + 1, 1);
    }
    return 0;
}

/* Memory decode and bus mastering on, BARs where the harness expects. */
static void program_device(Machine *q, Device *d)
{
    cfg_write(q, d, 0x04, 2, 0);
    cfg_write(q, d, 0x10, 4, bar_base(d, 0));
    cfg_write(q, d, 0x14, 4, d->has_bar1 ? bar_base(d, 1) : 0);
    cfg_write(q, d, 0x18, 4, bar_base(d, 2) | 0xc);
    cfg_write(q, d, 0x1c, 4, bar_base(d, 2) >> 32);
    cfg_write(q, d, 0x04, 2, 0x6);
}

static void msix_setup(Machine *q, Device *d, unsigned vector)
{
    uint64_t entry = bar_base(d, 1) + vector * 16;

    /* enable, function unmasked; entry unmasked, writing guest RAM */
    cfg_write(q, d, d->msix_cap + 2, 2, 0x8000);
    qtest_cmd(q, "writel 0x%" PRIx64 " 0x%x", entry, MSI_BASE + vector * 4);
    qtest_cmd(q, "writel 0x%" PRIx64 " 0x0", entry + 4);
    qtest_cmd(q, "writel 0x%" PRIx64 " 0x%x", entry + 8, 0xc0de0000 | vector);
    qtest_cmd(q, "writel 0x%" PRIx64 " 0x0", entry + 12);
}

static pid_t spawn(const char *log, char *const argv[])
{
    pid_t pid = fork();
    int fd, i;

    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* go when the harness goes */
        fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        for (i = 3; i < 1024; i++) {
            close(i);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void start_qemu(Machine *q, const char *devices)
{
    const char *bin = getenv("QEMU_BINARY");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char qtest[160], cmd[2048];
    int ls, i;
    struct pollfd pfd;

    CHECK(bin);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.qtest", dir, q->name);
    snprintf(q->log, sizeof(q->log), "%s/%s.log", dir, q->name);
    ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(ls, 1) == 0);
    snprintf(qtest, sizeof(qtest), "unix:%s", sa.sun_path);
    snprintf(cmd, sizeof(cmd), "exec %s -M pc -m 64 -accel qtest "
             "-nodefaults -display none -qtest %s -qtest-log /dev/null %s",
             bin, qtest, devices);
    {
        char *argv[] = { (char *)"/bin/sh", (char *)"-c", cmd, NULL };
        q->pid = spawn(q->log, argv);
    }
    pfd = (struct pollfd) { .fd = ls, .events = POLLIN };
    for (i = 0; i < 100 && poll(&pfd, 1, 100) == 0; i++) {
        check_alive(q->pid, q->name);
    }
    q->fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    CHECK(q->fd >= 0);
    close(ls);
}

static void *map_shm(const char *path)
{
    int fd = open(path, O_RDWR);
    void *p;

    CHECK(fd >= 0);
    p = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(p != MAP_FAILED);
    return p;
}

static void stop_all(void)
{
    pid_t *pids[3] = { &qt.pid, &qp.pid, &server_pid };
    char cmd[96];
    int i;

    for (i = 0; i < 3; i++) {
        if (*pids[i] > 0) {
            kill(*pids[i], SIGKILL);
            waitpid(*pids[i], NULL, 0);
            *pids[i] = 0;
        }
    }
    if (dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf %s /dev/shm/fuzz-guest-%d",
                 dir, (int)getpid());
        if (system(cmd)) {
            /* nothing to do */
        }
    }
}

/* A finding: show the logs, leave nothing behind, abort. */
static void fail(void)
{
    dump_logs();
    stop_all();
    abort();
}

/* P rings T's doorbell device on @vector: T writes the MSI-X message. */
static bool doorbell_arrives(unsigned vector)
{
    uint64_t slot = MSI_BASE + vector * 4;
    int i;

    msix_setup(&qt, &devs[0], vector);
    qtest_cmd(&qt, "writel 0x%" PRIx64 " 0x0", slot);
    qtest_cmd(&qp, "writel 0x%" PRIx64 " 0x%x", bar_base(&peer_dev, 0) +
            REG_DOORBELL, devs[0].id << 16 | vector);
    for (i = 0; i < 400; i++) {
        if (qtest_cmd(&qt, "readl 0x%" PRIx64, slot) == (0xc0de0000 | vector)) {
            return true;
        }
        usleep(i < 10 ? 100 : 5000);
    }
    return false;
}

/* T works: BARs reach memory, IDs stay, a doorbell arrives. */
static void check_target(void)
{
    uint32_t marker = 0x5a000000 | (++check_round & 0xffffff);
    uint32_t off = (check_round * 64) % SHM_SIZE;
    int i;

    for (i = 0; i < NDEV; i++) {
        program_device(&qt, &devs[i]);
    }
    for (i = 0; i < NDEV; i++) {
        if (devs[i].on_server) {
            CHECK(qtest_cmd(&qt, "readl 0x%" PRIx64,
                          bar_base(&devs[i], 0) + REG_IVPOSITION) ==
                  devs[i].id);
        }
    }
    /* doorbell device and P share the server's memory, so does d1 */
    qtest_cmd(&qt, "writel 0x%" PRIx64 " 0x%x", bar_base(&devs[0], 2) + off,
            marker);
    CHECK(qtest_cmd(&qp, "readl 0x%" PRIx64, bar_base(&peer_dev, 2) + off) ==
          marker);
    CHECK(qtest_cmd(&qt, "readl 0x%" PRIx64, bar_base(&devs[1], 2) + off) ==
          marker);
    /* the plain and shm= devices: the harness's own mapping */
    for (i = 2; i < NDEV; i++) {
        qtest_cmd(&qt, "writel 0x%" PRIx64 " 0x%x", bar_base(&devs[i], 2) + off,
                marker + i);
        /* QEMU wrote it from another process: read it fresh */
        CHECK(*(volatile uint32_t *)(devs[i].mem + off) == marker + i);
    }
    /* the slowest check (two main loops in the way): every 8th input */
    if (check_round % 8 == 1) {
        CHECK(doorbell_arrives(check_round / 8 % VECTORS));
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *server = getenv("IVSHMEM_SERVER");
    char sock[96], shm[64], plain[96], devices[1024], size[16], vec[16];
    int pid = getpid(), i;

    CHECK(server);
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/fuzz-guest-%d", pid);
    CHECK(mkdir(dir, 0700) == 0);
    atexit(stop_all);

    snprintf(sock, sizeof(sock), "%s/server.sock", dir);
    snprintf(server_log, sizeof(server_log), "%s/server.log", dir);
    snprintf(size, sizeof(size), "%d", SHM_SIZE);
    snprintf(vec, sizeof(vec), "%d", VECTORS);
    {
        char *sargv[] = { (char *)server, (char *)"-F", (char *)"-S", sock,
                          (char *)"-m", dir, (char *)"-l", size,
                          (char *)"-n", vec, NULL };
        server_pid = spawn(server_log, sargv);
    }
    for (i = 0; i < 500 && access(sock, F_OK) != 0; i++) {
        check_alive(server_pid, "server");
        usleep(10000);
    }
    snprintf(shm, sizeof(shm), "fuzz-guest-%d", pid);
    snprintf(plain, sizeof(plain), "%s/plain", dir);
    snprintf(devices, sizeof(devices),
             "-chardev socket,path=%s,id=s0 -chardev socket,path=%s,id=s1 "
             "-device ivshmem-doorbell,chardev=s0,vectors=%d,addr=4 "
             "-device ivshmem,chardev=s1,msi=off,size=1M,addr=5 "
             "-object memory-backend-file,id=hm,mem-path=%s,size=1M,"
             "share=on -device ivshmem-plain,memdev=hm,addr=6 "
             "-device ivshmem,shm=%s,size=1M,addr=7",
             sock, sock, VECTORS, plain, shm);
    start_qemu(&qt, devices);
    snprintf(devices, sizeof(devices),
             "-chardev socket,path=%s,id=s0 "
             "-device ivshmem-doorbell,chardev=s0,vectors=%d,addr=4",
             sock, VECTORS);
    start_qemu(&qp, devices);

    for (i = 0; i < NDEV; i++) {
        program_device(&qt, &devs[i]);
        devs[i].msix_cap = find_msix_cap(&qt, &devs[i]);
    }
    /* QEMU answered: its memory backends exist by now */
    devs[2].mem = map_shm(plain);
    snprintf(plain, sizeof(plain), "/dev/shm/%s", shm);
    devs[3].mem = map_shm(plain);
    CHECK(devs[0].msix_cap);
    program_device(&qp, &peer_dev);
    peer_dev.msix_cap = find_msix_cap(&qp, &peer_dev);
    /* the server's setup messages reach both QEMUs: doorbells work */
    for (i = 0; i < 100; i++) {
        devs[0].id = qtest_cmd(&qt, "readl 0x%" PRIx64,
                             bar_base(&devs[0], 0) + REG_IVPOSITION);
        devs[1].id = qtest_cmd(&qt, "readl 0x%" PRIx64,
                             bar_base(&devs[1], 0) + REG_IVPOSITION);
        peer_dev.id = qtest_cmd(&qp, "readl 0x%" PRIx64,
                              bar_base(&peer_dev, 0) + REG_IVPOSITION);
        if (doorbell_arrives(0)) {
            break;
        }
    }
    fprintf(stderr, "fuzz-guest: target IDs %u %u, peer ID %u\n",
            devs[0].id, devs[1].id, peer_dev.id);
    check_target();
    return 0;
}

static uint64_t take(const uint8_t **p, const uint8_t *end, int bytes)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < bytes && *p < end; i++) {
        v |= (uint64_t)*(*p)++ << (8 * i);
    }
    return v;
}

static void access_op(uint8_t op, const uint8_t **p, const uint8_t *end)
{
    static const char sfx[4] = { 'b', 'w', 'l', 'q' };
    static const uint64_t bar_size[3] = { 256, 4096, SHM_SIZE };
    Device *d = &devs[(op >> 2) & 3];
    int region = op & 3, wsel = (op >> 4) & 3, width = 1 << wsel;
    bool write = op & 0x40;
    uint64_t off = take(p, end, 2);
    uint64_t v = write ? take(p, end, width) : 0;
    uint64_t addr;

    if (region == 0) {
        off &= 0xff;
        if (width == 8) {
            width = 4;
        }
        if (write) {
            cfg_write(&qt, d, off, width, v);
        } else {
            cfg_read(&qt, d, off, width);
        }
        return;
    }
    if (region == 3) {
        off *= 16;
    }
    addr = bar_base(d, region - 1) + off % bar_size[region - 1];
    if (write) {
        qtest_cmd(&qt, "write%c 0x%" PRIx64 " 0x%" PRIx64, sfx[wsel], addr, v);
    } else {
        qtest_cmd(&qt, "read%c 0x%" PRIx64, sfx[wsel], addr);
    }
}

static uint32_t doorbell_value(uint8_t sel)
{
    static const uint32_t far_ids[2] = { 0xffff, 0x1234 };
    uint32_t ids[4] = { devs[0].id, devs[1].id, peer_dev.id,
                        far_ids[sel & 1] };

    return ids[sel & 3] << 16 | (sel >> 2) % (VECTORS + 2);
}

static void special_op(uint8_t op, const uint8_t **p, const uint8_t *end)
{
    Device *d = &devs[(op >> 3) & 3];
    uint8_t arg = take(p, end, 1);
    int i;

    switch (op & 7) {
    case 0:
        qtest_cmd(&qt, "clock_step %u", (arg + 1) * 1000u);
        break;
    case 1:                     /* T rings some peer, some vector */
        qtest_cmd(&qt, "writel 0x%" PRIx64 " 0x%x",
                bar_base(&devs[(arg >> 7) & 1], 0) + REG_DOORBELL,
                doorbell_value(arg));
        break;
    case 2:                     /* P rings one of T's devices */
        qtest_cmd(&qp, "writel 0x%" PRIx64 " 0x%x",
                bar_base(&peer_dev, 0) + REG_DOORBELL, doorbell_value(arg));
        break;
    case 3:
        program_device(&qt, d);
        break;
    case 4:
        if (d->msix_cap) {
            cfg_write(&qt, d, d->msix_cap + 2, 2, (arg & 3) << 14);
        }
        break;
    case 5:                     /* storm both ways */
        for (i = 0; i < (arg & 63); i++) {
            qtest_cmd(&qp, "writel 0x%" PRIx64 " 0x%x",
                    bar_base(&peer_dev, 0) + REG_DOORBELL,
                    doorbell_value(arg + i));
            qtest_cmd(&qt, "writel 0x%" PRIx64 " 0x%x",
                    bar_base(&devs[i & 1], 0) + REG_DOORBELL,
                    peer_dev.id << 16 | i % VECTORS);
        }
        break;
    case 6:
        for (i = 0; i < NDEV; i++) {
            qtest_cmd(&qt, "readl 0x%" PRIx64,
                    bar_base(&devs[i], 0) + REG_IVPOSITION);
        }
        break;
    default:
        usleep(arg * 10);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    int ops = 0;

    while (data < end && ops++ < MAX_OPS) {
        uint8_t op = *data++;

        if (op & 0x80) {
            special_op(op, &data, end);
        } else {
            access_op(op, &data, end);
        }
    }
    check_target();
    return 0;
}
