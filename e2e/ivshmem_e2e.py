# SPDX-License-Identifier: GPL-2.0-or-later
"""End-to-end runner: ivshmem server, Linux guests and host-side peers.

A Session owns everything it starts (server, QEMU guests, shm objects,
sockets in a private temp dir) and tears it all down on close, at exit and
on SIGINT/SIGTERM.  Every wait has a timeout.  Guests boot the image of
guest/image.sh; the runner drives each guest through a shell on its second
serial port (ttyS1) while the first (ttyS0, the kernel console) goes to a
log file that is shown when something fails.
"""

import array
import atexit
import ctypes
import hashlib
import mmap
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get('GUEST_CACHE',
                       os.path.expanduser('~/.cache/qemu-ivshmem/guest'))


class E2EError(Exception):
    pass


def log(msg):
    print('# ' + msg, file=sys.stderr, flush=True)


def qemu_binary():
    path = os.environ.get('QEMU_BINARY')
    if not path and os.environ.get('QEMU_BUILD'):
        path = os.path.join(os.environ['QEMU_BUILD'], 'qemu-system-x86_64')
    if not path:
        path = os.path.join(TOP, 'out', 'qemu', 'build',
                            'qemu-system-x86_64')
    if not os.access(path, os.X_OK):
        raise E2EError('no QEMU binary at %s (build it: tools/build.sh)'
                       % path)
    return path


def server_binary():
    path = os.environ.get('IVSHMEM_SERVER')
    if not path:
        build = os.environ.get('QEMU_BUILD') or os.path.dirname(
            qemu_binary())
        path = os.path.join(build, 'contrib', 'ivshmem-server',
                            'ivshmem-server')
    if not os.access(path, os.X_OK):
        raise E2EError('no ivshmem-server at %s' % path)
    return path


def firmware_args():
    """-L for Debian's firmware (seabios, qemu-system-data, ipxe-qemu).

    A QEMU run from its build tree looks for firmware in its qemu-bundle
    directory rather than in --firmwarepath.
    """
    args = []
    for d in ('/usr/share/seabios', '/usr/share/qemu', '/usr/lib/ipxe/qemu'):
        if os.path.isdir(d):
            args += ['-L', d]
    return args


def build_image():
    """Build (or reuse) the guest image; returns its directory."""
    out = subprocess.run([os.path.join(TOP, 'guest', 'image.sh')],
                         stdout=subprocess.PIPE, check=False, timeout=900)
    if out.returncode:
        raise E2EError('guest image build failed')
    return out.stdout.decode().strip().splitlines()[-1]


# ---------------------------------------------------------------------------
# The test pattern of ivshmem-guest (write/verify), for host-side checks.

def pattern_words(seed, offset, nwords):
    state = ((seed * 2654435761) ^ (offset >> 2)) & 0xffffffff or 1
    words = array.array('I', bytes(4 * nwords))
    for i in range(nwords):
        state ^= (state << 13) & 0xffffffff
        state ^= state >> 17
        state ^= (state << 5) & 0xffffffff
        words[i] = state
    return words.tobytes()


# ---------------------------------------------------------------------------
# Processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child: get SIGKILL if the runner dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

class Proc:
    def __init__(self, session, name, argv, logfile):
        self.name = name
        self.logfile = logfile
        self.log = open(logfile, 'ab')
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=self.log,
                                      stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=_die_with_parent)
        session.procs.append(self)

    def alive(self):
        return self.popen.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            try:
                os.kill(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace=3.0):
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()


class Server(Proc):
    def __init__(self, session, size='4M', vectors=1, name='server',
                 binary=None):
        self.sock = os.path.join(session.dir, name + '.sock')
        self.shm = session.shm_name(name)
        self.pidfile = os.path.join(session.dir, name + '.pid')
        argv = [binary or server_binary(), '-F', '-v', '-S', self.sock, '-M',
                self.shm, '-l', size, '-n', str(vectors), '-p',
                self.pidfile]
        super().__init__(session, name, argv,
                         os.path.join(session.dir, name + '.log'))
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if not self.alive() or time.time() > deadline:
                raise E2EError('%s did not come up: %s'
                               % (name, session.tail(self.logfile)))
            time.sleep(0.05)


