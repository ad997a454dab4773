# SPDX-License-Identifier: GPL-2.0-or-later
"""Turn bench results (results.json) into Markdown tables and gnuplot PNGs.

  report.py OUTDIR        reads OUTDIR/results.json and the raw samples
                          next to it; writes OUTDIR/summary.json (medians
                          and ratios added), OUTDIR/results.md, rtt.png and
                          join.png; prints the Markdown on stdout.
"""

import glob
import json
import os
import shutil
import statistics
import subprocess
import sys

VARIANTS = ('ours', 'ref')
LAT_KEYS = ('min', 'p50', 'p99', 'max')
CONFIG_NAMES = {
    'v1-ioeventfd-on': 'doorbell, vectors=1, ioeventfd=on',
    'v1-ioeventfd-off': 'doorbell, vectors=1, ioeventfd=off',
    'v4-ioeventfd-on': 'doorbell, vectors=4, ioeventfd=on',
    'v4-ioeventfd-off': 'doorbell, vectors=4, ioeventfd=off',
}


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get('ok') and key in r]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def fmt(v, digits=1):
    if v is None:
        return '-'
    if isinstance(v, str):
        return v
    return '%.*f' % (digits, v)


def latency_summary(per_variant):
    """{'ours': [runs], 'ref': [runs]} -> medians, ratios, lost, runs."""
    out = {}
    for v in VARIANTS:
        runs = per_variant.get(v, [])
        out[v] = {k: median_of(runs, k) for k in LAT_KEYS}
        out[v]['lost'] = sum(r.get('lost', 0) for r in runs)
        out[v]['runs'] = len(runs)
        out[v]['runs_ok'] = sum(1 for r in runs if r.get('ok'))
    out['ratio'] = {k: ratio(out['ours'][k], out['ref'][k])
                    for k in LAT_KEYS}
    return out


def summarize(res):
    summ = {'date': res['date'], 'machine': res['machine'],
            'load_start': res.get('load_start'),
            'load_end': res.get('load_end'),
            'duration_s': res.get('duration_s'), 'accel': res.get('accel'),
            'settings': res['settings'], 'binaries': res['binaries']}
    if res.get('doorbell'):
        summ['doorbell'] = {t: latency_summary(r)
                            for t, r in res['doorbell'].items()}
    if res.get('polling'):
        summ['polling'] = latency_summary(res['polling'])
    if res.get('bandwidth'):
        bw = {}
        for v in VARIANTS:
            runs = res['bandwidth'][v]
            bw[v] = {k: statistics.median(r[k] for r in runs)
                     for k in ('write_MBps', 'read_MBps')}
            bw[v]['verified_runs'] = sum(
                1 for r in runs if r['readback_ok'] and r['peer_verified'])
            bw[v]['runs'] = len(runs)
        bw['ratio'] = {k: ratio(bw['ours'][k], bw['ref'][k])
                       for k in ('write_MBps', 'read_MBps')}
        summ['bandwidth'] = bw
    if res.get('join'):
        js = {}
        for key, j in res['join'].items():
            e = {'peers': j['peers'], 'vectors': j['vectors']}
            for v in VARIANTS:
                runs = j.get(v, [])
                ok = [r for r in runs if r['ok']]
                if ok and len(ok) == len(runs):
                    e[v] = {k: statistics.median(r[k] for r in ok)
                            for k in ('seconds', 'cpu_s',
                                      'rss_kib_per_peer', 'fds_per_peer')}
                    e[v]['runs'] = len(runs)
                else:
                    bad = [r for r in runs if not r['ok']]
                    e[v] = {'failed': bad[0]['error'] if bad else 'no runs',
                            'runs': len(runs), 'runs_ok': len(ok)}
            e['ratio'] = ratio(e['ours'].get('seconds'),
                               e['ref'].get('seconds'))
            js[key] = e
        summ['join'] = js
        summ['sustained'] = res.get('sustained')
    if res.get('host_floor'):
        summ['host_floor'] = {
            m: {k: median_of(runs, k) for k in LAT_KEYS}
            for m, runs in res['host_floor'].items()}
    return summ


def lat_row(name, s):
    o, f, r = s['ours'], s['ref'], s['ratio']
    cells = [name] + [fmt(o[k]) for k in LAT_KEYS] + \
        [fmt(f[k]) for k in LAT_KEYS] + \
        [fmt(r['p50'], 2), fmt(r['p99'], 2),
         '%d / %d' % (o['lost'], f['lost'])]
    return '| ' + ' | '.join(cells) + ' |'


