/* SPDX-License-Identifier: MIT */
/*
 * Ping-pong over one channel: side A sends a message, side B echoes it,
 * A measures the round trip.  One command runs both sides (a memfd, two
 * processes); -r a / -r b runs one side (e.g. host and guest).
 *   pingpong [-S SOCK | -p FILE | -d DEV] [-r a|b] [-n COUNT] [-s SIZE] [-w hybrid|spin|sleep]
 */
#include <getopt.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct ivc_channel *open_ch(struct ivc_region *r, int side, unsigned wait)
{
    struct ivc_channel_opts o = { .ring_size = 1 << 18, .wait_mode = wait };
    struct ivc_channel *ch;
    int ret = ivc_channel_open(r, "pingpong", &o, side, IVC_F_CREATE, &ch);
    if (ret < 0)
        ex_die("channel pingpong", ret);
    return ch;
}

static int side_b(struct ivc_region *r, unsigned wait, long count)
{
    struct ivc_channel *ch = open_ch(r, IVC_SIDE_B, wait);
    static char buf[1 << 17];

    for (long i = 0; i < count; i++) {
        ssize_t n = ivc_recv(ch, buf, sizeof(buf), IVC_F_WAIT);
        if (n == -ECONNRESET) { i--; continue; }
        if (n < 0)
            ex_die("pingpong b: recv", (int)n);
        int ret;
        while ((ret = ivc_send(ch, buf, (size_t)n, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            ex_die("pingpong b: send", ret);
    }
    ivc_channel_close(ch);
    return 0;
}

static int side_a(struct ivc_region *r, unsigned wait, long count, size_t size)
{
    struct ivc_channel *ch = open_ch(r, IVC_SIDE_A, wait);
    static char out[1 << 17], in[1 << 17];
    uint64_t *rtt = calloc((size_t)count, sizeof(*rtt));
    long bad = 0;

    for (long i = 0; i < count; i++) {
        memset(out, (int)(i & 0xff), size);
        memcpy(out, &i, size < sizeof(i) ? size : sizeof(i));
        uint64_t t0 = now_ns();
        int ret;
        while ((ret = ivc_send(ch, out, size, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            ex_die("pingpong a: send", ret);
        ssize_t n;
        while ((n = ivc_recv(ch, in, sizeof(in), IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (n < 0)
            ex_die("pingpong a: recv", (int)n);
        rtt[i] = now_ns() - t0;
        bad += (size_t)n != size || memcmp(in, out, size) != 0;
    }
    qsort(rtt, (size_t)count, sizeof(*rtt), ex_cmp_u64);
    struct ivc_stats st;
    ivc_channel_stats(ch, &st);
    printf("pingpong: %ld round trips of %zu bytes, %ld wrong echoes; rtt p50 %.1f us, p99 %.1f us; "
           "doorbells rung %llu, sleeps %llu\n", count, size, bad,
           rtt[count / 2] / 1e3, rtt[count * 99 / 100] / 1e3,
           (unsigned long long)st.notifies, (unsigned long long)st.sleeps);
    ivc_channel_close(ch);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct ex_attach a = { .size = 1 << 20 };
    long count = 10000;
    size_t size = 64;
    unsigned wait = IVC_WAIT_HYBRID;
    int role = -1, opt;

    while ((opt = getopt(argc, argv, "S:p:d:r:n:s:w:h")) != -1) {
        if (ex_attach_opt(&a, opt, optarg))
            continue;
        switch (opt) {
        case 'r': role = optarg[0] == 'a' ? IVC_SIDE_A : IVC_SIDE_B; break;
        case 'n': count = atol(optarg); break;
        case 's': size = strtoul(optarg, NULL, 0); break;
        case 'w': wait = !strcmp(optarg, "spin") ? IVC_WAIT_SPIN :
                         !strcmp(optarg, "sleep") ? IVC_WAIT_SLEEP : IVC_WAIT_HYBRID; break;
        default:
            fprintf(stderr, "usage: pingpong [-S SOCK|-p FILE|-d DEV] [-r a|b] [-n COUNT] [-s SIZE] "
                    "[-w hybrid|spin|sleep]\n" EX_USAGE_ATTACH);
            return 2;
        }
    }
    if (count < 1 || size < 1 || size > (1 << 17) - 8) {
        fprintf(stderr, "pingpong: -n must be >= 1 and -s 1..131064\n");
        return 2;
    }
    ex_prepare(&a, 1 << 20);
    if (role < 0) {
        if (a.device) {
            fprintf(stderr, "pingpong: with -d give -r a or -r b (the other side is elsewhere)\n");
            return 2;
        }
        pid_t pid = fork();
        if (pid == 0)
            _exit(side_b(ex_region(&a, IVC_SIDE_B), wait, count));
        int ret = side_a(ex_region(&a, IVC_SIDE_A), wait, count, size);
        int st;
        waitpid(pid, &st, 0);
        return ret || !WIFEXITED(st) || WEXITSTATUS(st);
    }
    struct ivc_region *r = ex_region(&a, role);
    return role == IVC_SIDE_A ? side_a(r, wait, count, size) : side_b(r, wait, count);
}
