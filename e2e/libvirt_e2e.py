# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt as a client: daemons, transient domains and their consoles.

Lets the end-to-end tests run the test guest as a libvirt domain of type
'qemu' (TCG), as libvirt's unprivileged user (libvirt-qemu), with any
QEMU binary as <emulator>, and drive it over its second serial port like
ivshmem_e2e.Guest does.  Access for libvirt-qemu is granted deliberately:
the session directory, the guest's control sockets, the ivshmem server's
socket and the shm objects belong to group libvirt-qemu with no access
for others.
"""

import grp
import json
import mmap
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from xml.sax.saxutils import escape, quoteattr

import ivshmem_e2e as e2e

URI = 'qemu:///system'
QEMU_USER = 'libvirt-qemu'


def qemu_ids():
    """(uid, gid) of libvirt's default QEMU user and group."""
    return pwd.getpwnam(QEMU_USER).pw_uid, grp.getgrnam(QEMU_USER).gr_gid


def grant(path, mode):
    """Give group libvirt-qemu MODE on PATH (owner stays root)."""
    os.chown(path, 0, qemu_ids()[1])
    os.chmod(path, mode)


class Libvirt:
    """virtlogd and libvirtd: reuses running ones, stops what it starts."""

    DAEMONS = (('virtlogd', '/run/virtlogd.pid'),
               ('libvirtd', '/run/libvirtd.pid'))

    def __init__(self):
        self.started = []           # (name, pid) we started
        self.kvm_mode = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        self._kvm_for_group()
        # A daemon that answers already (e.g. socket-activated by systemd)
        # is used as it is.
        answering = self.virsh('version', check=False).returncode == 0
        for name, pidfile in self.DAEMONS:
            if answering or self._running(pidfile):
                continue
            path = shutil.which(name) or '/usr/sbin/' + name
            out = subprocess.run([path, '-d'], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=60)
            if out.returncode:
                raise e2e.E2EError('%s -d failed: %s'
                                   % (name, out.stdout.decode()))
            deadline = time.time() + 20
            while not self._running(pidfile):
                if time.time() > deadline:
                    raise e2e.E2EError('%s did not write %s'
                                       % (name, pidfile))
                time.sleep(0.1)
            self.started.append((name, self._running(pidfile)))
        deadline = time.time() + 60
        while True:
            r = self.virsh('version', check=False)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                raise e2e.E2EError('libvirtd does not answer: %s'
                                   % r.stdout)
            time.sleep(0.5)
        m = re.search(r'Running against daemon: ([\d.]+)|'
                      r'Using library: libvirt ([\d.]+)', r.stdout)
        self.version = (m.group(1) or m.group(2)) if m else '?'

    def _kvm_for_group(self):
        """Give /dev/kvm the mode udev gives it on Debian (root:kvm 0660).

        Without udev it stays root-only: libvirt then finds KVM usable when
        it probes a QEMU binary but not when it validates its cache, and
        probes every binary again on every call (40-50 s per virsh create
        here).  The original mode comes back in close().
        """
        try:
            st = os.stat('/dev/kvm')
            kvm_gid = grp.getgrnam('kvm').gr_gid
        except (OSError, KeyError):
            return
        if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
            return
        self.kvm_mode = (st.st_gid, st.st_mode & 0o7777)
        os.chown('/dev/kvm', -1, kvm_gid)
        os.chmod('/dev/kvm', 0o660)

    @staticmethod
    def _running(pidfile):
        try:
            pid = int(open(pidfile).read().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return 0

    def virsh(self, *args, check=True, timeout=180):
        t0 = time.time()
        out = subprocess.run(['virsh', '-q', '-c', URI] + list(args),
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=timeout)
        out.stdout = out.stdout.decode(errors='replace').strip()
        if os.environ.get('LIBVIRT_E2E_TRACE'):
            e2e.log('virsh %s: %.1f s, rc %d'
                    % (' '.join(args)[:60], time.time() - t0, out.returncode))
        if check and out.returncode:
            raise e2e.E2EError('virsh %s: %s' % (' '.join(args), out.stdout))
        return out

    def close(self):
        for name, pid in reversed(self.started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                e2e.log('%s (pid %d) ignores SIGTERM; killing it'
                        % (name, pid))
                os.kill(pid, signal.SIGKILL)
        self.started = []
        if self.kvm_mode:
            os.chown('/dev/kvm', -1, self.kvm_mode[0])
            os.chmod('/dev/kvm', self.kvm_mode[1])
            self.kvm_mode = None


def has_seccomp(binary):
    """Whether BINARY was built with seccomp (libvirt then adds -sandbox)."""
    out = subprocess.run([binary, '-sandbox', 'on', '-M', 'none',
                          '-display', 'none', '-nodefaults', '-S', '-qmp',
                          'stdio'], input=b'{"execute":"qmp_capabilities"}'
                         b'{"execute":"quit"}', stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60)
    return out.returncode == 0 and b'sandbox' not in out.stdout


class LVSession(e2e.Session):
    """An e2e session whose directory libvirt-qemu can use."""

    def __init__(self, lv, emulator, accel, image, files):
        super().__init__(accel=accel, image=image)
        grant(self.dir, 0o750)
        self.lv = lv
        self.emulator = emulator
        self.files = files          # kernel and initrd readable by QEMU

    def domain(self, name, shmem_xml, append=''):
        return Domain(self, name, shmem_xml, append)

    def server(self, **kw):
        srv = super().server(**kw)
        grant(srv.sock, 0o660)
        return srv

    def shm_object(self, name, size):
        """Create /dev/shm/NAME for libvirt-qemu and map it here."""
        path = '/dev/shm/' + name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            grant(path, 0o660)
            return mmap.mmap(fd, size)
        finally:
            os.close(fd)


def guest_files(image):
    """Copies of the kernel and initrd that libvirt-qemu can read."""
    d = tempfile.mkdtemp(prefix='ivshmem-lv-img.')
    grant(d, 0o750)
    kernel = os.path.join(image, 'vmlinux')
    if not os.path.exists(kernel) or os.environ.get('E2E_BZIMAGE'):
        kernel = os.path.join(image, 'vmlinuz')
    files = {}
    for key, src in (('kernel', kernel),
                     ('initrd', os.path.join(image, 'initramfs.cpio.gz'))):
        dst = os.path.join(d, os.path.basename(src))
        shutil.copyfile(src, dst)
        grant(dst, 0o640)
        files[key] = dst
    files['dir'] = d
    return files


def shmem_plain(name, size_mib=4, role=None):
    role_attr = ' role=%s' % quoteattr(role) if role else ''
    return ("<shmem name=%s%s><model type='ivshmem-plain'/>"
            "<size unit='M'>%d</size></shmem>"
            % (quoteattr(name), role_attr, size_mib))


def shmem_doorbell(name, server_sock, vectors=1, role=None):
    role_attr = ' role=%s' % quoteattr(role) if role else ''
    return ("<shmem name=%s%s><model type='ivshmem-doorbell'/>"
            "<server path=%s/><msi vectors='%d' ioeventfd='on'/></shmem>"
            % (quoteattr(name), role_attr, quoteattr(server_sock), vectors))


class Domain(e2e.Guest):
    """A transient libvirt domain running the test image.

    ttyS0 (kernel console) goes to a file libvirt opens; ttyS1 connects to
    a socket of ours, served by the e2e.Guest machinery (expect, run,
    tool...).  The socket stays open so that a restored domain connects
    again.
    """

    def __init__(self, session, name, shmem_xml, append=''):
        self.session = session
        self.lv = session.lv
        self.name = name
        self.domain = 'ivshmem-lv-%d-%s' % (os.getpid(), name)
        self.console = os.path.join(session.dir, name + '.console')
        self.ctl_log = os.path.join(session.dir, name + '.ctl')
        self.logfile = '/var/log/libvirt/qemu/%s.log' % self.domain
        self.ctl_path = os.path.join(session.dir, name + '.ctl.sock')
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.ctl_path)
        grant(self.ctl_path, 0o660)
        self.listener.listen(1)
        self.cond = threading.Condition()
        self.buf = b''
        self.closed = True
        self.conn = None
        self.reader = None
        self.seq = 0
        self.boot_time = None
        self.kick = False
        self.ctl = open(self.ctl_log, 'ab')
        self.pid = 0
        self.xml = self._xml(shmem_xml, append)
        self.xml_path = os.path.join(session.dir, name + '.xml')
        with open(self.xml_path, 'w') as f:
            f.write(self.xml)
        self.started = time.time()
        session.procs.append(self)
        self.lv.virsh('create', self.xml_path)
        self._attach()

    def _xml(self, shmem_xml, append):
        s = self.session
        cmdline = ('console=ttyS0 panic=-1 loglevel=4 no_timer_check '
                   + append).strip()
        kvm = s.accel == 'kvm'
        return """<domain type='%s'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>%s</cmdline>
  </os>
  <features><acpi/></features>
  <cpu mode='%s'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%s</emulator>
    <controller type='usb' model='none'/>
    <serial type='file'><source path=%s/><target port='0'/></serial>
    <serial type='unix'><source mode='connect' path=%s/>
      <target port='1'/></serial>
    <memballoon model='none'/>
    %s
  </devices>
</domain>
""" % ('kvm' if kvm else 'qemu', self.domain,
       escape(s.files['kernel']),
       escape(s.files['initrd']), escape(cmdline),
       'host-passthrough' if kvm else 'maximum', escape(s.emulator),
       quoteattr(self.console), quoteattr(self.ctl_path),
       '\n    '.join(shmem_xml))

    def _attach(self, timeout=30):
        """Accept QEMU's connection to ttyS1 and start reading it."""
        try:
            self.pid = int(open('/run/libvirt/qemu/%s.pid'
                                % self.domain).read().split()[0])
        except (OSError, ValueError, IndexError):
            raise e2e.E2EError('%s: no QEMU pid file' % self.name)
        self.listener.settimeout(timeout)
        try:
            conn, _ = self.listener.accept()
        except socket.timeout:
            raise e2e.E2EError('%s: QEMU did not connect its serial port: '
                               '%s' % (self.name,
                                       self.session.tail(self.logfile)))
        with self.cond:
            self.conn = conn
            self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def alive(self):
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self, sig=signal.SIGKILL):
        self.lv.virsh('destroy', self.domain, check=False)

    # -- what libvirt made of it

    def cmdline(self):
        with open('/proc/%d/cmdline' % self.pid, 'rb') as f:
            return [a.decode() for a in f.read().split(b'\0') if a]

    def devices(self, driver):
        """The -device JSON objects of DRIVER on QEMU's command line."""
        found = []
        args = self.cmdline()
        for i, a in enumerate(args[:-1]):
            if a == '-device' and args[i + 1].startswith('{'):
                d = json.loads(args[i + 1])
                if d.get('driver') == driver:
                    found.append(d)
        return found

    def uid(self):
        with open('/proc/%d/status' % self.pid) as f:
            return int(re.search(r'^Uid:\s+(\d+)', f.read(),
                                 re.M).group(1))

    def fd_count(self):
        return len(os.listdir('/proc/%d/fd' % self.pid))

    def live_xml(self):
        return self.lv.virsh('dumpxml', self.domain).stdout

    # -- save / restore

    def save(self, path):
        self.lv.virsh('save', self.domain, path, timeout=300)
        deadline = time.time() + 30
        while self.alive() and time.time() < deadline:
            time.sleep(0.1)
        if self.reader:
            self.reader.join(10)

    def restore(self, path):
        self.lv.virsh('restore', path, timeout=300)
        self._attach()

    def stop(self, grace=3.0):
        if self.alive():
            self.lv.virsh('destroy', self.domain, check=False)
        if self.conn:
            try:
                self.conn.close()
            except OSError:
                pass
        if self.reader:
            self.reader.join(2)
        self.listener.close()
        self.ctl.close()
