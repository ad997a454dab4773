/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Unit tests of the ivshmem server protocol decoder (util/ivshmem-proto.c). */

/*
 * Each case feeds a scripted server stream to IvshmemProto with real
 * eventfds and memfds, and asserts exactly what the decoder reports: the
 * result and error text of every message, every action (kind, peer,
 * vector, own, fd) in order, and the peer table afterwards.  Every fd the
 * decoder must keep is checked to be still open and still the same file;
 * every fd it must close is checked to be closed, and its number is then
 * taken by a sentinel, so that closing it a second time shows at teardown.
 * After each case the process has exactly the fds it had before.
 */

#include "qemu/osdep.h"
#include <dirent.h>
#include <sys/eventfd.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/memfd.h"
#include "qemu/ivshmem-proto.h"

typedef struct Seen {
    IvshmemAction a;
    bool fd_open;               /* a.fd was open when it was reported */
} Seen;

typedef struct Fixture {
    IvshmemProto proto;
    GArray *seen;               /* Seen, in the order reported */
    bool reject;                /* the callback rejects reject_kind */
    IvshmemActionKind reject_kind;
    int shm_fd;                 /* the test owns it once reported */
    int devnull;                /* what sentinels are duplicated from */
    GArray *sentinels;          /* numbers of fds the decoder closed */
    GHashTable *tags;           /* fd made by the test -> what it is */
    uint64_t next_tag;
    GArray *fds_before;         /* open fds when the case started */
} Fixture;

/* OWN_ID comes before the session runs, so its .own is false. */
#define OWN_ID(p) \
    { .kind = IVSHMEM_ACTION_OWN_ID, .peer = (p), .fd = -1 }
#define SHM(f) \
    { .kind = IVSHMEM_ACTION_SHM, .fd = (f) }
#define ADD(p, v, o, f) \
    { .kind = IVSHMEM_ACTION_ADD_VECTOR, .peer = (p), .vector = (v), \
      .own = (o), .fd = (f) }
#define DEL(p, v, o, f) \
    { .kind = IVSHMEM_ACTION_DEL_VECTOR, .peer = (p), .vector = (v), \
      .own = (o), .fd = (f) }

static const char *const kind_names[] = {
    [IVSHMEM_ACTION_OWN_ID] = "OWN_ID",
    [IVSHMEM_ACTION_SHM] = "SHM",
    [IVSHMEM_ACTION_ADD_VECTOR] = "ADD_VECTOR",
    [IVSHMEM_ACTION_DEL_VECTOR] = "DEL_VECTOR",
};

static bool record_action(void *opaque, const IvshmemAction *a, Error **errp)
{
    Fixture *t = opaque;
    Seen s = {
        .a = *a,
        .fd_open = a->fd >= 0 && fcntl(a->fd, F_GETFD) != -1,
    };

    g_array_append_val(t->seen, s);
    if (t->reject && a->kind == t->reject_kind) {
        error_setg(errp, "test rejects %s", kind_names[a->kind]);
        return false;
    }
    return true;
}

static gint compare_int(gconstpointer a, gconstpointer b)
{
    return *(const int *)a - *(const int *)b;
}

static GArray *open_fds(void)
{
    GArray *fds = g_array_new(false, false, sizeof(int));
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *de;
    int fd;

    g_assert_nonnull(dir);
    while ((de = readdir(dir))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        g_assert_cmpint(qemu_strtoi(de->d_name, NULL, 10, &fd), ==, 0);
        if (fd != dirfd(dir)) {
            g_array_append_val(fds, fd);
        }
    }
    closedir(dir);
    g_array_sort(fds, compare_int);
    return fds;
}

/* What tells the test's fds apart: an eventfd's counter, a memfd's inode. */
static uint64_t fd_tag(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *info = NULL;
    const char *count;
    struct stat st;

    g_assert_true(g_file_get_contents(path, &info, NULL, NULL));
    count = strstr(info, "eventfd-count:");
    if (count) {
        return g_ascii_strtoull(count + strlen("eventfd-count:"), NULL, 16);
    }
    g_assert_cmpint(fstat(fd, &st), ==, 0);
    return st.st_ino;
}

static int new_eventfd(Fixture *t)
{
    /* a distinct counter value names it; memfd inodes are far below */
    uint64_t tag = (1ULL << 40) + t->next_tag++;
    int fd = eventfd(0, EFD_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, &tag, sizeof(tag)), ==, sizeof(tag));
    g_hash_table_insert(t->tags, GINT_TO_POINTER(fd), g_memdup2(&tag,
                        sizeof(tag)));
    return fd;
}

