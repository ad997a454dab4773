# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a doorbell round trip goes: trace events of both QEMUs, one clock.

  breakdown.py OUTDIR OURS_QEMU OURS_SERVER REF_QEMU REF_SERVER [ROUNDS [REPS]]

Modes: ours (ioeventfd=off), ours with the guest tool's -F (a blocking
read() on the expected vector instead of poll() + read()), ours with
ioeventfd=on, and the reference, whose QEMU has only the APIC events.

Boots two guests (the e2e image) on QEMU with the log trace backend,
timestamps on (-msg timestamp=on), and the events below enabled; runs a
doorbell ping-pong (guest A pings, guest B answers) and splits each round
at these host-side events (both QEMUs log gettimeofday() in the same
clock, µs resolution):

  A ivshmem_reg_write 0xc  guest A's doorbell write reached the device
  A ivshmem_doorbell       ... which writes peer B's eventfd
  B ivshmem_interrupt      B's main loop woke up on that eventfd
  B apic_deliver_irq       the MSI-X message reached B's local APIC
  B apic_register_write 0xb  B's guest wrote EOI: its handler has run
  B ivshmem_reg_write 0xc  B's user process woke up and rang back
  (and the same in the other direction, back to A's next doorbell write)

With ioeventfd=on the doorbell write bypasses the device (the memory core
writes the eventfd), so the first two events are missing and "guest exit
and eventfd" covers user wake-up to peer wake-up.  Prints a Markdown
table of the median (and p90) of every segment.
"""

import collections
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios as sc              # noqa: E402

EVENTS = ['ivshmem_reg_write', 'ivshmem_doorbell', 'ivshmem_interrupt',
          'apic_deliver_irq', 'apic_register_write']
LINE = re.compile(r'^(\d+)@(\d+)\.(\d+):(\w+) (.*)$')


def parse(path, who, rounds_run):
    out = []
    for line in open(path, errors='replace'):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, args = m.group(4), m.group(5)
        t = int(m.group(2)) * 1000000 + int(m.group(3))
        if name == 'ivshmem_reg_write':
            if not args.startswith('write 0xc '):
                continue
            name = 'doorbell_write'
        elif name == 'apic_register_write':
            if not args.startswith('register 0x0b '):
                continue
            name = 'eoi'
        elif name == 'ivshmem_doorbell':
            name = 'eventfd_write'
        elif name == 'ivshmem_interrupt':
            name = 'wakeup'
        elif name == 'apic_deliver_irq':
            name = 'msi:' + args.split(' vector ')[1].split()[0]
        out.append((t, who, name))
    # The doorbell's MSI vector is the one delivered once a round; other
    # deliveries (timer, serial port, ...) are not part of the round trip.
    counts = collections.Counter(e[2] for e in out if e[2][:4] == 'msi:')
    if counts:
        ours = min(counts, key=lambda v: abs(counts[v] - rounds_run))
        out = [(t, w, 'msi' if n == ours else n) for t, w, n in out]
    return out


# One direction: sender S, receiver R.
CHAIN_OFF = [('S', 'doorbell_write'), ('S', 'eventfd_write'), ('R', 'wakeup'),
             ('R', 'msi'), ('R', 'eoi'), ('R', 'doorbell_write')]
SEGMENTS_OFF = [
    ('device: doorbell write to eventfd write', 0, 1),
    ('eventfd to peer main-loop wake-up', 1, 2),
    ('MSI-X injection (msix_notify to APIC)', 2, 3),
    ('guest interrupt: APIC to EOI (handler ran)', 3, 4),
    ('user wake-up, reply, guest exit on the doorbell write', 4, 5),
]
# ioeventfd=on: no device events on the sending side.
CHAIN_ON = [('R', 'wakeup'), ('R', 'msi'), ('R', 'eoi'), ('S', 'wakeup')]
SEGMENTS_ON = [
    ('MSI-X injection (msix_notify to APIC)', 0, 1),
    ('guest interrupt: APIC to EOI (handler ran)', 1, 2),
    ('user wake-up, reply, guest exit, ioeventfd write, peer wake-up',
     2, 3),
]


def rounds(events, chain):
    """Stamps of every occurrence of CHAIN in the merged event stream."""
    segs = []
    n = len(events)
    for i, (t, who, name) in enumerate(events):
        if name != chain[0][1]:
            continue
        other = 'B' if who == 'A' else 'A'
        roles = {chain[0][0]: who,
                 'R' if chain[0][0] == 'S' else 'S': other}
        stamps = [t]
        j = i + 1
        for role, want in chain[1:]:
            while j < n and events[j][1:] != (roles[role], want):
                j += 1
            if j >= n:
                return segs
            stamps.append(events[j][0])
            j += 1
        segs.append(stamps)
    return segs


# Only the APIC events exist in both QEMUs (the reference has no ivshmem
# trace events): the comparison with the reference uses these.
CHAIN_APIC = [('R', 'msi'), ('R', 'eoi'), ('S', 'msi')]
SEGMENTS_APIC = [
    ('guest interrupt: APIC to EOI (handler ran)', 0, 1),
    ('EOI to the peer\'s MSI: user wake-up, reply, guest exit, eventfd, '
     'peer wake-up, MSI-X injection', 1, 2),
]

MODES = {       # name: (variant, ioeventfd, tool flags, chain, segments)
    'ours': ('ours', False, '', CHAIN_OFF, SEGMENTS_OFF),
    'ours -F': ('ours', False, '-F', CHAIN_OFF, SEGMENTS_OFF),
    'ours ioeventfd=on': ('ours', True, '', CHAIN_ON, SEGMENTS_ON),
    'ours (APIC events)': ('ours', False, '', CHAIN_APIC, SEGMENTS_APIC),
    'ref (APIC events)': ('ref', False, '', CHAIN_APIC, SEGMENTS_APIC),
}


def pct(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * q))]


def run(outdir, binaries, count, variant, ioeventfd, flags, tag):
    """One traced ping-pong; returns (guest p50, merged events)."""
    qemu, server = binaries[variant]
    os.environ['QEMU_BINARY'] = qemu
    os.environ['IVSHMEM_SERVER'] = server
    logs = {w: os.path.join(outdir, 'trace-%s-%s.log' % (tag, w))
            for w in 'AB'}
    for p in logs.values():
        if os.path.exists(p):
            os.unlink(p)
    session = sc.e2e.Session(accel=os.environ.get('E2E_ACCEL'))
    try:
        srv = session.server(vectors=1, name='srv')
        dev = ['-chardev', 'socket,id=ivs,path=' + srv.sock, '-device',
               'ivshmem-doorbell,chardev=ivs,vectors=1,ioeventfd=%s'
               % ('on' if ioeventfd else 'off'), '-msg', 'timestamp=on']
        for e in EVENTS:
            dev += ['-trace', 'enable=' + e]
        a = session.guest('a', dev + ['-D', logs['A']])
        b = session.guest('b', dev + ['-D', logs['B']])
        a.wait_ready(600)
        b.wait_ready(600)
        a_id = int(a.info()['id'])
        b_id = int(b.info()['id'])
        b.start('ivshmem-guest %s pong %d %d 3000' % (flags, a_id, count))
        b.expect(rb'pong: ready', 60)
        out = a.tool('%s ping %d %d 3000' % (flags, b_id, count),
                     timeout=600)
        b.finish(120)
    finally:
        session.close()
    p50 = float(re.search(r'p50_us=([0-9.]+)', out).group(1))
    return p50, sorted(parse(logs['A'], 'A', count) +
                       parse(logs['B'], 'B', count))


def main():
    outdir, oq, os_, rq, rs = sys.argv[1:6]
    count = int(sys.argv[6]) if len(sys.argv) > 6 else 300
    reps = int(sys.argv[7]) if len(sys.argv) > 7 else 3
    binaries = {'ours': (oq, os_), 'ref': (rq, rs)}
    os.makedirs(outdir, exist_ok=True)
    # One traced session per (variant, ioeventfd, flags); the APIC-level
    # rows of ours reuse the plain "ours" sessions.
    sessions = [('ours', False, ''), ('ours', False, '-F'),
                ('ours', True, ''), ('ref', False, '')]
    p50s = {k: [] for k in sessions}
    segs = {m: [] for m in MODES}
    for rep in range(reps):
        order = sessions if rep % 2 == 0 else sessions[::-1]
        for key in order:
            variant, ioeventfd, flags = key
            tag = '%s-%s%s-%d' % (variant, 'on' if ioeventfd else 'off',
                                  flags, rep)
            p50, events = run(outdir, binaries, count, variant, ioeventfd,
                              flags, tag)
            p50s[key].append(p50)
            sc.log('breakdown %s: guest p50 %.0f us' % (tag, p50))
            for m, (v, io, fl, chain, _) in MODES.items():
                if (v, io, fl) == key:
                    segs[m] += rounds(events, chain)[10:]
    res = {'rounds': count, 'reps': reps, 'modes': {}}
    for m, (v, io, fl, chain, names) in MODES.items():
        rows = []
        for name, a, b in names + [('one direction, end to end', 0,
                                     len(chain) - 1)]:
            vals = [st[b] - st[a] for st in segs[m]]
            rows.append({'segment': name, 'median_us': statistics.median(vals),
                         'p90_us': pct(vals, 0.9), 'n': len(vals)})
        res['modes'][m] = {
            'guest_rtt_p50_us': statistics.median(p50s[(v, io, fl)]),
            'segments': rows}
    with open(os.path.join(outdir, 'breakdown.json'), 'w') as f:
        json.dump(res, f, indent=1)
    print(markdown(res))


def markdown(res):
    out = ['Traced doorbell ping-pong, vectors=1, %d rounds x %d sessions '
           'per mode (interleaved), medians of every direction after 10 '
           'warm-up ones; µs.' % (res['rounds'], res['reps']), '']
    for m, r in res['modes'].items():
        out += ['### %s: guest-measured round trip p50 %.0f µs'
                % (m, r['guest_rtt_p50_us']), '',
                '| segment | median (µs) | p90 (µs) |', '|---|---:|---:|']
        for row in r['segments']:
            out.append('| %s | %.0f | %.0f |' % (
                row['segment'], row['median_us'], row['p90_us']))
        out.append('')
    return '\n'.join(out)


if __name__ == '__main__':
    main()
