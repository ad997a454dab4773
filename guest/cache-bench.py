#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Guest memcpy bandwidth through /dev/ivshmem0 for each memory type.

For each region size (a 16 MiB BAR2 lands in the 32-bit PCI window, a
2 GiB one above 4 GiB), boots one test guest (ivshmem-doorbell, our
server), then, for ROUNDS interleaved rounds, reloads the driver with
cache=uc, wc and wb and runs "ivshmem-guest bandwidth MIB" (memcpy into
BAR2, then out of it).  While a mapping is alive it also records what
the guest kernel made of the request (debugfs x86/pat_memtype_list: PAT
turns a write-back request into uncached-minus where the firmware's
MTRRs mark the range uncached).  Writes JSON (guest/results/
cache-DATE.json by default) and prints a Markdown table of the medians.
  CACHE_ROUNDS (9), CACHE_MIB (64), CACHE_SIZES ("16M 2G"), CACHE_OUT,
  and the e2e runner's variables (QEMU_BUILD, E2E_ACCEL, GUEST_KABI,
  GUEST_CACHE).
  cache-bench.py --report FILE [--readme guest/README.md [--check]]
prints the table of FILE, or replaces (checks) guest/README.md's
cache-table block with it.
"""

import json
import os
import re
import statistics
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, 'e2e'))
import ivshmem_e2e as e2e  # noqa: E402

MODES = ['uc', 'wc', 'wb']


def measure(s, size, rounds, mib):
    """One guest with a SIZE region: ROUNDS interleaved rounds of MODES."""
    srv = s.server(size=size, vectors=1, name='server-' + size)
    g = s.guest('g' + size, ['-chardev', 'socket,id=ivc,path=' + srv.sock,
                             '-device', 'ivshmem-doorbell,chardev=ivc'])
    g.wait_ready(180)
    cfg = {'device': 'ivshmem-doorbell, %s, -M pc, 256 MiB RAM' % size,
           'kernel': g.run('uname -r'), 'runs': {m: [] for m in MODES},
           'pat': {}}
    g.run('mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null; true')
    cfg['bar2'] = g.run('for d in /sys/bus/pci/devices/*; do '
                        '[ "$(cat $d/device)" = 0x1110 ] && '
                        'sed -n 3p $d/resource; done').split()[0]
    for r in range(rounds):
        for mode in MODES:
            g.run('rmmod ivshmem; insmod /lib/modules/$(uname -r)/'
                  'ivshmem.ko cache=%s' % mode)
            out = g.tool('bandwidth %d' % mib, 600)
            m = re.search(r'write_MBps=([0-9.]+) read_MBps=([0-9.]+)'
                          r'.* cache=([\w-]+) requested=(\w+)', out)
            if not m or m.group(4) != mode:
                raise e2e.E2EError('unexpected output %r' % out)
            cfg['runs'][mode].append({'write_MBps': float(m.group(1)),
                                      'read_MBps': float(m.group(2))})
            if r == 0:
                # What PAT made of the request, while a mapping lives.
                g.run('rm -f /tmp/go; ivshmem-guest hold 0 1 /tmp/go '
                      '20000 > /tmp/hold & sleep 1')
                pat = g.run('grep -i "%x-" /sys/kernel/debug/x86/'
                            'pat_memtype_list; touch /tmp/go; wait'
                            % int(cfg['bar2'], 16), check=False)[1]
                cfg['pat'][mode] = pat.strip()
    g.stop()
    return cfg


def main():
    rounds = int(os.environ.get('CACHE_ROUNDS', '9'))
    mib = int(os.environ.get('CACHE_MIB', '64'))
    sizes = os.environ.get('CACHE_SIZES', '16M 2G').split()
    out_path = os.environ.get('CACHE_OUT', os.path.join(
        TOP, 'guest', 'results', 'cache-%s.json' % time.strftime('%Y-%m-%d')))
    image = e2e.build_image()
    accel = e2e.probe_accel(image)
    s = e2e.Session(accel=accel, image=image)
    res = {'date': time.strftime('%Y-%m-%d %H:%M:%S'), 'accel': accel,
           'image': os.path.basename(image), 'mib_per_direction': mib,
           'rounds': rounds, 'configs': []}
    try:
        for size in sizes:
            res['configs'].append(measure(s, size, rounds, mib))
    finally:
        s.close()
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, 'w') as f:
        json.dump(res, f, indent=1, sort_keys=True)
        f.write('\n')
    print(report(res))
    return 0


def report(res):
    cfgs = res['configs']
    lines = ['%s, %s, guest kernel %s, -M pc with 256 MiB, '
             'ivshmem-doorbell; %d interleaved rounds of %d MiB each way; '
             'MB/s, median (min-max)' % (
                 res['date'][:10], res['accel'].upper(),
                 cfgs[0]['kernel'] if cfgs else '?', res['rounds'],
                 res['mib_per_direction']), '',
             '| BAR2 | cache= | into BAR2 | out of BAR2 | '
             'guest PAT type while mapped |',
             '| --- | --- | ---: | ---: | --- |']
    for cfg in cfgs:
        size = cfg['device'].split(', ')[1]
        for mode in MODES:
            runs = cfg['runs'][mode]
            cells = []
            for k in ('write_MBps', 'read_MBps'):
                v = [x[k] for x in runs]
                cells.append('%.0f (%.0f-%.0f)' % (statistics.median(v),
                                                   min(v), max(v)))
            pat = cfg['pat'].get(mode, '?').split(']')[-1].strip()
            lines.append('| %s at 0x%x | %s | %s | %s | %s |' % (
                size, int(cfg['bar2'], 16), mode, cells[0], cells[1], pat))
    return '\n'.join(lines)


def readme(path, text, check):
    """Replace PATH's cache-table block with TEXT (CHECK: exit 1 if it
    differs instead)."""
    begin = '<!-- cache-table: begin (generated by guest/cache-bench.py) -->'
    end = '<!-- cache-table: end -->'
    doc = open(path).read()
    if begin not in doc or end not in doc:
        sys.exit('cache-bench: %s has no cache-table markers' % path)
    head, rest = doc.split(begin, 1)
    new = head + begin + '\n' + text + '\n' + end + rest.split(end, 1)[1]
    if check:
        if new != doc:
            sys.exit('cache-bench: %s: the cache table differs from the '
                     'JSON (guest/cache-bench.py --report FILE --readme %s)'
                     % (path, path))
        return
    with open(path, 'w') as f:
        f.write(new)


if __name__ == '__main__':
    # --report FILE [--readme README.md [--check]]
    if len(sys.argv) > 2 and sys.argv[1] == '--report':
        text = report(json.load(open(sys.argv[2])))
        if len(sys.argv) > 4 and sys.argv[3] == '--readme':
            readme(sys.argv[4], text, sys.argv[5:] == ['--check'])
        else:
            print(text)
        sys.exit(0)
    sys.exit(main())
