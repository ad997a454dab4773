/* SPDX-License-Identifier: MIT */
/*
 * Liveness without heartbeats: both sides open channel "liveness" (no
 * peer_timeout_ns); side a waits for side b to attach, then watches
 * ivc_peer_state() until it says GONE, which only the server's peer list
 * can tell (on the host, or in a guest whose device has peer presence).
 *   liveness -d /dev/ivshmem0 -r b            attach and stay
 *   liveness -d /dev/ivshmem0 -r a [-t MS]    "liveness: up peer=N", then
 *                                             "liveness: gone" (exit 0) or
 *                                             "liveness: TIMEOUT" (exit 3)
 * Also -S SOCK (a host peer).
 */
#include <getopt.h>
#include <time.h>
#include "common.h"

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    struct ex_attach a = { 0 };
    const char *role = "a";
    long timeout_ms = 30000;
    struct ivc_channel *ch;
    struct ivc_region *r;
    uint64_t end;
    int opt, ret, side;

    while ((opt = getopt(argc, argv, "S:d:r:t:")) != -1) {
        if (ex_attach_opt(&a, opt, optarg))
            continue;
        if (opt == 'r')
            role = optarg;
        else if (opt == 't')
            timeout_ms = atol(optarg);
        else
            goto usage;
    }
    if ((!a.server && !a.device) || (strcmp(role, "a") && strcmp(role, "b")))
        goto usage;
    side = role[0] == 'a' ? IVC_SIDE_A : IVC_SIDE_B;
    ex_prepare(&a, 0);
    r = ex_region(&a, side);
    ret = ivc_channel_open(r, "liveness", NULL, side, IVC_F_CREATE, &ch);
    if (ret < 0)
        ex_die("channel liveness", ret);
    if (side == IVC_SIDE_B) {
        printf("liveness: attached as %d\n", ivc_region_id(r));
        fflush(stdout);
        for (;;)
            pause();
    }
    end = now_ms() + (uint64_t)timeout_ms;
    while (ivc_peer_state(ch) != IVC_PEER_UP) {
        if (now_ms() > end) {
            printf("liveness: TIMEOUT waiting for side b\n");
            return 3;
        }
        usleep(1000);
    }
    printf("liveness: up peer=%d presence=%s\n", ivc_region_id(r),
           ivc_region_peer_present(r, 0) == -ENOTSUP ? "no" : "yes");
    fflush(stdout);
    while ((ret = ivc_peer_state(ch)) == IVC_PEER_UP) {
        if (now_ms() > end) {
            printf("liveness: TIMEOUT, side b still up\n");
            return 3;
        }
        usleep(1000);
    }
    printf("liveness: %s\n", ret == IVC_PEER_GONE ? "gone" : "left");
    return 0;
usage:
    fprintf(stderr, "usage: liveness -d DEV|-S SOCK [-r a|b] [-t TIMEOUT_MS]\n");
    return 2;
}
