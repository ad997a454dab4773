/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: scriptable debug client for the ivshmem server protocol. */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/un.h>
#include <glib-unix.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "ivshmem-client.h"

static void print_line(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void print_line(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static bool on_action(void *opaque, const IvshmemAction *a, Error **errp)
{
    IvshmemClient *c = opaque;
    struct stat st;

    switch (a->kind) {
    case IVSHMEM_ACTION_OWN_ID:
        c->have_id = true;
        print_line("id %u", a->peer);
        break;
    case IVSHMEM_ACTION_SHM:
        if (fstat(a->fd, &st) < 0) {
            error_setg_errno(errp, errno, "cannot stat the shared memory");
            return false;
        }
        if (c->shm_fd >= 0) {
            close(c->shm_fd);
        }
        c->shm_fd = a->fd;
        c->shm_size = st.st_size;
        print_line("shm %" PRIu64, c->shm_size);
        break;
    case IVSHMEM_ACTION_ADD_VECTOR:
        if (a->own) {
            print_line("own-vector %u", a->vector);
        } else {
            print_line("peer-vector %u %u", a->peer, a->vector);
        }
        break;
    case IVSHMEM_ACTION_DEL_VECTOR:
        /* The vectors of a peer go together, vector 0 first. */
        if (a->vector == 0 && !c->closing) {
            print_line("peer-left %u", a->peer);
        }
        break;
    }
    return true;
}

bool ivshmem_client_connect(IvshmemClient *c, const char *path,
                            uint32_t max_vectors, Error **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    *c = (IvshmemClient) {
        .sock = -1, .buf_fd = -1, .shm_fd = -1,
        .input = g_string_new(NULL),
    };
    ivshmem_proto_init(&c->proto, max_vectors, on_action, c);
    if (strlen(path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "-S %s: path too long", path);
        return false;
    }
    pstrcpy(addr.sun_path, sizeof(addr.sun_path), path);
    c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->sock < 0 ||
        connect(c->sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot connect", path);
        return false;
    }
    g_unix_set_fd_nonblocking(c->sock, true, NULL);
    return true;
}

/* Receive part of a message; returns bytes read, 0 on EOF, -1 on error. */
static ssize_t receive_bytes(IvshmemClient *c)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = {
        .iov_base = c->buf + c->buf_len,
        .iov_len = sizeof(c->buf) - c->buf_len,
    };
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cmsg;
    ssize_t n;

    do {
        n = recvmsg(c->sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return n;
    }
    for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        size_t i, nfds;

        if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        nfds = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < nfds; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
            if (c->buf_fd < 0) {
                c->buf_fd = fd;
            } else {
                close(fd);      /* one fd per message at most */
            }
        }
    }
    return n;
}

static void feed_message(IvshmemClient *c)
{
    int64_t value = ivshmem_proto_decode(c->buf);
    bool in_setup = c->proto.state != IVSHMEM_PROTO_RUNNING;
    Error *err = NULL;

    if (!ivshmem_proto_feed(&c->proto, value, c->buf_fd, &err)) {
        print_line("error: %s", error_get_pretty(err));
        error_free(err);
        if (in_setup) {
            c->quit = true;
            c->exit_status = 1;
        }
    }
    c->buf_fd = -1;
    c->buf_len = 0;
}

static void serve_socket(IvshmemClient *c)
{
    for (;;) {
        ssize_t n = receive_bytes(c);

        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            print_line("server-closed");
            c->quit = true;
            c->exit_status = 1;
            return;
        }
        if (n < 0) {
            break;
        }
        c->buf_len += n;
        if (c->buf_len == IVSHMEM_MSG_SIZE) {
            feed_message(c);
        }
        if (c->quit) {
            return;
        }
    }
    /* Drained after our own vectors arrived: the setup burst is over. */
    if (!c->ready && c->have_id &&
        ivshmem_proto_peer_vectors(&c->proto, c->proto.own_id) > 0) {
        c->ready = true;
        print_line("ready");
    }
}

static void serve_interrupt(IvshmemClient *c, uint32_t vector, int fd)
{
    uint64_t count;

    if (read(fd, &count, sizeof(count)) == sizeof(count)) {
        print_line("interrupt %u %" PRIu64, vector, count);
    }
}

static bool ring(IvshmemClient *c, uint32_t peer, uint32_t vector)
{
    int fd = ivshmem_proto_peer_fd(&c->proto, peer, vector);
    uint64_t one = 1;

    if (fd < 0) {
        print_line("error: peer %u vector %u is not connected", peer, vector);
        return false;
    }
    if (write(fd, &one, sizeof(one)) != sizeof(one)) {
        print_line("error: ringing peer %u vector %u: %s", peer, vector,
                   strerror(errno));
        return false;
    }
    print_line("sent %u %u", peer, vector);
    return true;
}

static void ring_all_vectors(IvshmemClient *c, uint32_t peer)
{
    uint32_t v, n = ivshmem_proto_peer_vectors(&c->proto, peer);

    if (n == 0) {
        print_line("error: peer %u is not connected", peer);
    }
    for (v = 0; v < n; v++) {
        ring(c, peer, v);
    }
}

