#!/usr/bin/env bash
# Installs (idempotently) every Debian package interest-ps builds and tests against.
# CUDA, NCCL and cuBLAS are not Debian packages here: they are used from /usr/local/cuda when
# present (the build's IPS_CUDA=AUTO turns CUDA on when nvcc is found).
# Usage: launch/install_deps.sh [--with-peer]   (--with-peer adds PyTorch for the peer benchmarks)
set -euo pipefail

packages=(
  build-essential cmake g++ pkg-config
  libopenmpi-dev openmpi-bin
  libprotobuf-dev protobuf-compiler
  libgoogle-glog-dev libgflags-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-dev zlib1g-dev
  clang-14 libclang-rt-14-dev   # libFuzzer targets and sanitizers
  gnuplot-nox                   # scaling plots
)
if [[ "${1:-}" == "--with-peer" ]]; then
  packages+=(python3-torch python3-numpy python3-sklearn)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
