#!/usr/bin/env bash
# Builds .dev/ (git-ignored), what scripts/gpu_session.sh expects beside the tracked tree on a lent
# GPU machine that reaches no network: the pygame wheel, a stand-in for PyAV, the training data.
# Then, from a session with a device (the run tool): carry [".dev"], command
#   OUT=$OUT bash scripts/gpu_session.sh 560
#
#   scripts/gpu_carry.sh [PYTHON_TAG]      # e.g. 312 for the GPU machine's python3.12 (default: ours)
set -eu
TAG=${1:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')}
DATA=${DATA:-../shared/data}
PIP=${PIP:-pip}
rm -rf .dev && mkdir -p .dev/whl .dev/avstub/av .dev/data/train .dev/data/val
"$PIP" download -q --no-deps --only-binary :all: --python-version "$TAG" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 pygame -d .dev/whl
# The demo source never decodes a file; the player's modules only need `import av` to succeed and
# av.error.FFmpegError to name an exception class.
cat > .dev/avstub/av/__init__.py <<'PY'
"""Stand-in for PyAV on a GPU machine without it (scripts/gpu_carry.sh): imports, never decodes."""
import types
error = types.SimpleNamespace(FFmpegError=type("FFmpegError", (Exception,), {}))
PY
# CBSD432 + CSun_Hays80 + CSet5 are 43 MB; Train400_gray would take the carry past its 64 MiB.
cp -r "$DATA/train/CBSD432" "$DATA/train/CSun_Hays80" .dev/data/train/
cp -r "$DATA/val/CSet5" .dev/data/val/
du -sh .dev
