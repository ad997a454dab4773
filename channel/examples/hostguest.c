/* SPDX-License-Identifier: MIT */
/*
 * Host talking to a guest: the host joins the ivshmem server, the guest
 * opens /dev/ivshmemN of the driver; both open channel "hostguest".  The
 * host sends COUNT requests, the guest answers each with its peer ID and
 * the request upper-cased; the host checks every answer.
 *   host:  hostguest host -S /run/ivshmem.sock [-n COUNT]
 *   guest: hostguest guest -d /dev/ivshmem0      (runs until the host says "bye")
 * "guest" also takes -S, to stand in for a guest on the host.
 */
#include <ctype.h>
#include <getopt.h>
#include "common.h"

int main(int argc, char **argv)
{
    struct ex_attach a = { 0 };
    long count = 1000;
    int opt;

    if (argc < 2 || (strcmp(argv[1], "host") && strcmp(argv[1], "guest"))) {
        fprintf(stderr, "usage: hostguest host -S SOCK [-n COUNT] | hostguest guest -d DEV|-S SOCK\n");
        return 2;
    }
    int host = !strcmp(argv[1], "host");
    optind = 2;
    while ((opt = getopt(argc, argv, "S:p:d:n:")) != -1) {
        if (ex_attach_opt(&a, opt, optarg))
            continue;
        if (opt == 'n')
            count = atol(optarg);
        else
            return 2;
    }
    if (!a.server && !a.device && !a.path) {
        fprintf(stderr, "hostguest: give -S SOCKET (host) or -d /dev/ivshmemN (guest)\n");
        return 2;
    }
    ex_prepare(&a, 0);
    struct ivc_region *r = ex_region(&a, host ? IVC_SIDE_A : IVC_SIDE_B);
    struct ivc_channel *ch;
    int ret = ivc_channel_open(r, "hostguest", NULL, host ? IVC_SIDE_A : IVC_SIDE_B,
                               IVC_F_CREATE, &ch);
    if (ret < 0)
        ex_die("channel hostguest", ret);
    char req[256], ans[300];
    if (!host) {
        for (;;) {
            ssize_t n = ivc_recv(ch, req, sizeof(req) - 1, IVC_F_WAIT);
            if (n == -ECONNRESET)
                continue;
            if (n < 0)
                ex_die("hostguest guest: recv", (int)n);
            req[n] = 0;
            if (!strcmp(req, "bye"))
                break;
            int k = snprintf(ans, sizeof(ans), "peer %d: ", ivc_region_id(r));
            for (ssize_t i = 0; i < n; i++)
                ans[k + i] = (char)toupper((unsigned char)req[i]);
            while ((ret = ivc_send(ch, ans, (size_t)(k + n), IVC_F_WAIT)) == -ECONNRESET)
                ;
            if (ret < 0)
                ex_die("hostguest guest: send", ret);
        }
        printf("hostguest guest: host said bye\n");
        ivc_channel_close(ch);
        ivc_region_close(r);
        return 0;
    }
    long bad = 0;
    for (long i = 0; i < count; i++) {
        int l = snprintf(req, sizeof(req), "request %ld from host peer %d", i, ivc_region_id(r));
        while ((ret = ivc_send(ch, req, (size_t)l, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (ret < 0)
            ex_die("hostguest host: send", ret);
        ssize_t n;
        while ((n = ivc_recv(ch, ans, sizeof(ans) - 1, IVC_F_WAIT)) == -ECONNRESET)
            ;
        if (n < 0)
            ex_die("hostguest host: recv", (int)n);
        ans[n] = 0;
        char *colon = strstr(ans, ": ");
        for (int k = 0; k < l; k++)
            req[k] = (char)toupper((unsigned char)req[k]);
        bad += !colon || strcmp(colon + 2, req) != 0;
        if (i == 0)
            printf("hostguest host: first answer \"%s\"\n", ans);
    }
    ivc_send(ch, "bye", 3, IVC_F_WAIT);
    printf("hostguest host: %ld requests, %ld wrong answers\n", count, bad);
    ivc_channel_close(ch);
    ivc_region_close(r);
    return bad ? 1 : 0;
}
