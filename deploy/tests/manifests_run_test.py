#!/usr/bin/python3 -B
"""Runs what the manifests say, with the real binaries: for each overlay (and the submit Job),
renders the objects, and starts every pod's containers on 127.0.0.1 with exactly their command,
args and environment as Kubernetes would resolve them ($(VAR) from env, envFrom and the downward
API, with fixed test values), the binary taken from the image's Dockerfile ENTRYPOINT. Only three
things change: cluster DNS names become 127.0.0.1, container ports become free ports, and ConfigMap
volumes become folders. The job spec's data path and step count are the only spec fields changed.
Then the submit Job's psctl must see the job SUCCEED, every worker and server process must exit 0
(--max_jobs=1: the pods complete), and the coordinator must still pass its probes. Every pod but the
submit Job's is scraped where its prometheus.io annotations point, and the coordinator's metrics
and status page must show the job SUCCEEDED."""
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import deploy_testlib as lib

NAMESPACE = "psrv-test"
TEST_STEPS = 60
CORPUS = "deploy/testdata/corpus.txt"  # The first 24 KB of tests/testdata/shakespeare_200k.txt.
BINARIES = {  # ENTRYPOINT or command basename -> runfile of its Bazel target.
    "ps_coordinator": "coordinator/ps_coordinator",
    "ps_server": "server/ps_server",
    "ps_worker": "worker/ps_worker",
    "psctl": "client/psctl",
}
DNS_NAME = re.compile(r"([a-z0-9][a-z0-9.-]*)\.svc\.cluster\.local(?::(\d+))?")


class TestFailure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise TestFailure(message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, the rest stays."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and text.find(")", i) != -1:
            end = text.find(")", i)
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class Pod:
    """One pod of a workload, as the controller would create it."""

    def __init__(self, workload, index):
        meta, template = workload["metadata"], workload["spec"]["template"]
        self.workload = workload
        self.spec = template["spec"]
        self.labels = dict(template.get("metadata", {}).get("labels", {}))
        self.annotations = dict(template.get("metadata", {}).get("annotations", {}))
        self.index = index
        self.indexed = (workload["kind"] == "Job"
                        and workload["spec"].get("completionMode") == "Indexed")
        if workload["kind"] == "Job":
            self.labels.update({"batch.kubernetes.io/job-name": meta["name"],
                                "job-name": meta["name"]})
            self.name = "%s-%d-test0" % (meta["name"], index)
            self.hostname = self.name
            if self.indexed:
                self.labels["batch.kubernetes.io/job-completion-index"] = str(index)
                self.annotations["batch.kubernetes.io/job-completion-index"] = str(index)
                self.hostname = "%s-%d" % (meta["name"], index)
        else:
            self.name = "%s-7d4b9c-%d" % (meta["name"], index)
            self.hostname = self.name
        self.ports = {}  # (container name, containerPort or port name) -> test port.
        for c in self.spec["containers"]:
            for p in c.get("ports", []):
                port = free_port()
                self.ports[(c["name"], p["containerPort"])] = port
                if "name" in p:
                    self.ports[(c["name"], p["name"])] = port

    def port(self, number_or_name):
        for (_, key), port in self.ports.items():
            if key == number_or_name:
                return port
        raise TestFailure("pod %s has no container port %s" % (self.name, number_or_name))

    def field(self, path):
        """The downward API's fieldRef values."""
        match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
        if match:
            values = self.labels if match.group(1) == "labels" else self.annotations
            check(match.group(2) in values, "pod %s has no %s" % (self.name, path))
            return values[match.group(2)]
        fields = {"metadata.name": self.name, "metadata.namespace": NAMESPACE,
                  "metadata.uid": "0000-test", "spec.nodeName": "test-node",
                  "spec.serviceAccountName": "default", "status.podIP": "127.0.0.1",
                  "status.hostIP": "127.0.0.1", "status.podIPs": "127.0.0.1"}
        check(path in fields, "fieldRef %s is not supported by this test" % path)
        return fields[path]

    def resource(self, container_name, ref):
        """The downward API's resourceFieldRef values (CPU rounded up to whole divisor units)."""
        container = next(c for c in self.all_containers() if c["name"] == container_name)
        kind, resource = ref["resource"].split(".")
        value = container.get("resources", {}).get(kind, {}).get(resource)
        check(value is not None, "%s: %s is not set" % (container_name, ref["resource"]))
        value = str(value)
        if resource == "cpu":
            cores = float(value[:-1]) / 1000 if value.endswith("m") else float(value)
            divisor = str(ref.get("divisor", "1"))
            divisor = float(divisor[:-1]) / 1000 if divisor.endswith("m") else float(divisor)
            return str(math.ceil(cores / divisor))
        return value

    def all_containers(self):
        return self.spec.get("initContainers", []) + self.spec["containers"]


