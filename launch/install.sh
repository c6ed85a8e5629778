#!/usr/bin/env bash
# Installs the project on every worker of the slice: the source, a Python venv with the project and
# jax[tpu], and (with --bucket) the GCS bucket mounted read-only at /gcs/BUCKET.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SOURCE=${MMST_SOURCE:-$(dirname "$LAUNCH_DIR")}
REF=${MMST_SOURCE_REF:-HEAD}
BUCKET=${MMST_TPU_BUCKET:-}
PYTHON=${MMST_PYTHON:-python3.11}

usage() {
  cat <<EOF
usage: $SCRIPT_NAME [flags]

Puts the project on every worker (--worker=all) in ~/REMOTE_DIR/src, creates ~/REMOTE_DIR/venv
with 'pip install -r requirements.txt -e .' and jax[tpu] at the version requirements.txt pins, and
with --bucket mounts that bucket read-only at /gcs/BUCKET on every worker (gcsfuse), so that a
checkpoint or data folder in it is a local path: --gin.tasks.data_dir.path="'/gcs/BUCKET/data'".
Run it again after a change: it replaces the source and updates the venv.

flags (flag, environment variable):
  --source SRC     MMST_SOURCE      a local git checkout (default: the one holding this script),
                                    shipped as 'git archive REF' (committed files only); or a git
                                    URL (https://, ssh://, git@) that every worker clones
  --ref REF        MMST_SOURCE_REF  commit, branch or tag to install (default HEAD)
  --bucket BUCKET  MMST_TPU_BUCKET  GCS bucket to mount at /gcs/BUCKET (optional)
  --python PY      MMST_PYTHON      Python for the venv (default python3.11; installed if missing)

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  NSHIFT=1
  case $1 in
    -h | --help) usage; exit 0 ;;
    --source | --source=*) flag_value "$@"; SOURCE=$VALUE ;;
    --ref | --ref=*) flag_value "$@"; REF=$VALUE ;;
    --bucket | --bucket=*) flag_value "$@"; BUCKET=$VALUE ;;
    --python | --python=*) flag_value "$@"; PYTHON=$VALUE ;;
    *) parse_common_flag "$@" || die "unknown argument $1 (see --help)" ;;
  esac
  shift "$NSHIFT"
done

check_common
check "--ref (MMST_SOURCE_REF)" "$REF" '^[A-Za-z0-9_][A-Za-z0-9_./^~-]*$' "a commit, branch or tag"
check "--python (MMST_PYTHON)" "$PYTHON" '^python3\.[0-9]+$' "e.g. python3.11"
BUCKET=${BUCKET#gs://}
BUCKET=${BUCKET%/}
if [[ -n $BUCKET ]]; then
  check "--bucket (MMST_TPU_BUCKET)" "$BUCKET" '^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$' \
    "a bucket name (or gs://NAME), e.g. my-bucket"
fi

src="$REMOTE_DIR/src"
worker_install=(bash "$src/launch/on_worker/install.sh" --python "$PYTHON")
[[ -z $BUCKET ]] || worker_install+=(--bucket "$BUCKET")
replace_src="rm -rf $(shquote "$src") && mv $(shquote "$src.new") $(shquote "$src")"

if [[ $SOURCE =~ ^(https://|http://|ssh://|git@|file://) ]]; then
  say "installing $SOURCE at $REF on every worker of $NAME"
  on_workers "set -e; mkdir -p $(shquote "$REMOTE_DIR"); rm -rf $(shquote "$src.new"); \
git clone --quiet $(shquote "$SOURCE") $(shquote "$src.new"); \
git -C $(shquote "$src.new") checkout --quiet $(shquote "$REF"); $replace_src; $(shjoin "${worker_install[@]}")"
  exit 0
fi

[[ -d $SOURCE ]] || die "--source (MMST_SOURCE)=$SOURCE is neither a folder nor a git URL"
git -C "$SOURCE" rev-parse --verify --quiet "$REF^{commit}" >/dev/null ||
  die "--source (MMST_SOURCE)=$SOURCE has no commit $REF: pass a git checkout and --ref"
[[ -f $SOURCE/requirements.txt && -f $SOURCE/launch/on_worker/install.sh ]] ||
  die "--source (MMST_SOURCE)=$SOURCE is not a checkout of this project (no requirements.txt or launch/)"
if [[ $REF == HEAD && -n $(git -C "$SOURCE" status --porcelain --untracked-files=no) ]]; then
  say "warning: $SOURCE has uncommitted changes; only committed files are installed"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
archive="$tmp/mmst-src.tar.gz"
say "installing $SOURCE at $REF ($(git -C "$SOURCE" rev-parse --short "$REF^{commit}")) on every worker of $NAME"
run_cmd git -C "$SOURCE" archive --format=tar.gz --output="$archive" "$REF"
gc compute tpus tpu-vm scp "$archive" "$NAME:mmst-src.tar.gz" --zone="$ZONE" --worker=all
on_workers "set -e; rm -rf $(shquote "$src.new"); mkdir -p $(shquote "$src.new"); \
tar -xzf mmst-src.tar.gz -C $(shquote "$src.new"); rm -f mmst-src.tar.gz; $replace_src; \
$(shjoin "${worker_install[@]}")"
