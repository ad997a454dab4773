/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: command line, socket, daemon mode and pidfile. */

#include "qemu/osdep.h"
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/un.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/host-utils.h"
#include "qemu/rcu.h"
#include "qemu/units.h"
#include "shm.h"
#include "ivshmem-server.h"

#define DEFAULT_SOCKET_DIR  "/run/ivshmem"
#define DEFAULT_SOCKET  DEFAULT_SOCKET_DIR "/ivshmem.sock"
#define DEFAULT_SHM     "ivshmem"
#define DEFAULT_SIZE    (4 * MiB)
/* The most MSI-X vectors a QEMU ivshmem device uses */
#define MAX_DEVICE_VECTORS 2048
/* Descriptors the server needs besides its peers' */
#define FD_RESERVE      16
/* The first fd systemd passes (sd_listen_fds) */
#define LISTEN_FDS_START 3

typedef struct ServerOptions {
    bool foreground;            /* -F */
    bool verbose;               /* -v */
    bool memfd;                 /* --memfd */
    bool sparse;                /* --sparse */
    const char *socket_path;    /* -S */
    const char *pidfile;        /* -p */
    const char *shm_name;       /* -M */
    const char *shm_dir;        /* -m */
    uint64_t size;              /* -l */
    uint32_t nvectors;          /* -n */
    size_t queue_limit;         /* -q */
    size_t queue_fds;           /* --queue-fds */
    uint32_t fds_in_flight;     /* --fds-in-flight */
    uint32_t max_peers;         /* --max-peers; 0: from RLIMIT_NOFILE */
    uint32_t setup_timeout;     /* --setup-timeout, seconds */
    uint32_t user_share;        /* --user-share */
    int socket_mode;            /* --socket-mode; -1: 0600, 0660 w/ group */
    gid_t socket_group;         /* --socket-group; -1: none */
    gid_t shm_group;            /* --shm-group; -1: none */
    GArray *allow_uids;         /* --allow-user */
    GArray *allow_gids;         /* --allow-group */
} ServerOptions;

