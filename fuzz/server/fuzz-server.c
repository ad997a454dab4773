/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: client behaviour against a running ivshmem-server. */

/*
 * The harness starts the real server binary once ($IVSHMEM_SERVER, with
 * -F -S SOCKET -M SHM -l 1M -n 2) and turns every input into a sequence of
 * client actions on four client slots: connect, read what the server sent
 * (checking protocol version 0), send garbage bytes or fds, half-close,
 * close, reset, a burst of short connections while others stall.  After
 * every input all clients are gone; the server must still be alive, must
 * set up a new client correctly within 2 s, and its open fd count must go
 * back to where it was.  Any difference aborts, which libFuzzer records.
 *
 * The server is a separate process, so libFuzzer's coverage feedback is
 * the harness's own (what the server answered); see fuzz/README.md.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "fuzz.h"

#define SLOTS           4
#define MAX_OPS         256
#define SHM_SIZE        (1 << 20)
#define VECTORS         2
#define MSG_SIZE        8

#define CHECK(cond) do {                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fuzz-server: %s:%d: check failed: %s\n",   \
                    __FILE__, __LINE__, #cond);                         \
            fail();                                                     \
        }                                                               \
    } while (0)

typedef struct Client {
    int fd;                     /* -1: slot free */
    uint8_t partial[MSG_SIZE];
    unsigned npartial;
    unsigned nmsgs;             /* complete messages received */
    bool eof;
} Client;

static pid_t server_pid;
static char sock_path[108];
static char shm_name[64];
static char log_path[128];
static int server_fds_baseline;
static Client clients[SLOTS];

static void stop_server(void);

static void dump_server_log(void)
{
    char line[512];
    FILE *f = fopen(log_path, "r");

    if (!f) {
        return;
    }
    fprintf(stderr, "fuzz-server: server log (%s):\n", log_path);
    while (fgets(line, sizeof(line), f)) {
        fprintf(stderr, "  %s", line);
    }
    fclose(f);
}

/* A finding: show the server's log, leave nothing behind, abort. */
static void fail(void)
{
    dump_server_log();
    stop_server();
    abort();
}

static void check_server_alive(void)
{
    int status;
    pid_t r = waitpid(server_pid, &status, WNOHANG);

    if (r == server_pid) {
        fprintf(stderr, "fuzz-server: server died: %s %d\n",
                WIFSIGNALED(status) ? "signal" : "exit status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        server_pid = 0;
        fail();
    }
}

static int count_fds(pid_t pid)
{
    char path[64];
    DIR *dir;
    struct dirent *de;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    if (!dir) {
        return -1;
    }
    while ((de = readdir(dir))) {
        n += de->d_name[0] != '.';
    }
    closedir(dir);
    return n;
}

static bool is_eventfd(int fd)
{
    char path[64], target[64];
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    n = readlink(path, target, sizeof(target) - 1);
    if (n < 0) {
        return false;
    }
    target[n] = 0;
    return strcmp(target, "anon_inode:[eventfd]") == 0;
}

static int64_t le64(const uint8_t *b)
{
    uint64_t v = 0;
    int i;

    for (i = MSG_SIZE - 1; i >= 0; i--) {
        v = v << 8 | b[i];
    }
    return (int64_t)v;
}

/* One complete message: check it against protocol version 0. */
static void check_message(Client *c, int64_t value, int fd)
{
    struct stat st;

    if (getenv("FUZZ_SERVER_TRACE")) {
        fprintf(stderr, "fuzz-server: client %d message %u: %" PRId64
                " fd %d\n", c->fd, c->nmsgs, value, fd);
    }
    switch (c->nmsgs) {
    case 0:
        CHECK(value == 0 && fd < 0);
        break;
    case 1:
        CHECK(value >= 0 && value <= 65535 && fd < 0);
        break;
    case 2:
        CHECK(value == -1 && fd >= 0);
        CHECK(fstat(fd, &st) == 0 && st.st_size == SHM_SIZE);
        break;
    default:
        CHECK(value >= 0 && value <= 65535);
        if (fd >= 0) {
            CHECK(is_eventfd(fd));
        }
        break;
    }
    c->nmsgs++;
    if (fd >= 0) {
        close(fd);
    }
}

/*
 * Read what is there (waiting up to @timeout_ms for the first byte), one
 * message at a time so that an fd belongs to the message it came with.
 */
static void drain(Client *c, int timeout_ms)
{
    struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

    while (c->fd >= 0 && !c->eof) {
        char cbuf[CMSG_SPACE(sizeof(int) * 16)];
        struct iovec iov = {
            c->partial + c->npartial, MSG_SIZE - c->npartial
        };
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = cbuf, .msg_controllen = sizeof(cbuf),
        };
        struct cmsghdr *cm;
        int fds[16], nfds = 0, i;
        ssize_t n;
        int ready = poll(&pfd, 1, timeout_ms);

        if (ready < 0 && errno == EINTR) {
            continue;           /* libFuzzer's SIGALRM watchdog */
        }
        if (ready <= 0) {
            break;
        }
        timeout_ms = 0;
        n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n < 0) {
            /*
             * Reset (the server closed on unread bytes of ours): a failed
             * recvmsg leaves msg_controllen alone, so cbuf still holds
             * whatever an earlier call left there; parsing it closed fds
             * received before, by then reused by another client slot.
             */
            c->eof = true;
            break;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                memcpy(fds + nfds, CMSG_DATA(cm), k * sizeof(int));
                nfds += k;
            }
        }
        CHECK(!(msg.msg_flags & MSG_CTRUNC));
        if (n == 0) {           /* EOF: the server dropped us */
            c->eof = true;
        } else {
            CHECK(nfds <= 1);   /* at most one fd per message */
            c->npartial += n;
            if (c->npartial == MSG_SIZE) {
                check_message(c, le64(c->partial), nfds ? fds[0] : -1);
                c->npartial = 0;
                nfds = nfds ? 1 : 0;
                fds[0] = -1;
            }
        }
        for (i = 0; i < nfds; i++) {
            if (fds[i] >= 0) {
                close(fds[i]);
            }
        }
    }
}

