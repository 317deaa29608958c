#!/bin/bash
# On the build machine (Bazel, nvcc): builds the GPU benchmark, the GPU tests and the cluster's
# binaries and copies them into bench/gpu/pack/ with the non-CUDA shared libraries they need (the
# benchmark needs none), the corpus of the end-to-end recipe and COMMIT; then packs it all as
# bench/gpu/pack.tar.xz, small enough for the device tool's carry (README.md).
#   CORPUS: the end-to-end recipe's text (default ../shared/data/tinyshakespeare.txt; skipped if
#           missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
tests="kernels_test layers_test gpt_cuda_test gpt_cuda_stage_test device_test cuda_status_test device_model_test"
targets="//bench/gpu:gpu_model_bench //client:psctl //coordinator:ps_coordinator
         //server:ps_server //worker:ps_worker"
for t in $tests; do targets="$targets //worker/cuda:$t"; done
bazel build $targets
pack=bench/gpu/pack
rm -rf "$pack" bench/gpu/pack.tar.xz
mkdir -p "$pack/lib" "$pack/bin" "$pack/data"
cp bazel-bin/bench/gpu/gpu_model_bench "$pack/"
for t in $tests; do cp "bazel-bin/worker/cuda/$t" "$pack/"; done
cp bazel-bin/client/psctl bazel-bin/coordinator/ps_coordinator bazel-bin/server/ps_server \
  bazel-bin/worker/ps_worker "$pack/bin/"
chmod u+w "$pack"/* "$pack"/bin/*
# Shared libraries from Debian packages (Abseil, protobuf, gRPC, OpenBLAS, gtest...) that a GPU
# machine lacks, and Bazel's own (_solib_k8/*.so: test binaries link the project's libraries
# dynamically, found through a RUNPATH relative to bazel-bin that the copies lose); glibc,
# libstdc++ and the CUDA libraries stay the machine's own. ldd runs on the originals in bazel-bin,
# where every RUNPATH resolves.
for t in $tests; do ldd "bazel-bin/worker/cuda/$t"; done | awk '/=> \// {print $3}' > "$pack/.libs"
for binary in "$pack"/bin/*; do ldd "$binary"; done | awk '/=> \// {print $3}' >> "$pack/.libs"
if grep -q "not found" < <(for t in $tests; do ldd "bazel-bin/worker/cuda/$t"; done); then
  echo "pack: a test binary has an unresolved library:" >&2
  for t in $tests; do ldd "bazel-bin/worker/cuda/$t" | grep "not found" >&2 || true; done
  exit 1
fi
sort -u "$pack/.libs" | grep -v -E '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so|/usr/local/cuda/' |
  while read -r lib; do cp -L "$lib" "$pack/lib/"; done
rm "$pack/.libs"
# What the GPU machine will do: every packed binary must find its libraries in lib/ (and the
# CUDA toolkit's, which this machine has too).
for binary in "$pack"/*_test "$pack"/bin/* "$pack"/gpu_model_bench; do
  if LD_LIBRARY_PATH="$pack/lib" ldd "$binary" | grep "not found"; then
    echo "pack: $binary misses the libraries above" >&2
    exit 1
  fi
done
corpus=${CORPUS:-../shared/data/tinyshakespeare.txt}
if [ -f "$corpus" ]; then
  cp "$corpus" "$pack/data/tinyshakespeare.txt"
else
  echo "pack: no corpus at $corpus: run_e2e.sh will need CORPUS" >&2
fi
(git rev-parse HEAD 2>/dev/null || echo unknown) | tr -d '\n' > "$pack/COMMIT"
git diff --quiet 2>/dev/null || echo -n "-dirty" >> "$pack/COMMIT"
tar -C bench/gpu -cf - pack | xz -T0 -6 > bench/gpu/pack.tar.xz
du -sh "$pack" "$pack/lib" bench/gpu/pack.tar.xz
echo "gpu_model_bench needs:"; ldd "$pack/gpu_model_bench" | awk '{print "  " $1}'
