#!/usr/bin/env bash
# Runs on each TPU VM worker (launch/install.sh starts it there): creates REMOTE_DIR/venv with the
# project and jax[tpu]; with --bucket, mounts gs://BUCKET read-only at /gcs/BUCKET.
set -euo pipefail

PYTHON=python3.11
BUCKET=
while (($#)); do
  case $1 in
    --python) PYTHON=$2; shift 2 ;;
    --bucket) BUCKET=$2; shift 2 ;;
    *) echo "on_worker/install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$(dirname "$src")/venv"
host=$(hostname)

if ! command -v "$PYTHON" >/dev/null; then
  echo "$host: installing $PYTHON"
  sudo apt-get update -qq
  sudo apt-get install -y -qq software-properties-common
  sudo add-apt-repository -y ppa:deadsnakes/ppa
  sudo apt-get update -qq
  sudo apt-get install -y -qq "$PYTHON" "$PYTHON-venv"
fi

[[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$src/requirements.txt" -e "$src"
jax_version=$(sed -n 's/^jax==//p' "$src/requirements.txt")
[[ -n $jax_version ]] || { echo "$host: requirements.txt pins no jax==VERSION" >&2; exit 1; }
"$venv/bin/pip" install -q "jax[tpu]==$jax_version"

if [[ -n $BUCKET ]]; then
  if ! command -v gcsfuse >/dev/null; then
    echo "$host: installing gcsfuse"
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    sudo apt-get update -qq
    sudo apt-get install -y -qq fuse gcsfuse
  fi
  mount_point="/gcs/$BUCKET"
  if ! mountpoint -q "$mount_point"; then
    sudo mkdir -p "$mount_point"
    sudo chown "$(id -un)" "$mount_point"
    gcsfuse --implicit-dirs -o ro "$BUCKET" "$mount_point"
  fi
  echo "$host: gs://$BUCKET mounted read-only at $mount_point"
fi

echo "$host: installed $("$venv/bin/python" -c 'import jax; print("jax", jax.__version__)') in $venv"
