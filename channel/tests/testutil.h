/* SPDX-License-Identifier: MIT */
/* libivshmem-channel tests: TAP output and small helpers. */
#ifndef TESTUTIL_H
#define TESTUTIL_H
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int t_n __attribute__((unused)), t_fail __attribute__((unused));

static void __attribute__((format(printf, 2, 3), unused)) t_ok(int cond, const char *fmt, ...)
{
    va_list ap;

    t_n++;
    if (!cond)
        t_fail++;
    printf("%sok %d - ", cond ? "" : "not ", t_n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

#define T_EQ(a, b, ...) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) printf("#   %s = %lld, expected %s = %lld\n", #a, _a, #b, _b); \
    t_ok(_a == _b, __VA_ARGS__); } while (0)

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); exit(2); } while (0)

static int __attribute__((unused)) t_memfd(size_t size)
{
    int fd = memfd_create("ivc-test", MFD_CLOEXEC);

    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        DIE("memfd: %m");
    return fd;
}

static uint32_t __attribute__((unused)) t_crc(const void *p, size_t n)   /* FNV-1a, enough to catch corruption */
{
    const unsigned char *b = p;
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}
#endif
