#!/usr/bin/env bash
# Builds every image of deploy/docker/Dockerfile with buildah, with no Docker engine and no registry:
# the Debian 12 base images are made here with debootstrap (from the Debian mirror apt uses), and the
# GPU worker's base from the local CUDA toolkit (docker/cuda-runtime.Dockerfile). Tags them as the
# manifests name them (psrv/TARGET:TAG, stored as localhost/psrv/TARGET:TAG) and prints their sizes.
#
#   bash deploy/build_images.sh                  # everything, the binaries built inside the images
#   bash deploy/build_images.sh --prebuilt       # binaries from `bazel build -c opt` on this host
#   bash deploy/build_images.sh --save DIR       # also DIR/TARGET.tar (OCI archives)
#
# Options: --tag TAG (default dev), --targets "ps-server psctl ..." (default: all five),
# --rebuild-base (make the Debian base images again), --prune (then delete the build stages' images
# and every dangling image, i.e. older builds: vfs storage keeps a full copy per layer).
# Environment: PSRV_DEBIAN_MIRROR (default: the first URI of the apt sources), PSRV_STORAGE_DRIVER
# (default vfs), CUDA_HOME (default /usr/local/cuda). Needs root (debootstrap, buildah's chroot
# isolation), buildah, podman and debootstrap (scripts/setup.sh installs them). deploy/README.md,
# "With buildah, no Docker engine or registry".
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"  # debootstrap
ALL_TARGETS="ps-coordinator ps-server ps-worker ps-worker-gpu psctl"
TAG=dev
TARGETS=$ALL_TARGETS
PREBUILT=0
SAVE_DIR=""
REBUILD_BASE=0
PRUNE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) PREBUILT=1 ;;
    --save) SAVE_DIR=$2; shift ;;
    --tag) TAG=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --prune) PRUNE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build_images: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
  shift
done

