# SPDX-License-Identifier: GPL-2.0-or-later
"""The scenarios of `make bench`, each measured for ours and the reference.

Guest scenarios boot both variants' guest pairs side by side (same image,
driver and tool, through e2e/ivshmem_e2e.py) and alternate the variants
run by run, so that machine noise hits both alike.  Every function returns
plain data (dicts and lists) that bench/bench.py stores as JSON; raw
samples go to files in the output directory, for the plots.
"""

import itertools
import os
import re
import subprocess
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, 'e2e'))
import ivshmem_e2e as e2e          # noqa: E402

# ours: the series; pristine: QEMU 10.0.2 without it, built with our
# configure flags; stock: Debian's binary (with the pristine server: Debian
# ships none).  The server scenarios compare the two servers there are.
VARIANTS = ('ours', 'pristine', 'stock')
SERVER_VARIANTS = ('ours', 'pristine')


def log(msg):
    print('bench: ' + msg, file=sys.stderr, flush=True)


def percentiles(samples):
    """min/p50/p99/max of SAMPLES (the tool's index convention)."""
    s = sorted(samples)
    n = len(s)
    return {'min': s[0], 'p50': s[n // 2], 'p99': s[n * 99 // 100],
            'max': s[-1], 'count': n}


def order(rep, variants=VARIANTS):
    """The variants' order in run REP: every permutation in turn, so that
    each variant runs first, second, ... equally often over a multiple of
    len(variants)! runs."""
    perms = list(itertools.permutations(variants))
    return perms[rep % len(perms)]


def load():
    """1-minute load average, recorded with every run."""
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------
# Guests

class Pair:
    """Two guests of one variant, connected through that variant's server."""

    def __init__(self, session, variant, binaries, vectors, ioeventfd):
        self.variant = variant
        qemu, server = binaries
        os.environ['QEMU_BINARY'] = qemu
        os.environ['IVSHMEM_SERVER'] = server
        self.server = session.server(vectors=vectors, name=variant + '-srv')
        dev = ['-chardev', 'socket,id=ivs,path=' + self.server.sock,
               '-device', 'ivshmem-doorbell,chardev=ivs,vectors=%d,'
               'ioeventfd=%s' % (vectors, 'on' if ioeventfd else 'off')]
        self.a = session.guest(variant + '-a', dev)
        self.b = session.guest(variant + '-b', dev)

    def wait_ready(self):
        for g in (self.a, self.b):
            g.wait_ready(600)
        self.a_id = int(self.a.info()['id'])
        self.b_id = int(self.b.info()['id'])
        log('%s: guests up (%.0f s, %.0f s), ids %d and %d'
            % (self.variant, self.a.boot_time, self.b.boot_time,
               self.a_id, self.b_id))

    def start_peer(self, binary):
        """A host peer (bench/vector-peer.c) on this pair's server: the
        peer guest A floods without it ever reading, and the flooder of
        guest A's vector 0."""
        self.peer = subprocess.Popen([binary, self.server.sock],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     universal_newlines=True, bufsize=1)
        line = self.peer.stdout.readline()
        m = re.match(r'peer: id=(\d+)', line)
        if not m:
            raise e2e.E2EError('%s: vector-peer did not join: %r'
                               % (self.variant, line))
        self.peer_id = int(m.group(1))

    def stop_peer(self):
        if getattr(self, 'peer', None):
            try:
                self.peer.stdin.close()
            except OSError:             # it died: nothing to flush
                pass
            try:
                self.peer.wait(10)
            except subprocess.TimeoutExpired:
                self.peer.kill()
                self.peer.wait()
            self.peer = None

    def _peer(self, cmd, timeout):
        """One vector-peer command and its one-line answer (the peer is
        killed if it does not answer within TIMEOUT s)."""
        if self.peer.poll() is not None:
            raise e2e.E2EError('%s: vector-peer exited (%d)'
                               % (self.variant, self.peer.returncode))
        timer = threading.Timer(timeout, self.peer.kill)
        timer.start()
        try:
            self.peer.stdin.write(cmd + '\n')
            self.peer.stdin.flush()
            line = self.peer.stdout.readline()
        except OSError as ex:
            line = 'error: %s' % ex
        finally:
            timer.cancel()
        if not line or line.startswith('error'):
            raise e2e.E2EError('%s: vector-peer `%s`: %r'
                               % (self.variant, cmd, line))
        return line

    def flood(self, seconds):
        """Doorbell writes a second from guest A into the host peer,
        which never reads while they come; afterwards it counts what
        arrived (every write must)."""
        try:
            self._peer('drain', 10)
            rc, out = self.a.run('ivshmem-guest flood %d 0 %g'
                                 % (self.peer_id, seconds),
                                 timeout=60 + 4 * seconds, check=False)
            got = int(re.search(r'received=(\d+)',
                                self._peer('drain', 10)).group(1))
        except e2e.E2EError as ex:      # a dead peer: the run fails alone
            log('flood failed: %s' % ex)
            return {'ok': False, 'error': str(ex)[-200:]}
        m = re.search(r'flood: writes=(\d+) seconds=([0-9.]+)', out)
        if rc or not m:
            log('flood failed (%d): %s' % (rc, out[-300:]))
            return {'ok': False, 'error': out[-200:], 'received': got}
        writes, secs = int(m.group(1)), float(m.group(2))
        return {'ok': got == writes, 'writes': writes, 'seconds': secs,
                'received': got, 'lost': writes - got,
                'per_s': writes / secs}

    def deliver(self, seconds):
        """Vector deliveries a second into guest A: the host peer writes
        A's vector 0 eventfd as fast as it can for SECONDS while A counts
        the interrupts its driver saw (writes coalesce: the rate is what
        the device and the guest can take)."""
        a = self.a
        a.start('ivshmem-guest count 0 %d' % (seconds + 10))
        a.expect(rb'count: ready', 60)
        try:
            line = self._peer('flood %d 0 %g' % (self.a_id, seconds),
                              30 + 2 * seconds)
        except e2e.E2EError as ex:      # a dead peer: the run fails alone
            line = str(ex)
        rc, out = a.finish(90 + seconds)
        h = re.search(r'flood: writes=(\d+) seconds=([0-9.]+)', line)
        m = re.search(r'count: deliveries=(\d+) reads=(\d+) '
                      r'span_s=([0-9.]+)', out)
        if rc or not m or not h:
            log('deliver failed (%d): %s %s' % (rc, line, out[-300:]))
            return {'ok': False, 'error': (line + out)[-200:]}
        secs = float(h.group(2))
        n = int(m.group(1))
        return {'ok': n > 0, 'deliveries': n, 'reads': int(m.group(2)),
                'span_s': float(m.group(3)), 'host_writes': int(h.group(1)),
                'seconds': secs, 'per_s': n / secs}

    def doorbell(self, count, raw_path):
        """Doorbell ping-pong; returns the run's summary."""
        a, b = self.a, self.b
        b.start('ivshmem-guest pong %d %d 3000' % (self.a_id, count))
        b.expect(rb'pong: ready', 60)
        rc, out = a.run('ivshmem-guest -r ping %d %d 3000'
                        % (self.b_id, count), timeout=60 + count,
                        check=False)
        b.finish(60 + count)
        return self._latency(out, 'ping', count, rc, raw_path)

    def polling(self, count, raw_path):
        a, b = self.a, self.b
        b.start('ivshmem-guest spin-pong %d' % count)
        b.expect(rb'spin-pong: ready', 60)
        rc, out = a.run('ivshmem-guest -r spin-ping %d' % count,
                        timeout=60 + count, check=False)
        b.finish(60 + count)
        return self._latency(out, 'spin-ping', count, rc, raw_path)

    @staticmethod
    def _latency(out, what, count, rc, raw_path):
        m = re.search(r'%s-raw_us:([ 0-9.]*)' % what, out)
        if rc or not m:
            lost = re.search(r'TIMEOUT peer=\d+ round=(\d+)', out)
            log('%s failed (%d): %s' % (what, rc, out[-300:]))
            return {'ok': False, 'lost': 1 if lost else 0,
                    'done': int(lost.group(1)) - 1 if lost else 0,
                    'error': out[-200:]}
        samples = [float(x) for x in m.group(1).split()]
        with open(raw_path, 'w') as f:
            f.write('\n'.join('%.1f' % x for x in samples) + '\n')
        r = percentiles(samples)
        r.update(ok=len(samples) == count, lost=count - len(samples),
                 samples=samples)
        return r

    def bandwidth(self, mib, seed):
        """memcpy into BAR2 and back on A, the pattern checked on B."""
        out = self.a.tool('bandwidth %d %d' % (mib, seed), timeout=600)
        m = re.search(r'write_MBps=([0-9.]+) read_MBps=([0-9.]+) '
                      r'chunk=(\d+) seed=\d+ readback=(\w+)', out)
        if not m:
            raise e2e.E2EError('bandwidth: unexpected output %r' % out)
        rc, vout = self.b.run('ivshmem-guest verify 0 %s %d'
                              % (m.group(3), seed), check=False)
        return {'write_MBps': float(m.group(1)),
                'read_MBps': float(m.group(2)),
                'readback_ok': m.group(4) == 'ok',
                'peer_verified': rc == 0, 'bytes': mib << 20}


def guest_config(binaries, vectors, ioeventfd, reps, count, outdir,
                 extras=None, image=None, doorbell=True, peer_bin=None):
    """One device configuration: doorbell runs (and EXTRAS) per variant.

    EXTRAS: {'polling': COUNT, 'bandwidth': MIB, 'flood': SECONDS,
    'deliver': SECONDS} to run those as well (flood and deliver need
    PEER_BIN, bench/vector-peer.c).  Every run records the 1-minute load
    average before and after it.
    """
    extras = extras or {}
    tag = 'v%d-ioeventfd-%s' % (vectors, 'on' if ioeventfd else 'off')
    res = {}
    if doorbell:
        res['doorbell'] = {v: [] for v in VARIANTS}
    for k in ('polling', 'bandwidth', 'flood', 'deliver'):
        if k in extras:
            res[k] = {v: [] for v in VARIANTS}
    session = e2e.Session(accel=os.environ.get('E2E_ACCEL'), image=image)
    pairs = {}
    try:
        for v in VARIANTS:
            pairs[v] = Pair(session, v, binaries[v], vectors, ioeventfd)
            if 'flood' in extras or 'deliver' in extras:
                pairs[v].start_peer(peer_bin)
        for p in pairs.values():
            p.wait_ready()
        for rep in range(reps):
            for v in order(rep):
                p = pairs[v]
                for k in ('flood', 'deliver'):
                    if k not in extras:
                        continue
                    before = load()
                    r = getattr(p, k)(extras[k])
                    r.update(rep=rep, load=before, load_end=load())
                    res[k][v].append(r)
                    log('%s %s run %d %s: %s' % (
                        tag, v, rep, k, '%.0f/s' % r['per_s']
                        if r['ok'] else 'FAILED %s' % r))
                if doorbell:
                    before = load()
                    r = p.doorbell(count, os.path.join(
                        outdir, 'doorbell-%s-%s-%d.dat' % (tag, v, rep)))
                    r.update(rep=rep, load=before, load_end=load())
                    res['doorbell'][v].append(r)
                    log('%s %s run %d doorbell: %s'
                        % (tag, v, rep, brief(r)))
                if 'polling' in extras:
                    before = load()
                    r = p.polling(extras['polling'], os.path.join(
                        outdir, 'polling-%s-%d.dat' % (v, rep)))
                    r.update(rep=rep, load=before, load_end=load())
                    res['polling'][v].append(r)
                    log('%s run %d polling: %s' % (v, rep, brief(r)))
                if 'bandwidth' in extras:
                    before = load()
                    r = p.bandwidth(extras['bandwidth'],
                                    1000 * rep + VARIANTS.index(v) + 1)
                    r.update(rep=rep, load=before, load_end=load())
                    res['bandwidth'][v].append(r)
                    log('%s run %d bandwidth: %s' % (v, rep, r))
    except e2e.E2EError:
        session.dump_logs()
        raise
    finally:
        for p in pairs.values():
            p.stop_peer()
        session.close()
    return tag, res


def brief(r):
    if not r.get('ok'):
        return 'FAILED lost=%s' % r.get('lost')
    return 'min %.1f p50 %.1f p99 %.1f max %.1f us' % (
        r['min'], r['p50'], r['p99'], r['max'])


# ---------------------------------------------------------------------------
# Server joins (bench/server-join.c)

def join_once(binary, server, peers, vectors, stall):
    before = load()
    r = join_run(binary, server, peers, vectors, stall)
    r['load'] = before
    return r


def join_run(binary, server, peers, vectors, stall):
    out = subprocess.run([binary, server, str(peers), str(vectors),
                          str(stall)], stdout=subprocess.PIPE,
                         check=False).stdout.decode().strip()
    if out.startswith('FAIL') or not out:
        return {'ok': False, 'error': out[5:] or 'no output'}
    t, rss0, rss1, fds0, fds1, cpu = out.split()
    return {'ok': True, 'seconds': float(t), 'cpu_s': float(cpu),
            'rss_kib_per_peer': (int(rss1) - int(rss0)) / peers,
            'fds_per_peer': (int(fds1) - int(fds0)) / peers}


def joins(binary, servers, peers_list, vectors_list, reps, big_reps, stall):
    """Join times; a variant that failed every run at N is not tried
    at larger N with the same vectors (recorded as skipped)."""
    res = {}
    failed_at = {}
    for vectors in vectors_list:
        for peers in peers_list:
            key = 'n%d-p%d' % (vectors, peers)
            res[key] = {'peers': peers, 'vectors': vectors}
            runs = {v: [] for v in servers}
            n = big_reps if peers >= 1000 else reps
            for rep in range(n):
                for v in order(rep, tuple(servers)):
                    if (v, vectors) in failed_at:
                        continue
                    r = join_once(binary, servers[v], peers, vectors, stall)
                    runs[v].append(r)
                    log('join -n %d %d peers %s: %s' % (
                        vectors, peers, v,
                        '%.3f s' % r['seconds'] if r['ok'] else
                        'FAIL ' + r['error']))
                    if not r['ok'] and rep == 0:
                        # a stall repeats itself: one failure is enough
                        failed_at[(v, vectors)] = peers
            for v in servers:
                if not runs[v] and (v, vectors) in failed_at:
                    runs[v] = [{'ok': False, 'error': 'skipped: failed at '
                                '%d peers' % failed_at[(v, vectors)]}]
            res[key].update(runs)
    return res


def sustained(binary, server, vectors, start, cap, stall, ok=0, bad=None):
    """Largest peer count that joins completely: doubling from START (or
    from OK, a count already seen to work), then bisection to 5 % below
    BAD (a count seen to fail, if any).
    Returns {'peers': N, 'capped': bool, 'first_fail': M}."""
    n = max(start, 2 * ok) if bad is None else None
    while n is not None and n <= cap:
        r = join_once(binary, server, n, vectors, stall)
        log('sustain -n %d %d peers: %s' % (vectors, n, 'ok' if r['ok']
                                           else 'FAIL ' + r['error']))
        if not r['ok']:
            bad = n
            break
        ok = n
        n *= 2
    if bad is None:
        return {'peers': ok, 'capped': True, 'first_fail': None}
    while bad - ok > max(8, ok // 20):
        mid = (ok + bad) // 2
        r = join_once(binary, server, mid, vectors, stall)
        log('sustain -n %d %d peers: %s' % (vectors, mid, 'ok' if r['ok']
                                           else 'FAIL ' + r['error']))
        if r['ok']:
            ok = mid
        else:
            bad = mid
    return {'peers': ok, 'capped': False, 'first_fail': bad}


# ---------------------------------------------------------------------------
# Host floor (bench/host-floor.c)

def host_floor(binary, mode, count, raw_path):
    out = subprocess.run([binary, mode, str(count), raw_path],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    samples = [float(x) for x in open(raw_path).read().split()]
    r = percentiles(samples)
    r['ok'] = True
    r['line'] = out.strip()
    return r


def wait_quiet(max_load, max_wait):
    """Wait up to MAX_WAIT s for the 1-minute load to drop below MAX_LOAD."""
    deadline = time.time() + max_wait
    while time.time() < deadline:
        load = os.getloadavg()[0]
        if load < max_load:
            return load
        time.sleep(10)
    return os.getloadavg()[0]