static int new_memfd(Fixture *t)
{
    int fd = memfd_create("test-ivshmem-proto", MFD_CLOEXEC);
    uint64_t tag;

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 4096), ==, 0);
    tag = fd_tag(fd);
    g_hash_table_insert(t->tags, GINT_TO_POINTER(fd), g_memdup2(&tag,
                        sizeof(tag)));
    return fd;
}

/* @fd is still the fd the test made under that number. */
static void assert_open(Fixture *t, int fd)
{
    uint64_t *tag = g_hash_table_lookup(t->tags, GINT_TO_POINTER(fd));

    g_assert_cmpint(fcntl(fd, F_GETFD), ==, FD_CLOEXEC);
    g_assert_nonnull(tag);
    g_assert_cmphex(fd_tag(fd), ==, *tag);
}

/* The decoder closed @fd; a sentinel takes its number from now on. */
static void assert_closed(Fixture *t, int fd)
{
    int ret = fcntl(fd, F_GETFD);
    int err = errno;

    g_assert_cmpint(ret, ==, -1);
    g_assert_cmpint(err, ==, EBADF);
    g_hash_table_remove(t->tags, GINT_TO_POINTER(fd));
    g_assert_cmpint(dup2(t->devnull, fd), ==, fd);
    g_array_append_val(t->sentinels, fd);
}

static void expect_actions(Fixture *t, const IvshmemAction *want, guint n)
{
    guint i;

    if (t->seen->len != n) {
        for (i = 0; i < t->seen->len; i++) {
            const IvshmemAction *a = &g_array_index(t->seen, Seen, i).a;

            g_test_message("action %u: %s peer %u vector %u own %d fd %d", i,
                           kind_names[a->kind], a->peer, a->vector, a->own,
                           a->fd);
        }
    }
    g_assert_cmpuint(t->seen->len, ==, n);
    for (i = 0; i < n; i++) {
        const Seen *s = &g_array_index(t->seen, Seen, i);

        g_assert_cmpstr(kind_names[s->a.kind], ==, kind_names[want[i].kind]);
        g_assert_cmpuint(s->a.peer, ==, want[i].peer);
        g_assert_cmpuint(s->a.vector, ==, want[i].vector);
        g_assert_cmpint(s->a.own, ==, want[i].own);
        g_assert_cmpint(s->a.fd, ==, want[i].fd);
        g_assert_cmpint(s->fd_open, ==, want[i].fd >= 0);
    }
    g_array_set_size(t->seen, 0);
}

#define EXPECT(t, ...) \
    expect_actions((t), (const IvshmemAction[]) { __VA_ARGS__ }, \
                   sizeof((const IvshmemAction[]) { __VA_ARGS__ }) / \
                   sizeof(IvshmemAction))
#define EXPECT_NONE(t) expect_actions((t), NULL, 0)

static void feed_ok(Fixture *t, int64_t value, int fd)
{
    Error *err = NULL;
    bool ok = ivshmem_proto_feed(&t->proto, value, fd, &err);

    if (err) {
        g_test_message("unexpected error: %s", error_get_pretty(err));
    }
    g_assert_null(err);
    g_assert_true(ok);
}

static void feed_err(Fixture *t, int64_t value, int fd, const char *msg)
{
    Error *err = NULL;

    g_assert_false(ivshmem_proto_feed(&t->proto, value, fd, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==, msg);
    error_free(err);
}

/* The decoder's table holds @n vectors of @peer, @fds, of @received sent. */
static void assert_peer(Fixture *t, uint32_t peer, uint32_t n,
                        uint32_t received, const int *fds)
{
    uint32_t v;

    g_assert_cmpuint(ivshmem_proto_peer_vectors(&t->proto, peer), ==, n);
    g_assert_cmpuint(ivshmem_proto_peer_received(&t->proto, peer), ==,
                     received);
    for (v = 0; v < n; v++) {
        g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, peer, v), ==,
                        fds[v]);
        assert_open(t, fds[v]);
    }
    g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, peer, n), ==, -1);
    g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, peer, UINT16_MAX), ==,
                    -1);
    g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, peer, UINT32_MAX), ==,
                    -1);
}

static void assert_ids(Fixture *t, const uint32_t *want, guint n)
{
    g_autoptr(GArray) ids = ivshmem_proto_peer_ids(&t->proto);
    guint i;

    g_assert_cmpuint(ids->len, ==, n);
    for (i = 0; i < n; i++) {
        g_assert_cmpuint(g_array_index(ids, uint32_t, i), ==, want[i]);
    }
}

#define IDS(t, ...) \
    assert_ids((t), (const uint32_t[]) { __VA_ARGS__ }, \
               sizeof((const uint32_t[]) { __VA_ARGS__ }) / sizeof(uint32_t))
