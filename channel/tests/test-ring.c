/* SPDX-License-Identifier: MIT */
/* libivshmem-channel unit tests: layout, directory, ring, wake-ups, hostile writes (TAP). */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include "ivshmem/channel.h"
#include "internal.h"
#include "testutil.h"

#define RSIZE (1u << 20)

static struct ivc_region *open_mem(int fd, unsigned flags)
{
    struct ivc_region *r;
    int ret = ivc_region_open_fd(fd, 0, flags, &r);

    if (ret < 0)
        DIE("open region: %s", ivc_strerror(ret));
    return r;
}

/* Two handles on one memfd, channel "t" with a small ring. */
static void pair(int fd, uint32_t ring, struct ivc_region **ra, struct ivc_region **rb,
                 struct ivc_channel **a, struct ivc_channel **b)
{
    struct ivc_channel_opts o = { .ring_size = ring, .wait_mode = IVC_WAIT_SLEEP };
    *ra = open_mem(fd, IVC_F_CREATE);
    *rb = open_mem(fd, 0);
    if (ivc_channel_open(*ra, "t", &o, IVC_SIDE_A, IVC_F_CREATE, a) < 0 ||
        ivc_channel_open(*rb, "t", &o, IVC_SIDE_B, 0, b) < 0)
        DIE("channel open");
}

static void test_layout(void)
{
    int fd = t_memfd(RSIZE);
    struct ivc_region *r;
    struct ivc_channel *c;

    T_EQ(ivc_region_open_fd(fd, 0, 0, &r), -ENOENT, "unformatted region without IVC_F_CREATE: -ENOENT");
    r = open_mem(fd, IVC_F_CREATE);
    struct ivc_shm_hdr *h = ivc_region_base(r);
    t_ok(h->magic == IVC_MAGIC && h->version == IVC_LAYOUT_VERSION &&
         h->region_size == RSIZE && h->state == IVC_ST_READY, "format writes magic, version, size, READY");
    T_EQ(ivc_channel_open(r, "nope", NULL, IVC_SIDE_A, 0, &c), -ENOENT, "absent channel: -ENOENT");
    T_EQ(ivc_channel_open(r, "", NULL, IVC_SIDE_A, IVC_F_CREATE, &c), -EINVAL, "empty name: -EINVAL");
    T_EQ(ivc_channel_open(r, "0123456789012345678901234567890123", NULL, IVC_SIDE_A,
                          IVC_F_CREATE, &c), -EINVAL, "name of 34 bytes: -EINVAL");
    struct ivc_channel_opts o = { .ring_size = 1000 };
    T_EQ(ivc_channel_open(r, "x", &o, IVC_SIDE_A, IVC_F_CREATE, &c), -EINVAL, "ring size not a power of two: -EINVAL");
    /* fill the directory */
    o.ring_size = 256;
    int made = 0, ret = 0;
    char name[32];
    for (unsigned i = 0; i < 70; i++) {
        snprintf(name, sizeof(name), "c%u", i);
        ret = ivc_channel_open(r, name, &o, IVC_SIDE_A, IVC_F_CREATE, &c);
        if (ret < 0)
            break;
        made++;
        ivc_channel_close(c);
    }
    T_EQ(made, IVC_MAX_CHANNELS, "directory holds %u channels", IVC_MAX_CHANNELS);
    T_EQ(ret, -ENOSPC, "one more: -ENOSPC");
    T_EQ(ivc_channel_open(r, "c5", NULL, IVC_SIDE_B, 0, &c), 0, "a full directory still opens existing names");
    ivc_channel_close(c);
    ivc_region_close(r);
    /* region too small for a big ring */
    r = open_mem(fd, IVC_F_FORMAT);
    o.ring_size = RSIZE;
    T_EQ(ivc_channel_open(r, "big", &o, IVC_SIDE_A, IVC_F_CREATE, &c), -ENOSPC, "ring larger than the region: -ENOSPC");
    o.ring_size = 256;
    T_EQ(ivc_channel_open(r, "big", &o, IVC_SIDE_A, IVC_F_CREATE, &c), 0, "the slot given back is reused");
    ivc_channel_close(c);
    ivc_region_close(r);
    close(fd);
}

