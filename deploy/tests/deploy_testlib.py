"""Shared by the deploy/ tests: finding the tools, rendering the kustomizations, reading the
Dockerfile's stages. Tests run from Bazel runfiles (cwd: the workspace root inside them)."""
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

# What the tests render, relative to deploy/k8s. The overlays are what users apply; submit is
# applied after one of them.
OVERLAYS = ["overlays/cpu-workers", "overlays/gpu-workers"]
# The same on mutual TLS (components/tls, submit-tls), and the optional cert-manager objects that
# make its Secrets (custom resources: rendered and checked, but not against Kubernetes' schemas).
TLS_OVERLAYS = ["overlays/cpu-workers-tls"]
CERT_MANAGER = "overlays/cert-manager"
KUSTOMIZATIONS = ["base"] + OVERLAYS + ["submit"] + TLS_OVERLAYS + ["submit-tls", CERT_MANAGER]


def workspace_root():
    """The tree holding deploy/, coordinator/... (Bazel's runfiles, else the checkout)."""
    srcdir = os.environ.get("TEST_SRCDIR")
    if srcdir:
        return os.path.join(srcdir, os.environ.get("TEST_WORKSPACE", "psrv"))
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def repo_path(*parts):
    return os.path.join(workspace_root(), *parts)


def temp_dir():
    return tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))


def skip(message):
    """Bazel 4 has no 'skipped' status: say so loudly and pass."""
    print("SKIPPED: " + message)
    sys.exit(0)


def find_tool(name):
    """`name` on PATH or where pip and apt put programs (Bazel's test PATH is short)."""
    home = pwd.getpwuid(os.getuid()).pw_dir
    extra = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin",
             os.path.join(home, ".local", "bin")]
    path = os.pathsep.join([os.environ.get("PATH", "")] + extra)
    return shutil.which(name, path=path)


def require_tool(name, install_hint):
    tool = find_tool(name)
    if tool is None:
        skip("%s is not installed (%s)" % (name, install_hint))
    return tool


def require_yaml():
    try:
        import yaml  # noqa: F401
    except ImportError:
        skip("PyYAML is not installed for %s (apt-get install python3-yaml)" % sys.executable)


def k8s_tree():
    """A plain copy of deploy/k8s: runfiles are symlinks to the checkout, which kustomize's load
    restrictions would take as files outside the kustomization root."""
    copy = os.path.join(temp_dir(), "k8s")
    shutil.copytree(repo_path("deploy", "k8s"), copy, symlinks=False)
    return copy


def render(kubectl, tree, kustomization):
    """`kubectl kustomize` output for tree/kustomization, as text (raises with kubectl's message)."""
    result = subprocess.run([kubectl, "kustomize", os.path.join(tree, kustomization)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("kubectl kustomize %s failed:\n%s" % (kustomization, result.stderr))
    return result.stdout


def render_objects(kubectl, tree, kustomization):
    import yaml
    return [doc for doc in yaml.safe_load_all(render(kubectl, tree, kustomization)) if doc]


def dockerfile_stages(path):
    """{stage name: {"from": image or stage, "lines": [instruction lines, continuations joined]}}.
    FROM's ${ARG}s take the defaults of the ARGs declared before the first FROM."""
    stages = {}
    args = {}
    current = None
    logical = ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            instruction = logical.strip()
            logical = ""
            match = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", instruction, re.IGNORECASE)
            if match:
                source = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)),
                                match.group(1))
                current = match.group(2) or source
                stages[current] = {"from": source, "lines": []}
            elif current is None and instruction.upper().startswith("ARG "):
                name, _, default = instruction[4:].strip().partition("=")
                args[name] = default
            elif current is not None:
                stages[current]["lines"].append(instruction)
    return stages


def stage_entrypoint(stages, stage):
    """The ENTRYPOINT of `stage` (exec form), following FROM to parent stages."""
    import json
    while stage in stages:
        for line in reversed(stages[stage]["lines"]):
            if line.upper().startswith("ENTRYPOINT"):
                return json.loads(line[len("ENTRYPOINT"):].strip())
        stage = stages[stage]["from"]
    return None


def image_stage(image):
    """The Dockerfile target an image reference was built from: its last path component, without
    tag or digest (deploy/README.md tags each image after its target)."""
    name = image.split("@")[0].rsplit("/", 1)[-1]
    return name.split(":")[0]
