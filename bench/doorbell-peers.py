#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Doorbell latency against the number of peers, ioeventfd on and off.
#
# QEMU's memory core looks up a region's ioeventfds linearly on every write
# (KVM's MMIO bus does the same for one address), so a device with an
# ioeventfd per peer vector slows down with the number of peers.  The
# device gives the first x-ioeventfd-budget peer vectors an ioeventfd and
# rings the others from its register handler.  This measures, for 2, 100,
# 1000 and 4000 peers (one vector each):
#   off      ioeventfd=off: every doorbell through the register handler
#   budget   ioeventfd=on, the default budget
#   all      ioeventfd=on, x-ioeventfd-budget=4294967295 (one per peer)
# A fake server announces the peers; QEMU runs under TCG (-S: no guest
# code) and the doorbell is written through qtest, which takes the same
# memory_region_dispatch_write() path as a TCG vCPU's MMIO write.  Each
# sample is the time from sending "writel" to the rung peer's eventfd
# becoming readable (qtest's own cost is in every configuration alike).
# With /dev/kvm, it also times the PCI command write that maps BAR0 under
# KVM, which registers every ioeventfd with KVM.
#
# Configurations are interleaved round by round.  Output: JSON (every
# round's statistics) with --out, and the Markdown report from a JSON with
# --report (the committed results are generated that way).
#
#   bench/doorbell-peers.py --qemu out/qemu/build/qemu-system-x86_64 \
#       --out bench/results/doorbell-peers.json
#   bench/doorbell-peers.py --report bench/results/doorbell-peers.json \
#       > bench/results/doorbell-peers.md

import argparse
import json
import os
import platform
import random
import resource
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

SLOT = 4
BAR0 = 0xfeb00000
REG_IVPOSITION, REG_DOORBELL = 0x08, 0x0c
CONFIGS = {
    'off': 'ioeventfd=off',
    'budget': 'ioeventfd=on',
    'all': 'ioeventfd=on,x-ioeventfd-budget=4294967295',
}


def send(sock, value, fd=None):
    data = struct.pack('<q', value)
    if fd is None:
        sock.sendall(data)
    else:
        socket.send_fds(sock, [data], [fd])


