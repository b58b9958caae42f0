#!/usr/bin/env bash
# Installs what the oneDNN kernels (models/kernels/: the convolutions and
# batch norms of CPU runs) are compiled with: oneDNN's headers and library
# and a C++ compiler, from the system's packages (Debian/Ubuntu, as root).
# Best effort: where they cannot be installed, CPU runs use XLA's
# convolution and batch norm instead, and say so.
#
#   bash launch/install_cpu_kernels.sh
set -u
if [ -f /usr/include/oneapi/dnnl/dnnl.hpp ] && command -v g++ >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "install_cpu_kernels: no apt-get as root here; install oneDNN (libdnnl-dev) and g++ by hand for the faster CPU convolution" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q libdnnl-dev g++ >/dev/null 2>&1 || {
  apt-get update -q >/dev/null 2>&1
  apt-get install -y -q libdnnl-dev g++ >/dev/null 2>&1
} || echo "install_cpu_kernels: apt-get could not install libdnnl-dev g++; CPU runs use XLA's convolution" >&2
exit 0
