#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Reproducer: ivshmem-server frees a peer while its event is still pending.
# Usage: server-uaf-accept-reap.py SERVER_BINARY [WRAPPER...]
# (e.g. WRAPPER = valgrind -q --error-exitcode=99)  Exits 1 when the server
# crashed or valgrind reported an error, 0 when it survived.
import os, signal, socket, subprocess, sys, tempfile, time

d = tempfile.mkdtemp()
sock = os.path.join(d, 's')
cmd = sys.argv[2:] + [sys.argv[1], '-F', '-S', sock, '-m', d,
                      '-l', '1M', '-n', '1']
srv = subprocess.Popen(cmd, stderr=subprocess.PIPE)
while not os.path.exists(sock):
    time.sleep(0.05)
time.sleep(0.5)

def client():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)
    return c

b = client()
time.sleep(0.2)                  # B is set up
srv.send_signal(signal.SIGSTOP)  # both events land in one epoll batch:
c = client()                     # 1. the listen socket (C connects)
b.close()                        # 2. B's hang-up
time.sleep(0.2)
srv.send_signal(signal.SIGCONT)
time.sleep(1)
alive = srv.poll() is None
srv.terminate()
rc = srv.wait()
err = srv.stderr.read().decode(errors='replace')
print(err[-3000:])
bad = not alive or 'Invalid read' in err or 'ERROR: AddressSanitizer' in err
print('server', 'CRASHED/ERROR' if bad else 'survived', 'rc', rc)
sys.exit(1 if bad else 0)
