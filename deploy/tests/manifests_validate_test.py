#!/usr/bin/python3 -B
"""kubernetes-validate --strict (the Kubernetes OpenAPI schemas, rejecting unknown fields) accepts
every object that the base, the overlays (TLS too) and the submit Jobs render to."""
import os
import subprocess
import sys

import deploy_testlib as lib

# The oldest Kubernetes the manifests need (podReplacementPolicy, grpc probes: 1.29), kubectl's
# (1.32), and the validator's newest schemas (its default).
VERSIONS = ["1.29.0", "1.32.0", None]


def main():
    kubectl = lib.require_tool("kubectl", "kubectl 1.32 with kustomize")
    validator = lib.require_tool("kubernetes-validate", "pip install kubernetes-validate")
    tree = lib.k8s_tree()
    out = lib.temp_dir()
    failures = []
    for kustomization in lib.KUSTOMIZATIONS:
        if kustomization == lib.CERT_MANAGER:
            continue  # cert-manager's kinds have no Kubernetes schema; kustomize_render_test checks.
        path = os.path.join(out, kustomization.replace("/", "_") + ".yaml")
        with open(path, "w") as f:
            f.write(lib.render(kubectl, tree, kustomization))
        for version in VERSIONS:
            command = [validator, "--strict", "--no-warn", path]
            if version:
                command[1:1] = ["-k", version]
            result = subprocess.run(command, capture_output=True, text=True)
            label = "%s against %s" % (kustomization, version or "the newest schemas")
            output = (result.stdout + result.stderr).strip()
            print("== %s (exit %d)\n%s" % (label, result.returncode, output))
            if result.returncode == 0:
                continue
            if version == VERSIONS[0] and "could not be validated" in output:
                print("(this kubernetes-validate has no %s schemas; not checked)" % version)
                continue
            failures.append(label)
    if failures:
        print("FAIL: " + ", ".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