class Cluster:
    """The rendered objects of one overlay plus the submit Job, run as local processes."""

    print_env = True  # start() prints each process's environment.

    def __init__(self, objects, workdir):
        self.workdir = workdir
        self.configmaps = {o["metadata"]["name"]: dict(o.get("data", {}))
                           for o in objects if o["kind"] == "ConfigMap"}
        self.services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
        self.workloads = [o for o in objects if o["kind"] in ("Deployment", "Job")]
        self.pods = {}  # component label -> [Pod]
        for w in self.workloads:
            if w["kind"] == "Deployment":
                count = w["spec"].get("replicas", 1)
            else:
                count = w["spec"].get("completions", 1)
            component = w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            self.pods[component] = [Pod(w, i) for i in range(count)]
        self.stages = lib.dockerfile_stages(lib.repo_path("deploy", "docker", "Dockerfile"))
        self.bin_dir = os.path.join(workdir, "bin")  # What the images have in /usr/local/bin.
        os.makedirs(self.bin_dir)
        for name, runfile in BINARIES.items():
            os.symlink(lib.repo_path(*runfile.split("/")), os.path.join(self.bin_dir, name))
        self.processes = []  # (description, Popen, log path)

    # -- Resolving a container as Kubernetes would --------------------------------------------

    def image_env(self, image):
        """ENV of the image's Dockerfile stage and the stages it is built FROM."""
        chain, stage = [], lib.image_stage(image)
        while stage in self.stages:
            chain.append(stage)
            stage = self.stages[stage]["from"]
        env = {}
        for stage in reversed(chain):
            for line in self.stages[stage]["lines"]:
                if line.upper().startswith("ENV "):
                    for word in shlex.split(line[4:]):
                        key, _, value = word.partition("=")
                        env[key] = re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), value)
        return env

    def container_env(self, pod, container):
        env = {}
        for source in container.get("envFrom", []):
            ref = source["configMapRef"]
            data = self.configmaps.get(ref["name"])
            check(data is not None or ref.get("optional"), "no ConfigMap %s" % ref["name"])
            for key, value in (data or {}).items():
                env[source.get("prefix", "") + key] = value
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
            elif "valueFrom" in e:
                source = e["valueFrom"]
                if "fieldRef" in source:
                    env[e["name"]] = pod.field(source["fieldRef"]["fieldPath"])
                elif "resourceFieldRef" in source:
                    ref = source["resourceFieldRef"]
                    env[e["name"]] = pod.resource(ref.get("containerName", container["name"]), ref)
                elif "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    env[e["name"]] = self.configmaps[ref["name"]][ref["key"]]
                else:
                    raise TestFailure("env %s: unsupported valueFrom %s" % (e["name"], source))
            else:
                env[e["name"]] = ""
        if pod.indexed:
            env.setdefault("JOB_COMPLETION_INDEX", str(pod.index))  # Added by the Job controller.
        return env

    def localize(self, text, pod, container, mounts):
        """Cluster DNS names -> 127.0.0.1 with the test port behind the Service port; the
        container's own --port (--metrics_port, --stage_port) -> its test port; mount paths ->
        the local folders of `mounts`."""
        def service_address(match):
            parts = match.group(1).split(".")
            check(len(parts) in (2, 3), "unexpected cluster name %s" % match.group(0))
            service_name, namespace = parts[-2], parts[-1]
            check(namespace == NAMESPACE, "%s: not the pod's namespace" % match.group(0))
            service = self.services.get(service_name)
            check(service is not None, "%s: no Service %s" % (match.group(0), service_name))
            selector = service["spec"].get("selector", {})
            backends = [p for pods in self.pods.values() for p in pods
                        if all(p.labels.get(k) == v for k, v in selector.items())]
            if len(parts) == 3:  # A pod's own name under a headless Service.
                check(service["spec"].get("clusterIP") == "None",
                      "%s: pod names need a headless Service" % match.group(0))
                backends = [p for p in backends if p.hostname == parts[0]
                            and p.spec.get("subdomain") == service_name]
            check(backends, "%s: no pod behind it" % match.group(0))
            if match.group(2) is None:
                return "127.0.0.1"
            port = next((p for p in service["spec"]["ports"] if p["port"] == int(match.group(2))),
                        None)
            check(port is not None, "%s: Service %s has no port %s"
                  % (match.group(0), service_name, match.group(2)))
            return "127.0.0.1:%d" % backends[0].port(port.get("targetPort", port["port"]))

        text = DNS_NAME.sub(service_address, text)
        match = re.fullmatch(r"--(port|metrics_port|stage_port)=(\d+)", text)
        if match and (container["name"], int(match.group(2))) in pod.ports:
            text = "--%s=%d" % (match.group(1), pod.ports[(container["name"], int(match.group(2)))])
        for mount_path, local in mounts.items():
            text = re.sub(r"(^|=)" + re.escape(mount_path) + r"(?=/|$)",
                          lambda m: m.group(1) + local, text)
        return text

    def mounts(self, pod, container):
        """Materialises the pod's ConfigMap volumes; {mountPath: local folder}."""
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        result = {}
        for mount in container.get("volumeMounts", []):
            local = os.path.join(self.workdir, "volumes", pod.name, mount["name"])
            os.makedirs(local, exist_ok=True)
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = self.configmaps[volume["configMap"]["name"]]
                items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    with open(os.path.join(local, item["path"]), "w") as f:
                        f.write(data[item["key"]])
            result[mount["mountPath"]] = local
        return result

    def argv_env(self, pod, container):
        """The process a container runs here: argv and environment."""
        argv, env = self.container_process(pod, container)
        process_env = self.image_env(container["image"])
        process_env.update({"PATH": self.bin_dir + ":/usr/bin:/bin", "HOME": self.workdir,
                            "HOSTNAME": pod.hostname})
        process_env.update(env)
        # The image's binaries live in /usr/local/bin: here, in bin_dir.
        if os.path.dirname(argv[0]) == "/usr/local/bin":
            argv[0] = os.path.basename(argv[0])
        resolved = shutil.which(argv[0], path=process_env["PATH"])
        check(resolved is not None, "%s: %s is not in the image" % (pod.name, argv[0]))
        argv[0] = resolved
        return argv, process_env

    def container_process(self, pod, container):
        """What the container runs as Kubernetes resolves it (argv from command or the image's
        ENTRYPOINT plus args; the container's env), localized; the image's own ENV not included."""
        env = self.container_env(pod, container)
        mounts = self.mounts(pod, container)
        if "command" in container:
            argv = [expand(a, env) for a in container["command"]]
        else:
            entrypoint = lib.stage_entrypoint(self.stages, lib.image_stage(container["image"]))
            check(entrypoint, "image %s: no Dockerfile stage with an ENTRYPOINT"
                  % container["image"])
            argv = list(entrypoint)
        argv += [expand(a, env) for a in container.get("args", [])]
        argv = [self.localize(a, pod, container, mounts) for a in argv]
        for text in argv + list(env.values()):
            check(not re.search(r"(?<!\$)\$\(\w+\)", text),
                  "%s/%s: unresolved reference in %r" % (pod.name, container["name"], text))
        env = {k: self.localize(v, pod, container, mounts) for k, v in env.items()}
        return argv, env

    # -- Running ------------------------------------------------------------------------------

    def start(self, pod, container):
        argv, env = self.argv_env(pod, container)
        log = os.path.join(self.workdir, "logs", "%s.%s.log" % (pod.name, container["name"]))
        os.makedirs(os.path.dirname(log), exist_ok=True)
        description = "%s/%s" % (pod.name, container["name"])
        print("start %s: %s" % (description, " ".join(shlex.quote(a) for a in argv)))
        if self.print_env:
            print("  env: %s" % " ".join("%s=%s" % kv for kv in sorted(env.items())
                                         if kv[0] not in ("PATH", "HOME")))
        with open(log, "w") as out:
            process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=self.workdir, start_new_session=True)
        self.processes.append((description, process, log))
        return process

    def start_pod(self, pod):
        """Init containers in order (each must exit 0), then the containers."""
        for container in pod.spec.get("initContainers", []):
            process = self.start(pod, container)
            code = wait(process, 60)
            check(code == 0, "%s init container %s: exit %s" % (pod.name, container["name"], code))
        return [self.start(pod, c) for c in pod.spec["containers"]]

    def probe_ok(self, pod, container, probe):
        if "grpc" in probe:
            return grpc_serving(pod.port(probe["grpc"]["port"]), probe["grpc"].get("service", ""))
        if "tcpSocket" in probe:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", pod.port(probe["tcpSocket"]["port"]))) == 0
        raise TestFailure("%s: unsupported probe %s" % (container["name"], probe))

    def wait_ready(self, pod, timeout):
        for container in pod.spec["containers"]:
            for kind in ("readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None:
                    continue
                deadline = time.time() + timeout
                while not self.probe_ok(pod, container, probe):
                    check(time.time() < deadline, "%s/%s: %s fails after %d s"
                          % (pod.name, container["name"], kind, timeout))
                    time.sleep(0.2)
                print("%s/%s: %s passes" % (pod.name, container["name"], kind))

    def stop_all(self):
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def print_logs(self):
        for description, process, log in self.processes:
            with open(log) as f:
                lines = f.read().splitlines()
            print("---- %s (exit %s), last lines of its log:" % (description, process.poll()))
            print("\n".join(lines[-25:]))


_grpc_warned = []

# Local addresses only: an http_proxy set for the web must not capture 127.0.0.1.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(port, path, timeout=5):
    """(status, content type, body) of GET http://127.0.0.1:port/path; None if unreachable."""
    try:
        with _http.open("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read().decode()
    except OSError:
        return None


def scrape(pod, timeout):
    """GET the pod's metrics where its prometheus.io annotations point (as Prometheus' pod
    discovery does); returns the text."""
    annotations = pod.annotations
    check(annotations.get("prometheus.io/scrape") == "true",
          "pod %s has no prometheus.io/scrape: \"true\" annotation" % pod.name)
    check("prometheus.io/port" in annotations, "pod %s: no prometheus.io/port" % pod.name)
    port = pod.port(int(annotations["prometheus.io/port"]))
    path = annotations.get("prometheus.io/path", "/metrics")
    deadline = time.time() + timeout
    while True:
        reply = http_get(port, path)
        if reply is not None:
            break
        check(time.time() < deadline, "%s: nothing answers on its metrics port %s after %d s"
              % (pod.name, annotations["prometheus.io/port"], timeout))
        time.sleep(0.2)
    status, content_type, body = reply
    check(status == 200, "%s: GET %s: HTTP %d" % (pod.name, path, status))
    check(content_type.startswith("text/plain; version=0.0.4"),
          "%s: metrics served as %r" % (pod.name, content_type))
    check("# TYPE process_resident_memory_bytes gauge" in body,
          "%s: %s is not Prometheus metrics:\n%s" % (pod.name, path, body[:500]))
    print("%s: %d lines of metrics at :%s%s" % (pod.name, body.count("\n"),
                                               annotations["prometheus.io/port"], path))
    return body


def grpc_serving(port, service):
    """grpc.health.v1.Health/Check, as the kubelet's grpc probe calls it."""
    try:
        import grpc
    except ImportError:
        if not _grpc_warned:
            print("note: python3-grpcio is not installed: probes checked as TCP connects only")
            _grpc_warned.append(True)
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    request = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
    with grpc.insecure_channel("127.0.0.1:%d" % port) as channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            return call(request, timeout=2) == b"\x08\x01"  # status: SERVING
        except grpc.RpcError:
            return False


def wait(process, timeout):
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def flag_value(argv, name):
    for a in argv:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def run_overlay(kubectl, tree, overlay, cluster_class=Cluster, local_corpus=True):
    """Runs `overlay` plus the submit Job with `cluster_class`; the job spec's data path becomes
    the test corpus when `local_corpus` (else it stays the images' corpus)."""
    import yaml
    objects = (lib.render_objects(kubectl, tree, overlay)
               + lib.render_objects(kubectl, tree, "submit"))
    workdir = os.path.join(lib.temp_dir(), overlay.replace("/", "_"))
    os.makedirs(workdir)
    # The spec's data path (the corpus in the images) and step count are the only changes.
    for o in objects:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "ps-job":
            spec = yaml.safe_load(o["data"]["job.yaml"])
            if local_corpus:
                spec["data"]["path"] = os.path.abspath(lib.repo_path(*CORPUS.split("/")))
            spec["training"]["steps"] = TEST_STEPS
            o["data"]["job.yaml"] = yaml.safe_dump(spec)
    cluster = cluster_class(objects, workdir)
    for component in ("coordinator", "parameter-server", "worker", "submit"):
        check(cluster.pods.get(component), "%s: no %s workload" % (overlay, component))
    coordinators = cluster.pods["coordinator"]
    servers = cluster.pods["parameter-server"]
    workers = cluster.pods["worker"]
    submit = cluster.pods["submit"][0]
    try:
        for pod in coordinators:
            cluster.start_pod(pod)
        for pod in coordinators:
            cluster.wait_ready(pod, 30)
        server_processes = [p for pod in servers for p in cluster.start_pod(pod)]
        worker_processes = [p for pod in workers for p in cluster.start_pod(pod)]
        for pod in servers:
            cluster.wait_ready(pod, 30)
        # Every pod that runs psrv is scraped where its annotations say (workers idle until the
        # job is submitted).
        for pod in coordinators + servers + workers:
            scrape(pod, 30)

        # The submit Job asks for as many servers and workers as the Jobs run.
        psctl_argv, _ = cluster.argv_env(submit, submit.spec["containers"][0])
        check(flag_value(psctl_argv, "--servers") == str(len(servers)),
              "submit asks for %s servers; the server Job runs %d"
              % (flag_value(psctl_argv, "--servers"), len(servers)))
        check(flag_value(psctl_argv, "--workers") == str(len(workers)),
              "submit asks for %s workers; the worker Job runs %d"
              % (flag_value(psctl_argv, "--workers"), len(workers)))

        (psctl,) = cluster.start_pod(submit)
        code = wait(psctl, 180)
        with open(cluster.processes[-1][2]) as f:
            submit_output = f.read()
        print("---- psctl job submit --watch (exit %s):\n%s" % (code, submit_output[-3000:]))
        check(code == 0, "the submit Job's psctl exited %s, not 0" % code)
        check("SUCCEEDED" in submit_output, "psctl did not report SUCCEEDED")

        # --max_jobs=1: the job has ended, so every worker and server process finishes, with 0.
        for kind, processes in (("worker", worker_processes), ("server", server_processes)):
            for process in processes:
                code = wait(process, 30)
                check(code == 0, "a %s process exited %s (pid %d), not 0 after the job"
                      % (kind, code, process.pid))
        print("every worker and server process exited 0")
        for pod in coordinators:
            check(all(p.poll() is None for d, p, _ in cluster.processes
                      if d.startswith(pod.name)), "the coordinator exited")
            cluster.wait_ready(pod, 10)
            metrics = scrape(pod, 10)
            check('psrv_jobs{state="SUCCEEDED"} 1' in metrics,
                  "the coordinator's metrics do not count the job as SUCCEEDED")
            # The status page, through the Service's http port as kubectl port-forward reaches it.
            http_port = next(p for p in cluster.services["ps-coordinator"]["spec"]["ports"]
                             if p["name"] == "http")
            page = http_get(pod.port(http_port["targetPort"]), "/?refresh=0")
            check(page is not None and page[0] == 200, "no status page on the coordinator")
            check("psrv cluster" in page[2] and "SUCCEEDED" in page[2],
                  "the status page does not show the job SUCCEEDED")
            print("%s: status page shows the job SUCCEEDED" % pod.name)
    except TestFailure:
        cluster.print_logs()
        raise
    finally:
        cluster.stop_all()


def main():
    kubectl = lib.require_tool("kubectl", "kubectl 1.32 with kustomize")
    lib.require_yaml()
    tree = lib.k8s_tree()
    failures = []
    for overlay in lib.OVERLAYS:
        print("==== %s" % overlay)
        try:
            run_overlay(kubectl, tree, overlay)
            print("==== %s: PASS" % overlay)
        except TestFailure as e:
            print("==== %s: FAIL: %s" % (overlay, e))
            failures.append(overlay)
    if failures:
        print("FAIL: " + ", ".join(failures))
        sys.exit(1)
    print("PASS")


if __name__ == "__main__":
    main()