#define NO_IDS(t) assert_ids((t), NULL, 0)

/* Version 0, own ID @own, the shared memory: the setup every server sends. */
static void do_setup(Fixture *t, uint16_t own)
{
    int shm = new_memfd(t);

    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_VERSION);
    feed_ok(t, IVSHMEM_PROTOCOL_VERSION, -1);
    EXPECT_NONE(t);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_ID);
    feed_ok(t, own, -1);
    EXPECT(t, OWN_ID(own));
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_SHM);
    g_assert_cmpuint(t->proto.own_id, ==, own);
    feed_ok(t, IVSHMEM_MSG_SHM, shm);
    EXPECT(t, SHM(shm));
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_RUNNING);
    assert_open(t, shm);
    t->shm_fd = shm;
}

/* The test is done with the shared memory of this session. */
static void close_shm(Fixture *t)
{
    if (t->shm_fd >= 0) {
        assert_open(t, t->shm_fd);
        close(t->shm_fd);
        g_hash_table_remove(t->tags, GINT_TO_POINTER(t->shm_fd));
        t->shm_fd = -1;
    }
}

/*
 * Send @n vectors of @peer, each an eventfd returned in @fds: the first
 * @kept must stay open, the others must be closed at once (checked before
 * the next one is made, which would take the number of a closed one).
 */
static void send_vectors(Fixture *t, uint16_t peer, int *fds, int n, int kept)
{
    int i;

    for (i = 0; i < n; i++) {
        fds[i] = new_eventfd(t);
        feed_ok(t, peer, fds[i]);
        if (i < kept) {
            assert_open(t, fds[i]);
        } else {
            assert_closed(t, fds[i]);
        }
    }
}

static void fixture_setup(Fixture *t, gconstpointer data)
{
    t->fds_before = open_fds();
    t->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    g_assert_cmpint(t->devnull, >=, 0);
    t->seen = g_array_new(false, false, sizeof(Seen));
    t->sentinels = g_array_new(false, false, sizeof(int));
    t->tags = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    t->shm_fd = -1;
    ivshmem_proto_init(&t->proto, GPOINTER_TO_UINT(data), record_action, t);
}

static void fixture_teardown(Fixture *t, gconstpointer data)
{
    g_autoptr(GArray) after = NULL;
    struct stat null_st, st;
    guint i;

    /* what a case left in the table goes as cleanup documents */
    EXPECT_NONE(t);
    ivshmem_proto_cleanup(&t->proto);
    for (i = 0; i < t->seen->len; i++) {
        const Seen *s = &g_array_index(t->seen, Seen, i);

        g_assert_cmpint(s->a.kind, ==, IVSHMEM_ACTION_DEL_VECTOR);
        g_assert_true(s->fd_open);
        assert_closed(t, s->a.fd);
    }
    g_assert_null(t->proto.peers);
    /* the caller owns the shared memory: never closed by the decoder */
    close_shm(t);

    /* no fd the decoder closed was closed again */
    g_assert_cmpint(fstat(t->devnull, &null_st), ==, 0);
    for (i = 0; i < t->sentinels->len; i++) {
        int fd = g_array_index(t->sentinels, int, i);

        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpuint(st.st_dev, ==, null_st.st_dev);
        g_assert_cmpuint(st.st_ino, ==, null_st.st_ino);
        close(fd);
    }
    close(t->devnull);

    /* ... and none was left open */
    after = open_fds();
    g_assert_cmpuint(after->len, ==, t->fds_before->len);
    for (i = 0; i < after->len; i++) {
        g_assert_cmpint(g_array_index(after, int, i), ==,
                        g_array_index(t->fds_before, int, i));
    }
    g_array_free(t->fds_before, true);
    g_array_free(t->seen, true);
    g_array_free(t->sentinels, true);
    g_hash_table_destroy(t->tags);
}

/* The wire format: signed 64-bit little-endian. */
static void test_codec(void)
{
    static const struct {
        int64_t value;
        uint8_t wire[IVSHMEM_MSG_SIZE];
    } cases[] = {
        { 0, { 0, 0, 0, 0, 0, 0, 0, 0 } },
        { 1, { 1, 0, 0, 0, 0, 0, 0, 0 } },
        { IVSHMEM_MSG_SHM, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff } },
        { 65535, { 0xff, 0xff, 0, 0, 0, 0, 0, 0 } },
        { 65536, { 0, 0, 1, 0, 0, 0, 0, 0 } },
        { 0x0102030405060708LL, { 8, 7, 6, 5, 4, 3, 2, 1 } },
        { INT64_MIN, { 0, 0, 0, 0, 0, 0, 0, 0x80 } },
        { INT64_MAX, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f } },
    };
    uint8_t buf[IVSHMEM_MSG_SIZE];
    size_t i;

    g_assert_cmpint(IVSHMEM_MSG_SIZE, ==, 8);
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        memset(buf, 0x5a, sizeof(buf));
        ivshmem_proto_encode(cases[i].value, buf);
        g_assert_cmpmem(buf, sizeof(buf), cases[i].wire, IVSHMEM_MSG_SIZE);
        g_assert_cmpint(ivshmem_proto_decode(cases[i].wire), ==,
                        cases[i].value);
    }
}

