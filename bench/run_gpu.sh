#!/usr/bin/env bash
# bench/gpu_throughput.py on a lent GPU machine (the device tool; see bench/README.md).
#
# The GPU image has python3 3.12 with torch (CUDA), transformers, tokenizers, numpy, pillow,
# opencv-python-headless, scipy, safetensors, huggingface-hub, pyyaml, click, requests; it has no
# network. What genguard needs besides travels as wheels in .whl/ (ignored by git):
#
#   here, once:   echo /.whl/ >> .git/info/exclude && bash bench/run_gpu.sh fetch
#   there:        device run  carry [".whl"]  timeout_s 600  command:
#                 PYTHONUNBUFFERED=1 bash bench/run_gpu.sh run --without-semantic 2>&1 | tee $OUT/gpu_throughput.log
#
# The image's own OpenCV has no Haar cascades (seen 2026-11-26; OpenCV 5 dropped them), which the
# bias check's face detector needs: genguard pins opencv-python-headless<5. That wheel (62 MB) does
# not fit in one carry with the others, so it travels in a call of its own, on the same warm machine,
# just before `run`:
#
#   here, once:   echo /.cv/ >> .git/info/exclude && bash bench/run_gpu.sh fetch-opencv
#   there:        device run  carry [".cv"]  command: bash bench/run_gpu.sh opencv
#                 (installs it into /tmp/site only where the image's cv2 lacks CascadeClassifier)
#
# `run` passes its arguments to bench/gpu_throughput.py (default: SD 1.5 at 512 and SDXL at 1024,
# 25 steps, batch 1, 4, 8, workers 4). Budget, measured on an H100 (2026-11-26): one SDXL batch of 8
# at 25 steps takes 9.5 s, of 4 about 4.8 s, an SD 1.5 batch of 8 1.7 s; SD 1.5 batch 4 and 8 at
# 8 rounds plus SDXL batch 4 and 8 at 4 rounds ran in about 5 minutes. The wheels must stay under
# the tool's 64 MiB carry limit (`fetch` prints their size).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  diffusers==0.42.1 importlib-metadata==10.2.0
  c2pa-python==0.38.1 toml==0.10.2 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pyahocorasick==2.3.1
)

# OpenCV 4's Haar cascades in reach (what the bias check's face detector needs)
has_cascades() { python3 -c "import cv2, sys; sys.exit(not hasattr(cv2, 'CascadeClassifier'))"; }

case "${1:-}" in
  fetch)
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${WHEELS[@]}"
    du -sh .whl
    ;;
  fetch-opencv)
    mkdir -p .cv
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d .cv opencv-python-headless==4.14.0.94
    du -sh .cv
    ;;
  opencv)
    python3 -c "import cv2; print('image cv2', cv2.__version__)" || true
    if has_cascades; then
      echo "the image's OpenCV has Haar cascades: nothing to install"
    else
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .cv/*.whl
    fi
    PYTHONPATH=/tmp/site python3 -c "import cv2; print('cv2', cv2.__version__, cv2.__file__)"
    ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
    if ! has_cascades; then
      echo "OpenCV without Haar cascades here: run 'bash bench/run_gpu.sh opencv' (carry .cv) first" >&2
      exit 3
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 bench/gpu_throughput.py --params-only
    python3 bench/gpu_throughput.py --device cuda "$@"
    ;;
  *)
    echo "usage: bash bench/run_gpu.sh fetch | fetch-opencv | opencv | run [gpu_throughput.py options]" >&2
    exit 2
    ;;
esac
