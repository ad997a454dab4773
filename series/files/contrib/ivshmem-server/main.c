/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: command line, socket, daemon mode and pidfile. */

#include "qemu/osdep.h"
#include <getopt.h>
#include <sys/resource.h>
#include <sys/un.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/host-utils.h"
#include "qemu/rcu.h"
#include "qemu/units.h"
#include "shm.h"
#include "ivshmem-server.h"

#define DEFAULT_SOCKET  "/tmp/ivshmem_socket"
#define DEFAULT_SHM     "ivshmem"
#define DEFAULT_SIZE    (4 * MiB)

typedef struct ServerOptions {
    bool foreground;            /* -F */
    bool verbose;               /* -v */
    const char *socket_path;    /* -S */
    const char *pidfile;        /* -p */
    const char *shm_name;       /* -M */
    const char *shm_dir;        /* -m */
    uint64_t size;              /* -l */
    uint32_t nvectors;          /* -n */
    size_t queue_limit;         /* -q */
} ServerOptions;

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
"Usage: %s [OPTION]...\n"
"Hand shared memory and interrupt eventfds to ivshmem peers (QEMU\n"
"ivshmem-doorbell devices, ivshmem-client) over a UNIX socket, using\n"
"protocol version 0.\n"
"\n"
"  -S, --socket PATH       listen on PATH (default " DEFAULT_SOCKET ").\n"
"                          A live server already on PATH is refused;\n"
"                          a stale socket file is replaced\n"
"  -M, --shm NAME          POSIX shared memory object NAME (/dev/shm/NAME),\n"
"                          created and sized if missing; an existing one\n"
"                          must have the size of -l (default " DEFAULT_SHM ")\n"
"  -m, --shm-dir DIR       instead of -M: an unlinked file in DIR (e.g. a\n"
"                          hugetlbfs mount), size rounded up to DIR's\n"
"                          block (huge page) size\n"
"  -l, --size SIZE         region size, a power of two, with optional\n"
"                          K/M/G/T suffix (default 4M)\n"
"  -n, --vectors N         interrupt vectors (eventfds) per peer,\n"
"                          1..65536 (default 1)\n"
"  -p, --pidfile FILE      write the server's PID to FILE\n"
"  -F, --foreground        stay in the foreground, log to stderr\n"
"                          (default: become a daemon, log to syslog)\n"
"  -q, --queue-limit N     messages a client may leave unread beyond its\n"
"                          setup before it is dropped (default %d per\n"
"                          vector)\n"
"  -v, --verbose           log more detail\n"
"  -h, --help              show this help\n"
"\n"
"Peer IDs go up from 0 and wrap after 65535, skipping IDs in use: a\n"
"departed peer's ID is reused only after all others have been handed out.\n"
"Logs: one line per peer joining or leaving, with its ID and vectors.\n"
"SIGTERM/SIGINT remove the socket, the pidfile and the shared memory\n"
"object if this server created it.\n",
            prog, IVSHMEM_SERVER_QUEUE_PER_VECTOR);
}

static bool parse_size(const char *arg, uint64_t *size, Error **errp)
{
    if (qemu_strtosz(arg, NULL, size) < 0 || *size == 0) {
        error_setg(errp, "-l %s: not a size (use e.g. 4M, 1G)", arg);
        return false;
    }
    if (!is_power_of_2(*size) || *size > (UINT64_MAX >> 1)) {
        error_setg(errp, "-l %s: size must be a power of two", arg);
        return false;
    }
    return true;
}

static bool parse_count(const char *flag, const char *arg, uint64_t min,
                       uint64_t max, uint64_t *val, Error **errp)
{
    if (qemu_strtou64(arg, NULL, 10, val) < 0 || *val < min || *val > max) {
        error_setg(errp, "%s %s: expected an integer in %" PRIu64
                   "..%" PRIu64, flag, arg, min, max);
        return false;
    }
    return true;
}

static bool parse_options(int argc, char **argv, ServerOptions *o,
                          Error **errp)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 'S' },
        { "shm", required_argument, NULL, 'M' },
        { "shm-dir", required_argument, NULL, 'm' },
        { "size", required_argument, NULL, 'l' },
        { "vectors", required_argument, NULL, 'n' },
        { "pidfile", required_argument, NULL, 'p' },
        { "foreground", no_argument, NULL, 'F' },
        { "queue-limit", required_argument, NULL, 'q' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    uint64_t val;
    int c;

    *o = (ServerOptions) {
        .socket_path = DEFAULT_SOCKET,
        .size = DEFAULT_SIZE,
        .nvectors = 1,
    };
    while ((c = getopt_long(argc, argv, "S:M:m:l:n:p:Fq:vh",
                            longopts, NULL)) != -1) {
        switch (c) {
        case 'S':
            o->socket_path = optarg;
            break;
        case 'M':
            o->shm_name = optarg;
            break;
        case 'm':
            o->shm_dir = optarg;
            break;
        case 'l':
            if (!parse_size(optarg, &o->size, errp)) {
                return false;
            }
            break;
        case 'n':
            if (!parse_count("-n", optarg, 1, IVSHMEM_MAX_VECTORS, &val,
                            errp)) {
                return false;
            }
            o->nvectors = val;
            break;
        case 'p':
            o->pidfile = optarg;
            break;
        case 'F':
            o->foreground = true;
            break;
        case 'q':
            if (!parse_count("-q", optarg, 1, SIZE_MAX / 2, &val, errp)) {
                return false;
            }
            o->queue_limit = val;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'h':
            usage(stdout, argv[0]);
            exit(0);
        default:
            error_setg(errp, "invalid option (see --help)");
            return false;
        }
    }
    if (optind < argc) {
        error_setg(errp, "unexpected argument '%s' (see --help)",
                   argv[optind]);
        return false;
    }
    if (o->shm_name && o->shm_dir) {
        error_setg(errp, "-M and -m are mutually exclusive");
        return false;
    }
    if (!o->shm_dir && !o->shm_name) {
        o->shm_name = DEFAULT_SHM;
    }
    if (!o->socket_path[0]) {
        error_setg(errp, "-S: empty socket path");
        return false;
    }
    return true;
}