class Guest(Proc):
    """A QEMU guest running the test image, driven over ttyS1."""

    READY = b'IVSHMEM-GUEST-READY'

    def __init__(self, session, name, device_args, append='', binary=None):
        self.session = session
        self.console = os.path.join(session.dir, name + '.console')
        self.ctl_log = os.path.join(session.dir, name + '.ctl')
        ctl_path = os.path.join(session.dir, name + '.ctl.sock')
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(ctl_path)
        listener.listen(1)
        img = session.image
        argv = [binary or qemu_binary(), '-M', 'pc', '-accel', session.accel,
                '-cpu', 'host' if session.accel == 'kvm' else 'max',
                '-m', '256M', '-nodefaults', '-display', 'none',
                '-no-reboot', '-kernel', session.kernel,
                '-initrd', os.path.join(img, 'initramfs.cpio.gz'),
                '-append', 'console=ttyS0 panic=-1 loglevel=4 no_timer_check '
                + append,
                '-serial', 'file:' + self.console,
                '-chardev', 'socket,id=ctl,path=' + ctl_path,
                '-serial', 'chardev:ctl'] + firmware_args() + device_args
        self.started = time.time()
        super().__init__(session, name, argv,
                         os.path.join(session.dir, name + '.qemu.log'))
        listener.settimeout(10)
        try:
            self.conn, _ = listener.accept()
        except socket.timeout:
            raise E2EError('%s: QEMU did not connect its serial port: %s'
                           % (name, session.tail(self.logfile)))
        finally:
            listener.close()
        self.buf = b''
        self.cond = threading.Condition()
        self.closed = False
        self.seq = 0
        self.boot_time = None
        self.kick = False
        self.ctl = open(self.ctl_log, 'ab')
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                data = self.conn.recv(65536)
            except OSError:
                data = b''
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.buf += data
                try:
                    self.ctl.write(data)
                    self.ctl.flush()
                except ValueError:
                    pass
                self.cond.notify_all()

    def expect(self, regex, timeout):
        """Wait for REGEX in the output; consume up to its end."""
        pat = re.compile(regex)
        deadline = time.time() + timeout
        with self.cond:
            while True:
                m = pat.search(self.buf)
                if m:
                    out = self.buf[:m.end()]
                    self.buf = self.buf[m.end():]
                    return out, m
                left = deadline - time.time()
                if left <= 0 or self.closed or not self.alive():
                    why = 'timeout' if left <= 0 else 'guest gone'
                    raise E2EError('%s: %s waiting for %r; got %r'
                                   % (self.name, why, regex,
                                      self.buf[-500:]))
                if not self.cond.wait(min(left, 0.3)) and self.kick:
                    self._kick()

    def _kick(self):
        """Send an empty line (a no-op for the shell).

        The guest's 8250 driver sometimes misses a transmit interrupt
        under TCG and holds its output until the next receive interrupt;
        a newline now and then while waiting gets the output flowing.
        """
        try:
            self.conn.sendall(b'\n')
        except OSError:
            pass

    def wait_ready(self, timeout=120):
        self.expect(re.escape(self.READY), timeout)
        self.kick = True
        self.boot_time = time.time() - self.started
        return self.boot_time

    def send(self, cmd):
        self.ctl.write(b'\n$ ' + cmd.encode() + b'\n')
        self.conn.sendall(cmd.encode() + b'\n')

    def start(self, cmd, timeout=60):
        """Start CMD in the guest; finish() collects its result.

        Returns once the guest's shell has started CMD.  Under TCG the
        guest's serial input can hold the end of a command line until more
        input arrives, and expect() kicks only the guest it waits on: a
        command started in guest b while the runner waited on guest a did
        not run for 45 s, until one newline to b started it at once.  So
        wait here, kicking this guest, for a marker echoed just before CMD.
        """
        self.seq += 1
        self.pending = self.seq
        self.send('echo "@@GO %d @@"; %s 2>&1 </dev/null; echo "@@END %d $? @@"'
                  % (self.seq, cmd, self.seq))
        self.expect(rb'@@GO %d @@' % self.seq, timeout)

    def finish(self, timeout=60):
        out, m = self.expect(rb'@@END %d (\d+) @@' % self.pending, timeout)
        text = out[:m.start()].decode(errors='replace').replace('\r', '')
        return int(m.group(1)), text.strip('\n')

    def run(self, cmd, timeout=60, check=True):
        self.start(cmd)
        rc, out = self.finish(timeout)
        if check and rc:
            raise E2EError('%s: `%s` failed (%d): %s'
                           % (self.name, cmd, rc, out))
        return out if check else (rc, out)

    def tool(self, args, timeout=60, check=True):
        return self.run('ivshmem-guest ' + args, timeout, check)

    def info(self, dev=''):
        out = self.tool((('-d %s ' % dev) if dev else '') + 'info')
        return dict(kv.split('=', 1) for kv in out.split()
                    if '=' in kv)

    def stop(self, grace=3.0):
        super().stop(grace)
        try:
            self.conn.close()
        except OSError:
            pass
        self.reader.join(2)
        self.ctl.close()


# ---------------------------------------------------------------------------
# A host-side peer speaking the server protocol (version 0).

