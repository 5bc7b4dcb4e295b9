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
# `run` passes its arguments to bench/gpu_throughput.py (default: SD 1.5 at 512 and SDXL at 1024,
# 25 steps, batch 1, 4, 8, workers 2). Budget: building SDXL's 3.5B parameters on the GPU takes
# seconds; one SDXL batch of 8 at 25 steps about 10-20 s on an H100, so `--rounds 3` keeps the whole
# run near 5 minutes. The wheels must stay under the tool's 64 MiB carry limit (`fetch` prints their size).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  diffusers==0.42.1 importlib-metadata==10.2.0
  c2pa-python==0.38.1 toml==0.10.2 cryptography==50.0.2 cffi==2.1.1 pycparser==3.12
  SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  pyahocorasick==2.3.1
)

case "${1:-}" in
  fetch)
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${WHEELS[@]}"
    du -sh .whl
    ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 bench/gpu_throughput.py --params-only
    python3 bench/gpu_throughput.py --device cuda "$@"
    ;;
  *)
    echo "usage: bash bench/run_gpu.sh fetch | run [gpu_throughput.py options]" >&2
    exit 2
    ;;
esac
