# SPDX-License-Identifier: GPL-2.0-or-later
"""Every published benchmark figure, generated from a results JSON.

  report.py OUTDIR
      reads OUTDIR/results.json (bench/bench.py); writes OUTDIR/results.md,
      OUTDIR/summary.json, rtt.png and join.png; prints the Markdown.
  report.py --json FILE [--plots PREFIX]
      prints the results page of FILE (bench/results/DATE.json); with
      --plots, writes PREFIX-rtt.png and PREFIX-join.png.
  report.py --readme README.md --json FILE
      replaces README.md's block between the "bench-table" markers with
      the table of FILE (--check: exit 1 if it differs instead).
  report.py --cover FILE
      the plain-text summary of FILE for the series' cover letter
      (tools/export-series.sh puts it in place of an "@bench-summary FILE@"
      line): ours against pristine 10.0.2, every configuration measured.
  report.py --stale-check README.md
      exit 1 unless the JSON README.md's table quotes measured the device
      and server files as they are in the tree (git blob hashes) with a
      harness commit that is in the repository.
  report.py --breakdown FILE [--readme BREAKDOWN.md [--check]]
      the traced round-trip breakdown (bench/breakdown.py's JSON): prints
      its page, or replaces BREAKDOWN.md's "breakdown" block.

The round-trip statistics are pooled over every round trip of every run
(raw samples are in the JSON); run-to-run noise is judged from the
per-run medians of interleaved runs: how often ours was slower than the
other side in the same interleaved round, and a two-sided sign test on
those counts.
"""

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys

LAT_KEYS = ('min', 'p50', 'p99', 'max')
CONFIG_NAMES = {
    'v1-ioeventfd-on': 'vectors=1, ioeventfd=on',
    'v1-ioeventfd-off': 'vectors=1, ioeventfd=off',
    'v4-ioeventfd-on': 'vectors=4, ioeventfd=on',
    'v4-ioeventfd-off': 'vectors=4, ioeventfd=off',
}
SIDE_NAMES = {
    'ours': 'ours',
    'pristine': 'pristine 10.0.2, our flags',
    'stock': "stock (Debian's binary)",
}
ALPHA = 0.05


# ---------------------------------------------------------------------------
# Statistics

def percentiles(samples):
    s = sorted(samples)
    n = len(s)
    if not n:
        return {k: None for k in LAT_KEYS + ('count',)}
    return {'min': s[0], 'p50': s[n // 2], 'p99': s[n * 99 // 100],
            'max': s[-1], 'count': n}


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def sign_test(slower, faster):
    """Two-sided sign test p-value for SLOWER vs FASTER (ties dropped)."""
    n = slower + faster
    if n == 0:
        return None
    k = min(slower, faster)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def compare(runs_a, runs_b, key, higher_is_better=False):
    """Interleaved rounds where both sides ran: A worse / better / tied."""
    by_rep = {r['rep']: r for r in runs_b if r.get('ok') and key in r}
    worse = better = tied = 0
    for r in runs_a:
        o = by_rep.get(r.get('rep'))
        if not r.get('ok') or o is None or key not in r:
            continue
        a, b = r[key], o[key]
        if higher_is_better:
            a, b = -a, -b
        if a > b:
            worse += 1
        elif a < b:
            better += 1
        else:
            tied += 1
    return {'worse': worse, 'better': better, 'tied': tied,
            'pairs': worse + better + tied, 'p': sign_test(worse, better)}


BOOT = 4000             # bootstrap resamples
TARGET = 0.10           # the interval half-width asked for: +-10 %


def paired_ratios(runs_a, runs_b, key):
    """A/B of KEY in every interleaved round where both ran."""
    by_rep = {r['rep']: r for r in runs_b
              if r.get('ok') and r.get(key)}
    return [r[key] / by_rep[r['rep']][key] for r in runs_a
            if r.get('ok') and r.get(key) is not None and
            r.get('rep') in by_rep]


def effect(ratios):
    """The median of the per-round ratios with a 95 % percentile
    bootstrap interval (rounds resampled with replacement; a fixed seed,
    so that the pages regenerate identically), its relative half-width
    and, when that is above TARGET, about how many rounds would narrow it
    to TARGET (the width shrinks as 1/sqrt(rounds))."""
    n = len(ratios)
    if n < 2:
        return None
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(ratios, k=n))
                  for _ in range(BOOT))
    est = statistics.median(ratios)
    lo, hi = meds[int(0.025 * BOOT)], meds[int(0.975 * BOOT) - 1]
    half = (hi - lo) / 2 / est if est else None
    e = {'median': est, 'lo': lo, 'hi': hi, 'n': n, 'half_width': half,
         'runs_for_target': None}
    if half is not None and half > TARGET:
        e['runs_for_target'] = int(math.ceil(n * (half / TARGET) ** 2))
    return e


def latency_summary(per_variant, variants):
    out = {}
    for v in variants:
        runs = per_variant.get(v, [])
        ok = [r for r in runs if r.get('ok')]
        pooled = []
        for r in ok:
            pooled += r.get('samples', [])
        out[v] = percentiles(pooled)
        p50s = [r['p50'] for r in ok]
        out[v].update(
            runs=len(runs), runs_ok=len(ok),
            lost=sum(r.get('lost', 0) for r in runs),
            run_p50_min=min(p50s) if p50s else None,
            run_p50_max=max(p50s) if p50s else None,
            load_min=min((r['load'] for r in runs if 'load' in r),
                         default=None),
            load_max=max((r['load'] for r in runs if 'load' in r),
                         default=None))
    out['vs'] = {}
    for other in variants[1:]:
        out['vs'][other] = {
            'p50': ratio(out[variants[0]]['p50'], out[other]['p50']),
            'p99': ratio(out[variants[0]]['p99'], out[other]['p99']),
            'runs_p50': compare(per_variant.get(variants[0], []),
                                per_variant.get(other, []), 'p50'),
            'effect': effect(paired_ratios(per_variant.get(variants[0], []),
                                           per_variant.get(other, []),
                                           'p50'))}
    if 'pristine' in variants and 'stock' in variants:
        out['build'] = {
            'p50': ratio(out['pristine']['p50'], out['stock']['p50']),
            'p99': ratio(out['pristine']['p99'], out['stock']['p99']),
            'runs_p50': compare(per_variant['pristine'],
                                per_variant['stock'], 'p50'),
            'effect': effect(paired_ratios(per_variant['pristine'],
                                           per_variant['stock'], 'p50'))}
    return out


