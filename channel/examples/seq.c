/* SPDX-License-Identifier: MIT */
/*
 * Restarts seen by an application: a sender numbers its messages within
 * its incarnation, a receiver logs every message it is handed and every
 * restart it is told of, one write(2) a line, so a log survives SIGKILL
 * and several receiver incarnations append to one log.
 *   seq send [-S SOCK|-d DEV|-p FILE] [-n COUNT] [-i INTERVAL_US] [-r RING]
 *   seq recv [-S SOCK|-d DEV|-p FILE] [-n COUNT] [-r RING] -l LOG
 * Message: {u64 sender epoch (ivc_epoch), u64 seq from 0, u64 checksum}
 * and 40 bytes of pattern.  Sender output: "S epoch" once attached,
 * "R seq" when told the receiver restarted.  Receiver log: "S epoch" once
 * attached, "M epoch seq dropped" per message (dropped: records of a
 * previous sender incarnation the library dropped so far), "R dropped"
 * per -ECONNRESET, "X epoch seq" for a corrupt message, "E error" before
 * giving up.  e2e/channel_e2e.py checks the logs.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <time.h>
#include "common.h"

#define MSG 64

struct msg {
    uint64_t epoch, seq, sum;
    unsigned char pat[MSG - 24];
};

static uint64_t fill(struct msg *m)
{
    uint64_t s = m->epoch * 31 + m->seq;

    for (unsigned i = 0; i < sizeof(m->pat); i++) {
        m->pat[i] = (unsigned char)(m->seq + i * 7);
        s = s * 131 + m->pat[i];
    }
    return s;
}

static void line(int fd, const char *fmt, ...)
{
    char buf[128];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (write(fd, buf, (size_t)n) != n)
        exit(3);
}

int main(int argc, char **argv)
{
    struct ex_attach a = { 0 };
    struct ivc_channel_opts o = { .ring_size = 4096 };
    const char *log = NULL;
    long count = 0, interval = 1000;
    int opt;

    if (argc < 2 || (strcmp(argv[1], "send") && strcmp(argv[1], "recv"))) {
        fprintf(stderr, "usage: seq send|recv [-S SOCK|-d DEV|-p FILE] [-n COUNT] "
                "[-i INTERVAL_US] [-r RING] [-l LOG]\n" EX_USAGE_ATTACH);
        return 2;
    }
    int send = !strcmp(argv[1], "send");
    optind = 2;
    while ((opt = getopt(argc, argv, "S:p:d:n:i:r:l:")) != -1) {
        if (ex_attach_opt(&a, opt, optarg))
            continue;
        switch (opt) {
        case 'n': count = atol(optarg); break;
        case 'i': interval = atol(optarg); break;
        case 'r': o.ring_size = (uint32_t)strtoul(optarg, NULL, 0); break;
        case 'l': log = optarg; break;
        default: return 2;
        }
    }
    if ((!a.server && !a.device && !a.path) || (!send && !log)) {
        fprintf(stderr, "seq: give -S, -d or -p (and -l LOG to recv)\n");
        return 2;
    }
    a.size = 1 << 20;
    ex_prepare(&a, a.size);
    int side = send ? IVC_SIDE_A : IVC_SIDE_B;
    struct ivc_region *r = ex_region(&a, side);
    struct ivc_channel *ch;
    int ret = ivc_channel_open(r, "seq", &o, side, IVC_F_CREATE, &ch);
    if (ret < 0)
        ex_die("channel seq", ret);
    struct msg m;
    if (send) {
        struct timespec ts = { 0, interval * 1000 };
        m.epoch = ivc_epoch(ch);
        line(1, "S %llu\n", (unsigned long long)m.epoch);
        for (m.seq = 0; !count || m.seq < (uint64_t)count; m.seq++) {
            m.sum = fill(&m);
            while ((ret = ivc_send(ch, &m, sizeof(m), IVC_F_WAIT)) == -ECONNRESET)
                line(1, "R %llu\n", (unsigned long long)m.seq);
            if (ret < 0)
                ex_die("seq send", ret);
            if (interval)
                nanosleep(&ts, NULL);
        }
        return 0;
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        ex_die(log, -errno);
    line(fd, "S %llu\n", (unsigned long long)ivc_epoch(ch));
    struct ivc_stats st;
    for (long got = 0; !count || got < count;) {
        ssize_t n = ivc_recv(ch, &m, sizeof(m), IVC_F_WAIT);
        ivc_channel_stats(ch, &st);
        if (n == -ECONNRESET) {
            line(fd, "R %llu\n", (unsigned long long)st.dropped_stale);
            continue;
        }
        if (n < 0) {
            line(fd, "E %s\n", ivc_strerror((int)n));
            return 1;
        }
        uint64_t sum = m.sum;
        if (n != sizeof(m) || fill(&m) != sum)
            line(fd, "X %llu %llu\n", (unsigned long long)m.epoch, (unsigned long long)m.seq);
        else
            line(fd, "M %llu %llu %llu\n", (unsigned long long)m.epoch,
                 (unsigned long long)m.seq, (unsigned long long)st.dropped_stale);
        got++;
    }
    return 0;
}
