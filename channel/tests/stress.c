/* SPDX-License-Identifier: MIT */
/*
 * libivshmem-channel stress test: a producer and a consumer process over a
 * memfd with eventfd doorbells; every message carries a sequence number, a
 * length derived from it and a checksum: any loss, duplicate, reorder or
 * corruption fails.  Prints one TAP line (and the plan unless -T).
 *   stress [-n MESSAGES] [-s MAX_SIZE] [-r RING_SIZE] [-w hybrid|spin|sleep] [-t] [-T]
 * -t: two threads of one process on one mapping instead of two processes
 * (what ThreadSanitizer can see: it does not follow other processes).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include "ivshmem/channel.h"
#include "testutil.h"

struct shared {
    uint64_t received, bad_seq, bad_len, bad_sum, errors;
    uint64_t first_bad;
    struct ivc_stats tx, rx;
};

static uint64_t n_msgs = 1000000;
static uint32_t max_size = 1024, ring = 64 * 1024, wait_mode = IVC_WAIT_HYBRID;

static uint32_t len_of(uint64_t seq)
{
    uint64_t x = seq * 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    uint32_t l = 16 + (uint32_t)(x % (max_size - 15));
    return l;
}

static void fill(uint8_t *p, uint64_t seq, uint32_t len)
{
    memcpy(p, &seq, 8);
    for (uint32_t i = 12; i < len; i++)
        p[i] = (uint8_t)(seq * 131 + i);
    uint32_t c = t_crc(p + 12, len - 12);
    memcpy(p + 8, &c, 4);
}

static int open_side(int memfd, int side, int own_efd, int peer_efd,
                     struct ivc_region **r, struct ivc_channel **ch)
{
    struct ivc_channel_opts o = { .ring_size = ring, .wait_mode = wait_mode };
    int ret = ivc_region_open_fd(memfd, 0, IVC_F_CREATE, r);

    if (ret < 0)
        return ret;
    ivc_region_set_id(*r, (unsigned)side);
    ivc_region_set_own_vector(*r, 0, own_efd);
    ivc_region_set_doorbell(*r, (unsigned)!side, 0, peer_efd);
    return ivc_channel_open(*r, "stress", &o, side, IVC_F_CREATE, ch);
}

static int producer(struct ivc_channel *ch, struct shared *sh)
{
    uint8_t buf[65536];

    for (uint64_t seq = 0; seq < n_msgs; seq++) {
        uint32_t len = len_of(seq);
        unsigned more = (seq % 8 != 7 && seq + 1 < n_msgs) ? IVC_F_MORE : 0;
        int ret;

        if (seq % 3 == 0) {                 /* zero-copy */
            void *p;
            ret = ivc_reserve(ch, len, &p, IVC_F_WAIT);
            if (ret == 0) {
                fill(p, seq, len);
                ivc_commit(ch, len);
                if (!more)
                    ivc_flush(ch);
            }
        } else {
            fill(buf, seq, len);
            ret = ivc_send(ch, buf, len, IVC_F_WAIT | more);
        }
        if (ret < 0) {
            fprintf(stderr, "producer: seq %llu: %s\n", (unsigned long long)seq,
                    ivc_strerror(ret));
            return 1;
        }
    }
    ivc_flush(ch);
    ivc_channel_stats(ch, &sh->tx);
    return 0;
}

static int consumer(struct ivc_channel *ch, struct shared *sh)
{
    uint8_t buf[65536];

    for (uint64_t seq = 0; seq < n_msgs; seq++) {
        ssize_t n;
        const void *p;
        size_t len;

        if (seq % 2) {
            int ret = ivc_peek(ch, &p, &len, IVC_F_WAIT);
            if (ret < 0) {
                n = ret;
            } else {
                n = (ssize_t)len;
                memcpy(buf, p, len < sizeof(buf) ? len : sizeof(buf));
                ivc_release(ch);
            }
        } else {
            n = ivc_recv(ch, buf, sizeof(buf), IVC_F_WAIT);
        }
        if (n < 0) {
            fprintf(stderr, "consumer: at seq %llu: %s\n", (unsigned long long)seq,
                    ivc_strerror((int)n));
            sh->errors++;
            return 1;
        }
        uint64_t s;
        uint32_t c;
        memcpy(&s, buf, 8);
        memcpy(&c, buf + 8, 4);
        int bad = 0;
        if (s != seq) { sh->bad_seq++; bad = 1; }
        else if ((uint32_t)n != len_of(seq)) { sh->bad_len++; bad = 1; }
        else if (c != t_crc(buf + 12, (size_t)n - 12)) { sh->bad_sum++; bad = 1; }
        if (bad && !sh->first_bad)
            sh->first_bad = seq + 1;
        if (bad)
            seq = s;                        /* resynchronise: count, go on */
        sh->received++;
    }
    ivc_channel_stats(ch, &sh->rx);
    return 0;
}

static struct shared *g_sh;
static void *prod_thread(void *ch)
{
    return (void *)(intptr_t)producer(ch, g_sh);
}

static void *cons_thread(void *ch)
{
    return (void *)(intptr_t)consumer(ch, g_sh);
}

