/* SPDX-License-Identifier: GPL-2.0-or-later */
/* libFuzzer target: any server message stream through IvshmemProto. */

/*
 * The input is a series of records; each becomes one message (an int64
 * value, with or without a fresh fd of some kind) fed to the decoder the
 * device and the client use.  A model of protocol version 0 predicts what
 * every message must do (return value, actions, fds kept or closed, the
 * peer table), and every difference aborts.  At the end of every input
 * (and on a "reconnect" record) the decoder is cleaned up and no fd the
 * harness created may still be open.
 *
 * Record: one flag byte, then the value bytes.
 *   flags & 3: value = next byte | -1 | next LE u16 | next 8 bytes decoded
 *   flags & 4: attach an fd, of the kind (flags >> 3) & 3:
 *              eventfd, pipe read end, memfd, /dev/null
 *   flags & 32: the action callback rejects what this message causes
 *   flags & 64: query the peer table at odd places
 *   flags & 128: drop the connection first (cleanup and init again)
 * The first byte of the input picks max_vectors.
 */

#include "qemu/osdep.h"
#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include "qapi/error.h"
#include "qemu/ivshmem-proto.h"
#include "fuzz.h"

#define MAX_MESSAGES 2048

#define CHECK(cond) do {                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "fuzz-proto: %s:%d: check failed: %s\n",    \
                    __FILE__, __LINE__, #cond);                         \
            abort();                                                    \
        }                                                               \
    } while (0)

typedef struct ModelVector {
    int fd;
    ino_t ino;
} ModelVector;

typedef enum ModelState {
    M_WAIT_VERSION, M_WAIT_ID, M_WAIT_SHM, M_RUNNING,
} ModelState;

/* The model keeps every known peer, with the vectors we keep of it. */
typedef struct Harness {
    IvshmemProto proto;
    uint32_t max_vectors;
    ModelState state;
    uint16_t own_id;
    GHashTable *peers;          /* peer ID -> GArray of ModelVector */
    int shm_fd;
    /* the message being fed */
    int64_t value;
    int fd;
    ino_t fd_ino;
    bool reject;
    bool fd_kept;
    bool cleaning;
    int adds, dels;
    uint32_t dels_expected_peer;
    uint32_t next_del;
} Harness;

static const uint32_t max_vectors_choice[8] = {
    0, 1, 2, 3, 4, 8, 64, IVSHMEM_MAX_VECTORS + 7,
};

static ino_t fd_inode(int fd)
{
    struct stat st;

    CHECK(fstat(fd, &st) == 0);
    return st.st_ino;
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static int count_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    CHECK(dir);
    while ((de = readdir(dir))) {
        n += de->d_name[0] != '.';
    }
    closedir(dir);
    return n - 1;               /* the directory's own fd */
}

static int make_fd(unsigned kind)
{
    int p[2], fd;

    switch (kind) {
    case 0:
        return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    case 1:
        if (pipe2(p, O_CLOEXEC) < 0) {
            return -1;
        }
        close(p[1]);
        return p[0];
    case 2:
        fd = memfd_create("fuzz-shm", MFD_CLOEXEC);
        if (fd >= 0 && ftruncate(fd, 4096) < 0) {
            close(fd);
            return -1;
        }
        return fd;
    default:
        return open("/dev/null", O_RDWR | O_CLOEXEC);
    }
}

static GArray *model_peer(Harness *h, uint32_t id)
{
    return g_hash_table_lookup(h->peers, GUINT_TO_POINTER(id));
}

static void free_vectors(gpointer p)
{
    g_array_free(p, true);
}