enum {
    OPT_QUEUE_FDS = 256,
    OPT_FDS_IN_FLIGHT,
    OPT_MAX_PEERS,
    OPT_SETUP_TIMEOUT,
    OPT_SOCKET_MODE,
    OPT_SOCKET_GROUP,
    OPT_SHM_GROUP,
    OPT_ALLOW_USER,
    OPT_ALLOW_GROUP,
    OPT_MEMFD,
    OPT_USER_SHARE,
    OPT_SPARSE,
};

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
"Usage: %s [OPTION]...\n"
"Hand shared memory and interrupt eventfds to ivshmem peers (QEMU\n"
"ivshmem-doorbell devices, ivshmem-client) over a UNIX socket, using\n"
"protocol version 0.\n"
"\n"
"Memory:\n"
"  -M, --shm NAME          POSIX shared memory object NAME (/dev/shm/NAME),\n"
"                          created (mode 0600) and sized if missing; an\n"
"                          existing one must have the size of -l, belong\n"
"                          to the server's user and give no access to\n"
"                          others (default " DEFAULT_SHM ")\n"
"      --shm-group GROUP   give GROUP read-write access to a new object,\n"
"                          and accept an existing one that GROUP may use\n"
"  -m, --shm-dir DIR       instead of -M: an unlinked file in DIR (e.g. a\n"
"                          hugetlbfs mount), size rounded up to DIR's\n"
"                          block (huge page) size\n"
"      --memfd             instead of -M: a memfd sealed so that no peer\n"
"                          can shrink or grow it (no SIGBUS from a\n"
"                          truncated region; not shared across restarts)\n"
"  -l, --size SIZE         region size, a power of two, with optional\n"
"                          K/M/G/T suffix (default 4M); with -M and -m it\n"
"                          is allocated at start (fallocate), so that a\n"
"                          filesystem filled later cannot crash the\n"
"                          guests with SIGBUS\n"
"      --sparse            with -M or -m: allocate as peers touch the\n"
"                          region instead (it must still fit the free\n"
"                          space at start)\n"
"\n"
"Socket and access:\n"
"  -S, --socket PATH       listen on PATH (default " DEFAULT_SOCKET ",\n"
"                          its directory created 0750).  PATH.lock is\n"
"                          held while serving: a second server on PATH is\n"
"                          refused, a stale socket file is replaced.\n"
"                          Under systemd socket activation (LISTEN_FDS),\n"
"                          the inherited socket is used instead\n"
"      --socket-mode MODE  socket permissions, octal (default 0600, or\n"
"                          0660 with --socket-group)\n"
"      --socket-group GROUP  group owning the socket\n"
"      --allow-user USER   only accept clients running as USER (name or\n"
"                          uid); may be repeated\n"
"      --allow-group GROUP only accept clients in GROUP (primary or\n"
"                          supplementary); may be repeated.  Without\n"
"                          either, whoever can open the socket is served\n"
"\n"
"Peers:\n"
"  -n, --vectors N         interrupt vectors (eventfds) per peer,\n"
"                          0..%d (default 1; 0: shared memory only)\n"
"      --max-peers N       refuse clients beyond N peers (default: what\n"
"                          RLIMIT_NOFILE allows, N x (vectors + 1) fds)\n"
"  -q, --queue-limit N     messages a client may leave unread beyond its\n"
"                          setup before it is dropped (default %d per\n"
"                          vector)\n"
"      --queue-fds N       descriptors that may wait in a client's queue\n"
"                          before it is dropped (default %d per vector)\n"
"      --fds-in-flight N   descriptors a client may leave unread in its\n"
"                          socket; the kernel counts them against the\n"
"                          server user's RLIMIT_NOFILE (default %d)\n"
"      --setup-timeout SECS  drop a client that has not read its setup\n"
"                          after SECS seconds (default %d; not while the\n"
"                          server holds its setup back)\n"
"      --user-share N      a user's clients together may leave at most\n"
"                          1/N of the descriptors Linux lets the server\n"
"                          have in flight unread, so that N - 1 users\n"
"                          whose clients never read cannot starve\n"
"                          another's (default %d).  Out of descriptors\n"
"                          or at --max-peers, a newcomer evicts a client\n"
"                          of the user holding the most connections\n"
"\n"
"Process:\n"
"  -p, --pidfile FILE      write the server's PID to FILE\n"
"  -F, --foreground        stay in the foreground, log to stderr\n"
"                          (default: become a daemon, log to syslog)\n"
"  -v, --verbose           log more detail\n"
"  -h, --help              show this help\n"
"\n"
"Peer IDs go up from 0 and wrap after 65535, skipping IDs in use: a\n"
"departed peer's ID is reused only after all others have been handed out.\n"
"Logs: one line per peer joining (with its uid and pid) or leaving.\n"
"SIGTERM, SIGINT and SIGHUP remove the socket, the lock file, the pidfile\n"
"and the shared memory object if this server created it; SIGUSR1 logs\n"
"the server's state.\n",
            prog, MAX_DEVICE_VECTORS, IVSHMEM_SERVER_QUEUE_PER_VECTOR,
            IVSHMEM_SERVER_QUEUE_FDS_PER_VECTOR, IVSHMEM_SERVER_FDS_IN_FLIGHT,
            IVSHMEM_SERVER_SETUP_TIMEOUT_MS / 1000,
            IVSHMEM_SERVER_USER_SHARE);
}

static bool parse_size(const char *arg, uint64_t *size, Error **errp)
{
    if (qemu_strtosz(arg, NULL, size) < 0 || *size == 0) {
        error_setg(errp, "-l %s: not a size (use e.g. 4M, 1G)", arg);
        return false;
    }
    if (!is_power_of_2(*size)) {
        error_setg(errp, "-l %s: size must be a power of two", arg);
        return false;
    }
    /* File sizes are off_t: 4E is the largest power of two below 8E. */
    if (*size > (UINT64_C(1) << 62)) {
        error_setg(errp, "-l %s: larger than a file can be (at most 4E)",
                   arg);
        return false;
    }
    return true;
}

static bool parse_count(const char *flag, const char *arg, uint64_t min,
                        uint64_t max, uint64_t *val, Error **errp)
{
    /* qemu_strtou64 would wrap "-1" around to UINT64_MAX */
    if (strchr(arg, '-') || qemu_strtou64(arg, NULL, 10, val) < 0 ||
        *val < min || *val > max) {
        error_setg(errp, "%s %s: expected an integer in %" PRIu64
                   "..%" PRIu64, flag, arg, min, max);
        return false;
    }
    return true;
}

static bool parse_mode(const char *arg, int *mode, Error **errp)
{
    uint64_t val;

    if (strchr(arg, '-') || qemu_strtou64(arg, NULL, 8, &val) < 0 ||
        val > 0777) {
        error_setg(errp, "--socket-mode %s: expected an octal mode in "
                   "0..0777, e.g. 0660", arg);
        return false;
    }
    *mode = val;
    return true;
}

