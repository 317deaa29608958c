#!/usr/bin/python3 -B
"""The images, built and run: deploy/build_images.sh --prebuilt builds the five images with buildah,
then, for each overlay plus the submit Job, every pod's containers run from their images (`buildah
run --isolation chroot`, which shares the host's network) with exactly the command, args and
environment that manifests_run_test.py resolves from the rendered manifests (cluster DNS names ->
127.0.0.1, container ports -> free ports; ConfigMap and emptyDir volumes -> folders mounted at their
mountPath). The submit Job's psctl (from the psctl image) must see the job, which trains on the
corpus baked into the worker images, SUCCEED, and the workers and servers must exit 0. Then every
image must run as user 10001 (its USER, and what `id -u` says in it), hold every library its binary
links (ldd; the GPU worker is the CUDA build), hold no build tools (compilers, Bazel, nvcc, -dev
packages) and stay under its size budget (deploy/README.md).

Not a Bazel test: it runs `bazel build` on the host (build_images.sh --prebuilt). scripts/test.sh
runs it; by hand: python3 deploy/tests/images_run_test.py [--no-build]. Needs root, buildah,
podman, debootstrap (scripts/setup.sh), kubectl and PyYAML; without them it passes with a
"SKIPPED: ..." line."""
import os
import re
import signal
import subprocess
import sys
import time

import deploy_testlib as lib
import manifests_run_test as run

TAG = "dev"  # What the overlays' images: blocks set (newTag).
TARGETS = ["ps-coordinator", "ps-server", "ps-worker", "ps-worker-gpu", "psctl"]
# Size budgets in MB (10^6 bytes, as build_images.sh prints them); measured 2026-12: 112, 111, 161,
# 740, 161. ps-worker-gpu is mostly cuBLASLt (542 MB).
SIZE_BUDGET_MB = {"ps-coordinator": 150, "ps-server": 150, "ps-worker": 200,
                  "ps-worker-gpu": 850, "psctl": 200}
# Build tools that must not be in a runtime image: programs on PATH, and Debian packages.
BUILD_PROGRAMS = ["gcc", "g++", "cc", "c++", "clang", "ld", "make", "bazel", "nvcc", "protoc",
                  "grpc_cpp_plugin", "pkg-config"]
BUILD_PACKAGES = re.compile(r"^((gcc|g\+\+|cpp)(-\d+)?|clang.*|binutils.*|bazel.*|make|"
                            r"build-essential|protobuf-compiler.*|pkg-?conf.*|cuda-.*|.*-dev)$")
USER = "10001"
BINARY = {"ps-coordinator": "ps_coordinator", "ps-server": "ps_server", "ps-worker": "ps_worker",
          "ps-worker-gpu": "ps_worker", "psctl": "psctl"}


def buildah():
    return ["buildah", "--storage-driver", os.environ.get("PSRV_STORAGE_DRIVER", "vfs")]


def image_ref(image):
    """An image reference of the manifests (psrv/ps-server:dev) as buildah stores it."""
    return image if image.startswith("localhost/") else "localhost/" + image


class ImageCluster(run.Cluster):
    """The rendered pods, each container run from its image with buildah."""

    print_env = False  # The command line holds the container's environment (--env).

    def __init__(self, objects, workdir):
        super().__init__(objects, workdir)
        self.containers = []  # buildah working containers, removed by stop_all.
        self.volumes = {}  # (pod name, container name) -> ["-v", "host:path[:ro]", ...]

    def mounts(self, pod, container):
        """The volumes as folders here, mounted at their mountPath in the container: paths in
        argv and env stay as the manifests give them."""
        folders = super().mounts(pod, container)
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        options = []
        for mount in container.get("volumeMounts", []):
            local = folders[mount["mountPath"]]
            if "configMap" not in volumes[mount["name"]]:
                os.chmod(local, 0o1777)  # emptyDir / claim: writable by the pod's user.
            options += ["-v", "%s:%s%s" % (local, mount["mountPath"],
                                           ":ro" if mount.get("readOnly") else "")]
        self.volumes[(pod.name, container["name"])] = options
        return {}

    def argv_env(self, pod, container):
        argv, env = self.container_process(pod, container)
        image = image_ref(container["image"])
        name = "psrv-test-%s-%s" % (pod.name, container["name"])
        subprocess.run(buildah() + ["rm", name], capture_output=True)  # A leftover of a crash.
        made = subprocess.run(buildah() + ["from", "--pull-never", "--name", name, image],
                              capture_output=True, text=True)
        run.check(made.returncode == 0, "buildah from %s: %s" % (image, made.stderr.strip()))
        self.containers.append(name)
        command = buildah() + ["run", "--isolation", "chroot", "--env", "HOSTNAME=" + pod.hostname]
        for key, value in sorted(env.items()):
            command += ["--env", "%s=%s" % (key, value)]
        command += self.volumes.get((pod.name, container["name"]), [])
        # buildah runs in this process's environment (CONTAINERS_STORAGE_CONF...); the
        # container's is all in --env and the image.
        return command + [name, "--"] + argv, dict(os.environ)

    def stop_all(self):
        """SIGTERM to each buildah run's whole session (buildah and the process in the image),
        then SIGKILL; then the working containers go."""
        for _, process, _ in self.processes:
            if process.poll() is None:
                signal_group(process, signal.SIGTERM)
        for _, process, _ in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait()
        for _, process, _ in self.processes:
            signal_group(process, signal.SIGKILL)  # Anything left in a finished session.
        for name in self.containers:
            subprocess.run(buildah() + ["rm", name], capture_output=True)
        self.containers = []