static bool on_action(void *opaque, const IvshmemAction *a, Error **errp)
{
    Harness *h = opaque;
    GArray *vecs;
    ModelVector *mv;

    switch (a->kind) {
    case IVSHMEM_ACTION_OWN_ID:
        CHECK(h->state == M_WAIT_ID && a->fd == -1 && a->peer == h->value);
        return true;            /* cannot be rejected */
    case IVSHMEM_ACTION_SHM:
        CHECK(h->state == M_WAIT_SHM && h->value == IVSHMEM_MSG_SHM);
        CHECK(a->fd >= 0 && a->fd == h->fd && fd_inode(a->fd) == h->fd_ino);
        CHECK(h->shm_fd == -1);
        if (h->reject) {
            error_setg(errp, "fuzz: shared memory rejected");
            return false;
        }
        h->shm_fd = a->fd;
        h->fd_kept = true;
        return true;
    case IVSHMEM_ACTION_ADD_VECTOR:
        CHECK(h->state == M_RUNNING && a->peer == h->value);
        CHECK(a->fd >= 0 && a->fd == h->fd && fd_inode(a->fd) == h->fd_ino);
        CHECK(a->own == (a->peer == h->own_id));
        CHECK(h->adds++ == 0);
        vecs = model_peer(h, a->peer);
        CHECK(a->vector == (vecs ? vecs->len : 0));
        CHECK(a->vector < h->max_vectors);
        if (h->reject) {
            error_setg(errp, "fuzz: vector rejected");
            return false;
        }
        if (!vecs) {
            vecs = g_array_new(false, false, sizeof(ModelVector));
            g_hash_table_insert(h->peers, GUINT_TO_POINTER(a->peer), vecs);
        }
        g_array_append_val(vecs, ((ModelVector) { a->fd, h->fd_ino }));
        h->fd_kept = true;
        return true;
    case IVSHMEM_ACTION_DEL_VECTOR:
        if (h->cleaning && a->peer != h->dels_expected_peer) {
            /* cleanup: peers in ascending order, each one completely */
            vecs = model_peer(h, h->dels_expected_peer);
            CHECK(!vecs || h->next_del == vecs->len);
            CHECK(h->dels_expected_peer == UINT32_MAX ||
                  a->peer > h->dels_expected_peer);
            h->dels_expected_peer = a->peer;
            h->next_del = 0;
        }
        vecs = model_peer(h, a->peer);
        CHECK(vecs && a->peer == h->dels_expected_peer);
        CHECK(a->own == (h->state == M_RUNNING && a->peer == h->own_id));
        CHECK(a->vector == h->next_del && a->vector < vecs->len);
        mv = &g_array_index(vecs, ModelVector, a->vector);
        CHECK(a->fd == mv->fd && fd_is_open(a->fd));
        CHECK(fd_inode(a->fd) == mv->ino);
        h->next_del++;
        h->dels++;
        return true;
    }
    CHECK(!"unknown action kind");
    return false;
}

/* The decoder's view of @id must be the model's. */
static void compare_peer(Harness *h, uint32_t id)
{
    GArray *vecs = model_peer(h, id);
    uint32_t n = vecs ? vecs->len : 0;
    uint32_t v;

    CHECK(ivshmem_proto_peer_vectors(&h->proto, id) == n);
    for (v = 0; v < n; v++) {
        CHECK(ivshmem_proto_peer_fd(&h->proto, id, v) ==
              g_array_index(vecs, ModelVector, v).fd);
    }
    CHECK(ivshmem_proto_peer_fd(&h->proto, id, n) == -1);
    CHECK(ivshmem_proto_peer_fd(&h->proto, id, UINT32_MAX) == -1);
}

/* The decoder knows exactly the model's peers, with the same vectors. */
static void compare_all(Harness *h)
{
    g_autoptr(GArray) ids = ivshmem_proto_peer_ids(&h->proto);
    guint i;

    CHECK(ids->len == g_hash_table_size(h->peers));
    for (i = 0; i < ids->len; i++) {
        uint32_t id = g_array_index(ids, uint32_t, i);

        CHECK(id < IVSHMEM_MAX_PEERS && model_peer(h, id));
        CHECK(i == 0 || g_array_index(ids, uint32_t, i - 1) < id);
        compare_peer(h, id);
    }
    CHECK(ivshmem_proto_peer_vectors(&h->proto, IVSHMEM_MAX_PEERS) == 0);
    CHECK(ivshmem_proto_peer_fd(&h->proto, UINT32_MAX, 0) == -1);
}

static void harness_init(Harness *h, uint32_t max_vectors)
{
    h->max_vectors = MIN(max_vectors, IVSHMEM_MAX_VECTORS);
    h->state = M_WAIT_VERSION;
    h->peers = g_hash_table_new_full(NULL, NULL, NULL, free_vectors);
    h->shm_fd = -1;
    h->dels_expected_peer = UINT32_MAX;
    ivshmem_proto_init(&h->proto, max_vectors, on_action, h);
}

static void harness_cleanup(Harness *h)
{
    GHashTableIter it;
    gpointer vecs;
    uint32_t total = 0;

    compare_all(h);
    g_hash_table_iter_init(&it, h->peers);
    while (g_hash_table_iter_next(&it, NULL, &vecs)) {
        total += ((GArray *)vecs)->len;
    }
    h->cleaning = true;
    h->dels = 0;
    h->next_del = 0;
    h->dels_expected_peer = UINT32_MAX;
    ivshmem_proto_cleanup(&h->proto);
    CHECK((uint32_t)h->dels == total);
    CHECK(h->proto.peers == NULL);
    ivshmem_proto_cleanup(&h->proto);   /* twice is harmless */
    CHECK(ivshmem_proto_peer_vectors(&h->proto, 0) == 0);
    CHECK(ivshmem_proto_peer_fd(&h->proto, 0, 0) == -1);
    g_array_unref(ivshmem_proto_peer_ids(&h->proto));
    if (h->shm_fd >= 0) {
        close(h->shm_fd);
    }
    g_hash_table_destroy(h->peers);
    h->cleaning = false;
}

