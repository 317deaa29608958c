# The CUDA 13 runtime on Debian 12: the base of ps-worker-gpu that deploy/build_images.sh makes when
# NVIDIA's image (nvidia/cuda:13.0.1-runtime-ubuntu24.04, the Dockerfile's default) cannot be pulled.
# The build context is a folder holding lib/: the CUDA libraries the CUDA worker links (`ldd`:
# libcudart, libcublas, libcublasLt), copied from a CUDA 13 toolkit. The GPU driver (libcuda.so.1)
# is not in the image: the NVIDIA container toolkit mounts it, as for NVIDIA's images, when the
# NVIDIA_* variables below ask for it.
ARG RUNTIME_BASE_IMAGE=debian:12-slim
FROM ${RUNTIME_BASE_IMAGE}
COPY lib/ /usr/local/cuda-13.0/lib64/
RUN ln -s cuda-13.0 /usr/local/cuda \
    && echo /usr/local/cuda/lib64 > /etc/ld.so.conf.d/cuda.conf \
    && ldconfig
# As in NVIDIA's runtime images (the container toolkit reads them; /usr/local/nvidia is where some
# installations mount the driver).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=cuda>=13.0 \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64
