#!/usr/bin/env python3
"""Compares zdtm runs of the same test list: test/zdtm/compare.py OUT [MODE...] (modes default: criu snap).

Reads OUT/MODE.log (zdtm.py's output, which test/zdtm/run.sh keeps; a run stopped early counts what it finished);
a MODE given as NAME=LOG1,LOG2 reads those logs instead, a later log's result for a test replacing an earlier one's
(a rerun of some tests)
and prints, per mode, pass/fail/skip over the tests every mode finished, then each test that passes with the first
mode and fails with another, with the stage zdtm names and the first lines that say why (snap's error, or criu's).
"""

import re
import sys

RLIMIT_NOISE = "Can't setup RLIMIT_NOFILE for self"


def parse(path):
    """{test: (result, detail)}; result is pass, fail or skip; detail the stage and the lines that say why."""
    text = open(path, errors='replace').read()
    out = {}
    for m in re.finditer(r'^Skipping (\S+) \((.*)\)$', text, re.M):
        out[m.group(1)] = ('skip', [m.group(2)])
    for m in re.finditer(r'^=+ Test (\S+) PASS =+$', text, re.M):
        out[m.group(1)] = ('pass', [])
    for m in re.finditer(r'^#+ Test (\S+) FAIL at (.+?) #+$', text, re.M):
        name, stage = m.group(1), m.group(2)
        start = text.rfind('Run %s in ' % name, 0, m.start())
        block = text[start:m.start()] if start >= 0 else ''
        why = []
        for line in block.splitlines():
            s = line.strip()
            if s.startswith("b'") or s.startswith('b"'):
                s = s[2:-1]
            if RLIMIT_NOISE in s:
                continue
            if (s.startswith('snap: error') or s.startswith('criu-snap:') or 'Error (' in s or s.startswith('FAIL:')
                    or 'ERR:' in s or s.startswith('snap: warning')):
                why.append(s)
        out[name] = ('fail', [stage] + why)
    # A test whose zdtm worker died (a Python exception, e.g. the restored test already gone when zdtm signals it)
    # has no FAIL line, only its place in the final list of failures.
    tail = text[text.rfind('TEST(S) FAILED'):] if 'TEST(S) FAILED' in text else ''
    for m in re.finditer(r'^ \* (\S+)\((\w+)\)$', tail, re.M):
        if m.group(1) not in out:
            start = text.rfind('Run %s in ' % m.group(1))
            block = text[start:text.find('\n=== Run', start)] if start >= 0 else ''
            exc = [l for l in block.splitlines() if re.match(r'^\w+Error', l)]
            out[m.group(1)] = ('fail', ['zdtm itself (%s)' % (exc[-1] if exc else 'no result line')])
    return out


def main(argv):
    if not argv:
        sys.exit(__doc__)
    out, modes = argv[0], argv[1:] or ['criu', 'snap']
    runs = {}
    for spec in modes:
        name, _, logs = spec.partition('=')
        runs[name] = {}
        for log in (logs.split(',') if logs else ['%s/%s.log' % (out, name)]):
            runs[name].update(parse(log))
    modes = list(runs)
    common = sorted(set.intersection(*(set(r) for r in runs.values())))
    print('%d tests finished in every mode (%s)' % (len(common), ', '.join('%s %d' % (m, len(r)) for m, r in runs.items())))
    print('| mode | pass | fail | skip |')
    print('|---|---|---|---|')
    for m, r in runs.items():
        counts = {k: sum(1 for t in common if r[t][0] == k) for k in ('pass', 'fail', 'skip')}
        print('| %s | %d | %d | %d |' % (m, counts['pass'], counts['fail'], counts['skip']))
    base = modes[0]
    for m in modes[1:]:
        worse = [t for t in common if runs[base][t][0] == 'pass' and runs[m][t][0] == 'fail']
        better = [t for t in common if runs[base][t][0] == 'fail' and runs[m][t][0] == 'pass']
        print('\npass with %s, fail with %s: %d' % (base, m, len(worse)))
        for t in worse:
            detail = runs[m][t][1]
            print('- %s: fails at %s' % (t, detail[0]))
            for line in detail[1:6]:
                print('    ' + line[:400])
        if better:
            print('\nfail with %s, pass with %s: %s' % (base, m, ' '.join(better)))


if __name__ == '__main__':
    main(sys.argv[1:])
