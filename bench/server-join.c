/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Join benchmark for an ivshmem server: start SERVER, connect PEERS
 * clients that read every message (closing the fds they get), and time
 * until every client has its full setup and every later peer's vectors.
 * Prints: "<seconds> <rss KiB idle> <rss KiB loaded> <fds idle>
 * <fds loaded> <server CPU seconds>" or "FAIL <why>".
 * Usage: server-join SERVER PEERS VECTORS [STALL_SECONDS]
 * STALL_SECONDS (default 120): give up when no client has received
 * anything for that long (a stalled server), and after 10 times that or
 * 30 minutes, whichever is longer.  Clients read while others connect.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct Client {
    int sock;
    int len;
    long msgs;                  /* complete messages received */
    long want;                  /* messages that make it complete */
} Client;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long count_fds(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    long n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    d = opendir(path);
    while (d && (e = readdir(d))) {
        n += e->d_name[0] != '.';
    }
    if (d) {
        closedir(d);
    }
    return d ? n : -1;
}

/* CPU seconds (user + system) the server has used */
/* Read /proc/PID/NAME into buf (NUL-terminated); false if unreadable. */
static bool read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
    char path[64];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/%s", pid, name);
    fd = open(path, O_RDONLY);
    if (fd < 0) {
        return false;
    }
    n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) {
        return false;
    }
    buf[n] = 0;
    return true;
}

static double cpu_seconds(pid_t pid)
{
    char buf[1024];
    unsigned long ut = 0, st = 0;
    char *p;

    if (!read_proc(pid, "stat", buf, sizeof(buf))) {
        return -1;
    }
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                     "%lu %lu", &ut, &st) != 2) {
        return -1;
    }
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static long rss_kib(pid_t pid)
{
    char buf[4096];
    char *p;

    if (!read_proc(pid, "status", buf, sizeof(buf))) {
        return -1;
    }
    p = strstr(buf, "VmRSS:");
    return p ? strtol(p + 6, NULL, 10) : -1;
}

#define BATCH 64

static void close_passed_fds(struct msghdr *msg)
{
    struct cmsghdr *cm;

    for (cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        int i, nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

        for (i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            close(fd);
        }
    }
}

/* Messages are 8 bytes; a stream socket may split them anywhere. */
static void count_bytes(Client *c, unsigned n)
{
    c->len += n;
    c->msgs += c->len / 8;
    c->len %= 8;
}

/*
 * Read what is available, up to BATCH messages a system call (each
 * message carries its own fd, so one recvmsg() returns one message);
 * false when the server closed on us.
 */
static bool client_read(Client *c)
{
    static uint8_t data[BATCH][8];
    static char control[BATCH][CMSG_SPACE(sizeof(int) * 4)];
    struct iovec iov[BATCH];
    struct mmsghdr mm[BATCH];

    for (;;) {
        int i, n;

        for (i = 0; i < BATCH; i++) {
            iov[i].iov_base = data[i];
            iov[i].iov_len = 8;
            memset(&mm[i], 0, sizeof(mm[i]));
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
            mm[i].msg_hdr.msg_control = control[i];
            mm[i].msg_hdr.msg_controllen = sizeof(control[i]);
        }
        n = recvmmsg(c->sock, mm, BATCH, MSG_DONTWAIT | MSG_CMSG_CLOEXEC,
                     NULL);
        if (n < 0) {
            return errno == EAGAIN || errno == EINTR;
        }
        for (i = 0; i < n; i++) {
            close_passed_fds(&mm[i].msg_hdr);
            if (mm[i].msg_len == 0) {
                return false;
            }
            count_bytes(c, mm[i].msg_len);
        }
        if (n < BATCH) {
            return true;
        }
    }
}

#define EVENTS 256

/*
 * Read up to EVENTS clients with something to read, waiting up to
 * TIMEOUT_MS; returns how many, or -1 (after printing why) when the
 * server closed a client.
 */