/* N processes format one region and create the same 8 channels at once. */
static void test_create_race(void)
{
    enum { NPROC = 6 };
    int fd = t_memfd(RSIZE);
    uint64_t *offs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[NPROC];

    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            struct ivc_region *r;
            struct ivc_channel_opts o = { .ring_size = 4096 };
            if (ivc_region_open_fd(fd, 0, IVC_F_CREATE, &r) < 0)
                _exit(1);
            for (int i = 0; i < 8; i++) {
                struct ivc_channel *c;
                char name[8];
                /* each process in its own order */
                int k = (i + p) % 8;
                snprintf(name, sizeof(name), "ch%d", k);
                if (ivc_channel_open(r, name, &o, IVC_SIDE_A, IVC_F_CREATE, &c) < 0)
                    _exit(2);
                struct ivc_channel *cc = c;
                offs[p * 8 + k] = (uint64_t)((uint8_t *)cc->me - (uint8_t *)ivc_region_base(r));
                ivc_channel_close(c);
            }
            _exit(0);
        }
    }
    int bad = 0;
    for (int p = 0; p < NPROC; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        bad += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    T_EQ(bad, 0, "%d processes format and create 8 channels concurrently", NPROC);
    int differ = 0;
    for (int p = 1; p < NPROC; p++)
        for (int k = 0; k < 8; k++)
            differ += offs[p * 8 + k] != offs[k];
    T_EQ(differ, 0, "every process got the same block for every name");
    struct ivc_region *r = open_mem(fd, 0);
    int ready = 0;
    struct ivc_shm_dirent *d = (void *)((uint8_t *)ivc_region_base(r) + 64);
    for (unsigned i = 0; i < IVC_MAX_CHANNELS; i++)
        ready += d[i].state == IVC_ST_READY;
    T_EQ(ready, 8, "the directory has exactly 8 entries");
    ivc_region_close(r);
    close(fd);
}

