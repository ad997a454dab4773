#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Run the e2e driver scenarios on one guest kernel and record the TAP as
JSON under guest/results/ (the evidence the README's figures come from).

    guest/driver-results.py 6.1|6.12 [OUT.json]
    guest/driver-results.py --report FILE...   print the summary lines
    guest/driver-results.py --from-tap TAP KERNEL OUT.json NOTE
        record a run made elsewhere (e.g. a tree with the old driver)
"""

import json
import os
import re
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ['driver', 'driver-race', 'newer-kernel']


def parse_tap(text):
    """TAP lines -> list of {n, ok, name, skip, detail}."""
    tests = []
    for line in text.splitlines():
        m = re.match(r'(not )?ok (\d+) - (.*?)(?: # SKIP (.*))?$', line)
        if m:
            tests.append({'n': int(m.group(2)), 'ok': not m.group(1),
                          'name': m.group(3), 'skip': m.group(4),
                          'detail': []})
        elif line.startswith('# ') and tests:
            tests[-1]['detail'].append(line[2:])
    return tests


def summary(tests):
    return {'total': len(tests),
            'passed': sum(t['ok'] and not t['skip'] for t in tests),
            'failed': sum(not t['ok'] for t in tests),
            'skipped': sum(bool(t['skip']) for t in tests),
            'tests': tests}


def from_tap(tap_path, kernel, out, note):
    with open(tap_path) as f:
        tap = f.read()
    image = re.search(r'# guest image (\S+), accelerator (\w+)', tap)
    result = {'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
              'kernel': kernel, 'accel': image.group(2) if image else
              'unknown', 'note': note,
              'cases': re.findall(r'# (\S+) took', tap)}
    result.update(summary(parse_tap(tap)))
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    print(report(out))
    return 0


def report(path):
    with open(path) as f:
        r = json.load(f)
    return ('%s: guest kernel %s, %s: %d of %d passed, %d skipped (%s)'
            % (os.path.basename(path), r['kernel'], r['accel'], r['passed'],
               r['total'], r['skipped'], ' '.join(r['cases'])))


def main():
    args = sys.argv[1:]
    if len(args) == 5 and args[0] == '--from-tap':
        return from_tap(*args[1:])
    if args and args[0] == '--report':
        for path in args[1:]:
            print(report(path))
        return 0
    if not args or args[0] not in ('6.1', '6.12'):
        print('usage: %s 6.1|6.12 [OUT.json] | --report FILE...'
              % sys.argv[0], file=sys.stderr)
        return 2
    kernel = args[0]
    out = args[1] if len(args) > 1 else os.path.join(
        TOP, 'guest', 'results', 'driver-%s-%s.json'
        % (kernel, time.strftime('%Y-%m-%d')))
    env = dict(os.environ, GUEST_KERNEL=kernel)
    started = time.time()
    run = subprocess.run([os.path.join(TOP, 'e2e', 'tests.py')] + CASES,
                         env=env, stdout=subprocess.PIPE, check=False)
    tap = run.stdout.decode(errors='replace')
    image = re.search(r'# guest image (\S+), accelerator (\w+)', tap)
    try:
        with open(os.path.join(image.group(1), 'packages')) as f:
            kpkg = [p for p in f.read().split() if
                    p.startswith('linux-image-')][0]
    except (AttributeError, OSError, IndexError):
        kpkg = 'unknown'
    tests = parse_tap(tap)
    result = {
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'kernel': kpkg, 'accel': image.group(2) if image else 'unknown',
        'cases': CASES, 'exit': run.returncode,
        'seconds': round(time.time() - started, 1),
    }
    result.update(summary(tests))
    with open(out, 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')
    print(tap, end='')
    print(report(out))
    return run.returncode


if __name__ == '__main__':
    sys.exit(main())