/*
 * A normal session with two vectors: setup, the other peers' vectors,
 * then our own, and cleanup unwiring everything in ascending peer order.
 */
static void test_setup(Fixture *t, gconstpointer data)
{
    int p1[2], p2[2], own[2];
    int i;

    g_assert_cmpuint(t->proto.max_vectors, ==, 2);
    do_setup(t, 3);
    NO_IDS(t);

    send_vectors(t, 1, p1, 2, 2);
    EXPECT(t, ADD(1, 0, false, p1[0]), ADD(1, 1, false, p1[1]));
    send_vectors(t, 2, p2, 2, 2);
    EXPECT(t, ADD(2, 0, false, p2[0]), ADD(2, 1, false, p2[1]));
    send_vectors(t, 3, own, 2, 2);
    EXPECT(t, ADD(3, 0, true, own[0]), ADD(3, 1, true, own[1]));

    IDS(t, 1, 2, 3);
    assert_peer(t, 1, 2, 2, p1);
    assert_peer(t, 2, 2, 2, p2);
    assert_peer(t, 3, 2, 2, own);
    assert_peer(t, 0, 0, 0, NULL);
    g_assert_cmpuint(t->proto.peer_vectors, ==, 2);
    g_assert_cmpuint(t->proto.own_id, ==, 3);

    ivshmem_proto_cleanup(&t->proto);
    EXPECT(t, DEL(1, 0, false, p1[0]), DEL(1, 1, false, p1[1]),
           DEL(2, 0, false, p2[0]), DEL(2, 1, false, p2[1]),
           DEL(3, 0, true, own[0]), DEL(3, 1, true, own[1]));
    for (i = 0; i < 2; i++) {
        assert_closed(t, p1[i]);
        assert_closed(t, p2[i]);
        assert_closed(t, own[i]);
    }
    g_assert_null(t->proto.peers);
    NO_IDS(t);
    assert_peer(t, 1, 0, 0, NULL);
    assert_open(t, t->shm_fd);

    ivshmem_proto_cleanup(&t->proto);
    EXPECT_NONE(t);
}

/* Peers that join after setup and leave again; an unknown peer leaving. */
static void test_join_leave(Fixture *t, gconstpointer data)
{
    int a[2], b[2], again[1], own[2];

    do_setup(t, 0);
    send_vectors(t, 4, a, 2, 2);
    EXPECT(t, ADD(4, 0, false, a[0]), ADD(4, 1, false, a[1]));
    send_vectors(t, 9, b, 2, 2);
    EXPECT(t, ADD(9, 0, false, b[0]), ADD(9, 1, false, b[1]));
    IDS(t, 4, 9);

    /* a peer leaves: unwired while still open, in vector order, closed */
    feed_ok(t, 4, -1);
    EXPECT(t, DEL(4, 0, false, a[0]), DEL(4, 1, false, a[1]));
    assert_closed(t, a[0]);
    assert_closed(t, a[1]);
    IDS(t, 9);
    assert_peer(t, 4, 0, 0, NULL);
    assert_peer(t, 9, 2, 2, b);

    feed_err(t, 4, -1, "ivshmem server says unknown peer 4 left");
    feed_err(t, 5, -1, "ivshmem server says unknown peer 5 left");
    EXPECT_NONE(t);
    assert_peer(t, 9, 2, 2, b);

    /* the same ID again is a new peer: its vectors count from 0 */
    send_vectors(t, 4, again, 1, 1);
    EXPECT(t, ADD(4, 0, false, again[0]));
    assert_peer(t, 4, 1, 1, again);
    IDS(t, 4, 9);

    /* our own ID leaving unwires our own vectors */
    send_vectors(t, 0, own, 2, 2);
    EXPECT(t, ADD(0, 0, true, own[0]), ADD(0, 1, true, own[1]));
    IDS(t, 0, 4, 9);
    feed_ok(t, 0, -1);
    EXPECT(t, DEL(0, 0, true, own[0]), DEL(0, 1, true, own[1]));
    assert_closed(t, own[0]);
    assert_closed(t, own[1]);
    IDS(t, 4, 9);
    assert_peer(t, 9, 2, 2, b);
    assert_peer(t, 4, 1, 1, again);
}

