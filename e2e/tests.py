#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""End-to-end tests: real Linux guests share memory and ring each other.

Prints TAP.  Each scenario boots its own guests (in parallel) against our
QEMU ($QEMU_BINARY) and our server, and tears everything down afterwards.
Run one scenario with: e2e/tests.py NAME...
"""

import json
import mmap
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ivshmem_e2e as e2e  # noqa: E402

MIB = 1 << 20
results = []
boot_times = []


def tap(ok, what, detail=''):
    results.append(ok)
    print('%s %d - %s' % ('ok' if ok else 'not ok', len(results), what),
          flush=True)
    if detail:
        for line in detail.splitlines():
            print('# ' + line, flush=True)


def skip(what, why):
    results.append(True)
    print('ok %d - %s # SKIP %s' % (len(results), what, why), flush=True)


def check(cond, what, detail=''):
    tap(bool(cond), what, detail)
    return bool(cond)


def boot(session, specs):
    """Start guests {name: (device args, append)} and wait for all."""
    guests = [session.guest(n, dev, app) for n, (dev, app) in specs.items()]
    for g in guests:
        boot_times.append(g.wait_ready(180))
    return guests


def doorbell_dev(server, vectors, legacy=False, msi=True):
    args = ['-chardev', 'socket,id=ivc,path=' + server.sock]
    if legacy:
        return args + ['-device', 'ivshmem,chardev=ivc,size=4M,msi=%s%s'
                       % ('on' if msi else 'off',
                          ',vectors=%d' % vectors if msi else '')]
    return args + ['-device', 'ivshmem-doorbell,chardev=ivc,vectors=%d'
                   % vectors]


def find_bdf(guest):
    return guest.run('for d in /sys/bus/pci/devices/*; do '
                     '[ "$(cat $d/device)" = 0x1110 ] && echo $d; done; true'
                     ).split()[0]


def ping_pong(a, b, count, a_dev='', b_dev='', timeout=120):
    """B answers COUNT doorbells of A; returns A's ping report (dict)."""
    a_id = a.info(a_dev)['id']
    b_id = b.info(b_dev)['id']
    b.start('ivshmem-guest %s pong %s %d 10000'
            % (('-d ' + b_dev) if b_dev else '', a_id, count))
    b.expect(rb'pong: ready', 30)
    rc, out = a.run('ivshmem-guest %s ping %s %d 10000'
                    % (('-d ' + a_dev) if a_dev else '', b_id, count),
                    timeout, check=False)
    brc, bout = b.finish(timeout)
    m = re.search(r'ping: (.*)', out)
    report = dict(kv.split('=', 1) for kv in m.group(1).split()) if m else {}
    report['ok'] = rc == 0 and brc == 0 and report.get('verified') == str(
        count) and ('verified=%d' % count) in bout
    report['text'] = out + '\n' + bout
    return report


def latency_line(r):
    return 'p50 %s us, p90 %s us, p99 %s us' % (
        r.get('p50_us'), r.get('p90_us'), r.get('p99_us'))