static void test_ring_basic(void)
{
    int fd = t_memfd(RSIZE);
    struct ivc_region *ra, *rb;
    struct ivc_channel *a, *b;
    char buf[8192];

    pair(fd, 4096, &ra, &rb, &a, &b);
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EAGAIN, "empty ring: -EAGAIN");
    T_EQ(ivc_send(a, "hello", 5, 0), 0, "send 5 bytes");
    T_EQ(ivc_recv(b, buf, 2, 0), -EMSGSIZE, "recv into 2 bytes: -EMSGSIZE");
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), 5, "recv returns 5");
    t_ok(memcmp(buf, "hello", 5) == 0, "payload intact");
    T_EQ(ivc_send(a, buf, 0, 0), 0, "empty message");
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), 0, "empty message received as 0 bytes");
    T_EQ(ivc_channel_max_msg(a), 4096 / 2 - 8, "max message = ring/2 - 8");
    T_EQ(ivc_send(a, buf, 4096 / 2 - 7, 0), -EMSGSIZE, "larger: -EMSGSIZE");
    /* fill until EAGAIN: 100 bytes -> 112-byte records */
    int n = 0;
    while (ivc_send(a, buf, 100, 0) == 0)
        n++;
    T_EQ(n, 4096 / 112, "a 4 KiB ring holds 4096/112 records of 100 bytes");
    T_EQ(ivc_send(b, "x", 1, 0), 0, "the other direction is independent");
    /* drain, then wrap with varying sizes and checksums */
    while (ivc_recv(b, buf, sizeof(buf), 0) >= 0)
        ;
    unsigned seq_tx = 0, seq_rx = 0, bad = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = 8 + (size_t)(round * 37) % 1900;
        memset(buf, 0, 8);
        memcpy(buf, &seq_tx, 4);
        for (size_t i = 8; i < len; i++)
            buf[i] = (char)(seq_tx + i);
        uint32_t c = t_crc(buf + 8, len - 8);
        memcpy(buf + 4, &c, 4);
        if (ivc_send(a, buf, len, 0) == 0)
            seq_tx++;
        char in[4096];
        ssize_t got;
        while ((got = ivc_recv(b, in, sizeof(in), round % 3 ? 0 : 0)) > 0 && round % 2) {
            uint32_t s, cc;
            memcpy(&s, in, 4);
            memcpy(&cc, in + 4, 4);
            bad += s != seq_rx || cc != t_crc(in + 8, (size_t)got - 8);
            seq_rx++;
        }
        if (got > 0) {
            uint32_t s, cc;
            memcpy(&s, in, 4);
            memcpy(&cc, in + 4, 4);
            bad += s != seq_rx || cc != t_crc(in + 8, (size_t)got - 8);
            seq_rx++;
        }
    }
    ssize_t got;
    char in[4096];
    while ((got = ivc_recv(b, in, sizeof(in), 0)) > 0) {
        uint32_t s;
        memcpy(&s, in, 4);
        bad += s != seq_rx++;
    }
    t_ok(bad == 0 && seq_rx == seq_tx && seq_tx > 10000,
         "20000 rounds of wrapping variable sizes: %u sent, %u received in order, %u bad",
         seq_tx, seq_rx, bad);
    struct ivc_stats st;
    ivc_channel_stats(a, &st);
    T_EQ(st.notifies, 0, "plain region: no doorbell rung");
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(ra);
    ivc_region_close(rb);
    close(fd);
}

static void test_zero_copy_batch(void)
{
    int fd = t_memfd(RSIZE);
    struct ivc_region *ra, *rb;
    struct ivc_channel *a, *b;
    void *p;
    const void *q;
    size_t len;

    pair(fd, 4096, &ra, &rb, &a, &b);
    T_EQ(ivc_reserve(a, 64, &p, 0), 0, "reserve 64");
    t_ok(((uintptr_t)p & 7) == 0, "reservation is 8-byte aligned");
    T_EQ(ivc_reserve(a, 64, &p, 0), -EBUSY, "second reservation while one is open: -EBUSY");
    memset(p, 'z', 64);
    T_EQ(ivc_commit(a, 65), -EMSGSIZE, "commit more than reserved: -EMSGSIZE");
    T_EQ(ivc_commit(a, 10), 0, "commit 10 of 64");
    T_EQ(ivc_peek(b, &q, &len, 0), -EAGAIN, "committed but not flushed: invisible");
    for (int i = 0; i < 9; i++)
        ivc_send(a, "0123456789", 10, IVC_F_MORE);
    T_EQ(ivc_peek(b, &q, &len, 0), -EAGAIN, "IVC_F_MORE batch: still invisible");
    ivc_flush(a);
    int n = 0;
    while (ivc_peek(b, &q, &len, 0) == 0) {
        n += len == 10;
        ivc_release(b);
    }
    T_EQ(n, 10, "after flush the 10 messages arrive");
    T_EQ(ivc_release(b), -EINVAL, "release without peek: -EINVAL");
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(ra);
    ivc_region_close(rb);
    close(fd);
}