class Run:
    """One QEMU with one ivshmem-doorbell device and @npeers fake peers."""

    def __init__(self, qemu, tmp, npeers, props, accel):
        self.npeers = npeers
        srv_path = os.path.join(tmp, 'ivshmem.sock')
        qt_path = os.path.join(tmp, 'qtest.sock')
        for p in (srv_path, qt_path):
            if os.path.exists(p):
                os.unlink(p)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(srv_path)
        srv.listen(1)
        qt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        qt.bind(qt_path)
        qt.listen(1)
        self.efds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                     for _ in range(npeers + 1)]
        self.proc = subprocess.Popen(
            [qemu, '-M', 'pc', '-m', '64', '-accel', accel, '-S',
             '-nodefaults', '-display', 'none', '-qtest', 'unix:' + qt_path,
             '-chardev', 'socket,id=c,path=' + srv_path,
             '-device', 'ivshmem-doorbell,chardev=c,vectors=1,addr=%d,%s'
             % (SLOT, props)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        srv.settimeout(30)
        conn, _ = srv.accept()
        send(conn, 0)
        send(conn, npeers)
        shm = os.memfd_create('bench', os.MFD_CLOEXEC)
        os.ftruncate(shm, 1 << 20)
        send(conn, -1, shm)
        os.close(shm)
        for peer in range(npeers + 1):
            send(conn, peer, self.efds[peer])
        self.conn = conn
        qt.settimeout(30)
        self.qt, _ = qt.accept()
        srv.close()
        qt.close()
        self.buf = b''

    def cmd(self, line):
        self.qt.sendall(line.encode() + b'\n')
        while b'\n' not in self.buf:
            data = self.qt.recv(4096)
            if not data:
                raise EOFError('QEMU died: %s'
                               % self.proc.stderr.read().decode()[-500:])
            self.buf += data
        reply, self.buf = self.buf.split(b'\n', 1)
        if not reply.startswith(b'OK'):
            raise RuntimeError('%s -> %s' % (line, reply))
        words = reply.split()
        return int(words[1], 16) if len(words) > 1 else None

    def cfg(self, off, size, value):
        self.cmd('outl 0xcf8 0x%x' % (0x80000000 | SLOT << 11 | off & 0xfc))
        self.cmd('out%s 0x%x 0x%x' % ('w' if size == 2 else 'l',
                                      0xcfc + (off & 3), value))

    def map_bar0(self):
        """Map BAR0; returns the seconds the enabling write took."""
        self.cfg(0x10, 4, BAR0)
        t0 = time.perf_counter()
        self.cfg(0x04, 2, 0x2)
        elapsed = time.perf_counter() - t0
        position = self.cmd('readl 0x%x' % (BAR0 + REG_IVPOSITION))
        if position != self.npeers:
            raise RuntimeError('IVPosition %d, not %d'
                               % (position, self.npeers))
        return elapsed

    def ring_us(self, peer):
        efd = self.efds[peer]
        poller = select.poll()
        poller.register(efd, select.POLLIN)
        line = ('writel 0x%x 0x%x\n' % (BAR0 + REG_DOORBELL, peer << 16))
        t0 = time.perf_counter_ns()
        self.qt.sendall(line.encode())
        if not poller.poll(5000):
            raise RuntimeError('doorbell to peer %d lost' % peer)
        t1 = time.perf_counter_ns()
        os.eventfd_read(efd)
        while b'\n' not in self.buf:
            self.buf += self.qt.recv(4096)
        reply, self.buf = self.buf.split(b'\n', 1)
        return (t1 - t0) / 1000.0

    def close(self):
        self.proc.terminate()
        self.proc.wait()
        self.conn.close()
        self.qt.close()
        for fd in self.efds:
            os.close(fd)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def measure(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rng = random.Random(args.seed)
    kvm = os.access('/dev/kvm', os.R_OK | os.W_OK) and not args.no_kvm
    result = {
        'what': 'doorbell latency against peers (bench/doorbell-peers.py)',
        'qemu': args.qemu,
        'host': platform.node(), 'kernel': platform.release(),
        'cpus': os.cpu_count(),
        'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
        'peers': args.peers, 'configs': CONFIGS, 'rounds': args.rounds,
        'rings': args.rings, 'runs': [],
    }
    with tempfile.TemporaryDirectory(prefix='doorbell-peers-') as tmp:
        for rnd in range(args.rounds):
            for npeers in args.peers:
                order = list(CONFIGS)
                rng.shuffle(order)
                for cfg in order:
                    run = Run(args.qemu, tmp, npeers, CONFIGS[cfg], 'tcg')
                    try:
                        run.map_bar0()
                        for _ in range(50):             # warm-up
                            run.ring_us(rng.randrange(npeers))
                        samples = [run.ring_us(rng.randrange(npeers))
                                   for _ in range(args.rings)]
                    finally:
                        run.close()
                    rec = {'round': rnd, 'peers': npeers, 'config': cfg,
                           'accel': 'tcg',
                           'p50_us': statistics.median(samples),
                           'p90_us': pct(samples, 90),
                           'p99_us': pct(samples, 99),
                           'mean_us': statistics.fmean(samples)}
                    if kvm:
                        run = Run(args.qemu, tmp, npeers, CONFIGS[cfg], 'kvm')
                        try:
                            rec['kvm_map_bar0_ms'] = run.map_bar0() * 1000
                        except (EOFError, RuntimeError) as e:
                            rec['kvm_error'] = str(e)[-300:]
                        finally:
                            run.close()
                    result['runs'].append(rec)
                    print('round %d peers %4d %-6s p50 %7.1f us p90 %7.1f us%s'
                          % (rnd, npeers, cfg, rec['p50_us'], rec['p90_us'],
                             ' kvm map %.1f ms' % rec['kvm_map_bar0_ms']
                             if 'kvm_map_bar0_ms' in rec else ''),
                          file=sys.stderr, flush=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')


def below_budget(runs, peers, budget=256):
    """Whether the p50 ranges over rounds overlap below the budget."""
    apart = []
    small = [n for n in peers if n < budget]
    for n in small:
        ranges = [[r['p50_us'] for r in runs
                   if r['peers'] == n and r['config'] == c]
                  for c in CONFIGS]
        if max(min(v) for v in ranges) > min(max(v) for v in ranges):
            apart.append(str(n))
    if apart:
        return ('Below the budget the per-round ranges do not all overlap '
                'at %s peers.' % ', '.join(apart))
    return ('Below the budget (%s peers) the per-round p50 ranges of the '
            'three configurations overlap: no difference beyond noise.'
            % ', '.join(str(n) for n in small))


def report(path):
    data = json.load(open(path))
    runs = data['runs']

    def med(npeers, cfg, key):
        vals = [r[key] for r in runs
                if r['peers'] == npeers and r['config'] == cfg and key in r]
        return statistics.median(vals) if vals else None

    def spread(npeers, cfg, key):
        vals = [r[key] for r in runs
                if r['peers'] == npeers and r['config'] == cfg and key in r]
        return '%.1f-%.1f' % (min(vals), max(vals)) if vals else '-'

    out = []
    out.append('# Doorbell latency against the number of peers\n')
    out.append('Generated by `bench/doorbell-peers.py --report` from '
               '`%s`; %s, %s, kernel %s, %d CPUs.  %d interleaved rounds; '
               'each round starts one QEMU per configuration and rings %d '
               'random peers (after 50 warm-up rings).  Figures are the '
               'median over rounds of each round\'s statistic, in '
               'microseconds, from the qtest `writel` to the rung peer\'s '
               'eventfd becoming readable (TCG, the memory core\'s '
               'dispatch; qtest\'s own round trip is in every figure).\n'
               % (os.path.basename(path), data['date'], data['host'],
                  data['kernel'], data['cpus'], data['rounds'],
                  data['rings']))
    out.append('Configurations: `off` = `ioeventfd=off` (register '
               'handler for every doorbell); `budget` = `ioeventfd=on` '
               'with the default budget (ioeventfds for the first peer '
               'vectors, the register handler beyond); `all` = '
               '`ioeventfd=on,x-ioeventfd-budget=4294967295` (one '
               'ioeventfd per peer vector, what `ioeventfd=on` did before '
               'the budget).\n')
    out.append('| peers | off p50 | budget p50 | all p50 | budget/off | '
               'all/off | off p90 | budget p90 | all p90 |')
    out.append('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | '
               '---: |')
    for n in data['peers']:
        o, b, a = (med(n, c, 'p50_us') for c in ('off', 'budget', 'all'))
        o9, b9, a9 = (med(n, c, 'p90_us') for c in ('off', 'budget', 'all'))
        out.append('| %d | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f | '
                   '%.1f |' % (n, o, b, a, b / o, a / o, o9, b9, a9))
    out.append('\nPer-round p50 ranges (min-max over rounds), to judge the '
               'noise:\n')
    out.append('| peers | off | budget | all |')
    out.append('| ---: | ---: | ---: | ---: |')
    for n in data['peers']:
        out.append('| %d | %s | %s | %s |' % (
            n, spread(n, 'off', 'p50_us'), spread(n, 'budget', 'p50_us'),
            spread(n, 'all', 'p50_us')))
    big = max(data['peers'])
    o, b, a = (med(big, c, 'p50_us') for c in ('off', 'budget', 'all'))
    out.append('\nReading: with %d peers, one ioeventfd per peer vector costs '
               '%.1f us more per doorbell than the register handler '
               '(all/off %.2f), the budget %.1f us (budget/off %.2f): '
               'every write still scans the budgeted ioeventfds before it '
               'reaches the handler.  %s  Under TCG an ioeventfd saves nothing (the eventfd '
               'is written from the vCPU thread either way); under KVM it '
               'saves an exit to QEMU per doorbell, which is why the budget '
               'is not zero.\n' % (big, a - o, a / o, b - o, b / o,
                                    below_budget(runs, data['peers'])))
    if any('kvm_map_bar0_ms' in r or 'kvm_error' in r for r in runs):
        out.append('\nUnder KVM (this machine\'s paravirtual KVM, which '
                   'boots no guest but registers ioeventfds): time of the '
                   'PCI command write that maps BAR0 and so registers every '
                   'doorbell ioeventfd with KVM, median over rounds in '
                   'milliseconds.  Errors, if any, are QEMU aborting.\n')
        out.append('| peers | off | budget | all |')
        out.append('| ---: | ---: | ---: | ---: |')
        for n in data['peers']:
            cells = []
            for c in ('off', 'budget', 'all'):
                errs = [r for r in runs if r['peers'] == n and
                        r['config'] == c and 'kvm_error' in r]
                v = med(n, c, 'kvm_map_bar0_ms')
                cells.append('abort (%d runs)' % len(errs) if errs
                             else '%.2f' % v if v is not None else '-')
            out.append('| %d | %s |' % (n, ' | '.join(cells)))
    print('\n'.join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--qemu')
    ap.add_argument('--out')
    ap.add_argument('--report')
    ap.add_argument('--peers', type=int, nargs='+',
                    default=[2, 100, 1000, 4000])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--rings', type=int, default=400)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--no-kvm', action='store_true')
    args = ap.parse_args()
    if args.report:
        report(args.report)
    elif args.qemu and args.out:
        measure(args)
    else:
        ap.error('--qemu and --out, or --report')


if __name__ == '__main__':
    main()
