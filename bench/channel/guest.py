#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Two-guest benchmark of libivshmem-channel against TCP over virtio-net.

Boots two guests of the e2e image (guest/image.sh, through
e2e/ivshmem_e2e.py) joined by an ivshmem-doorbell device (one vector,
our driver, the library's hybrid wait) and by virtio-net over
`-netdev stream` on a UNIX socket (no root, no bridge), then runs
`ivc-gbench` (bench/channel/gbench.c, in the image) in both guests:
for each round, each message size and each transport (the library with
its copy API, the library with its zero-copy API, TCP; the order rotated
from round to round), a latency run (round trips
of one message; one-way = round trip / 2: the guests share no clock) and
a throughput run (COUNT messages back to back, then one answer).  Every
run is one JSON record with the 1-minute load average before it, the
guests' own CPU time (both processes, getrusage) and the host CPU time of
both QEMU processes over the run.

    bench/channel/guest.py [-r ROUNDS] [-s SIZES] [--quick] --out FILE.json
    (make -C bench/channel guest: 5 rounds -> results/guest-DATE.json and .md)
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, 'e2e'))
import ivshmem_e2e as e2e  # noqa: E402

ADDR = {'a': '10.0.2.1', 'b': '10.0.2.2'}
# lib: ivc_send/ivc_recv (copies, like send/recv); lib-zc: ivc_reserve and
# ivc_peek, each message written and read once in place in the ring
TRANSPORTS = ['lib', 'lib-zc', 'tcp']


