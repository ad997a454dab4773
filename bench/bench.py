# SPDX-License-Identifier: GPL-2.0-or-later
"""make bench: run every scenario for ours and the references, write JSON.

Run by bench/run.sh, which builds what this needs and passes the paths:
  bench.py OUTDIR OURS_QEMU OURS_SERVER PRISTINE_QEMU PRISTINE_SERVER \
           STOCK_QEMU STOCK_SERVER JOIN FLOOR [VECTOR_PEER]
Three sides: ours (the series), pristine (QEMU 10.0.2 without the series,
built with exactly our configure flags: isolates the device from the
build) and stock (Debian's qemu-system-x86 binary, the user's reference;
Debian ships no ivshmem-server, so it runs with the pristine server).
Environment: BENCH_QUICK=1 (short run), BENCH_SCENARIOS="doorbell
polling bandwidth flood deliver join host" (subset), BENCH_REPS,
BENCH_COUNT, BENCH_RATE_SECONDS, BENCH_MAX_LOAD (default: the CPU count),
BENCH_WAIT_QUIET (s, default 300), BENCH_FORCE=1 (run above the limit).
"""

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenarios as sc              # noqa: E402


def settings(quick):
    env = os.environ.get
    s = {
        'quick': quick,
        # 8 rounds: the device-only rates and the per-round intervals are
        # what resolves a difference now, and 8 keeps a full run within
        # about half an hour on 2 quiet cores (see bench/README.md)
        'reps': int(env('BENCH_REPS', 2 if quick else 8)),
        'doorbell_count': int(env('BENCH_COUNT', 200 if quick else 1000)),
        'polling_count': int(env('BENCH_POLL_COUNT',
                                 500 if quick else 2000)),
        'bandwidth_mib': int(env('BENCH_MIB', 64 if quick else 256)),
        'configs': [(1, True)] if quick else
                   [(1, True), (1, False), (4, True), (4, False)],
        'join_peers': [1, 16, 256] if quick else [1, 16, 256, 1000, 2000],
        'join_vectors': [1, 4],
        'join_reps': int(env('BENCH_JOIN_REPS', 2 if quick else 5)),
        'join_big_reps': int(env('BENCH_JOIN_BIG_REPS', 3)),
        'join_stall_s': float(env('BENCH_JOIN_STALL', 10)),
        'sustain_cap': int(env('BENCH_SUSTAIN_CAP', 1024 if quick else 4096)),
        'floor_count': 20000 if quick else 100000,
        # flood / deliver: seconds of each run; deliveries do not depend
        # on ioeventfd (a guest-write path), so they run with it on only
        'rate_seconds': float(env('BENCH_RATE_SECONDS', 1 if quick else 2)),
        'max_load': float(env('BENCH_MAX_LOAD', os.cpu_count() or 1)),
    }
    s['scenarios'] = env('BENCH_SCENARIOS', ' '.join(ALL)).split()
    unknown = set(s['scenarios']) - set(ALL)
    if unknown:
        sys.exit('bench: BENCH_SCENARIOS: unknown %s (known: %s)'
                 % (' '.join(sorted(unknown)), ' '.join(ALL)))
    return s


ALL = ('doorbell', 'polling', 'bandwidth', 'flood', 'deliver', 'join',
       'host')
GUEST = {'doorbell', 'polling', 'bandwidth', 'flood', 'deliver'}

# What the published figures depend on: the device and the server (their
# git blob hashes go into the JSON; tests/suites/10-build fails when the
# tree's differ from those of the run README.md quotes), and the harness.
from report import MEASURED, HARNESS, blobs, git   # noqa: E402


def machine():
    model = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return {'cpu': model, 'cpus': os.cpu_count(),
            'kernel': platform.release(),
            'mem_gib': round(os.sysconf('SC_PAGE_SIZE') *
                             os.sysconf('SC_PHYS_PAGES') / 2**30, 1)}


