#!/bin/bash
# Prepares one TPU VM worker for launch/tpu.py; idempotent (rerun on every
# attempt). Usage: tpu_bootstrap.sh CODE_DIR [BUCKET ...]
#   - a virtualenv ~/venv-distill with CODE_DIR installed (.[tpu]: jax[tpu]);
#   - Cloud Storage FUSE mounts of each BUCKET at /gcs/BUCKET.
set -euo pipefail
code_dir=$1; shift
if [ ! -x ~/venv-distill/bin/python ]; then
  python3 -m venv ~/venv-distill
fi
~/venv-distill/bin/pip install -q --upgrade pip
~/venv-distill/bin/pip install -q -e "${code_dir}[tpu]"
if [ "$#" -gt 0 ] && ! command -v gcsfuse > /dev/null; then
  repo="gcsfuse-$(lsb_release -c -s)"
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt ${repo} main" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null
  sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
fi
for bucket in "$@"; do
  mount_point="/gcs/${bucket}"
  if ! mountpoint -q "${mount_point}"; then
    sudo mkdir -p "${mount_point}" && sudo chown "$(id -u):$(id -g)" "${mount_point}"
    gcsfuse --implicit-dirs --rename-dir-limit=100000 "${bucket}" "${mount_point}"
  fi
done
