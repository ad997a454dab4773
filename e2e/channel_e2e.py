#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of libivshmem-channel with real guests (TAP).

The guest image carries the library's examples statically linked
(ivc-pingpong, ivc-hostguest, ivc-seq: guest/image.sh); the host side is
channel/build (CHANNEL_BIN to use another build).  Cases:
  host-guest          a host peer of the server talks to a guest through /dev/ivshmem0
  guests              two guests ping-pong through the channel, sleeping on interrupts
  host-guest-restart  a guest sender and a host receiver (ivc-seq), each killed
                      and restarted mid-stream
  guests-restart      the same between two guests, and then the sender's whole
                      guest (QEMU) killed and a new guest booted in its place
The restart cases check the receiver's log (every message it was handed,
every restart it was told of): no message twice, none of an earlier
incarnation after a later one, every restart told exactly once.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ivshmem_e2e as e2e  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get('CHANNEL_BIN', os.path.join(TOP, 'channel', 'build'))
n = 0
failed = 0


def tap(ok, what, detail=''):
    global n, failed
    n += 1
    failed += not ok
    print('%s %d - %s' % ('ok' if ok else 'not ok', n, what), flush=True)
    if not ok:
        for line in detail.splitlines()[-20:]:
            print('#   ' + line, flush=True)


def dev(server):
    return ['-chardev', 'socket,id=ivc,path=' + server.sock,
            '-device', 'ivshmem-doorbell,chardev=ivc,vectors=1']


