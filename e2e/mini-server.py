#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Minimal ivshmem server (protocol version 0) for runner development.

Not the product: the tests use contrib/ivshmem-server.  This one takes the
same flags (-F -v -S -M -l -n -p) so the runner can be brought up against
a stock QEMU before our server exists (IVSHMEM_SERVER=e2e/mini-server.py).
"""

import getopt
import os
import selectors
import socket
import struct
import sys


def size_arg(text):
    mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    if text[-1].upper() in mult:
        return int(text[:-1]) * mult[text[-1].upper()]
    return int(text)


def send(conn, value, fd=None):
    data = struct.pack('<q', value)
    if fd is None:
        conn.sendall(data)
    else:
        socket.send_fds(conn, [data], [fd])


def main():
    opts, _ = getopt.getopt(sys.argv[1:], 'FvS:M:m:l:n:p:')
    opts = dict(opts)
    path = opts.get('-S', '/tmp/ivshmem_socket')
    size = size_arg(opts.get('-l', '4M'))
    nvec = int(opts.get('-n', '1'))
    shm_fd = os.open('/dev/shm/' + opts.get('-M', 'ivshmem'),
                     os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(shm_fd, size)
    if '-p' in opts:
        with open(opts['-p'], 'w') as f:
            f.write('%d\n' % os.getpid())
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    lsock.bind(path)
    lsock.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    peers = {}                  # conn -> (id, [eventfds])
    next_id = 0
    while True:
        for key, _ in sel.select():
            if key.fileobj is lsock:
                conn, _ = lsock.accept()
                used = {p[0] for p in peers.values()}
                while next_id in used:
                    next_id += 1
                pid, next_id = next_id, next_id + 1
                fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(nvec)]
                send(conn, 0)
                send(conn, pid)
                send(conn, -1, shm_fd)
                for other, (oid, ofds) in peers.items():
                    for f in ofds:
                        send(conn, oid, f)
                    for f in fds:
                        send(other, pid, f)
                for f in fds:
                    send(conn, pid, f)
                peers[conn] = (pid, fds)
                sel.register(conn, selectors.EVENT_READ)
                print('peer %d joined' % pid, flush=True)
            else:
                conn = key.fileobj
                if conn.recv(64):
                    continue
                sel.unregister(conn)
                pid, fds = peers.pop(conn)
                conn.close()
                for f in fds:
                    os.close(f)
                for other in peers:
                    send(other, pid)
                print('peer %d left' % pid, flush=True)


if __name__ == '__main__':
    main()