class HostPeer:
    """Connects to the server like a QEMU would and records what it sees."""

    def __init__(self, server_sock, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(server_sock)
        self.peers = {}             # id -> list of eventfds
        self.vectors = []           # own eventfds
        self.events = []            # ('join', id) / ('leave', id)
        self.lock = threading.Lock()
        version, _ = self._recv()
        if version != 0:
            raise E2EError('server protocol version %d' % version)
        self.id, _ = self._recv()
        value, fd = self._recv()
        if value != -1 or fd is None:
            raise E2EError('expected the shm fd, got %d' % value)
        self.size = os.fstat(fd).st_size
        self.shm = mmap.mmap(fd, self.size)
        os.close(fd)
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _recv(self):
        data, fds, _, _ = socket.recv_fds(self.sock, 8, 1)
        if len(data) != 8:
            raise EOFError
        return struct.unpack('<q', data)[0], (fds[0] if fds else None)

    def _loop(self):
        while True:
            try:
                value, fd = self._recv()
            except (EOFError, OSError):
                return
            with self.lock:
                if value == self.id and fd is not None:
                    self.vectors.append(fd)
                elif fd is not None:
                    if value not in self.peers:
                        self.events.append(('join', value))
                    self.peers.setdefault(value, []).append(fd)
                else:
                    for f in self.peers.pop(value, []):
                        os.close(f)
                    self.events.append(('leave', value))

    def wait_for(self, what, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if what():
                    return True
            time.sleep(0.05)
        return False

    def ring(self, peer, vector):
        with self.lock:
            fd = self.peers[peer][vector]
        os.write(fd, struct.pack('<Q', 1))

    def wait_interrupt(self, vector, timeout):
        fd = self.vectors[vector]
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return False
        os.read(fd, 8)
        return True

    def close(self):
        self.sock.close()
        self.shm.close()


# ---------------------------------------------------------------------------

def probe_accel(image):
    """KVM if a guest really boots under it here, else TCG (cached)."""
    forced = os.environ.get('E2E_ACCEL')
    if forced:
        return forced
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return 'tcg'
    try:
        boot_id = open('/proc/sys/kernel/random/boot_id').read().strip()
    except OSError:
        boot_id = 'unknown'
    binary = qemu_binary()
    stamp = os.path.join(CACHE, 'kvm-probe-' + hashlib.sha1(
        binary.encode()).hexdigest()[:12])
    key = '%s %s' % (boot_id, binary)
    try:
        cached_key, result = open(stamp).read().rsplit(' ', 1)
        if cached_key == key:
            return result
    except (OSError, ValueError):
        pass
    log('probing whether KVM can boot a guest here')
    s = Session(accel='kvm', image=image)
    definite = True
    try:
        g = s.guest('kvmprobe', [])
        g.wait_ready(15)
        result = 'kvm'
    except E2EError:
        # A QEMU that exited (bad set-up) says nothing about KVM.
        definite = g.alive() if 'g' in locals() else False
        result = 'tcg'
    finally:
        s.close()
    if definite:
        with open(stamp, 'w') as f:
            f.write('%s %s' % (key, result))
    log('accelerator: %s' % result)
    return result


_sessions = []


def _cleanup_all(*_):
    for s in list(_sessions):
        s.close()


def _on_signal(signum, _frame):
    _cleanup_all()
    sys.exit(128 + signum)


atexit.register(_cleanup_all)
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)


class Session:
    def __init__(self, accel=None, image=None, keep_logs=False):
        self.dir = tempfile.mkdtemp(prefix='ivshmem-e2e.')
        self.procs = []
        self.shms = []
        self.hostpeers = []
        self.image = image or build_image()
        # PVH boot of the ELF kernel when the image has one (much faster
        # under TCG than the bzImage through linuxboot_dma.bin).
        self.kernel = os.path.join(self.image, 'vmlinux')
        if not os.path.exists(self.kernel) or os.environ.get('E2E_BZIMAGE'):
            self.kernel = os.path.join(self.image, 'vmlinuz')
        self.accel = accel or probe_accel(self.image)
        self.keep_logs = keep_logs
        _sessions.append(self)

    def shm_name(self, name):
        shm = 'ivshmem-e2e-%d-%s' % (os.getpid(), name)
        self.shms.append(shm)
        return shm

    def server(self, **kw):
        return Server(self, **kw)

    def guest(self, name, device_args, append='', binary=None):
        return Guest(self, name, device_args, append, binary)

    def hostpeer(self, server):
        p = HostPeer(server.sock)
        self.hostpeers.append(p)
        return p

    @staticmethod
    def tail(path, lines=40):
        try:
            with open(path, 'rb') as f:
                data = f.read().decode(errors='replace')
        except OSError:
            return '(no log)'
        return '\n'.join(data.replace('\r', '').splitlines()[-lines:])

    def dump_logs(self):
        for p in self.procs:
            for path in [p.logfile] + [getattr(p, a) for a in
                                       ('console', 'ctl_log')
                                       if hasattr(p, a)]:
                log('---- %s' % os.path.basename(path))
                for line in self.tail(path).splitlines():
                    log('  ' + line)

    def close(self):
        if self not in _sessions:
            return
        _sessions.remove(self)
        for p in self.hostpeers:
            p.close()
        for p in reversed(self.procs):
            p.stop()
        for shm in self.shms:
            try:
                os.unlink('/dev/shm/' + shm)
            except OSError:
                pass
        if not self.keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