/* What version 0 says the message must do; compare with the decoder. */
static void feed_one(Harness *h, int64_t value, int fd, bool reject)
{
    Error *err = NULL;
    ModelState before = h->state;
    GArray *vecs = NULL;
    uint32_t nvec = 0;
    bool in_range = value >= 0 && value < IVSHMEM_MAX_PEERS;
    bool expect_ok, ok;

    h->value = value;
    h->fd = fd;
    h->fd_ino = fd >= 0 ? fd_inode(fd) : 0;
    h->reject = reject;
    h->fd_kept = false;
    h->adds = 0;
    h->dels = 0;
    h->next_del = 0;
    h->dels_expected_peer = in_range ? value : UINT32_MAX;
    if (in_range) {
        vecs = model_peer(h, value);
        nvec = vecs ? vecs->len : 0;
    }

    ok = ivshmem_proto_feed(&h->proto, value, fd, &err);
    CHECK(ok == (err == NULL));
    error_free(err);

    switch (before) {
    case M_WAIT_VERSION:
        expect_ok = fd < 0 && value == IVSHMEM_PROTOCOL_VERSION;
        h->state = expect_ok ? M_WAIT_ID : before;
        break;
    case M_WAIT_ID:
        expect_ok = fd < 0 && in_range;
        if (expect_ok) {
            h->own_id = value;
            h->state = M_WAIT_SHM;
        }
        break;
    case M_WAIT_SHM:
        expect_ok = fd >= 0 && value == IVSHMEM_MSG_SHM && !reject;
        h->state = expect_ok ? M_RUNNING : before;
        break;
    default:
        if (!in_range) {
            expect_ok = false;
        } else if (fd >= 0) {
            /* a vector beyond max_vectors is closed, the peer still known */
            expect_ok = nvec >= h->max_vectors || !reject;
            CHECK(h->adds == (nvec < h->max_vectors));
            if (expect_ok && !model_peer(h, value)) {
                g_hash_table_insert(h->peers, GUINT_TO_POINTER(value),
                    g_array_new(false, false, sizeof(ModelVector)));
            }
        } else {
            /* a known peer left: every vector is unwired and closed */
            expect_ok = vecs != NULL;
            CHECK((uint32_t)h->dels == (ok ? nvec : 0));
            if (ok && vecs) {
                g_hash_table_remove(h->peers, GUINT_TO_POINTER(value));
            }
        }
        break;
    }
    CHECK(ok == expect_ok);
    CHECK(h->state == (ModelState)h->proto.state);
    if (fd >= 0 && !h->fd_kept) {
        CHECK(!fd_is_open(fd));     /* ownership passed: closed */
    }
    if (fd >= 0 && h->fd_kept) {
        CHECK(fd_is_open(fd) && fd_inode(fd) == h->fd_ino);
    }
    if (in_range) {
        compare_peer(h, value);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    int fds_before = count_open_fds();
    uint32_t max_vectors;
    Harness h = { 0 };
    int msgs = 0;

    if (size < 1) {
        return 0;
    }
    max_vectors = max_vectors_choice[*data++ & 7];
    harness_init(&h, max_vectors);

    while (data < end && msgs++ < MAX_MESSAGES) {
        uint8_t flags = *data++;
        uint8_t buf[IVSHMEM_MSG_SIZE];
        int64_t value;
        int fd = -1;

        switch (flags & 3) {
        case 0:
            if (data >= end) {
                goto out;
            }
            value = *data++;
            break;
        case 1:
            value = IVSHMEM_MSG_SHM;
            break;
        case 2:
            if (end - data < 2) {
                goto out;
            }
            value = data[0] | data[1] << 8;
            data += 2;
            break;
        default:
            if (end - data < IVSHMEM_MSG_SIZE) {
                goto out;
            }
            value = ivshmem_proto_decode(data);
            data += IVSHMEM_MSG_SIZE;
            break;
        }
        ivshmem_proto_encode(value, buf);
        CHECK(ivshmem_proto_decode(buf) == value);

        if (flags & 128) {
            harness_cleanup(&h);
            harness_init(&h, max_vectors);
        }
        if (flags & 4) {
            fd = make_fd((flags >> 3) & 3);
            if (fd < 0) {
                break;          /* out of fds: stop this input */
            }
        }
        feed_one(&h, value, fd, flags & 32);
        if (flags & 64) {
            compare_all(&h);
        }
    }
out:
    harness_cleanup(&h);
    CHECK(count_open_fds() == fds_before);
    return 0;
}