/* Doorbells by hand: rung only when the other side armed. */
static void test_suppression(void)
{
    int fd = t_memfd(RSIZE);
    int ea = eventfd(0, EFD_NONBLOCK), eb = eventfd(0, EFD_NONBLOCK);
    struct ivc_region *ra = open_mem(fd, IVC_F_CREATE), *rb = open_mem(fd, 0);
    struct ivc_channel *a, *b;
    struct ivc_channel_opts o = { .ring_size = 4096, .wait_mode = IVC_WAIT_SLEEP };
    uint64_t v;
    char buf[64];

    ivc_region_set_id(ra, 1);
    ivc_region_set_id(rb, 2);
    ivc_region_set_own_vector(ra, 0, ea);
    ivc_region_set_doorbell(ra, 2, 0, eb);
    ivc_region_set_own_vector(rb, 0, eb);
    ivc_region_set_doorbell(rb, 1, 0, ea);
    ivc_channel_open(ra, "s", &o, IVC_SIDE_A, IVC_F_CREATE, &a);
    ivc_channel_open(rb, "s", &o, IVC_SIDE_B, 0, &b);
    for (int i = 0; i < 10; i++)
        ivc_send(a, "m", 1, 0);
    t_ok(read(eb, &v, 8) < 0, "10 sends to a consumer that never slept: no doorbell");
    while (ivc_recv(b, buf, sizeof(buf), 0) >= 0)
        ;
    T_EQ(ivc_channel_arm(b), 0, "arm on an empty ring: sleep");
    ivc_send(a, "m", 1, 0);
    ivc_send(a, "m", 1, 0);
    T_EQ(read(eb, &v, 8), 8, "after arming: rung");
    T_EQ(v, 1, "exactly once for two sends");
    ivc_send(a, "m", 1, 0);
    T_EQ(ivc_channel_arm(b), 1, "arm with a message waiting: do not sleep (re-check)");
    /* a wait that sleeps is woken by the send of a child */
    while (ivc_recv(b, buf, sizeof(buf), 0) >= 0)
        ;
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100000);
        ivc_send(a, "late", 4, 0);
        _exit(0);
    }
    uint64_t t0 = ivc_now_ns();
    int ret = ivc_wait_recv(b, 5000000000ull);
    uint64_t dt = ivc_now_ns() - t0;
    waitpid(pid, NULL, 0);
    t_ok(ret == 0 && dt < 1000000000ull, "sleeping wait woken by the doorbell (%d after %.1f ms)",
         ret, dt / 1e6);
    struct ivc_stats st;
    ivc_channel_stats(b, &st);
    t_ok(st.sleeps >= 1, "the wait slept (%llu sleeps)", (unsigned long long)st.sleeps);
    /* back-pressure: a full ring and a producer waiting for room */
    while (ivc_send(a, buf, 60, 0) == 0)
        ;
    pid = fork();
    if (pid == 0) {
        usleep(100000);
        char in[64];
        for (int i = 0; i < 4; i++)
            ivc_recv(b, in, sizeof(in), 0);
        _exit(0);
    }
    t0 = ivc_now_ns();
    ret = ivc_send(a, buf, 60, IVC_F_WAIT);
    dt = ivc_now_ns() - t0;
    waitpid(pid, NULL, 0);
    t_ok(ret == 0 && dt > 50000000ull && dt < 2000000000ull,
         "full ring, IVC_F_WAIT: woken when the consumer made room (%d after %.1f ms)", ret, dt / 1e6);
    T_EQ(ivc_wait_recv(a, 20000000), -ETIMEDOUT, "wait on an empty ring with a 20 ms timeout: -ETIMEDOUT");
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(ra);
    ivc_region_close(rb);
    close(fd);
    close(ea);
    close(eb);
}

