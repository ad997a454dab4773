/* SPDX-License-Identifier: MIT */
/*
 * libivshmem-channel restart test: producer and consumer processes killed
 * with SIGKILL mid-stream and started again over one memfd.  Every message
 * carries the producer's incarnation and a sequence number within it; the
 * consumer keeps its progress in "durable" memory (as an application would
 * on disk) and checks: no message of an older incarnation after a newer
 * one, each incarnation's stream complete and in order from 0, restarts
 * reported to the application (-ECONNRESET), no duplicate across a
 * consumer restart, a killed producer detected by heartbeat (-EPIPE).
 * TAP output.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include "ivshmem/channel.h"
#include "testutil.h"

#define STOP UINT64_MAX

struct msg {
    uint64_t epoch, seq;
    uint32_t crc, len;
    uint8_t body[200];
};

struct shared {
    /* consumer, durable */
    uint64_t max_epoch, last_seq, received, in_epoch;
    uint64_t resets, epipes, older, gaps, dup_or_reorder, first_not_zero, untold, bad_sum;
    uint64_t big_gaps, restart_gaps;
    uint64_t consumer_restarted;     /* set by the parent before starting a new consumer */
    uint64_t told_since_epoch;
    uint64_t stopped, dropped, consumer_up, stop_producer;
    /* producer */
    uint64_t prod_resets, prod_sent;
};

static struct shared *sh;
static int memfd, ea, eb;

static struct ivc_channel *open_side(int side, uint64_t timeout_ns)
{
    struct ivc_region *r;
    struct ivc_channel *ch;
    struct ivc_channel_opts o = { .ring_size = 16384, .peer_timeout_ns = timeout_ns,
                                  .spin_ns = 5000 };
    if (ivc_region_open_fd(memfd, 0, IVC_F_CREATE, &r) < 0)
        _exit(3);
    ivc_region_set_id(r, (unsigned)side);
    ivc_region_set_own_vector(r, 0, side == IVC_SIDE_A ? ea : eb);
    ivc_region_set_doorbell(r, (unsigned)!side, 0, side == IVC_SIDE_A ? eb : ea);
    if (ivc_channel_open(r, "restart", &o, side, IVC_F_CREATE, &ch) < 0)
        _exit(4);
    return ch;
}

/* Sends @count messages (forever if 0), then STOP if @count. */
static void producer(uint64_t count)
{
    struct ivc_channel *ch = open_side(IVC_SIDE_A, 0);
    struct msg m;

    for (uint64_t seq = 0; !count || seq <= count; seq++) {
        int last = (count && seq == count) ||
                   __atomic_load_n(&sh->stop_producer, __ATOMIC_SEQ_CST);
        memset(&m, 0, sizeof(m));
        m.epoch = ivc_epoch(ch);
        m.seq = last ? STOP : seq;
        m.len = 32 + (uint32_t)(seq % 160);
        for (uint32_t i = 0; i < m.len; i++)
            m.body[i] = (uint8_t)(seq + i);
        m.crc = t_crc(m.body, m.len);
        int ret;
        while ((ret = ivc_send(ch, &m, offsetof(struct msg, body) + m.len,
                               IVC_F_WAIT)) == -ECONNRESET)
        {
            __atomic_fetch_add(&sh->prod_resets, 1, __ATOMIC_SEQ_CST);
            if (getenv("DEBUG"))
                fprintf(stderr, "producer: reset at seq %llu, consumer epoch %llu\n",
                        (unsigned long long)seq, (unsigned long long)ivc_peer_epoch(ch));
        }
        if (ret < 0) {
            fprintf(stderr, "producer: %s\n", ivc_strerror(ret));
            _exit(5);
        }
        __atomic_fetch_add(&sh->prod_sent, 1, __ATOMIC_SEQ_CST);
        if (last)
            break;
    }
    ivc_channel_close(ch);
    _exit(0);
}

