/* SPDX-License-Identifier: MIT */
/* libivshmem-channel: shared-memory layout and private structures. */
#ifndef IVC_INTERNAL_H
#define IVC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "ivshmem/channel.h"

/*
 * Region layout (all integers little-endian, all offsets from the region
 * start):
 *
 *   0     struct ivc_shm_hdr      64 bytes
 *   64    struct ivc_shm_dirent   IVC_MAX_CHANNELS x 64 bytes
 *   4096  heap: channel blocks, allocated by an atomic bump pointer
 *
 * Channel block (at dirent.offset, IVC_LINE aligned):
 *
 *   0          struct ivc_shm_ep ep[2]       one line per side, written by that side
 *   2 lines    ring 0 (side A -> side B): producer line, consumer line, data
 *   ...        ring 1 (side B -> side A)
 *
 * A ring's positions (head, tail) count bytes since the ring was created
 * (64 bits: they never wrap); the data offset is position & (size - 1).
 * Records are 8-byte aligned: an 8-byte header {len, tag} and the payload.
 * A record that would cross the end of the data area is preceded by a pad
 * record (len has IVC_REC_PAD set) that fills the area to its end.
 */
#define IVC_MAGIC           0x314e484353485649ull   /* "IVSHCHN1" */
#define IVC_LAYOUT_VERSION  1
#define IVC_HEAP_OFFSET     4096u
#define IVC_MAX_CHANNELS    63u
#define IVC_NAME_MAX        32u
#define IVC_LINE            128u    /* two cache lines: adjacent-line prefetch */
#define IVC_MIN_RING        256u
#define IVC_MAX_RING        (1u << 30)
#define IVC_DEFAULT_RING    (64u * 1024)
#define IVC_REC_HDR         8u
#define IVC_REC_PAD         0x80000000u
#define IVC_MAX_VEC         64u
#define IVC_MAX_PEERS       65536u

enum { IVC_ST_EMPTY = 0, IVC_ST_INIT = 1, IVC_ST_READY = 2 };

struct ivc_shm_hdr {
    _Atomic uint32_t state;         /* IVC_ST_*: the creation handshake */
    uint32_t version;
    uint64_t magic;
    uint64_t region_size;
    uint32_t max_channels;
    uint32_t heap_offset;
    _Atomic uint64_t heap_next;     /* bump allocator (offset) */
    uint8_t pad[24];
};

struct ivc_shm_dirent {
    _Atomic uint32_t state;         /* IVC_ST_*: free, being claimed, ready */
    uint32_t ring_size;
    uint64_t offset;
    char name[IVC_NAME_MAX];
    uint8_t pad[16];
};

struct ivc_shm_ep {
    _Atomic uint64_t epoch;         /* incarnation, incremented on open */
    _Atomic uint64_t heartbeat;     /* incremented while alive */
    _Atomic uint32_t attached;      /* 1 while open */
    _Atomic uint32_t doorbell;      /* 1: peer_id/vector ring this side */
    _Atomic uint32_t peer_id;
    _Atomic uint32_t vector;
    uint8_t pad[IVC_LINE - 32];
};

struct ivc_shm_prod {               /* written by the producer only */
    _Atomic uint64_t head;          /* end of the published records */
    _Atomic uint64_t space_at;      /* ring me when tail passes this */
    uint8_t pad[IVC_LINE - 16];
};

struct ivc_shm_cons {               /* written by the consumer only */
    _Atomic uint64_t tail;          /* end of the consumed records */
    _Atomic uint64_t wake_at;       /* ring me when head passes this */
    uint8_t pad[IVC_LINE - 16];
};

_Static_assert(sizeof(struct ivc_shm_hdr) == 64, "hdr");
_Static_assert(sizeof(struct ivc_shm_dirent) == 64, "dirent");
_Static_assert(64 + IVC_MAX_CHANNELS * 64 <= IVC_HEAP_OFFSET, "directory");
_Static_assert(sizeof(struct ivc_shm_ep) == IVC_LINE, "ep");

static inline uint64_t ivc_ring_bytes(uint32_t ring_size)
{
    return 2 * IVC_LINE + (uint64_t)ring_size;
}

static inline uint64_t ivc_block_bytes(uint32_t ring_size)
{
    return 2 * IVC_LINE + 2 * ivc_ring_bytes(ring_size);
}

struct ivc_peer {
    uint32_t n;                     /* vectors known */
    int fd[IVC_MAX_VEC];
};

struct ivc_region {
    uint8_t *base;
    uint64_t size;
    int transport;
    int own_id;
    int mem_fd;
    int sock;                       /* server connection, -1 */
    int dev_fd;                     /* /dev/ivshmemN, -1 */
    unsigned want_vectors;
    int vec_fd[IVC_MAX_VEC];        /* own vectors: readable when rung */
    struct ivc_peer **peers;        /* server/local: IVC_MAX_PEERS slots */
    bool server_gone;
    bool borrowed;                  /* base is the caller's mapping */
    bool presence;                  /* device: the driver's PEERS works */
    uint8_t *present;               /* presence: IVC_MAX_PEERS flags */
};

struct ivc_side_ring {              /* this side's view of one ring */
    struct ivc_shm_prod *prod;
    struct ivc_shm_cons *cons;
    uint8_t *data;
    uint64_t mask;
    uint32_t size;
};

struct ivc_channel {
    struct ivc_region *r;
    struct ivc_shm_ep *me, *other;
    struct ivc_side_ring tx, rx;
    int side;
    uint32_t ring_size;
    uint32_t max_msg;
    struct ivc_channel_opts opts;
    uint64_t epoch;                 /* own incarnation */
    uint64_t peer_epoch;            /* last seen incarnation of the other */
    /* producer */
    uint64_t tx_head;               /* published */
    uint64_t tx_pend;               /* committed, not published */
    uint64_t tx_tail_cache;
    uint64_t tx_resv_pos;           /* position of the open reservation */
    uint32_t tx_resv_len;
    bool tx_resv_open;
    /* consumer */
    uint64_t rx_tail;               /* published */
    uint64_t rx_next;               /* after the record peek returned */
    uint64_t rx_head_cache;
    bool rx_peeked;
    /* liveness */
    uint64_t hb_seen;
    uint64_t hb_changed_ns;
    bool peer_was_up;
    bool broken;
    struct ivc_stats st;
};

/* transport.c */
int ivc_transport_wait(struct ivc_region *r, unsigned vector, int timeout_ms);
int ivc_map_fd(struct ivc_region *r, int fd, uint64_t size, unsigned flags);
struct ivc_region *ivc_region_alloc(void);
int ivc_layout_attach(struct ivc_region *r, unsigned flags);
uint64_t ivc_now_ns(void);

#endif
