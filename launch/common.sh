# shellcheck shell=bash disable=SC2034  # the variables set here are read by the scripts
# Sourced by the launch scripts: flag parsing, configuration checks, the gcloud wrapper, quoting.
#
# Every setting is a flag or an environment variable (the flag wins). The settings that name the
# slice are shared by all scripts, so `export` them once and run the scripts one after the other:
#   --project  MMST_TPU_PROJECT   Google Cloud project
#   --zone     MMST_TPU_ZONE      zone of the slice, e.g. us-central2-b
#   --name     MMST_TPU_NAME      name of the TPU VM (and of its queued resource)
#   --mode     MMST_TPU_MODE      queued (a queued resource, default) or vm (a plain TPU VM)
#   --remote-dir MMST_REMOTE_DIR  folder under the workers' home: src/, venv/, logs/ (default mmst)
#   --dry-run  MMST_DRY_RUN=1     print every command instead of running it

SCRIPT_NAME=$(basename "$0")
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "$SCRIPT_NAME: error: needs bash 4.4 or newer, this is $BASH_VERSION (macOS: brew install bash)" >&2
  exit 2
fi
LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PROJECT=${MMST_TPU_PROJECT:-}
ZONE=${MMST_TPU_ZONE:-}
NAME=${MMST_TPU_NAME:-}
MODE=${MMST_TPU_MODE:-queued}
REMOTE_DIR=${MMST_REMOTE_DIR:-mmst}
DRY_RUN=${MMST_DRY_RUN:-0}

COMMON_FLAGS_HELP='common flags (flag, environment variable):
  --project ID        MMST_TPU_PROJECT   Google Cloud project (required)
  --zone ZONE         MMST_TPU_ZONE      zone of the slice, e.g. us-central2-b (required)
  --name NAME         MMST_TPU_NAME      name of the TPU VM and its queued resource (required)
  --mode queued|vm    MMST_TPU_MODE      queued resource (default) or plain TPU VM
  --remote-dir DIR    MMST_REMOTE_DIR    folder under each worker'"'"'s home (default mmst)
  --dry-run           MMST_DRY_RUN=1     print every command instead of running it
  -h, --help                             this help'

die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 2
}

say() {
  echo "$SCRIPT_NAME: $*" >&2
}

# `--flag value` or `--flag=value`: sets VALUE, and NSHIFT to the number of arguments used.
flag_value() {
  if [[ $1 == *=* ]]; then
    VALUE=${1#*=}
    NSHIFT=1
  else
    (($# >= 2)) || die "$1 needs a value"
    VALUE=$2
    NSHIFT=2
  fi
}

# Parses one of the common flags at "$@"; returns 1 when $1 is not one of them.
parse_common_flag() {
  NSHIFT=1
  case $1 in
    --project | --project=*) flag_value "$@"; PROJECT=$VALUE ;;
    --zone | --zone=*) flag_value "$@"; ZONE=$VALUE ;;
    --name | --name=*) flag_value "$@"; NAME=$VALUE ;;
    --mode | --mode=*) flag_value "$@"; MODE=$VALUE ;;
    --remote-dir | --remote-dir=*) flag_value "$@"; REMOTE_DIR=$VALUE ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# check VALUE_NAME VALUE REGEX WHAT: dies unless VALUE matches REGEX.
check() {
  local label=$1 value=$2 regex=$3 what=$4
  [[ -n $value ]] || die "$label is not set: $what"
  [[ $value =~ $regex ]] || die "$label=$value is not valid: $what"
}

# Checks the settings every script needs; call after parsing, before any gcloud call.
check_common() {
  check "--project (MMST_TPU_PROJECT)" "$PROJECT" '^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$' \
    "a Google Cloud project id, e.g. my-project"
  check "--zone (MMST_TPU_ZONE)" "$ZONE" '^[a-z]+-[a-z]+[0-9]+-[a-z]$' "a zone, e.g. us-central2-b"
  check "--name (MMST_TPU_NAME)" "$NAME" '^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$' \
    "lower-case letters, digits and hyphens, starting with a letter, e.g. mmst-v4-512"
  check "--mode (MMST_TPU_MODE)" "$MODE" '^(queued|vm)$' "queued or vm"
  check "--remote-dir (MMST_REMOTE_DIR)" "$REMOTE_DIR" '^[A-Za-z0-9_][A-Za-z0-9_.-]*$' \
    "one folder name under the workers' home, e.g. mmst"
  check "--dry-run (MMST_DRY_RUN)" "$DRY_RUN" '^[01]$' "0 or 1"
}

# Quotes one word for a POSIX shell: as is when it is plain, in double quotes when that needs no
# escapes (e.g. --gin.RUN_DIR='gs://b/r'), else in single quotes.
shquote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ $1 != *[\"\$\`\\!]* ]]; then
    printf '"%s"' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Quotes every argument and joins them with spaces: a command line a shell reads back as "$@".
shjoin() {
  local out='' word
  for word in "$@"; do
    out+="${out:+ }$(shquote "$word")"
  done
  printf '%s' "$out"
}

# Runs a command, or prints it (as a line a shell can run) under --dry-run.
run_cmd() {
  if [[ $DRY_RUN == 1 ]]; then
    shjoin "$@"
    echo
  else
    "$@"
  fi
}

# gcloud ARGS...: gcloud with the project appended.
gc() {
  run_cmd gcloud "$@" --project="$PROJECT"
}

# on_workers COMMAND: runs the shell command line COMMAND on every worker of the slice, over ssh.
on_workers() {
  gc compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}