def rate_summary(per_variant, variants):
    """Device-only rates (higher is better): per side the median of the
    runs' rates; ours against each side: ratio of the medians, paired
    rounds (ours slower = a lower rate) and the per-round ratio with its
    bootstrap interval."""
    out = {}
    for v in variants:
        runs = per_variant.get(v, [])
        ok = [r for r in runs if r.get('ok')]
        rates = [r['per_s'] for r in ok]
        loads = [r[k] for r in runs for k in ('load', 'load_end') if k in r]
        out[v] = {'median': statistics.median(rates) if rates else None,
                  'min': min(rates, default=None),
                  'max': max(rates, default=None),
                  'runs': len(runs), 'runs_ok': len(ok),
                  'lost': sum(r.get('lost', 0) for r in runs),
                  'load_min': min(loads, default=None),
                  'load_max': max(loads, default=None)}
    out['vs'] = {}
    pairs = [(variants[0], o) for o in variants[1:]]
    if 'pristine' in variants and 'stock' in variants:
        pairs.append(('pristine', 'stock'))
    for a, b in pairs:
        ra, rb = per_variant.get(a, []), per_variant.get(b, [])
        out['vs'][b if a == variants[0] else 'build'] = {
            'ratio': ratio(out[a]['median'], out[b]['median']),
            'runs': compare(ra, rb, 'per_s', True),
            'effect': effect(paired_ratios(ra, rb, 'per_s'))}
    return out


def bandwidth_summary(bw, variants):
    out = {}
    for v in variants:
        runs = bw.get(v, [])
        out[v] = {k: statistics.median(r[k] for r in runs) if runs else None
                  for k in ('write_MBps', 'read_MBps')}
        out[v]['verified_runs'] = sum(
            1 for r in runs if r['readback_ok'] and r['peer_verified'])
        out[v]['runs'] = len(runs)
    out['vs'] = {}
    for other in variants[1:]:
        out['vs'][other] = {
            k: ratio(out[variants[0]][k], out[other][k])
            for k in ('write_MBps', 'read_MBps')}
        for k in ('write_MBps', 'read_MBps'):
            runs = [dict(r, ok=True) for r in bw.get(variants[0], [])]
            oth = [dict(r, ok=True) for r in bw.get(other, [])]
            out['vs'][other]['runs_' + k] = compare(runs, oth, k, True)
            out['vs'][other]['effect_' + k] = effect(
                paired_ratios(runs, oth, k))
    return out


def join_summary(join, servers):
    js = {}
    for key, j in join.items():
        e = {'peers': j['peers'], 'vectors': j['vectors']}
        for v in servers:
            runs = j.get(v, [])
            ok = [r for r in runs if r['ok']]
            if ok and len(ok) == len(runs):
                e[v] = {k: statistics.median(r[k] for r in ok)
                        for k in ('seconds', 'cpu_s', 'rss_kib_per_peer',
                                  'fds_per_peer')}
                e[v]['runs'] = len(runs)
            else:
                bad = [r for r in runs if not r['ok']]
                e[v] = {'failed': bad[0]['error'] if bad else 'no runs',
                        'runs': len(runs), 'runs_ok': len(ok)}
        e['ratio'] = ratio(e[servers[0]].get('seconds'),
                           e[servers[1]].get('seconds'))
        js[key] = e
    return js


def variants_of(res):
    return tuple(res.get('variants', ('ours', 'ref')))


def servers_of(res):
    for j in (res.get('join') or {}).values():
        return tuple(v for v in variants_of(res) if v in j)
    return variants_of(res)[:2]


def summarize(res):
    variants = variants_of(res)
    summ = {k: res.get(k) for k in ('date', 'machine', 'load_start',
                                    'load_end', 'duration_s', 'accel',
                                    'settings', 'binaries', 'source',
                                    'load_over_limit')}
    summ['variants'] = variants
    if res.get('doorbell'):
        summ['doorbell'] = {t: latency_summary(r, variants)
                            for t, r in res['doorbell'].items()}
    if res.get('polling'):
        summ['polling'] = latency_summary(res['polling'], variants)
    if res.get('bandwidth'):
        summ['bandwidth'] = bandwidth_summary(res['bandwidth'], variants)
    for k in ('flood', 'deliver'):
        if res.get(k):
            summ[k] = {t: rate_summary(r, variants)
                       for t, r in res[k].items()}
    if res.get('join'):
        summ['servers'] = servers_of(res)
        summ['join'] = join_summary(res['join'], summ['servers'])
        summ['sustained'] = res.get('sustained')
    if res.get('host_floor'):
        summ['host_floor'] = {
            m: {k: statistics.median(r[k] for r in runs) for k in LAT_KEYS}
            for m, runs in res['host_floor'].items()}
    return summ


# ---------------------------------------------------------------------------
# Markdown

def fmt(v, digits=1):
    if v is None:
        return '-'
    if isinstance(v, str):
        return v
    if digits == 2 and 0 < abs(v) < 0.1:
        return '%.2g' % v           # a ratio far below 1: keep 2 digits
    return '%.*f' % (digits, v)


def us(v):
    """Round-trip figures: integer µs above 10, one decimal below."""
    if v is None:
        return '-'
    return '%.0f' % v if v >= 10 else '%.1f' % v


def fmt_p(p):
    if p is None:
        return '-'
    if p < 0.001:
        return '< 0.001'
    return '%.2f' % p if p >= 0.01 else '%.3f' % p


def runs_text(c, what='slower'):
    """'ours slower in 7 of 12 runs, faster in 4, tied in 1 (p 0.55)'."""
    if not c or not c['pairs']:
        return 'no paired runs'
    t = '%s in %d of %d runs, faster in %d, tied in %d' % (
        what, c['worse'], c['pairs'], c['better'], c['tied'])
    p = fmt_p(c['p'])
    return t + ', sign test p %s%s' % ('' if p[0] == '<' else '= ', p)


def effect_text(e):
    """'1.08 (0.95-1.20)': median per-round ratio, 95 % bootstrap CI;
    an interval wider than +-10 % is marked with its half-width."""
    if not e:
        return '-'
    t = '%s (%s-%s)' % (fmt(e['median'], 2), fmt(e['lo'], 2),
                        fmt(e['hi'], 2))
    if e['runs_for_target']:
        t += ' ±%.0f %%' % (100 * e['half_width'])
    return t