static void consumer(void)
{
    struct ivc_channel *ch = open_side(IVC_SIDE_B, 1000000000ull);
    struct msg m;
    int restarted = sh->consumer_restarted != 0;

    __atomic_store_n(&sh->consumer_up, 1, __ATOMIC_SEQ_CST);

    for (;;) {
        ssize_t n = ivc_recv(ch, &m, sizeof(m), IVC_F_WAIT);

        if (n == -ECONNRESET) {
            sh->resets++;
            sh->told_since_epoch = 1;
            continue;
        }
        if (n == -EPIPE) {          /* heartbeat timed out: wait on */
            sh->epipes++;
            while (ivc_peer_state(ch) == IVC_PEER_GONE)
                usleep(10000);
            continue;
        }
        if (n < 0) {
            fprintf(stderr, "consumer: %s\n", ivc_strerror((int)n));
            _exit(6);
        }
        if (m.seq == STOP) {
            struct ivc_stats st;
            ivc_channel_stats(ch, &st);
            sh->dropped = st.dropped_stale;
            sh->stopped = 1;
            _exit(0);
        }
        if (m.crc != t_crc(m.body, m.len < 200 ? m.len : 200))
            sh->bad_sum++;
        if (m.epoch < sh->max_epoch ||
            (sh->told_since_epoch && m.epoch == sh->max_epoch)) {
            sh->older++;        /* older, or the old one after a restart was told */
        } else if (m.epoch > sh->max_epoch) {
            if (m.seq != 0)
                sh->first_not_zero++;
            if (sh->max_epoch && !sh->told_since_epoch)
                sh->untold++;
            sh->max_epoch = m.epoch;
            sh->told_since_epoch = 0;
            sh->in_epoch = 1;
        } else if (restarted) {
            /* first message after our own restart: at most the one we
             * had consumed but not recorded is missing */
            if (m.seq == sh->last_seq + 2)
                sh->restart_gaps++;
            else if (m.seq != sh->last_seq + 1)
                sh->big_gaps++;
            sh->in_epoch++;
        } else if (m.seq != sh->last_seq + 1) {
            sh->dup_or_reorder++;
        } else {
            sh->in_epoch++;
        }
        restarted = 0;
        sh->last_seq = m.seq;
        __atomic_store_n(&sh->received, sh->received + 1, __ATOMIC_SEQ_CST);
    }
}

static pid_t spawn(void (*fn)(uint64_t), uint64_t arg)
{
    pid_t p = fork();

    if (p == 0)
        fn(arg);
    return p;
}

static void consumer_fn(uint64_t unused)
{
    consumer();
}

/* Wait until the consumer's in-epoch count reaches @n (at most 60 s). */
static int wait_for(uint64_t *what, uint64_t n)
{
    for (int i = 0; i < 6000; i++) {
        if (__atomic_load_n(what, __ATOMIC_SEQ_CST) >= n)
            return 0;
        usleep(10000);
    }
    return -1;
}

static int reap(pid_t p)
{
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(p, &st, WNOHANG) == p)
            return st;
        usleep(10000);
    }
    kill(p, SIGKILL);
    waitpid(p, &st, 0);
    return -1;
}