static bool parse_group(const char *flag, const char *arg, gid_t *gid,
                        Error **errp)
{
    struct group *gr = getgrnam(arg);
    uint64_t val;

    if (gr) {
        *gid = gr->gr_gid;
        return true;
    }
    if (!strchr(arg, '-') && qemu_strtou64(arg, NULL, 10, &val) == 0 &&
        val < (gid_t)-1) {
        *gid = val;
        return true;
    }
    error_setg(errp, "%s %s: no such group", flag, arg);
    return false;
}

static bool parse_user(const char *arg, uid_t *uid, Error **errp)
{
    struct passwd *pw = getpwnam(arg);
    uint64_t val;

    if (pw) {
        *uid = pw->pw_uid;
        return true;
    }
    if (!strchr(arg, '-') && qemu_strtou64(arg, NULL, 10, &val) == 0 &&
        val < (uid_t)-1) {
        *uid = val;
        return true;
    }
    error_setg(errp, "--allow-user %s: no such user", arg);
    return false;
}

static bool parse_option(int c, const char *arg, ServerOptions *o,
                         Error **errp)
{
    uint64_t val;
    uint32_t id;

    switch (c) {
    case 'S':
        o->socket_path = arg;
        return true;
    case 'M':
        o->shm_name = arg;
        return true;
    case 'm':
        o->shm_dir = arg;
        return true;
    case OPT_MEMFD:
        o->memfd = true;
        return true;
    case OPT_SPARSE:
        o->sparse = true;
        return true;
    case 'l':
        return parse_size(arg, &o->size, errp);
    case 'n':
        /* 0 as QEMU 10.0.2's server: peers share memory, no doorbells */
        if (!parse_count("-n", arg, 0, MAX_DEVICE_VECTORS, &val, errp)) {
            error_append_hint(errp, "QEMU devices use at most %d vectors\n",
                              MAX_DEVICE_VECTORS);
            return false;
        }
        o->nvectors = val;
        return true;
    case 'p':
        o->pidfile = arg;
        return true;
    case 'F':
        o->foreground = true;
        return true;
    case 'q':
        if (!parse_count("-q", arg, 1, SIZE_MAX / 2, &val, errp)) {
            return false;
        }
        o->queue_limit = val;
        return true;
    case OPT_QUEUE_FDS:
        if (!parse_count("--queue-fds", arg, 1, SIZE_MAX / 2, &val, errp)) {
            return false;
        }
        o->queue_fds = val;
        return true;
    case OPT_FDS_IN_FLIGHT:
        if (!parse_count("--fds-in-flight", arg, 1, 65536, &val, errp)) {
            return false;
        }
        o->fds_in_flight = val;
        return true;
    case OPT_MAX_PEERS:
        if (!parse_count("--max-peers", arg, 1, IVSHMEM_MAX_PEERS, &val,
                         errp)) {
            return false;
        }
        o->max_peers = val;
        return true;
    case OPT_SETUP_TIMEOUT:
        if (!parse_count("--setup-timeout", arg, 1, 3600, &val, errp)) {
            return false;
        }
        o->setup_timeout = val;
        return true;
    case OPT_USER_SHARE:
        if (!parse_count("--user-share", arg, 1, 1024, &val, errp)) {
            return false;
        }
        o->user_share = val;
        return true;
    case OPT_SOCKET_MODE:
        return parse_mode(arg, &o->socket_mode, errp);
    case OPT_SOCKET_GROUP:
        return parse_group("--socket-group", arg, &o->socket_group, errp);
    case OPT_SHM_GROUP:
        return parse_group("--shm-group", arg, &o->shm_group, errp);
    case OPT_ALLOW_USER:
        if (!parse_user(arg, &id, errp)) {
            return false;
        }
        g_array_append_val(o->allow_uids, id);
        return true;
    case OPT_ALLOW_GROUP:
        if (!parse_group("--allow-group", arg, &id, errp)) {
            return false;
        }
        g_array_append_val(o->allow_gids, id);
        return true;
    case 'v':
        o->verbose = true;
        return true;
    default:
        error_setg(errp, "invalid option (see --help)");
        return false;
    }
}

