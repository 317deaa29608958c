"""nvcc glue: CUDA sources compile in genrules (one per .cu file) into a static archive.

Bazel 4.2.3 has no CUDA rules and the build is offline, so nvcc runs as a plain tool. Targets built
by these macros are incompatible with `--define=cuda=off` (config_setting //:cuda_off): CPU-only
builds skip them and never run nvcc.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

# Ampere (A100) and Hopper (H100/H200) machine code, plus Hopper PTX that newer GPUs JIT-compile.
CUDA_GENCODE = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]

CUDA_NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    "-Xcompiler=-fPIC",
    "-Xcompiler=-O3",
    "--expt-relaxed-constexpr",
    "-I.",
]

# target_compatible_with for every target that needs the CUDA toolkit.
CUDA_ONLY = select({
    "//:cuda_off": ["@platforms//:incompatible"],
    "//conditions:default": [],
})

def cuda_static_library(name, srcs, hdrs = [], nvcc_flags = [], visibility = None):
    """Compiles each .cu of `srcs` with nvcc and archives the objects into lib<name>.a.

    Args:
      name: the archive is `lib<name>.a`, a genrule output that a cc_library lists in its srcs.
      srcs: .cu files.
      hdrs: every header the .cu files include (the genrule sandbox holds only listed files).
      nvcc_flags: extra nvcc flags.
      visibility: of the archive.
    """
    objects = []
    for src in srcs:
        stem = src[:-len(".cu")] if src.endswith(".cu") else src
        obj = "_%s_objs/%s.o" % (name, stem)
        native.genrule(
            name = "_%s_%s_nvcc" % (name, stem.replace("/", "_")),
            srcs = [src] + hdrs,
            outs = [obj],
            cmd = " ".join([NVCC] + CUDA_NVCC_FLAGS + CUDA_GENCODE + nvcc_flags +
                           ["-c", "$(location %s)" % src, "-o", "$@"]),
            message = "nvcc " + src,
            target_compatible_with = CUDA_ONLY,
        )
        objects.append(obj)
    native.genrule(
        name = name,
        srcs = objects,
        outs = ["lib%s.a" % name],
        cmd = "rm -f $@ && ar rcs $@ $(SRCS)",
        message = "ar lib%s.a" % name,
        target_compatible_with = CUDA_ONLY,
        visibility = visibility,
    )