static void ring_all_peers(IvshmemClient *c)
{
    g_autoptr(GArray) ids = ivshmem_proto_peer_ids(&c->proto);
    guint i;

    for (i = 0; i < ids->len; i++) {
        uint32_t peer = g_array_index(ids, uint32_t, i);

        if (!c->have_id || peer != c->proto.own_id) {
            ring_all_vectors(c, peer);
        }
    }
}

static void list_peers(IvshmemClient *c, bool with_fds)
{
    g_autoptr(GArray) ids = ivshmem_proto_peer_ids(&c->proto);
    guint i;
    uint32_t v;

    if (with_fds) {
        print_line("id %d", c->have_id ? c->proto.own_id : -1);
        print_line("shm %" PRIu64 " fd %d", c->shm_size, c->shm_fd);
    }
    for (i = 0; i < ids->len; i++) {
        uint32_t peer = g_array_index(ids, uint32_t, i);
        uint32_t n = ivshmem_proto_peer_vectors(&c->proto, peer);
        bool own = c->have_id && peer == c->proto.own_id;

        print_line("peer %u vectors %u%s", peer, n, own ? " own" : "");
        for (v = 0; with_fds && v < n; v++) {
            print_line("peer %u vector %u fd %d", peer, v,
                       ivshmem_proto_peer_fd(&c->proto, peer, v));
        }
    }
    print_line("end");
}

static bool parse_id(const char *s, uint32_t max, uint32_t *val)
{
    unsigned int v;

    if (qemu_strtoui(s, NULL, 10, &v) < 0 || v > max) {
        print_line("error: '%s' is not a number in 0..%u", s, max);
        return false;
    }
    *val = v;
    return true;
}

static void command_int(IvshmemClient *c, char **argv, int argc)
{
    uint32_t peer, vector;

    if (argc == 2 && !strcmp(argv[1], "all")) {
        ring_all_peers(c);
    } else if (argc == 3 && parse_id(argv[1], IVSHMEM_MAX_PEERS - 1, &peer)) {
        if (!strcmp(argv[2], "all")) {
            ring_all_vectors(c, peer);
        } else if (parse_id(argv[2], IVSHMEM_MAX_VECTORS - 1, &vector)) {
            ring(c, peer, vector);
        }
    } else if (argc != 3) {
        print_line("error: usage: int PEER VECTOR | int PEER all | int all");
    }
}

void ivshmem_client_command(IvshmemClient *c, const char *line)
{
    g_auto(GStrv) argv = g_strsplit_set(line, " \t\r", -1);
    g_autofree char **words = g_new0(char *, g_strv_length(argv) + 1);
    int argc = 0, i;

    for (i = 0; argv[i]; i++) {
        if (argv[i][0]) {
            words[argc++] = argv[i];
        }
    }
    if (argc == 0) {
        return;
    }
    if (!strcmp(words[0], "int")) {
        command_int(c, words, argc);
    } else if (!strcmp(words[0], "list") && argc == 1) {
        list_peers(c, false);
    } else if (!strcmp(words[0], "dump") && argc == 1) {
        list_peers(c, true);
    } else if (!strcmp(words[0], "quit") && argc == 1) {
        c->quit = true;
    } else {
        print_line("error: unknown command '%s' (int, list, dump, quit)",
                   line);
    }
}

static void serve_stdin(IvshmemClient *c)
{
    char chunk[4096];
    ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
    char *nl;

    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->quit = true;     /* end of the script */
        }
        return;
    }
    g_string_append_len(c->input, chunk, n);
    while (!c->quit && (nl = memchr(c->input->str, '\n', c->input->len))) {
        g_autofree char *line = g_strndup(c->input->str,
                                          nl - c->input->str);

        g_string_erase(c->input, 0, nl - c->input->str + 1);
        ivshmem_client_command(c, line);
    }
}

int ivshmem_client_run(IvshmemClient *c)
{
    while (!c->quit) {
        uint32_t own = c->have_id ? c->proto.own_id : 0;
        uint32_t nown = c->have_id ?
            ivshmem_proto_peer_vectors(&c->proto, own) : 0;
        g_autofree struct pollfd *pfd = g_new0(struct pollfd, nown + 2);
        uint32_t v;

        pfd[0] = (struct pollfd) { .fd = c->sock, .events = POLLIN };
        pfd[1] = (struct pollfd) { .fd = STDIN_FILENO, .events = POLLIN };
        for (v = 0; v < nown; v++) {
            pfd[v + 2].fd = ivshmem_proto_peer_fd(&c->proto, own, v);
            pfd[v + 2].events = POLLIN;
        }
        if (poll(pfd, nown + 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("poll");
            return 1;
        }
        for (v = 0; v < nown; v++) {
            if (pfd[v + 2].revents & POLLIN) {
                serve_interrupt(c, v, pfd[v + 2].fd);
            }
        }
        if (pfd[0].revents) {
            serve_socket(c);
        }
        if (!c->quit && pfd[1].revents) {
            serve_stdin(c);
        }
    }
    return c->exit_status;
}

void ivshmem_client_cleanup(IvshmemClient *c)
{
    c->closing = true;          /* not news: we are the ones leaving */
    ivshmem_proto_cleanup(&c->proto);
    if (c->buf_fd >= 0) {
        close(c->buf_fd);
    }
    if (c->shm_fd >= 0) {
        close(c->shm_fd);
    }
    if (c->sock >= 0) {
        close(c->sock);
    }
    g_string_free(c->input, true);
}
