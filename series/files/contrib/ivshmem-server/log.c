/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: logging that never blocks the event loop. */

#include "qemu/osdep.h"
#include <poll.h>
#include <syslog.h>
#include "log.h"

#define LOG_QUEUE_MAX 4096
/* How long shutdown waits for the writer to write what is queued. */
#define LOG_STOP_TIMEOUT_US (2 * G_TIME_SPAN_SECOND)

typedef struct LogLine {
    int priority;
    char *text;
} LogLine;

static bool log_to_syslog;
static bool log_verbose;

static GMutex log_lock;
static GCond log_cond;
static GQueue log_queue = G_QUEUE_INIT;
static GThread *log_thread;
static bool log_stopping;
static bool log_stopped;        /* the writer has returned */
static bool log_abandoned;      /* the writer is stuck: write nothing */
static uint64_t log_dropped;

void server_log_setup(bool use_syslog, bool verbose)
{
    log_to_syslog = use_syslog;
    log_verbose = verbose;
    if (use_syslog) {
        openlog("ivshmem-server", LOG_PID, LOG_DAEMON);
    }
}

/* May block: only the writer thread, or the caller before it starts. */
static void log_write(int priority, const char *text)
{
    if (log_to_syslog) {
        syslog(priority, "%s", text);
    } else {
        /* SIGPIPE is ignored: a vanished reader only fails the write. */
        fprintf(stderr, "ivshmem-server: %s\n", text);
        fflush(stderr);
    }
}

static gpointer log_writer(gpointer opaque)
{
    g_mutex_lock(&log_lock);
    for (;;) {
        LogLine *line;
        uint64_t dropped;

        if (log_abandoned) {
            break;
        }
        line = g_queue_pop_head(&log_queue);
        dropped = log_dropped;

        if (!line && !dropped) {
            if (log_stopping) {
                break;
            }
            g_cond_wait(&log_cond, &log_lock);
            continue;
        }
        log_dropped = 0;
        g_mutex_unlock(&log_lock);
        if (line) {
            log_write(line->priority, line->text);
            g_free(line->text);
            g_free(line);
        }
        if (dropped) {
            g_autofree char *text = g_strdup_printf(
                "%" PRIu64 " log lines dropped (the log was not being read)",
                dropped);

            log_write(LOG_WARNING, text);
        }
        g_mutex_lock(&log_lock);
    }
    log_stopped = true;
    g_cond_broadcast(&log_cond);
    g_mutex_unlock(&log_lock);
    return NULL;
}

void server_log_start_thread(void)
{
    log_stopping = false;
    log_stopped = false;
    log_thread = g_thread_new("ivshmem-log", log_writer, NULL);
}

/*
 * A line on stderr only if it cannot block: the stuck writer holds the
 * stdio lock of stderr, and a full pipe blocks write().
 */
static void report_unwritten(uint64_t lines)
{
    g_autofree char *text = g_strdup_printf(
        "ivshmem-server: exiting with %" PRIu64 " log lines unwritten (the "
        "log was not being read)\n", lines);
    struct pollfd pfd = { .fd = STDERR_FILENO, .events = POLLOUT };

    if (!log_to_syslog && poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT) &&
        write(STDERR_FILENO, text, strlen(text)) < 0) {
        /* nobody to tell */
    }
}

bool server_log_stop_thread(void)
{
    gint64 end = g_get_monotonic_time() + LOG_STOP_TIMEOUT_US;
    uint64_t unwritten;

    if (!log_thread) {
        return !log_abandoned;
    }
    g_mutex_lock(&log_lock);
    log_stopping = true;
    g_cond_broadcast(&log_cond);
    while (!log_stopped) {
        if (!g_cond_wait_until(&log_cond, &log_lock, end)) {
            break;
        }
    }
    if (log_stopped) {
        g_mutex_unlock(&log_lock);
        g_thread_join(log_thread);
        log_thread = NULL;
        return true;
    }
    /*
     * The writer is stuck in write() or syslog(): leave it there (exit
     * ends it), drop what is queued, and log nothing more.
     */
    log_abandoned = true;
    unwritten = log_dropped + g_queue_get_length(&log_queue);
    log_dropped = 0;
    g_mutex_unlock(&log_lock);
    g_thread_unref(log_thread);
    log_thread = NULL;
    report_unwritten(unwritten);
    return false;
}

static void G_GNUC_PRINTF(2, 0)
server_vlog(int priority, const char *fmt, va_list ap)
{
    LogLine *line;

    if (log_abandoned) {
        return;
    }
    if (!log_thread) {
        g_autofree char *text = g_strdup_vprintf(fmt, ap);

        log_write(priority, text);
        return;
    }
    g_mutex_lock(&log_lock);
    if (g_queue_get_length(&log_queue) >= LOG_QUEUE_MAX) {
        log_dropped++;
    } else {
        line = g_new(LogLine, 1);
        line->priority = priority;
        line->text = g_strdup_vprintf(fmt, ap);
        g_queue_push_tail(&log_queue, line);
        g_cond_signal(&log_cond);
    }
    g_mutex_unlock(&log_lock);
}

void server_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    server_vlog(LOG_INFO, fmt, ap);
    va_end(ap);
}

void server_debug(const char *fmt, ...)
{
    va_list ap;

    if (!log_verbose) {
        return;
    }
    va_start(ap, fmt);
    server_vlog(LOG_DEBUG, fmt, ap);
    va_end(ap);
}

void server_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    server_vlog(LOG_ERR, fmt, ap);
    va_end(ap);
}
