#!/usr/bin/env bash
# Deletes what create.sh made: the queued resource and its TPU VM, or the plain TPU VM.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
usage: $SCRIPT_NAME [flags]

Deletes the slice NAME without asking: with --mode=queued the queued resource NAME together with
its TPU VM (--force), with --mode=vm the TPU VM NAME. Pass the same --mode as to create.sh.
The run directory lives in GCS and is kept.

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  NSHIFT=1
  case $1 in
    -h | --help) usage; exit 0 ;;
    *) parse_common_flag "$@" || die "unknown argument $1 (see --help)" ;;
  esac
  shift "$NSHIFT"
done

check_common

if [[ $MODE == vm ]]; then
  say "deleting TPU VM $NAME in $ZONE"
  gc compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
else
  say "deleting queued resource $NAME and its TPU VM in $ZONE"
  gc compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet
fi
