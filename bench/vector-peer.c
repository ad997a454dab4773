/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * vector-peer: a host peer of an ivshmem server for `make bench`'s
 * device-only rates (flood: doorbell writes a guest sends into a peer
 * that never reads; deliver: vector deliveries into one guest).
 *
 *   vector-peer SOCKET
 *
 * Joins the server like a QEMU would (protocol version 0), prints
 * "peer: id=N" and then answers one command a line on stdin, one line
 * each on stdout:
 *   drain                      read (and reset) every own eventfd:
 *                              "drain: received=N", the doorbells rung
 *                              into this peer since the last drain
 *   flood PEER VECTOR SECONDS  write PEER's VECTOR eventfd as fast as
 *                              possible at nice 19 (from then on):
 *                              "flood: writes=N seconds=S"
 *   peers                      "peers: ID/VECTORS ..."
 * Server messages are processed before every command.  EOF on stdin
 * ends it.  Errors: "error: ..." on stdout, and exit 1 at start-up.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_PEERS 256
#define MAX_VECTORS 64

typedef struct Peer {
    long id;
    int nfds;
    int fds[MAX_VECTORS];
} Peer;

static int sock = -1;
static long own_id = -1;
static Peer own;
static Peer peers[MAX_PEERS];
static int npeers;

static void die(const char *what)
{
    printf("error: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One message: 1 on success, 0 when none is pending (DONTWAIT), -1 EOF. */
static int recv_msg(int flags, int64_t *value, int *fd)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov = { value, sizeof(*value) };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
    };
    struct cmsghdr *c;
    ssize_t n;

    *fd = -1;
    n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return 0;
    }
    if (n < 0) {
        die("recvmsg");
    }
    if (n != sizeof(*value)) {
        return -1;
    }
    for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            memcpy(fd, CMSG_DATA(c), sizeof(int));
        }
    }
    return 1;
}

static Peer *find_peer(long id)
{
    int i;

    for (i = 0; i < npeers; i++) {
        if (peers[i].id == id) {
            return &peers[i];
        }
    }
    return NULL;
}

static void handle(int64_t value, int fd)
{
    Peer *p;

    if (value == own_id && fd >= 0) {
        if (own.nfds < MAX_VECTORS) {
            own.fds[own.nfds++] = fd;
        } else {
            close(fd);
        }
        return;
    }
    p = find_peer(value);
    if (fd < 0) {                       /* the peer left */
        if (p) {
            while (p->nfds) {
                close(p->fds[--p->nfds]);
            }
            *p = peers[--npeers];
        }
        return;
    }
    if (!p && npeers < MAX_PEERS) {
        p = &peers[npeers++];
        p->id = value;
        p->nfds = 0;
    }
    if (p && p->nfds < MAX_VECTORS) {
        p->fds[p->nfds++] = fd;
    } else {
        close(fd);
    }
}

/* Process what the server sent; wait up to IDLE_MS for more. */
static void pump(int idle_ms)
{
    struct pollfd pfd = { .fd = sock, .events = POLLIN };
    int64_t value;
    int fd, r;

    for (;;) {
        r = recv_msg(MSG_DONTWAIT, &value, &fd);
        if (r < 0) {
            printf("error: the server closed the connection\n");
            exit(1);
        }
        if (r > 0) {
            handle(value, fd);
            continue;
        }
        if (!idle_ms || poll(&pfd, 1, idle_ms) <= 0) {
            return;
        }
    }
}

static void join(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int64_t value;
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        die(path);
    }
    strcpy(sa.sun_path, path);
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        die(path);
    }
    if (recv_msg(0, &value, &fd) != 1 || value != 0) {
        printf("error: %s: no protocol version 0\n", path);
        exit(1);
    }
    if (recv_msg(0, &value, &fd) != 1 || value < 0 || value > 65535) {
        printf("error: %s: no peer ID\n", path);
        exit(1);
    }
    own_id = value;
    own.id = value;
    if (recv_msg(0, &value, &fd) != 1 || value != -1 || fd < 0) {
        printf("error: %s: no shared memory fd\n", path);
        exit(1);
    }
    close(fd);                          /* the memory is not needed */
    /* the existing peers' eventfds, then ours: wait for ours */
    while (!own.nfds) {
        if (recv_msg(0, &value, &fd) != 1) {
            printf("error: %s: closed before our eventfds\n", path);
            exit(1);
        }
        handle(value, fd);
    }
    pump(200);
}

static void drain(void)
{
    uint64_t total = 0, v;
    int i;

    for (i = 0; i < own.nfds; i++) {
        struct pollfd pfd = { .fd = own.fds[i], .events = POLLIN };

        if (poll(&pfd, 1, 0) == 1 &&
            read(own.fds[i], &v, sizeof(v)) == sizeof(v)) {
            total += v;
        }
    }
    printf("drain: received=%llu\n", (unsigned long long)total);
}

static void flood(long id, int vector, double seconds)
{
    const uint64_t one = 1;
    uint64_t writes = 0;
    double t0, t;
    Peer *p = find_peer(id);
    int fd, i;

    if (!p || vector < 0 || vector >= p->nfds) {
        printf("error: peer %ld has no vector %d\n", id, vector);
        return;
    }
    fd = p->fds[vector];
    /*
     * Offer writes without competing for the CPU: at nice 19 the flood
     * only gets the time the receiving QEMU and guest leave idle, so on
     * a machine with few cores the rate is the receiver's, not the
     * scheduler's split between flooder and receiver.  One pending
     * write is all a delivery needs (eventfd writes coalesce).
     */
    if (setpriority(PRIO_PROCESS, 0, 19) < 0) {
        printf("error: setpriority: %s\n", strerror(errno));
        return;
    }
    t0 = now();
    do {
        for (i = 0; i < 256; i++) {
            if (write(fd, &one, sizeof(one)) != sizeof(one)) {
                printf("error: write to peer %ld: %s\n", id,
                       strerror(errno));
                return;
            }
        }
        writes += 256;
        t = now();
    } while (t - t0 < seconds);
    printf("flood: writes=%llu seconds=%.6f\n",
           (unsigned long long)writes, t - t0);
}

int main(int argc, char **argv)
{
    char line[256];
    long id;
    int vector, i;
    double seconds;

    if (argc != 2) {
        fprintf(stderr, "usage: vector-peer SOCKET\n");
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    join(argv[1]);
    printf("peer: id=%ld vectors=%d\n", own_id, own.nfds);
    while (fgets(line, sizeof(line), stdin)) {
        pump(0);
        if (!strcmp(line, "drain\n")) {
            drain();
        } else if (sscanf(line, "flood %ld %d %lf", &id, &vector,
                          &seconds) == 3 && seconds > 0) {
            flood(id, vector, seconds);
        } else if (!strcmp(line, "peers\n")) {
            printf("peers:");
            for (i = 0; i < npeers; i++) {
                printf(" %ld/%d", peers[i].id, peers[i].nfds);
            }
            printf("\n");
        } else {
            printf("error: unknown command: %s", line);
        }
    }
    return 0;
}
