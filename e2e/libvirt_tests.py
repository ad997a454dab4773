#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""libvirt end-to-end tests: libvirt 11.3 drives our ivshmem devices.

Prints TAP with its plan first.  Every scenario runs twice: with the QEMU
under test as <emulator> ("ours") and with Debian's stock qemu-system-x86
10.0.2 ("stock"), against the ivshmem-server of the tree under test.  The
domains are transient, of type 'qemu' (TCG), run as libvirt-qemu, and boot
the test guest of guest/image.sh.  A check that fails on stock only is a
failure unless it is listed in KNOWN_STOCK with the reason (then it is a
TODO that says so).  Run a subset with:
  e2e/libvirt_tests.py [ours|stock] [plain|doorbell]
"""

import os
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ivshmem_e2e as e2e  # noqa: E402
import libvirt_e2e as lve  # noqa: E402

MIB = 1 << 20
STOCK = '/usr/bin/qemu-system-x86_64'
CYCLES = int(os.environ.get('LIBVIRT_HOTPLUG_CYCLES', '3'))

# Checks per emulator, in the order they are reported.
CHECKS = [
    ('plain-start', "ivshmem-plain domains with no role, role='master' and "
     "role='peer' start; libvirt passes master absent, \"on\", \"off\""),
    ('plain-user', 'QEMU runs as libvirt-qemu'),
    ('plain-sandbox', 'libvirt runs QEMU under -sandbox on'),
    ('plain-region', 'each guest sees the 4 MiB region, no interrupts'),
    ('plain-share', "each guest's writes are read by the two others and "
     'by the host'),
    ('plain-host', "the host's writes are read by the three guests"),
    ('hotplug-plain', '%d virsh attach-device/detach-device cycles of '
     'ivshmem-plain: the guest maps the region after attach, the device '
     'is gone after detach' % CYCLES),
    ('hotplug-doorbell', '%d attach/detach cycles of ivshmem-doorbell: '
     'MSI-X device joins the server after attach, leaves after detach'
     % CYCLES),
    ('hotplug-fds', "QEMU's fd count is the same before and after the "
     'hot-plug cycles'),
    ('peer-save', "virsh save of the role='peer' domain is refused, the "
     'domain keeps running'),
    ('master-save', "virsh save/restore of the role='master' domain: the "
     "region's contents come back from the save file"),
    ('doorbell-setup', 'ivshmem-doorbell on our server: MSI-X, 2 vectors, '
     "distinct peer IDs, the server's 4 MiB region"),
    ('doorbell-message', 'a message one guest writes is read by the other '
     'after one ring'),
    ('doorbell-ring', 'guests ring each other: exactly one interrupt per '
     'ring, on the rung vector (3 rings each way)'),
]

# check id -> why stock 10.0.2 fails it (reported as TODO, not a pass).
KNOWN_STOCK = {}

LABELS = ('ours', 'stock')
number = 0
failed = 0
matrix = {}         # (label, check) -> 'ok' / 'FAIL' / 'SKIP' / 'TODO'
times = {}          # (label, scenario) -> seconds
boot_times = []
wanted_scenarios = []


def emit(line, detail=''):
    global number
    number += 1
    print(line % number, flush=True)
    for d in detail.splitlines():
        print('#   ' + d, flush=True)


class Checker:
    """Reports the checks of one emulator, each exactly once."""

    def __init__(self, label):
        self.label = label
        self.done = set()

    def _desc(self, cid):
        return '[%s] %s' % (self.label, dict(CHECKS)[cid])

    def check(self, cid, ok, detail='', note=''):
        global failed
        assert cid in dict(CHECKS) and cid not in self.done, cid
        self.done.add(cid)
        desc = self._desc(cid) + (' (%s)' % note if note else '')
        if ok:
            matrix[self.label, cid] = 'ok'
            emit('ok %d - ' + desc.replace('%', '%%'))
        elif self.label == 'stock' and cid in KNOWN_STOCK:
            matrix[self.label, cid] = 'TODO'
            emit('not ok %d - ' + desc.replace('%', '%%') +
                 ' # TODO stock 10.0.2 bug: ' + KNOWN_STOCK[cid], detail)
        else:
            failed += 1
            matrix[self.label, cid] = 'FAIL'
            emit('not ok %d - ' + desc.replace('%', '%%'), detail)
        return ok

    def skip(self, cid, why):
        assert cid in dict(CHECKS) and cid not in self.done, cid
        self.done.add(cid)
        matrix[self.label, cid] = 'SKIP'
        emit('ok %d - ' + self._desc(cid).replace('%', '%%') +
             ' # SKIP ' + why)

    def abort(self, cids, why):
        """Report the checks of CIDS not reached yet as failures."""
        for cid in cids:
            if cid not in self.done:
                self.check(cid, False, why, 'not reached')

    def skip_all(self, why):
        for cid, _ in CHECKS:
            if cid not in self.done:
                self.skip(cid, why)


def guest_devices(g):
    out = g.run('ls /dev | grep "^ivshmem" ; true')
    return set(out.split())


def wait_until(what, timeout, step=0.5):
    deadline = time.time() + timeout
    while True:
        v = what()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def irq_count(g):
    """Interrupts the guest's ivshmem driver has handled (all vectors)."""
    # Our driver names its IRQs ivshmemN-vK (earlier versions: ivshmem).
    out = g.run("awk '$NF ~ /^ivshmem[0-9]*(-v[0-9]+)?$/ { for (i = 2; "
                "i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } "
                "END { print s + 0 }' /proc/interrupts")
    return int(out.split()[-1])