/* Only version 0 is spoken; a refused message leaves the state alone. */
static void test_bad_version(Fixture *t, gconstpointer data)
{
    int fd;

    feed_err(t, 1, -1, "ivshmem server speaks protocol version 1, "
             "only version 0 is supported");
    feed_err(t, -1, -1, "ivshmem server speaks protocol version -1, "
             "only version 0 is supported");
    feed_err(t, INT64_MAX, -1, "ivshmem server speaks protocol version "
             "9223372036854775807, only version 0 is supported");
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_VERSION);

    /* the right version with an fd: refused, the fd closed */
    fd = new_eventfd(t);
    feed_err(t, 0, fd, "ivshmem server sent an fd with message 0 during "
             "setup");
    assert_closed(t, fd);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_VERSION);
    EXPECT_NONE(t);

    feed_ok(t, 0, -1);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_ID);
    EXPECT_NONE(t);
}

/* Our own ID must be 0..65535 and come without an fd. */
static void test_bad_id(Fixture *t, gconstpointer data)
{
    int fd, shm, own[1];

    feed_ok(t, 0, -1);
    feed_err(t, 65536, -1, "ivshmem server sent peer ID 65536, outside "
             "0..65535");
    feed_err(t, -1, -1, "ivshmem server sent peer ID -1, outside 0..65535");
    feed_err(t, INT64_MIN, -1, "ivshmem server sent peer ID "
             "-9223372036854775808, outside 0..65535");
    fd = new_eventfd(t);
    feed_err(t, 5, fd, "ivshmem server sent an fd with message 5 during "
             "setup");
    assert_closed(t, fd);
    EXPECT_NONE(t);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_ID);

    /* the highest ID is fine, and is ours from then on */
    feed_ok(t, 65535, -1);
    EXPECT(t, OWN_ID(65535));
    shm = new_memfd(t);
    feed_ok(t, -1, shm);
    EXPECT(t, SHM(shm));
    t->shm_fd = shm;
    send_vectors(t, 65535, own, 1, 1);
    EXPECT(t, ADD(65535, 0, true, own[0]));
    assert_peer(t, 65535, 1, 1, own);
}

/* The shared memory message must be -1 and carry exactly one fd. */
static void test_setup_fds(Fixture *t, gconstpointer data)
{
    int fd, shm;

    feed_ok(t, 0, -1);
    feed_ok(t, 2, -1);
    EXPECT(t, OWN_ID(2));

    feed_err(t, -1, -1, "ivshmem server sent -1 without the fd, expected "
             "the shared memory (-1 with an fd)");
    feed_err(t, 0, -1, "ivshmem server sent 0 without the fd, expected "
             "the shared memory (-1 with an fd)");
    fd = new_eventfd(t);
    feed_err(t, 7, fd, "ivshmem server sent 7 with the fd, expected "
             "the shared memory (-1 with an fd)");
    assert_closed(t, fd);
    fd = new_memfd(t);
    feed_err(t, 2, fd, "ivshmem server sent 2 with the fd, expected "
             "the shared memory (-1 with an fd)");
    assert_closed(t, fd);
    EXPECT_NONE(t);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_SHM);

    shm = new_memfd(t);
    feed_ok(t, -1, shm);
    EXPECT(t, SHM(shm));
    t->shm_fd = shm;
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_RUNNING);
}

/* A second shared memory fd once running: refused, closed; the first kept. */
static void test_shm_twice(Fixture *t, gconstpointer data)
{
    int v[1], shm2;

    do_setup(t, 1);
    send_vectors(t, 0, v, 1, 1);
    EXPECT(t, ADD(0, 0, false, v[0]));

    shm2 = new_memfd(t);
    feed_err(t, -1, shm2, "ivshmem server sent peer ID -1, outside 0..65535");
    assert_closed(t, shm2);
    EXPECT_NONE(t);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_RUNNING);
    assert_open(t, t->shm_fd);
    IDS(t, 0);
    assert_peer(t, 0, 1, 1, v);
}

/* More vectors than configured: the extra fds are closed, silently. */
static void test_extra_vectors(Fixture *t, gconstpointer data)
{
    int p1[4], own[5];

    do_setup(t, 0);
    send_vectors(t, 1, p1, 4, 2);
    EXPECT(t, ADD(1, 0, false, p1[0]), ADD(1, 1, false, p1[1]));
    assert_peer(t, 1, 2, 4, p1);
    g_assert_cmpuint(t->proto.peer_vectors, ==, 4);

    /* our own vectors are capped alike, and not counted as a peer's */
    send_vectors(t, 0, own, 5, 2);
    EXPECT(t, ADD(0, 0, true, own[0]), ADD(0, 1, true, own[1]));
    assert_peer(t, 0, 2, 5, own);
    g_assert_cmpuint(t->proto.peer_vectors, ==, 4);

    feed_ok(t, 1, -1);
    EXPECT(t, DEL(1, 0, false, p1[0]), DEL(1, 1, false, p1[1]));
    assert_closed(t, p1[0]);
    assert_closed(t, p1[1]);
    IDS(t, 0);
}

