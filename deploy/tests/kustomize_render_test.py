#!/usr/bin/python3 -B
"""`kubectl kustomize` renders the base, every overlay (TLS and cert-manager too) and the submit
Jobs, each into the objects it should hold, with no $(VAR) left that the container cannot resolve,
the overlays' Jobs and PodDisruptionBudgets sized by NUM_SERVERS / NUM_WORKERS, every process of a
TLS overlay given its role's Secret, and a cert-manager Certificate per role with its OU."""
import re
import sys

import deploy_testlib as lib

ROLES = ["coordinator", "server", "worker", "operator", "viewer"]
EXPECTED = {
    "base": {"ConfigMap/ps-job", "ConfigMap/ps-settings", "Service/ps-coordinator",
             "Deployment/ps-coordinator", "Service/ps-server", "Job/ps-server",
             "PodDisruptionBudget/ps-server", "Job/ps-worker", "PodDisruptionBudget/ps-worker"},
    "submit": {"Job/ps-submit"},
    "submit-tls": {"Job/ps-submit"},
    lib.CERT_MANAGER: {"Issuer/ps-selfsigned", "Certificate/ps-ca", "Issuer/ps-ca"}
    | {"Certificate/ps-tls-" + role for role in ROLES},
}
# The process of each TLS Secret (Secret ps-tls-ROLE; the certificate's OU is ROLE).
TLS_ROLES = {"Deployment/ps-coordinator": "coordinator", "Job/ps-server": "server",
             "Job/ps-worker": "worker", "Job/ps-submit": "operator"}
TLS_FLAGS = ["--tls_cert=/etc/psrv/tls/tls.crt", "--tls_key=/etc/psrv/tls/tls.key",
             "--tls_ca=/etc/psrv/tls/ca.crt"]
PSCTL_TLS_ENV = {"PSCTL_TLS_CERT": "/etc/psrv/tls/tls.crt",
                 "PSCTL_TLS_KEY": "/etc/psrv/tls/tls.key",
                 "PSCTL_TLS_CA": "/etc/psrv/tls/ca.crt"}


def unresolved_references(kustomization, objects):
    """$(VAR) in a container's command, args or env that Kubernetes would leave as it is."""
    settings = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            settings[o["metadata"]["name"]] = set(o.get("data", {}))
    if kustomization.startswith("submit"):  # Applied beside an overlay, using its ConfigMaps.
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


def tls_problems(kustomization, objects):
    """Every process of a TLS overlay mounts its role's Secret read-only at /etc/psrv/tls and is
    given its files (flags; psctl: environment); no probe speaks gRPC (the kubelet's has no TLS)."""
    problems = []
    for o in objects:
        name = "%s/%s" % (o["kind"], o["metadata"]["name"])
        if name not in TLS_ROLES:
            continue
        spec = o["spec"]["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        if secrets.get("tls") != "ps-tls-" + TLS_ROLES[name]:
            problems.append("%s: %s mounts %s, not Secret ps-tls-%s"
                            % (kustomization, name, secrets, TLS_ROLES[name]))
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = "%s: %s container %s" % (kustomization, name, c["name"])
            mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
            if mounts.get("tls", {}).get("mountPath") != "/etc/psrv/tls" or \
                    not mounts["tls"].get("readOnly"):
                problems.append(where + ": no read-only tls mount at /etc/psrv/tls")
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if o["kind"] == "Job" and o["metadata"]["name"] == "ps-submit":
                if any(env.get(k) != v for k, v in PSCTL_TLS_ENV.items()):
                    problems.append(where + ": PSCTL_TLS_* not set to the mounted files")
            elif any(flag not in c.get("args", []) for flag in TLS_FLAGS):
                problems.append(where + ": lacks " + " ".join(TLS_FLAGS))
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if "grpc" in c.get(probe, {}):
                    problems.append(where + ": %s is a gRPC probe, which has no TLS" % probe)
    return problems


def certificate_problems(objects):
    """Each role's Certificate writes Secret ps-tls-ROLE with the role as its only OU, signed by the
    CA Issuer; the servers' certificates name the addresses they are dialed at."""
    problems = []
    certificates = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "Certificate"}
    for role in ROLES:
        spec = certificates.get("ps-tls-" + role, {})
        if spec.get("secretName") != "ps-tls-" + role:
            problems.append("Certificate ps-tls-%s: secretName %r" % (role, spec.get("secretName")))
        if spec.get("subject", {}).get("organizationalUnits") != [role]:
            problems.append("Certificate ps-tls-%s: subject.organizationalUnits is not [%s]"
                            % (role, role))
        if spec.get("issuerRef") != {"name": "ps-ca", "kind": "Issuer"}:
            problems.append("Certificate ps-tls-%s: not issued by Issuer ps-ca" % role)
    for role, name in (("coordinator", "ps-coordinator.default.svc.cluster.local"),
                       ("server", "*.ps-server.default.svc.cluster.local")):
        if name not in certificates.get("ps-tls-" + role, {}).get("dnsNames", []):
            problems.append("Certificate ps-tls-%s: no DNS name %s" % (role, name))
    if not certificates.get("ps-ca", {}).get("isCA"):
        problems.append("Certificate ps-ca is not a CA")
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
        if kustomization in lib.OVERLAYS + lib.TLS_OVERLAYS:
            failures += cluster_size_mismatches(kustomization, objects)
        if kustomization in lib.TLS_OVERLAYS + ["submit-tls"]:
            failures += tls_problems(kustomization, objects)
        if kustomization == lib.CERT_MANAGER:
            failures += certificate_problems(objects)
        print("rendered %s: %d objects" % (kustomization, len(objects)))
    if failures:
        print("FAIL:\n" + "\n".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
