/* SPDX-License-Identifier: MIT */
/*
 * The guest side of the two-guest benchmark (bench/channel/guest.py): one
 * side of a run over libivshmem-channel (/dev/ivshmemN of our driver) or
 * over TCP (virtio-net between the two guests).  B echoes (latency) or
 * counts and acknowledges (throughput); A drives and measures.  Each side
 * prints one line "gbench k=v ..." with its own CPU time (getrusage).
 *   ivc-gbench lib a|b -d DEV [-c CHANNEL] [-z] -m lat|tput -s SIZE -n COUNT
 *   ivc-gbench tcp a|b -H B_ADDR [-p PORT] -m lat|tput -s SIZE -n COUNT
 * Latency: A stamps, sends SIZE bytes, waits for the SIZE-byte echo: round
 * trips (the guests' clocks are not shared, so no one-way stamps).
 * Throughput: A sends COUNT messages back to back; B receives them all and
 * sends 8 bytes back; A times from its first send to that answer.
 * -z: the library's zero-copy API: the sender writes each message in place
 * in the ring (ivc_reserve, one write pass, ivc_commit + ivc_flush), the
 * receiver reads it in place (ivc_peek, one read pass summing it,
 * ivc_release); without -z, ivc_send and ivc_recv copy from and to a
 * buffer as send() and recv() do.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <ivshmem/channel.h>

#define MAXMSG 65536
#define RING (1u << 20)

static struct ivc_channel *ch;
static int sock = -1, zc;
static volatile uint64_t sink;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "ivc-gbench: %s: %s\n", what, err > 0 ? strerror(err) : ivc_strerror(err));
    exit(1);
}

static void xsend(const void *buf, size_t len)
{
    if (ch && zc) {
        void *p;
        int ret;
        while ((ret = ivc_reserve(ch, len, &p, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            die("ivc_reserve", ret);
        memset(p, 0x5a, len);
        if ((ret = ivc_commit(ch, len)) < 0)
            die("ivc_commit", ret);
        if ((ret = ivc_flush(ch)) < 0)
            die("ivc_flush", ret);
        return;
    }
    if (ch) {
        int ret;
        while ((ret = ivc_send(ch, buf, len, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            die("ivc_send", ret);
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = send(sock, (const char *)buf + off, len - off, 0);
        if (n < 0 && errno != EINTR)
            die("send", errno);
        if (n > 0)
            off += (size_t)n;
    }
}

static void xrecv(void *buf, size_t len)
{
    if (ch && zc) {
        const void *p;
        size_t n;
        int ret;
        while ((ret = ivc_peek(ch, &p, &n, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            die("ivc_peek", ret);
        if (n != len)
            die("ivc_peek: wrong length", EPROTO);
        uint64_t sum = 0;
        for (size_t i = 0; i + 8 <= n; i += 8)
            sum += *(const volatile uint64_t *)((const char *)p + i);
        sink += sum;
        if ((ret = ivc_release(ch)) < 0)
            die("ivc_release", ret);
        return;
    }
    if (ch) {
        ssize_t n;
        while ((n = ivc_recv(ch, buf, len, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (n < 0)
            die("ivc_recv", (int)n);
        if ((size_t)n != len)
            die("ivc_recv: wrong length", EPROTO);
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = recv(sock, (char *)buf + off, len - off, 0);
        if (n == 0)
            die("recv", EPIPE);
        if (n < 0 && errno != EINTR)
            die("recv", errno);
        if (n > 0)
            off += (size_t)n;
    }
}

static int cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void tcp_open(int side, const char *addr, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int one = 1;

    if (side) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        sa.sin_addr.s_addr = htonl(INADDR_ANY);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1) < 0)
            die("listen", errno);
        sock = accept(l, NULL, NULL);
        if (sock < 0)
            die("accept", errno);
        close(l);
    } else {
        if (!addr || inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
            fprintf(stderr, "ivc-gbench: tcp a needs -H B's IPv4 address\n");
            exit(2);
        }
        uint64_t deadline = now_ns() + 20000000000ull;
        for (;;) {                      /* B may not listen yet */
            sock = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) == 0)
                break;
            int err = errno;
            close(sock);
            if (now_ns() > deadline)
                die("connect", err);
            usleep(20000);
        }
    }
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int main(int argc, char **argv)
{
    const char *dev = NULL, *addr = NULL, *name = "gbench", *mode = "lat";
    int port = 5201, opt;
    long size = 64, count = 1000;

    while ((opt = getopt(argc, argv, "d:c:H:p:m:s:n:z")) != -1) {
        switch (opt) {
        case 'd': dev = optarg; break;
        case 'c': name = optarg; break;
        case 'H': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'm': mode = optarg; break;
        case 's': size = atol(optarg); break;
        case 'n': count = atol(optarg); break;
        case 'z': zc = 1; break;
        default: goto usage;
        }
    }
    if (argc - optind != 2 || (strcmp(argv[optind], "lib") && strcmp(argv[optind], "tcp")) ||
        (strcmp(argv[optind + 1], "a") && strcmp(argv[optind + 1], "b")) ||
        (strcmp(mode, "lat") && strcmp(mode, "tput")) ||
        size < 8 || size > MAXMSG || count < 1)
        goto usage;
    int lib = !strcmp(argv[optind], "lib"), side = argv[optind + 1][0] == 'b';
    int lat = !strcmp(mode, "lat");

    if (zc && !lib) {
        fprintf(stderr, "ivc-gbench: -z is for lib (the library's zero-copy API)\n");
        return 2;
    }
    if (lib) {
        struct ivc_region *r;
        struct ivc_channel_opts o = { .ring_size = RING };
        int ret;
        if (!dev) {
            fprintf(stderr, "ivc-gbench: lib needs -d /dev/ivshmemN\n");
            return 2;
        }
        if ((ret = ivc_region_open_device(dev, IVC_F_CREATE, &r)) < 0)
            die(dev, ret);
        if ((ret = ivc_channel_open(r, name, &o, side ? IVC_SIDE_B : IVC_SIDE_A,
                                    IVC_F_CREATE, &ch)) < 0)
            die(name, ret);
    } else {
        tcp_open(side, addr, port);
    }

    static uint8_t buf[MAXMSG];
    uint64_t *rtt = lat && !side ? calloc((size_t)count, sizeof(*rtt)) : NULL;
    memset(buf, 0x5a, sizeof(buf));
    uint64_t c0 = cpu_ns(), t0 = now_ns();
    for (long i = 0; i < count; i++) {
        if (lat && side) {
            xrecv(buf, (size_t)size);
            xsend(buf, (size_t)size);
        } else if (lat) {
            uint64_t t = now_ns();
            xsend(buf, (size_t)size);
            xrecv(buf, (size_t)size);
            rtt[i] = now_ns() - t;
        } else if (side) {
            xrecv(buf, (size_t)size);
        } else {
            xsend(buf, (size_t)size);
        }
    }
    if (!lat) {
        if (side)
            xsend(buf, 8);
        else
            xrecv(buf, 8);
    }
    uint64_t wall = now_ns() - t0, cpu = cpu_ns() - c0;
    printf("gbench side=%c transport=%s mode=%s size=%ld count=%ld wall_ns=%llu cpu_ns=%llu",
           side ? 'b' : 'a', lib ? (zc ? "lib-zc" : "lib") : "tcp", mode, size, count,
           (unsigned long long)wall, (unsigned long long)cpu);
    if (rtt) {
        qsort(rtt, (size_t)count, sizeof(*rtt), cmp64);
        printf(" rtt_p50_ns=%llu rtt_p99_ns=%llu", (unsigned long long)rtt[count / 2],
               (unsigned long long)rtt[count * 99 / 100]);
    }
    if (ch) {
        struct ivc_stats st;
        ivc_channel_stats(ch, &st);
        printf(" notifies=%llu sleeps=%llu", (unsigned long long)st.notifies,
               (unsigned long long)st.sleeps);
        ivc_channel_close(ch);
    }
    printf("\n");
    if (sock >= 0)
        close(sock);
    return 0;
usage:
    fprintf(stderr, "usage: ivc-gbench lib a|b -d DEV [-c CHANNEL] [-z] -m lat|tput -s SIZE -n COUNT\n"
                    "       ivc-gbench tcp a|b -H B_ADDR [-p PORT] -m lat|tput -s SIZE -n COUNT\n"
                    "  SIZE 8..%d\n", MAXMSG);
    return 2;
}