DOCKERFILE=deploy/docker/Dockerfile
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
DRIVER=${PSRV_STORAGE_DRIVER:-vfs}
BUILDAH=(buildah --storage-driver "$DRIVER")
PODMAN=(podman --storage-driver "$DRIVER")
# The local base images (the Dockerfile's defaults are Docker Hub's and NVIDIA's).
BASE_IMAGE=localhost/debian:12
RUNTIME_BASE_IMAGE=localhost/debian:12-slim
CUDA_RUNTIME_IMAGE=localhost/psrv/cuda-runtime:13.0-debian12
CUDA_DEVEL_IMAGE=localhost/psrv/cuda-toolkit:13.0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/psrv-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log() { echo "build_images: $*" >&2; }
seconds() { date +%s; }
has_image() { "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1; }
# buildah bud as every build here: chroot isolation (no user namespaces here), cached layers, and
# the docker format (the OCI format drops SHELL, and the build stage needs bash's pipefail).
bud() {
  "${BUILDAH[@]}" bud --isolation chroot --layers --format docker --quiet "$@"
}

for tool in buildah podman debootstrap; do
  command -v "$tool" >/dev/null || { log "$tool is not installed (bash scripts/setup.sh)"; exit 1; }
done
if [ "$(id -u)" -ne 0 ]; then
  log "run as root (debootstrap and buildah's chroot isolation need it)"
  exit 1
fi

# ---- Debian 12 base images ------------------------------------------------------------------------
debian_mirror() {
  if [ -n "${PSRV_DEBIAN_MIRROR:-}" ]; then echo "$PSRV_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' \
        | grep -v -- '-security' | head -n1 || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" {print $2}' /etc/apt/sources.list 2>/dev/null \
                         | head -n1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_debian_bases() {
  local mirror rootfs start
  mirror=$(debian_mirror)
  rootfs="$WORK/rootfs"
  start=$(seconds)
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  # Like the official image: the release, its updates and the security archive.
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Also like it: apt keeps no package caches or index translations in image layers.
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import --change 'CMD ["bash"]' - "$BASE_IMAGE" >/dev/null
  # -slim, as Docker Hub's: no documentation, manual pages or translations, now or when installing.
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/lintian/*
  tar -C "$rootfs" -c . \
    | "${PODMAN[@]}" import --change 'CMD ["bash"]' - "$RUNTIME_BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  log "made $BASE_IMAGE and $RUNTIME_BASE_IMAGE in $(( $(seconds) - start )) s"
}

if [ "$REBUILD_BASE" -eq 1 ] || ! has_image "$BASE_IMAGE" || ! has_image "$RUNTIME_BASE_IMAGE"; then
  make_debian_bases
else
  log "reusing $BASE_IMAGE and $RUNTIME_BASE_IMAGE (--rebuild-base to make them again)"
fi

wants() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
GPU=0
wants ps-worker-gpu && GPU=1
if [ "$GPU" -eq 1 ] && [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  log "no CUDA toolkit at $CUDA_HOME: cannot make ps-worker-gpu (or give --targets without it)"
  exit 1
fi

# The library filter of the Dockerfile's build stage (one definition: the `grep -Ev '...'`).
LIB_FILTER=$(sed -n "s/.*grep -Ev '\([^']*\)'.*/\1/p" "$DOCKERFILE" | head -n1)
[ -n "$LIB_FILTER" ] || { log "no library filter in $DOCKERFILE"; exit 1; }

BINARIES_IMAGE=localhost/psrv/binaries:$TAG  # /out of the build stages, or of --prebuilt.
BUILD_IMAGE=localhost/psrv/build:$TAG
BUILD_CUDA_IMAGE=localhost/psrv/build-cuda:$TAG
TIMES=()

# ---- The binaries: built in the image (build, build-cuda) or on the host (--prebuilt) --------------
# Either way they end up in one folder (bin/, cuda/, lib/, data/: the build stages' /out), which the
# `prebuilt` stage turns into the small image $BINARIES_IMAGE the runtime targets copy from. (Passing
# the build stages themselves as BINARIES would work too, but every runtime build would then copy
# their 2.5-3.3 GB root file system: vfs storage has no copy-on-write.)
stage="$WORK/out"
mkdir -p "$stage/bin" "$stage/cuda" "$stage/lib" "$stage/data"
start=$(seconds)
if [ "$PREBUILT" -eq 1 ]; then
  # The same binaries as the build stages: -c opt, CPU-only for four, the CUDA worker for the GPU.
  bazel_bin=$(bazel info -c opt bazel-bin 2>/dev/null)
  if [ "$GPU" -eq 1 ]; then
    log "bazel build -c opt //worker:ps_worker (CUDA)"
    bazel build -c opt --jobs="${BAZEL_JOBS:-2}" //worker:ps_worker
    install -m 0755 "$bazel_bin/worker/ps_worker" "$stage/cuda/ps_worker"
    ldd "$stage/cuda/ps_worker" > "$WORK/cuda-worker.ldd"
  fi
  log "bazel build -c opt --define=cuda=off (coordinator, server, worker, psctl)"
  bazel build -c opt --define=cuda=off --jobs="${BAZEL_JOBS:-2}" //coordinator:ps_coordinator \
    //server:ps_server //worker:ps_worker //client:psctl
  install -m 0755 -t "$stage/bin" "$bazel_bin/coordinator/ps_coordinator" \
    "$bazel_bin/server/ps_server" "$bazel_bin/worker/ps_worker" "$bazel_bin/client/psctl"
  # As the build stage makes them: the demo corpus, and the worker's libraries for ps-worker-gpu.
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' \
    ! -name 'ascii-art' ! -name 'art' -print0 | sort -z | xargs -0 cat | grep -v '^%$' \
    > "$stage/data/fortunes.txt"
  ldd "$stage/bin/ps_worker" | awk '$3 ~ /^\// {print $3}' | grep -Ev "$LIB_FILTER" \
    | xargs -r cp -L -t "$stage/lib"
  TIMES+=("binaries (host bazel build -c opt + staging): $(( $(seconds) - start )) s")
else
  extract_out() {  # image: copies its /out into $stage.
    local c m
    c=$("${BUILDAH[@]}" from --pull=never "$1")
    m=$("${BUILDAH[@]}" mount "$c")
    cp -a "$m/out/." "$stage/"
    "${BUILDAH[@]}" umount "$c" >/dev/null
    "${BUILDAH[@]}" rm "$c" >/dev/null
  }
  log "building the build stage (setup.sh, bazel build -c opt inside the image; long)"
  bud --target build --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --ignorefile deploy/docker/Dockerfile.dockerignore -t "$BUILD_IMAGE" -f "$DOCKERFILE" .
  extract_out "$BUILD_IMAGE"
  TIMES+=("build stage (setup.sh + bazel build in the image): $(( $(seconds) - start )) s")
  if [ "$GPU" -eq 1 ]; then
    start=$(seconds)
    if [ "$REBUILD_BASE" -eq 1 ] || ! has_image "$CUDA_DEVEL_IMAGE"; then
      # The toolkit's files that nvcc and the link need (not its 2 GB of other libraries).
      log "making $CUDA_DEVEL_IMAGE from $CUDA_HOME"
      root=$(readlink -f "$CUDA_HOME")
      tk="$WORK/cuda-toolkit"
      mkdir -p "$tk/lib"
      cp -a "$root/bin" "$root/include" "$root/nvvm" "$tk/"
      if [ -e "$root/targets" ]; then cp -a "$root/targets" "$tk/"; fi
      if [ -L "$root/lib64" ]; then cp -a "$root/lib64" "$tk/"; fi  # lib64 -> lib: the -L path.
      cp -a "$root"/lib/libcudart.so* "$root"/lib/libcublas.so* "$root"/lib/libcublasLt.so* \
        "$root"/lib/libcudart_static.a "$root"/lib/libcudadevrt.a "$tk/lib/"
      if [ -d "$root/lib/stubs" ]; then cp -a "$root/lib/stubs" "$tk/lib/"; fi
      c=$("${BUILDAH[@]}" from scratch)
      "${BUILDAH[@]}" copy "$c" "$tk" /usr/local/cuda-13.0 >/dev/null
      "${BUILDAH[@]}" commit --quiet "$c" "$CUDA_DEVEL_IMAGE" >/dev/null
      "${BUILDAH[@]}" rm "$c" >/dev/null
      rm -rf "$tk"
    fi
    log "building build-cuda (the CUDA worker inside the image)"
    bud --target build-cuda --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      --build-arg "CUDA_DEVEL_IMAGE=$CUDA_DEVEL_IMAGE" \
      --ignorefile deploy/docker/Dockerfile.dockerignore -t "$BUILD_CUDA_IMAGE" -f "$DOCKERFILE" .
    # Its CUDA libraries as the image's loader resolves them (through the toolkit there).
    c=$("${BUILDAH[@]}" from --pull=never "$BUILD_CUDA_IMAGE")
    "${BUILDAH[@]}" run --isolation chroot "$c" -- ldd /out/cuda/ps_worker > "$WORK/cuda-worker.ldd"
    "${BUILDAH[@]}" rm "$c" >/dev/null
    extract_out "$BUILD_CUDA_IMAGE"
    TIMES+=("build-cuda stage (the CUDA worker in the image): $(( $(seconds) - start )) s")
  fi
fi
bud --target prebuilt --build-context "prebuilt-out=$stage" -t "$BINARIES_IMAGE" \
  -f "$DOCKERFILE" . >/dev/null
CUDA_BINARIES_IMAGE=$BINARIES_IMAGE

# ---- The GPU worker's base: Debian 12 + the CUDA libraries the CUDA worker links ------------------
if [ "$GPU" -eq 1 ]; then
  ctx="$WORK/cuda-runtime"
  mkdir -p "$ctx/lib"
  # ldd's CUDA libraries (resolved through the toolkit's rpath), taken from this host's toolkit.
  awk '$3 ~ /^\// {print $1}' "$WORK/cuda-worker.ldd" | while read -r soname; do
    if [ -e "$CUDA_HOME/lib64/$soname" ]; then cp -L "$CUDA_HOME/lib64/$soname" "$ctx/lib/"; fi
  done
  log "CUDA libraries for $CUDA_RUNTIME_IMAGE: $(ls "$ctx/lib" | tr '\n' ' ')"
  [ -n "$(ls "$ctx/lib")" ] || { log "the CUDA worker links no CUDA library?"; exit 1; }
  bud --build-arg "RUNTIME_BASE_IMAGE=$RUNTIME_BASE_IMAGE" -t "$CUDA_RUNTIME_IMAGE" \
    -f deploy/docker/cuda-runtime.Dockerfile "$ctx" >/dev/null
fi

# ---- The runtime images ---------------------------------------------------------------------------
for target in $TARGETS; do
  case " $ALL_TARGETS " in *" $target "*) ;; *) log "unknown target $target"; exit 2 ;; esac
  start=$(seconds)
  bud --target "$target" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "RUNTIME_BASE_IMAGE=$RUNTIME_BASE_IMAGE" \
    --build-arg "CUDA_RUNTIME_IMAGE=$CUDA_RUNTIME_IMAGE" --build-arg "BINARIES=$BINARIES_IMAGE" \
    --build-arg "CUDA_BINARIES=$CUDA_BINARIES_IMAGE" \
    --ignorefile deploy/docker/Dockerfile.dockerignore -t "psrv/$target:$TAG" \
    -f "$DOCKERFILE" . >/dev/null
  TIMES+=("$target: $(( $(seconds) - start )) s")
