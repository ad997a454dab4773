/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-server: logging that never blocks the event loop. */
#ifndef IVSHMEM_SERVER_LOG_H
#define IVSHMEM_SERVER_LOG_H

/* Logging: stderr, or syslog once daemonized; -v enables DEBUG lines. */
void server_log_setup(bool use_syslog, bool verbose);
/*
 * From here on, lines go through a writer thread: a blocked stderr or
 * syslog never stalls the caller; past LOG_QUEUE_MAX waiting lines, lines
 * are counted and dropped, and the count is logged once writing resumes.
 */
void server_log_start_thread(void);
/*
 * Write what is queued and stop the writer thread, waiting at most 2 s.
 * False if the writer is stuck (stderr or syslog not read): then it is
 * left behind, what was queued is counted on stderr if that cannot block,
 * nothing more is logged, and the caller must leave with _exit().
 */
bool server_log_stop_thread(void);
void G_GNUC_PRINTF(1, 2) server_log(const char *fmt, ...);
void G_GNUC_PRINTF(1, 2) server_debug(const char *fmt, ...);
void G_GNUC_PRINTF(1, 2) server_error(const char *fmt, ...);

#endif
