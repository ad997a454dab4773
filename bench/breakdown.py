# SPDX-License-Identifier: GPL-2.0-or-later
"""Where a doorbell round trip goes: trace events of both QEMUs, one clock.

  breakdown.py OUTDIR OURS_QEMU OURS_SERVER PRISTINE_QEMU PRISTINE_SERVER \
               STOCK_QEMU STOCK_SERVER [ROUNDS [REPS]]

Modes: ours (ioeventfd=off) with every event below, ours with
ioeventfd=on, and then, with only the two APIC events traced (the only
ones the pristine and stock QEMUs have, so every side pays the same
tracing cost): ours, pristine 10.0.2 built with our configure flags, and
Debian's stock binary.  Ours vs pristine is the device; pristine vs stock
is the build.  Prints a Markdown table of the median (and p90) of every
segment (rendered by bench/report.py --breakdown).

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
import report                      # noqa: E402
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

APIC_EVENTS = ['apic_deliver_irq', 'apic_register_write']
# A session: (variant, ioeventfd, tool flags, events traced).
ALL = ('ours', False, '', 'all')
ON = ('ours', True, '', 'all')
SESSIONS = [ALL, ON] + [(v, False, '', 'apic')
                        for v in ('ours', 'pristine', 'stock')]
MODES = {       # name: (session, chain, segments)
    'ours': (ALL, CHAIN_OFF, SEGMENTS_OFF),
    'ours ioeventfd=on': (ON, CHAIN_ON, SEGMENTS_ON),
    'ours, every event traced (APIC segments)': (ALL, CHAIN_APIC,
                                                 SEGMENTS_APIC),
    'ours (APIC events only)': (('ours', False, '', 'apic'), CHAIN_APIC,
                                SEGMENTS_APIC),
    'pristine (APIC events only)': (('pristine', False, '', 'apic'),
                                    CHAIN_APIC, SEGMENTS_APIC),
    'stock (APIC events only)': (('stock', False, '', 'apic'), CHAIN_APIC,
                                 SEGMENTS_APIC),
}


def pct(vals, q):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * q))]


def run(outdir, binaries, count, variant, ioeventfd, flags, events, tag):
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
        for e in (EVENTS if events == 'all' else APIC_EVENTS):
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
    outdir, oq, os_, pq, ps, sq, ss = sys.argv[1:8]
    count = int(sys.argv[8]) if len(sys.argv) > 8 else 300
    reps = int(sys.argv[9]) if len(sys.argv) > 9 else 3
    binaries = {'ours': (oq, os_), 'pristine': (pq, ps), 'stock': (sq, ss)}
    os.makedirs(outdir, exist_ok=True)
    p50s = {k: [] for k in SESSIONS}
    segs = {m: [] for m in MODES}
    loads = []
    for rep in range(reps):
        order = SESSIONS if rep % 2 == 0 else SESSIONS[::-1]
        for key in order:
            variant, ioeventfd, flags, events = key
            tag = '%s-%s%s-%s-%d' % (variant, 'on' if ioeventfd else 'off',
                                     flags, events, rep)
            loads.append(round(os.getloadavg()[0], 2))
            p50, stream = run(outdir, binaries, count, variant, ioeventfd,
                              flags, events, tag)
            p50s[key].append(p50)
            sc.log('breakdown %s: guest p50 %.0f us' % (tag, p50))
            for m, (sess, chain, _) in MODES.items():
                if sess == key:
                    segs[m] += rounds(stream, chain)[10:]
    res = {'rounds': count, 'reps': reps, 'load': loads,
           'binaries': {v: list(b) for v, b in binaries.items()},
           'modes': {}}
    for m, (key, chain, names) in MODES.items():
        rows = []
        for name, a, b in names + [('one direction, end to end', 0,
                                     len(chain) - 1)]:
            vals = [st[b] - st[a] for st in segs[m]]
            rows.append({'segment': name, 'median_us': statistics.median(vals),
                         'p90_us': pct(vals, 0.9), 'n': len(vals)})
        res['modes'][m] = {
            'guest_rtt_p50_us': statistics.median(p50s[key]),
            'guest_rtt_p50s_us': p50s[key],
            'segments': rows}
    with open(os.path.join(outdir, 'breakdown.json'), 'w') as f:
        json.dump(res, f, indent=1)
        f.write('\n')
    print(report.breakdown_markdown(res))


if __name__ == '__main__':
    main()
