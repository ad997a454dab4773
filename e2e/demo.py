#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""make demo: two Linux guests share memory and ring each other.

Starts our ivshmem-server and two guests with ivshmem-doorbell, passes a
message, runs 10 000 doorbell round trips and a memcpy bandwidth test,
then prints a short report.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ivshmem_e2e as e2e  # noqa: E402

ROUNDS = int(os.environ.get('DEMO_ROUNDS', '10000'))
VECTORS = 2
SIZE = '16M'


def say(msg):
    print(msg, flush=True)


def last_console_line(guest):
    try:
        with open(guest.console, 'rb') as f:
            f.seek(max(0, os.path.getsize(guest.console) - 400))
            lines = f.read().decode(errors='replace').replace('\r', '')
    except OSError:
        return 'starting'
    lines = [ln.strip() for ln in lines.splitlines() if ln.strip()]
    if not lines:
        return 'starting Linux'
    return lines[-1][:48]


def boot_with_progress(guests, timeout=240):
    tty = sys.stdout.isatty()
    t0 = time.time()
    ready = {}
    last_print = 0
    while len(ready) < len(guests):
        for g in guests:
            if g.name in ready:
                continue
            try:
                g.expect(re.escape(g.READY), 0.2)
                g.boot_time = time.time() - g.started
                g.kick = True
                ready[g.name] = g.boot_time
            except e2e.E2EError:
                if not g.alive():
                    raise
        elapsed = time.time() - t0
        if elapsed > timeout:
            raise e2e.E2EError('guests did not boot in %d s' % timeout)
        status = '  '.join(
            '%s: %s' % (g.name, 'up (%.1f s)' % ready[g.name]
                        if g.name in ready else last_console_line(g))
            for g in guests)
        if tty:
            sys.stdout.write('\r\033[K  booting %5.1f s  %s' % (elapsed,
                                                                  status))
            sys.stdout.flush()
        elif elapsed - last_print >= 2 or len(ready) == len(guests):
            say('  booting %5.1f s  %s' % (elapsed, status))
            last_print = elapsed
    if tty:
        sys.stdout.write('\n')
    return ready


def parse(out, prefix):
    m = re.search(prefix + r': (.*)', out)
    if not m:
        raise e2e.E2EError('no %s report in: %s' % (prefix, out))
    return dict(kv.split('=', 1) for kv in m.group(1).split() if '=' in kv)


def main():
    t_start = time.time()
    say('== ivshmem demo: two Linux guests, one shared region, doorbells')
    say('-- guest image (Debian 12 kernel + busybox + our driver and tool)')
    image = e2e.build_image()
    accel = e2e.probe_accel(image)
    s = e2e.Session(accel=accel, image=image)
    ok = False
    try:
        srv = s.server(size=SIZE, vectors=VECTORS)
        say('-- server: %s (%s, %d vectors per peer)'
            % (srv.sock, SIZE, VECTORS))
        dev = ['-chardev', 'socket,id=ivc,path=' + srv.sock, '-device',
               'ivshmem-doorbell,chardev=ivc,vectors=%d' % VECTORS]
        say('-- booting guests a and b under %s (QEMU %s)'
            % (accel.upper(), e2e.qemu_binary()))
        a = s.guest('a', dev)
        b = s.guest('b', dev)
        boots = boot_with_progress([a, b])
        ia, ib = a.info(), b.info()
        for name, i in (('a', ia), ('b', ib)):
            say('   guest %s: peer ID %s, %s MiB region, %s vectors (%s), '
                '/dev/ivshmem0' % (name, i['id'], int(i['size']) >> 20,
                                   i['vectors'],
                                   {'msix': 'MSI-X'}.get(i['irq'],
                                                         i['irq'])))
        host = s.hostpeer(srv)
        host.wait_for(lambda: len(host.peers) >= 2, 10)
        peers = sorted(host.peers)
        host.close()
        s.hostpeers.remove(host)

        say('-- message: a writes into shared memory and rings b')
        b.start('ivshmem-guest wait 30000 && ivshmem-guest get 256')
        b.expect(rb'wait: ready', 30)
        msg = 'hello b, this is guest a (peer %s)' % ia['id']
        a.tool('put 256 "%s"' % msg)
        a.tool('ring %s 1' % ib['id'])
        rc, out = b.finish(60)
        got = out.splitlines()[-1] if out else ''
        say('   b woke up on vector %s and read: "%s"'
            % (re.search(r'vector=(\d+)', out).group(1) if 'vector=' in
               out else '?', got))
        if got != msg:
            raise e2e.E2EError('message mismatch: %r' % out)

        say('-- %d doorbell round trips a -> b -> a (vectors 0..%d, '
            'payload verified)' % (ROUNDS, VECTORS - 1))
        b.start('ivshmem-guest pong %s %d 20000' % (ia['id'], ROUNDS))
        b.expect(rb'pong: ready', 30)
        t0 = time.time()
        ping = parse(a.tool('ping %s %d 20000' % (ib['id'], ROUNDS), 900),
                     'ping')
        rc, pong = b.finish(120)
        if rc or 'verified=%d' % ROUNDS not in pong:
            raise e2e.E2EError('pong failed: %s' % pong)
        took = time.time() - t0

        say('-- polling round trips through shared memory only')
        b.start('ivshmem-guest spin-pong 1000')
        b.expect(rb'spin-pong: ready', 30)
        spin = parse(a.tool('spin-ping 1000', 300), 'spin-ping')
        b.finish(60)

        say('-- memcpy bandwidth, guest a <-> BAR2 (64 MiB each way)')
        bw = parse(a.tool('bandwidth 64', 300), 'bandwidth')
        ok = True
    except e2e.E2EError as err:
        say('demo FAILED: %s' % err)
        s.dump_logs()
        s.close()
        return 1

    say('')
    say('== report')
    say('  accelerator      %s; guests booted in %s'
        % (accel.upper(), ', '.join('%s %.1f s' % kv
                                    for kv in sorted(boots.items()))))
    say('  peers            %s (server view); guest a = %s, guest b = %s'
        % (', '.join(map(str, peers)), ia['id'], ib['id']))
    say('  region           %d MiB shared, %d vectors per peer, MSI-X'
        % (int(ia['size']) >> 20, VECTORS))
    say('  message          a -> b "%s"' % msg)
    say('  doorbells        %s round trips in %.1f s, all verified'
        % (ping['verified'], took))
    say('  round trip       p50 %s us   p90 %s us   p99 %s us   max %s us'
        % (ping['p50_us'], ping['p90_us'], ping['p99_us'],
           ping['max_us']))
    say('  polling rtt      p50 %s us   p90 %s us   p99 %s us'
        % (spin['p50_us'], spin['p90_us'], spin['p99_us']))
    say('  bandwidth        write %s MB/s, read %s MB/s (guest memcpy)'
        % (bw['write_MBps'], bw['read_MBps']))
    say('  total            %.0f s' % (time.time() - t_start))
    s.close()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