int main(void)
{
    enum { KILLS = 5, PER = 5000 };
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memfd = t_memfd(1 << 20);
    ea = eventfd(0, EFD_NONBLOCK);
    eb = eventfd(0, EFD_NONBLOCK);

    /* 1. producer killed and restarted KILLS times */
    pid_t c = spawn(consumer_fn, 0);
    int timeouts = 0;
    pid_t p = spawn(producer, 0);
    for (int k = 0; k < KILLS; k++) {
        timeouts += wait_for(&sh->in_epoch, PER) < 0;
        if (getenv("DEBUG")) fprintf(stderr, "k=%d recv=%llu in_epoch=%llu resets=%llu\n", k, (unsigned long long)sh->received, (unsigned long long)sh->in_epoch, (unsigned long long)sh->resets);
        /* stop the consumer so the ring fills, kill the producer with its
         * records in the ring, start the next one, then resume the consumer */
        kill(c, SIGSTOP);
        usleep(100000);
        kill(p, SIGKILL);
        waitpid(p, NULL, 0);
        sh->in_epoch = 0;
        if (k == 0) {
            kill(c, SIGCONT);
            usleep(2500000);        /* longer than the 1 s heartbeat timeout */
        }
        p = spawn(producer, k == KILLS - 1 ? PER : 0);
        usleep(100000);
        if (k != 0)
            kill(c, SIGCONT);
    }
    int stp = reap(p), stc = reap(c);
    t_ok(timeouts == 0 && stp == 0 && stc == 0 && sh->stopped,
         "producer killed %d times mid-stream, restarted, final run ends cleanly", KILLS);
    t_ok(sh->older == 0 && sh->first_not_zero == 0 && sh->dup_or_reorder == 0 && sh->bad_sum == 0 &&
         sh->dropped > 0,
         "%llu received, %llu stale records dropped: %llu from an older incarnation after a newer "
         "one or the restart, %llu incarnations "
         "not starting at 0, %llu duplicated/reordered/lost, %llu bad checksums",
         (unsigned long long)sh->received, (unsigned long long)sh->dropped,
         (unsigned long long)sh->older,
         (unsigned long long)sh->first_not_zero, (unsigned long long)sh->dup_or_reorder,
         (unsigned long long)sh->bad_sum);
    t_ok(sh->resets == KILLS && sh->untold == 0,
         "the consumer was told of every restart: %llu -ECONNRESET for %d restarts, %llu untold",
         (unsigned long long)sh->resets, KILLS, (unsigned long long)sh->untold);
    t_ok(sh->epipes >= 1, "a producer killed for 2.5 s: the consumer's wait returned -EPIPE "
         "(heartbeat timeout 1 s), %llu time(s)", (unsigned long long)sh->epipes);

    /* 2. consumer killed and restarted 3 times while a producer streams */
    memset(sh, 0, sizeof(*sh));
    c = spawn(consumer_fn, 0);
    timeouts = wait_for(&sh->consumer_up, 1) < 0;  /* the producer sees it attached */
    p = spawn(producer, 0);             /* until told to stop */
    for (int k = 0; k < 3; k++) {
        /* 10000 more messages, and the producer saw the previous restart
         * (two restarts it did not look between are one change to it) */
        timeouts += wait_for(&sh->received, sh->received + 10000) < 0;
        timeouts += wait_for(&sh->prod_resets, (uint64_t)k) < 0;
        if (getenv("DEBUG"))
            fprintf(stderr, "kill consumer at %llu, sent %llu\n",
                    (unsigned long long)sh->received, (unsigned long long)sh->prod_sent);
        kill(c, SIGKILL);
        waitpid(c, NULL, 0);
        sh->consumer_restarted = 1;
        c = spawn(consumer_fn, 0);
    }
    /* the last consumer gets 10000 more, then the producer stops */
    timeouts += wait_for(&sh->received, sh->received + 10000) < 0;
    __atomic_store_n(&sh->stop_producer, 1, __ATOMIC_SEQ_CST);
    stp = reap(p);
    stc = reap(c);
    uint64_t total = sh->prod_sent - 1;     /* without STOP */
    t_ok(timeouts == 0 && stp == 0 && stc == 0 && sh->stopped,
         "consumer killed 3 times mid-stream and restarted; the stream ends cleanly");
    t_ok(sh->big_gaps == 0 && sh->dup_or_reorder == 0 && sh->older == 0 && sh->bad_sum == 0 &&
         sh->received + sh->restart_gaps == total,
         "no duplicate or reorder across consumer restarts: %llu received + %llu consumed "
         "but not recorded by a killed consumer = %llu sent",
         (unsigned long long)sh->received, (unsigned long long)sh->restart_gaps,
         (unsigned long long)total);
    t_ok(sh->prod_resets == 3, "the producer was told of each consumer restart (%llu -ECONNRESET)",
         (unsigned long long)sh->prod_resets);
    printf("1..%d\n", t_n);
    return t_fail ? 1 : 0;
}