def markdown(summ):
    st = summ['settings']
    m = summ['machine']
    lines = ['# ivshmem benchmarks: ours vs reference (%s)' % summ['date'],
             '',
             'Machine: %s, %d CPUs, %s GiB, Linux %s; load average %.1f at '
             'start, %.1f at end; %d s. Guests under %s. Ours: the series '
             'over %s, our ivshmem-server; reference: %s with the '
             'ivshmem-server built from the same source. '
             'Medians of %d runs (ours and reference interleaved); %d '
             'doorbell and %d polling round trips a run.'
             % (m['cpu'], m['cpus'], m['mem_gib'], m['kernel'],
                summ['load_start'] or 0, summ['load_end'] or 0,
                summ['duration_s'] or 0,
                (summ.get('accel') or '-').upper(),
                summ['binaries']['ours']['qemu_version'].replace(
                    'QEMU emulator version ', 'QEMU '),
                summ['binaries']['ref']['qemu_version'], st['reps'],
                st['doorbell_count'], st['polling_count']), '']
    if summ.get('doorbell') or summ.get('polling') or summ.get('host_floor'):
        lines += ['## Round trips (µs)', '',
                  '| scenario | ours min | ours p50 | ours p99 | ours max '
                  '| ref min | ref p50 | ref p99 | ref max | p50 ours/ref '
                  '| p99 ours/ref | lost doorbells ours / ref |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:'
                  '|---:|']
        for tag, s in summ.get('doorbell', {}).items():
            lines.append(lat_row(CONFIG_NAMES.get(tag, tag), s))
        if summ.get('polling'):
            lines.append(lat_row('shared-memory polling', summ['polling']))
        for mode, s in summ.get('host_floor', {}).items():
            name = {'eventfd': 'host floor: eventfd ping-pong',
                    'cacheline': 'host floor: shared cache line'}[mode]
            cells = [name] + [fmt(s[k], 2) for k in LAT_KEYS] + [''] * 7
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    if summ.get('bandwidth'):
        bw = summ['bandwidth']
        lines += ['## Guest memcpy bandwidth, BAR2 (MB/s)', '',
                  '| direction | ours | ref | ours/ref |', '|---|---:|---:|---:|']
        for k, name in (('write_MBps', 'write into BAR2'),
                        ('read_MBps', 'read back from BAR2')):
            lines.append('| %s | %s | %s | %s |' % (
                name, fmt(bw['ours'][k], 0), fmt(bw['ref'][k], 0),
                fmt(bw['ratio'][k], 2)))
        lines.append('| data verified by the peer (runs) | %d/%d | %d/%d | |'
                     % (bw['ours']['verified_runs'], bw['ours']['runs'],
                        bw['ref']['verified_runs'], bw['ref']['runs']))
        lines.append('')
    if summ.get('join'):
        lines += ['## Server: joins', '',
                  '| peers | -n | ours: time (s) | ref: time (s) | '
                  'ours/ref | ours: CPU (s) | ref: CPU (s) | '
                  'ours: RSS/peer (KiB) | ref: RSS/peer (KiB) | '
                  'ours: fds/peer | ref: fds/peer |',
                  '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
        rows = sorted(summ['join'].values(),
                      key=lambda e: (e['vectors'], e['peers']))
        for e in rows:
            o, f = e['ours'], e['ref']

            def cell(d, k, digits):
                if 'failed' in d:
                    return 'FAIL' if k == 'seconds' else '-'
                return fmt(d[k], digits)
            lines.append('| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s '
                         '| %s |' % (
                             e['peers'], e['vectors'],
                             cell(o, 'seconds', 4), cell(f, 'seconds', 4),
                             fmt(e['ratio'], 2), cell(o, 'cpu_s', 2),
                             cell(f, 'cpu_s', 2),
                             cell(o, 'rss_kib_per_peer', 1),
                             cell(f, 'rss_kib_per_peer', 1),
                             cell(o, 'fds_per_peer', 2),
                             cell(f, 'fds_per_peer', 2)))
        fails = ['%s -n %d at %d peers: %s' % (v, e['vectors'], e['peers'],
                                               e[v]['failed'])
                 for e in rows for v in VARIANTS
                 if 'failed' in e[v] and not
                 e[v]['failed'].startswith('skipped')]
        lines.append('')
        if fails:
            lines += ['FAIL: ' + '; '.join(fails) + '. Larger counts are '
                      'skipped for a server after its first failure.', '']
        sus = summ.get('sustained') or {}
        if sus:
            def s_text(d):
                if d['capped']:
                    return '≥ %d (search cap)' % d['peers']
                return '%d (fails at %d)' % (d['peers'], d['first_fail'])
            lines += ['Largest peer count that joins completely with -n 1 '
                      '(stall: no message for %g s): ours %s, reference %s.'
                      % (st['join_stall_s'], s_text(sus['ours']),
                         s_text(sus['ref'])), '']
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# Plots

def write_cdf(samples, path):
    s = sorted(samples)
    n = len(s)
    with open(path, 'w') as f:
        for i, x in enumerate(s):
            f.write('%g %g\n' % (x, (i + 1) / n))


def pooled(outdir, pattern):
    vals = []
    for p in sorted(glob.glob(os.path.join(outdir, pattern))):
        vals += [float(x) for x in open(p).read().split()]
    return vals


def plots(outdir, summ):
    if not shutil.which('gnuplot'):
        print('report: gnuplot missing, no plots', file=sys.stderr)
        return
    pdir = os.path.join(outdir, 'plot')
    os.makedirs(pdir, exist_ok=True)
    left, right = [], []
    colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728']
    for i, tag in enumerate(summ.get('doorbell', {})):
        for v in VARIANTS:
            vals = pooled(outdir, 'doorbell-%s-%s-*.dat' % (tag, v))
            if not vals:
                continue
            path = os.path.join(pdir, 'cdf-%s-%s.dat' % (tag, v))
            write_cdf(vals, path)
            left.append("'%s' w l lw 2 dt %d lc rgb '%s' t '%s %s'" % (
                path, 1 if v == 'ours' else 2, colors[i % 4], v,
                tag.replace('-ioeventfd-', ' ioeventfd=')))
    extra = [('polling-ours-*.dat', 'ours polling', 1, colors[0]),
             ('polling-ref-*.dat', 'ref polling', 2, colors[0]),
             ('floor-eventfd-*.dat', 'host eventfd', 1, colors[3]),
             ('floor-cacheline-*.dat', 'host cache line', 1, colors[2])]
    for pat, title, dt, color in extra:
        vals = pooled(outdir, pat)
        if vals:
            path = os.path.join(pdir, 'cdf-' + pat.split('*')[0] + 'all.dat')
            write_cdf(vals, path)
            right.append("'%s' w l lw 2 dt %d lc rgb '%s' t '%s'"
                         % (path, dt, color, title))
    script = ["set terminal pngcairo size 1400,560 font 'sans,10'",
              "set output '%s'" % os.path.join(outdir, 'rtt.png'),
              'set multiplot layout 1,2',
              'set logscale x', 'set grid', "set ylabel 'fraction of round trips'",
              "set xlabel 'round trip (µs, log scale)'",
              'set key bottom right', 'set yrange [0:1]']
    if left:
        script += ["set title 'Doorbell round trip between two guests: CDF'",
                   'plot ' + ', '.join(left)]
    if right:
        script += ["set title 'Polling round trip (guests) and host floor: "
                   "CDF'", 'plot ' + ', '.join(right)]
    script.append('unset multiplot')
    if left or right:
        run_gnuplot(script, pdir, 'rtt.gp')

    curves = []
    for v in VARIANTS:
        for n in summ.get('settings', {}).get('join_vectors', []):
            pts = [(e['peers'], e[v]['seconds'])
                   for e in (summ.get('join') or {}).values()
                   if e['vectors'] == n and 'seconds' in e[v]]
            if not pts:
                continue
            path = os.path.join(pdir, 'join-%s-n%d.dat' % (v, n))
            with open(path, 'w') as f:
                for p, t in sorted(pts):
                    f.write('%d %g\n' % (p, t))
            curves.append("'%s' w lp lw 2 pt 7 dt %d t '%s -n %d'" % (
                path, 1 if v == 'ours' else 2, v, n))
    if curves:
        run_gnuplot([
            "set terminal pngcairo size 800,560 font 'sans,10'",
            "set output '%s'" % os.path.join(outdir, 'join.png'),
            'set logscale xy', 'set grid', 'set key top left',
            "set title 'Server: time for N peers to join (median; missing "
            "points failed)'",
            "set xlabel 'peers'", "set ylabel 'seconds'",
            'plot ' + ', '.join(curves)], pdir, 'join.gp')


def run_gnuplot(script, pdir, name):
    path = os.path.join(pdir, name)
    with open(path, 'w') as f:
        f.write('\n'.join(script) + '\n')
    r = subprocess.run(['gnuplot', path], stderr=subprocess.PIPE)
    if r.returncode:
        print('report: gnuplot %s failed: %s' % (name, r.stderr.decode()),
              file=sys.stderr)


def main():
    outdir = sys.argv[1]
    res = json.load(open(os.path.join(outdir, 'results.json')))
    summ = summarize(res)
    summ['runs'] = res
    with open(os.path.join(outdir, 'summary.json'), 'w') as f:
        json.dump(summ, f, indent=1)
        f.write('\n')
    md = markdown(summ)
    with open(os.path.join(outdir, 'results.md'), 'w') as f:
        f.write(md + '\n')
    plots(outdir, summ)
    print(md)


if __name__ == '__main__':
    main()