/* vectors=0: every vector fd is closed, the peer is still known. */
static void test_no_vectors(Fixture *t, gconstpointer data)
{
    int p[2];

    g_assert_cmpuint(t->proto.max_vectors, ==, 0);
    do_setup(t, 0);
    send_vectors(t, 6, p, 2, 0);
    EXPECT_NONE(t);
    IDS(t, 6);
    assert_peer(t, 6, 0, 2, NULL);
    g_assert_cmpuint(t->proto.peer_vectors, ==, 2);

    feed_ok(t, 6, -1);
    EXPECT_NONE(t);
    NO_IDS(t);
    feed_err(t, 6, -1, "ivshmem server says unknown peer 6 left");
}

/* Peer IDs are 0..65535 on the wire and in every query. */
static void test_peer_bounds(Fixture *t, gconstpointer data)
{
    static const int64_t bad[] = {
        65536, 65537, -2, -65536, INT64_MAX, INT64_MIN,
    };
    int p0[1], p7[1], p300[1], p65534[1], own[1];
    size_t i;

    do_setup(t, 65535);
    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autofree char *msg = g_strdup_printf("ivshmem server sent peer ID %"
                                               PRId64 ", outside 0..65535",
                                               bad[i]);
        int fd = new_eventfd(t);

        feed_err(t, bad[i], fd, msg);
        assert_closed(t, fd);
        /* a leave message with an out-of-range ID is no "unknown peer" */
        feed_err(t, bad[i], -1, msg);
    }
    EXPECT_NONE(t);
    NO_IDS(t);

    /* added out of order, listed and cleaned up in ascending order */
    send_vectors(t, 300, p300, 1, 1);
    send_vectors(t, 65535, own, 1, 1);
    send_vectors(t, 0, p0, 1, 1);
    send_vectors(t, 65534, p65534, 1, 1);
    send_vectors(t, 7, p7, 1, 1);
    EXPECT(t, ADD(300, 0, false, p300[0]), ADD(65535, 0, true, own[0]),
           ADD(0, 0, false, p0[0]), ADD(65534, 0, false, p65534[0]),
           ADD(7, 0, false, p7[0]));
    IDS(t, 0, 7, 300, 65534, 65535);
    assert_peer(t, 0, 1, 1, p0);
    assert_peer(t, 65535, 1, 1, own);
    assert_peer(t, 65536, 0, 0, NULL);
    assert_peer(t, UINT32_MAX, 0, 0, NULL);
    assert_peer(t, 65535 + 65536, 0, 0, NULL);

    ivshmem_proto_cleanup(&t->proto);
    EXPECT(t, DEL(0, 0, false, p0[0]), DEL(7, 0, false, p7[0]),
           DEL(300, 0, false, p300[0]), DEL(65534, 0, false, p65534[0]),
           DEL(65535, 0, true, own[0]));
    assert_closed(t, p0[0]);
    assert_closed(t, p7[0]);
    assert_closed(t, p300[0]);
    assert_closed(t, p65534[0]);
    assert_closed(t, own[0]);
}

/*
 * A peer's vector array grows in steps (4, 8, ...) capped at the vector
 * count: every count around those steps keeps exactly that many.
 */
static void test_vector_array(Fixture *t, gconstpointer data)
{
    static const uint32_t counts[] = { 1, 3, 4, 5, 8, 9, 17 };
    size_t c;
    uint32_t i, n;

    for (c = 0; c < ARRAY_SIZE(counts); c++) {
        g_autofree int *fds = NULL;

        n = counts[c];
        fds = g_new(int, n + 2);
        ivshmem_proto_cleanup(&t->proto);
        EXPECT_NONE(t);
        ivshmem_proto_init(&t->proto, n, record_action, t);
        close_shm(t);
        do_setup(t, 1);

        send_vectors(t, 2, fds, n + 2, n);
        g_assert_cmpuint(t->seen->len, ==, n);
        for (i = 0; i < n; i++) {
            const IvshmemAction *a = &g_array_index(t->seen, Seen, i).a;

            g_assert_cmpint(a->kind, ==, IVSHMEM_ACTION_ADD_VECTOR);
            g_assert_cmpuint(a->peer, ==, 2);
            g_assert_cmpuint(a->vector, ==, i);
            g_assert_cmpint(a->fd, ==, fds[i]);
        }
        g_array_set_size(t->seen, 0);
        assert_peer(t, 2, n, n + 2, fds);

        feed_ok(t, 2, -1);
        g_assert_cmpuint(t->seen->len, ==, n);
        for (i = 0; i < n; i++) {
            const IvshmemAction *a = &g_array_index(t->seen, Seen, i).a;

            g_assert_cmpint(a->kind, ==, IVSHMEM_ACTION_DEL_VECTOR);
            g_assert_cmpuint(a->vector, ==, i);
            g_assert_cmpint(a->fd, ==, fds[i]);
            assert_closed(t, fds[i]);
        }
        g_array_set_size(t->seen, 0);
    }
}