# ---------------------------------------------------------------------------

PLAIN_CHECKS = [c for c, _ in CHECKS if not c.startswith('doorbell')]
DOORBELL_CHECKS = [c for c, _ in CHECKS if c.startswith('doorbell')]


def boot(domains):
    for d in domains:
        d.wait_ready(180)
        boot_times.append(d.boot_time)
    print('# booted %s in %s s' % (', '.join(d.name for d in domains),
                                   ', '.join('%.1f' % d.boot_time
                                             for d in domains)), flush=True)


def scenario_plain(t, s):
    name = s.shm_name('plain')
    shm = s.shm_object(name, 4 * MIB)
    roles = {'pa': None, 'pb': 'master', 'pc': 'peer'}
    doms, errors = {}, []
    for n, role in roles.items():
        try:
            doms[n] = s.domain(n, [lve.shmem_plain(name, 4, role)])
        except e2e.E2EError as err:
            errors.append('%s (role %s): %s' % (n, role, err))
    masters = {n: [d.get('master') for d in doms[n].devices('ivshmem-plain')]
               for n in doms}
    t.check('plain-start', not errors and masters == {
        'pa': [None], 'pb': ['on'], 'pc': ['off']},
        '\n'.join(errors) + '\nmaster on the command lines: %s' % masters)
    if errors:
        raise e2e.E2EError('domains did not start')
    pa, pb, pc = doms['pa'], doms['pb'], doms['pc']
    uid = lve.qemu_ids()[0]
    uids = {n: d.uid() for n, d in doms.items()}
    t.check('plain-user', all(u == uid for u in uids.values()),
            'QEMU uids %s, libvirt-qemu is %d' % (uids, uid))
    sandbox = ['-sandbox' in d.cmdline() for d in doms.values()]
    if lve.has_seccomp(s.emulator):
        t.check('plain-sandbox', all(sandbox),
                'domains with -sandbox: %s' % sandbox)
    else:
        t.skip('plain-sandbox', '%s is built without seccomp, so libvirt '
               'does not add -sandbox (tools/build.sh configures with '
               '--enable-seccomp)' % s.emulator)
    boot(doms.values())
    infos = {n: d.info() for n, d in doms.items()}
    t.check('plain-region', all(i.get('size') == str(4 * MIB) and
                                i.get('irq') == 'none'
                                for i in infos.values()), str(infos))
    bad = []
    for k, (n, d) in enumerate(doms.items()):
        off, seed = k * MIB, 11 + k
        d.tool('write %d 65536 %d' % (off, seed))
        for m, other in doms.items():
            if m != n and 'verify: ok' not in other.tool(
                    'verify %d 65536 %d' % (off, seed), check=False)[1]:
                bad.append('%s did not read what %s wrote' % (m, n))
        if not e2e.pattern_words(seed, off, 16384) == bytes(
                shm[off:off + 65536]):
            bad.append('the host did not read what %s wrote' % n)
    t.check('plain-share', not bad, '\n'.join(bad))
    off = 3 * MIB
    shm[off:off + 65536] = e2e.pattern_words(44, off, 16384)
    bad = [n for n, d in doms.items() if 'verify: ok' not in d.tool(
        'verify %d 65536 44' % off, check=False)[1]]
    t.check('plain-host', not bad, 'not read by %s' % bad)

    hotplug(t, s, pa)

    # A peer cannot migrate: libvirt's save must fail, the guest go on.
    r = s.lv.virsh('save', pc.domain, os.path.join(s.dir, 'pc.save'),
                   check=False, timeout=300)
    rc, _ = pc.run('true', check=False)
    t.check('peer-save', r.returncode != 0 and pc.alive() and rc == 0,
            'virsh save: rc %d: %s' % (r.returncode, r.stdout),
            note=r.stdout.splitlines()[-1][:160] if r.stdout else '')

    # A master's region travels in the save file: remove the object while
    # the domain is saved; the restored guest and the host (mapping the
    # object the restored QEMU created) read what it wrote before.
    pb.tool('write %d 65536 77' % (2 * MIB))
    save = os.path.join(s.dir, 'pb.save')
    t0 = time.time()
    pb.save(save)
    saved = not pb.alive()
    os.unlink('/dev/shm/' + name)
    pb.restore(save)
    took = time.time() - t0
    out = pb.tool('verify %d 65536 77' % (2 * MIB), check=False)[1]
    host_ok = False
    try:
        with open('/dev/shm/' + name, 'rb') as f:
            f.seek(2 * MIB)
            host_ok = f.read(65536) == e2e.pattern_words(77, 2 * MIB, 16384)
    except OSError as err:
        out += '\n%s' % err
    t.check('master-save', saved and 'verify: ok' in out and host_ok,
            'saved: %s; guest: %s; host read it back: %s'
            % (saved, out, host_ok),
            note='save+restore %.1f s, %d MiB save file'
            % (took, os.path.getsize(save) // MIB))
    shm.close()


def hotplug(t, s, g):
    """Attach/detach cycles of both models on domain G."""
    name = s.shm_name('hotplug')
    shm = s.shm_object(name, 4 * MIB)
    shm[0:65536] = e2e.pattern_words(55, 0, 16384)
    srv = s.server(vectors=1, size='4M')
    host = s.hostpeer(srv)
    plain_xml = os.path.join(s.dir, 'hp-plain.xml')
    with open(plain_xml, 'w') as f:
        f.write(lve.shmem_plain(name, 4))
    db_xml = os.path.join(s.dir, 'hp-doorbell.xml')
    with open(db_xml, 'w') as f:
        f.write(lve.shmem_doorbell('hp-doorbell', srv.sock, 1))
    before = g.fd_count()
    base = guest_devices(g)
    problems = {'plain': [], 'doorbell': []}
    for cycle in range(CYCLES):
        for model, xml, shname in (('plain', plain_xml, name),
                                   ('doorbell', db_xml, 'hp-doorbell')):
            p = problems[model]
            joins = len([e for e in host.events if e[0] == 'join'])
            s.lv.virsh('attach-device', g.domain, xml, '--live')
            new = wait_until(lambda: guest_devices(g) - base, 30)
            if len(new) != 1:
                p.append('cycle %d: guest devices %s after attach'
                         % (cycle, new))
                raise e2e.E2EError('; '.join(p))
            dev = '/dev/' + new.pop()
            info = g.info(dev)
            if model == 'plain':
                out = g.tool('-d %s verify 0 65536 55' % dev, check=False)[1]
                if info.get('irq') != 'none' or 'verify: ok' not in out:
                    p.append('cycle %d: %s %s' % (cycle, info, out))
            else:
                joined = host.wait_for(lambda: len(
                    [e for e in host.events if e[0] == 'join']) > joins, 20)
                ids = [str(e[1]) for e in host.events if e[0] == 'join']
                if info.get('irq') != 'msix' or not joined or \
                        info.get('id') != ids[-1]:
                    p.append('cycle %d: %s, joins seen by a host peer: %s'
                             % (cycle, info, ids))
            s.lv.virsh('detach-device', g.domain, xml, '--live')
            gone = wait_until(lambda: "name='%s'" % shname
                              not in g.live_xml(), 30)
            gone_guest = wait_until(lambda: guest_devices(g) == base, 30)
            if not gone or not gone_guest:
                p.append('cycle %d: after detach: in libvirt XML: %s, '
                         'guest devices %s'
                         % (cycle, not gone, guest_devices(g)))
                raise e2e.E2EError('; '.join(p))
            if model == 'doorbell':
                left = host.wait_for(lambda: len(
                    [e for e in host.events if e[0] == 'leave']) > cycle,
                    20)
                if not left:
                    p.append('cycle %d: the server did not announce the '
                             'departure: %s' % (cycle, host.events))
    t.check('hotplug-plain', not problems['plain'],
            '\n'.join(problems['plain']))
    t.check('hotplug-doorbell', not problems['doorbell'],
            '\n'.join(problems['doorbell']))
    # libvirt removes the object or chardev after DEVICE_DELETED.
    after = wait_until(lambda: g.fd_count() == before and before,
                       10) or g.fd_count()
    t.check('hotplug-fds', after == before,
            'fds before %d, after %d: %s' % (before, after, sorted(
                os.readlink('/proc/%d/fd/%s' % (g.pid, f))
                for f in os.listdir('/proc/%d/fd' % g.pid))),
            note='%d before, %d after %d cycles of each model'
            % (before, after, CYCLES))
    shm.close()


def scenario_doorbell(t, s):
    srv = s.server(vectors=2, size='4M')
    doms = [s.domain(n, [lve.shmem_doorbell('doorbell', srv.sock, 2)])
            for n in ('da', 'db')]
    boot(doms)
    da, db = doms
    ia, ib = da.info(), db.info()
    t.check('doorbell-setup', all(
        i.get('irq') == 'msix' and i.get('vectors') == '2' and
        i.get('size') == str(4 * MIB) for i in (ia, ib)) and
        ia.get('id') != ib.get('id'), '%s\n%s' % (ia, ib))
    db.start('ivshmem-guest wait 30000')
    db.expect(rb'wait: ready', 30)
    da.tool('put 8192 "hello db, from da"')
    da.tool('ring %s 1' % ib['id'])
    rc, out = db.finish(60)
    msg = db.tool('get 8192', check=False)[1]
    t.check('doorbell-message', rc == 0 and 'vector=1' in out and
            msg == 'hello db, from da', '%s\n%s' % (out, msg))
    bad = []
    for src, dst, dst_id in ((da, db, ib['id']), (db, da, ia['id'])):
        c0 = irq_count(dst)
        for i in range(3):
            dst.start('ivshmem-guest wait 30000')
            dst.expect(rb'wait: ready', 30)
            src.tool('ring %s %d' % (dst_id, i % 2))
            rc, out = dst.finish(60)
            if rc or 'vector=%d' % (i % 2) not in out:
                bad.append('%s ring %d: %s' % (dst.name, i, out))
        time.sleep(1)   # a duplicate would show by now
        delta = irq_count(dst) - c0
        if delta != 3:
            bad.append('%s: %d interrupts for 3 rings' % (dst.name, delta))
    t.check('doorbell-ring', not bad, '\n'.join(bad))


def run_label(label, emulator, lv, image, files, accel):
    t = Checker(label)
    for sname, fn, cids in (('plain', scenario_plain, PLAIN_CHECKS),
                            ('doorbell', scenario_doorbell,
                             DOORBELL_CHECKS)):
        if sname not in wanted_scenarios:
            for cid in cids:
                t.skip(cid, 'scenario %s not selected' % sname)
            continue
        started = time.time()
        s = lve.LVSession(lv, emulator, accel, image, files)
        try:
            fn(t, s)
        except Exception as err:    # report, show the logs, go on
            detail = '%s: %s' % (type(err).__name__, err)
            if not isinstance(err, e2e.E2EError):
                detail += '\n' + traceback.format_exc()
            t.abort(cids, detail)
            s.dump_logs()
        s.close()
        times[label, sname] = time.time() - started
        print('# [%s] %s took %.1f s' % (label, sname, times[label, sname]),
              flush=True)
    return t


def stock_problem():
    if not os.access(STOCK, os.X_OK):
        return '%s is not installed (tools/deps.sh installs it)' % STOCK
    out = subprocess.run([STOCK, '--version'], stdout=subprocess.PIPE,
                         timeout=60).stdout.decode()
    if 'version 10.0.2' not in out:
        return '%s is not 10.0.2: %s' % (STOCK, out.splitlines()[0])
    return None


def main():
    global wanted_scenarios
    args = sys.argv[1:]
    wanted = [a for a in args if a in LABELS] or list(LABELS)
    wanted_scenarios = [a for a in args if a not in LABELS] or [
        'plain', 'doorbell']
    t0 = time.time()
    print('1..%d' % (len(CHECKS) * len(LABELS)), flush=True)
    setup_error = None
    lv = files = None
    try:
        if os.geteuid() != 0:
            raise PermissionError('not root')
        image = e2e.build_image()
        ours = e2e.qemu_binary()
        accel = e2e.probe_accel(image)
        lv = lve.Libvirt()
        files = lve.guest_files(image)
        print('# libvirt %s, guest image %s, accelerator %s'
              % (lv.version, image, accel), flush=True)
    except PermissionError:
        setup_error = 'skip: libvirt\'s system instance needs root'
    except (e2e.E2EError, OSError, subprocess.SubprocessError) as err:
        setup_error = 'libvirt set-up failed: %s' % err
    try:
        for label in LABELS:
            t = Checker(label)
            if setup_error:
                if setup_error.startswith('skip: '):
                    t.skip_all(setup_error[6:])
                else:
                    t.abort([c for c, _ in CHECKS], setup_error)
                continue
            if label not in wanted:
                t.skip_all('not selected (%s)' % ' '.join(wanted))
                continue
            emulator = ours if label == 'ours' else STOCK
            why = stock_problem() if label == 'stock' else None
            if why:
                t.skip_all(why)
                continue
            print('# [%s] <emulator> %s' % (label, emulator), flush=True)
            run_label(label, emulator, lv, image, files, accel)
    finally:
        e2e._cleanup_all()
        if files:
            subprocess.run(['rm', '-rf', files['dir']])
        if lv:
            lv.close()
    print('# matrix (check: ours / stock; seconds per scenario below)')
    for cid, _ in CHECKS:
        print('#   %-17s %-5s / %s' % (cid, matrix.get(('ours', cid), '-'),
                                       matrix.get(('stock', cid), '-')))
    for sname in ('plain', 'doorbell'):
        print('#   time %-12s %s' % (sname, ' / '.join(
            '%.0f s' % times[(lb, sname)] if (lb, sname) in times else '-'
            for lb in LABELS)))
    if boot_times:
        print('# %d guest boots (virsh create to shell): %.1f s to %.1f s, '
              'median %.1f s' % (len(boot_times), min(boot_times),
                                 max(boot_times),
                                 sorted(boot_times)[len(boot_times) // 2]))
    print('# libvirt e2e total %.1f s' % (time.time() - t0))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
