/* SPDX-License-Identifier: MIT */
/*
 * Streaming: a sender writes COUNT messages in place (reserve/commit, in
 * batches) with a sequence number and a checksum; the receiver reads them
 * in place (peek/release) and checks every one.  One command runs both
 * sides; -r send / -r recv runs one.
 *   stream [-S SOCK | -p FILE | -d DEV] [-r send|recv] [-n COUNT] [-s SIZE] [-b BATCH]
 */
#include <getopt.h>
#include <sys/wait.h>
#include <time.h>
#include "common.h"

static uint32_t fnv(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static struct ivc_channel *open_ch(struct ivc_region *r, int side)
{
    struct ivc_channel_opts o = { .ring_size = 1 << 20 };
    struct ivc_channel *ch;
    int ret = ivc_channel_open(r, "stream", &o, side, IVC_F_CREATE, &ch);
    if (ret < 0)
        ex_die("channel stream", ret);
    return ch;
}

static int sender(struct ivc_region *r, long count, size_t size, int batch)
{
    struct ivc_channel *ch = open_ch(r, IVC_SIDE_A);

    for (long i = 0; i < count; i++) {
        uint8_t *p;
        int ret;
        while ((ret = ivc_reserve(ch, size, (void **)&p, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            ex_die("stream send", ret);
        memcpy(p, &i, 8);
        for (size_t k = 12; k < size; k++)
            p[k] = (uint8_t)(i ^ k);
        uint32_t c = fnv(p + 12, size - 12);
        memcpy(p + 8, &c, 4);
        ivc_commit(ch, size);
        if ((i + 1) % batch == 0 || i + 1 == count)
            ivc_flush(ch);
    }
    ivc_channel_close(ch);
    return 0;
}

static int receiver(struct ivc_region *r, long count, size_t size)
{
    struct ivc_channel *ch = open_ch(r, IVC_SIDE_B);
    long bad = 0;
    struct timespec t0, t1;

    for (long i = 0; i < count; i++) {
        const uint8_t *p;
        size_t len;
        int ret = ivc_peek(ch, (const void **)&p, &len, IVC_F_WAIT);
        if (ret == -ECONNRESET) { i--; continue; }
        if (ret < 0)
            ex_die("stream recv", ret);
        if (i == 0)
            clock_gettime(CLOCK_MONOTONIC, &t0);
        long seq;
        uint32_t c;
        memcpy(&seq, p, 8);
        memcpy(&c, p + 8, 4);
        bad += len != size || seq != i || c != fnv(p + 12, len - 12);
        ivc_release(ch);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("stream: %ld messages of %zu bytes received, %ld bad (sequence, length or checksum); "
           "%.0f MB/s, %.2f M msg/s\n", count, size, bad, count * (double)size / s / 1e6,
           count / s / 1e6);
    ivc_channel_close(ch);
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct ex_attach a = { .size = 4 << 20 };
    long count = 100000;
    size_t size = 4096;
    int batch = 8, role = -1, opt;

    while ((opt = getopt(argc, argv, "S:p:d:r:n:s:b:h")) != -1) {
        if (ex_attach_opt(&a, opt, optarg))
            continue;
        switch (opt) {
        case 'r': role = !strcmp(optarg, "send") ? 0 : 1; break;
        case 'n': count = atol(optarg); break;
        case 's': size = strtoul(optarg, NULL, 0); break;
        case 'b': batch = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: stream [-S SOCK|-p FILE|-d DEV] [-r send|recv] [-n COUNT] "
                    "[-s SIZE] [-b BATCH]\n" EX_USAGE_ATTACH);
            return 2;
        }
    }
    if (count < 1 || size < 12 || size > (1 << 19) - 8 || batch < 1) {
        fprintf(stderr, "stream: -n >= 1, -s 12..524280, -b >= 1\n");
        return 2;
    }
    ex_prepare(&a, 4 << 20);
    if (role < 0) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(sender(ex_region(&a, IVC_SIDE_A), count, size, batch));
        int ret = receiver(ex_region(&a, IVC_SIDE_B), count, size);
        int st;
        waitpid(pid, &st, 0);
        return ret || !WIFEXITED(st) || WEXITSTATUS(st);
    }
    struct ivc_region *r = ex_region(&a, role == 0 ? IVC_SIDE_A : IVC_SIDE_B);
    return role == 0 ? sender(r, count, size, batch) : receiver(r, count, size);
}
