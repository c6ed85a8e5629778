#!/usr/bin/env bash
# Runs `mmst` on every worker of the slice with the same gin files and bindings (SPMD).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BUCKET=${MMST_TPU_BUCKET:-}
RUN_DIR=${MMST_RUN_DIR:-}
FOREGROUND=${MMST_FOREGROUND:-0}
read -r -a gin_files <<<"${MMST_GIN_FILES:-}"
gin_bindings=()
while IFS= read -r line; do
  [[ -z $line ]] || gin_bindings+=("$line")
done <<<"${MMST_GIN_BINDINGS:-}"
envs=()
while IFS= read -r line; do
  [[ -z $line ]] || envs+=("$line")
done <<<"${MMST_RUN_ENV:-}"
mmst_args=()

usage() {
  cat <<EOF
usage: $SCRIPT_NAME [flags] [--gin_file=FILE ...] [--gin.NAME=VALUE ...] [-- SUBCOMMAND ARGS...]

Runs 'mmst SUBCOMMAND ARGS... --gin_file=... --gin.NAME=VALUE ...' (SUBCOMMAND: run by default) on
every worker of the slice (--worker=all), all with the same command line, plus
  --gin.RUN_DIR='RUN_DIR'                          (the run directory, in GCS)
  --gin.partitioning.initialize_distributed.auto=True  (JAX finds the slice's hosts by itself)
Each worker appends the output to ~/REMOTE_DIR/logs/mmst.log (see logs.sh). The run is detached:
it goes on when this command or your connection ends. After a preemption, recreate the slice,
install, and run the same command again: the run resumes from RUN_DIR.
Write gin string values quoted for gin, and quote them again for your shell:
  --gin.tasks.data_dir.path="'/gcs/my-bucket/data'"

flags (flag, environment variable):
  --gin_file FILE     MMST_GIN_FILES     gin file, repeatable (the variable: separated by spaces);
                                         paths relative to the project root or to gin_configs/
  --gin.NAME=VALUE    MMST_GIN_BINDINGS  gin binding, repeatable (the variable: one a line)
  --run-dir URI       MMST_RUN_DIR       run directory, gs://... (or --gin.RUN_DIR="'gs://...'");
                                         default with a bucket: gs://BUCKET/runs/NAME
  --bucket BUCKET     MMST_TPU_BUCKET    bucket for the default run directory
  --env NAME=VALUE    MMST_RUN_ENV       environment variable for mmst on the workers, repeatable
                                         (the variable: one a line), e.g. LIBTPU_INIT_ARGS=...
  --foreground        MMST_FOREGROUND=1  stay attached: stream every worker's output, wait for the end

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  NSHIFT=1
  case $1 in
    -h | --help) usage; exit 0 ;;
    --gin_file | --gin_file=*) flag_value "$@"; gin_files+=("$VALUE") ;;
    --gin.*=*) gin_bindings+=("${1#--gin.}") ;;
    --gin.*) die "$1 needs a value: --gin.NAME=VALUE" ;;
    --run-dir | --run-dir=*) flag_value "$@"; RUN_DIR=$VALUE ;;
    --bucket | --bucket=*) flag_value "$@"; BUCKET=$VALUE ;;
    --env | --env=*) flag_value "$@"; envs+=("$VALUE") ;;
    --foreground) FOREGROUND=1 ;;
    --) shift; mmst_args=("$@"); NSHIFT=$# ;;
    *) parse_common_flag "$@" || die "unknown argument $1 (see --help)" ;;
  esac
  shift "$NSHIFT"
done

check_common
check "--foreground (MMST_FOREGROUND)" "$FOREGROUND" '^[01]$' "0 or 1"
((${#mmst_args[@]})) || mmst_args=(run)
check "the mmst subcommand" "${mmst_args[0]}" '^[a-z]+$' "e.g. run, convert, eval"
for f in "${gin_files[@]}"; do
  check "--gin_file (MMST_GIN_FILES)" "$f" '^[A-Za-z0-9_./-]+\.gin$' \
    "a .gin file in the project, e.g. topologies/v4-512.gin"
  [[ $f != /* ]] || die "--gin_file=$f is an absolute path on this machine; name a gin file of the project"
  [[ -f $LAUNCH_DIR/../$f || -f $LAUNCH_DIR/../gin_configs/$f ]] ||
    die "--gin_file=$f: no such file in the project (looked in . and gin_configs/)"
done
for b in "${gin_bindings[@]}"; do
  [[ $b =~ ^[A-Za-z_][A-Za-z0-9_.]*(/[A-Za-z_][A-Za-z0-9_.]*)?=. ]] ||
    die "gin binding --gin.$b is not NAME=VALUE"
done
for e in "${envs[@]}"; do
  [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $e is not NAME=VALUE"
done

# The run directory: one of --run-dir, --gin.RUN_DIR=..., or the bucket's default; always in GCS,
# since the workers' disks are separate and go away with the slice.
bound_run_dir=
for b in "${gin_bindings[@]}"; do
  if [[ $b == RUN_DIR=* ]]; then
    [[ -z $bound_run_dir ]] || die "--gin.RUN_DIR is given twice"
    bound_run_dir=${b#RUN_DIR=}
    bound_run_dir=${bound_run_dir#[\'\"]}
    bound_run_dir=${bound_run_dir%[\'\"]}
  fi
done
if [[ -n $bound_run_dir ]]; then
  [[ -z $RUN_DIR ]] || die "the run directory is given twice: --run-dir (MMST_RUN_DIR) and --gin.RUN_DIR"
  check "--gin.RUN_DIR" "$bound_run_dir" '^gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/[^/]+)+/?$' \
    "a quoted GCS folder shared by all workers: --gin.RUN_DIR=\"'gs://BUCKET/runs/NAME'\""
else
  if [[ -z $RUN_DIR && -n $BUCKET && ${mmst_args[0]} == run ]]; then
    BUCKET=${BUCKET#gs://}
    RUN_DIR="gs://${BUCKET%/}/runs/$NAME"
  fi
  if [[ -n $RUN_DIR || ${mmst_args[0]} == run ]]; then
    check "--run-dir (MMST_RUN_DIR)" "$RUN_DIR" '^gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/[^/'\''"]+)+/?$' \
      "a GCS folder shared by all workers, e.g. gs://my-bucket/runs/bloom-176b (or set --bucket)"
    gin_bindings+=("RUN_DIR='$RUN_DIR'")
  fi
fi

command=("${mmst_args[@]}")
for f in "${gin_files[@]}"; do
  command+=("--gin_file=$f")
done
for b in "partitioning.initialize_distributed.auto=True" "${gin_bindings[@]}"; do
  command+=("--gin.$b")
done

worker_run=(bash "$REMOTE_DIR/src/launch/on_worker/run.sh")
((FOREGROUND == 0)) || worker_run+=(--foreground)
for e in "${envs[@]}"; do
  worker_run+=(--env "$e")
done
worker_run+=(-- "${command[@]}")

say "on every worker of $NAME: mmst $(shjoin "${command[@]}")"
on_workers "$(shjoin "${worker_run[@]}")"
if ((FOREGROUND == 0)) && [[ $DRY_RUN != 1 ]]; then
  say "started; follow worker 0 with: $(dirname "$0")/logs.sh (same settings)"
fi
