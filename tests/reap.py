#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
# Run a suite as a child subreaper and report the processes it leaves behind.
"""Usage: reap.py LEFTOVERS-FILE COMMAND [ARG...]

Runs COMMAND in its own session with this process as the child subreaper
(prctl PR_SET_CHILD_SUBREAPER): every process COMMAND starts, daemons
included (they double-fork and setsid, but orphans are reparented to the
nearest subreaper, not to init), stays below this process.  When COMMAND
exits, processes that are still there after a 3 s grace period are
written to LEFTOVERS-FILE ("PID CMDLINE" a line), killed with SIGKILL and
reaped.  Exits with COMMAND's status; the file is empty when nothing was
left.
"""
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def children(me):
    """PIDs whose parent is @me (our own children, orphans included)."""
    out = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parens
        fields = stat[stat.rindex(')') + 2:].split()
        if int(fields[1]) == me and fields[0] != 'Z':
            out.append(int(name))
    return out


def cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return '?'


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main():
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    leftovers_file = sys.argv[1]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write('reap.py: prctl(PR_SET_CHILD_SUBREAPER): %s\n'
                         % os.strerror(ctypes.get_errno()))
        return 2
    pid = os.fork()
    if pid == 0:
        os.setsid()
        try:
            os.execvp(sys.argv[2], sys.argv[2:])
        except OSError as e:
            sys.stderr.write('reap.py: %s: %s\n' % (sys.argv[2], e))
            os._exit(127)

    # The runner's own timeout or ^C: pass it on, then go on waiting.
    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        if got == pid:
            break
    rc = os.waitstatus_to_exitcode(status)
    if rc < 0:
        rc = 128 - rc

    # Processes that exit on their own within the grace period are fine.
    me = os.getpid()
    end = time.monotonic() + 3
    left = children(me)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        reap_zombies()
        left = children(me)
    seen = []
    for _ in range(50):         # killed parents hand their children to us
        if not left:
            break
        for p in left:
            if p not in [s[0] for s in seen]:
                seen.append((p, cmdline(p)))
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
        reap_zombies()
        left = children(me)
    with open(leftovers_file, 'w') as f:
        for p, cmd in seen:
            f.write('%d %s\n' % (p, cmd[:300]))
        for p in left:
            f.write('%d %s (survives SIGKILL)\n' % (p, cmdline(p)[:300]))
    return rc


if __name__ == '__main__':
    sys.exit(main())