/* Descriptors are the server's main resource: take all we may. */
static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Is a server accepting on @path?  Removes a stale socket file. */
static bool clear_socket_path(const char *path, struct sockaddr_un *addr,
                              Error **errp)
{
    struct stat st;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ret, err;

    if (probe < 0) {
        error_setg_errno(errp, errno, "socket");
        return false;
    }
    ret = connect(probe, (struct sockaddr *)addr, sizeof(*addr));
    err = errno;
    close(probe);
    if (ret == 0) {
        error_setg(errp, "-S %s: another server is already listening there",
                   path);
        return false;
    }
    if (err != ECONNREFUSED || lstat(path, &st) < 0) {
        return true;            /* nothing there, or bind will explain */
    }
    if (!S_ISSOCK(st.st_mode)) {
        error_setg(errp, "-S %s: exists and is not a socket", path);
        return false;
    }
    if (unlink(path) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot remove stale socket",
                         path);
        return false;
    }
    return true;
}

static int open_listen_socket(const char *path, Error **errp)
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
    if (bind(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot bind", path);
        close(sock);
        return -1;
    }
    if (listen(sock, SOMAXCONN) < 0) {
        error_setg_errno(errp, errno, "-S %s: cannot listen", path);
        close(sock);
        unlink(path);
        return -1;
    }
    return sock;
}

/*
 * fork() copies only the calling thread: a lock that another thread holds
 * at that moment stays locked forever in the child.  QEMU's util/rcu.c
 * starts its call_rcu thread from a constructor, before main(), and by
 * default starts a new one in every child from a pthread_atfork() handler,
 * and GCC 12's libasan does not lock its allocator around fork().  So a
 * daemon forked while such a thread was starting could inherit a held
 * allocator lock, and hang in LeakSanitizer's check at exit.  The server
 * queues no RCU callbacks: its children get no call_rcu thread, and the
 * parent forks only once its own has run a callback, after which that
 * thread just sleeps and waits for the next one.
 */
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
        close(fds[1]);
        if (read(fds[0], &status, 1) != 1) {
            status = 1;
        }
        exit(status);
    }
    close(fds[0]);
    setsid();
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

static void daemonize_finish(int ready_fd, char status)
{
    int null = open("/dev/null", O_RDWR);

    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO) {
            close(null);
        }
    }
    if (write(ready_fd, &status, 1) != 1) {
        /* the parent is gone; nothing to tell */
    }
    close(ready_fd);
}

static bool open_shm(const ServerOptions *o, ServerShm *shm, Error **errp)
{
    if (o->shm_dir) {
        return server_shm_open_dir(shm, o->shm_dir, o->size, errp);
    }
    return server_shm_open_posix(shm, o->shm_name, o->size, errp);
}

static void die(const char *prog, Error *err)
{
    fprintf(stderr, "%s: ", prog);
    error_report_err(err);
    exit(1);
}

int main(int argc, char **argv)
{
    g_autofree char *prog = g_path_get_basename(argv[0]);
    g_autofree char *socket_path = NULL;
    g_autofree char *pidfile = NULL;
    IvshmemServer server;
    ServerOptions o;
    ServerShm shm;
    Error *err = NULL;
    int sock, ready_fd = -1;

    if (!parse_options(argc, argv, &o, &err)) {
        die(prog, err);
    }
    if (!o.queue_limit) {
        o.queue_limit = (size_t)IVSHMEM_SERVER_QUEUE_PER_VECTOR * o.nvectors;
    }
    /* Absolute, so that clean-up works after the daemon's chdir("/"). */
    socket_path = g_canonicalize_filename(o.socket_path, NULL);
    pidfile = o.pidfile ? g_canonicalize_filename(o.pidfile, NULL) : NULL;
    raise_fd_limit();

    if (!open_shm(&o, &shm, &err)) {
        die(prog, err);
    }
    sock = open_listen_socket(socket_path, &err);
    if (sock < 0) {
        server_shm_cleanup(&shm);
        die(prog, err);
    }
    if (!o.foreground) {
        ready_fd = daemonize_start();
    }
    server_log_setup(!o.foreground, o.verbose);
    if ((pidfile && !qemu_write_pidfile(pidfile, &err)) ||
        !ivshmem_server_init(&server, sock, shm.fd, o.nvectors,
                             o.queue_limit, &err)) {
        server_error("%s", error_get_pretty(err));
        unlink(socket_path);
        server_shm_cleanup(&shm);
        if (ready_fd >= 0) {
            daemonize_finish(ready_fd, 1);
        }
        return 1;
    }
    shm.fd = -1;                /* the server owns it now */
    server_log("listening on %s: %" PRIu64 " bytes of shared memory, "
               "%u vectors per peer", socket_path, shm.size, o.nvectors);
    if (ready_fd >= 0) {
        daemonize_finish(ready_fd, 0);
    }

    ivshmem_server_run(&server);

    ivshmem_server_cleanup(&server);
    unlink(socket_path);
    if (pidfile) {
        unlink(pidfile);
    }
    server_shm_cleanup(&shm);
    return 0;
}
