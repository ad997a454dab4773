/* SPDX-License-Identifier: MIT */
/*
 * Host benchmark of libivshmem-channel: two processes, the library (memfd
 * region, eventfd doorbells; spin, interrupt and hybrid waits) against an
 * AF_UNIX socketpair and a pipe, for several message sizes: one-way
 * latency p50/p99 (a timestamp in each message, one message in flight),
 * messages/s and MB/s streaming, CPU seconds per million messages, CPU
 * while idle; references: cross-core cache-line ping-pong and single-core
 * memcpy.  Configurations are interleaved round by round.  JSON on stdout.
 *   bench [-r ROUNDS] [-q] [-P] [-s SIZES] [-t lib,unix,pipe] [-S SPIN_NS]
 *   bench -B BUDGETS_NS [-D DELAYS_NS] [-r ROUNDS] [-q] [-P]
 *   -q quick (smoke: small counts), -P pin the two processes to CPUs 0 and 1
 *   -B the spin budget sweep instead: a waiter with the hybrid wait and each
 *      spin budget (0: sleep at once), a peer that answers each request after
 *      a busy delay of each of DELAYS_NS; the reply's one-way latency p50/p99
 *      and the waiter's CPU per message, every (budget, delay) once a round
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <ivshmem/channel.h>

enum { T_LIB, T_UNIX, T_PIPE };
static const char *tnames[] = { "lib", "unix", "pipe" };
static const char *wnames[] = { "hybrid", "spin", "sleep" };

static int quick, pin;
static uint64_t spin_ns;
static int sweep;                       /* -B: side 0 hybrid(sweep_budget), side 1 spin */
static uint64_t sweep_budget;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_children(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void pin_to(int cpu)
{
    cpu_set_t s;
    if (!pin)
        return;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof(s), &s);
}

struct tr {
    int kind;
    unsigned wait;
    int memfd, efd[2];
    int ab[2], ba[2];           /* pipe: A->B, B->A; unix: ab = socketpair */
};

struct end {
    struct tr *t;
    int side;                   /* 0 = A, 1 = B */
    struct ivc_channel *ch;
    struct ivc_region *r;
    int wfd, rfd;
};

#define RING (1u << 20)

static void die(const char *what, int err)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(err));
    exit(1);
}

