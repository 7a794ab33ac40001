#!/usr/bin/env bash
# `npm run demo`: captures a live demo process, kills it, restores it, and shows that its work went on from the
# capture point. Runs after `npm run setup`; needs root.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
WORKER="$ROOT/test/fixtures/bin/worker"
DIR=$(mktemp -d /tmp/procsnap-demo.XXXXXX)
# Run by the name every install has, so each text it prints says procsnap (the launcher speaks as the name it is run by).
ln -s "$ROOT/bin/snap" "$DIR/procsnap"
SNAP="$DIR/procsnap"
PID=""
RESTORED=""

cleanup() {
  [ -n "$RESTORED" ] && kill -KILL "$RESTORED" 2>/dev/null || true
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ticks() { sed -n 's/^ticks=0*\([0-9][0-9]*\).*/\1/p' "$DIR/progress"; }
state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo gone; }

[ "$(id -u)" = 0 ] || { echo "demo: run as root (procsnap needs CAP_SYS_ADMIN and CAP_SYS_PTRACE for criu and gdb)" >&2; exit 1; }

say "1. Start a demo process: 4 threads, 64 MiB of memory, counting ticks every 10 ms"
"$WORKER" --threads 4 --mib 64 --progress "$DIR/progress" --setsid </dev/null >/dev/null 2>&1 &
PID=$!
for _ in $(seq 200); do [ -s "$DIR/progress" ] && [ "$(ls /proc/$PID/task | wc -l)" = 4 ] && break; sleep 0.05; done
echo "pid $PID, state $(state $PID), $(ls /proc/$PID/task | wc -l) threads, ticks $(ticks)"

say "2. Check this host: procsnap doctor"
"$SNAP" doctor

say "3. Capture it, signed with a key made for this demo: procsnap keygen, procsnap dump $PID --sign KEY"
"$SNAP" keygen "$DIR/demo.key"
"$SNAP" dump "$PID" -o "$DIR/demo.tar.zst" --sign "$DIR/demo.key"
T_DUMP=$(ticks)
echo "after the dump: state $(state $PID), ticks $T_DUMP (it runs on)"

say "4. What the bundle holds: procsnap inspect, then procsnap verify"
"$SNAP" inspect "$DIR/demo.tar.zst"
"$SNAP" verify "$DIR/demo.tar.zst" --key "$DIR/demo.key.pub"

sleep 1
T_KILL=$(ticks)
say "5. Kill the original (ticks reached $T_KILL), then restore it, trusting the demo's key: procsnap restore --key"
kill -KILL "$PID"; wait "$PID" 2>/dev/null || true; PID=""
"$SNAP" restore "$DIR/demo.tar.zst" --key "$DIR/demo.key.pub" --json -q > "$DIR/restore.json"
RESTORED=$(sed -n 's/^  "pid": \([0-9]*\),$/\1/p' "$DIR/restore.json")
T_BACK=$(ticks)
sleep 0.5
T_LATER=$(ticks)
echo "restored pid $RESTORED, state $(state $RESTORED), $(ls /proc/$RESTORED/task | wc -l) threads"
# The capture point is the freeze, before the bundle was sealed, so the restored count starts below $T_DUMP.
echo "ticks: when the dump finished $T_DUMP, at the kill $T_KILL, right after restore $T_BACK, half a second later $T_LATER"
if [ "$T_BACK" -lt "$T_KILL" ] && [ "$T_LATER" -gt "$T_BACK" ]; then
  echo "=> the process came back from the capture point and its work goes on"
else
  echo "=> unexpected: the restored ticks did not go back to the capture point" >&2
  exit 1
fi
say "Done. The demo process and its files are removed on exit."