static int drain(int ep, Client *cl, int timeout_ms, int *complete,
                 double *last_progress)
{
    struct epoll_event evs[EVENTS];
    int n = epoll_wait(ep, evs, EVENTS, timeout_ms), j;

    for (j = 0; j < n; j++) {
        Client *c = &cl[evs[j].data.u32];
        bool was = c->msgs >= c->want;
        long before = c->msgs;

        if (!client_read(c)) {
            printf("FAIL server closed client %u after %ld messages\n",
                   evs[j].data.u32, c->msgs);
            return -1;
        }
        if (!was && c->msgs >= c->want) {
            (*complete)++;
        }
        if (c->msgs != before) {
            *last_progress = now();
        }
    }
    return n;
}

static int connect_to(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    char sock[64], shm[64], nvec_s[16], shm_path[80];
    Client *cl;
    struct rlimit rl;
    struct stat st;
    pid_t pid;
    int peers, nvec, i, n, ep, complete = 0, status;
    long rss0, fds0, rss1, fds1;
    double t0, t1, deadline, cpu0, stall = 120, last_progress;

    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s SERVER PEERS VECTORS [STALL_SECONDS]\n",
                argv[0]);
        return 2;
    }
    if (argc == 5) {
        stall = atof(argv[4]);
    }
    peers = atoi(argv[2]);
    nvec = atoi(argv[3]);
    cl = calloc(peers, sizeof(*cl));
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);

    snprintf(sock, sizeof(sock), "/tmp/ivbench-%d.sock", getpid());
    snprintf(shm, sizeof(shm), "ivbench-%d", getpid());
    snprintf(shm_path, sizeof(shm_path), "/dev/shm/%s", shm);
    snprintf(nvec_s, sizeof(nvec_s), "%d", nvec);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        dup2(null, 1);
        dup2(null, 2);
        execl(argv[1], argv[1], "-F", "-S", sock, "-M", shm, "-l", "4M",
              "-n", nvec_s, (char *)NULL);
        _exit(127);
    }
    /* ready once the socket exists; settle a moment after */
    deadline = now() + 10;
    while (stat(sock, &st) < 0 && now() < deadline) {
        usleep(2000);
    }
    usleep(100000);
    rss0 = rss_kib(pid);
    fds0 = count_fds(pid);
    cpu0 = cpu_seconds(pid);

    ep = epoll_create1(0);
    t0 = now();
    last_progress = t0;
    /* like real peers, clients read what they get while others join */
    for (i = 0; i < peers; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };

        cl[i].sock = connect_to(sock);
        if (cl[i].sock < 0) {
            printf("FAIL connect %d: %s\n", i, strerror(errno));
            goto out;
        }
        /* version, ID, shm, everyone's vectors; then later joiners' */
        cl[i].want = 3 + (long)peers * nvec;
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].sock, &ev);
        do {
            n = drain(ep, cl, 0, &complete, &last_progress);
            if (n < 0) {
                goto out;
            }
        } while (n == EVENTS);
    }
    deadline = now() + (stall * 10 > 1800 ? stall * 10 : 1800);
    last_progress = now();
    while (complete < peers && now() < deadline &&
           now() - last_progress < stall) {
        if (drain(ep, cl, 1000, &complete, &last_progress) < 0) {
            goto out;
        }
        if (waitpid(pid, &status, WNOHANG) == pid) {
            printf("FAIL server died (status 0x%x) with %d/%d complete\n",
                   status, complete, peers);
            pid = 0;
            goto out;
        }
    }
    t1 = now();
    if (complete < peers) {
        printf("FAIL %s: %d/%d complete\n",
               now() < deadline ? "stalled" : "timeout", complete, peers);
        goto out;
    }
    rss1 = rss_kib(pid);
    fds1 = count_fds(pid);
    printf("%.6f %ld %ld %ld %ld %.2f\n", t1 - t0, rss0, rss1, fds0, fds1,
           cpu_seconds(pid) - cpu0);
out:
    fflush(stdout);
    if (pid > 0) {
        kill(pid, SIGTERM);
        usleep(50000);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    unlink(sock);
    unlink(shm_path);
    return 0;
}
