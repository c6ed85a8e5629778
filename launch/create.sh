#!/usr/bin/env bash
# Creates the TPU slice: a queued resource holding one TPU VM (default) or a plain TPU VM.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ACCELERATOR=${MMST_TPU_ACCELERATOR:-}
RUNTIME=${MMST_TPU_RUNTIME:-}
CAPACITY=${MMST_TPU_CAPACITY:-on-demand}
WAIT=${MMST_TPU_WAIT:-0}
POLL_SECONDS=${MMST_TPU_POLL_SECONDS:-60}

usage() {
  cat <<EOF
usage: $SCRIPT_NAME [flags]

Creates the TPU slice NAME: with --mode=queued a queued resource NAME whose TPU VM is also called
NAME (it is provisioned when capacity allows; --wait polls until it is ACTIVE), with --mode=vm a
TPU VM NAME directly.

flags (flag, environment variable):
  --accelerator-type TYPE  MMST_TPU_ACCELERATOR   e.g. v4-8, v4-512, v5litepod-256, v5p-128 (required)
  --runtime-version V      MMST_TPU_RUNTIME       TPU VM image; default by family: v4 tpu-ubuntu2204-base,
                                                  v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                                                  v6e v2-alpha-tpuv6e
  --capacity KIND          MMST_TPU_CAPACITY      on-demand (default), spot or reserved
  --wait                   MMST_TPU_WAIT=1        queued mode: return once the slice is ACTIVE
  --poll-seconds N         MMST_TPU_POLL_SECONDS  seconds between checks with --wait (default 60)

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  NSHIFT=1
  case $1 in
    -h | --help) usage; exit 0 ;;
    --accelerator-type | --accelerator-type=*) flag_value "$@"; ACCELERATOR=$VALUE ;;
    --runtime-version | --runtime-version=*) flag_value "$@"; RUNTIME=$VALUE ;;
    --capacity | --capacity=*) flag_value "$@"; CAPACITY=$VALUE ;;
    --wait) WAIT=1 ;;
    --poll-seconds | --poll-seconds=*) flag_value "$@"; POLL_SECONDS=$VALUE ;;
    *) parse_common_flag "$@" || die "unknown argument $1 (see --help)" ;;
  esac
  shift "$NSHIFT"
done

check_common
check "--accelerator-type (MMST_TPU_ACCELERATOR)" "$ACCELERATOR" '^v[0-9]+[a-z]*-[0-9]+$' \
  "a TPU accelerator type, e.g. v4-512 or v5litepod-256"
if [[ -z $RUNTIME ]]; then
  case $ACCELERATOR in
    v4-*) RUNTIME=tpu-ubuntu2204-base ;;
    v5litepod-*) RUNTIME=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
    *) die "no default runtime version for $ACCELERATOR: pass --runtime-version (MMST_TPU_RUNTIME)" ;;
  esac
fi
check "--runtime-version (MMST_TPU_RUNTIME)" "$RUNTIME" '^[A-Za-z0-9][A-Za-z0-9._-]*$' \
  "a TPU software version, e.g. tpu-ubuntu2204-base"
check "--capacity (MMST_TPU_CAPACITY)" "$CAPACITY" '^(on-demand|spot|reserved)$' "on-demand, spot or reserved"
check "--wait (MMST_TPU_WAIT)" "$WAIT" '^[01]$' "0 or 1"
check "--poll-seconds (MMST_TPU_POLL_SECONDS)" "$POLL_SECONDS" '^[1-9][0-9]*$' "a positive number of seconds"

capacity_flags=()
case $CAPACITY in
  spot) capacity_flags=(--spot) ;;
  reserved) capacity_flags=(--reserved) ;;
esac

if [[ $MODE == vm ]]; then
  say "creating TPU VM $NAME ($ACCELERATOR, $RUNTIME) in $ZONE"
  gc compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
    --version="$RUNTIME" "${capacity_flags[@]}"
  exit 0
fi

say "requesting queued resource $NAME ($ACCELERATOR, $RUNTIME) in $ZONE"
gc compute tpus queued-resources create "$NAME" --zone="$ZONE" --node-id="$NAME" \
  --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME" "${capacity_flags[@]}"

if [[ $WAIT == 1 ]]; then
  describe=(compute tpus queued-resources describe "$NAME" --zone="$ZONE" --format='value(state.state)')
  if [[ $DRY_RUN == 1 ]]; then
    gc "${describe[@]}"
    say "(would repeat this every $POLL_SECONDS s until the state is ACTIVE)"
    exit 0
  fi
  while :; do
    state=$(gc "${describe[@]}")
    case $state in
      ACTIVE) say "$NAME is ACTIVE"; break ;;
      FAILED | SUSPENDED) say "queued resource $NAME is $state; see: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE --project=$PROJECT"; exit 1 ;;
      *) say "$NAME is ${state:-not yet listed}; checking again in $POLL_SECONDS s"; sleep "$POLL_SECONDS" ;;
    esac
  done
else
  say "check with: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE --project=$PROJECT (wait for ACTIVE)"
fi