/*
 * vectors= beyond 65536 is capped there: vector 65535 is the last one
 * wired, which fits the doorbell's 16-bit field, and the next fd is
 * closed.  65537 open fds are more than RLIMIT_NOFILE allows without
 * privileges, so every message carries the same fd number, one that is
 * not open: the decoder stores and closes numbers without looking at
 * them.  The fd checks of the other cases cannot apply here.
 */
static void test_vector_limit(Fixture *t, gconstpointer data)
{
    const uint32_t n = IVSHMEM_MAX_VECTORS;
    int fd, ret, err;
    uint32_t i;

    g_assert_cmpuint(t->proto.max_vectors, ==, IVSHMEM_MAX_VECTORS);
    do_setup(t, 1);

    /* the highest number below the limit, not open */
    fd = sysconf(_SC_OPEN_MAX) - 1;
    g_assert_cmpint(fd, >, t->devnull);
    ret = fcntl(fd, F_GETFD);
    err = errno;
    g_assert_cmpint(ret, ==, -1);
    g_assert_cmpint(err, ==, EBADF);

    for (i = 0; i <= n; i++) {
        feed_ok(t, 0, fd);
    }
    g_assert_cmpuint(t->seen->len, ==, n);
    for (i = 0; i < n; i++) {
        const IvshmemAction *a = &g_array_index(t->seen, Seen, i).a;

        g_assert_cmpint(a->kind, ==, IVSHMEM_ACTION_ADD_VECTOR);
        g_assert_cmpuint(a->peer, ==, 0);
        g_assert_cmpuint(a->vector, ==, i);
        g_assert_cmpint(a->fd, ==, fd);
    }
    g_array_set_size(t->seen, 0);
    g_assert_cmpuint(ivshmem_proto_peer_vectors(&t->proto, 0), ==, n);
    g_assert_cmpuint(ivshmem_proto_peer_received(&t->proto, 0), ==, n + 1);
    g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, 0, n - 1), ==, fd);
    g_assert_cmpint(ivshmem_proto_peer_fd(&t->proto, 0, n), ==, -1);
    g_assert_cmpuint(t->proto.peer_vectors, ==, n + 1);

    feed_ok(t, 0, -1);
    g_assert_cmpuint(t->seen->len, ==, n);
    for (i = 0; i < n; i++) {
        const IvshmemAction *a = &g_array_index(t->seen, Seen, i).a;

        g_assert_cmpint(a->kind, ==, IVSHMEM_ACTION_DEL_VECTOR);
        g_assert_cmpuint(a->peer, ==, 0);
        g_assert_cmpuint(a->vector, ==, i);
        g_assert_cmpint(a->fd, ==, fd);
    }
    g_array_set_size(t->seen, 0);
    NO_IDS(t);
}