def wide_notes(items):
    """The comparisons whose interval is wider than +-10 %, in words."""
    out = []
    for label, e in items:
        if e and e['runs_for_target']:
            out.append('- %s: per-round ratio %s, 95 %% interval %s-%s '
                       '(±%.0f %%, %d rounds) is wider than ±%.0f %%: about '
                       '%d rounds would narrow it to ±%.0f %%.' % (
                           label, fmt(e['median'], 2), fmt(e['lo'], 2),
                           fmt(e['hi'], 2), 100 * e['half_width'], e['n'],
                           100 * TARGET, e['runs_for_target'],
                           100 * TARGET))
    return out


def rate(v):
    """A rate a second: 1234567 -> '1.23 M/s'."""
    if v is None:
        return '-'
    for div, unit in ((1e6, 'M'), (1e3, 'k')):
        if v >= div:
            return '%.3g %s/s' % (v / div, unit)
    return '%.3g /s' % v


def rate_cell(d):
    """A side's median rate, and how many of its runs failed if any."""
    t = rate(d['median'])
    if d['runs_ok'] < d['runs']:
        t += ' (%d of %d runs FAILED)' % (d['runs'] - d['runs_ok'],
                                         d['runs'])
    return t


RATE_NAMES = {
    'flood': 'doorbell writes a second, guest into a host peer that never '
             'reads',
    'deliver': 'vector deliveries a second, host peer into a guest',
}


def load_text(summ):
    t = '1-minute load average %.2f at start, %.2f at end' % (
        summ.get('load_start') or 0, summ.get('load_end') or 0)
    if summ.get('load_over_limit'):
        t += (' (**started above the load limit of %g: the machine was '
              'busy, these figures measure other work too**)'
              % summ['settings'].get('max_load', 0))
    return t


def verdict(c):
    """What the paired runs support: a consistent difference or not."""
    if not c or not c['pairs']:
        return 'no paired runs'
    if c['p'] is None:
        return 'no difference (every pair tied)'
    if c['p'] >= ALPHA:
        return 'no consistent difference'
    return 'consistently ' + ('slower' if c['worse'] > c['better']
                              else 'faster')


def header(summ):
    st = summ['settings']
    m = summ['machine']
    src = summ.get('source') or {}
    b = summ['binaries']
    names = ', '.join('%s: `%s`' % (v, b[v]['qemu_version'])
                      for v in summ['variants'])
    return [
        'Machine: %s, %d CPUs, %s GiB, Linux %s, shared with other work '
        '(%s; every run records its own); %d s in all. Guests under %s. '
        'Source and harness: commit `%s`%s, series/ as of `%s`%s. Sides: '
        '%s. Ours is the series; pristine is QEMU 10.0.2 '
        'without it, built with exactly our configure flags (so ours/'
        'pristine is the device, not the build); stock is Debian\'s '
        'qemu-system-x86 binary. Debian ships no ivshmem-server: stock '
        'runs with the pristine one, and the server rows compare ours with '
        'pristine. %d interleaved runs per configuration (every order of '
        'the sides in turn), %d doorbell and %d polling round trips a run.'
        % (m['cpu'], m['cpus'], m['mem_gib'], m['kernel'],
           load_text(summ),
           summ['duration_s'] or 0, (summ.get('accel') or '-').upper(),
           src.get('commit', '?')[:12],
           ' (with uncommitted changes in the harness)'
           if src.get('harness_dirty') else '',
           src.get('series_commit', '?')[:12] + ' ("' +
           src.get('series_commit', '? ?').split(' ', 1)[-1] + '")',
           ' (with uncommitted changes in series/)'
           if src.get('series_dirty') else '',
           names, st['reps'], st['doorbell_count'], st['polling_count']),
        '']


def latency_section(summ):
    variants = summ['variants']
    rows = list(summ.get('doorbell', {}).items())
    if summ.get('polling'):
        rows.append(('polling', summ['polling']))
    name = {t: ('shared-memory polling' if t == 'polling'
                else 'doorbell, ' + CONFIG_NAMES.get(t, t)) for t, _ in rows}
    lines = ['## Round trips (µs), pooled over every round trip of every run',
             '',
             '| scenario | side | min | p50 | p99 | max | round trips | '
             'per-run p50 range | lost | load average range |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for t, s in rows:
        for v in variants:
            d = s[v]
            lines.append('| %s | %s | %s | %s | %s | %s | %d | %s-%s | %d '
                         '| %s-%s |' % (
                             name[t], SIDE_NAMES.get(v, v), us(d['min']),
                             us(d['p50']), us(d['p99']), us(d['max']),
                             d['count'] or 0, us(d['run_p50_min']),
                             us(d['run_p50_max']), d['lost'],
                             fmt(d['load_min']), fmt(d['load_max'])))
    lines += ['', '## Comparisons', '',
              'Ratios of the pooled p50 and p99; "slower in k of n runs" '
              'compares the run medians of the sides within one '
              'interleaved round; the sign test says how likely so uneven '
              'a count would be if neither side were faster (p < %.2f: a '
              'consistent difference; otherwise it is within the '
              'run-to-run noise).' % ALPHA, '',
              '| scenario | comparison | p50 ratio | p99 ratio | per-round '
              'ratio of run p50s: median (95 % CI) | run medians '
              '| verdict |', '|---|---|---:|---:|---:|---|---|']
    wide = []
    for t, s in rows:
        comps = [('ours/' + o, s['vs'][o]) for o in variants[1:]]
        if 'build' in s:
            comps.append(('pristine/stock (build only)', s['build']))
        for label, c in comps:
            who = label.split('/')[0]
            lines.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                name[t], label, fmt(c['p50'], 2), fmt(c['p99'], 2),
                effect_text(c.get('effect')),
                runs_text(c['runs_p50'], who + ' slower'),
                verdict(c['runs_p50'])))
            wide.append(('%s, %s' % (name[t], label), c.get('effect')))
    lines.append('')
    lines += intervals_text(wide)
    return lines


def intervals_text(wide):
    notes = wide_notes(wide)
    if not notes:
        return []
    return ['Per-round ratio: the ratio of the two sides in each '
            'interleaved round, its median and a 95 %% bootstrap interval '
            '(rounds resampled, %d times); the rounds needed assume the '
            'width shrinks as 1/sqrt(rounds). Intervals wider than ±%.0f %%:'
            % (BOOT, 100 * TARGET), ''] + notes + ['']


