/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for libivshmem-channel: a hostile peer owns the region.
 *
 * The region is an ASan-checked heap buffer (ivc_region_attach_mem), so
 * any access outside it is a finding.  Input:
 *   byte 0     mode: bit 0 = raw (the whole region is input bytes; else a
 *              well-formed layout with channel "f" is made first and the
 *              input is laid over it), bits 1-2 = region size 16/32/64/8 KiB
 *   bytes 1-2  offset where the overlay starts (structured mode)
 *   then       overlay length (1 byte, x8) and its bytes, then operations:
 *              each op byte: low 4 bits = operation, high 4 bits = argument
 * Operations drive both sides (A and B) of channels "f" and "g": send,
 * reserve/commit/flush, peek/release, recv, waits with a zero timeout,
 * reset, peer state, and hostile writes of 8 input bytes at an input
 * offset between operations (the peer writing while we run).
 * Checks: every pointer and length the library returns lies inside the
 * ring it belongs to (so inside the region) and within the sizes asked for; return values are in the
 * documented set; the library never hangs (libFuzzer -timeout).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ivshmem/channel.h"
#include "internal.h"          /* to check pointers against the ring they must be in */

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz-channel: check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

struct in {
    const uint8_t *p;
    size_t n;
};

static unsigned take(struct in *in, unsigned bytes)
{
    unsigned v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        v <<= 8;
        if (in->n) {
            v |= *in->p++;
            in->n--;
        }
    }
    return v;
}

static int known(int ret)
{
    switch (ret) {
    case 0: case -EAGAIN: case -EPROTO: case -ECONNRESET: case -EPIPE:
    case -EMSGSIZE: case -EBUSY: case -EINVAL: case -ETIMEDOUT: case -ENOENT:
    case -ENOSPC:
        return 1;
    }
    return ret > 0;
}

static uint8_t *base;
static uint64_t size;

static void in_region(const void *p, size_t len)
{
    const uint8_t *b = p;
    CHECK(b >= base && b <= base + size && len <= (size_t)(base + size - b));
}

/* inside the data area of the ring @v (which itself must be in the region) */
static void in_ring(const struct ivc_side_ring *v, const void *p, size_t len)
{
    const uint8_t *b = p;
    in_region(v->data, v->size);
    CHECK(b >= v->data && b <= v->data + v->size && len <= (size_t)(v->data + v->size - b));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    struct in in = { data, n };
    static const uint64_t sizes[4] = { 16384, 32768, 65536, 8192 };
    unsigned mode = take(&in, 1);
    struct ivc_region *r = NULL;
    struct ivc_channel *ch[4] = { 0 };
    static uint8_t scratch[65536];
    int ret;

    size = sizes[(mode >> 1) & 3];
    base = malloc(size);
    memset(base, 0, size);
    if (mode & 1) {
        size_t k = in.n < size ? in.n : size;
        memcpy(base, in.p, k);
        in.p += k;
        in.n -= k;
    } else {
        struct ivc_channel_opts o = { .ring_size = (uint32_t)(size / 8) };
        struct ivc_channel *a;
        if (ivc_region_attach_mem(base, size, IVC_F_CREATE, &r) == 0 &&
            ivc_channel_open(r, "f", &o, IVC_SIDE_A, IVC_F_CREATE, &a) == 0) {
            ivc_send(a, "seed", 4, 0);
            ivc_channel_close(a);
        }
        ivc_region_close(r);
        r = NULL;
        unsigned off = take(&in, 2) % size;
        unsigned len = take(&in, 1) * 8;
        for (unsigned i = 0; i < len && off + i < size && in.n; i++)
            base[off + i] = (uint8_t)take(&in, 1);
    }
    ret = ivc_region_attach_mem(base, size, (mode & 8) ? IVC_F_CREATE : 0, &r);
    CHECK(known(ret));
    if (ret < 0)
        goto out;
    struct ivc_channel_opts o = { .ring_size = 512, .wait_mode = IVC_WAIT_SLEEP,
                                  .peer_timeout_ns = (mode & 16) ? 1 : 0 };
    static const char *names[4] = { "f", "f", "g", "g" };
    for (int i = 0; i < 4; i++) {
        ret = ivc_channel_open(r, names[i], &o, i & 1, (mode & 32) ? IVC_F_CREATE : 0, &ch[i]);
        CHECK(known(ret));
        if (ret < 0)
            ch[i] = NULL;
    }
    for (unsigned steps = 0; in.n && steps < 512; steps++) {
        unsigned op = take(&in, 1);
        struct ivc_channel *c = ch[(op >> 4) & 3];
        unsigned arg = op >> 6;
        if ((op & 15) == 15) {          /* the peer writes 8 bytes somewhere */
            unsigned off = (take(&in, 2) * 8) % size;
            for (int i = 0; i < 8; i++)
                base[off + i] = (uint8_t)take(&in, 1);
            continue;
        }
        if (!c)
            continue;
        size_t len = (take(&in, 1) << arg) % 70000;
        switch (op & 15) {
        case 0: case 1:
            ret = ivc_send(c, scratch, len, (op & 1) ? IVC_F_MORE : 0);
            CHECK(known(ret) && ret <= 0);
            break;
        case 2: {
            void *p;
            ret = ivc_reserve(c, len, &p, 0);
            CHECK(known(ret));
            if (ret == 0) {
                in_ring(&c->tx, p, len);
                memset(p, 0xa5, len);
                CHECK(ivc_commit(c, len / 2) == 0);
            }
            break;
        }
        case 3:
            ret = ivc_flush(c);
            CHECK(ret == 0 || ret == 1);
            break;
        case 4: case 5: {
            const void *p;
            size_t l;
            ret = ivc_peek(c, &p, &l, 0);
            CHECK(known(ret));
            if (ret == 0) {
                in_ring(&c->rx, p, l);
                CHECK(l <= ivc_channel_max_msg(c));
                memcpy(scratch, p, l);
                if (op & 1)
                    CHECK(ivc_release(c) == 0);
            }
            break;
        }
        case 6: {
            ssize_t got = ivc_recv(c, scratch, len, 0);
            CHECK(got < 0 ? known((int)got) : (size_t)got <= len);
            break;
        }
        case 7:
            ret = ivc_wait_recv(c, 0);
            CHECK(known(ret) && ret <= 0);
            break;
        case 8:
            ret = ivc_wait_send(c, len, 0);
            CHECK(known(ret) && ret <= 0);
            break;
        case 9:
            ret = ivc_channel_reset(c);
            CHECK(known(ret));
            break;
        case 10:
            ret = ivc_peer_state(c);
            CHECK(ret >= IVC_PEER_NEVER && ret <= IVC_PEER_GONE);
            break;
        case 11:
            ret = ivc_channel_arm(c);
            CHECK(ret == 0 || ret == 1);
            break;
        case 12:
            ret = ivc_release(c);
            CHECK(ret == 0 || ret == -EINVAL);
            break;
        case 13:
            ivc_heartbeat(c);
            break;
        case 14: {
            /* reopen this handle: a restart of that side */
            int idx = (op >> 4) & 3;
            ivc_channel_close(ch[idx]);
            ret = ivc_channel_open(r, names[idx], &o, idx & 1, 0, &ch[idx]);
            CHECK(known(ret));
            if (ret < 0)
                ch[idx] = NULL;
            break;
        }
        }
    }
out:
    for (int i = 0; i < 4; i++)
        ivc_channel_close(ch[i]);
    ivc_region_close(r);
    free(base);
    return 0;
}