def host_guest(s):
    srv = s.server(vectors=1, size='4M')
    g = s.guest('a', dev(srv))
    g.wait_ready(180)
    # start() returns once the guest runs it; the host side may come first
    # or second: both sides create the layout and the channel if missing.
    g.start('ivc-hostguest guest -d /dev/ivshmem0')
    t0 = time.time()
    try:
        host = subprocess.run([os.path.join(BIN, 'hostguest'), 'host', '-S', srv.sock,
                               '-n', '200'], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as err:
        host = subprocess.CompletedProcess(err.cmd, -1, str(err.stdout or ''),
                                           'timed out after 60 s')
    dt = time.time() - t0
    try:
        rc, out = g.finish(30)
    except e2e.E2EError as err:
        rc, out = 1, str(err)
    ok = (host.returncode == 0 and ' 0 wrong answers' in host.stdout and
          rc == 0 and 'host said bye' in out)
    first = [l for l in host.stdout.splitlines() if 'first answer' in l]
    tap(ok, 'host-guest: a host peer sends 200 requests to a guest over channel '
        '"hostguest", every answer checked (%.1f s; %s)'
        % (dt, first[0].split(': ', 1)[1] if first else 'no answer'),
        '' if ok else host.stdout + host.stderr + '\n--- guest:\n' + out)


def guests(s):
    srv = s.server(vectors=1, size='4M')
    a = s.guest('a', dev(srv))
    b = s.guest('b', dev(srv))
    a.wait_ready(180)
    b.wait_ready(180)
    b.start('ivc-pingpong -r b -d /dev/ivshmem0 -n 300 -w sleep')
    try:
        rc, out = a.run('ivc-pingpong -r a -d /dev/ivshmem0 -n 300 -w sleep', 120,
                        check=False)
        rcb, outb = b.finish(60)
    except e2e.E2EError as err:
        rc, out, rcb, outb = 1, str(err), 1, ''
    ok = rc == 0 and rcb == 0 and '0 wrong echoes' in out
    line = [l for l in out.splitlines() if l.startswith('pingpong:')]
    tap(ok, 'guests: two guests, 300 round trips through the channel, both '
        'sleeping on MSI-X interrupts (%s)' % (line[0] if line else 'no result'),
        '' if ok else out + '\n--- b:\n' + outb)


# ---------------------------------------------------------------------------
# Restarts: ivc-seq (channel/examples/seq.c) logs; phases are separated by
# "P name" lines the test appends to the receiver's log.

def parse_log(text):
    """The receiver's log, split into phases: {name: [lines]} and checks
    that hold over the whole log."""
    phases = {'start': []}
    order = ['start']
    seen = set()
    bad = []
    max_epoch = 0
    cur_epoch = None
    last_seq = None
    told = False        # an R since the last message of this receiver
    fresh = True        # no message yet in this receiver incarnation
    for raw in text.splitlines():
        f = raw.split()
        if not f:
            continue
        if f[0] == 'P':
            order.append(f[1])
            phases[f[1]] = []
            continue
        phases[order[-1]].append(f)
        if f[0] == 'S':
            fresh, told = True, False
        elif f[0] == 'R':
            told = True
        elif f[0] in ('X', 'E'):
            bad.append('receiver logged ' + raw)
        elif f[0] == 'M':
            e, q = int(f[1]), int(f[2])
            if (e, q) in seen:
                bad.append('delivered twice: ' + raw)
            seen.add((e, q))
            if e < max_epoch:
                bad.append('from incarnation %d after incarnation %d: %s'
                           % (e, max_epoch, raw))
            if told and cur_epoch is not None and e <= cur_epoch and not fresh:
                bad.append('incarnation %d delivered after a restart was told: %s'
                           % (e, raw))
            if cur_epoch is not None and e != cur_epoch and not fresh and not told:
                bad.append('incarnation %d -> %d not told: %s'
                           % (cur_epoch, e, raw))
            if e == cur_epoch and not fresh and q != last_seq + 1:
                bad.append('seq %d after %d while both sides lived' % (q, last_seq))
            max_epoch = max(max_epoch, e)
            cur_epoch, last_seq, fresh, told = e, q, False, False
    return phases, order, bad, len(seen)


def msgs(lines):
    return [(int(f[1]), int(f[2]), int(f[3])) for f in lines if f[0] == 'M']


def resets(lines):
    return [f for f in lines if f[0] == 'R']


def check_sender_restart(phases, prev, name, what):
    """Phase NAME: the sender restarted while the receiver lived."""
    before, after = msgs(phases[prev]), msgs(phases[name])
    r = resets(phases[name])
    e_old = before[-1][0] if before else None
    e_new = max(m[0] for m in after) if after else None
    stale = [m for m in after if m[0] != e_new]
    first = [m for m in after if m[0] == e_new][:1]
    ok = (len(r) == 1 and before and after and e_new > e_old and not stale and
          first[0][1] == 0)
    text = ('%s: the receiver was told %d time(s) (-ECONNRESET); %d records of '
            'incarnation %s dropped, %d delivered; incarnation %s from seq %s on '
            '(%d messages)' % (what, len(r), first[0][2] if first else 0, e_old,
                               len(stale), e_new, first[0][1] if first else '-',
                               len(after)))
    detail = '\n'.join(' '.join(f) for f in phases[name][:12])
    return ok, text, detail


def check_receiver_restart(phases, prev, name, sender_log):
    before, after = msgs(phases[prev]), msgs(phases[name])
    told = len(re.findall(r'^R ', sender_log, re.M))
    ok = (told == 1 and before and after and after[0][0] == before[-1][0] and
          after[0][1] > before[-1][1] and not resets(phases[name]))
    return ok, ('receiver killed mid-stream and restarted: the sender was told %d '
                'time(s) (-ECONNRESET); the new receiver went on at seq %s after seq %s '
                '(nothing delivered again)'
                % (told, after[0][1] if after else '-', before[-1][1] if before else '-'))


def tail_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ''


def host_guest_restart(s):
    """Guest a sends (ivc-seq send), a host process receives."""
    srv = s.server(vectors=1, size='4M')
    g = s.guest('a', dev(srv))
    g.wait_ready(180)
    log = os.path.join(s.dir, 'recv.log')
    seq = os.path.join(BIN, 'seq')

    def receiver():
        return subprocess.Popen([seq, 'recv', '-S', srv.sock, '-l', log],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def mark(name):
        with open(log, 'a') as f:
            f.write('P %s\n' % name)

    rx = receiver()
    g.run('ivc-seq send -d /dev/ivshmem0 > /tmp/s1 2>&1 & echo $! > /tmp/s.pid')
    time.sleep(2)
    # the receiver stops, the ring fills, the sender dies with its records
    # in the ring and its successor attaches
    rx.send_signal(signal.SIGSTOP)
    time.sleep(0.5)
    g.run('kill -9 $(cat /tmp/s.pid)', check=False)
    mark('sender-restart')
    g.run('ivc-seq send -d /dev/ivshmem0 > /tmp/s2 2>&1 & echo $! > /tmp/s.pid')
    time.sleep(0.3)
    rx.send_signal(signal.SIGCONT)
    time.sleep(2)
    rx.kill()
    rx.wait()
    mark('receiver-restart')
    rx = receiver()
    time.sleep(2)
    rx.kill()
    rx.wait()
    g.run('kill -9 $(cat /tmp/s.pid)', check=False)
    sender2 = g.run('cat /tmp/s2')
    phases, order, bad, total = parse_log(tail_file(log))
    if order != ['start', 'sender-restart', 'receiver-restart']:
        raise e2e.E2EError('receiver log phases %s' % order)
    ok, what, detail = check_sender_restart(
        phases, 'start', 'sender-restart',
        'guest sender killed with records in the ring, restarted')
    tap(ok, 'host-guest-restart: ' + what, detail)
    ok, what = check_receiver_restart(phases, 'sender-restart', 'receiver-restart', sender2)
    tap(ok, 'host-guest-restart: host ' + what, sender2)
    tap(not bad and total > 0,
        'host-guest-restart: %d messages over 2 receivers and 2 senders: none twice, '
        'none of an earlier incarnation after a later one, every restart told, '
        'no gap while both sides lived, no corrupt message' % total, '\n'.join(bad[:20]))


def guests_restart(s):
    """Guest a sends, guest b receives; then a's QEMU dies, a2 replaces it."""
    srv = s.server(vectors=1, size='4M')
    a = s.guest('a', dev(srv))
    b = s.guest('b', dev(srv))
    a.wait_ready(180)
    b.wait_ready(180)
    recv = 'ivc-seq recv -d /dev/ivshmem0 -l /tmp/r.log > /dev/null 2>&1 & echo $! > /tmp/r.pid'
    send = 'ivc-seq send -d /dev/ivshmem0 > /tmp/%s 2>&1 & echo $! > /tmp/s.pid'
    b.run(recv)
    a.run(send % 's1')
    time.sleep(2)
    b.run('kill -STOP $(cat /tmp/r.pid)')
    time.sleep(0.5)
    a.run('kill -9 $(cat /tmp/s.pid)', check=False)
    b.run('echo P sender-restart >> /tmp/r.log')
    a.run(send % 's2')
    time.sleep(0.3)
    b.run('kill -CONT $(cat /tmp/r.pid)')
    time.sleep(2)
    b.run('kill -9 $(cat /tmp/r.pid); echo P receiver-restart >> /tmp/r.log', check=False)
    b.run(recv)
    time.sleep(2)
    sender2 = a.run('cat /tmp/s2')
    # the sender's whole guest dies; a new guest takes its place
    old_id = a.info()['id']
    a.kill()
    a.popen.wait(10)
    b.run('echo P guest-restart >> /tmp/r.log')
    a2 = s.guest('a2', dev(srv))
    a2.wait_ready(180)
    new_id = a2.info()['id']
    a2.run(send % 's3')
    time.sleep(2)
    a2.run('kill -9 $(cat /tmp/s.pid)', check=False)
    b.run('kill -9 $(cat /tmp/r.pid)', check=False)
    text = b.run('cat /tmp/r.log', 120)
    phases, order, bad, total = parse_log(text)
    if order != ['start', 'sender-restart', 'receiver-restart', 'guest-restart']:
        raise e2e.E2EError('receiver log phases %s' % order)
    ok, what, detail = check_sender_restart(
        phases, 'start', 'sender-restart',
        'sender killed with records in the ring, restarted')
    tap(ok, 'guests-restart: ' + what, detail)
    ok, what = check_receiver_restart(phases, 'sender-restart', 'receiver-restart', sender2)
    tap(ok, 'guests-restart: ' + what, sender2)
    ok, what, detail = check_sender_restart(
        phases, 'receiver-restart', 'guest-restart',
        "sender's guest killed (QEMU SIGKILL, peer %s) and a new guest booted "
        '(peer %s)' % (old_id, new_id))
    tap(ok, 'guests-restart: ' + what, detail)
    tap(not bad and total > 0,
        'guests-restart: %d messages over 2 receivers and 3 senders: none twice, '
        'none of an earlier incarnation after a later one, every restart told, '
        'no gap while both sides lived, no corrupt message' % total, '\n'.join(bad[:20]))


# (name, function, number of TAP lines it prints)
TESTS = [
    ('host-guest', host_guest, 1),
    ('guests', guests, 1),
    ('host-guest-restart', host_guest_restart, 3),
    ('guests-restart', guests_restart, 4),
]


def main():
    print('1..%d' % sum(k for _, _, k in TESTS), flush=True)
    missing = [b for b in ('hostguest', 'seq') if not os.path.exists(os.path.join(BIN, b))]
    setup_error = None
    if missing:
        setup_error = '%s not built in %s (make -C channel)' % (', '.join(missing), BIN)
    else:
        try:
            image = e2e.build_image()
            accel = e2e.probe_accel(image)
            print('# guest image %s, accelerator %s' % (image, accel), flush=True)
        except e2e.E2EError as err:
            setup_error = 'e2e set-up: %s' % err
    for name, fn, checks in TESTS:
        if setup_error:
            for _ in range(checks):
                tap(False, '%s: %s' % (name, setup_error))
            continue
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            for _ in range(checks):
                tap(True, '%s # SKIP not selected on the command line' % name)
            continue
        s = e2e.Session(accel=accel, image=image,
                        keep_logs=bool(os.environ.get('E2E_KEEP_LOGS')))
        before = n
        t0 = time.time()
        try:
            fn(s)
        except Exception as err:   # report, show the logs, go on
            if n - before < checks:
                tap(False, '%s: %s' % (name, err))
            else:
                print('# %s: %s' % (name, err), flush=True)
            s.dump_logs()
        while n - before < checks:
            tap(False, '%s: did not report (see above)' % name)
        if n - before > checks:
            print('# internal: %s printed %d lines, TESTS says %d'
                  % (name, n - before, checks), flush=True)
        print('# %s took %.1f s' % (name, time.time() - t0), flush=True)
        s.close()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
