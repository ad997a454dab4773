#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Reproducer: a server that shrinks the shared memory after handing it out
# killed QEMU with SIGBUS on the guest's next BAR2 access (finding 2;
# fixed: QEMU now survives and reads zeroes there).
# Usage: shm-shrink-sigbus.py QEMU_BINARY   (exit 1: QEMU died)
import os, socket, struct, subprocess, sys, tempfile, time

d = tempfile.mkdtemp()
path = os.path.join(d, 'fake.sock')
ls = socket.socket(socket.AF_UNIX)
ls.bind(path)
ls.listen(1)
qt_path = os.path.join(d, 'qtest.sock')
qs = socket.socket(socket.AF_UNIX)
qs.bind(qt_path)
qs.listen(1)
qemu = subprocess.Popen([sys.argv[1], '-M', 'pc', '-accel', 'qtest',
                         '-display', 'none', '-nodefaults',
                         '-qtest', 'unix:' + qt_path,
                         '-qtest-log', '/dev/null',
                         '-chardev', 'socket,path=%s,id=c' % path,
                         '-device', 'ivshmem-doorbell,chardev=c,addr=4'])
conn, _ = ls.accept()
shm = os.memfd_create('shm')
os.ftruncate(shm, 1 << 20)
for value, fd in [(0, None), (1, None), (-1, shm), (1, os.eventfd(0))]:
    data = struct.pack('<q', value)
    if fd is None:
        conn.sendall(data)
    else:
        socket.send_fds(conn, [data], [fd])
qt, _ = qs.accept()
f = qt.makefile('rw')
def cmd(c):
    f.write(c + '\n'); f.flush(); return f.readline().strip()
# BAR2 (64-bit) at 0xe0000000, memory decode on
for off, val in ((0x18, 0xe000000c), (0x1c, 0), (0x04, 2)):
    cmd('outl 0xcf8 0x%x' % (0x80000000 | 4 << 11 | off))
    cmd('outl 0xcfc 0x%x' % val)
print('before shrink:', cmd('readl 0xe0008000'))
os.ftruncate(shm, 4096)                 # the server shrinks it
print('after shrink:', cmd('readl 0xe0008000'))
time.sleep(0.5)
rc = qemu.poll()
print('QEMU', 'died, rc %s' % rc if rc is not None else 'survived')
qemu.kill()
sys.exit(1 if rc is not None else 0)