static bool parse_options(int argc, char **argv, ServerOptions *o,
                          Error **errp)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 'S' },
        { "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
        { "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
        { "allow-user", required_argument, NULL, OPT_ALLOW_USER },
        { "allow-group", required_argument, NULL, OPT_ALLOW_GROUP },
        { "shm", required_argument, NULL, 'M' },
        { "shm-group", required_argument, NULL, OPT_SHM_GROUP },
        { "shm-dir", required_argument, NULL, 'm' },
        { "memfd", no_argument, NULL, OPT_MEMFD },
        { "sparse", no_argument, NULL, OPT_SPARSE },
        { "size", required_argument, NULL, 'l' },
        { "vectors", required_argument, NULL, 'n' },
        { "max-peers", required_argument, NULL, OPT_MAX_PEERS },
        { "pidfile", required_argument, NULL, 'p' },
        { "foreground", no_argument, NULL, 'F' },
        { "queue-limit", required_argument, NULL, 'q' },
        { "queue-fds", required_argument, NULL, OPT_QUEUE_FDS },
        { "fds-in-flight", required_argument, NULL, OPT_FDS_IN_FLIGHT },
        { "setup-timeout", required_argument, NULL, OPT_SETUP_TIMEOUT },
        { "user-share", required_argument, NULL, OPT_USER_SHARE },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;

    *o = (ServerOptions) {
        .socket_path = DEFAULT_SOCKET,
        .size = DEFAULT_SIZE,
        .nvectors = 1,
        .fds_in_flight = IVSHMEM_SERVER_FDS_IN_FLIGHT,
        .setup_timeout = IVSHMEM_SERVER_SETUP_TIMEOUT_MS / 1000,
        .user_share = IVSHMEM_SERVER_USER_SHARE,
        .socket_mode = -1,
        .socket_group = -1,
        .shm_group = -1,
        .allow_uids = g_array_new(false, false, sizeof(uint32_t)),
        .allow_gids = g_array_new(false, false, sizeof(uint32_t)),
    };
    while ((c = getopt_long(argc, argv, "S:M:m:l:n:p:Fq:vh",
                            longopts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout, argv[0]);
            exit(0);
        }
        if (!parse_option(c, optarg, o, errp)) {
            return false;
        }
    }
    if (optind < argc) {
        error_setg(errp, "unexpected argument '%s' (see --help)",
                   argv[optind]);
        return false;
    }
    if (!!o->shm_name + !!o->shm_dir + o->memfd > 1) {
        error_setg(errp, "-M, -m and --memfd are mutually exclusive");
        return false;
    }
    if (o->sparse && o->memfd) {
        error_setg(errp, "--sparse applies to -M and -m only (a --memfd "
                   "region is always allocated as peers touch it)");
        return false;
    }
    if (!o->shm_dir && !o->shm_name && !o->memfd) {
        o->shm_name = DEFAULT_SHM;
    }
    if (!o->socket_path[0]) {
        error_setg(errp, "-S: empty socket path");
        return false;
    }
    if (o->socket_mode < 0) {
        o->socket_mode = o->socket_group == (gid_t)-1 ? 0600 : 0660;
    }
    if (!o->queue_limit) {
        o->queue_limit = (size_t)IVSHMEM_SERVER_QUEUE_PER_VECTOR *
                         MAX(o->nvectors, 1);
    }
    if (!o->queue_fds) {
        o->queue_fds = (size_t)IVSHMEM_SERVER_QUEUE_FDS_PER_VECTOR *
                       MAX(o->nvectors, 1);
    }
    return true;
}

/*
 * Descriptors are the server's main resource: take all we may, and check
 * that they are enough for the peers expected.
 */
static bool check_fd_limit(ServerOptions *o, Error **errp)
{
    struct rlimit rl;
    uint64_t per_peer = o->nvectors + 1, peers;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        error_setg_errno(errp, errno, "getrlimit(RLIMIT_NOFILE)");
        return false;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    peers = rl.rlim_cur > FD_RESERVE ?
            (rl.rlim_cur - FD_RESERVE) / per_peer : 0;
    if (peers < 2) {
        error_setg(errp, "-n %u: the descriptor limit (RLIMIT_NOFILE %"
                   PRIu64 ") does not allow 2 peers of %" PRIu64
                   " descriptors each; raise it (ulimit -n, LimitNOFILE=) "
                   "or lower -n", o->nvectors, (uint64_t)rl.rlim_cur,
                   per_peer);
        return false;
    }
    if (o->max_peers > peers) {
        error_setg(errp, "--max-peers %u: with -n %u that needs %" PRIu64
                   " descriptors, but RLIMIT_NOFILE is %" PRIu64 "; raise "
                   "it (ulimit -n, LimitNOFILE=) or lower --max-peers",
                   o->max_peers, o->nvectors,
                   o->max_peers * per_peer + FD_RESERVE,
                   (uint64_t)rl.rlim_cur);
        return false;
    }
    if (!o->max_peers) {
        o->max_peers = MIN(peers, IVSHMEM_MAX_PEERS);
    }
    return true;
}

/*
 * The socket activation protocol of systemd (sd_listen_fds(3)): one
 * listening UNIX stream socket at fd 3.  Returns it, -1 if not activated,
 * -2 on error.
 */
static int inherited_socket(Error **errp)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    uint64_t val;
    int type = 0, domain = 0, listening = 0;
    socklen_t len = sizeof(int);

    if (!pid || !fds || qemu_strtou64(pid, NULL, 10, &val) < 0 ||
        val != (uint64_t)getpid()) {
        return -1;
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (qemu_strtou64(fds, NULL, 10, &val) < 0 || val != 1) {
        error_setg(errp, "LISTEN_FDS=%s: expected exactly one socket "
                   "(one ListenStream= in the socket unit)", fds);
        return -2;
    }
    if (getsockopt(LISTEN_FDS_START, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        getsockopt(LISTEN_FDS_START, SOL_SOCKET, SO_DOMAIN, &domain,
                   &len) < 0 ||
        getsockopt(LISTEN_FDS_START, SOL_SOCKET, SO_ACCEPTCONN, &listening,
                   &len) < 0 ||
        type != SOCK_STREAM || domain != AF_UNIX || !listening) {
        error_setg(errp, "LISTEN_FDS: fd %d is not a listening UNIX stream "
                   "socket (use ListenStream=/path in the socket unit)",
                   LISTEN_FDS_START);
        return -2;
    }
    qemu_set_cloexec(LISTEN_FDS_START);
    return LISTEN_FDS_START;
}

/*
 * Hold PATH.lock while serving on PATH: a second server is refused
 * without connecting to the first (which would see a peer come and go)
 * and without blocking on its backlog.  Returns the lock's fd.
 */
/* PATH.lock names the process serving: the daemon, after the fork. */
static bool write_lock_pid(int fd, const char *lock_path, Error **errp)
{
    g_autofree char *text = g_strdup_printf("%d\n", getpid());

    if (ftruncate(fd, 0) < 0 ||
        pwrite(fd, text, strlen(text), 0) != (ssize_t)strlen(text)) {
        error_setg_errno(errp, errno, "cannot write %s", lock_path);
        return false;
    }
    return true;
}

/* The path an inherited socket is bound to, for the log. */
static char *socket_name(int sock)
{
    struct sockaddr_un addr = { 0 };
    socklen_t len = sizeof(addr);

    if (getsockname(sock, (struct sockaddr *)&addr, &len) < 0 ||
        len <= offsetof(struct sockaddr_un, sun_path)) {
        return g_strdup("(unnamed)");
    }
    if (!addr.sun_path[0]) {
        return g_strdup_printf("@%.*s", (int)(len - 1 -
                               offsetof(struct sockaddr_un, sun_path)),
                               addr.sun_path + 1);
    }
    return g_strndup(addr.sun_path, sizeof(addr.sun_path));
}

static int lock_socket_path(const char *path, char **lock_path,
                            Error **errp)
{
    g_autofree char *lpath = g_strdup_printf("%s.lock", path);

    for (;;) {
        struct stat a, b;
        char pid[32] = "";
        ssize_t n;
        int fd = open(lpath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                      0600);

        if (fd < 0) {
            error_setg_errno(errp, errno, "-S %s: cannot open %s", path,
                             lpath);
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            int err = errno;

            n = read(fd, pid, sizeof(pid) - 1);
            pid[n > 0 ? n : 0] = 0;
            g_strchomp(pid);
            close(fd);
            if (err == EWOULDBLOCK) {
                error_setg(errp, "-S %s: another server is already serving "
                           "there (pid %s, holding %s)", path,
                           pid[0] ? pid : "unknown", lpath);
            } else {
                error_setg_errno(errp, err, "-S %s: cannot lock %s", path,
                                 lpath);
            }
            return -1;
        }
        /* The previous holder may have removed it before we locked it. */
        if (fstat(fd, &a) < 0 || stat(lpath, &b) < 0 ||
            a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
            close(fd);
            continue;
        }
        if (!write_lock_pid(fd, lpath, errp)) {
            error_prepend(errp, "-S %s: ", path);
            close(fd);
            return -1;
        }
        *lock_path = g_steal_pointer(&lpath);
        return fd;
    }
}

/*
 * We hold the lock, so no server of ours is on @path; remove a stale
 * socket file, unless a server that does not take the lock (an older
 * one) answers.  The probe does not block on a full backlog.
 */
static bool clear_socket_path(const char *path, struct sockaddr_un *addr,
                              Error **errp)
{
    struct stat st;
    int probe, ret, err;

    if (lstat(path, &st) < 0) {
        return true;            /* nothing there, or bind will explain */
    }
    if (!S_ISSOCK(st.st_mode)) {
        error_setg(errp, "-S %s: exists and is not a socket", path);
        return false;
    }
    probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0) {
        error_setg_errno(errp, errno, "socket");
        return false;
    }
    ret = connect(probe, (struct sockaddr *)addr, sizeof(*addr));
    err = errno;
    close(probe);
    if (ret == 0 || err == EAGAIN || err == EINPROGRESS) {
        error_setg(errp, "-S %s: another server is already listening there",
                   path);
        return false;
    }
    if (unlink(path) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot remove stale socket",
                         path);
        return false;
    }
    return true;
}

