#!/usr/bin/python3 -B
"""`kubectl kustomize` renders the base, every overlay and the submit Job, each into the objects it
should hold, with no $(VAR) left that the container cannot resolve, and the overlays' Jobs and
PodDisruptionBudgets sized by NUM_SERVERS / NUM_WORKERS."""
import re
import sys

import deploy_testlib as lib

EXPECTED = {
    "base": {"ConfigMap/ps-job", "ConfigMap/ps-settings", "Service/ps-coordinator",
             "Deployment/ps-coordinator", "Service/ps-server", "Job/ps-server",
             "PodDisruptionBudget/ps-server", "Job/ps-worker", "PodDisruptionBudget/ps-worker"},
    "submit": {"Job/ps-submit"},
}


def unresolved_references(kustomization, objects):
    """$(VAR) in a container's command, args or env that Kubernetes would leave as it is."""
    settings = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            settings[o["metadata"]["name"]] = set(o.get("data", {}))
    if kustomization == "submit":  # Applied beside an overlay, whose ConfigMaps it uses.
        settings["ps-settings"] = set(l.split("=")[0] for l in open(
            lib.repo_path("deploy", "k8s", "base", "settings.env")) if re.match(r"\w+=", l))
    problems = []
    for o in objects:
        if o["kind"] not in ("Deployment", "Job"):
            continue
        spec = o["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = set()
            if o["kind"] == "Job" and o["spec"].get("completionMode") == "Indexed":
                names.add("JOB_COMPLETION_INDEX")  # Added by the Job controller.
            for source in c.get("envFrom", []):
                names |= settings.get(source["configMapRef"]["name"], set())
            texts = list(c.get("command", [])) + list(c.get("args", []))
            for e in c.get("env", []):
                names.add(e["name"])
                texts.append(e.get("value", ""))
            for text in texts:
                for ref in re.findall(r"(?<!\$)\$\(([^)]*)\)", text):
                    if ref not in names:
                        problems.append("%s: %s/%s container %s: $(%s) is not defined"
                                        % (kustomization, o["kind"], o["metadata"]["name"],
                                           c["name"], ref))
    return problems


def cluster_size_mismatches(kustomization, objects):
    """The Jobs and PodDisruptionBudgets follow NUM_SERVERS / NUM_WORKERS of ps-settings."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    settings = by_name[("ConfigMap", "ps-settings")]["data"]
    problems = []
    for setting, name in (("NUM_SERVERS", "ps-server"), ("NUM_WORKERS", "ps-worker")):
        want = int(settings[setting])
        job = by_name[("Job", name)]["spec"]
        pdb = by_name[("PodDisruptionBudget", name)]["spec"]
        got = {"Job completions": job.get("completions"), "Job parallelism": job.get("parallelism"),
               "PodDisruptionBudget minAvailable": pdb.get("minAvailable")}
        for field, value in got.items():
            if value != want:  # Also catches "2" (a string: a percentage to Kubernetes).
                problems.append("%s: %s %s is %r, not %s=%d"
                                % (kustomization, name, field, value, setting, want))
    return problems


def main():
    kubectl = lib.require_tool("kubectl", "kubectl 1.32 with kustomize")
    lib.require_yaml()
    tree = lib.k8s_tree()
    failures = []
    for kustomization in lib.KUSTOMIZATIONS:
        try:
            objects = lib.render_objects(kubectl, tree, kustomization)
        except RuntimeError as e:
            failures.append(str(e))
            continue
        names = {"%s/%s" % (o["kind"], o["metadata"]["name"]) for o in objects}
        want = EXPECTED.get(kustomization, EXPECTED["base"])
        if names != want:
            failures.append("%s: got %s, want %s" % (kustomization, sorted(names), sorted(want)))
        for o in objects:
            labels = o["metadata"].get("labels", {})
            for key in ("app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"):
                if key not in labels:
                    failures.append("%s: %s/%s lacks label %s"
                                    % (kustomization, o["kind"], o["metadata"]["name"], key))
        failures += unresolved_references(kustomization, objects)
        if kustomization in lib.OVERLAYS:
            failures += cluster_size_mismatches(kustomization, objects)
        print("rendered %s: %d objects" % (kustomization, len(objects)))
    if failures:
        print("FAIL:\n" + "\n".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
