#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Issue 14 figures: ivshmem-server under hostile and stalled clients.

A measurement, not a test (tests/suites/30-server has the tests):
  measure.py SERVER-BINARY LABEL p40,p500,n1000,n3000,pin > out.json
runs the scenarios of issue 14 against a server binary and prints what
happened (peers dropped, descriptors held, RSS, CPU) as JSON; one line
per scenario also goes to stderr.  Needs root and the ivshmem-test user
(tests/suites/30-server creates it).  figures.json holds the run of
2026-11-27 against the server before (commit 4e38352) and after the
issue 14 changes."""
import json, os, pwd, select, signal, socket, struct, subprocess, sys, time

BIN, LABEL = sys.argv[1], sys.argv[2]
TMP = '/tmp/m14-%d' % os.getpid()
os.makedirs(TMP, exist_ok=True)
os.chmod(TMP, 0o1777)
n_serial = [0]


def proc_fds(pid):
    try:
        return len(os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return -1


def proc_rss_cpu(pid):
    st = open('/proc/%d/status' % pid).read()
    rss = int(st.split('VmRSS:')[1].split()[0])
    f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
    return rss, cpu


class Server:
    def __init__(self, args, user=None, nofile=None):
        n_serial[0] += 1
        self.sock = '%s/s%d' % (TMP, n_serial[0])
        self.shm = 'm14-%d-%d' % (os.getpid(), n_serial[0])
        self.log = '%s/log%d' % (TMP, n_serial[0])
        pre = []
        if user:
            pre = ['setpriv', '--reuid', user, '--regid', user,
                   '--clear-groups']
        argv = pre + [BIN, '-F', '-S', self.sock, '-M', self.shm] + args

        def limit():
            if nofile:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.p = subprocess.Popen(argv, stdout=open(self.log, 'w'),
                                  stderr=subprocess.STDOUT,
                                  preexec_fn=limit)
        end = time.time() + 10
        while 'listening' not in open(self.log).read():
            assert time.time() < end, open(self.log).read()
            time.sleep(0.01)
        self.pid = self.p.pid

    def logtext(self):
        return open(self.log).read()

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        try:
            os.unlink('/dev/shm/' + self.shm)
        except OSError:
            pass


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b''
        self.fds = 0
        self.msgs = []
        self.eof = False

    def pump(self, timeout=0):
        """Read what is there; returns False on EOF."""
        while True:
            pl = select.poll()
            pl.register(self.s, select.POLLIN)
            if not pl.poll(timeout * 1000):
                return True
            try:
                data, fds, _, _ = socket.recv_fds(self.s, 4096, 64)
            except (ConnectionResetError, OSError):
                self.eof = True
                return False
            if not data:
                self.eof = True
                return False
            for fd in fds:
                os.close(fd)
            self.fds += len(fds)
            self.buf += data
            while len(self.buf) >= 8:
                self.msgs.append(struct.unpack('<q', self.buf[:8])[0])
                self.buf = self.buf[8:]
            timeout = 0

    def close(self):
        self.s.close()


def wait_until(cond, secs):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def paused_peers(paused, new, user, nofile):
    """Issue 14.1: legitimate peers pause while others join."""
    srv = Server(['-n', '1'], user=user, nofile=nofile)
    t0 = time.time()
    cl = []
    for i in range(paused):
        c = Client(srv.sock)
        cl.append(c)
        wait_until(lambda: c.pump() and c.fds >= 1 + i + 1 or c.eof, 10)
        for o in cl:
            o.pump()
    for o in cl:
        o.fds = 0
    newc = [Client(srv.sock) for _ in range(new)]
    time.sleep(1.0)
    fds_paused = proc_fds(srv.pid)
    # everybody reads again
    allc = cl + newc
    wait_until(lambda: all(not c.pump() or (c.fds >= new if c in cl else
                                            c.fds >= 2 + paused + new - 1)
                           for c in allc), 30)
    txt = srv.logtext()
    res = {
        'scenario': '%d peers pause while %d join, server as %s, '
                    'RLIMIT_NOFILE %s, -n 1' % (paused, new, user,
                                                  nofile or 'inherited'),
        'peers_dropped': txt.count(' left: '),
        'paused_peers_complete': sum(c.fds == new for c in cl),
        'newcomers_complete': sum(c.fds == 2 + paused + new - 1
                                  for c in newc),
        'server_fds_while_paused': fds_paused,
        'seconds': round(time.time() - t0, 2),
    }
    for c in allc:
        c.close()
    srv.stop()
    return res


def never_read(n, user, args):
    """Issue 14.7: connections that never read; then a real peer joins."""
    srv = Server(['-n', '1'] + args, user=user)
    rss0, cpu0 = proc_rss_cpu(srv.pid)
    t0 = time.time()
    cl = []
    for i in range(n):
        cl.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        cl[-1].connect(srv.sock)
    wait_until(lambda: proc_fds(srv.pid) >= 2 * n or ' left: ' in
               srv.logtext(), 60)
    time.sleep(1)
    rss1, cpu1 = proc_rss_cpu(srv.pid)
    took = time.time() - t0
    real = Client(srv.sock)
    ok = wait_until(lambda: real.pump() and real.fds >= 2 or real.eof, 10)
    t1 = time.time()
    srv.p.send_signal(signal.SIGTERM)
    srv.p.wait(60)
    res = {
        'scenario': '%d connections that never read, server as %s, -n 1' %
                    (n, user or 'root'),
        'rss_kib_before': rss0, 'rss_kib_after': rss1,
        'cpu_s': round(cpu1 - cpu0, 2),
        'seconds_to_absorb': round(took, 2),
        'peers_dropped': srv.logtext().count(' left: '),
        'real_peer_served': bool(ok and real.fds >= 2 and not real.eof),
        'sigterm_exit_s': round(time.time() - t1, 2),
    }
    for c in cl:
        c.close()
    real.close()
    srv.stop()
    return res


def pinned_fds(cycles):
    """Issue 14.3: a client that never reads while peers come and go."""
    srv = Server(['-n', '4'])
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(srv.sock)
    time.sleep(0.1)
    reader = Client(srv.sock)
    wait_until(lambda: reader.pump() and reader.fds >= 1 + 8, 5)
    refused = 0
    peak = 0
    t0 = time.time()
    for i in range(cycles):
        c = Client(srv.sock)
        end = time.time() + 5
        # served: its own ID (message 1) came back with its 4 vectors
        while (c.pump(0.05) and time.time() < end and
               (len(c.msgs) < 2 or c.msgs[2:].count(c.msgs[1]) < 4)):
            pass
        if len(c.msgs) < 2 or c.msgs[2:].count(c.msgs[1]) < 4:
            refused += 1
        c.close()
        reader.pump()
        if i % 100 == 0:
            peak = max(peak, proc_fds(srv.pid))
    time.sleep(0.5)
    txt = srv.logtext()
    res = {
        'scenario': '%d join/leave cycles, -n 4, one client never reads, '
                    'server as root' % cycles,
        'joins_refused': refused,
        'server_fds_peak': peak,
        'server_fds_end': proc_fds(srv.pid),
        'stuck_client_dropped': 'peer 0 left' in txt,
        'seconds': round(time.time() - t0, 2),
    }
    stuck.close()
    reader.close()
    srv.stop()
    return res


out = {'binary': LABEL, 'results': []}
SCEN = {'p40': (paused_peers, (40, 30, 'ivshmem-test', 256)),
        'p500': (paused_peers, (500, 50, 'ivshmem-test', None)),
        'n1000': (never_read, (1000, 'ivshmem-test', [])),
        'n3000': (never_read, (3000, None, [])),
        'pin': (pinned_fds, (5050,))}
for key in sys.argv[3].split(','):
    fn, args = SCEN[key]
    try:
        r = fn(*args)
        r['binary'] = LABEL
    except Exception as e:
        r = {'scenario': fn.__name__ + repr(args), 'error': repr(e)}
    print(json.dumps(r), file=sys.stderr, flush=True)
    out['results'].append(r)
print(json.dumps(out, indent=1))
subprocess.call(['rm', '-rf', TMP])