/* Restart of a side: stale records dropped, application told once. */
static void test_epochs(void)
{
    int fd = t_memfd(RSIZE);
    struct ivc_region *ra, *rb;
    struct ivc_channel *a, *b;
    char buf[64];
    struct ivc_channel_opts o = { .ring_size = 4096, .wait_mode = IVC_WAIT_SLEEP };

    pair(fd, 4096, &ra, &rb, &a, &b);
    t_ok(ivc_epoch(a) == 1 && ivc_peer_epoch(b) == 1, "first incarnation is epoch 1");
    T_EQ(ivc_peer_state(b), IVC_PEER_UP, "peer state UP");
    ivc_send(a, "old1", 4, 0);
    ivc_send(a, "old2", 4, 0);
    ivc_channel_close(a);       /* "crash" after two sends */
    T_EQ(ivc_peer_state(b), IVC_PEER_LEFT, "after close: LEFT");
    ivc_channel_open(ra, "t", &o, IVC_SIDE_A, 0, &a);
    T_EQ(ivc_epoch(a), 2, "reopen: epoch 2");
    ivc_send(a, "new1", 4, 0);
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -ECONNRESET, "consumer is told the producer restarted");
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), 4, "then receives");
    t_ok(memcmp(buf, "new1", 4) == 0, "the new incarnation's message, not the stale ones");
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EAGAIN, "nothing else");
    struct ivc_stats st;
    ivc_channel_stats(b, &st);
    t_ok(st.dropped_stale == 2 && st.resets_seen == 1, "2 stale dropped, 1 reset seen");
    /* consumer restart: the producer is told once, nothing redelivered */
    ivc_send(a, "m1", 2, 0);
    ivc_recv(b, buf, sizeof(buf), 0);
    ivc_send(a, "m2", 2, 0);
    ivc_channel_close(b);
    ivc_channel_open(rb, "t", &o, IVC_SIDE_B, 0, &b);
    T_EQ(ivc_send(a, "m3", 2, 0), -ECONNRESET, "producer is told the consumer restarted");
    T_EQ(ivc_send(a, "m3", 2, 0), 0, "then sends");
    ssize_t n1 = ivc_recv(b, buf, sizeof(buf), 0);
    t_ok(n1 == 2 && memcmp(buf, "m2", 2) == 0, "restarted consumer gets m2 (not m1 again)");
    n1 = ivc_recv(b, buf, sizeof(buf), 0);
    t_ok(n1 == 2 && memcmp(buf, "m3", 2) == 0, "then m3");
    /* heartbeat timeout */
    o.peer_timeout_ns = 50000000;
    struct ivc_channel *b2;
    ivc_channel_close(b);
    ivc_channel_open(rb, "t", &o, IVC_SIDE_B, 0, &b2);
    ivc_recv(b2, buf, sizeof(buf), 0);
    T_EQ(ivc_peer_state(b2), IVC_PEER_UP, "heartbeat: UP at first");
    usleep(120000);
    T_EQ(ivc_peer_state(b2), IVC_PEER_GONE, "no heartbeat for 120 ms (timeout 50): GONE");
    ivc_heartbeat(a);
    T_EQ(ivc_peer_state(b2), IVC_PEER_UP, "a heartbeat: UP again");
    usleep(120000);
    T_EQ(ivc_wait_recv(b2, 1000000000ull), -EPIPE, "wait with a silent peer: -EPIPE, not a hang");
    ivc_channel_close(a);
    ivc_channel_close(b2);
    ivc_region_close(ra);
    ivc_region_close(rb);
    close(fd);
}