def git_commit():
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(['git', '-C', top, 'rev-parse', 'HEAD'],
                              stdout=subprocess.PIPE, check=True,
                              stderr=subprocess.DEVNULL).stdout.decode()
        dirty = subprocess.run(['git', '-C', top, 'status', '--porcelain',
                                '--untracked-files=no', '--', 'series'],
                               stdout=subprocess.PIPE, check=True,
                               stderr=subprocess.DEVNULL).stdout.decode()
        series = subprocess.run(['git', '-C', top, 'log', '-1',
                                 '--format=%H %s', '--', 'series'],
                                stdout=subprocess.PIPE, check=True,
                                stderr=subprocess.DEVNULL).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return {'commit': '?', 'dirty': None}
    # What is measured is series/ (the device and server): its last
    # commit, and whether the tree measured had uncommitted changes there;
    # the harness is HEAD (harness_dirty: uncommitted changes in it).
    hdirty = git('status', '--porcelain', '--untracked-files=no', '--',
                 *HARNESS)
    return {'commit': head.strip(), 'series_commit': series.strip(),
            'series_dirty': bool(dirty.strip()),
            'harness_commit': head.strip(),
            'harness_dirty': bool(hdirty.strip()),
            'measured_blobs': blobs(MEASURED),
            'harness_blobs': blobs(HARNESS)}


def real_binary(path):
    """The QEMU a bench/run.sh wrapper script executes."""
    try:
        with open(path, errors='replace') as f:
            head = f.read(4096)
    except OSError:
        return path
    m = re.search(r'^exec (\S+)', head, re.M)
    return m.group(1) if m else path


