#!/usr/bin/env bash
# Runs the whole suite (after setup). The tests that pause a target with SIGTSTP, as Ctrl+Z does, start it as a
# shell job: a process group of its own inside the suite's session, which is what keeps the kernel from discarding
# the signal. criu refuses a task whose session leader it cannot see, and a suite started without a session of its
# own inside this PID namespace (from a container runtime's exec without a terminal, say: /proc shows session 0)
# would hand such tasks to criu. Then the suite runs in a new session of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
session=$(awk '/^NSsid:/ { print $NF }' /proc/$$/status)
if [[ $session == 0 ]]; then
  echo "test: this session's leader is outside the PID namespace; running the suite in a new session" >&2
  exec setsid --wait vitest run "$@"
fi
exec vitest run "$@"
