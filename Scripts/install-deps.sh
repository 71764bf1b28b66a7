#!/usr/bin/env bash
# Installs Quill's one system dependency, OpenBLAS, when it is missing (Debian/Ubuntu).
# On macOS nothing is needed: Quill uses Accelerate there.
set -euo pipefail
[ "$(uname)" = "Darwin" ] && exit 0
if pkg-config --exists openblas 2>/dev/null; then exit 0; fi
echo "Quill: installing libopenblas-dev (and pkg-config) with apt-get" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev pkg-config >/dev/null