/* The caller refusing the shared memory or a vector: fd closed, error kept. */
static void test_reject(Fixture *t, gconstpointer data)
{
    int shm, v[3], w[1];

    feed_ok(t, 0, -1);
    feed_ok(t, 8, -1);
    EXPECT(t, OWN_ID(8));

    t->reject = true;
    t->reject_kind = IVSHMEM_ACTION_SHM;
    shm = new_memfd(t);
    feed_err(t, -1, shm, "test rejects SHM");
    EXPECT(t, SHM(shm));
    assert_closed(t, shm);
    g_assert_cmpint(t->proto.state, ==, IVSHMEM_PROTO_WAIT_SHM);
    t->reject = false;
    shm = new_memfd(t);
    feed_ok(t, -1, shm);
    EXPECT(t, SHM(shm));
    t->shm_fd = shm;

    /* the first vector of a new peer refused: the peer stays unknown */
    t->reject = true;
    t->reject_kind = IVSHMEM_ACTION_ADD_VECTOR;
    w[0] = new_eventfd(t);
    feed_err(t, 3, w[0], "test rejects ADD_VECTOR");
    EXPECT(t, ADD(3, 0, false, w[0]));
    assert_closed(t, w[0]);
    NO_IDS(t);
    assert_peer(t, 3, 0, 0, NULL);
    feed_err(t, 3, -1, "ivshmem server says unknown peer 3 left");

    /* a later vector refused: the peer keeps the ones it has */
    t->reject = false;
    send_vectors(t, 3, v, 1, 1);
    EXPECT(t, ADD(3, 0, false, v[0]));
    t->reject = true;
    v[1] = new_eventfd(t);
    feed_err(t, 3, v[1], "test rejects ADD_VECTOR");
    EXPECT(t, ADD(3, 1, false, v[1]));
    assert_closed(t, v[1]);
    IDS(t, 3);
    assert_peer(t, 3, 1, 2, v);

    /* with the table full, an extra fd is closed before it is offered */
    t->reject = false;
    v[1] = new_eventfd(t);
    feed_ok(t, 3, v[1]);
    EXPECT(t, ADD(3, 1, false, v[1]));
    t->reject = true;
    v[2] = new_eventfd(t);
    feed_ok(t, 3, v[2]);
    EXPECT_NONE(t);
    assert_closed(t, v[2]);
    assert_peer(t, 3, 2, 4, v);
    t->reject = false;
}

/*
 * Cleanup with fds pending at each stage, and a fresh session on the same
 * IvshmemProto afterwards (what a device does when its server restarts).
 */
static void test_cleanup_pending(Fixture *t, gconstpointer data)
{
    int a[3], own[4], b[1], old_own[1];

    /* before any peer: nothing to unwire */
    feed_ok(t, 0, -1);
    feed_ok(t, 2, -1);
    EXPECT(t, OWN_ID(2));
    ivshmem_proto_cleanup(&t->proto);
    EXPECT_NONE(t);
    g_assert_null(t->proto.peers);

    /* a session with fds in the table, some over the vector count */
    ivshmem_proto_init(&t->proto, 3, record_action, t);
    do_setup(t, 2);
    send_vectors(t, 5, a, 3, 3);
    send_vectors(t, 2, own, 4, 3);
    EXPECT(t, ADD(5, 0, false, a[0]), ADD(5, 1, false, a[1]),
           ADD(5, 2, false, a[2]), ADD(2, 0, true, own[0]),
           ADD(2, 1, true, own[1]), ADD(2, 2, true, own[2]));
    ivshmem_proto_cleanup(&t->proto);
    EXPECT(t, DEL(2, 0, true, own[0]), DEL(2, 1, true, own[1]),
           DEL(2, 2, true, own[2]), DEL(5, 0, false, a[0]),
           DEL(5, 1, false, a[1]), DEL(5, 2, false, a[2]));
    assert_closed(t, a[0]);
    assert_closed(t, a[1]);
    assert_closed(t, a[2]);
    assert_closed(t, own[0]);
    assert_closed(t, own[1]);
    assert_closed(t, own[2]);
    close_shm(t);

    /* the next session: our old ID is now another peer's */
    ivshmem_proto_init(&t->proto, 3, record_action, t);
    assert_peer(t, 5, 0, 0, NULL);
    do_setup(t, 5);
    send_vectors(t, 2, old_own, 1, 1);
    send_vectors(t, 5, b, 1, 1);
    EXPECT(t, ADD(2, 0, false, old_own[0]), ADD(5, 0, true, b[0]));
    IDS(t, 2, 5);
    /* the fixture's teardown frees it with these fds pending */
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/ivshmem-proto/codec", test_codec);
#define ADD_TEST(path, vectors, fn) \
    g_test_add("/ivshmem-proto/" path, Fixture, GUINT_TO_POINTER(vectors), \
               fixture_setup, fn, fixture_teardown)
    ADD_TEST("setup", 2, test_setup);
    ADD_TEST("join-leave", 2, test_join_leave);
    ADD_TEST("bad-version", 2, test_bad_version);
    ADD_TEST("bad-id", 2, test_bad_id);
    ADD_TEST("setup-fds", 2, test_setup_fds);
    ADD_TEST("shm-twice", 2, test_shm_twice);
    ADD_TEST("extra-vectors", 2, test_extra_vectors);
    ADD_TEST("no-vectors", 0, test_no_vectors);
    ADD_TEST("peer-bounds", 1, test_peer_bounds);
    ADD_TEST("vector-array", 0, test_vector_array);
    ADD_TEST("vector-limit", UINT32_MAX, test_vector_limit);
    ADD_TEST("reject", 2, test_reject);
    ADD_TEST("cleanup-pending", 0, test_cleanup_pending);
#undef ADD_TEST

    return g_test_run();
}