done

# buildah 1.28 leaves the working container of a stage that is only a FROM (binaries,
# cuda-binaries, cuda-toolkit) behind after each build: full copies of their image on vfs.
"${BUILDAH[@]}" containers --format '{{.ContainerID}} {{.ContainerName}}' \
  | awk '$2 ~ /^((cuda-)?binaries|cuda-toolkit)-working-container(-[0-9]+)?$/ {print $1}' \
  | xargs -r "${BUILDAH[@]}" rm >/dev/null

if [ "$PRUNE" -eq 1 ]; then
  for image in "$BUILD_IMAGE" "$BUILD_CUDA_IMAGE"; do
    if has_image "$image"; then "${BUILDAH[@]}" rmi "$image" >/dev/null; fi
  done
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
fi

echo "image                          size"
for target in $TARGETS; do
  size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "localhost/psrv/$target:$TAG")
  printf '%-30s %5d MB\n' "psrv/$target:$TAG" $(( size / 1000000 ))
done
printf 'time: %s\n' "${TIMES[@]}"

if [ -n "$SAVE_DIR" ]; then
  mkdir -p "$SAVE_DIR"
  for target in $TARGETS; do
    rm -f "$SAVE_DIR/$target.tar"
    "${BUILDAH[@]}" push --quiet "psrv/$target:$TAG" \
      "oci-archive:$SAVE_DIR/$target.tar:psrv/$target:$TAG"
    log "saved $SAVE_DIR/$target.tar"
  done
fi
