#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The series as a record: each patch's size and what 80-series saw of it.

  tools/series-report.py TAP PATCHDIR > series.json

TAP is tests/suites/80-series' output, PATCHDIR the patches it checked
(out/series-check/export/patches).  For each patch: its subject, files
changed, lines added and removed (git's diffstat), checkpatch's total, the
build's seconds and the qtest run of that commit (whose qtest, cases
passed and skipped, seconds), as 80-series printed them.
"""

import json
import os
import re
import sys


def diffstat(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        text = f.read()
    subject = re.search(r'^Subject: \[PATCH[^\]]*\] (.*(?:\n [^\n]*)*)', text,
                        re.M).group(1).replace('\n ', ' ')
    m = re.search(r'^ (\d+) files? changed(?:, (\d+) insertions?\(\+\))?'
                  r'(?:, (\d+) deletions?\(-\))?', text, re.M)
    return {'subject': subject, 'files': int(m.group(1)),
            'insertions': int(m.group(2) or 0),
            'deletions': int(m.group(3) or 0)}


def main():
    tap, patchdir = sys.argv[1:3]
    patches = sorted(p for p in os.listdir(patchdir)
                     if p.endswith('.patch') and not p.startswith('0000-'))
    out = {'patches': [], 'checks': {'ok': 0, 'not_ok': 0}}
    for i, p in enumerate(patches, 1):
        d = {'number': i, 'file': p}
        d.update(diffstat(os.path.join(patchdir, p)))
        out['patches'].append(d)
    by_num = {d['number']: d for d in out['patches']}
    by_file = {d['file']: d for d in out['patches']}
    with open(tap) as f:
        for line in f:
            m = re.match(r'(not )?ok \d+ - (.*)', line)
            if m:
                out['checks']['not_ok' if m.group(1) else 'ok'] += 1
                if m.group(1):
                    continue
                text = m.group(2)
            elif line.startswith('# runtime '):
                out['runtime_s'] = int(line.split()[2])
                continue
            else:
                continue
            c = re.match(r'checkpatch (\S+): total: (\d+) errors, '
                         r'(\d+) warnings', text)
            if c and c.group(1) in by_file:
                by_file[c.group(1)]['checkpatch'] = {
                    'errors': int(c.group(2)), 'warnings': int(c.group(3))}
            b = re.match(r'commit (\d+) builds \((\d+) s\)', text)
            if b:
                by_num[int(b.group(1))]['build_s'] = int(b.group(2))
            q = re.match(r"commit (\d+) passes (.*?), unprivileged "
                         r"\((\d+) passed, (\d+) skipped, (\d+) s\)", text)
            if q:
                by_num[int(q.group(1))]['qtest'] = {
                    'which': q.group(2), 'passed': int(q.group(3)),
                    'skipped': int(q.group(4)), 'seconds': int(q.group(5))}
            u = re.match(r"upstream's ivshmem qtest .*passes on the last "
                         r"commit, unprivileged \((\d+) passed, (\d+) "
                         r"skipped, (\d+) s\)", text)
            if u:
                out['upstream_qtest_on_last'] = {
                    'passed': int(u.group(1)), 'skipped': int(u.group(2)),
                    'seconds': int(u.group(3))}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