static void tr_make(struct tr *t, int kind, unsigned wait)
{
    memset(t, 0, sizeof(*t));
    t->kind = kind;
    t->wait = wait;
    if (kind == T_LIB) {
        t->memfd = memfd_create("bench", MFD_CLOEXEC);
        if (t->memfd < 0 || ftruncate(t->memfd, 4 * RING) < 0)
            die("memfd", errno);
        t->efd[0] = eventfd(0, EFD_NONBLOCK);
        t->efd[1] = eventfd(0, EFD_NONBLOCK);
    } else if (kind == T_UNIX) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, t->ab) < 0)
            die("socketpair", errno);
        int sz = 4 << 20;
        for (int i = 0; i < 2; i++) {
            setsockopt(t->ab[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
            setsockopt(t->ab[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        }
    } else {
        if (pipe(t->ab) < 0 || pipe(t->ba) < 0)
            die("pipe", errno);
        fcntl(t->ab[1], F_SETPIPE_SZ, 1 << 20);
        fcntl(t->ba[1], F_SETPIPE_SZ, 1 << 20);
    }
}

static void tr_close(struct tr *t)
{
    if (t->kind == T_LIB) {
        close(t->memfd);
        close(t->efd[0]);
        close(t->efd[1]);
    } else {
        close(t->ab[0]);
        close(t->ab[1]);
        if (t->kind == T_PIPE) {
            close(t->ba[0]);
            close(t->ba[1]);
        }
    }
}

static void end_open(struct end *e, struct tr *t, int side)
{
    e->t = t;
    e->side = side;
    if (t->kind == T_LIB) {
        struct ivc_channel_opts o = { .ring_size = RING, .wait_mode = t->wait, .spin_ns = spin_ns };
        if (sweep) {
            o.wait_mode = side ? IVC_WAIT_SPIN : sweep_budget ? IVC_WAIT_HYBRID : IVC_WAIT_SLEEP;
            o.spin_ns = side ? 0 : sweep_budget;
        }
        int ret = ivc_region_open_fd(t->memfd, 0, IVC_F_CREATE, &e->r);
        if (ret < 0)
            die("region", -ret);
        ivc_region_set_id(e->r, (unsigned)side);
        ivc_region_set_own_vector(e->r, 0, t->efd[side]);
        ivc_region_set_doorbell(e->r, (unsigned)!side, 0, t->efd[!side]);
        ret = ivc_channel_open(e->r, "bench", &o, side, IVC_F_CREATE, &e->ch);
        if (ret < 0)
            die("channel", -ret);
    } else if (t->kind == T_UNIX) {
        e->wfd = e->rfd = t->ab[side];
    } else {
        e->wfd = side == 0 ? t->ab[1] : t->ba[1];
        e->rfd = side == 0 ? t->ba[0] : t->ab[0];
    }
}

static void x_send(struct end *e, const void *buf, size_t len)
{
    if (e->ch) {
        int ret;
        while ((ret = ivc_send(e->ch, buf, len, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            die("ivc_send", -ret);
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(e->wfd, (const char *)buf + off, len - off);
        if (n < 0 && errno != EINTR)
            die("write", errno);
        if (n > 0)
            off += (size_t)n;
    }
}

static void x_recv(struct end *e, void *buf, size_t len)
{
    if (e->ch) {
        ssize_t n;
        while ((n = ivc_recv(e->ch, buf, len, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (n != (ssize_t)len)
            die("ivc_recv", n < 0 ? (int)-n : EPROTO);
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = read(e->rfd, (char *)buf + off, len - off);
        if (n == 0)
            die("read", EPIPE);
        if (n < 0 && errno != EINTR)
            die("read", errno);
        if (n > 0)
            off += (size_t)n;
    }
}

struct shared {
    uint64_t lat[2][200000];    /* one-way samples: A->B by B, B->A by A */
    uint64_t nlat[2];
    uint64_t t_first, t_last;
    uint64_t cpu_ns, spins_won; /* sweep: the waiter's CPU and its spin wins */
    _Atomic uint64_t ready;
};

static struct shared *sh;

static int cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* fork A and B; @fn(end, size, count) in each; returns children's CPU seconds */
static double run_pair(struct tr *t, void (*fn)(struct end *, size_t, uint64_t),
                       size_t size, uint64_t count)
{
    double c0 = cpu_children();
    pid_t p[2];

    atomic_store(&sh->ready, 0);
    for (int side = 0; side < 2; side++) {
        p[side] = fork();
        if (p[side] == 0) {
            struct end e = { 0 };
            pin_to(side);
            end_open(&e, t, side);
            atomic_fetch_add(&sh->ready, 1);
            while (atomic_load(&sh->ready) < 2)
                usleep(100);
            fn(&e, size, count);
            _exit(0);
        }
    }
    int bad = 0;
    for (int side = 0; side < 2; side++) {
        int st;
        waitpid(p[side], &st, 0);
        bad |= !WIFEXITED(st) || WEXITSTATUS(st);
    }
    if (bad) {
        fprintf(stderr, "bench: a child failed\n");
        exit(1);
    }
    return cpu_children() - c0;
}

static void lat_fn(struct end *e, size_t size, uint64_t count)
{
    static uint8_t buf[1 << 17];
    memset(buf, 0x5a, size);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t t;
        if (e->side == 0) {
            t = now_ns();
            memcpy(buf, &t, 8);
            x_send(e, buf, size);
            x_recv(e, buf, size);
            memcpy(&t, buf, 8);
            sh->lat[1][i] = now_ns() - t;
        } else {
            x_recv(e, buf, size);
            memcpy(&t, buf, 8);
            sh->lat[0][i] = now_ns() - t;
            t = now_ns();
            memcpy(buf, &t, 8);
            x_send(e, buf, size);
        }
    }
}

static void tput_fn(struct end *e, size_t size, uint64_t count)
{
    static uint8_t buf[1 << 17];
    memset(buf, 0x5a, size);
    if (e->side == 0) {
        sh->t_first = now_ns();
        for (uint64_t i = 0; i < count; i++)
            x_send(e, buf, size);
        x_recv(e, buf, 8);              /* the receiver's "done" */
    } else {
        for (uint64_t i = 0; i < count; i++)
            x_recv(e, buf, size);
        sh->t_last = now_ns();
        x_send(e, buf, 8);
    }
}

/* idle: B waits 1 s with nothing coming (A sends one message at the end) */
static void idle_fn(struct end *e, size_t size __attribute__((unused)), uint64_t ms)
{
    static uint8_t buf[64];
    if (e->side == 0) {
        usleep((useconds_t)ms * 1000);
        x_send(e, buf, 8);
    } else {
        x_recv(e, buf, 8);
    }
}


static uint64_t cpu_self_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Sweep: A (the waiter, hybrid with the budget under test) sends a request
 * and waits; B (spinning, so it sees the request at once) busy-waits @delay
 * ns, stamps the reply and sends it; A records the reply's one-way latency.
 * Only A's CPU is counted: B's busy delay stands for work the peer does.
 */
static uint64_t sweep_delay;
static void sweep_fn(struct end *e, size_t size, uint64_t count)
{
    static uint8_t buf[256];
    uint64_t t, c0 = cpu_self_ns();
    memset(buf, 0x5a, size);
    for (uint64_t i = 0; i < count; i++) {
        if (e->side == 0) {
            x_send(e, buf, size);
            x_recv(e, buf, size);
            memcpy(&t, buf, 8);
            sh->lat[1][i] = now_ns() - t;
        } else {
            x_recv(e, buf, size);
            uint64_t until = now_ns() + sweep_delay;
            while (now_ns() < until)
                ;
            t = now_ns();
            memcpy(buf, &t, 8);
            x_send(e, buf, size);
        }
    }
    if (e->side == 0) {
        struct ivc_stats st;
        sh->cpu_ns = cpu_self_ns() - c0;
        ivc_channel_stats(e->ch, &st);
        sh->spins_won = st.spins_won;
    }
}

static int first = 1;
static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...)
{
    va_list ap;
    printf("%s\n    ", first ? "" : ",");
    first = 0;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static void measure(int round, int kind, unsigned wait, size_t size)
{
    struct tr t;
    char label[64];
    uint64_t lat_n = quick ? 2000 : 20000;
    uint64_t tput_n = quick ? 20000 : 200000;
    uint64_t cap = (quick ? 200ull : 2000ull) << 20;

    if (tput_n * size > cap)
        tput_n = cap / size;
    snprintf(label, sizeof(label), "\"transport\": \"%s\", \"wait\": \"%s\", \"size\": %zu",
             tnames[kind], kind == T_LIB ? wnames[wait] : "blocking", size);

    tr_make(&t, kind, wait);
    run_pair(&t, lat_fn, size, lat_n);
    tr_close(&t);
    uint64_t *all = malloc(2 * lat_n * sizeof(*all));
    memcpy(all, sh->lat[0], lat_n * 8);
    memcpy(all + lat_n, sh->lat[1], lat_n * 8);
    qsort(all, 2 * lat_n, 8, cmp64);
    emit("{\"round\": %d, \"kind\": \"latency\", %s, \"samples\": %llu, \"p50_ns\": %llu, "
         "\"p99_ns\": %llu}", round, label, (unsigned long long)(2 * lat_n),
         (unsigned long long)all[lat_n], (unsigned long long)all[2 * lat_n * 99 / 100]);
    free(all);

    tr_make(&t, kind, wait);
    double cpu = run_pair(&t, tput_fn, size, tput_n);
    tr_close(&t);
    double secs = (sh->t_last - sh->t_first) / 1e9;
    emit("{\"round\": %d, \"kind\": \"throughput\", %s, \"messages\": %llu, \"seconds\": %.6f, "
         "\"msgs_per_s\": %.1f, \"mb_per_s\": %.1f, \"cpu_s_per_million\": %.4f}",
         round, label, (unsigned long long)tput_n, secs, tput_n / secs,
         tput_n * (double)size / secs / 1e6, cpu / tput_n * 1e6);
    if (size == 64) {
        uint64_t ms = quick ? 200 : 1000;
        tr_make(&t, kind, wait);
        cpu = run_pair(&t, idle_fn, 8, ms);
        tr_close(&t);
        emit("{\"round\": %d, \"kind\": \"idle\", %s, \"idle_ms\": %llu, \"cpu_s_per_s\": %.4f}",
             round, label, (unsigned long long)ms, cpu / (ms / 1000.0));
    }
}

static void measure_sweep(int round, uint64_t budget, uint64_t delay)
{
    struct tr t;
    uint64_t n = quick ? 300 : 3000;

    sweep_budget = budget;
    sweep_delay = delay;
    tr_make(&t, T_LIB, 0);
    run_pair(&t, sweep_fn, 64, n);
    tr_close(&t);
    qsort(sh->lat[1], n, 8, cmp64);
    emit("{\"round\": %d, \"kind\": \"spin_sweep\", \"budget_ns\": %llu, \"delay_ns\": %llu, "
         "\"size\": 64, \"samples\": %llu, \"p50_ns\": %llu, \"p99_ns\": %llu, "
         "\"waiter_cpu_ns_per_msg\": %.1f, \"spin_won\": %.4f}",
         round, (unsigned long long)budget, (unsigned long long)delay,
         (unsigned long long)n, (unsigned long long)sh->lat[1][n / 2],
         (unsigned long long)sh->lat[1][n * 99 / 100], (double)sh->cpu_ns / n,
         (double)sh->spins_won / n);
}

/* cross-core cache-line ping-pong: one-way hop time */
static void ref_cacheline(int round)
{
    _Atomic uint64_t *line = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t n = quick ? 100000 : 1000000;
    pid_t p = fork();
    if (p == 0) {
        pin_to(1);
        for (uint64_t i = 1; i < 2 * n; i += 2) {
            while (atomic_load_explicit(line, memory_order_acquire) != i)
                ;
            atomic_store_explicit(line, i + 1, memory_order_release);
        }
        _exit(0);
    }
    pin_to(0);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < 2 * n; i += 2) {
        atomic_store_explicit(line, i + 1, memory_order_release);
        while (atomic_load_explicit(line, memory_order_acquire) != i + 2)
            ;
    }
    uint64_t dt = now_ns() - t0;
    waitpid(p, NULL, 0);
    if (pin) {                          /* the parent back on every CPU */
        cpu_set_t s;
        CPU_ZERO(&s);
        for (int c = 0; c < CPU_SETSIZE; c++)
            CPU_SET(c, &s);
        sched_setaffinity(0, sizeof(s), &s);
    }
    munmap((void *)line, 4096);
    emit("{\"round\": %d, \"kind\": \"ref_cacheline\", \"round_trips\": %llu, "
         "\"one_way_ns\": %.1f}", round, (unsigned long long)n, dt / (2.0 * n));
}

static void ref_memcpy(int round, size_t size)
{
    size_t total = (quick ? 256ull : 4096ull) << 20;
    uint8_t *a = aligned_alloc(4096, size), *b = aligned_alloc(4096, size);
    memset(a, 1, size);
    memset(b, 2, size);
    uint64_t iters = total / size, t0 = now_ns();
    for (uint64_t i = 0; i < iters; i++) {
        memcpy(i & 1 ? a : b, i & 1 ? b : a, size);
        __asm__ __volatile__("" ::: "memory");
    }
    double secs = (now_ns() - t0) / 1e9;
    emit("{\"round\": %d, \"kind\": \"ref_memcpy\", \"size\": %zu, \"mb_per_s\": %.1f}",
         round, size, iters * (double)size / secs / 1e6);
    free(a);
    free(b);
}

int main(int argc, char **argv)
{
    int rounds = 3, opt;
    size_t sizes[8] = { 64, 4096, 65536 };
    int nsizes = 3;
    int use[3] = { 1, 1, 1 };
    uint64_t budgets[16], delays[16] = { 0, 5000, 15000, 40000, 150000 };
    int nbudgets = 0, ndelays = 5;

    while ((opt = getopt(argc, argv, "r:qPs:t:S:B:D:")) != -1) {
        switch (opt) {
        case 'r': rounds = atoi(optarg); break;
        case 'q': quick = 1; break;
        case 'P': pin = 1; break;
        case 'S': spin_ns = strtoull(optarg, NULL, 0); break;
        case 's': {
            nsizes = 0;
            for (char *tok = strtok(optarg, ","); tok && nsizes < 8; tok = strtok(NULL, ","))
                sizes[nsizes++] = strtoul(tok, NULL, 0);
            break;
        }
        case 'B':
        case 'D': {
            uint64_t *v = opt == 'B' ? budgets : delays;
            int k = 0;
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
                char *end;
                if (k == 16) {
                    fprintf(stderr, "bench: -%c takes at most 16 values\n", opt);
                    return 2;
                }
                v[k++] = strtoull(tok, &end, 0);
                if (*end || end == tok) {
                    fprintf(stderr, "bench: -%c %s: not a number of ns\n", opt, tok);
                    return 2;
                }
            }
            if (opt == 'B')
                nbudgets = k, sweep = 1;
            else
                ndelays = k;
            break;
        }
        case 't':
            use[0] = strstr(optarg, "lib") != NULL;
            use[1] = strstr(optarg, "unix") != NULL;
            use[2] = strstr(optarg, "pipe") != NULL;
            break;
        default:
            fprintf(stderr, "usage: bench [-r ROUNDS] [-q] [-P] [-s SIZES] [-t lib,unix,pipe] [-S SPIN_NS]\n"
                            "       bench -B BUDGETS_NS [-D DELAYS_NS] [-r ROUNDS] [-q] [-P]\n");
            return 2;
        }
    }
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] < 16 || sizes[i] > 65536) {
            fprintf(stderr, "bench: sizes must be 16..65536\n");
            return 2;
        }
    if (rounds < 1) {
        fprintf(stderr, "bench: -r must be >= 1\n");
        return 2;
    }
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    double load[3];
    getloadavg(load, 3);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    if (sweep) {
        printf("{\n  \"meta\": {\"mode\": \"spin_sweep\", \"date\": \"%s\", \"cpus\": %ld, "
               "\"rounds\": %d, \"quick\": %d, \"pinned\": %d, \"default_spin_ns\": %llu, "
               "\"load_start\": [%.2f, %.2f, %.2f]},\n  \"runs\": [",
               date, sysconf(_SC_NPROCESSORS_ONLN), rounds, quick, pin,
               (unsigned long long)IVC_DEFAULT_SPIN_NS, load[0], load[1], load[2]);
        int nconf = nbudgets * ndelays;
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < nconf; k++) {
                /* interleaved: every (budget, delay) once a round, order rotated */
                int c = (k + r * 7) % nconf;
                measure_sweep(r, budgets[c / ndelays], delays[c % ndelays]);
            }
        getloadavg(load, 3);
        printf("\n  ],\n  \"load_end\": [%.2f, %.2f, %.2f]\n}\n", load[0], load[1], load[2]);
        return 0;
    }
    printf("{\n  \"meta\": {\"date\": \"%s\", \"cpus\": %ld, \"rounds\": %d, \"quick\": %d, "
           "\"pinned\": %d, \"spin_ns\": %llu, \"load_start\": [%.2f, %.2f, %.2f]},\n  \"runs\": [",
           date, sysconf(_SC_NPROCESSORS_ONLN), rounds, quick, pin,
           (unsigned long long)(spin_ns ? spin_ns : IVC_DEFAULT_SPIN_NS), load[0], load[1], load[2]);
    for (int r = 0; r < rounds; r++) {
        /* interleaved: every configuration once per round, the order rotated */
        int nconf = 0;
        struct { int kind; unsigned wait; } conf[5];
        if (use[0])
            for (unsigned w = 0; w < 3; w++)
                conf[nconf].kind = T_LIB, conf[nconf++].wait = w;
        if (use[1])
            conf[nconf].kind = T_UNIX, conf[nconf++].wait = 0;
        if (use[2])
            conf[nconf].kind = T_PIPE, conf[nconf++].wait = 0;
        for (int i = 0; i < nsizes; i++)
            for (int k = 0; k < nconf; k++) {
                int c = (k + r) % nconf;
                measure(r, conf[c].kind, conf[c].wait, sizes[i]);
            }
        ref_cacheline(r);
        ref_memcpy(r, 4096);
        ref_memcpy(r, 65536);
    }
    getloadavg(load, 3);
    printf("\n  ],\n  \"load_end\": [%.2f, %.2f, %.2f]\n}\n", load[0], load[1], load[2]);
    return 0;
}
