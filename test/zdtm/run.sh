#!/usr/bin/env bash
# Runs CRIU's zdtm suite (test/zdtm.py of a CRIU source tree) against bare criu, against snap, or both, on the same
# test list, and prints pass/fail/skip for each. See test/zdtm/README.md.
#
#   test/zdtm/run.sh [--criu-src DIR] [--modes criu,snap,snap-dump] [--parallel N] [--out DIR] [--build]
#                    [--list FILE | --all] [-- ZDTM_RUN_ARGS...]
#
#   --criu-src   a CRIU source tree whose version matches the installed criu (default: $ZDTM_CRIU_SRC)
#   --modes      criu: bare criu; snap: snap dump and snap restore; snap-dump: snap dump, then criu restore
#                (default: criu,snap)
#   --list FILE  test names, one a line (e.g. zdtm/static/env00); else ZDTM_RUN_ARGS choose (e.g. -t zdtm/static/env00)
#   --all        every test of static/ and transition/ that runs in the host's namespaces (flavor h), but those zdtm
#                runs only by hand (noauto); the list is written to OUT/tests.txt
#   --build      make the C tests first (make -C DIR/test/zdtm -k; a test that does not build fails in every mode)
#   --out        where the reports go (default: a new directory under /tmp)
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${ZDTM_CRIU_SRC:-}
modes=criu,snap
parallel=1
out=
build=0
list=
while [ $# -gt 0 ]; do
  case $1 in
    --criu-src) src=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=1; shift ;;
    --list) list=$2; shift 2 ;;
    --all) list=all; shift ;;
    --) shift; break ;;
    *) echo "unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
if [ -z "$src" ] || [ ! -f "$src/test/zdtm.py" ]; then
  echo "need a CRIU source tree with test/zdtm.py: --criu-src DIR or ZDTM_CRIU_SRC (e.g. git clone --branch v4.2 https://github.com/checkpoint-restore/criu /tmp/criu)" >&2
  exit 2
fi
src=$(cd "$src" && pwd)
[ -n "$out" ] || out=$(mktemp -d /tmp/zdtm-snap.XXXXXX)
mkdir -p "$out"

criu=${ZDTM_SNAP_CRIU:-}
[ -n "$criu" ] || { [ -x /opt/procsnap/bin/criu ] && criu=/opt/procsnap/bin/criu; } || criu=$(command -v criu)
# zdtm imports pycriu; crit's pycriu from the same CRIU version serves.
pycriu=${ZDTM_PYCRIU:-}
if [ -z "$pycriu" ]; then
  for d in /opt/procsnap/criu/usr/lib/python3/dist-packages /usr/lib/python3/dist-packages; do
    [ -d "$d/pycriu" ] && { pycriu=$d; break; }
  done
fi
[ -n "$pycriu" ] || { echo "no pycriu found: set ZDTM_PYCRIU to the directory holding pycriu/" >&2; exit 2; }
# Some tests' hooks (socket-tcp-*.hook) import pycriu from the source tree's lib/, which holds it only once CRIU is
# built: the same pycriu goes first on their path.
export PYTHONPATH=$pycriu${PYTHONPATH:+:$PYTHONPATH}
export ZDTM_SNAP_CRIU=$criu
export ZDTM_SNAP_BIN=${ZDTM_SNAP_BIN:-$(cd "$here/../.." && pwd)/bin/snap}

if [ "$build" = 1 ]; then
  nice -n 10 make -C "$src/test/zdtm" -k -j"$parallel" >"$out/build.log" 2>&1 || echo "some zdtm tests did not build (see $out/build.log)"
fi

# zdtm runs each test that is not flagged suid as uid 18943. criu dumps a task of another uid only with
# CAP_SYS_RESOURCE (`Can't get rlimit 0: Operation not permitted` otherwise): where root lacks it, every such dump
# fails, bare criu's too. There the tests are kept as root: zdtm.py is patched in place (one condition, idempotent,
# only when ZDTM_KEEP_ROOT=1) and every mode runs the same way.
capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
if [ -z "${ZDTM_KEEP_ROOT:-}" ] && [ $(( (0x$capbnd >> 24) & 1 )) = 0 ]; then
  export ZDTM_KEEP_ROOT=1
  echo "no CAP_SYS_RESOURCE here: the tests run as root (ZDTM_KEEP_ROOT=1)"
fi
if [ "${ZDTM_KEEP_ROOT:-}" = 1 ] && ! grep -q ZDTM_KEEP_ROOT "$src/test/zdtm.py"; then
  sed -i "s/^        if not test_flag(self.__desc, 'suid'):$/        if not test_flag(self.__desc, 'suid') and os.environ.get('ZDTM_KEEP_ROOT') != '1':/" "$src/test/zdtm.py"
  grep -q ZDTM_KEEP_ROOT "$src/test/zdtm.py" || { echo "could not patch $src/test/zdtm.py for ZDTM_KEEP_ROOT" >&2; exit 2; }
fi

if [ "$list" = all ]; then
  list=$out/tests.txt
  (cd "$src/test" && PATH=/usr/bin:$PATH /usr/bin/python3 zdtm.py list -i) | /usr/bin/python3 -c '
import sys
for line in sys.stdin:
    name, flavors, flags = line[:40].strip(), line[40:50].split(), line[50:].split()
    if name.startswith(("zdtm/static/", "zdtm/transition/")) and "h" in (flavors or ["h"]) and "noauto" not in flags:
        print(name)' >"$list"
  echo "$(wc -l <"$list") tests (flavor h) in $list"
fi

sel=("$@")
if [ -n "$list" ]; then
  sel=()
  while read -r t; do [ -n "$t" ] && [ "${t#\#}" = "$t" ] && sel+=(-t "$t"); done <"$list"
fi
[ ${#sel[@]} -gt 0 ] || { echo "no tests chosen: --list FILE or -- -t zdtm/static/env00 ... / -T REGEX" >&2; exit 2; }

summary() {
  local tap=$1
  [ -f "$tap" ] || { echo "no report"; return; }
  local ok skip notok
  skip=$(grep -c '^ok .*# SKIP' "$tap")
  ok=$(( $(grep -c '^ok ' "$tap") - skip ))
  notok=$(grep -c '^not ok ' "$tap")
  echo "pass $ok, fail $notok, skip $skip"
}

for mode in ${modes//,/ }; do
  case $mode in
    criu) bin=$criu ;;
    snap) bin=$here/criu-snap; export ZDTM_SNAP_RESTORE=snap ;;
    snap-dump) bin=$here/criu-snap; export ZDTM_SNAP_RESTORE=criu ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  echo "== $mode ($bin) -> $out/$mode"
  # zdtm runs from its test/ directory; host flavor only (the tests in the host's namespaces, as snap dumps them).
  # zdtm.py starts its workers as ./zdtm.py (env python3): the system python3, which has python3-yaml and -protobuf.
  (cd "$src/test" && PATH=/usr/bin:$PATH nice -n 10 /usr/bin/python3 zdtm.py run --criu-bin "$bin" --pycriu-search-path "$pycriu" \
      -f h --keep-going --ignore-taint --parallel "$parallel" --report "$out/$mode" "${sel[@]}") >"$out/$mode.log" 2>&1
  echo "   $(summary "$out/$mode/criu-testreport.tap")  (log: $out/$mode.log)"
done
