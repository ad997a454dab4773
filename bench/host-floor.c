/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host floor for the doorbell benchmarks: two host processes ping-pong
 * through a pair of eventfds (what a doorbell costs without any guest),
 * or through one shared cache line (what polling costs).
 * Usage: host-floor eventfd|cacheline COUNT [RAW_FILE]
 * Prints "<mode>: count=N min_us=.. p50_us=.. p90_us=.. p99_us=.. max_us=.."
 * and, with RAW_FILE, every round trip in microseconds, one per line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* One cache line, accessed with __atomic loads and stores only. */
typedef struct Line {
    uint32_t ping;
    uint32_t pong;
} __attribute__((aligned(64))) Line;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void efd_signal(int fd)
{
    uint64_t one = 1;

    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        die("eventfd write");
    }
}

static void efd_wait(int fd)
{
    uint64_t v;

    while (read(fd, &v, sizeof(v)) != sizeof(v)) {
        if (errno != EINTR) {
            die("eventfd read");
        }
    }
}

static void spin_until(uint32_t *word, uint32_t want)
{
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != want) {
        __builtin_ia32_pause();
    }
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void measure_eventfd(uint64_t *lat, unsigned count)
{
    int to_child = eventfd(0, 0), to_parent = eventfd(0, 0);
    unsigned i;
    pid_t pid;

    if (to_child < 0 || to_parent < 0) {
        die("eventfd");
    }
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        for (i = 0; i < count; i++) {
            efd_wait(to_child);
            efd_signal(to_parent);
        }
        _exit(0);
    }
    for (i = 0; i < count; i++) {
        uint64_t t0 = now_ns();

        efd_signal(to_child);
        efd_wait(to_parent);
        lat[i] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
}

static void measure_cacheline(uint64_t *lat, unsigned count)
{
    Line *l = mmap(NULL, sizeof(*l), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned i;
    pid_t pid;

    if (l == MAP_FAILED) {
        die("mmap");
    }
    l->ping = l->pong = 0;
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        for (i = 1; i <= count; i++) {
            spin_until(&l->ping, i);
            __atomic_store_n(&l->pong, i, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    for (i = 1; i <= count; i++) {
        uint64_t t0 = now_ns();

        __atomic_store_n(&l->ping, i, __ATOMIC_RELEASE);
        spin_until(&l->pong, i);
        lat[i - 1] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    unsigned count = 0, i;
    uint64_t *lat, *sorted;
    FILE *raw;

    if (argc >= 3) {
        sscanf(argv[2], "%u", &count);
    }
    if (argc < 3 || argc > 4 || count == 0) {
        fprintf(stderr, "usage: %s eventfd|cacheline COUNT [RAW_FILE]\n",
                argv[0]);
        return 2;
    }
    lat = calloc(count, sizeof(*lat));
    sorted = calloc(count, sizeof(*sorted));
    if (!lat || !sorted) {
        die("calloc");
    }
    if (!strcmp(argv[1], "eventfd")) {
        measure_eventfd(lat, count);
    } else if (!strcmp(argv[1], "cacheline")) {
        measure_cacheline(lat, count);
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    memcpy(sorted, lat, count * sizeof(*lat));
    qsort(sorted, count, sizeof(*sorted), compare_u64);
    printf("%s: count=%u min_us=%.2f p50_us=%.2f p90_us=%.2f p99_us=%.2f "
           "max_us=%.2f\n", argv[1], count, sorted[0] / 1e3,
           sorted[count / 2] / 1e3, sorted[count * 9 / 10] / 1e3,
           sorted[count * 99 / 100] / 1e3, sorted[count - 1] / 1e3);
    if (argc == 4) {
        raw = fopen(argv[3], "w");
        if (!raw) {
            die(argv[3]);
        }
        for (i = 0; i < count; i++) {
            fprintf(raw, "%.3f\n", lat[i] / 1e3);
        }
        fclose(raw);
    }
    return 0;
}
