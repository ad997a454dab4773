/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: logging that never blocks the event loop. */

#include "qemu/osdep.h"
#include <syslog.h>
#include "log.h"

#define LOG_QUEUE_MAX 4096

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
        LogLine *line = g_queue_pop_head(&log_queue);
        uint64_t dropped = log_dropped;

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
    g_mutex_unlock(&log_lock);
    return NULL;
}

void server_log_start_thread(void)
{
    log_stopping = false;
    log_thread = g_thread_new("ivshmem-log", log_writer, NULL);
}

void server_log_stop_thread(void)
{
    if (!log_thread) {
        return;
    }
    g_mutex_lock(&log_lock);
    log_stopping = true;
    g_cond_signal(&log_cond);
    g_mutex_unlock(&log_lock);
    g_thread_join(log_thread);
    log_thread = NULL;
}

static void G_GNUC_PRINTF(2, 0)
server_vlog(int priority, const char *fmt, va_list ap)
{
    LogLine *line;

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
