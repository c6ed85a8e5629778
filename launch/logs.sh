#!/usr/bin/env bash
# Streams the mmst log of one worker (or of all, each line prefixed by its host) from the slice.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER=${MMST_LOG_WORKER:-0}
LINES=${MMST_LOG_LINES:-100}
FOLLOW=1

usage() {
  cat <<EOF
usage: $SCRIPT_NAME [flags]

Prints the last lines of ~/REMOTE_DIR/logs/mmst.log on a worker and follows it (Ctrl-C stops the
viewing, not the run). Every run appends to that file; a run ends with a line
'=== ... mmst exited with status N'.

flags (flag, environment variable):
  --worker N|all   MMST_LOG_WORKER  which worker (default 0); all: every worker, lines prefixed by host
  --lines N        MMST_LOG_LINES   how many lines to show first (default 100)
  --no-follow                       print and return

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  NSHIFT=1
  case $1 in
    -h | --help) usage; exit 0 ;;
    --worker | --worker=*) flag_value "$@"; WORKER=$VALUE ;;
    --lines | --lines=*) flag_value "$@"; LINES=$VALUE ;;
    --no-follow) FOLLOW=0 ;;
    *) parse_common_flag "$@" || die "unknown argument $1 (see --help)" ;;
  esac
  shift "$NSHIFT"
done

check_common
check "--worker (MMST_LOG_WORKER)" "$WORKER" '^([0-9]+|all)$' "a worker number or all"
check "--lines (MMST_LOG_LINES)" "$LINES" '^[0-9]+$' "a number of lines"

tail_cmd=(tail -n "$LINES")
((FOLLOW == 0)) || tail_cmd+=(-F)
tail_cmd+=("$REMOTE_DIR/logs/mmst.log")
remote=$(shjoin "${tail_cmd[@]}")
# Lines from several workers carry the host's name; $(hostname) is expanded on each worker.
[[ $WORKER != all ]] || remote+=" | sed -u \"s/^/\$(hostname): /\""

gc compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker="$WORKER" --command="$remote"