static int connect_server(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    CHECK(fd >= 0);
    memcpy(sa.sun_path, sock_path, sizeof(sa.sun_path) - 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void slot_close(Client *c, bool reset)
{
    if (c->fd < 0) {
        return;
    }
    if (reset) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd);
    *c = (Client) { .fd = -1 };
}

static void slot_connect(Client *c)
{
    if (c->fd >= 0) {
        return;
    }
    *c = (Client) { .fd = connect_server() };
    CHECK(c->fd >= 0);
}

static void send_fd_message(Client *c, int kind)
{
    uint8_t buf[MSG_SIZE] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
    struct iovec iov = { buf, sizeof(buf) };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = cbuf, .msg_controllen = sizeof(cbuf),
    };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    int fd = kind ? eventfd(0, EFD_CLOEXEC) :
                    memfd_create("fuzz", MFD_CLOEXEC);

    CHECK(fd >= 0);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

/* A fresh client gets version, an ID and the shared memory within 2 s. */
static void probe_server(void)
{
    Client c = { .fd = connect_server() };
    struct timespec t0, t;

    if (c.fd < 0) {
        check_server_alive();
        CHECK(!"cannot connect to the server");
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        drain(&c, 100);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (c.nmsgs < 3 + VECTORS && !c.eof && t.tv_sec - t0.tv_sec < 2);
    if (c.nmsgs < 3 + VECTORS) {
        check_server_alive();
    }
    CHECK(c.nmsgs >= 3 + VECTORS);
    slot_close(&c, false);
}

/* Once every client is gone the server holds as many fds as at start. */
static void check_server_fds(void)
{
    int i, n = -1;

    for (i = 0; i < 200; i++) {
        n = count_fds(server_pid);
        if (n == server_fds_baseline) {
            return;
        }
        usleep(10000);
    }
    fprintf(stderr, "fuzz-server: server has %d fds, %d at start\n",
            n, server_fds_baseline);
    check_server_alive();
    CHECK(n == server_fds_baseline);
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
    unlink(sock_path);
    shm_unlink(shm_name);
    unlink(log_path);           /* shown already if anything failed */
}

static void start_server(void)
{
    const char *bin = getenv("IVSHMEM_SERVER");
    char size[16], vectors[16];
    int i, logfd;

    if (!bin) {
        fprintf(stderr, "fuzz-server: set IVSHMEM_SERVER to the server\n");
        exit(1);
    }
    snprintf(sock_path, sizeof(sock_path), "/tmp/fuzz-ivshmem-%d.sock",
             (int)getpid());
    snprintf(shm_name, sizeof(shm_name), "/fuzz-ivshmem-%d", (int)getpid());
    snprintf(log_path, sizeof(log_path), "/tmp/fuzz-ivshmem-%d.log",
             (int)getpid());
    snprintf(size, sizeof(size), "%d", SHM_SIZE);
    snprintf(vectors, sizeof(vectors), "%d", VECTORS);
    unlink(sock_path);
    server_pid = fork();
    CHECK(server_pid >= 0);
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* go when the harness goes */
        logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(logfd, 1);
        dup2(logfd, 2);
        for (i = 3; i < 1024; i++) {
            close(i);
        }
        execl(bin, bin, "-F", "-S", sock_path, "-M", shm_name,
              "-l", size, "-n", vectors, (char *)NULL);
        _exit(127);
    }
    atexit(stop_server);
    for (i = 0; i < 500 && access(sock_path, F_OK) != 0; i++) {
        check_server_alive();
        usleep(10000);
    }
    probe_server();
    usleep(50000);
    server_fds_baseline = count_fds(server_pid);
    CHECK(server_fds_baseline > 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    int i;

    signal(SIGPIPE, SIG_IGN);
    for (i = 0; i < SLOTS; i++) {
        clients[i].fd = -1;
    }
    start_server();
    return 0;
}

static void burst(unsigned n)
{
    while (n--) {
        int fd = connect_server();

        if (fd >= 0) {
            close(fd);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    int ops = 0, i;

    while (data < end && ops++ < MAX_OPS) {
        uint8_t op = *data++;
        Client *c = &clients[op & 3];
        unsigned kind = op >> 2, len;

        if (kind < 8) {
            slot_connect(c);
        } else if (c->fd < 0) {
            continue;
        } else if (kind < 16) {
            drain(c, kind & 1 ? 5 : 0);
        } else if (kind < 24) {
            len = data < end ? *data++ : 0;
            len = len < end - data ? len : end - data;
            send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            data += len;
        } else if (kind < 28) {
            send_fd_message(c, kind & 1);
        } else if (kind < 32) {
            shutdown(c->fd, kind & 1 ? SHUT_RD : SHUT_WR);
        } else if (kind < 40) {
            slot_close(c, false);
        } else if (kind < 44) {
            slot_close(c, true);
        } else if (kind < 52) {
            burst(data < end ? *data++ & 63 : 1);
        } else {
            usleep(kind & 1 ? 1000 : 100);
        }
    }
    for (i = 0; i < SLOTS; i++) {
        slot_close(&clients[i], false);
    }
    check_server_alive();
    probe_server();
    check_server_fds();
    return 0;
}