/* A hostile peer writes into the shared state: errors, never a crash. */
static void test_hostile(void)
{
    int fd = t_memfd(RSIZE);
    struct ivc_region *ra, *rb;
    struct ivc_channel *a, *b;
    char buf[4096];

    pair(fd, 4096, &ra, &rb, &a, &b);
    struct ivc_channel *ca = a, *cb = b;
    ivc_send(a, "ok", 2, 0);
    /* head far beyond the tail */
    atomic_store(&ca->tx.prod->head, 1u << 20);
    cb->rx_head_cache = cb->rx_tail;
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EPROTO, "head beyond tail + size: -EPROTO");
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EPROTO, "the channel stays broken");
    T_EQ(ivc_wait_recv(b, UINT64_MAX), -EPROTO, "a wait on a broken channel returns at once");
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(ra);
    ivc_region_close(rb);
    /* a record length beyond the published bytes */
    ra = open_mem(fd, IVC_F_FORMAT);
    rb = open_mem(fd, 0);
    struct ivc_channel_opts o = { .ring_size = 4096 };
    ivc_channel_open(ra, "t", &o, IVC_SIDE_A, IVC_F_CREATE, &a);
    ivc_channel_open(rb, "t", &o, IVC_SIDE_B, 0, &b);
    ca = a;
    ivc_send(a, "abcdefgh", 8, 0);
    uint32_t *rec = (uint32_t *)ca->tx.data;
    rec[0] = 4000;
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EPROTO, "record length beyond head: -EPROTO");
    ivc_channel_reset(b);
    rec[0] = IVC_REC_PAD | 100;
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), -EPROTO, "pad record not reaching the end: -EPROTO");
    ivc_channel_reset(b);
    rec[0] = 8;
    T_EQ(ivc_recv(b, buf, sizeof(buf), 0), 8, "after ivc_channel_reset and a repaired record: received");
    /* the consumer gives back more than was published */
    T_EQ(ivc_send(a, buf, 60, 0), -ECONNRESET, "the consumer's ivc_channel_reset is a restart for the producer");
    atomic_store(&ca->tx.cons->tail, 4096 * 3);
    for (int i = 0; i < 600 && ivc_send(a, buf, 60, 0) == 0; i++)
        ;
    T_EQ(ivc_send(a, buf, 60, 0), -EPROTO, "tail beyond head: the producer fails with -EPROTO");
    ivc_channel_close(a);
    ivc_channel_close(b);
    ivc_region_close(ra);
    ivc_region_close(rb);
    /* directory entries out of the region */
    ra = open_mem(fd, IVC_F_FORMAT);
    ivc_channel_open(ra, "t", &o, IVC_SIDE_A, IVC_F_CREATE, &a);
    ivc_channel_close(a);
    struct ivc_shm_dirent *d = (void *)((uint8_t *)ivc_region_base(ra) + 64);
    uint64_t saved = d[0].offset;
    d[0].offset = RSIZE - 256;
    T_EQ(ivc_channel_open(ra, "t", &o, IVC_SIDE_B, 0, &b), -EPROTO, "block beyond the region: -EPROTO");
    d[0].offset = saved + 8;
    T_EQ(ivc_channel_open(ra, "t", &o, IVC_SIDE_B, 0, &b), -EPROTO, "misaligned block: -EPROTO");
    d[0].offset = saved;
    d[0].ring_size = 3000;
    T_EQ(ivc_channel_open(ra, "t", &o, IVC_SIDE_B, 0, &b), -EPROTO, "ring size not a power of two: -EPROTO");
    d[0].ring_size = 4096;
    d[1].state = 77;
    T_EQ(ivc_channel_open(ra, "u", &o, IVC_SIDE_B, IVC_F_CREATE, &b), -EPROTO, "unknown slot state: -EPROTO");
    ivc_region_close(ra);
    struct ivc_shm_hdr *h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    h->region_size = 1ull << 40;
    T_EQ(ivc_region_open_fd(fd, 0, 0, &ra), -EPROTO, "header claims a larger region: -EPROTO");
    h->region_size = RSIZE;
    h->magic ^= 1;
    T_EQ(ivc_region_open_fd(fd, 0, 0, &ra), -EPROTO, "bad magic: -EPROTO");
    h->state = IVC_ST_INIT;
    uint64_t t0 = ivc_now_ns();
    T_EQ(ivc_region_open_fd(fd, 0, 0, &ra), -ETIMEDOUT, "a creator that died mid-format: -ETIMEDOUT");
    t_ok(ivc_now_ns() - t0 < 5000000000ull, "... within the bounded wait");
    munmap(h, 4096);
    close(fd);
}

int main(void)
{
    test_layout();
    test_create_race();
    test_ring_basic();
    test_zero_copy_batch();
    test_suppression();
    test_epochs();
    test_hostile();
    printf("1..%d\n", t_n);
    return t_fail ? 1 : 0;
}