def signal_group(process, sig):
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group is the buildah process's.
    except ProcessLookupError:
        pass


def in_image(image, command):
    """(exit code, output) of `sh -c command` run in a new container of `image`."""
    name = "psrv-test-check-%d" % os.getpid()
    subprocess.run(buildah() + ["rm", name], capture_output=True)
    made = subprocess.run(buildah() + ["from", "--pull-never", "--name", name, image],
                          capture_output=True, text=True)
    run.check(made.returncode == 0, "buildah from %s: %s" % (image, made.stderr.strip()))
    try:
        result = subprocess.run(buildah() + ["run", "--isolation", "chroot", name, "--", "sh", "-c",
                                             command], capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr
    finally:
        subprocess.run(buildah() + ["rm", name], capture_output=True)


def check_images():
    """User 10001, no build tools, size budgets; returns the failures."""
    failures = []
    for target in TARGETS:
        image = image_ref("psrv/%s:%s" % (target, TAG))
        inspect = subprocess.run(["podman", "--storage-driver",
                                  os.environ.get("PSRV_STORAGE_DRIVER", "vfs"), "image", "inspect",
                                  "--format", "{{.User}} {{.Size}}", image],
                                 capture_output=True, text=True)
        if inspect.returncode != 0:
            failures.append("%s: %s" % (image, inspect.stderr.strip()))
            continue
        user, size = inspect.stdout.split()
        size_mb = int(size) // 1000000
        code, uid = in_image(image, "id -u")
        programs = " ".join(BUILD_PROGRAMS)
        _, found = in_image(image, "for p in %s; do command -v $p; done; ls /usr/local/cuda/bin "
                            "2>/dev/null; true" % programs)
        _, packages = in_image(image, "dpkg-query -W -f '${Package}\\n'")
        binary = "/usr/local/bin/" + BINARY[target]
        _, libraries = in_image(image, "ldd " + binary)
        if "not found" in libraries or "=>" not in libraries:
            failures.append("%s: %s lacks shared libraries:\n%s" % (image, binary, libraries))
        # The GPU image's worker is the CUDA build (worker/cuda), the CPU one is not.
        if ("libcudart" in libraries) != (target == "ps-worker-gpu"):
            failures.append("%s: %s %s libcudart" % (image, binary, "lacks" if target ==
                                                       "ps-worker-gpu" else "links"))
        build_packages = sorted(p for p in packages.split()
                                if BUILD_PACKAGES.match(p))
        print("%s: USER %s, id -u %s, %d MB (budget %d), build programs: %s, build packages: %s"
              % (image, user, uid.strip(), size_mb, SIZE_BUDGET_MB[target],
                 found.split() or "none", build_packages or "none"))
        if user.split(":")[0] != USER or code != 0 or uid.strip() != USER:
            failures.append("%s: runs as %r (id -u: %r), not %s" % (image, user, uid.strip(), USER))
        if found.strip():
            failures.append("%s: holds build programs %s" % (image, found.split()))
        if build_packages:
            failures.append("%s: holds build packages %s" % (image, build_packages))
        if size_mb > SIZE_BUDGET_MB[target]:
            failures.append("%s: %d MB, over its budget of %d MB"
                            % (image, size_mb, SIZE_BUDGET_MB[target]))
    return failures


def manifest_images(objects):
    return sorted({c["image"] for o in objects if o["kind"] in ("Deployment", "Job")
                   for c in o["spec"]["template"]["spec"].get("initContainers", [])
                   + o["spec"]["template"]["spec"]["containers"]})


def main():
    start = time.time()
    for tool in ("buildah", "podman", "debootstrap"):
        lib.require_tool(tool, "bash scripts/setup.sh")
    kubectl = lib.require_tool("kubectl", "kubectl 1.32 with kustomize")
    lib.require_yaml()
    if os.getuid() != 0:
        lib.skip("not root: debootstrap and buildah's chroot isolation need root")
    probe = subprocess.run(buildah() + ["info"], capture_output=True, text=True)
    if probe.returncode != 0:
        lib.skip("buildah cannot run here: %s" % probe.stderr.strip()[-300:])

    if "--no-build" not in sys.argv:
        build = subprocess.run(["bash", lib.repo_path("deploy", "build_images.sh"), "--prebuilt",
                                "--tag", TAG, "--prune"])
        if build.returncode != 0:
            print("FAIL: deploy/build_images.sh --prebuilt exited %d" % build.returncode)
            sys.exit(1)
    built = time.time()

    tree = lib.k8s_tree()
    failures = []
    for overlay in lib.OVERLAYS:
        images = manifest_images(lib.render_objects(kubectl, tree, overlay)
                                 + lib.render_objects(kubectl, tree, "submit"))
        expected = {"psrv/%s:%s" % (t, TAG) for t in TARGETS}
        print("==== %s: images %s" % (overlay, " ".join(images)))
        unknown = [i for i in images if i not in expected]
        if unknown:
            failures.append("%s names images build_images.sh does not build: %s"
                            % (overlay, unknown))
            continue
        try:
            run.run_overlay(kubectl, tree, overlay, cluster_class=ImageCluster, local_corpus=False)
            print("==== %s from the images: PASS" % overlay)
        except run.TestFailure as e:
            print("==== %s from the images: FAIL: %s" % (overlay, e))
            failures.append(overlay)
    ran = time.time()
    try:
        failures += check_images()
    except run.TestFailure as e:
        failures.append(str(e))
    print("time: build %.0f s, runs %.0f s, image checks %.0f s"
          % (built - start, ran - built, time.time() - ran))
    if failures:
        print("FAIL:\n" + "\n".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
