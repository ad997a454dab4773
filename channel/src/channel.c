/* SPDX-License-Identifier: MIT */
/* libivshmem-channel: region layout, SPSC rings, event suppression, waits. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

/* Bounds of every wait on something another process must do. */
#ifndef IVC_INIT_WAIT_NS        /* the fuzzer shortens it */
#define IVC_INIT_WAIT_NS    (2ull * 1000 * 1000 * 1000)
#endif
#define IVC_SLEEP_SLICE_MS  50      /* longest single sleep (heartbeat, lost wake-ups across threads) */
#define IVC_CAS_TRIES       100000

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

uint64_t ivc_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { .tv_sec = ns / 1000000000ull,
                           .tv_nsec = ns % 1000000000ull };

    nanosleep(&ts, NULL);
}

/* A position that moved from @old to @new passed @evt (virtio's vring_need_event). */
static inline bool crossed(uint64_t evt, uint64_t old, uint64_t new)
{
    return new - evt - 1 < new - old;
}

/* Relaxed single-copy loads of shared words a hostile peer may change. */
static inline uint64_t ld64(const void *p)
{
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

static inline void st64(void *p, uint64_t v)
{
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

static inline uint32_t align8(uint32_t n)
{
    return (n + 7u) & ~7u;
}

const char *ivc_strerror(int err)
{
    switch (-err) {
    case 0: return "success";
    case EAGAIN: return "would block (ring empty or full)";
    case EPROTO: return "the shared memory is inconsistent (hostile or corrupt peer)";
    case ECONNRESET: return "the other side restarted";
    case EPIPE: return "the other side is gone";
    case EMSGSIZE: return "message too large";
    case ENOSPC: return "no room in the region or its directory";
    case ENOENT: return "no such channel or doorbell";
    case ETIMEDOUT: return "timed out";
    case EINVAL: return "invalid argument";
    case ENOTSUP: return "not supported by this transport";
    default: return strerror(-err);
    }
}

/* ---------------------------------------------------------------- layout */

static struct ivc_shm_hdr *hdr_of(struct ivc_region *r)
{
    return (struct ivc_shm_hdr *)r->base;
}

static struct ivc_shm_dirent *dir_of(struct ivc_region *r)
{
    return (struct ivc_shm_dirent *)(r->base + 64);
}

static int layout_check(struct ivc_region *r)
{
    struct ivc_shm_hdr *h = hdr_of(r);

    if (ld64(&h->magic) != IVC_MAGIC)
        return -EPROTO;
    if (__atomic_load_n(&h->version, __ATOMIC_RELAXED) != IVC_LAYOUT_VERSION ||
        ld64(&h->region_size) != r->size ||
        __atomic_load_n(&h->max_channels, __ATOMIC_RELAXED) != IVC_MAX_CHANNELS ||
        __atomic_load_n(&h->heap_offset, __ATOMIC_RELAXED) != IVC_HEAP_OFFSET)
        return -EPROTO;
    return 0;
}

/*
 * Format or check the layout.  Creation handshake: the first opener that
 * moves state EMPTY -> INIT writes the header and then releases READY;
 * the others wait (bounded) for READY.
 */
int ivc_layout_attach(struct ivc_region *r, unsigned flags)
{
    struct ivc_shm_hdr *h = hdr_of(r);
    uint64_t deadline = 0;
    uint32_t st;

    if (r->size < IVC_HEAP_OFFSET + ivc_block_bytes(IVC_MIN_RING))
        return -ENOSPC;
    if (flags & IVC_F_READONLY)
        return layout_check(r);
    if (flags & IVC_F_FORMAT) {
        memset(r->base + 8, 0, IVC_HEAP_OFFSET - 8);
        atomic_store_explicit(&h->state, IVC_ST_EMPTY, memory_order_release);
    }
    for (;;) {
        st = atomic_load_explicit(&h->state, memory_order_acquire);
        if (st == IVC_ST_READY)
            return layout_check(r);
        if (st == IVC_ST_EMPTY && (flags & (IVC_F_CREATE | IVC_F_FORMAT))) {
            uint32_t expect = IVC_ST_EMPTY;

            if (atomic_compare_exchange_strong_explicit(&h->state, &expect,
                    IVC_ST_INIT, memory_order_acq_rel, memory_order_acquire)) {
                memset(r->base + 4, 0, IVC_HEAP_OFFSET - 4);
                h->version = IVC_LAYOUT_VERSION;
                h->magic = IVC_MAGIC;
                h->region_size = r->size;
                h->max_channels = IVC_MAX_CHANNELS;
                h->heap_offset = IVC_HEAP_OFFSET;
                atomic_store_explicit(&h->heap_next, IVC_HEAP_OFFSET,
                                      memory_order_relaxed);
                atomic_store_explicit(&h->state, IVC_ST_READY,
                                      memory_order_release);
                return 0;
            }
            continue;
        }
        if (st == IVC_ST_EMPTY)
            return -ENOENT;         /* not formatted, and not asked to */
        if (st != IVC_ST_INIT)
            return -EPROTO;
        if (!deadline)
            deadline = ivc_now_ns() + IVC_INIT_WAIT_NS;
        else if (ivc_now_ns() > deadline)
            return -ETIMEDOUT;
        sleep_ns(100000);
    }
}

unsigned ivc_region_max_channels(struct ivc_region *r)
{
    return IVC_MAX_CHANNELS;
}

static int pad_name(const char *name, char out[IVC_NAME_MAX])
{
    size_t n = name ? strlen(name) : 0;

    if (n == 0 || n >= IVC_NAME_MAX)
        return -EINVAL;
    memset(out, 0, IVC_NAME_MAX);
    memcpy(out, name, n);
    return 0;
}

static int heap_alloc(struct ivc_region *r, uint64_t bytes, uint64_t *off)
{
    struct ivc_shm_hdr *h = hdr_of(r);
    uint64_t cur = atomic_load_explicit(&h->heap_next, memory_order_relaxed);

    for (int i = 0; i < IVC_CAS_TRIES; i++) {
        uint64_t start = (cur + IVC_LINE - 1) & ~(uint64_t)(IVC_LINE - 1);

        if (cur < IVC_HEAP_OFFSET || start < cur || start > r->size ||
            bytes > r->size - start)
            return cur < IVC_HEAP_OFFSET || cur > r->size ? -EPROTO : -ENOSPC;
        if (atomic_compare_exchange_weak_explicit(&h->heap_next, &cur,
                start + bytes, memory_order_relaxed, memory_order_relaxed)) {
            *off = start;
            return 0;
        }
    }
    return -EBUSY;
}

/* Validate a ready directory entry: its ring size and block in the region. */
static int dirent_snapshot(struct ivc_region *r, struct ivc_shm_dirent *d,
                           uint32_t *ring_size, uint64_t *off)
{
    uint32_t rs = __atomic_load_n(&d->ring_size, __ATOMIC_RELAXED);
    uint64_t o = ld64(&d->offset);

    if (rs < IVC_MIN_RING || rs > IVC_MAX_RING || (rs & (rs - 1)))
        return -EPROTO;
    if (o < IVC_HEAP_OFFSET || (o & (IVC_LINE - 1)) || o > r->size ||
        ivc_block_bytes(rs) > r->size - o)
        return -EPROTO;
    *ring_size = rs;
    *off = o;
    return 0;
}

/*
 * Find or create @name.  Every opener scans the slots in order and waits
 * for a slot being claimed before passing it, so two creators of one name
 * cannot end in different slots.
 */
static int dir_lookup(struct ivc_region *r, const char name[IVC_NAME_MAX],
                      uint32_t ring_size, unsigned flags, uint32_t *rs,
                      uint64_t *off)
{
    struct ivc_shm_dirent *dir = dir_of(r);

    for (unsigned i = 0; i < IVC_MAX_CHANNELS; i++) {
        struct ivc_shm_dirent *d = &dir[i];
        uint64_t deadline = 0;
        uint32_t st;

        for (;;) {
            st = atomic_load_explicit(&d->state, memory_order_acquire);
            if (st != IVC_ST_INIT)
                break;
            if (!deadline)
                deadline = ivc_now_ns() + IVC_INIT_WAIT_NS;
            else if (ivc_now_ns() > deadline)
                return -ETIMEDOUT;
            sleep_ns(50000);
        }
        if (st == IVC_ST_READY) {
            char n[IVC_NAME_MAX];

            for (unsigned k = 0; k < IVC_NAME_MAX; k++)
                n[k] = __atomic_load_n(&d->name[k], __ATOMIC_RELAXED);
            if (memcmp(n, name, IVC_NAME_MAX) == 0)
                return dirent_snapshot(r, d, rs, off);
            continue;
        }
        if (st != IVC_ST_EMPTY)
            return -EPROTO;
        if (!(flags & IVC_F_CREATE))
            return -ENOENT;
        uint32_t expect = IVC_ST_EMPTY;
        if (!atomic_compare_exchange_strong_explicit(&d->state, &expect,
                IVC_ST_INIT, memory_order_acq_rel, memory_order_acquire)) {
            i--;                    /* someone claimed it: look again */
            continue;
        }
        uint64_t o = 0;
        int ret = heap_alloc(r, ivc_block_bytes(ring_size), &o);
        if (ret < 0) {
            /* give the slot back: nothing was published */
            atomic_store_explicit(&d->state, IVC_ST_EMPTY, memory_order_release);
            return ret;
        }
        memset(r->base + o, 0, ivc_block_bytes(ring_size));
        memcpy(d->name, name, IVC_NAME_MAX);
        d->ring_size = ring_size;
        d->offset = o;
        atomic_store_explicit(&d->state, IVC_ST_READY, memory_order_release);
        *rs = ring_size;
        *off = o;
        return 0;
    }
    return flags & IVC_F_CREATE ? -ENOSPC : -ENOENT;
}

/* --------------------------------------------------------------- channels */

static void ring_view(struct ivc_side_ring *v, uint8_t *ring, uint32_t size)
{
    v->prod = (struct ivc_shm_prod *)ring;
    v->cons = (struct ivc_shm_cons *)(ring + IVC_LINE);
    v->data = ring + 2 * IVC_LINE;
    v->size = size;
    v->mask = size - 1;
}

/* Attach this side: new incarnation, adopt the shared positions (checked). */
static int side_attach(struct ivc_channel *ch)
{
    struct ivc_region *r = ch->r;
    uint64_t head, tail;

    ch->broken = false;
    ch->tx_resv_open = false;
    ch->rx_peeked = false;
    /* producer of tx: continue after what was published */
    head = atomic_load_explicit(&ch->tx.prod->head, memory_order_relaxed);
    tail = atomic_load_explicit(&ch->tx.cons->tail, memory_order_acquire);
    if ((head & 7) || (tail & 7) || head - tail > ch->tx.size)
        return -EPROTO;
    ch->tx_head = ch->tx_pend = head;
    ch->tx_tail_cache = tail;
    atomic_store_explicit(&ch->tx.prod->space_at, head - 1, memory_order_relaxed);
    /* consumer of rx: continue after what was consumed */
    tail = atomic_load_explicit(&ch->rx.cons->tail, memory_order_relaxed);
    if (tail & 7)
        return -EPROTO;
    ch->rx_tail = ch->rx_next = ch->rx_head_cache = tail;
    atomic_store_explicit(&ch->rx.cons->wake_at, tail - 1, memory_order_relaxed);

    atomic_store_explicit(&ch->me->doorbell, 0, memory_order_relaxed);
    if (r->transport != IVC_TRANSPORT_PLAIN && ch->opts.vector < IVC_MAX_VEC &&
        r->vec_fd[ch->opts.vector] >= 0) {
        atomic_store_explicit(&ch->me->peer_id, (uint32_t)r->own_id,
                              memory_order_relaxed);
        atomic_store_explicit(&ch->me->vector, ch->opts.vector,
                              memory_order_relaxed);
        atomic_store_explicit(&ch->me->doorbell, 1, memory_order_relaxed);
    }
    /* The new epoch is visible before any record tagged with it. */
    ch->epoch = atomic_fetch_add_explicit(&ch->me->epoch, 1,
                                          memory_order_acq_rel) + 1;
    if ((uint32_t)ch->epoch == 0)   /* tag 0 means "never attached" */
        ch->epoch = atomic_fetch_add_explicit(&ch->me->epoch, 1,
                                              memory_order_acq_rel) + 1;
    atomic_store_explicit(&ch->me->attached, 1, memory_order_release);
    atomic_fetch_add_explicit(&ch->me->heartbeat, 1, memory_order_relaxed);
    ch->peer_epoch = atomic_load_explicit(&ch->other->epoch, memory_order_acquire);
    ch->hb_seen = atomic_load_explicit(&ch->other->heartbeat, memory_order_relaxed);
    ch->hb_changed_ns = ivc_now_ns();
    ch->peer_was_up = atomic_load_explicit(&ch->other->attached,
                                           memory_order_relaxed) == 1;
    return 0;
}

int ivc_channel_open(struct ivc_region *r, const char *name,
                     const struct ivc_channel_opts *opts, int side,
                     unsigned flags, struct ivc_channel **out)
{
    struct ivc_channel_opts o = { 0 };
    char padded[IVC_NAME_MAX];
    struct ivc_channel *ch;
    uint32_t rs = 0;
    uint64_t off = 0;
    int ret;

    if (!r || !out || (side != IVC_SIDE_A && side != IVC_SIDE_B) ||
        pad_name(name, padded) < 0)
        return -EINVAL;
    if (opts)
        o = *opts;
    if (!o.ring_size)
        o.ring_size = IVC_DEFAULT_RING;
    if (o.ring_size < IVC_MIN_RING || o.ring_size > IVC_MAX_RING ||
        (o.ring_size & (o.ring_size - 1)) || o.vector >= IVC_MAX_VEC ||
        o.wait_mode > IVC_WAIT_SLEEP)
        return -EINVAL;
    if (!o.spin_ns)
        o.spin_ns = IVC_DEFAULT_SPIN_NS;
    ret = dir_lookup(r, padded, o.ring_size, flags, &rs, &off);
    if (ret < 0)
        return ret;
    ch = calloc(1, sizeof(*ch));
    if (!ch)
        return -ENOMEM;
    ch->r = r;
    ch->side = side;
    ch->ring_size = rs;
    ch->max_msg = rs / 2 - IVC_REC_HDR;
    ch->opts = o;
    uint8_t *blk = r->base + off;
    struct ivc_shm_ep *ep = (struct ivc_shm_ep *)blk;
    uint8_t *ring0 = blk + 2 * IVC_LINE;
    uint8_t *ring1 = ring0 + ivc_ring_bytes(rs);
    ch->me = &ep[side];
    ch->other = &ep[!side];
    ring_view(&ch->tx, side == IVC_SIDE_A ? ring0 : ring1, rs);
    ring_view(&ch->rx, side == IVC_SIDE_A ? ring1 : ring0, rs);
    ret = side_attach(ch);
    if (ret < 0) {
        free(ch);
        return ret;
    }
    *out = ch;
    return 0;
}

void ivc_channel_close(struct ivc_channel *ch)
{
    if (!ch)
        return;
    atomic_store_explicit(&ch->me->attached, 2, memory_order_release);
    /* wake a peer sleeping on us, so it sees we left */
    if (atomic_load_explicit(&ch->other->doorbell, memory_order_relaxed) == 1)
        ivc_region_ring(ch->r,
            atomic_load_explicit(&ch->other->peer_id, memory_order_relaxed),
            atomic_load_explicit(&ch->other->vector, memory_order_relaxed));
    free(ch);
}

int ivc_channel_reset(struct ivc_channel *ch)
{
    return side_attach(ch);
}

size_t ivc_channel_max_msg(struct ivc_channel *ch)
{
    return ch->max_msg;
}

uint64_t ivc_epoch(struct ivc_channel *ch)
{
    return ch->epoch;
}

uint64_t ivc_peer_epoch(struct ivc_channel *ch)
{
    return atomic_load_explicit(&ch->other->epoch, memory_order_acquire);
}

void ivc_channel_stats(struct ivc_channel *ch, struct ivc_stats *st)
{
    *st = ch->st;
}

/* Single writer: a plain increment, no locked instruction. */
static inline void beat(struct ivc_channel *ch)
{
    atomic_store_explicit(&ch->me->heartbeat,
        atomic_load_explicit(&ch->me->heartbeat, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

void ivc_heartbeat(struct ivc_channel *ch)
{
    beat(ch);
}

/* Ring the other side's doorbell, if it has one (address checked). */
static void notify_other(struct ivc_channel *ch)
{
    if (atomic_load_explicit(&ch->other->doorbell, memory_order_relaxed) != 1)
        return;
    uint32_t peer = atomic_load_explicit(&ch->other->peer_id, memory_order_relaxed);
    uint32_t vec = atomic_load_explicit(&ch->other->vector, memory_order_relaxed);
    if (peer >= IVC_MAX_PEERS || vec >= IVC_MAX_VEC)
        return;
    if (ivc_region_ring(ch->r, peer, vec) == 0)
        ch->st.notifies++;
}

int ivc_peer_state(struct ivc_channel *ch)
{
    uint32_t att = atomic_load_explicit(&ch->other->attached, memory_order_acquire);
    uint64_t hb, now;

    if (att == 0)
        return IVC_PEER_NEVER;
    if (att != 1)
        return IVC_PEER_LEFT;
    /* the server's peer list: on the host, or a guest device's presence */
    if ((ch->r->transport == IVC_TRANSPORT_SERVER ||
         (ch->r->transport == IVC_TRANSPORT_DEVICE && ch->r->presence)) &&
        atomic_load_explicit(&ch->other->doorbell, memory_order_relaxed) == 1) {
        uint32_t peer = atomic_load_explicit(&ch->other->peer_id,
                                             memory_order_relaxed);

        ivc_region_poll_server(ch->r);
        if (ivc_region_peer_present(ch->r, peer) == 0 &&
            peer != (uint32_t)ch->r->own_id)
            return IVC_PEER_GONE;
    }
    if (ch->opts.peer_timeout_ns) {
        hb = atomic_load_explicit(&ch->other->heartbeat, memory_order_relaxed);
        now = ivc_now_ns();
        if (hb != ch->hb_seen) {
            ch->hb_seen = hb;
            ch->hb_changed_ns = now;
        } else if (now - ch->hb_changed_ns > ch->opts.peer_timeout_ns) {
            return IVC_PEER_GONE;
        }
    }
    return IVC_PEER_UP;
}

/*
 * The other side's incarnation changed since we last looked: the first
 * attach is silent, a restart is reported once (-ECONNRESET).
 */
static int check_peer_epoch(struct ivc_channel *ch)
{
    uint64_t e = atomic_load_explicit(&ch->other->epoch, memory_order_acquire);

    if (e == ch->peer_epoch)
        return 0;
    uint64_t old = ch->peer_epoch;
    ch->peer_epoch = e;
    if (old == 0)
        return 0;
    ch->st.resets_seen++;
    return -ECONNRESET;
}

/* --------------------------------------------------------------- producer */

/* Room for a record of @need bytes at the producer's position (tail re-read when short). */
static int tx_room(struct ivc_channel *ch, uint32_t need, bool *pad)
{
    uint64_t pos = ch->tx_pend;
    uint64_t off = pos & ch->tx.mask;
    uint64_t contig = ch->tx.size - off;
    uint64_t want = need <= contig ? need : contig + need;

    for (int pass = 0; pass < 2; pass++) {
        uint64_t used = pos - ch->tx_tail_cache;

        if (used > ch->tx.size) {
            ch->broken = true;
            return -EPROTO;
        }
        if (ch->tx.size - used >= want) {
            *pad = need > contig;
            return 0;
        }
        if (pass == 0) {
            uint64_t t = atomic_load_explicit(&ch->tx.cons->tail,
                                              memory_order_acquire);
            /* the consumer cannot give back what was never published */
            if (t - ch->tx_tail_cache > ch->tx_head - ch->tx_tail_cache ||
                (t & 7)) {
                ch->broken = true;
                return -EPROTO;
            }
            ch->tx_tail_cache = t;
        }
    }
    return -EAGAIN;
}

int ivc_reserve(struct ivc_channel *ch, size_t len, void **buf, unsigned flags)
{
    bool pad;
    int ret;

    if (ch->broken)
        return -EPROTO;
    if (len > ch->max_msg)
        return -EMSGSIZE;
    if (ch->tx_resv_open)
        return -EBUSY;
    uint32_t need = IVC_REC_HDR + align8((uint32_t)len);
    for (;;) {
        ret = check_peer_epoch(ch);
        if (ret < 0)
            return ret;
        ret = tx_room(ch, need, &pad);
        if (ret != -EAGAIN)
            break;
        if (!(flags & IVC_F_WAIT))
            return ret;
        if (ch->tx_pend != ch->tx_head)
            ivc_flush(ch);  /* the consumer must see the batch to make room */
        ret = ivc_wait_send(ch, len, UINT64_MAX);
        if (ret < 0)
            return ret;
    }
    if (ret < 0)
        return ret;
    if (pad) {
        uint64_t off = ch->tx_pend & ch->tx.mask;
        uint32_t contig = (uint32_t)(ch->tx.size - off);

        st64(ch->tx.data + off,
             (uint64_t)((contig - IVC_REC_HDR) | IVC_REC_PAD) |
             ((uint64_t)(uint32_t)ch->epoch << 32));
        ch->tx_pend += contig;
    }
    ch->tx_resv_pos = ch->tx_pend;
    ch->tx_resv_len = (uint32_t)len;
    ch->tx_resv_open = true;
    *buf = ch->tx.data + (ch->tx_pend & ch->tx.mask) + IVC_REC_HDR;
    return 0;
}

int ivc_commit(struct ivc_channel *ch, size_t len)
{
    if (!ch->tx_resv_open)
        return -EINVAL;
    if (len > ch->tx_resv_len)
        return -EMSGSIZE;
    st64(ch->tx.data + (ch->tx_resv_pos & ch->tx.mask),
         (uint64_t)len | ((uint64_t)(uint32_t)ch->epoch << 32));
    ch->tx_pend = ch->tx_resv_pos + IVC_REC_HDR + align8((uint32_t)len);
    ch->tx_resv_open = false;
    ch->st.sent++;
    return 0;
}

int ivc_flush(struct ivc_channel *ch)
{
    uint64_t old = ch->tx_head, new = ch->tx_pend;

    if (new == old)
        return 0;
    atomic_store_explicit(&ch->tx.prod->head, new, memory_order_release);
    ch->tx_head = new;
    beat(ch);
    /* Dekker with the consumer's arm: store head, fence, load wake_at. */
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t evt = atomic_load_explicit(&ch->tx.cons->wake_at,
                                        memory_order_relaxed);
    if (crossed(evt, old, new)) {
        notify_other(ch);
        return 1;
    }
    return 0;
}

int ivc_send(struct ivc_channel *ch, const void *buf, size_t len, unsigned flags)
{
    void *p;
    int ret = ivc_reserve(ch, len, &p, flags);

    if (ret < 0)
        return ret;
    memcpy(p, buf, len);
    ivc_commit(ch, len);
    if (!(flags & IVC_F_MORE))
        ivc_flush(ch);
    return 0;
}

/* --------------------------------------------------------------- consumer */

/* Give consumed bytes back; ring the producer if it sleeps for room. */
static void rx_publish_tail(struct ivc_channel *ch, uint64_t new)
{
    uint64_t old = ch->rx_tail;

    ch->rx_tail = new;
    atomic_store_explicit(&ch->rx.cons->tail, new, memory_order_release);
    beat(ch);
    /* Dekker with the producer's arm for room: store tail, fence, load. */
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t evt = atomic_load_explicit(&ch->rx.prod->space_at,
                                        memory_order_relaxed);
    if (crossed(evt, old, new))
        notify_other(ch);
}

/*
 * Find the next record at rx_tail: skip pads and records of a previous
 * incarnation of the producer (bounded: each step consumes at least 8
 * bytes of what was published, at most one ring's worth).
 */
static int rx_next_record(struct ivc_channel *ch, uint64_t *pos, uint32_t *len)
{
    uint64_t t = ch->rx_tail;
    uint64_t h = ch->rx_head_cache;
    bool skipped = false;
    int ret = -EAGAIN;

    /* a restart of the producer voids what its old incarnation left */
    if (atomic_load_explicit(&ch->other->epoch, memory_order_acquire) !=
        ch->peer_epoch && check_peer_epoch(ch) < 0)
        return -ECONNRESET;
    if (h == t) {
        h = atomic_load_explicit(&ch->rx.prod->head, memory_order_acquire);
        if (h - t > ch->rx.size || (h & 7))
            goto bad;
        ch->rx_head_cache = h;
        if (h == t)
            return check_peer_epoch(ch) < 0 ? -ECONNRESET : -EAGAIN;
    }
    for (unsigned steps = 0; t != h; steps++) {
        uint64_t avail = h - t;
        uint64_t off = t & ch->rx.mask;
        uint64_t contig = ch->rx.size - off;
        uint64_t w = ld64(ch->rx.data + off);
        uint32_t l = (uint32_t)w, tag = (uint32_t)(w >> 32);

        if (steps > ch->rx.size / IVC_REC_HDR || avail < IVC_REC_HDR)
            goto bad;
        if (l & IVC_REC_PAD) {
            if ((uint64_t)(l & ~IVC_REC_PAD) + IVC_REC_HDR != contig ||
                contig > avail)
                goto bad;
            t += contig;
            skipped = true;
            continue;
        }
        uint64_t rec = IVC_REC_HDR + (uint64_t)align8(l);
        if (l > ch->max_msg || rec > contig || rec > avail)
            goto bad;
        if (tag != (uint32_t)ch->peer_epoch) {
            if (check_peer_epoch(ch) < 0) {
                ret = -ECONNRESET;
                goto out;   /* told once; the record is looked at again */
            }
            if (tag != (uint32_t)ch->peer_epoch) {
                ch->st.dropped_stale++;
                t += rec;
                skipped = true;
                continue;
            }
        }
        *pos = t;
        *len = l;
        ret = 0;
        goto out;
    }
out:
    if (skipped && t != ch->rx_tail)
        rx_publish_tail(ch, t);    /* pads and stale records: back at once */
    return ret;
bad:
    ch->broken = true;
    return -EPROTO;
}

static int rx_peek(struct ivc_channel *ch, const void **buf, size_t *len)
{
    uint64_t pos = 0;
    uint32_t l = 0;
    int ret;

    if (ch->broken)
        return -EPROTO;
    ret = rx_next_record(ch, &pos, &l);
    if (ret < 0)
        return ret;
    *buf = ch->rx.data + (pos & ch->rx.mask) + IVC_REC_HDR;
    *len = l;
    ch->rx_next = pos + IVC_REC_HDR + align8(l);
    ch->rx_peeked = true;
    return 0;
}

int ivc_peek(struct ivc_channel *ch, const void **buf, size_t *len, unsigned flags)
{
    for (;;) {
        int ret = rx_peek(ch, buf, len);

        if (ret != -EAGAIN || !(flags & IVC_F_WAIT))
            return ret;
        ret = ivc_wait_recv(ch, UINT64_MAX);
        if (ret < 0)
            return ret;
    }
}

int ivc_release(struct ivc_channel *ch)
{
    if (!ch->rx_peeked)
        return -EINVAL;
    ch->rx_peeked = false;
    ch->st.received++;
    rx_publish_tail(ch, ch->rx_next);
    return 0;
}

ssize_t ivc_recv(struct ivc_channel *ch, void *buf, size_t cap, unsigned flags)
{
    const void *p;
    size_t len;
    int ret = ivc_peek(ch, &p, &len, flags);

    if (ret < 0)
        return ret;
    if (len > cap) {
        ch->rx_peeked = false;
        return -EMSGSIZE;
    }
    memcpy(buf, p, len);
    ivc_release(ch);
    return (ssize_t)len;
}

/* ------------------------------------------------------------------ waits */

static bool rx_ready(struct ivc_channel *ch)
{
    return atomic_load_explicit(&ch->rx.prod->head, memory_order_acquire) !=
           ch->rx_tail ||
           atomic_load_explicit(&ch->other->epoch, memory_order_relaxed) !=
           ch->peer_epoch;
}

static bool tx_ready(struct ivc_channel *ch, uint64_t need)
{
    uint64_t t = atomic_load_explicit(&ch->tx.cons->tail, memory_order_acquire);

    return ch->tx_pend - t + need <= ch->tx.size ||
           ch->tx_pend - t > ch->tx.size ||   /* inconsistent: let the caller see it */
           atomic_load_explicit(&ch->other->epoch, memory_order_relaxed) !=
           ch->peer_epoch;
}

int ivc_channel_fd(struct ivc_channel *ch)
{
    return ivc_region_vector_fd(ch->r, ch->opts.vector);
}

int ivc_channel_arm(struct ivc_channel *ch)
{
    atomic_store_explicit(&ch->rx.cons->wake_at, ch->rx_tail, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    return rx_ready(ch) ? 1 : 0;
}

/*
 * The other side left (closed, left the server, heartbeat stopped) after
 * we saw it up: reported once; a side that was never up since we
 * attached (not started yet, or left before) is waited for.
 */
static bool peer_departed(struct ivc_channel *ch)
{
    int ps = ivc_peer_state(ch);

    if (ps == IVC_PEER_UP) {
        ch->peer_was_up = true;
        return false;
    }
    if ((ps == IVC_PEER_GONE || ps == IVC_PEER_LEFT) && ch->peer_was_up) {
        ch->peer_was_up = false;
        return true;
    }
    return false;
}

/*
 * One wait: @send false waits for a message, true for @need bytes of room.
 * Spin (up to the budget), then arm the event index, re-check, sleep.
 */
static int wait_common(struct ivc_channel *ch, bool send, uint64_t need,
                       uint64_t timeout_ns)
{
    uint64_t start = ivc_now_ns(), now = start;
    uint64_t deadline = timeout_ns == UINT64_MAX || start + timeout_ns < start ?
                        UINT64_MAX : start + timeout_ns;
    uint64_t spin = ch->opts.wait_mode == IVC_WAIT_SPIN ? UINT64_MAX :
                    ch->opts.wait_mode == IVC_WAIT_SLEEP ? 0 : ch->opts.spin_ns;
    uint64_t spin_end = spin == UINT64_MAX || start + spin < start ?
                        UINT64_MAX : start + spin;
    uint64_t backoff = 10000;

#define READY() (send ? tx_ready(ch, need) : rx_ready(ch))
    if (ch->broken)
        return -EPROTO;
    if (READY())
        return 0;
    /* spin phase */
    for (unsigned i = 1; spin; i++) {
        cpu_relax();
        if (READY()) {
            ch->st.spins_won++;
            return 0;
        }
        if ((i & 63) == 0) {
            now = ivc_now_ns();
            if (now >= deadline)
                return -ETIMEDOUT;
            if (now >= spin_end)
                break;
            if ((i & 0xfffff) == 0) {
                ivc_heartbeat(ch);
                if (peer_departed(ch))
                    return -EPIPE;
            }
        }
    }
    /* sleep phase */
    for (;;) {
        if (send)
            atomic_store_explicit(&ch->tx.prod->space_at,
                                  ch->tx_pend + need - ch->tx.size - 1,
                                  memory_order_relaxed);
        else
            atomic_store_explicit(&ch->rx.cons->wake_at, ch->rx_tail,
                                  memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (READY())
            return 0;
        ivc_heartbeat(ch);
        if (peer_departed(ch))
            return -EPIPE;
        now = ivc_now_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        uint64_t left = deadline - now;
        ch->st.sleeps++;
        if (ch->r->transport != IVC_TRANSPORT_PLAIN &&
            ivc_region_vector_fd(ch->r, ch->opts.vector) >= 0) {
            uint64_t ms = left / 1000000 + 1;
            int ret = ivc_transport_wait(ch->r, ch->opts.vector,
                                         ms > IVC_SLEEP_SLICE_MS ?
                                         IVC_SLEEP_SLICE_MS : (int)ms);
            if (ret < 0 && ret != -EINTR)
                return ret;
        } else {
            sleep_ns(backoff < left ? backoff : left);
            if (backoff < 1000000)
                backoff *= 2;
        }
    }
#undef READY
}

int ivc_wait_recv(struct ivc_channel *ch, uint64_t timeout_ns)
{
    return wait_common(ch, false, 0, timeout_ns);
}

int ivc_wait_send(struct ivc_channel *ch, size_t len, uint64_t timeout_ns)
{
    if (len > ch->max_msg)
        return -EMSGSIZE;
    /* worst case with a pad record before it */
    uint64_t need = IVC_REC_HDR + align8((uint32_t)len);
    uint64_t off = ch->tx_pend & ch->tx.mask;
    if (need > ch->tx.size - off)
        need += ch->tx.size - off;
    return wait_common(ch, true, need, timeout_ns);
}
