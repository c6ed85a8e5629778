#!/usr/bin/env bash
# Runs on each TPU VM worker (launch/run.sh starts it there): runs `mmst ARGS...` from the project's
# venv, appending its output to REMOTE_DIR/logs/mmst.log. Detached by default (it survives the ssh
# session); with --foreground it also streams the output and exits with mmst's status.
#   on_worker/run.sh [--foreground] [--env NAME=VALUE]... -- MMST_ARGS...
set -euo pipefail

foreground=0
envs=()
while (($#)); do
  case $1 in
    --foreground) foreground=1; shift ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "on_worker/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
root=$(dirname "$src")
logs="$root/logs"
log="$logs/mmst.log"
pid_file="$logs/mmst.pid"
host=$(hostname)
mkdir -p "$logs"

if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "$host: mmst is already running here (pid $(cat "$pid_file"), log $log); wait for it to end" >&2
  exit 1
fi

if ((foreground == 0)); then
  env_flags=()
  for assignment in "${envs[@]}"; do
    env_flags+=(--env "$assignment")
  done
  setsid bash "${BASH_SOURCE[0]}" --foreground "${env_flags[@]}" -- "$@" >/dev/null 2>&1 </dev/null &
  echo "$host: started mmst (pid $!), log $log"
  exit 0
fi

echo $$ >"$pid_file"
trap 'rm -f "$pid_file"' EXIT
for assignment in "${envs[@]}"; do
  export "${assignment?}"
done
export VIRTUAL_ENV="$root/venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
cd "$src"

echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $host: mmst $(printf '%q ' "$@")" >>"$log"
status=0
mmst "$@" 2>&1 | tee -a "$log" || status=${PIPESTATUS[0]}
echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $host: mmst exited with status $status" | tee -a "$log"
exit "$status"
