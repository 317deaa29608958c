#!/usr/bin/python3 -B
"""The runtime images hold every shared library their binary needs, checked without Docker: for
each Debian-based target of deploy/docker/Dockerfile, the packages it apt-installs (with those of
the stages it is built FROM, and their dependencies) must own every library that `ldd` finds for
its ENTRYPOINT binary here (the same Debian 12 packages). For the CUDA worker image, which copies
the worker's libraries from the build stage, only glibc and the GCC runtime may be left out."""
import os
import re
import shlex
import subprocess
import sys

import deploy_testlib as lib

BINARIES = {  # ENTRYPOINT basename -> Bazel target's runfile.
    "ps_coordinator": "coordinator/ps_coordinator",
    "ps_server": "server/ps_server",
    "ps_worker": "worker/ps_worker",
    "psctl": "client/psctl",
}
# Packages a Ubuntu 24.04 base provides in compatible (newer) versions.
PROVIDED_BY_ANY_BASE = {"libc6", "libgcc-s1", "libstdc++6"}


def apt_packages(stages, stage):
    """Packages `apt-get install`ed by `stage` and the stages it is built FROM."""
    packages = set()
    while stage in stages:
        for line in stages[stage]["lines"]:
            if not line.upper().startswith("RUN"):
                continue
            for command in re.split(r"&&|;", line[3:]):
                words = shlex.split(command)
                if "apt-get" in words and "install" in words:
                    after = words[words.index("install") + 1:]
                    packages |= {w for w in after if not w.startswith("-")}
        stage = stages[stage]["from"]
    return packages


def debian_based(stages, stage):
    while stage in stages:
        stage = stages[stage]["from"]
    return stage.split(":")[0] == "debian"


def closure(packages):
    """`packages` and everything they depend on (apt-cache, offline)."""
    result = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances"] + sorted(packages),
        capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("apt-cache depends %s: %s" % (" ".join(sorted(packages)),
                                                         result.stderr.strip()))
    return {l.strip() for l in result.stdout.splitlines() if l and not l.startswith((" ", "<"))}


CUDA_TOOLKIT = "/usr/local/cuda"


def needed_libraries(binary):
    """{library path: owning Debian package, or None} for every library `ldd` resolves."""
    result = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True)
    paths = re.findall(r"=>\s+(/\S+)", result.stdout)
    # Debian 12 merged /lib into /usr/lib; dpkg knows each file under one of the names.
    candidates = {p: {p, os.path.realpath(p), "/usr" + p, p.replace("/usr", "", 1)} for p in paths}
    search = subprocess.run(["dpkg", "-S"] + sorted(set().union(*candidates.values())),
                            capture_output=True, text=True)  # Exit 1: some names are unknown.
    owners = {}
    for line in search.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0]  # "libfoo:amd64" -> "libfoo"
    return {p: next((owners[c] for c in sorted(names) if c in owners), None)
            for p, names in candidates.items()}


def main():
    for tool in ("apt-cache", "dpkg", "ldd"):
        lib.require_tool(tool, "a Debian system")
    stages = lib.dockerfile_stages(lib.repo_path("deploy", "docker", "Dockerfile"))
    failures = []
    for stage in stages:
        entrypoint = lib.stage_entrypoint(stages, stage)
        if not entrypoint:
            continue
        binary = os.path.basename(entrypoint[0])
        if binary not in BINARIES:
            failures.append("%s: ENTRYPOINT %s is not one of %s" % (stage, entrypoint, BINARIES))
            continue
        libraries = needed_libraries(lib.repo_path(*BINARIES[binary].split("/")))
        # The binaries here are the CUDA build. The CPU images' binaries are built with
        # --define=cuda=off (no CUDA library linked); ps-worker-gpu's CUDA libraries come with its
        # base image (NVIDIA's, or docker/cuda-runtime.Dockerfile's), not from apt.
        libraries = {p: o for p, o in libraries.items() if not p.startswith(CUDA_TOOLKIT)}
        unowned = [path for path, owner in libraries.items() if owner is None]
        if unowned:
            failures.append("%s: no Debian package owns %s" % (stage, unowned))
        if debian_based(stages, stage):
            packages = apt_packages(stages, stage)
            try:
                available = closure(packages)
            except RuntimeError as e:
                failures.append("%s: %s" % (stage, e))
                continue
            missing = sorted({owner for owner in libraries.values()
                              if owner and owner not in available})
            print("%s (%s): apt-installs %s" % (stage, binary, " ".join(sorted(packages))))
            if missing:
                failures.append("%s: %s needs libraries of %s, which the image does not install"
                                % (stage, binary, ", ".join(missing)))
        else:
            # The stage copies ldd's list minus what the Dockerfile's `grep -Ev PATTERN` drops.
            text = "\n".join(stages["build"]["lines"])
            match = re.search(r"grep -Ev '([^']*)'", text)
            if not match:
                failures.append("%s: no `grep -Ev '...'` library filter in the build stage" % stage)
                continue
            dropped = {p: o for p, o in libraries.items() if re.search(match.group(1), p)}
            wrong = {p: o for p, o in dropped.items() if o not in PROVIDED_BY_ANY_BASE}
            print("%s (%s): copies %d libraries, leaves %s to the base image"
                  % (stage, binary, len(libraries) - len(dropped), sorted(dropped)))
            if wrong:
                failures.append("%s: the build stage leaves out %s, which %s does not provide"
                                % (stage, wrong, stages[stage]["from"]))
    if failures:
        print("FAIL:\n" + "\n".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
