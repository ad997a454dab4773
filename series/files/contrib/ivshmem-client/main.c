/* SPDX-License-Identifier: GPL-2.0-or-later */
/* ivshmem-client: command line entry point. */

#include "qemu/osdep.h"
#include <getopt.h>
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "ivshmem-client.h"

#define DEFAULT_SOCKET "/run/ivshmem/ivshmem.sock"   /* the server's */

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
"Usage: %s [-S SOCKET] [-n VECTORS]\n"
"Connect to an ivshmem server, report what it sends and ring peers.\n"
"\n"
"  -S, --socket PATH   server socket (default " DEFAULT_SOCKET ")\n"
"  -n, --vectors N     keep at most N vectors per peer (default: all)\n"
"  -h, --help          show this help\n"
"\n"
"Commands, one per line on stdin:\n"
"  int PEER VECTOR     ring vector VECTOR of peer PEER\n"
"  int PEER all        ring every vector of peer PEER\n"
"  int all             ring every vector of every other peer\n"
"  list                list known peers\n"
"  dump                list peers with their fds, the shm and own ID\n"
"  quit                exit (so does end of input)\n"
"\n"
"Output, one event per line on stdout:\n"
"  id ID               our peer ID\n"
"  shm SIZE            the shared memory fd arrived; SIZE in bytes\n"
"  peer-vector PEER V  peer PEER's vector V can be rung\n"
"  own-vector V        our vector V is connected\n"
"  ready               the setup burst has been received\n"
"  peer-left PEER      peer PEER disconnected\n"
"  interrupt V COUNT   our vector V was rung (COUNT times since last)\n"
"  sent PEER V         answer to int: the doorbell was written\n"
"  peer PEER vectors N [own]           list/dump entry\n"
"  peer PEER vector V fd FD            dump entry\n"
"  id ID / shm SIZE fd FD              dump header\n"
"  end                 end of a list or dump\n"
"  error: TEXT         a command or message failed\n"
"  server-closed       the server went away (exit status 1)\n",
            prog);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 'S' },
        { "vectors", required_argument, NULL, 'n' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    const char *path = DEFAULT_SOCKET;
    unsigned int max_vectors = IVSHMEM_MAX_VECTORS;
    IvshmemClient client;
    Error *err = NULL;
    int c, ret;

    while ((c = getopt_long(argc, argv, "S:n:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'S':
            path = optarg;
            break;
        case 'n':
            if (qemu_strtoui(optarg, NULL, 10, &max_vectors) < 0 ||
                max_vectors == 0 || max_vectors > IVSHMEM_MAX_VECTORS) {
                fprintf(stderr, "%s: -n %s: expected 1..%d\n", argv[0],
                        optarg, IVSHMEM_MAX_VECTORS);
                return 1;
            }
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 1;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!ivshmem_client_connect(&client, path, max_vectors, &err)) {
        error_reportf_err(err, "%s: ", argv[0]);
        return 1;
    }
    ret = ivshmem_client_run(&client);
    ivshmem_client_cleanup(&client);
    return ret;
}