def rate_section(summ):
    variants = summ['variants']
    lines = ['## Device-only rates (median of runs)', '',
             '`flood`: guest A rings a host peer (bench/vector-peer.c) in '
             'a tight loop for %g s through the driver; the peer never '
             'reads while it runs, then counts what arrived (lost = written '
             'but not arrived). `deliver`: the host peer writes guest A\'s '
             'vector 0 eventfd as fast as it can for %g s while the guest '
             'counts the interrupts its driver took (writes coalesce: the '
             'rate is what device and guest can take). Higher is better; '
             '"slower" means a lower rate.'
             % (summ['settings'].get('rate_seconds', 0),
                summ['settings'].get('rate_seconds', 0)), '',
             '| scenario | configuration | ' +
             ' | '.join(SIDE_NAMES.get(v, v) for v in variants) +
             ' | comparison | ratio of medians | per-round ratio: median '
             '(95 % CI) | paired runs | verdict | writes lost |',
             '|---|---|' + '---:|' * len(variants) + '---|---:|---:|---|---|---:|']
    wide = []
    for k in ('flood', 'deliver'):
        for t, s in (summ.get(k) or {}).items():
            comps = [('ours/' + o, s['vs'][o]) for o in variants[1:]]
            if 'build' in s['vs']:
                comps.append(('pristine/stock (build only)', s['vs']['build']))
            for i, (label, c) in enumerate(comps):
                cells = [k, CONFIG_NAMES.get(t, t)]
                cells += ([rate_cell(s[v]) for v in variants] if i == 0
                          else [''] * len(variants))
                cells += [label, fmt(c['ratio'], 2),
                          effect_text(c['effect']),
                          runs_text(c['runs'], label.split('/')[0] +
                                    ' slower'),
                          verdict(c['runs']),
                          ', '.join('%d' % s[v]['lost'] for v in variants)
                          if i == 0 and k == 'flood' else '']
                lines.append('| ' + ' | '.join(cells) + ' |')
                wide.append(('%s, %s, %s' % (k, CONFIG_NAMES.get(t, t),
                                             label), c['effect']))
    lines.append('')
    lines += intervals_text(wide)
    return lines



def rows_by_round(per, variants, cell):
    """(round, [cell of each side's run of that round, '-' if none])."""
    reps = sorted({r['rep'] for v in variants for r in per.get(v, [])
                   if 'rep' in r})
    for rep in reps:
        runs = [[x for x in per.get(v, []) if x.get('rep') == rep]
                for v in variants]
        yield rep, [cell(r[0]) if r else '-' for r in runs]

def per_run_section(res, summ):
    variants = summ['variants']
    lines = ['## Every run', '',
             'Per-run p50 / p99 in µs and the 1-minute load average when '
             'the run started (and ended, where recorded).', '',
             '| scenario | run | ' + ' | '.join(
                 '%s p50 / p99 (load)' % v for v in variants) + ' |',
             '|---|---:|' + '---:|' * len(variants)]
    sets = list((res.get('doorbell') or {}).items())
    if res.get('polling'):
        sets.append(('polling', res['polling']))
    for t, per in sets:
        for rep, cells in rows_by_round(per, variants, lambda r: (
                'FAILED (lost %d)' % r.get('lost', 0) if not r.get('ok') else
                '%s / %s (%s%s)' % (us(r['p50']), us(r['p99']),
                                    fmt(r.get('load')),
                                    ' to ' + fmt(r['load_end'])
                                    if 'load_end' in r else ''))):
            lines.append('| %s | %d | %s |' % (
                CONFIG_NAMES.get(t, t), rep, ' | '.join(cells)))
    lines.append('')
    rates = [(k, t, per) for k in ('flood', 'deliver')
             for t, per in (res.get(k) or {}).items()]
    if rates:
        lines += ['Device-only rates of every run (load average at its '
                  'start and end):', '',
                  '| scenario | configuration | run | ' +
                  ' | '.join(variants) + ' |',
                  '|---|---|---:|' + '---:|' * len(variants)]
    for k, t, per in rates:
        for rep, cells in rows_by_round(per, variants, lambda r: (
                'FAILED%s' % (' (lost %d)' % r['lost'] if r.get('lost')
                              else '') if not r.get('ok') else
                '%s (%s to %s)' % (rate(r['per_s']), fmt(r.get('load')),
                                   fmt(r.get('load_end'))))):
            lines.append('| %s | %s | %d | %s |' % (
                k, CONFIG_NAMES.get(t, t), rep, ' | '.join(cells)))
    if rates:
        lines.append('')
    return lines


def bandwidth_section(summ):
    bw = summ['bandwidth']
    variants = summ['variants']
    lines = ['## Guest memcpy bandwidth, BAR2 (MB/s, median of runs)', '',
             '| direction | ' + ' | '.join(SIDE_NAMES.get(v, v)
                                           for v in variants) +
             ' | ' + ' | '.join('ours/%s' % o for o in variants[1:]) +
             ' | ' + ' | '.join('runs ours slower than %s' % o
                                for o in variants[1:]) + ' |',
             '|---|' + '---:|' * (3 * len(variants) - 2)]
    for k, label in (('write_MBps', 'write into BAR2'),
                     ('read_MBps', 'read back from BAR2')):
        lines.append('| %s | %s | %s | %s |' % (
            label, ' | '.join(fmt(bw[v][k], 0) for v in variants),
            ' | '.join('%s; per round %s' % (
                fmt(bw['vs'][o][k], 2),
                effect_text(bw['vs'][o].get('effect_' + k)))
                for o in variants[1:]),
            ' | '.join(runs_text(bw['vs'][o]['runs_' + k], 'slower')
                       for o in variants[1:])))
    lines.append('| data verified by the peer (runs) | %s |%s' % (
        ' | '.join('%d/%d' % (bw[v]['verified_runs'], bw[v]['runs'])
                   for v in variants), ' |' * (2 * len(variants) - 2)))
    lines.append('')
    return lines


def sustained_text(d):
    if d is None:
        return '-'
    if d['capped']:
        return '≥ %d (search cap)' % d['peers']
    return '%d (fails at %d)' % (d['peers'], d['first_fail'])