/* Both sides in one process: one region, vector 0 rings A, vector 1 rings B. */
static void run_threads(int memfd, int ea, int eb, int *stp, int *stc)
{
    struct ivc_region *r;
    struct ivc_channel *a, *b;
    struct ivc_channel_opts o = { .ring_size = ring, .wait_mode = wait_mode };
    void *ra, *rb;
    pthread_t tp, tc;

    if (ivc_region_open_fd(memfd, 0, IVC_F_CREATE, &r) < 0)
        DIE("region");
    ivc_region_set_id(r, 7);
    ivc_region_set_own_vector(r, 0, ea);
    ivc_region_set_own_vector(r, 1, eb);
    ivc_region_set_doorbell(r, 7, 0, ea);
    ivc_region_set_doorbell(r, 7, 1, eb);
    o.vector = 0;
    if (ivc_channel_open(r, "stress", &o, IVC_SIDE_A, IVC_F_CREATE, &a) < 0)
        DIE("channel A");
    o.vector = 1;
    if (ivc_channel_open(r, "stress", &o, IVC_SIDE_B, 0, &b) < 0)
        DIE("channel B");
    pthread_create(&tc, NULL, cons_thread, b);
    pthread_create(&tp, NULL, prod_thread, a);
    pthread_join(tp, &ra);
    pthread_join(tc, &rb);
    *stp = (int)(intptr_t)ra << 8;
    *stc = (int)(intptr_t)rb << 8;
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(r);
}

int main(int argc, char **argv)
{
    int opt, tap_plan = 1, threads = 0;

    while ((opt = getopt(argc, argv, "n:s:r:w:tT")) != -1) {
        switch (opt) {
        case 'n': n_msgs = strtoull(optarg, NULL, 0); break;
        case 's': max_size = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'r': ring = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'w':
            wait_mode = !strcmp(optarg, "spin") ? IVC_WAIT_SPIN :
                        !strcmp(optarg, "sleep") ? IVC_WAIT_SLEEP : IVC_WAIT_HYBRID;
            break;
        case 'T': tap_plan = 0; break;
        case 't': threads = 1; break;
        default:
            fprintf(stderr, "usage: stress [-n N] [-s MAX] [-r RING] [-w hybrid|spin|sleep] [-T]\n");
            return 2;
        }
    }
    if (max_size < 16 || max_size > ring / 2 - 8 || max_size > 65536)
        DIE("stress: -s must be 16..min(ring/2-8, 65536)");
    struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int memfd = t_memfd(2 * (size_t)ring + (1 << 16));
    int ea = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), eb = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct ivc_region *r;
    struct ivc_channel *ch;
    struct timespec t0, t1;
    struct rusage ru;

    int stp, stc;
    g_sh = sh;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (threads) {
        run_threads(memfd, ea, eb, &stp, &stc);
        getrusage(RUSAGE_SELF, &ru);
        goto done;
    }
    pid_t cons = fork();
    if (cons == 0) {
        if (open_side(memfd, IVC_SIDE_B, eb, ea, &r, &ch) < 0)
            _exit(3);
        _exit(consumer(ch, sh));
    }
    pid_t prod = fork();
    if (prod == 0) {
        if (open_side(memfd, IVC_SIDE_A, ea, eb, &r, &ch) < 0)
            _exit(3);
        _exit(producer(ch, sh));
    }
    waitpid(prod, &stp, 0);
    if (!(WIFEXITED(stp) && WEXITSTATUS(stp) == 0))
        kill(cons, SIGKILL);
    waitpid(cons, &stc, 0);
    getrusage(RUSAGE_CHILDREN, &ru);
done:
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
                 (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    int ok = WIFEXITED(stp) && WEXITSTATUS(stp) == 0 && WIFEXITED(stc) &&
             WEXITSTATUS(stc) == 0 && sh->received == n_msgs && !sh->bad_seq &&
             !sh->bad_len && !sh->bad_sum;
    printf("%sok - stress: %llu messages of 16..%u bytes, ring %u, %s, %s wait: "
           "%llu received, %llu out of sequence, %llu wrong length, %llu bad checksum; "
           "%.2f s, %.2f M msg/s, %.2f CPU s; doorbells %llu+%llu, sleeps %llu+%llu\n",
           ok ? "" : "not ", (unsigned long long)n_msgs, max_size, ring,
           threads ? "2 threads" : "2 processes",
           wait_mode == IVC_WAIT_SPIN ? "spin" : wait_mode == IVC_WAIT_SLEEP ? "sleep" : "hybrid",
           (unsigned long long)sh->received, (unsigned long long)sh->bad_seq,
           (unsigned long long)sh->bad_len, (unsigned long long)sh->bad_sum,
           secs, n_msgs / secs / 1e6, cpu,
           (unsigned long long)sh->tx.notifies, (unsigned long long)sh->rx.notifies,
           (unsigned long long)sh->tx.sleeps, (unsigned long long)sh->rx.sleeps);
    if (!ok)
        printf("#   producer status %d, consumer status %d, first bad seq %lld\n",
               stp, stc, (long long)sh->first_bad - 1);
    if (tap_plan)
        printf("1..1\n");
    return ok ? 0 : 1;
}