def build_info(binary):
    """How BINARY was built: its configure command (a build tree's
    config.log) or its Debian package."""
    real = real_binary(binary)
    log = os.path.join(os.path.dirname(real), 'config.log')
    try:
        for line in open(log, errors='replace'):
            if line.startswith('# Configured with: '):
                return {'binary': real,
                        'configure': line.split(': ', 1)[1].strip()}
    except OSError:
        pass
    try:
        pkg = subprocess.run(['dpkg-query', '-S', real],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode()
        pkg = pkg.split(':')[0]
        ver = subprocess.run(['dpkg-query', '-W', '-f=${Version}', pkg],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout.decode()
        return {'binary': real, 'package': '%s %s' % (pkg, ver)}
    except OSError:
        return {'binary': real}


def version(binary):
    try:
        out = subprocess.run([binary, '--version'], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10)
        return out.stdout.decode().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return '?'


def main():
    outdir, oq, os_, pq, ps, sq, ss, join_bin, floor_bin = sys.argv[1:10]
    peer_bin = sys.argv[10] if len(sys.argv) > 10 else None
    quick = os.environ.get('BENCH_QUICK', '0') == '1'
    s = settings(quick)
    # A benchmark on a busy machine measures the other work: wait a while
    # for the load to drop, then refuse (BENCH_FORCE=1 runs anyway, and
    # the results say so on every page).
    wait = float(os.environ.get('BENCH_WAIT_QUIET', 300))
    load0 = os.getloadavg()[0]
    if load0 >= s['max_load'] and wait > 0:
        sc.log('load average %.2f >= %g: waiting up to %.0f s for it to '
               'drop' % (load0, s['max_load'], wait))
        load0 = sc.wait_quiet(s['max_load'], wait)
    busy = load0 >= s['max_load']
    if busy and os.environ.get('BENCH_FORCE', '0') != '1':
        sys.exit('bench: the 1-minute load average is %.2f (limit %g, '
                 'BENCH_MAX_LOAD): stop the other work, or set BENCH_FORCE=1 '
                 'to measure anyway (the results are then marked)'
                 % (load0, s['max_load']))
    binaries = {'ours': (oq, os_), 'pristine': (pq, ps), 'stock': (sq, ss)}
    os.makedirs(outdir, exist_ok=True)
    res = {
        'date': datetime.datetime.now(datetime.timezone.utc)
                .strftime('%Y-%m-%dT%H:%M:%SZ'),
        'machine': machine(), 'settings': s, 'source': git_commit(),
        'variants': list(sc.VARIANTS),
        'binaries': {v: dict(build_info(b[0]), qemu=b[0],
                             qemu_version=version(b[0]), server=b[1])
                     for v, b in binaries.items()},
        'load_start': os.getloadavg()[0],
        'load_start_all': list(os.getloadavg()),
        'load_over_limit': busy,
    }
    t0 = time.time()
    want = set(s['scenarios'])

    if want & GUEST:
        os.environ['QEMU_BINARY'] = oq     # for the KVM probe
        image = sc.e2e.build_image()
        res['accel'] = sc.e2e.probe_accel(image)
        os.environ['E2E_ACCEL'] = res['accel']
        res['doorbell'] = {}
        for i, (vectors, ioeventfd) in enumerate(s['configs']):
            extras = {}
            if i == 0 and 'polling' in want:
                extras['polling'] = s['polling_count']
            if i == 0 and 'bandwidth' in want:
                extras['bandwidth'] = s['bandwidth_mib']
            if 'flood' in want:
                extras['flood'] = s['rate_seconds']
            if 'deliver' in want and ioeventfd:
                extras['deliver'] = s['rate_seconds']
            if 'doorbell' not in want and not extras:
                continue
            tag, r = sc.guest_config(binaries, vectors, ioeventfd,
                                     s['reps'], s['doorbell_count'], outdir,
                                     extras, image, 'doorbell' in want,
                                     peer_bin)
            if 'doorbell' in r:
                res['doorbell'][tag] = r['doorbell']
            for k in ('polling', 'bandwidth'):
                if k in r:
                    res[k] = r[k]
            for k in ('flood', 'deliver'):
                if k in r:
                    res.setdefault(k, {})[tag] = r[k]
        if not res['doorbell']:
            del res['doorbell']

    if 'join' in want:
        servers = {v: binaries[v][1] for v in sc.SERVER_VARIANTS}
        res['join'] = sc.joins(join_bin, servers, s['join_peers'],
                               s['join_vectors'], s['join_reps'],
                               s['join_big_reps'], s['join_stall_s'])
        res['sustained'] = {}
        for v in sc.SERVER_VARIANTS:
            # start from what the join runs with -n 1 already showed
            seen = [(j['peers'], all(r['ok'] for r in j[v]))
                    for j in res['join'].values()
                    if j['vectors'] == 1 and j[v] and
                    not j[v][0].get('error', '').startswith('skipped')]
            ok = max([p for p, good in seen if good], default=0)
            bad = min([p for p, good in seen if not good], default=None)
            res['sustained'][v] = sc.sustained(
                join_bin, servers[v], 1, 256, s['sustain_cap'],
                s['join_stall_s'], ok, bad)

    if 'host' in want:
        res['host_floor_load'] = os.getloadavg()[0]
        res['host_floor'] = {}
        for mode in ('eventfd', 'cacheline'):
            res['host_floor'][mode] = [
                sc.host_floor(floor_bin, mode, s['floor_count'],
                              os.path.join(outdir, 'floor-%s-%d.dat'
                                           % (mode, rep)))
                for rep in range(s['reps'])]

    res['load_end'] = os.getloadavg()[0]
    res['load_end_all'] = list(os.getloadavg())
    res['duration_s'] = round(time.time() - t0)
    with open(os.path.join(outdir, 'results.json'), 'w') as f:
        f.write(dump(res) + '\n')


def dump(res):
    """JSON with every run's raw samples on one line (readable and
    about a fifth of the size of one number a line)."""
    lists = []

    def strip(o):
        if isinstance(o, dict):
            return {k: (('@samples%d@' % (lists.append(v) or len(lists) - 1))
                        if k == 'samples' else strip(v))
                    for k, v in o.items()}
        if isinstance(o, list):
            return [strip(x) for x in o]
        return o
    text = json.dumps(strip(res), indent=1)
    for i, v in enumerate(lists):
        text = text.replace('"@samples%d@"' % i, json.dumps(v), 1)
    return text


if __name__ == '__main__':
    main()