def qemu_cpu(g):
    """utime + stime of a guest's QEMU process, in seconds."""
    with open('/proc/%d/stat' % g.popen.pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def parse(out):
    for line in out.splitlines():
        if line.startswith('gbench '):
            return {k: (int(v) if v.isdigit() else v)
                    for k, v in (kv.split('=', 1) for kv in line.split()[1:])}
    raise e2e.E2EError('no gbench line in %r' % out[-500:])


def git(*args):
    return subprocess.run(['git', '-C', TOP] + list(args), capture_output=True,
                          text=True).stdout.strip()


def net_up(g, name):
    """Load the image's virtio-net modules and configure eth0."""
    g.run('cd /lib/modules/$(uname -r)/net && for m in $(cat order); do '
          'insmod $m.ko || exit 1; done; cd /', 60)
    g.run('ip addr add %s/24 dev eth0 && ip link set eth0 up' % ADDR[name], 60)


def counts(size, quick):
    """(round trips, throughput messages) for one run of SIZE."""
    lat = 100 if quick else 400
    tput = {64: 100000, 4096: 4000, 65536: 600}.get(size, max(600, (1 << 26) // size // 100))
    return lat, tput // 10 if quick else tput


def one_run(a, b, transport, mode, size, count, rnd):
    if transport in ('lib', 'lib-zc'):
        zc = transport == 'lib-zc'
        args = 'lib %%s -d /dev/ivshmem0 -c gb-%s%s-%d%s' % (
            'zc-' if zc else '', mode, size, ' -z' if zc else '')
    else:
        one_run.port += 1          # a fresh port each run: no TIME_WAIT in the way
        args = 'tcp %%s -H %s -p %d' % (ADDR['b'], one_run.port)
    tail = ' -m %s -s %d -n %d' % (mode, size, count)
    load = os.getloadavg()[0]
    q0 = qemu_cpu(a) + qemu_cpu(b)
    b.start('ivc-gbench ' + (args % 'b') + tail)
    t0 = time.time()
    out_a = a.run('ivc-gbench ' + (args % 'a') + tail, 600)
    rc_b, out_b = b.finish(120)
    host_wall = time.time() - t0
    q1 = qemu_cpu(a) + qemu_cpu(b)
    if rc_b:
        raise e2e.E2EError('b: ivc-gbench failed (%d): %s' % (rc_b, out_b))
    ra, rb = parse(out_a), parse(out_b)
    rec = {'round': rnd, 'transport': transport, 'size': size,
           'kind': 'latency' if mode == 'lat' else 'throughput',
           'count': count, 'load1': round(load, 2),
           'wall_ns': ra['wall_ns'], 'host_wall_s': round(host_wall, 3),
           'guest_cpu_ns': ra['cpu_ns'] + rb['cpu_ns'],
           'qemu_cpu_s': round(q1 - q0, 3)}
    if mode == 'lat':
        rec['rtt_p50_ns'] = ra['rtt_p50_ns']
        rec['rtt_p99_ns'] = ra['rtt_p99_ns']
    else:
        secs = ra['wall_ns'] / 1e9
        rec['msgs_per_s'] = round(count / secs, 1)
        rec['mb_per_s'] = round(count * size / secs / 1e6, 2)
    for k in ('notifies', 'sleeps'):
        if k in ra:
            rec[k] = [ra[k], rb[k]]
    return rec


one_run.port = 5200


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('-r', '--rounds', type=int, default=5)
    ap.add_argument('-s', '--sizes', default='64,4096,65536')
    ap.add_argument('--quick', action='store_true', help='small counts (smoke)')
    ap.add_argument('--out', required=True, help='the JSON file to write')
    opt = ap.parse_args()
    sizes = [int(x) for x in opt.sizes.split(',')]
    if opt.rounds < 1 or any(s < 8 or s > 65536 for s in sizes):
        ap.error('--rounds must be >= 1 and sizes 8..65536')

    image = e2e.build_image()
    if not os.path.exists(os.path.join(image, 'initramfs.cpio.gz')):
        sys.exit('guest.py: no image at %s' % image)
    accel = e2e.probe_accel(image)
    s = e2e.Session(accel=accel, image=image,
                    keep_logs=bool(os.environ.get('E2E_KEEP_LOGS')))
    meta = {'mode': 'guest', 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'commit': git('rev-parse', '--short', 'HEAD'),
            'dirty': bool(git('status', '--porcelain', '--', 'bench/channel', 'channel',
                              'guest', 'e2e')),
            'cpus': os.cpu_count(), 'rounds': opt.rounds, 'quick': opt.quick,
            'accel': accel, 'image': os.path.basename(image),
            'guests': '1 vCPU, 256 MiB each; ivshmem-doorbell vectors=1, 32 MiB; '
                      'virtio-net-pci over -netdev stream (UNIX socket)',
            'lib_wait': 'hybrid (library default)',
            'transports': TRANSPORTS,
            'load_start': [round(x, 2) for x in os.getloadavg()]}
    runs = []
    try:
        srv = s.server(vectors=1, size='32M')
        net = os.path.join(s.dir, 'net.sock')
        ivs = ['-chardev', 'socket,id=ivc,path=' + srv.sock,
               '-device', 'ivshmem-doorbell,chardev=ivc,vectors=1']

        def nic(server, mac):
            return ['-netdev', 'stream,id=n0,server=%s,addr.type=unix,addr.path=%s'
                    % ('on' if server else 'off', net),
                    '-device', 'virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:%s' % mac]
        b = s.guest('b', ivs + nic(True, '02'))
        deadline = time.time() + 20
        while not os.path.exists(net):
            if time.time() > deadline:
                raise e2e.E2EError('guest b did not listen on %s' % net)
            time.sleep(0.05)
        a = s.guest('a', ivs + nic(False, '01'))
        a.wait_ready(300)
        b.wait_ready(300)
        for g, name in ((a, 'a'), (b, 'b')):
            net_up(g, name)
        print('# guests up (%s); %d rounds, sizes %s' % (accel, opt.rounds, sizes),
              file=sys.stderr, flush=True)
        for rnd in range(opt.rounds):
            # every transport in every position in turn
            order = TRANSPORTS[rnd % 3:] + TRANSPORTS[:rnd % 3]
            for size in sizes:
                nlat, ntput = counts(size, opt.quick)
                for transport in order:
                    for mode, count in (('lat', nlat), ('tput', ntput)):
                        rec = one_run(a, b, transport, mode, size, count, rnd)
                        runs.append(rec)
                        print('# ' + json.dumps(rec), file=sys.stderr, flush=True)
    except Exception:
        s.dump_logs()
        raise
    finally:
        s.close()
    with open(opt.out, 'w') as f:
        json.dump({'meta': meta, 'runs': runs,
                   'load_end': [round(x, 2) for x in os.getloadavg()]}, f, indent=1)
        f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
