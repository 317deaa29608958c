#!/bin/bash
# On the build machine (Bazel, nvcc): builds the GPU benchmark and the GPU tests and copies them
# into bench/gpu/pack/ with the non-CUDA shared libraries the tests need (the benchmark needs
# none), ready to carry to a GPU machine that has no Bazel (README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
targets="//bench/gpu:gpu_model_bench //worker/cuda:kernels_test //worker/cuda:layers_test
         //worker/cuda:gpt_cuda_test //worker/cuda:device_test //worker/cuda:cuda_status_test
         //worker/cuda:device_model_test"
bazel build $targets
pack=bench/gpu/pack
rm -rf "$pack"
mkdir -p "$pack/lib"
cp bazel-bin/bench/gpu/gpu_model_bench "$pack/"
for t in kernels_test layers_test gpt_cuda_test device_test cuda_status_test device_model_test; do
  cp "bazel-bin/worker/cuda/$t" "$pack/"
done
chmod u+w "$pack"/*
# Shared libraries from Debian packages (Abseil, protobuf, OpenBLAS, gtest...) that a GPU machine
# lacks; glibc, libstdc++ and the CUDA libraries stay the machine's own.
for binary in "$pack"/*_test; do
  ldd "$binary" | awk '/=> \// {print $3}'
done | sort -u | grep -v -E '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so|/usr/local/cuda/' |
  while read -r lib; do cp -L "$lib" "$pack/lib/"; done
(git rev-parse HEAD 2>/dev/null || echo unknown) | tr -d '\n' > "$pack/COMMIT"
git diff --quiet 2>/dev/null || echo -n "-dirty" >> "$pack/COMMIT"
du -sh "$pack" "$pack/lib"
echo "gpu_model_bench needs:"; ldd "$pack/gpu_model_bench" | awk '{print "  " $1}'