/* The default socket's directory: created 0750, group --socket-group. */
static bool make_socket_dir(const ServerOptions *o, Error **errp)
{
    if (mkdir(DEFAULT_SOCKET_DIR, 0750) < 0) {
        if (errno == EEXIST) {
            return true;
        }
        error_setg_errno(errp, errno, "cannot create " DEFAULT_SOCKET_DIR
                         " for the default socket (use -S PATH)");
        return false;
    }
    if (o->socket_group != (gid_t)-1 &&
        chown(DEFAULT_SOCKET_DIR, -1, o->socket_group) < 0) {
        error_setg_errno(errp, errno, "cannot give " DEFAULT_SOCKET_DIR
                         " to group %u", o->socket_group);
        return false;
    }
    return true;
}

/*
 * Bind @sock in a private directory, give it its mode and group there,
 * listen, then rename it onto @path.  The mode and group are set by name inside
 * a 0700 directory of ours that nobody else can change, so a local user
 * who can write to @path's directory cannot swap the socket for a
 * symlink and have the server chown or chmod another file.
 */
static bool bind_socket_privately(const ServerOptions *o, int sock,
                                  const char *path, Error **errp)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *priv = g_strdup_printf("%s/.%s.XXXXXX", dir, base);
    g_autofree char *privname = NULL;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct stat st;
    mode_t old_umask;
    int dirfd = -1, privfd = -1, ret;
    bool ok = false;

    dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot open %s", path, dir);
        return false;
    }
    if (!mkdtemp(priv)) {
        error_setg_errno(errp, errno, "-S %s: cannot create a private "
                         "directory in %s", path, dir);
        close(dirfd);
        return false;
    }
    privname = g_path_get_basename(priv);
    privfd = openat(dirfd, privname, O_PATH | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
    if (privfd < 0 || fstat(privfd, &st) < 0 || st.st_uid != geteuid() ||
        (st.st_mode & 077)) {
        error_setg(errp, "-S %s: the private directory %s was replaced",
                   path, priv);
        goto out;
    }
    /* short whatever @path's length: through our descriptor */
    snprintf(addr.sun_path, sizeof(addr.sun_path), "/proc/self/fd/%d/s",
             privfd);
    old_umask = umask(0177);    /* owner only until the mode is set */
    ret = bind(sock, (struct sockaddr *)&addr, sizeof(addr));
    umask(old_umask);
    if (ret < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot bind", path);
        goto out;
    }
    if (o->socket_group != (gid_t)-1 &&
        fchownat(privfd, "s", -1, o->socket_group,
                 AT_SYMLINK_NOFOLLOW) < 0) {
        error_setg_errno(errp, errno, "--socket-group: cannot give %s to "
                         "group %u", path, o->socket_group);
        goto out;
    }
    if (fchmodat(privfd, "s", o->socket_mode, 0) < 0) {
        error_setg_errno(errp, errno, "--socket-mode: cannot chmod %s",
                         path);
        goto out;
    }
    /* listening before it appears at @path: no client is ever refused */
    if (listen(sock, SOMAXCONN) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot listen", path);
        goto out;
    }
    if (renameat(privfd, "s", dirfd, base) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot move the socket there",
                         path);
        goto out;
    }
    ok = true;