def join_section(summ):
    a, b = summ['servers']
    st = summ['settings']
    lines = ['## Server: joins (%s server vs %s server)' % (a, b), '',
             '| peers | -n | %s: time (s) | %s: time (s) | %s/%s | '
             '%s: CPU (s) | %s: CPU (s) | %s: RSS/peer (KiB) | '
             '%s: RSS/peer (KiB) | %s: fds/peer | %s: fds/peer |'
             % (a, b, a, b, a, b, a, b, a, b),
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    rows = sorted(summ['join'].values(),
                  key=lambda e: (e['vectors'], e['peers']))
    for e in rows:
        def cell(d, k, digits):
            if 'failed' in d:
                return 'FAIL' if k == 'seconds' else '-'
            return fmt(d[k], digits)
        o, f = e[a], e[b]
        lines.append('| %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | '
                     '%s |' % (
                         e['peers'], e['vectors'], cell(o, 'seconds', 4),
                         cell(f, 'seconds', 4), fmt(e['ratio'], 2),
                         cell(o, 'cpu_s', 2), cell(f, 'cpu_s', 2),
                         cell(o, 'rss_kib_per_peer', 1),
                         cell(f, 'rss_kib_per_peer', 1),
                         cell(o, 'fds_per_peer', 2),
                         cell(f, 'fds_per_peer', 2)))
    fails = ['%s -n %d at %d peers: %s' % (v, e['vectors'], e['peers'],
                                           e[v]['failed'])
             for e in rows for v in (a, b)
             if 'failed' in e[v] and not e[v]['failed'].startswith('skipped')]
    lines.append('')
    if fails:
        lines += ['FAIL: ' + '; '.join(fails) + '. Larger counts are '
                  'skipped for a server after its first failure.', '']
    sus = summ.get('sustained') or {}
    if sus:
        lines += ['Largest peer count that joins completely with -n 1 '
                  '(stall: no message for %g s): %s.' % (
                      st['join_stall_s'], ', '.join(
                          '%s %s' % (v, sustained_text(sus.get(v)))
                          for v in (a, b))), '']
    return lines


def host_section(summ):
    lines = ['## Host floor (µs, median of runs)', '',
             '| mode | min | p50 | p99 | max |', '|---|---:|---:|---:|---:|']
    for mode, s in summ['host_floor'].items():
        name = {'eventfd': 'eventfd ping-pong between two host processes',
                'cacheline': 'one shared cache line'}.get(mode, mode)
        lines.append('| %s | %s |' % (name, ' | '.join(fmt(s[k], 2)
                                                      for k in LAT_KEYS)))
    lines.append('')
    return lines


def markdown(res, summ):
    lines = ['# ivshmem benchmarks: ours, pristine 10.0.2, stock (%s)'
             % summ['date'], '',
             'Generated by `bench/report.py` from the JSON beside this '
             'page; every run, with its raw round trips, is in it.', '']
    lines += header(summ)
    if summ.get('doorbell') or summ.get('polling'):
        lines += latency_section(summ)
    if summ.get('flood') or summ.get('deliver'):
        lines += rate_section(summ)
    if summ.get('bandwidth'):
        lines += bandwidth_section(summ)
    if summ.get('join'):
        lines += join_section(summ)
    if summ.get('host_floor'):
        lines += host_section(summ)
    if res.get('doorbell') or res.get('polling') or res.get('flood') or \
            res.get('deliver'):
        lines += per_run_section(res, summ)
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# README table

def readme_table(summ, json_rel):
    variants = summ['variants']
    others = variants[1:]
    cols = ['metric'] + [SIDE_NAMES.get(v, v) for v in variants] + \
        ['ours/%s: ratio; per round, median (95 %% CI)' % o
         for o in others] + \
        ['rounds ours slower / faster / tied than %s (sign test p)' % o
         for o in others]
    lines = ['| ' + ' | '.join(cols) + ' |',
             '| --- |' + ' ---: |' * (2 * len(variants) - 1) +
             ' --- |' * len(others)]
    wide = []
    ntests = 0

    def runs_cell(c):
        if not c or not c['pairs']:
            return '-'
        return '%d / %d / %d (%s)' % (c['worse'], c['better'], c['tied'],
                                      fmt_p(c['p']))

    def lat_row(label, s):
        cells = [label]
        cells += ['%s / %s µs' % (us(s[v]['p50']), us(s[v]['p99']))
                  for v in variants]
        cells += ['%s / %s; %s' % (fmt(s['vs'][o]['p50'], 2),
                                   fmt(s['vs'][o]['p99'], 2),
                                   effect_text(s['vs'][o].get('effect')))
                  for o in others]
        cells += [runs_cell(s['vs'][o]['runs_p50']) for o in others]
        lines.append('| ' + ' | '.join(cells) + ' |')
        for o in others:
            wide.append(('%s, ours/%s' % (label, o),
                         s['vs'][o].get('effect')))

    lat = list((summ.get('doorbell') or {}).items())
    for t, s in lat:
        lat_row('doorbell round trip p50 / p99, ' + CONFIG_NAMES.get(t, t),
                s)
    if summ.get('polling'):
        lat_row('shared-memory polling round trip p50 / p99',
                summ['polling'])
    for k in ('flood', 'deliver'):
        for t, s in (summ.get(k) or {}).items():
            label = '%s (%s), %s' % (RATE_NAMES[k], k,
                                     CONFIG_NAMES.get(t, t))
            cells = [label] + [rate_cell(s[v]) for v in variants]
            cells += ['%s; %s' % (fmt(s['vs'][o]['ratio'], 2),
                                  effect_text(s['vs'][o]['effect']))
                      for o in others]
            cells += [runs_cell(s['vs'][o]['runs']) for o in others]
            lines.append('| ' + ' | '.join(cells) + ' |')
            for o in others:
                wide.append(('%s, ours/%s' % (label, o),
                             s['vs'][o]['effect']))
    if summ.get('flood'):
        cells = ['doorbell writes lost (flood, all configurations)']
        cells += ['%d' % sum(s[v]['lost'] for s in summ['flood'].values())
                  for v in variants]
        cells += [''] * (2 * len(others))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if lat:
        cells = ['lost doorbells (all configurations, %d round trips a side)'
                 % sum(s[variants[0]]['count'] or 0 for _, s in lat)]
        cells += ['%d' % sum(s[v]['lost'] for _, s in lat) for v in variants]
        cells += [''] * (2 * len(others))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if summ.get('bandwidth'):
        bw = summ['bandwidth']
        cells = ['guest memcpy into / out of BAR2 (median of runs)']
        cells += ['%s / %s MB/s' % (fmt(bw[v]['write_MBps'], 0),
                                    fmt(bw[v]['read_MBps'], 0))
                  for v in variants]
        cells += ['%s / %s; write %s, read %s' % (
            fmt(bw['vs'][o]['write_MBps'], 2),
            fmt(bw['vs'][o]['read_MBps'], 2),
            effect_text(bw['vs'][o].get('effect_write_MBps')),
            effect_text(bw['vs'][o].get('effect_read_MBps')))
            for o in others]
        for o in others:
            for k in ('write', 'read'):
                wide.append(('guest memcpy %s BAR2, ours/%s'
                             % ('into' if k == 'write' else 'out of', o),
                             bw['vs'][o].get('effect_%s_MBps' % k)))
        cells += ['write %s; read %s'
                  % (runs_cell(bw['vs'][o]['runs_write_MBps']),
                     runs_cell(bw['vs'][o]['runs_read_MBps']))
                  for o in others]
        lines.append('| ' + ' | '.join(cells) + ' |')
    if summ.get('join'):
        a, b = summ['servers']

        def side(v):
            return v if v in (a, b) else None

        def jcell(e, v):
            if side(v) is None:
                return 'no server'
            d = e[v]
            if 'failed' in d:
                if d['failed'].startswith('skipped: failed at'):
                    return 'fails (at %s)' % d['failed'].split()[-2]
                return 'fails'
            return '%.1f s' % d['seconds'] if d['seconds'] >= 1 else \
                '%.3f s' % d['seconds']
        for e in sorted(summ['join'].values(),
                        key=lambda e: (e['vectors'], e['peers'])):
            if e['peers'] < 1000:
                continue
            cells = ['server: %d peers join, `-n %d` (median of %d)'
                     % (e['peers'], e['vectors'], e[a].get('runs', 0))]
            cells += [jcell(e, v) for v in variants]
            cells += [fmt(ratio(e[a].get('seconds'),
                                e[o].get('seconds')), 2) if side(o) else ''
                      for o in others]
            cells += [''] * len(others)
            lines.append('| ' + ' | '.join(cells) + ' |')
        sus = summ.get('sustained') or {}
        if sus:
            cells = ['server: largest peer count, `-n 1`']
            cells += [sustained_text(sus.get(v)) if side(v) else 'no server'
                      for v in variants]
            cells += [''] * (2 * len(others))
            lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
    # What the paired runs support, in words generated from the data.
    notes = []
    sets = [(CONFIG_NAMES.get(t, t), s['vs'], 'runs_p50') for t, s in lat]
    if summ.get('polling'):
        sets.append(('polling', summ['polling']['vs'], 'runs_p50'))
        sets[-1][1]['build'] = summ['polling'].get('build')
    for t, s in lat:
        if 'build' in s:
            s['vs']['build'] = s['build']
    for k in ('flood', 'deliver'):
        for t, s in (summ.get(k) or {}).items():
            sets.append(('%s, %s' % (k, CONFIG_NAMES.get(t, t)), s['vs'],
                         'runs'))
    for what, vs, key in sets:
        parts = []
        for o in others:
            ntests += 1
            parts.append('ours vs %s: %s' % (o, verdict(vs[o][key])))
        if vs.get('build'):
            ntests += 1
            parts.append('pristine vs stock: %s'
                         % verdict(vs['build'][key]))
        notes.append('- %s: %s.' % (what, '; '.join(parts)))
    if summ.get('bandwidth'):
        ntests += 2 * len(others)       # write and read, in the table
    st = summ['settings']
    src = summ.get('source') or {}
    loads = [s[v][k] for _, s in lat for v in variants
             for k in ('load_min', 'load_max') if s[v][k] is not None]
    lines.append(
        'Generated by `bench/report.py` from [%s](%s) (%d interleaved runs '
        'per configuration, %d round trips a run, TCG guests, series/ as of '
        'commit `%s`, harness commit `%s`%s; %s, %s-%s during the runs). p50/p99 are pooled over every round trip; '
        'the per-round ratio is the median of ours/other over the '
        'interleaved rounds with a 95 %% bootstrap interval (±N %%: wider '
        'than ±%.0f %%). Per round, ours against each side (sign test, '
        'p < %.2f counts as a consistent difference; %d such tests, '
        'uncorrected, so about %.1f would pass by chance alone):\n\n%s'
        % (json_rel, json_rel, st['reps'], st['doorbell_count'],
           src.get('series_commit', '?')[:12],
           src.get('harness_commit', '?')[:12],
           ' with uncommitted harness changes'
           if src.get('harness_dirty') else '', load_text(summ),
           fmt(min(loads) if loads else None),
           fmt(max(loads) if loads else None), 100 * TARGET, ALPHA,
           ntests, ntests * ALPHA, '\n'.join(notes)))
    w = wide_notes(wide)
    if w:
        lines += ['', 'Intervals wider than ±%.0f %% (the rounds needed '
                  'assume the width shrinks as 1/sqrt(rounds)):'
                  % (100 * TARGET), ''] + w
    return '\n'.join(lines)


def replace_block(path, name, text, check):
    begin = '<!-- %s: begin (generated by bench/report.py) -->' % name
    end = '<!-- %s: end -->' % name
    doc = open(path).read()
    if begin not in doc or end not in doc:
        sys.exit('report: %s has no %s markers' % (path, name))
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = head + begin + '\n' + text.rstrip('\n') + '\n' + end + tail
    if check:
        if new != doc:
            sys.exit('report: %s: the %s block differs from the JSON'
                     % (path, name))
        return
    with open(path, 'w') as f:
        f.write(new)


# ---------------------------------------------------------------------------
# Staleness: the run README.md quotes must have measured the tree's device
# and server, with a harness commit that is in the repository.

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURED = ['series/files/hw/misc/ivshmem.c',
            'series/files/contrib/ivshmem-server',
            'series/files/util/ivshmem-proto.c',
            'series/files/include/qemu/ivshmem-proto.h']
HARNESS = ['bench', 'e2e/ivshmem_e2e.py', 'guest/tool/ivshmem-guest.c',
           'guest/driver', 'guest/image.sh']


def git(*args, check=True):
    return subprocess.run(['git', '-C', TOP] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          check=check).stdout.decode()


def blobs(paths):
    """{path: git blob hash of the file as it is in the work tree} for
    every file under PATHS (what is built is what is measured)."""
    files = []
    for p in paths:
        full = os.path.join(TOP, p)
        if os.path.isdir(full):
            for d, _, names in os.walk(full):
                files += [os.path.relpath(os.path.join(d, n), TOP)
                          for n in names]
        elif os.path.exists(full):
            files.append(p)
    files = sorted(f for f in files if '/results/' not in f and
                   '__pycache__' not in f and
                   not f.endswith(('.md', '.png')))
    if not files:
        return {}
    return dict(zip(files, git('hash-object', '--', *files).split()))


def readme_json(readme):
    """The results JSON README.md's bench-table block names."""
    doc = open(readme).read()
    begin = '<!-- bench-table: begin'
    if begin not in doc:
        return None
    block = doc.split(begin, 1)[1].split('<!-- bench-table: end', 1)[0]
    for part in block.split('](')[1:]:
        path = part.split(')', 1)[0]
        if path.endswith('.json'):
            return os.path.join(os.path.dirname(os.path.abspath(readme)),
                                path)
    return None


def stale_problems(res):
    """Why RES does not measure this tree (an empty list: it does)."""
    src = res.get('source') or {}
    rec = src.get('measured_blobs')
    if not rec:
        return ['it records no blob hashes of the device and server (a run '
                'older than this check, series/ as of %s)'
                % src.get('series_commit', '?')[:12]]
    out = []
    if (res.get('settings') or {}).get('quick'):
        out.append('it is a BENCH_QUICK=1 smoke run, not a full one')
    now = blobs(MEASURED)
    for f in sorted(set(rec) | set(now)):
        if f not in now:
            out.append('%s was measured but is gone from the tree' % f)
        elif f not in rec:
            out.append('%s is in the tree but was not measured' % f)
        elif rec[f] != now[f]:
            out.append('%s changed since the run (blob %s measured, %s in '
                       'the tree)' % (f, rec[f][:12], now[f][:12]))
    hc = src.get('harness_commit')
    if not hc:
        out.append('it records no harness commit')
    elif subprocess.run(['git', '-C', TOP, 'cat-file', '-e',
                         hc + '^{commit}'], stderr=subprocess.DEVNULL
                        ).returncode:
        out.append('its harness commit %s is not in this repository'
                   % hc[:12])
    elif subprocess.run(['git', '-C', TOP, 'merge-base', '--is-ancestor',
                         hc, 'HEAD'], stderr=subprocess.DEVNULL).returncode:
        out.append('its harness commit %s is not in the history of HEAD '
                   '(rebased away, or from another branch)' % hc[:12])
    elif src.get('harness_dirty'):
        out.append('it ran with uncommitted harness changes (commit %s)'
                   % hc[:12])
    if src.get('series_dirty'):
        out.append('it ran with uncommitted changes in series/')
    return out


def stale_check(readme):
    path = readme_json(readme)
    if not path or not os.path.exists(path):
        sys.exit('report: %s quotes no results JSON that exists (%s)'
                 % (readme, path))
    problems = stale_problems(json.load(open(path)))
    if problems:
        sys.exit('report: %s quotes %s, which is stale: %s. Re-run the '
                 'benchmark on this tree (BENCH_SAVE=1 make bench, see '
                 'bench/README.md).' % (readme, os.path.relpath(path, TOP),
                                        '; '.join(problems)))


# ---------------------------------------------------------------------------
# Traced breakdown (bench/breakdown.py's JSON)

def breakdown_markdown(res):
    out = ['Generated by `bench/report.py` from the breakdown JSON. Traced '
           'doorbell ping-pong, vectors=1, %d rounds x %d sessions per mode '
           '(interleaved), medians of every direction after 10 warm-up '
           'ones; µs.' % (res['rounds'], res['reps']), '']
    if res.get('load'):
        out += ['1-minute load average at the start of each session: %s.'
                % ', '.join('%.1f' % x for x in res['load']), '']
    out += ['| mode | guest round trip p50, median of sessions (µs) | '
            'per session | one direction, median (p90) (µs) |',
            '|---|---:|---|---:|']
    for m, r in res['modes'].items():
        end = r['segments'][-1]
        out.append('| %s | %.0f | %s | %.0f (%.0f) |' % (
            m, r['guest_rtt_p50_us'],
            ', '.join('%.0f' % x for x in r.get('guest_rtt_p50s_us', [])) or
            '-', end['median_us'], end['p90_us']))
    out.append('')
    for m, r in res['modes'].items():
        p50s = r.get('guest_rtt_p50s_us')
        out += ['### %s: guest-measured round trip p50 %.0f µs%s'
                % (m, r['guest_rtt_p50_us'],
                   ' (sessions: %s)' % ', '.join('%.0f' % x for x in p50s)
                   if p50s else ''), '',
                '| segment | median (µs) | p90 (µs) | directions |',
                '|---|---:|---:|---:|']
        for row in r['segments']:
            out.append('| %s | %.0f | %.0f | %d |' % (
                row['segment'], row['median_us'], row['p90_us'], row['n']))
        out.append('')
    return '\n'.join(out)


# ---------------------------------------------------------------------------
# Plots

def write_cdf(samples, path):
    s = sorted(samples)
    n = len(s)
    with open(path, 'w') as f:
        for i, x in enumerate(s):
            f.write('%g %g\n' % (x, (i + 1) / n))


def plots(res, summ, prefix):
    if not shutil.which('gnuplot'):
        print('report: gnuplot missing, no plots', file=sys.stderr)
        return
    pdir = prefix + '-plot'
    os.makedirs(pdir, exist_ok=True)
    try:
        _plots(res, summ, prefix, pdir)
    finally:
        shutil.rmtree(pdir, ignore_errors=True)


def _plots(res, summ, prefix, pdir):
    variants = summ['variants']
    left, right = [], []
    colors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728']
    dts = {v: i + 1 for i, v in enumerate(variants)}
    for i, (tag, per) in enumerate((res.get('doorbell') or {}).items()):
        for v in variants:
            vals = [x for r in per.get(v, []) if r.get('ok')
                    for x in r.get('samples', [])]
            if not vals:
                continue
            path = os.path.join(pdir, 'cdf-%s-%s.dat' % (tag, v))
            write_cdf(vals, path)
            left.append("'%s' w l lw 2 dt %d lc rgb '%s' t '%s %s'" % (
                path, dts[v], colors[i % 4], v,
                tag.replace('-ioeventfd-', ' ioeventfd=')))
    for v in variants:
        vals = [x for r in (res.get('polling') or {}).get(v, [])
                if r.get('ok') for x in r.get('samples', [])]
        if vals:
            path = os.path.join(pdir, 'cdf-polling-%s.dat' % v)
            write_cdf(vals, path)
            right.append("'%s' w l lw 2 dt %d lc rgb '%s' t '%s polling'"
                         % (path, dts[v], colors[0], v))
    script = ["set terminal pngcairo size 1400,560 font 'sans,10'",
              "set output '%s-rtt.png'" % prefix,
              'set multiplot layout 1,2',
              'set logscale x', 'set grid',
              "set ylabel 'fraction of round trips'",
              "set xlabel 'round trip (µs, log scale)'",
              'set key bottom right', 'set yrange [0:1]']
    if left:
        script += ["set title 'Doorbell round trip between two guests: CDF'",
                   'plot ' + ', '.join(left)]
    if right:
        script += ["set title 'Shared-memory polling round trip: CDF'",
                   'plot ' + ', '.join(right)]
    script.append('unset multiplot')
    if left or right:
        run_gnuplot(script, pdir, 'rtt.gp')

    curves = []
    for v in summ.get('servers') or ():
        for n in summ['settings'].get('join_vectors', []):
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
                path, dts[v], v, n))
    if curves:
        run_gnuplot([
            "set terminal pngcairo size 800,560 font 'sans,10'",
            "set output '%s-join.png'" % prefix,
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


# ---------------------------------------------------------------------------

COVER_CONFIGS = {
    'v1-ioeventfd-on': 'v=1 ioeventfd=on ',
    'v1-ioeventfd-off': 'v=1 ioeventfd=off',
    'v4-ioeventfd-on': 'v=4 ioeventfd=on ',
    'v4-ioeventfd-off': 'v=4 ioeventfd=off',
}


def cover_summary(res, summ, json_rel):
    """Lines of at most 72 columns: every configuration, ours/pristine as
    the median per-round ratio with its 95 % bootstrap interval."""
    other = 'pristine'
    rounds = max((e['n'] for k in ('flood', 'deliver')
                  for s in (summ.get(k) or {}).values()
                  for e in [s['vs'][other]['effect']] if e), default=0)
    out = ['Measured by bench/ (%s), TCG guests, %d' % (json_rel, rounds),
           'interleaved rounds; ours / pristine 10.0.2 built with the same',
           'flags, median of the per-round ratios (95 % bootstrap interval;',
           'round trips: lower is better, rates: higher):',
           '']

    def row(label, e, extra=''):
        out.append('  %-38s %s%s' % (label, effect_text(e), extra))
    for t, s in (summ.get('doorbell') or {}).items():
        row('round trip p50, %s' % COVER_CONFIGS.get(t, t),
            s['vs'][other].get('effect'))
    if summ.get('polling'):
        row('polling round trip p50', summ['polling']['vs'][other]
            .get('effect'))
    for k, name in (('flood', 'doorbell writes/s'),
                    ('deliver', 'deliveries/s')):
        for t, s in (summ.get(k) or {}).items():
            row('%s, %s' % (name, COVER_CONFIGS.get(t, t)),
                s['vs'][other]['effect'])
    bw = summ.get('bandwidth')
    if bw:
        row('guest memcpy into BAR2', bw['vs'][other]
            .get('effect_write_MBps'))
        row('guest memcpy out of BAR2', bw['vs'][other]
            .get('effect_read_MBps'))
    lost = sum(s[v]['lost'] for k in ('flood',)
               for s in (summ.get(k) or {}).values() for v in ('ours',))
    lost += sum(s['ours']['lost'] for s in (summ.get('doorbell') or {})
                .values())
    out.append('  %-38s %d' % ('doorbells lost (ours, every run)', lost))
    if summ.get('join'):
        a, b = summ['servers']
        for e in sorted(summ['join'].values(),
                        key=lambda e: (e['vectors'], e['peers'])):
            if e['peers'] != 1000:
                continue
            d_a, d_b = e[a], e.get(b, {})
            t_a = 'fails' if 'failed' in d_a else '%.1f s' % d_a['seconds']
            t_b = 'fails' if 'failed' in d_b else '%.1f s' % \
                d_b.get('seconds', 0)
            out.append('  %-38s %s (10.0.2: %s)'
                       % ('1000 peers join the server, -n %d'
                          % e['vectors'], t_a, t_b))
        sus = summ.get('sustained') or {}
        if sus.get(a) and sus.get(b):
            out.append('  %-38s %d (10.0.2: %d)'
                       % ('peers the server holds, -n 1',
                          sus[a]['peers'], sus[b]['peers']))
    return '\n'.join(out)


def main():
    args = sys.argv[1:]
    opts = {}
    check = False
    while args and args[0].startswith('--'):
        a = args.pop(0)
        if a == '--check':
            check = True
        else:
            opts[a] = args.pop(0)
    if '--stale-check' in opts:
        stale_check(opts['--stale-check'])
        return
    if '--cover' in opts:
        path = opts['--cover']
        res = json.load(open(path))
        print(cover_summary(res, summarize(res), path))
        return
    if '--breakdown' in opts:
        res = json.load(open(opts['--breakdown']))
        md = breakdown_markdown(res)
        if '--readme' in opts:
            replace_block(opts['--readme'], 'breakdown', md, check)
        else:
            print(md)
        return
    if '--json' in opts:
        path = opts['--json']
        res = json.load(open(path))
        summ = summarize(res)
        if '--readme' in opts:
            rel = os.path.relpath(os.path.abspath(path), os.path.dirname(
                os.path.abspath(opts['--readme'])))
            replace_block(opts['--readme'], 'bench-table',
                          readme_table(summ, rel), check)
            return
        if '--plots' in opts:
            plots(res, summ, opts['--plots'])
        print(markdown(res, summ))
        return
    outdir = args[0]
    res = json.load(open(os.path.join(outdir, 'results.json')))
    summ = summarize(res)
    with open(os.path.join(outdir, 'summary.json'), 'w') as f:
        json.dump(summ, f, indent=1)
        f.write('\n')
    md = markdown(res, summ)
    with open(os.path.join(outdir, 'results.md'), 'w') as f:
        f.write(md + '\n')
    plots(res, summ, os.path.join(outdir, 'plot'))
    for p in ('rtt', 'join'):
        src = os.path.join(outdir, 'plot-%s.png' % p)
        if os.path.exists(src):
            os.replace(src, os.path.join(outdir, p + '.png'))
    print(md)


if __name__ == '__main__':
    main()