def host_verify(shm, offset, length, seed):
    return bytes(shm[offset:offset + length]) == e2e.pattern_words(
        seed, offset, length // 4)


def host_write(shm, offset, length, seed):
    shm[offset:offset + length] = e2e.pattern_words(seed, offset,
                                                    length // 4)


def open_host_shm(path, size):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size)
    os.close(fd)
    return m


# ---------------------------------------------------------------------------

def test_plain(s):
    name = s.shm_name('plain')
    shm = open_host_shm('/dev/shm/' + name, 4 * MIB)
    dev = ['-object', 'memory-backend-file,id=hm,mem-path=/dev/shm/%s,'
           'size=4M,share=on' % name, '-device', 'ivshmem-plain,memdev=hm']
    a, b = boot(s, {'a': (dev, ''), 'b': (dev, '')})
    info = a.info()
    check(info['size'] == str(4 * MIB) and info['irq'] == 'none',
          'plain: guest sees a 4 MiB region without interrupts', str(info))
    a.tool('write 0 65536 11')
    ok = 'verify: ok' in b.tool('verify 0 65536 11')
    check(ok and host_verify(shm, 0, 65536, 11),
          'plain: guest A writes, guest B and the host read it')
    host_write(shm, MIB, 65536, 22)
    ra = a.tool('verify %d 65536 22' % MIB, check=False)
    rb = b.tool('verify %d 65536 22' % MIB, check=False)
    check(ra[0] == 0 and rb[0] == 0,
          'plain: the host writes, both guests read it', ra[1] + rb[1])
    bdf = find_bdf(b)
    # Our driver claims BAR0; unbind it to use the stock interface.
    b.run('echo %s > /sys/bus/pci/drivers/ivshmem/unbind'
          % os.path.basename(bdf))
    b.tool('-d %s write %d 65536 33' % (bdf, 2 * MIB))
    ok = 'verify: ok' in a.tool('verify %d 65536 33' % (2 * MIB))
    check(ok and host_verify(shm, 2 * MIB, 65536, 33),
          'plain: stock sysfs resource2 mmap path works too')
    b.start('ivshmem-guest spin-pong 500')
    b.expect(rb'spin-pong: ready', 30)
    rc, out = a.tool('spin-ping 500', 120, check=False)
    brc, bout = b.finish(60)
    check(rc == 0 and brc == 0 and 'verified=500' in out,
          'plain: 500 polling round trips through shared memory, verified',
          out)
    shm.close()


def doorbell(s, vectors):
    srv = s.server(vectors=vectors, size='4M')
    a, b = boot(s, {'a': (doorbell_dev(srv, vectors), ''),
                    'b': (doorbell_dev(srv, vectors), '')})
    ia, ib = a.info(), b.info()
    check(ia['irq'] == 'msix' and ia['vectors'] == str(vectors) and
          ib['vectors'] == str(vectors) and ia['id'] != ib['id'] and
          ia['size'] == str(4 * MIB),
          'doorbell vectors=%d: MSI-X, distinct peer IDs, region from the '
          'server' % vectors, '%s\n%s' % (ia, ib))
    a.tool('put 4096 "hello from guest A"')
    check(b.tool('get 4096') == 'hello from guest A',
          'doorbell vectors=%d: message from A read by B' % vectors)
    r = ping_pong(a, b, 1000)
    check(r['ok'], 'doorbell vectors=%d: 1000 round trips A->B->A, data '
          'and vectors verified (%s)' % (vectors, latency_line(r)),
          '' if r['ok'] else r['text'])
    return srv, a, b, ia, ib


def test_doorbell1(s):
    srv, a, b, ia, ib = doorbell(s, 1)
    host = s.hostpeer(srv)
    host.wait_for(lambda: len(host.peers) >= 2, 10)
    a.start('ivshmem-guest wait 20000')
    a.expect(rb'wait: ready', 30)
    host.ring(int(ia['id']), 0)
    rc, out = a.finish(60)
    a.tool('ring %d 0' % host.id)
    check(rc == 0 and 'vector=0' in out and host.wait_interrupt(0, 20),
          'doorbell vectors=1: a host peer rings a guest and is rung back',
          out)


def test_doorbell4(s):
    srv, a, b, ia, ib = doorbell(s, 4)
    bdf = os.path.basename(find_bdf(a))
    out = a.run('ivshmem-guest wait 30000 > /tmp/w 2>&1 & sleep 1; '
                'echo %s > /sys/bus/pci/drivers/ivshmem/unbind; wait $!; '
                'echo "rc=$?"; cat /tmp/w; ls /dev | grep -c ivshmem'
                % bdf, 60, check=False)[1]
    check('rc=1' in out and 'device gone' in out and out.endswith('0'),
          'driver unbind wakes a blocked reader with an error, removes '
          '/dev/ivshmem0', out)
    a.run('echo %s > /sys/bus/pci/drivers/ivshmem/bind' % bdf)
    r = ping_pong(a, b, 100)
    oops = a.run('dmesg | grep -E "WARNING|BUG|Oops" ; true')
    check(a.info()['irq'] == 'msix' and r['ok'] and not oops,
          'driver rebind: MSI-X again, 100 round trips, no kernel warning',
          oops + ('' if r['ok'] else r['text']))


def test_legacy_shm(s):
    name = s.shm_name('legacy')
    dev = ['-device', 'ivshmem,shm=%s,size=4M' % name]
    a, b = boot(s, {'a': (dev, ''), 'b': (dev, '')})
    info = a.info()
    a.tool('write 0 65536 44')
    ok = 'verify: ok' in b.tool('verify 0 65536 44')
    shm = open_host_shm('/dev/shm/' + name, 4 * MIB)
    check(info['size'] == str(4 * MIB) and ok and
          host_verify(shm, 0, 65536, 44),
          'legacy ivshmem,shm=: both guests and the host share /dev/shm/'
          + name, str(info))
    shm.close()


def test_legacy_intx(s):
    srv = s.server(vectors=1)
    dev = doorbell_dev(srv, 1, legacy=True, msi=False)
    # c: what libvirt up to 2.x emitted for <shmem> with a server, msi=on.
    dev_c = ['-chardev', 'socket,id=ivc,path=' + srv.sock, '-device',
             'ivshmem,id=shmem0,chardev=ivc,size=4m,msi=on,ioeventfd=off,'
             'vectors=1']
    a, b, c = boot(s, {'a': (dev, ''), 'b': (dev, 'ivshmem.nodriver'),
                       'c': (dev_c, '')})
    ia = a.info()
    check(ia['irq'] == 'intx',
          'legacy msi=off: our driver falls back to INTx', str(ia))
    b.run('echo "1af4 1110" > /sys/bus/pci/drivers/uio_pci_generic/new_id')
    ib = b.info('/dev/uio0')
    check(ib['mode'] == 'uio' and ib['id'] != ia['id'],
          'legacy msi=off: uio_pci_generic binds the device', str(ib))
    r = ping_pong(a, b, 300, b_dev='/dev/uio0')
    check(r['ok'], 'legacy msi=off: 300 round trips, INTx through our '
          'driver and through uio_pci_generic (%s)' % latency_line(r),
          '' if r['ok'] else r['text'])
    ic = c.info()
    r = ping_pong(c, a, 300)
    check(ic['irq'] == 'msix' and r['ok'],
          'legacy msi=on (as libvirt 2.x started it): MSI-X, 300 round trips '
          'with an INTx peer (%s)' % latency_line(r),
          str(ic) if r['ok'] else r['text'])

    # Unbinding our driver from the INTx device: a blocked reader wakes
    # with an error, the handler goes, and rings that keep coming while no
    # driver is bound raise no unhandled-interrupt storm (the line stays
    # low); rebinding takes INTx again.
    bdf = os.path.basename(find_bdf(a))
    out = a.run('ivshmem-guest wait 30000 > /tmp/w 2>&1 & sleep 1; '
                'echo %s > /sys/bus/pci/drivers/ivshmem/unbind; wait $!; '
                'echo "rc=$?"; cat /tmp/w; ls /dev | grep -c ivshmem'
                % bdf, 60, check=False)[1]
    handlers = a.run('grep ivshmem /proc/interrupts; true')
    check('rc=1' in out and 'device gone' in out and out.endswith('0') and
          not handlers.strip(),
          'legacy msi=off: driver unbind wakes a blocked reader with an '
          'error and frees the INTx handler', out + '\n' + handlers)
    c.run('for i in $(seq 50); do ivshmem-guest ring %s 0 || exit 1; done'
          % ia['id'], 120)
    time.sleep(1)
    # PCI status bit 3 is the INTx line of the device: low without a driver
    status = a.run('od -An -tx2 -j6 -N2 /sys/bus/pci/devices/%s/config'
                   % bdf).strip()
    check(not int(status, 16) & 0x8,
          'legacy msi=off: after unbind, 50 rings leave the INTx line low '
          '(PCI status 0x%s)' % status)
    a.run('echo %s > /sys/bus/pci/drivers/ivshmem/bind' % bdf)
    r = ping_pong(a, c, 100)
    oops = a.run('dmesg | grep -E "nobody cared|Disabling IRQ|WARNING|BUG|'
                 'Oops"; true')
    check(a.info()['irq'] == 'intx' and r['ok'] and not oops.strip(),
          'legacy msi=off: 50 rings while unbound cause no unhandled '
          'interrupt; after rebind INTx again, 100 round trips (%s)'
          % latency_line(r), oops + ('' if r['ok'] else r['text']))


def test_kill_and_join(s):
    srv = s.server(vectors=2)
    a, b = boot(s, {'a': (doorbell_dev(srv, 2), ''),
                    'b': (doorbell_dev(srv, 2), '')})
    host = s.hostpeer(srv)
    ia, ib = a.info(), b.info()
    b.start('ivshmem-guest pong %s 1000000 60000' % ia['id'])
    b.expect(rb'pong: ready', 30)
    a.start('ivshmem-guest ping %s 1000000 5000' % ib['id'])
    time.sleep(3)
    killed_at = time.time()
    b.kill()
    rc, out = a.finish(60)
    check(rc == 2 and 'TIMEOUT' in out,
          'peer killed mid-run: the survivor\'s ping-pong stops with a '
          'timeout after %.1f s' % (time.time() - killed_at), out)
    left = host.wait_for(lambda: ('leave', int(ib['id'])) in host.events,
                         20)
    check(left, 'peer killed mid-run: the server announces the departure '
          'to the other peers', str(host.events))
    a.start('ivshmem-guest wait 20000')
    a.expect(rb'wait: ready', 30)
    host.ring(int(ia['id']), 1)
    rc, out = a.finish(60)
    check(rc == 0 and 'vector=1' in out,
          'peer killed mid-run: the survivor still gets doorbells', out)
    c, = boot(s, {'c': (doorbell_dev(srv, 2), '')})
    ic = c.info()
    joined = host.wait_for(lambda: ('join', int(ic['id'])) in host.events,
                           20)
    check(joined and ic['id'] not in (ia['id'], ib['id']),
          'late-joining peer gets a fresh ID, announced to the others',
          '%s %s' % (ic, host.events))
    r = ping_pong(a, c, 200)
    check(r['ok'], 'late-joining peer: 200 round trips with the survivor',
          '' if r['ok'] else r['text'])


def presence_dev(server, vectors):
    # one vector more than the server's: the last is for presence alone
    return ['-chardev', 'socket,id=ivc,path=' + server.sock, '-device',
            'ivshmem-doorbell,chardev=ivc,vectors=%d,presence=on'
            % (vectors + 1)]


# The bound a guest must be told within (TCG on a shared 2-core machine;
# measured in milliseconds, see the scenario's "# presence:" line).
PRESENCE_BOUND_S = 5.0


def presence_fields(line):
    return dict(kv.split('=', 1) for kv in line.split()[1:] if '=' in kv)


def presence_kill(a, victim, victim_id, what):
    """Kill VICTIM (a guest, or a host peer when it has .close) while A
    waits for a presence change; the seconds from the kill to A's report
    reaching the host, and A's snapshot afterwards."""
    a.start('ivshmem-guest presence-wait 20000')
    a.expect(rb'presence-wait: ready', 30)
    killed_at = time.time()
    if hasattr(victim, 'kill'):
        victim.kill()
    else:
        # shutdown: a close() alone leaves the connection to the blocked
        # reader thread
        victim.sock.shutdown(socket.SHUT_RDWR)
        victim.close()
    a.expect(rb'presence-wait: changed', 30)
    took = time.time() - killed_at
    rc, out = a.finish(60)
    after = [ln for ln in out.splitlines() if ln.startswith('after:')]
    fields = presence_fields(after[0]) if after else {}
    ids = [e.split(':')[0] for e in fields.get('list', '').split(',') if e]
    ok = rc == 0 and str(victim_id) not in ids and took < PRESENCE_BOUND_S
    log = '%s: %.3f s from the kill to the guest\'s report\n%s' % (
        what, took, out)
    return ok, took, fields, log


def test_presence(s):
    srv = s.server(vectors=2)
    a, b, c = boot(s, {'a': (presence_dev(srv, 2), ''),
                       'b': (presence_dev(srv, 2), ''),
                       'c': (doorbell_dev(srv, 2), '')})
    ia, ib, ic = a.info(), b.info(), c.info()
    out = a.tool('peers')
    f = presence_fields(out)
    want = ','.join('%s:2' % i for i in sorted((int(ib['id']),
                                                int(ic['id']))))
    sysfs = a.run('cat /sys/class/ivshmem/ivshmem0/presence '
                  '/sys/class/ivshmem/ivshmem0/peers')
    check(f.get('state') == '0x1' and f.get('own_vectors') == '2' and
          f.get('count') == '2' and f.get('list') == want and
          'state=connected' in sysfs and 'peers=2' in sysfs,
          'presence: a guest lists the two other peers with their vector '
          'counts (ioctl and sysfs), connected, 2 own vectors',
          '%s\n%s\nexpected list %s' % (out, sysfs, want))
    rc, out = c.tool('peers', check=False)
    files = c.run('ls /sys/class/ivshmem/ivshmem0/').split()
    check(rc != 0 and 'no peer presence' in out and
          'ivposition' in files and 'presence' not in files and
          'peers' not in files,
          'presence: a device without presence=on refuses the ioctl and '
          'has no presence sysfs files', '%s\n%s' % (out, files))
    times = []
    ok, took, f, log = presence_kill(a, b, ib['id'], 'guest b killed')
    times.append(took)
    check(ok and f.get('count') == '1',
          'presence: guest b killed (SIGKILL), guest a is told within %g s '
          'and no longer lists it (%.3f s from the kill to the report)'
          % (PRESENCE_BOUND_S, took), log)
    details = []
    for i in range(3):
        host = s.hostpeer(srv)
        host.wait_for(lambda: len(host.peers) >= 2, 10)
        # a has seen the whole join (both vectors) before it waits
        for _ in range(100):
            if ',%d:2' % host.id in ',' + presence_fields(
                    a.tool('peers')).get('list', ''):
                break
        ok, took, f, log = presence_kill(a, host, host.id,
                                         'host peer %d closed' % i)
        times.append(took)
        details.append(log)
        if not ok:
            break
    check(ok and len(times) == 4,
          'presence: 3 host peers join and die, guest a told each time '
          'within %g s; kill to report %s s (TCG, serial console included)'
          % (PRESENCE_BOUND_S, ', '.join('%.3f' % t for t in times[1:])),
          '\n'.join(details))
    # the channel library: liveness from presence, no heartbeat (c, which
    # has no presence itself, is side b; a watches it)
    c.run('ivc-liveness -d /dev/ivshmem0 -r b > /tmp/lv 2>&1 &')
    a.start('ivc-liveness -d /dev/ivshmem0 -r a -t 30000')
    a.expect(rb'liveness: up peer=\d+ presence=yes', 60)
    killed_at = time.time()
    c.kill()
    a.expect(rb'liveness: gone', 30)
    took = time.time() - killed_at
    rc, out = a.finish(30)
    times.append(took)
    check(rc == 0 and took < PRESENCE_BOUND_S,
          'presence: the channel library (no heartbeat) reports the other '
          'side GONE when its VM is killed, %.3f s from the kill' % took,
          out)
    print('# presence: kill-to-report seconds %s, max %.3f'
          % (' '.join('%.3f' % t for t in times), max(times)), flush=True)


def test_server_restart(s):
    # The region must outlive the server: create it here, so that the
    # server does not remove it when it exits.
    shm = open_host_shm('/dev/shm/' + s.shm_name('server'), 4 * MIB)
    srv = s.server(vectors=1)
    dev = ['-chardev', 'socket,id=ivc,path=%s,reconnect-ms=500' % srv.sock,
           '-device', 'ivshmem-doorbell,chardev=ivc,vectors=1']
    a, b = boot(s, {'a': (dev, ''), 'b': (dev, '')})
    a.tool('write 0 65536 55')
    srv.stop()
    r = ping_pong(a, b, 100)
    check(r['ok'], 'server stopped: doorbells between connected guests '
          'keep working', '' if r['ok'] else r['text'])
    old = {a.info()['id'], b.info()['id']}
    srv = s.server(vectors=1)
    host = s.hostpeer(srv)
    back = host.wait_for(lambda: len(host.peers) >= 2, 60)
    ia, ib = a.info(), b.info()
    check(back and {ia['id'], ib['id']} == {str(p) for p in host.peers},
          'server restarted: both guests rejoin; the guests read their '
          'new IDs from IVPosition (%s -> %s, %s)'
          % (sorted(old), ia['id'], ib['id']), str(host.peers))
    r = ping_pong(a, b, 100)
    ok = 'verify: ok' in b.tool('verify 0 65536 55', check=False)[1]
    check(r['ok'] and ok, 'server restarted: the region kept its data, '
          '100 round trips with the new IDs', '' if r['ok'] else r['text'])
    shm.close()


# What a kernel prints when it oopses, warns or finds a freed object
# written to (slub_debug=FZPU poisons freed objects and checks the poison).
KERNEL_TROUBLE = re.compile(r'BUG[: ]|Oops|general protection|Poison overwritten|'
                            r'WARNING:|Unable to handle|refcount_t:|'
                            r'Object padding overwritten|Redzone overwritten')


def kernel_trouble(guest):
    """Lines of the guest's kernel log (dmesg; the console if the guest
    no longer answers) that show an oops, a warning or slab corruption."""
    try:
        rc, out = guest.run('dmesg', 20, check=False)
    except e2e.E2EError:
        rc = -1
    if rc:
        out = e2e.Session.tail(guest.console, 100000)
    return '\n'.join(ln for ln in out.splitlines()
                     if KERNEL_TROUBLE.search(ln))


def guest_try(guest, cmd, timeout):
    """Run CMD; a guest that stops answering (an oops) is a result too."""
    try:
        return guest.run(cmd, timeout, check=False)
    except e2e.E2EError as err:
        return -1, str(err)


def hold_and_remove(guest, shm, offset, seed, remove_cmd):
    """A process maps /dev/ivshmem0 and stores 4 KiB through it (so its
    pages are mapped: only the driver's zap can revoke them); REMOVE_CMD
    (a guest command, or a function run on the host) takes the device
    away; the process then stores 4 KiB at OFFSET again and exits.
    Returns (what the process reported, whether any of its stores after
    the removal reached the host's view of the region).  The first store
    must reach the host, or this raises."""
    shm[offset:offset + 4096] = bytes(4096)
    trigger = '/tmp/go-%d' % seed
    guest.run('rm -f %s; ivshmem-guest hold-touched %d %d %d %s 60000 '
              '> /tmp/hold 2>&1 & echo $! > /tmp/hold.pid'
              % (trigger, offset, seed + 1000, seed, trigger))
    guest.run('for i in $(seq 100); do grep -q ready /tmp/hold && break; '
              'sleep 0.1; done; grep ready /tmp/hold')
    if not host_verify(shm, offset, 4096, seed + 1000):
        raise e2e.E2EError('hold-touched: the store before the removal did '
                           'not reach the host')
    shm[offset:offset + 4096] = bytes(4096)
    if callable(remove_cmd):
        remove_cmd()
    else:
        guest_try(guest, remove_cmd, 60)
    _, out = guest_try(guest, 'touch %s; for i in $(seq 300); do '
                       'grep -q result= /tmp/hold && break; sleep 0.1; done; '
                       'cat /tmp/hold' % trigger, 60)
    # Then let it exit (and close the device).
    guest_try(guest, 'while kill -0 $(cat /tmp/hold.pid) 2>/dev/null; do '
              'sleep 0.1; done', 30)
    return out, bytes(shm[offset:offset + 4096]) != bytes(4096)


def validate_slabs(guest):
    """Make SLUB check every object now, freed ones included (what it
    finds goes to the kernel log: see kernel_trouble)."""
    guest_try(guest, 'for f in /sys/kernel/slab/*/validate; do '
              'echo 1 > $f; done 2>/dev/null; true', 180)


def qmp_device_del(path, dev_id, timeout=60):
    """device_del DEV_ID over the QMP socket PATH; waits until QEMU reports
    the device gone (the guest has ejected it).  Returns None or an error."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        f = sock.makefile('rwb')
        f.readline()                        # the greeting
        for cmd in ({'execute': 'qmp_capabilities'},
                    {'execute': 'device_del', 'arguments': {'id': dev_id}}):
            f.write(json.dumps(cmd).encode() + b'\n')
            f.flush()
            while True:
                r = json.loads(f.readline())
                if 'error' in r:
                    return str(r['error'])
                if 'return' in r:
                    break
        while True:
            r = json.loads(f.readline())
            if r.get('event') == 'DEVICE_DELETED' and \
                    r.get('data', {}).get('device') == dev_id:
                return None
    except (OSError, ValueError) as err:
        return 'QMP: %s' % err
    finally:
        sock.close()


def test_driver(s):
    """The guest driver's interface, and how it survives unbind and removal
    with open files and live mappings, under a poisoning allocator: one
    guest per case, as a use-after-free can take a guest down."""
    srv = s.server(vectors=2, size='4M')

    def dev(name):
        return ['-chardev', 'socket,id=ivc,path=' + srv.sock, '-device',
                'ivshmem-doorbell,id=ivs0,chardev=ivc,vectors=2', '-qmp',
                'unix:%s,server=on,wait=off' % os.path.join(s.dir,
                                                            name + '.qmp')]
    a, b, c = boot(s, {n: (dev(n), 'slub_debug=FZPU') for n in 'abc'})
    shm = open_host_shm('/dev/shm/' + srv.shm, 4 * MIB)
    bdf = os.path.basename(find_bdf(a))
    unbind = 'echo %s > /sys/bus/pci/drivers/ivshmem/unbind' % bdf

    out = a.tool('mapcheck')
    check('private=Invalid argument' in out and 'shared-readonly=ok' in out,
          'driver: MAP_PRIVATE is refused, a read-only MAP_SHARED works', out)
    info = a.info()
    _, out = a.run('cat /sys/class/ivshmem/ivshmem0/ivposition '
                   '/sys/class/ivshmem/ivshmem0/region_size; '
                   'grep -c ivshmem /proc/iomem; '
                   'grep -o "ivshmem0-v[0-9]*" /proc/interrupts', check=False)
    check(out.split() == [info['id'], str(4 * MIB), '2', 'ivshmem0-v0',
                          'ivshmem0-v1'],
          'driver: sysfs ivposition and region_size, BAR0 and BAR2 claimed, '
          'IRQs named per vector', out)

    # A reader blocked on one vector follows a BIND of its file made by
    # another thread, and returns the new vector's interrupt.
    host = s.hostpeer(srv)
    host.wait_for(lambda: int(info['id']) in host.peers, 20)
    for how in ('read', 'poll', 'epoll'):
        # The waiter gives up after 20 s; a poll() that was not woken finds
        # the interrupt only then: after_ms tells it apart.
        a.start('ivshmem-guest rebind-wait 1 20000 ' + how)
        a.expect(rb'rebind-wait: rebound', 30)
        host.ring(int(info['id']), 1)
        rc, out = a.finish(60)
        m = re.search(r'after_ms=(\d+)', out)
        check(rc == 0 and 'slept: yes' in out and 'woke count=1' in out and
              ('events=0x0' in out if how == 'read' else
               'events=0x1' in out) and m and int(m.group(1)) < 10000,
              'driver: a %s blocked on vector 0 follows a BIND to vector 1 '
              'by another thread and returns its interrupt' % how, out)

    # The ioctl numbers of interface version 1 (type 0xBA, taken by
    # liveupdate.h in Linux 6.19) are gone; vectors the device would
    # truncate to 8 bits are refused.
    out = a.tool('abi')
    check('magic=0xd3' in out and 'old-info=ENOTTY' in out and
          'old-ring=ENOTTY' in out and 'old-bind=ENOTTY' in out,
          'driver: ioctl type 0xD3; the 0xBA numbers of version 1 fail '
          'with ENOTTY', out)
    check('ring255=ok ring256=EINVAL ring511=EINVAL ring65535=EINVAL' in out,
          'driver: RING takes vector 255, refuses 256, 511 and 65535 with '
          'EINVAL (the device decodes 8 bits)', out)

    # INFO reports the memory type the mapping got: the guest's PAT, as
    # listed in debugfs, downgrades write-back in the 32-bit PCI window.
    bar2 = a.run('sed -n 3p /sys/bus/pci/devices/%s/resource' % bdf).split()
    start = int(bar2[0], 16)
    a.run('mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; true')
    pat = a.run('grep -i "%x-" /sys/kernel/debug/x86/pat_memtype_list; true'
                % start)
    pat_names = {'write-back': 'wb', 'write-combining': 'wc',
                 'uncached-minus': 'uc-minus', 'uncached': 'uc'}
    m = re.search(r'PAT: \[mem 0x0*%x-0x[0-9a-f]+\] ([a-z-]+)' % start,
                  pat)
    got = pat_names.get(m.group(1)) if m else None
    check(got and info['cache'] == got and info['requested'] == 'wb',
          'driver: INFO reports the memory type the mapping got (%s, '
          'BAR2 at 0x%x), not the request (wb)' % (got, start),
          '%s\n%s' % (info, pat))

    # 1. A file open across unbind, closed afterwards.
    rc, out = guest_try(a, '(exec 5<> /dev/ivshmem0; sleep 2) & sleep 1; '
                        '%s; wait' % unbind, 30)
    validate_slabs(a)
    trouble = kernel_trouble(a)
    check(rc == 0 and not trouble, 'driver: a file open across driver '
          'unbind is closed afterwards without a use-after-free; slab '
          'validation clean', out + '\n' + trouble)

    # 2. A live mapping across unbind.
    out, reached = hold_and_remove(b, shm, MIB, 71, unbind)
    trouble = kernel_trouble(b)
    check('result=sigbus word=0' in out and not reached and not trouble,
          'driver: after driver unbind, a process that wrote through its '
          'mapping gets SIGBUS and its store does not reach the host',
          '%s\nreached host: %s\n%s' % (out, reached, trouble))

    # 3. A live mapping across hot-unplug (QMP device_del, ACPI eject).
    b.run('echo %s > /sys/bus/pci/drivers/ivshmem/bind' % bdf, 30)
    qmp = os.path.join(s.dir, 'b.qmp')
    errors = []
    out, reached = hold_and_remove(
        b, shm, 3 * MIB, 73, lambda: errors.append(
            qmp_device_del(qmp, 'ivs0')))
    _, gone = guest_try(b, 'ls /sys/bus/pci/devices/%s 2>&1; '
                        'ls /dev | grep -c ivshmem' % bdf, 30)
    validate_slabs(b)
    trouble = kernel_trouble(b)
    check(errors == [None] and 'result=sigbus word=0' in out and
          not reached and gone.endswith('\n0') and not trouble,
          'driver: after hot-unplug (device_del), a process that wrote '
          'through its mapping gets SIGBUS and its store does not reach the '
          'host; slab validation clean',
          '%s\n%s\nreached host: %s\n%s\n%s' % (errors, out, reached, gone,
                                                trouble))

    # 4. A live mapping across removal of the PCI device, then a rescan.
    out, reached = hold_and_remove(c, shm, 2 * MIB, 72,
                                   'echo 1 > /sys/bus/pci/devices/%s/remove'
                                   % bdf)
    trouble = kernel_trouble(c)
    check('result=sigbus word=0' in out and not reached and not trouble,
          'driver: after PCI remove, a process that wrote through its '
          'mapping gets SIGBUS and its store does not reach the host',
          '%s\nreached host: %s\n%s' % (out, reached, trouble))
    guest_try(c, 'echo 1 > /sys/bus/pci/rescan', 60)
    rc, out = guest_try(c, 'ivshmem-guest info', 30)
    validate_slabs(c)
    trouble = kernel_trouble(c)
    check(rc == 0 and 'irq=msix' in out and 'vectors=2' in out and
          not trouble,
          'driver: rescan probes the device again (MSI-X, 2 vectors); '
          'slab validation and the kernel log are clean',
          out + '\n' + trouble)
    rc, out = guest_try(c, 'rmmod ivshmem && ls /dev | grep -c ivshmem; '
                        'insmod /lib/modules/$(uname -r)/ivshmem.ko && '
                        'ivshmem-guest info', 60)
    trouble = kernel_trouble(c)
    check(rc == 0 and out.startswith('0\n') and 'irq=msix' in out and
          not trouble, 'driver: the module unloads with a device bound, '
          'and loads again', out + '\n' + trouble)
    shm.close()


def test_driver_race(s):
    """Every file operation after removal, open/fault/read raced against
    removal 200 times, and a driver built without the zap on removal,
    which the hold test must catch."""
    srv = s.server(vectors=2, size='4M')
    dev = ['-chardev', 'socket,id=ivc,path=' + srv.sock, '-device',
           'ivshmem-doorbell,chardev=ivc,vectors=2']
    a, = boot(s, {'a': (dev, 'slub_debug=FZPU')})
    shm = open_host_shm('/dev/shm/' + srv.shm, 4 * MIB)
    bdf = os.path.basename(find_bdf(a))
    drv = '/sys/bus/pci/drivers/ivshmem/'
    unbind = 'echo %s > %sunbind' % (bdf, drv)
    bind = 'echo %s > %sbind' % (bdf, drv)

    # Every ioctl, read, poll, epoll, mmap and a store after removal.
    a.run('rm -f /tmp/go; ivshmem-guest gone /tmp/go 60000 > /tmp/gone '
          '2>&1 & echo $! > /tmp/gone.pid')
    a.run('for i in $(seq 100); do grep -q ready /tmp/gone && break; '
          'sleep 0.1; done; grep ready /tmp/gone')
    guest_try(a, unbind, 60)
    _, out = guest_try(a, 'touch /tmp/go; while kill -0 $(cat /tmp/gone.pid)'
                       ' 2>/dev/null; do sleep 0.1; done; cat /tmp/gone', 60)
    want = ('gone: info=ENODEV ring=ENODEV bind=ENODEV unknown=ENOTTY '
            'read=ENODEV read-nonblock=ENODEV poll=1/0x18 epoll=1/0x18 '
            'mmap=ENODEV store=sigbus open=ENOENT')
    validate_slabs(a)
    trouble = kernel_trouble(a)
    check(want in out and not trouble,
          'driver-race: after unbind, INFO, RING and BIND fail with ENODEV, '
          'read with ENODEV, poll and epoll report POLLERR|POLLHUP, mmap '
          'fails, a store SIGBUSes, open finds no node; slab validation '
          'clean', '%s\nwanted: %s\n%s' % (out, want, trouble))

    # open+INFO, open+mmap+fault, open+read+poll against unbind/bind.
    guest_try(a, bind, 60)
    rc, out = guest_try(a, 'dmesg -c > /dev/null; rm -f /tmp/race.all; '
                        'n=0; bad=; '
                        'for i in $(seq 200); do '
                        'ivshmem-guest race 400 > /tmp/race 2>&1 & '
                        'sleep 0.$((RANDOM %% 3)); %s; %s; wait $!; '
                        'cat /tmp/race >> /tmp/race.all; '
                        'grep -q done /tmp/race || bad="$bad racer$i"; '
                        'dmesg -c | grep -E "%s" && bad="$bad dmesg$i"; '
                        'n=$i; [ -z "$bad" ] || break; done; '
                        'echo "iterations=$n bad=$bad"'
                        % (unbind, bind, KERNEL_TROUBLE.pattern
                           .replace('\\', '\\\\').replace('"', '\\"')), 1800)
    # What the racers met, summed over the rounds: the races must have
    # hit the device's absence, or they prove nothing.
    seen = {}
    for k, v in re.findall(r'(\w+)=(\d+)', guest_try(
            a, 'grep "^race:" /tmp/race.all', 60)[1]):
        seen[k] = seen.get(k, 0) + int(v)
    validate_slabs(a)
    trouble = kernel_trouble(a)
    info = a.info() if rc == 0 else {}
    check(rc == 0 and 'iterations=200 bad=\n' in out + '\n' and
          not trouble and info.get('irq') == 'msix' and
          seen.get('open_failed') and seen.get('enodev'),
          'driver-race: 200 rounds of open/INFO, open/mmap/fault and '
          'open/read/poll racing unbind+bind (%s): no warning in dmesg '
          'after any round, slab validation clean, the device works after'
          % ' '.join('%s=%d' % kv for kv in sorted(seen.items())),
          out[-2000:] + '\n' + trouble)

    # Control: a driver without the zap lets a store after unbind through
    # to the host, and the hold test sees it.
    a.run('rmmod ivshmem && insmod /lib/modules/$(uname -r)/'
          'ivshmem-nozap.ko')
    out, reached = hold_and_remove(a, shm, MIB, 91, unbind)
    check('result=written' in out and reached,
          'driver-race: control: with the zap line compiled out '
          '(ivshmem-nozap.ko), the store after unbind reaches the host, '
          'so the hold tests can fail', '%s\nreached host: %s'
          % (out, reached))
    a.run('rmmod ivshmem; insmod /lib/modules/$(uname -r)/ivshmem.ko')
    shm.close()


def test_newer_kernel(s):
    """The driver against bookworm-backports' kernel (6.12 as of 2026), whose
    class_create() and pcim APIs differ from 6.1's: a build with W=1, in
    which any warning fails (booting it: GUEST_KABI=backports)."""
    what = "driver: builds without a warning against bookworm-backports' kernel"
    env = dict(os.environ, GUEST_KABI='backports', GUEST_BUILD_ONLY='1')
    env.pop('GUEST_KERNEL', None)
    out = subprocess.run([os.path.join(e2e.TOP, 'guest', 'image.sh')],
                         env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=900, check=False)
    text = out.stdout.decode(errors='replace').strip()
    if out.returncode == 3:
        skip(what, text.splitlines()[-1] if text else 'not available')
        return
    check(out.returncode == 0, '%s (%s)' % (what, text.splitlines()[-1]),
          '' if out.returncode == 0 else text[-3000:])


SHRUNK_RE = re.compile(r'warning: ivshmem-plain \'shm\' at [0-9a-f:.]+: the '
                       r'shared memory shrank from 0x400000 to 0x1000 bytes')
SHRUNK_TRACE_RE = re.compile(r'ivshmem_shm_shrunk .*shrank to 0x1000: '
                             r'private from offset 0x1000')


def qmp_status(path):
    """query-status over the QMP socket at @path, or the error."""
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(path)
        f = c.makefile('rwb')
        f.readline()
        for cmd in ('qmp_capabilities', 'query-status'):
            f.write(json.dumps({'execute': cmd}).encode() + b'\n')
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if 'event' not in msg:
                    break
        c.close()
        return msg.get('return', {}).get('status', msg)
    except (OSError, ValueError) as err:
        return 'no answer (%s)' % err


def shrink(s, want_accel):
    """Issue 23 item 7: a third peer (the host) truncates a POSIX shm
    object that two running guests share; the victim's QEMU used to die
    of SIGBUS at its next access to the lost range."""
    if s.accel != want_accel:
        for what in ('shared before', 'reads 0', 'write private',
                     'first page shared', 'QMP', 'reported once'):
            skip('shrink (%s): %s' % (want_accel, what),
                 'needs %s, this host runs the guests under %s%s'
                 % (want_accel, s.accel, ' (its /dev/kvm cannot run our '
                    'guests)' if want_accel == 'kvm' else ''))
        return
    name = s.shm_name('shrink')
    path = '/dev/shm/' + name
    open_host_shm(path, 4 * MIB).close()
    qmp = os.path.join(s.dir, 'a.qmp')
    dev = ['-object', 'memory-backend-file,id=hm,mem-path=%s,size=4M,'
           'share=on' % path, '-device', 'ivshmem-plain,memdev=hm,id=shm',
           '-trace', 'ivshmem_shm_shrunk']
    a, b = boot(s, {'a': (dev + ['-qmp', 'unix:%s,server=on,wait=off'
                                 % qmp], ''),
                    'b': (dev, '')})
    off = 512 * 1024
    a.tool('put %d before-the-shrink' % off)
    check(b.tool('get %d' % off) == 'before-the-shrink',
          'shrink (%s): the guests share BAR2 + 512 KiB before the shrink'
          % s.accel)
    os.truncate(path, 4096)             # the third peer
    rc, out = a.tool('get %d' % off, 60, check=False)
    check(rc == 0 and out == '' and a.alive(),
          'shrink (%s): truncated to 4 KiB by a third peer, guest A reads '
          'BAR2 + 512 KiB: its QEMU survives, the read is 0' % s.accel,
          'rc %d, read %r, QEMU %s' % (rc, out, 'running' if a.alive()
                                       else 'exited'))
    a.tool('put %d only-for-a' % off, 60, check=False)
    rc, out = b.tool('get %d' % off, 60, check=False)
    mine = a.tool('get %d' % off, 60, check=False)[1]
    check(rc == 0 and out == '' and mine == 'only-for-a' and b.alive(),
          'shrink (%s): A\'s write there is not visible to B (B reads %r, '
          'A %r)' % (s.accel, out, mine))
    a.tool('put 64 still-shared', 60, check=False)
    check(b.tool('get 64', 60, check=False)[1] == 'still-shared',
          'shrink (%s): the first 4 KiB stay shared' % s.accel)
    status = qmp_status(qmp)
    check(status == 'running', 'shrink (%s): QMP of A answers, status %s'
          % (s.accel, status))
    log = open(a.logfile, errors='replace').read()
    once = (len(SHRUNK_RE.findall(log)) == 1 and
            len(SHRUNK_TRACE_RE.findall(log)) == 1)
    check(once, 'shrink (%s): A reports it once, in a warning naming the '
          'device and both sizes, and in a trace' % s.accel,
          '' if once else s.tail(a.logfile))


def test_shrink(s):
    if s.accel == 'tcg':
        shrink(s, 'tcg')
        return
    t = e2e.Session(accel='tcg', image=s.image)
    try:
        shrink(t, 'tcg')
    finally:
        t.close()


def test_shrink_kvm(s):
    shrink(s, 'kvm')

# Every scenario with the number of checks it makes on every path: the
# plan is printed first from this list, and a scenario that makes fewer
# fails the rest.
TESTS = [('plain', test_plain, 5), ('doorbell1', test_doorbell1, 4),
         ('doorbell4', test_doorbell4, 5),
         ('legacy-shm', test_legacy_shm, 1),
         ('legacy-intx', test_legacy_intx, 7),
         ('kill-join', test_kill_and_join, 5),
         ('server-restart', test_server_restart, 3),
         ('driver', test_driver, 14), ('driver-race', test_driver_race, 3),
         ('newer-kernel', test_newer_kernel, 1),
         ('shrink', test_shrink, 6), ('shrink-kvm', test_shrink_kvm, 6),
         ('presence', test_presence, 5)]


def main():
    global TESTS
    wanted = sys.argv[1:]
    # --only: a suite of its own runs these scenarios as its whole case
    # list (e.g. the driver on another kernel); the others are not its
    # cases, so they are neither planned nor skipped.
    only = wanted[:1] == ['--only']
    if only:
        wanted = wanted[1:]
    unknown = [w for w in wanted if w not in [t[0] for t in TESTS]]
    if unknown or (only and not wanted):
        print('1..1\nnot ok 1 - unknown scenario(s) %s (E2E_TESTS); known: %s'
              % (' '.join(unknown) or '(none given to --only)',
                 ' '.join(t[0] for t in TESTS)))
        return 1
    if only:
        TESTS = [t for t in TESTS if t[0] in wanted]
    print('1..%d' % sum(n if not wanted or name in wanted else 1
                        for name, _, n in TESTS), flush=True)
    t0 = time.time()
    try:
        image = e2e.build_image()
        accel = e2e.probe_accel(image)
    except e2e.E2EError as err:
        for name, _, n in TESTS:
            if wanted and name not in wanted:
                skip('%s (%d checks)' % (name, n), 'not selected (E2E_TESTS)')
                continue
            for i in range(n):
                tap(False, '%s: check %d of %d not run, e2e set-up failed: '
                    '%s' % (name, i + 1, n, err))
        return 1
    print('# guest image %s, accelerator %s' % (image, accel), flush=True)
    overdrawn = False       # a scenario failed past its planned checks
    for name, fn, planned in TESTS:
        if wanted and name not in wanted:
            skip('%s (%d checks)' % (name, planned), 'not selected by '
                 'E2E_TESTS=%s' % ' '.join(wanted))
            continue
        s = e2e.Session(accel=accel, image=image)
        failed_before = results.count(False)
        first = len(results)
        started = time.time()
        try:
            fn(s)
        except Exception as err:   # report, show the logs, go on
            if len(results) - first < planned:
                tap(False, '%s: %s' % (name, err))
            else:
                print('# %s: %s' % (name, err), flush=True)
                overdrawn = True
        made = len(results) - first
        while len(results) - first < planned:
            tap(False, '%s: check %d of %d never ran'
                % (name, len(results) - first + 1, planned))
        if made > planned:
            print('# %s made %d checks, %d planned: update TESTS'
                  % (name, made, planned), flush=True)
            overdrawn = True
        if results.count(False) > failed_before:
            s.dump_logs()
        print('# %s took %.1f s' % (name, time.time() - started),
              flush=True)
        s.close()
    if boot_times:
        print('# %d guest boots: %.1f s to %.1f s (median %.1f s), %s'
              % (len(boot_times), min(boot_times), max(boot_times),
                 sorted(boot_times)[len(boot_times) // 2], accel))
    print('# e2e total %.1f s' % (time.time() - t0))
    return 0 if all(results) and not overdrawn else 1


if __name__ == '__main__':
    sys.exit(main())