out:
    if (privfd >= 0) {
        unlinkat(privfd, "s", 0);
        close(privfd);
    }
    if (unlinkat(dirfd, privname, AT_REMOVEDIR) < 0) {
        /* left behind: harmless, and says what happened */
    }
    close(dirfd);
    return ok;
}

static int open_listen_socket(const ServerOptions *o, const char *path,
                              Error **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int sock;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "-S %s: path longer than %zu bytes", path,
                   sizeof(addr.sun_path) - 1);
        return -1;
    }
    pstrcpy(addr.sun_path, sizeof(addr.sun_path), path);
    if (!clear_socket_path(path, &addr, errp)) {
        return -1;
    }
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0) {
        error_setg_errno(errp, errno, "socket");
        return -1;
    }
    if (!bind_socket_privately(o, sock, path, errp)) {
        close(sock);
        return -1;
    }
    return sock;
}

static void quiesce_threads_for_fork(void)
{
    rcu_disable_atfork();
    drain_call_rcu();
}

/*
 * Fork into the background.  The parent waits for the daemon to report
 * (through a pipe) that it is ready, so that its exit status tells
 * whether the server is serving.  Returns the pipe's write end.
 */
static int daemonize_start(void)
{
    int fds[2];
    pid_t pid;
    char status = 1;

    quiesce_threads_for_fork();
    if (pipe(fds) < 0) {
        perror("ivshmem-server: pipe");
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("ivshmem-server: fork");
        exit(1);
    }
    if (pid > 0) {
        char msg[1024];
        ssize_t n, len = 0;

        close(fds[1]);
        if (read(fds[0], &status, 1) != 1) {
            status = 1;
        }
        /* a start-up failure after the fork: its message follows */
        while (len < (ssize_t)sizeof(msg) - 1 &&
               (n = read(fds[0], msg + len, sizeof(msg) - 1 - len)) > 0) {
            len += n;
        }
        msg[len] = 0;
        if (len) {
            fprintf(stderr, "ivshmem-server: %s\n", msg);
        } else if (status) {
            fprintf(stderr, "ivshmem-server: the daemon failed to start "
                    "(see the system log)\n");
        }
        exit(status);
    }
    close(fds[0]);
    if (setsid() < 0) {
        perror("ivshmem-server: setsid");
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        exit(1);
    }
    if (pid > 0) {
        _exit(0);               /* the daemon can never regain a tty */
    }
    if (chdir("/") < 0) {
        /* harmless: every path we keep is absolute */
    }
    return fds[1];
}

/* Tell the launcher: @status, and @msg on a failure (it prints it). */
static void daemonize_finish(int ready_fd, char status, const char *msg)
{
    int null = open("/dev/null", O_RDWR);

    if (null < 0 || dup2(null, STDIN_FILENO) < 0 ||
        dup2(null, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0) {
        server_error("cannot redirect stdio to /dev/null: %s",
                     strerror(errno));
        status = 1;
    }
    if (null > STDERR_FILENO) {
        close(null);
    }
    if (write(ready_fd, &status, 1) != 1 ||
        (msg && write(ready_fd, msg, strlen(msg)) < 0)) {
        /* the parent is gone; nothing to tell */
    }
    close(ready_fd);
}

/* The pidfile: not through a symlink, and locked while we run. */
static int write_pidfile(const char *path, Error **errp)
{
    g_autofree char *text = g_strdup_printf("%d\n", getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);

    if (fd < 0) {
        error_setg_errno(errp, errno, "-p %s: cannot open", path);
        return -1;
    }
    if (lockf(fd, F_TLOCK, 0) < 0) {
        error_setg_errno(errp, errno, "-p %s: cannot lock (is another "
                         "server using it?)", path);
        close(fd);
        return -1;
    }
    if (ftruncate(fd, 0) < 0 ||
        write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        error_setg_errno(errp, errno, "-p %s: cannot write", path);
        close(fd);
        return -1;
    }
    return fd;
}

static bool open_shm(const ServerOptions *o, ServerShm *shm, Error **errp)
{
    if (o->memfd) {
        return server_shm_open_memfd(shm, o->size, errp);
    }
    if (o->shm_dir) {
        return server_shm_open_dir(shm, o->shm_dir, o->size, !o->sparse,
                                   errp);
    }
    return server_shm_open_posix(shm, o->shm_name, o->size, o->shm_group,
                                 !o->sparse, errp);
}

static void remove_file(const char *path)
{
    if (path && unlink(path) < 0 && errno != ENOENT) {
        server_error("cannot remove %s: %s", path, strerror(errno));
    }
}

static void die(const char *prog, Error *err)
{
    fprintf(stderr, "%s: ", prog);
    error_report_err(err);
    exit(1);
}

/* A daemon keeps none of its parent's descriptors but systemd's socket. */
static void close_inherited_fds(void)
{
    int first = LISTEN_FDS_START;
    const char *pid = getenv("LISTEN_PID");

    if (pid && atoi(pid) == getpid()) {
        first++;
    }
    if (close_range(first, ~0U, 0) < 0) {
        perror("ivshmem-server: close_range");
    }
}

int main(int argc, char **argv)
{
    g_autofree char *prog = g_path_get_basename(argv[0]);
    g_autofree char *socket_path = NULL;
    g_autofree char *lock_path = NULL;
    g_autofree char *pidfile = NULL;
    g_autofree char *listen_name = NULL;
    IvshmemServerConfig cfg;
    IvshmemServer server;
    ServerOptions o;
    ServerShm shm;
    Error *err = NULL;
    int sock, ready_fd = -1, lock_fd = -1, pid_fd = -1;
    bool activated, ok, log_ok;

    if (!parse_options(argc, argv, &o, &err) ||
        !check_fd_limit(&o, &err)) {
        die(prog, err);
    }
    if (!o.foreground) {
        close_inherited_fds();
    }
    /* Absolute, so that clean-up works after the daemon's chdir("/"). */
    socket_path = g_canonicalize_filename(o.socket_path, NULL);
    pidfile = o.pidfile ? g_canonicalize_filename(o.pidfile, NULL) : NULL;

    sock = inherited_socket(&err);
    if (sock == -2) {
        die(prog, err);
    }
    activated = sock >= 0;
    if (!activated) {
        if (!strcmp(o.socket_path, DEFAULT_SOCKET) &&
            !make_socket_dir(&o, &err)) {
            die(prog, err);
        }
        lock_fd = lock_socket_path(socket_path, &lock_path, &err);
        if (lock_fd < 0) {
            die(prog, err);
        }
    }
    if (!open_shm(&o, &shm, &err)) {
        remove_file(lock_path);
        die(prog, err);
    }
    if (!activated) {
        sock = open_listen_socket(&o, socket_path, &err);
        if (sock < 0) {
            server_shm_cleanup(&shm);
            remove_file(lock_path);
            die(prog, err);
        }
    }
    if (!o.foreground) {
        ready_fd = daemonize_start();
    }
    server_log_setup(!o.foreground, o.verbose);
    cfg = (IvshmemServerConfig) {
        .nvectors = o.nvectors,
        .queue_limit = o.queue_limit,
        .queue_fds = o.queue_fds,
        .fds_in_flight = o.fds_in_flight,
        .max_peers = o.max_peers,
        .setup_timeout_ms = o.setup_timeout * 1000,
        .user_share = o.user_share,
        .allow_uids = o.allow_uids,
        .allow_gids = o.allow_gids,
    };
    ok = (lock_fd < 0 || o.foreground ||
          write_lock_pid(lock_fd, lock_path, &err)) &&
         (!pidfile || (pid_fd = write_pidfile(pidfile, &err)) >= 0);
    if (ok && !ivshmem_server_init(&server, sock, shm.fd, &cfg, &err)) {
        ivshmem_server_cleanup(&server);    /* it owns sock and shm.fd */
        shm.fd = -1;
        ok = false;
    }
    if (!ok) {
        g_autofree char *msg = g_strdup(error_get_pretty(err));

        server_error("%s", msg);
        error_free(err);
        g_array_free(o.allow_uids, true);
        g_array_free(o.allow_gids, true);
        if (!activated) {
            remove_file(socket_path);
        }
        remove_file(lock_path);
        server_shm_cleanup(&shm);
        if (ready_fd >= 0) {
            daemonize_finish(ready_fd, 1, msg);
        }
        return 1;
    }
    shm.fd = -1;                /* the server owns it now */
    if (activated) {
        listen_name = socket_name(sock);
    }
    server_log("listening on %s%s: %" PRIu64 " bytes of %sshared memory, "
               "%u vectors per peer, at most %u peers",
               activated ? "the socket from systemd, " : "",
               activated ? listen_name : socket_path,
               shm.size, o.memfd ? "sealed memfd " : "", o.nvectors,
               o.max_peers);
    if (ready_fd >= 0) {
        daemonize_finish(ready_fd, 0, NULL);
    }

    log_ok = ivshmem_server_run(&server);

    ivshmem_server_cleanup(&server);
    if (!activated) {
        remove_file(socket_path);   /* systemd owns an inherited one */
    }
    if (pidfile) {
        remove_file(pidfile);
        close(pid_fd);
    }
    remove_file(lock_path);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    server_shm_cleanup(&shm);
    g_array_free(o.allow_uids, true);
    g_array_free(o.allow_gids, true);
    if (!log_ok) {
        /* exit() could wait for the stdio lock the log writer holds */
        _exit(0);
    }
    return 0;
}
