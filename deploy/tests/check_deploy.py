#!/usr/bin/env python3
"""Checks deploy/ as an operator would run it. Run by .ci/run from the repository root:

    python3 deploy/tests/check_deploy.py [--cccgate target/debug/cccgate]

- every kustomization renders with `kubectl kustomize` and is schema-valid (kubernetes-validate,
  strict) for the Kubernetes versions in K8S_VERSIONS;
- the rendered objects agree with each other: the loader writes snapshots on the very volume
  and folder the gateways serve; probes, ports, Services, the NetworkPolicy, PDB and HPA point
  at what exists; every container is hardened, pinned and has resources;
- the alert rules wrapped for the Prometheus Operator equal deploy/prometheus/rules.yaml, and
  every dashboard query is valid PromQL (promtool);
- the loader script, run with the real binary on real drops: numeric order, a refused drop
  recorded and skipped while later drops still load, pruning of old snapshots.

Needs kubectl, kubernetes-validate, promtool and PyYAML (installed by .ci/run). Prints one
line per check and a closing "N passed, M failed"; exits non-zero on any failure.
"""

import argparse
import contextlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import traceback

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
KUSTOMIZATIONS = ["base", "overlays/single-node", "overlays/production"]
K8S_VERSIONS = ["1.34.0", "1.37.0"]
# Kinds no bundled schema covers (Prometheus Operator CRDs); checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
PUBLIC_PORT, ADMIN_GRPC_PORT, ADMIN_HTTP_PORT = 50051, 50052, 9464
MiB = 1024 * 1024

RESULTS = []


def check(name):
    def wrap(fn):
        def run(*args):
            try:
                fn(*args)
                RESULTS.append((name, None))
                print(f"ok    {name}")
            except Exception as e:  # noqa: BLE001 - report every failure, go on
                RESULTS.append((name, e))
                print(f"FAIL  {name}: {e}")
                if os.environ.get("CHECK_DEPLOY_TRACE"):
                    traceback.print_exc()

        return run

    return wrap


def render(kustomization):
    out = subprocess.run(
        ["kubectl", "kustomize", os.path.join(K8S, kustomization)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out, [d for d in yaml.safe_load_all(out) if d]


def find(objs, kind, name=None):
    found = [
        o
        for o in objs
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert found, f"no {kind} {name or ''} rendered"
    return found[0]


def quantity(q):
    """Bytes of a memory quantity (e.g. 640Mi, 1Gi, 700M, 1000000)."""
    q = str(q)
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "k": 1000, "M": 10**6, "G": 10**9}
    for u, f in units.items():
        if q.endswith(u):
            return float(q[: -len(u)]) * f
    return float(q)


def cpu_millis(q):
    q = str(q)
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return obj["spec"]["template"]["metadata"]["labels"]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def resolve(spec, container, path):
    """(volume source, path inside the volume) of `path` as `container` sees it."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    assert best is not None, f"{path} is on no volume of container {container['name']}"
    vol = next(v for v in spec["volumes"] if v["name"] == best["name"])
    source = {k: v for k, v in vol.items() if k != "name"}
    inner = posixpath.normpath(
        posixpath.join(
            "/",
            best.get("subPath", ""),
            posixpath.relpath(path, best["mountPath"].rstrip("/") or "/"),
        )
    )
    return json.dumps(source, sort_keys=True), inner, best


def arg_value(args, flag):
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def env_value(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return None


def containers_of(obj):
    spec = pod_spec(obj)
    return spec, spec.get("initContainers", []) + spec["containers"]


# --------------------------------------------------------------------------------------------


def assert_hardened(objs):
    """Every pod: non-root, seccomp, no token; every container: read-only root, no
    escalation, no capabilities, a pinned image, requests and limits."""
    for obj in objs:
        if obj["kind"] not in ("Deployment", "CronJob", "Job"):
            continue
        spec, cs = containers_of(obj)
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{obj['metadata']['name']}: pod runAsNonRoot"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        for c in cs:
            who = f"{obj['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, f"{who}: read-only root"
            assert sc.get("allowPrivilegeEscalation") is False, f"{who}: no escalation"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{who}: drop ALL"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", who
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, who
            image = c["image"]
            assert not image.endswith(":latest"), f"{who}: {image}"
            assert re.search(r"(@sha256:[0-9a-f]{64}|:\d+\.\d+\.\d+)$", image), (
                f"{who}: {image} is not pinned to a digest or an exact version"
            )
            r = c.get("resources", {})
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    assert res in r.get(kind, {}), f"{who}: no {kind}.{res}"


def check_kustomization(name, text, objs):
    @check(f"{name}: schema-valid (kubernetes-validate --strict) for {', '.join(K8S_VERSIONS)}")
    def schema():
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        try:
            for v in K8S_VERSIONS:
                r = subprocess.run(
                    ["kubernetes-validate", "--strict", "-k", v, f.name],
                    capture_output=True,
                    text=True,
                )
                assert r.returncode == 0, r.stdout + r.stderr
                for line in (r.stdout + r.stderr).splitlines():
                    if "Couldn't find schema" in line:
                        assert any(f"kind {k} " in line for k in CUSTOM_KINDS), line
                    assert not line.startswith("ERROR"), line
        finally:
            os.unlink(f.name)

    schema()

    @check(f"{name}: the loader writes snapshots where the gateways read them")
    def same_folder():
        gw = find(objs, "Deployment", "cccgate")
        loader = find(objs, "CronJob", "cccgate-loader")
        gspec, gcs = containers_of(gw)
        g = next(c for c in gcs if c["name"] == "gateway")
        served = arg_value(g["args"], "--snapshot-dir")
        assert served, "the gateway has no --snapshot-dir"
        gsrc, gpath, gmount = resolve(gspec, g, served)
        lspec, lcs = containers_of(loader)
        lc = next(c for c in lcs if c["name"] == "loader")
        data = env_value(lc, "CCCGATE_DATA")
        assert data, "the loader has no CCCGATE_DATA"
        # load-drops.sh writes $CCCGATE_DATA/snapshots and reads $CCCGATE_DATA/drops.
        lsrc, lpath, lmount = resolve(lspec, lc, posixpath.join(data, "snapshots"))
        assert "persistentVolumeClaim" in gsrc, f"gateway snapshots on {gsrc}"
        assert gsrc == lsrc, f"gateway reads volume {gsrc}, loader writes {lsrc}"
        assert gpath == lpath, f"gateway reads {gpath} of the volume, loader writes {lpath}"
        assert not lmount.get("readOnly"), "the loader's volume is read-only"
        # The gateway keeps the folder's high-water mark (no silent rollback): it must write.
        assert not gmount.get("readOnly"), "the gateway cannot write the high-water mark"
        _, dpath, _ = resolve(lspec, lc, posixpath.join(data, "drops"))
        assert dpath != lpath
        claim = json.loads(gsrc)["persistentVolumeClaim"]["claimName"]
        find(objs, "PersistentVolumeClaim", claim)
        # The script the CronJob runs is the ConfigMap kustomize generated.
        script = lc["command"][-1]
        ssrc, spath, _ = resolve(lspec, lc, script)
        cm_name = json.loads(ssrc)["configMap"]["name"]
        cm = find(objs, "ConfigMap", cm_name)
        assert posixpath.basename(spath) in cm["data"], f"{script} not in ConfigMap {cm_name}"
        with open(os.path.join(K8S, "base", "load-drops.sh")) as f:
            assert cm["data"][posixpath.basename(spath)] == f.read()

    same_folder()

    @check(f"{name}: every container hardened, pinned, with requests and limits")
    def containers():
        assert_hardened(objs)

    containers()

    @check(f"{name}: memory for two snapshots in the gateway, the loader's measured peak")
    def memory():
        g = next(c for c in containers_of(find(objs, "Deployment", "cccgate"))[1] if c["name"] == "gateway")
        lim = quantity(g["resources"]["limits"]["memory"])
        req = quantity(g["resources"]["requests"]["memory"])
        assert req >= 2 * 200 * 10**6 + 100 * MiB, f"gateway request {req} < two snapshots + headroom"
        assert lim >= req
        lc = next(c for c in containers_of(find(objs, "CronJob"))[1] if c["name"] == "loader")
        # benches/README.md: 672 MB for a full drop, 830 MB for a delta on the full snapshot.
        assert quantity(lc["resources"]["requests"]["memory"]) >= 830 * 10**6
        assert quantity(lc["resources"]["limits"]["memory"]) >= 830 * 10**6 * 1.5

    memory()

    @check(f"{name}: liveness /livez apart from readiness /readyz, on declared ports")
    def probes():
        g = next(c for c in containers_of(find(objs, "Deployment", "cccgate"))[1] if c["name"] == "gateway")
        ports = {p["name"]: p["containerPort"] for p in g["ports"]}
        assert ports == {"grpc": PUBLIC_PORT, "admin-grpc": ADMIN_GRPC_PORT, "admin-http": ADMIN_HTTP_PORT}, ports
        assert g["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert g["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert g["startupProbe"]["httpGet"]["path"] == "/livez"
        for p in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert g[p]["httpGet"]["port"] in ports, p
        args = g["args"]
        assert arg_value(args, "--listen") == f"0.0.0.0:{PUBLIC_PORT}"
        assert arg_value(args, "--admin-listen") == f"0.0.0.0:{ADMIN_GRPC_PORT}"
        assert arg_value(args, "--metrics-listen") == f"0.0.0.0:{ADMIN_HTTP_PORT}"

    probes()

    @check(f"{name}: one Service per plane; the NetworkPolicy admits each client to its plane only")
    def planes():
        gw = find(objs, "Deployment", "cccgate")
        labels = pod_labels(gw)
        pub = find(objs, "Service", "cccgate")
        adm = find(objs, "Service", "cccgate-admin")
        assert matches(pub["spec"]["selector"], labels) and matches(adm["spec"]["selector"], labels)
        assert [p["port"] for p in pub["spec"]["ports"]] == [PUBLIC_PORT]
        assert sorted(p["port"] for p in adm["spec"]["ports"]) == [ADMIN_HTTP_PORT, ADMIN_GRPC_PORT]
        np = find(objs, "NetworkPolicy", "cccgate-gateway")
        assert matches(np["spec"]["podSelector"]["matchLabels"], labels)
        assert "Ingress" in np["spec"]["policyTypes"]
        by_client = {}
        for rule in np["spec"]["ingress"]:
            clients = {
                s.get(k, {}).get("matchLabels", {}).get("cccgate.io/client")
                for s in rule["from"]
                for k in ("namespaceSelector", "podSelector")
            } - {None}
            assert len(clients) == 1, rule
            by_client[clients.pop()] = sorted(p["port"] for p in rule["ports"])
        assert by_client == {
            "marketplace": [PUBLIC_PORT],
            "operator": [ADMIN_HTTP_PORT, ADMIN_GRPC_PORT],
        }, by_client
        loader = find(objs, "CronJob", "cccgate-loader")
        lnp = find(objs, "NetworkPolicy", "cccgate-loader")
        assert matches(lnp["spec"]["podSelector"]["matchLabels"], pod_labels(loader))
        assert not matches(lnp["spec"]["podSelector"]["matchLabels"], labels)

    planes()

    @check(f"{name}: PDB, autoscaler and topology spread fit the gateway")
    def fleet():
        gw = find(objs, "Deployment", "cccgate")
        labels = pod_labels(gw)
        pdb = find(objs, "PodDisruptionBudget", "cccgate")
        assert matches(pdb["spec"]["selector"]["matchLabels"], labels)
        assert pdb["spec"].get("maxUnavailable") == 1
        spread = pod_spec(gw)["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname"}
        for s in spread:
            assert matches(s["labelSelector"]["matchLabels"], labels)
        assert gw["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        hpas = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
        if name.endswith("single-node"):
            assert not hpas and gw["spec"]["replicas"] == 1
            pvc = find(objs, "PersistentVolumeClaim", "cccgate-data")
            assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        else:
            (hpa,) = hpas
            assert hpa["spec"]["scaleTargetRef"]["name"] == "cccgate"
            assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot survive a drain"
            assert hpa["spec"]["minReplicas"] <= gw["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
            assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
            assert "ReadWriteMany" in find(objs, "PersistentVolumeClaim", "cccgate-data")["spec"]["accessModes"]

    fleet()

    if name.endswith("production"):

        @check(f"{name}: TLS on both planes, tokens, signed drops, from mounted secrets")
        def production():
            gw = find(objs, "Deployment", "cccgate")
            spec, cs = containers_of(gw)
            g = next(c for c in cs if c["name"] == "gateway")
            secrets = set()
            for flag in (
                "--tls-cert",
                "--tls-key",
                "--admin-tls-cert",
                "--admin-tls-key",
                "--admin-tls-client-ca",
                "--auth-tokens",
            ):
                path = arg_value(g["args"], flag)
                assert path, f"no {flag}"
                src, _, mount = resolve(spec, g, path)
                src = json.loads(src)
                assert "secret" in src, f"{flag} {path} is not on a secret"
                assert "subPath" not in mount, f"{flag}: a subPath mount never sees a rotation"
                secrets.add(src["secret"]["secretName"])
            assert secrets == {"cccgate-public-tls", "cccgate-admin-tls", "cccgate-auth-tokens"}
            loader = find(objs, "CronJob", "cccgate-loader")
            lspec, lcs = containers_of(loader)
            lc = next(c for c in lcs if c["name"] == "loader")
            key = env_value(lc, "CCCGATE_DROP_PUBLIC_KEY")
            assert key and "secret" in resolve(lspec, lc, key)[0]
            sm = find(objs, "ServiceMonitor", "cccgate")
            adm = find(objs, "Service", "cccgate-admin")
            assert matches(sm["spec"]["selector"]["matchLabels"], adm["metadata"]["labels"])
            assert not matches(sm["spec"]["selector"]["matchLabels"], find(objs, "Service", "cccgate")["metadata"]["labels"])
            assert [e["port"] for e in sm["spec"]["endpoints"]] == ["admin-http"]
            dash = find(objs, "ConfigMap", "cccgate-grafana-dashboard")
            assert dash["metadata"]["labels"].get("grafana_dashboard") == "1"
            json.loads(dash["data"]["cccgate.json"])

        production()


def check_replay_job(base_objs):
    text, objs = render("replay")
    with open(os.path.join(K8S, "replay", "merge-job.yaml")) as f:
        merge_text = f.read()
    merge = yaml.safe_load(merge_text)

    @check("replay: Indexed Job and merge Job schema-valid, hardened, pinned")
    def valid():
        assert_hardened(objs + [merge])
        for t in (text, merge_text):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write(t)
            try:
                r = subprocess.run(
                    ["kubernetes-validate", "--strict", "-k", K8S_VERSIONS[-1], f.name],
                    capture_output=True,
                    text=True,
                )
                assert r.returncode == 0, r.stdout + r.stderr
            finally:
                os.unlink(f.name)

    valid()

    @check("replay: N pods replay shards 0..N-1 of one file against the public Service; the merge reads all N")
    def shards():
        job = find(objs, "Job", "cccgate-replay")
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        n = spec["completions"]
        assert spec["parallelism"] == n and n >= 2
        (c,) = pod_spec(job)["containers"]
        env = {e["name"]: e for e in c["env"]}
        index_vars = [
            k
            for k, e in env.items()
            if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        ]
        assert len(index_vars) == 1, env
        var = f"$({index_vars[0]})"
        args = c["args"]
        assert args[0] == "replay"
        assert arg_value(args, "--shard") == f"{var}/{n}", args
        for flag in ("--out", "--summary-json"):
            assert var in arg_value(args, flag), f"{flag} is not per shard"
        target = arg_value(args, "--target")
        gw_svc = find(base_objs, "Service", "cccgate")
        assert target == f"http://{gw_svc['metadata']['name']}:{PUBLIC_PORT}", target
        # The pods are marketplaces to the NetworkPolicy: admitted to the public port.
        labels = pod_labels(job)
        np = find(base_objs, "NetworkPolicy", "cccgate-gateway")
        admitted = [
            sorted(p["port"] for p in rule["ports"])
            for rule in np["spec"]["ingress"]
            for sel in rule["from"]
            if "podSelector" in sel and matches(sel["podSelector"]["matchLabels"], labels)
        ]
        assert admitted == [[PUBLIC_PORT]], admitted
        spec_vol, _ = containers_of(job)
        src_out, dir_out, _ = resolve(spec_vol, c, posixpath.dirname(arg_value(args, "--summary-json")))
        find(objs, "PersistentVolumeClaim", json.loads(src_out)["persistentVolumeClaim"]["claimName"])
        (m,) = pod_spec(merge)["containers"]
        margs = m["args"]
        i = margs.index("--merge-summaries")
        files = [a for a in margs[i + 1 :] if not a.startswith("--")]
        want = [arg_value(args, "--summary-json").replace(var, str(k)) for k in range(n)]
        assert files == want, (files, want)
        msrc, mdir, _ = resolve(pod_spec(merge), m, posixpath.dirname(files[0]))
        assert (msrc, mdir) == (src_out, dir_out), "the merge reads another folder"

    shards()


@check("PrometheusRule equals deploy/prometheus/rules.yaml")
def prometheus_rule_in_sync():
    with open(os.path.join(ROOT, "deploy", "prometheus", "rules.yaml")) as f:
        rules = yaml.safe_load(f)
    with open(os.path.join(K8S, "components", "monitoring", "prometheusrule.yaml")) as f:
        wrapped = yaml.safe_load(f)
    assert wrapped["kind"] == "PrometheusRule"
    assert wrapped["spec"] == rules, (
        "prometheusrule.yaml differs from rules.yaml; regenerate with: "
        "python3 deploy/tests/check_deploy.py --write-prometheusrule"
    )


def write_prometheus_rule():
    with open(os.path.join(ROOT, "deploy", "prometheus", "rules.yaml")) as f:
        rules = yaml.safe_load(f)
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "cccgate", "labels": {"app.kubernetes.io/name": "cccgate"}},
        "spec": rules,
    }
    with open(os.path.join(K8S, "components", "monitoring", "prometheusrule.yaml"), "w") as f:
        f.write(
            "# Generated from deploy/prometheus/rules.yaml by\n"
            "#   python3 deploy/tests/check_deploy.py --write-prometheusrule\n"
            "# Edit rules.yaml, not this file (the check fails when they differ).\n"
        )
        yaml.safe_dump(obj, f, sort_keys=False, allow_unicode=True, width=1000)


@check("every Grafana dashboard query is valid PromQL (promtool)")
def dashboard_promql():
    with open(os.path.join(K8S, "components", "monitoring", "dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10, exprs
    subst = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": "cccgate"}
    rules = []
    for i, e in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, e
        rules.append({"record": f"dashboard:query{i}", "expr": e})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    try:
        r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        os.unlink(f.name)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for wanted in ("by decision", "block rate by reason", "latency", "snapshot sequence",
                   "snapshot age", "refus", "shed", "caller"):
        assert wanted in titles, f"no panel for {wanted}"


# --------------------------------------------------------------------------------------------


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def snapshots(d):
    return sorted(
        int(m.group(1)) for n in os.listdir(d) if (m := re.fullmatch(r"snap-(\d+)\.ccc", n))
    )


def loader_script_checks(cccgate):
    script = os.path.join(K8S, "base", "load-drops.sh")
    work = tempfile.mkdtemp(prefix="cccgate-deploy-")
    data = os.path.join(work, "data")
    drops = os.path.join(data, "drops")
    env = dict(os.environ, CCCGATE_DATA=data, CCCGATE_BIN=cccgate, CCCGATE_KEEP_SNAPSHOTS="2")

    def synth(name, *args):
        r = run([cccgate, "synth", "feed", "--out", os.path.join(drops, name), "--certs", "300", *args])
        assert r.returncode == 0, r.stderr

    def loader():
        return run(["sh", script], env=env)

    try:
        # drop-2 and drop-9 are full drops; drop-10 is a delta on drop-9's snapshot. Sorted as
        # text, drop-10 would come first and be refused (no base 9 in force).
        synth("drop-2", "--sequence", "2")
        synth("drop-9", "--sequence", "9")
        scratch = os.path.join(work, "scratch")
        r = run([cccgate, "load", "build", "--drop", os.path.join(drops, "drop-9"), "--out", scratch])
        assert r.returncode == 0, r.stderr
        synth("drop-10", "--delta-of", os.path.join(scratch, "snap-9.ccc"), "--changes", "3")

        @check("load-drops.sh: drops in numeric order (drop-9 before drop-10)")
        def numeric():
            r = loader()
            assert r.returncode == 0, r.stdout + r.stderr
            snaps = os.path.join(data, "snapshots")
            assert snapshots(snaps)[-1] == 10, snapshots(snaps)
            assert not [n for n in os.listdir(drops) if n.endswith(".refused")]

        numeric()

        @check("load-drops.sh: keeps the newest CCCGATE_KEEP_SNAPSHOTS snapshots")
        def pruned():
            assert snapshots(os.path.join(data, "snapshots")) == [9, 10]

        pruned()

        # drop-11 is refused (no manifest); drop-12, a full drop, must still load.
        os.makedirs(os.path.join(drops, "drop-11"))
        with open(os.path.join(drops, "drop-11", "certificates.csv"), "w") as f:
            f.write("not a drop\n")
        synth("drop-12", "--sequence", "12")

        @check("load-drops.sh: a refused drop is recorded and later drops still load")
        def refused():
            r = loader()
            assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}{r.stderr}"
            marker = os.path.join(drops, "drop-11.refused")
            assert os.path.exists(marker), os.listdir(drops)
            with open(marker) as f:
                why = f.read()
            assert "manifest" in why.lower(), why
            assert snapshots(os.path.join(data, "snapshots")) == [10, 12]
            assert "drop-11: refused" in r.stderr, r.stderr

        refused()

        @check("load-drops.sh: the next run skips the refused drop and succeeds")
        def next_run():
            r = loader()
            assert r.returncode == 0, r.stdout + r.stderr
            assert "drop-11: refused before" in r.stdout, r.stdout
            assert snapshots(os.path.join(data, "snapshots")) == [10, 12]

        next_run()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dockerfile_runtime():
    """ENV and ENTRYPOINT + CMD of the Dockerfile's last stage."""
    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stage = text[text.rindex("\nFROM ") :]
    env, entry, cmd = {}, None, None
    for line in stage.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for k, v in re.findall(r"(\w+)=(\S+)", line[4:]):
                env[k] = v
        elif line.startswith("ENTRYPOINT "):
            entry = json.loads(line[len("ENTRYPOINT ") :])
        elif line.startswith("CMD "):
            cmd = json.loads(line[len("CMD ") :])
    return env, entry, cmd


def http_get(addr, path):
    import http.client

    c = http.client.HTTPConnection(addr, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


@contextlib.contextmanager
def serving(cccgate, extra_env):
    """Runs the image's entrypoint and command with the image's environment (listeners moved
    to ephemeral loopback ports); yields (grpc address, /readyz body) once ready."""
    import time

    env, entry, cmd = dockerfile_runtime()
    assert entry == ["/usr/local/bin/cccgate"], entry
    env = dict(env)
    assert env.get("CCCGATE_LISTEN", "").endswith(":50051"), env
    assert env.get("CCCGATE_METRICS_LISTEN", "").endswith(":9464"), env
    env.update(
        CCCGATE_LISTEN="127.0.0.1:0",
        CCCGATE_ADMIN_LISTEN="127.0.0.1:0",
        CCCGATE_METRICS_LISTEN="127.0.0.1:0",
    )
    env.update(extra_env)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CCCGATE_")}
    full_env.update(env)
    p = subprocess.Popen(
        [cccgate, *cmd], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        metrics = grpc = None
        deadline = time.monotonic() + 60
        seen = []
        while (metrics is None or grpc is None) and time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"http://([0-9.]+:\d+)/metrics", line)
            if m:
                metrics = m.group(1)
            m = re.search(r"gateway listening.*?([0-9.]+:\d+)|\"addr\":\"([0-9.]+:\d+)\".*gateway listening", line)
            if m:
                grpc = m.group(1) or m.group(2)
        assert metrics and grpc, "no addresses logged:\n" + "".join(seen)
        while time.monotonic() < deadline:
            code, body = http_get(metrics, "/readyz")
            if code == 200:
                yield grpc, body
                return
            assert code == 503, (code, body)
            time.sleep(0.05)
        raise AssertionError("not ready within 60 s")
    finally:
        p.terminate()
        p.wait(timeout=30)


def run_image_command(cccgate, extra_env):
    with serving(cccgate, extra_env) as (_, body):
        return body


def replay_cli_checks(cccgate):
    @check("replay CLI: --shard I/N runs merged with --merge-summaries equal one whole run")
    def sharded():
        work = tempfile.mkdtemp(prefix="cccgate-replay-")
        try:
            listings = os.path.join(work, "listings.jsonl")
            r = run([cccgate, "synth", "listings", "--out", listings, "--count", "4000", "--certs", "1000"])
            assert r.returncode == 0, r.stderr
            with serving(cccgate, {}) as (grpc, _):
                target = f"http://{grpc}"
                base = [cccgate, "replay", "--target", target, "--input", listings, "--progress", "off"]
                whole = os.path.join(work, "whole.json")
                r = run(base + ["--out", os.path.join(work, "whole.jsonl"), "--summary-json", whole])
                assert r.returncode == 0, r.stderr
                parts = []
                for i in range(3):
                    part = os.path.join(work, f"summary-{i}.json")
                    r = run(base + ["--out", os.path.join(work, f"v-{i}.jsonl"), "--shard", f"{i}/3", "--summary-json", part])
                    assert r.returncode == 0, r.stderr
                    parts.append(part)
            merged = os.path.join(work, "merged.json")
            r = run([cccgate, "replay", "--merge-summaries", *parts, "--summary-json", merged])
            assert r.returncode == 0, r.stderr
            assert "3 shards merged" in r.stderr, r.stderr
            drop = ("seconds", "records_per_sec", "latency_us", "latency_histogram_us",
                    "concurrency", "shard", "merged_shards")
            load = lambda p: {k: v for k, v in json.load(open(p)).items() if k not in drop}
            assert load(merged) == load(whole)
            r = run([cccgate, "replay", "--merge-summaries", *parts[:2]])
            assert r.returncode != 0 and "2/3" in r.stderr and "missing" in r.stderr, r.stderr
        finally:
            shutil.rmtree(work, ignore_errors=True)

    sharded()


def image_checks(cccgate):
    @check("image: without a volume, the image's command serves the embedded sample")
    def no_volume():
        body = run_image_command(cccgate, {})
        assert body.startswith("ready: snapshot"), body

    no_volume()

    @check("image: with a volume (CCCGATE_SNAPSHOT_DIR), it serves the snapshots there")
    def volume():
        work = tempfile.mkdtemp(prefix="cccgate-image-")
        try:
            drop, snaps = os.path.join(work, "drop"), os.path.join(work, "snapshots")
            r = run([cccgate, "synth", "feed", "--out", drop, "--certs", "200", "--sequence", "4711"])
            assert r.returncode == 0, r.stderr
            r = run([cccgate, "load", "build", "--drop", drop, "--out", snaps])
            assert r.returncode == 0, r.stderr
            body = run_image_command(cccgate, {"CCCGATE_SNAPSHOT_DIR": snaps})
            assert body.strip() == "ready: snapshot 4711", body
        finally:
            shutil.rmtree(work, ignore_errors=True)

    volume()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cccgate", default=os.path.join(ROOT, "target", "debug", "cccgate"))
    ap.add_argument("--write-prometheusrule", action="store_true")
    a = ap.parse_args()
    if a.write_prometheusrule:
        write_prometheus_rule()
        return 0
    for tool in ("kubectl", "kubernetes-validate", "promtool"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (.ci/run installs it)")
            return 2
    for k in KUSTOMIZATIONS:
        try:
            text, objs = render(k)
        except subprocess.CalledProcessError as e:
            RESULTS.append((f"{k}: renders", e))
            print(f"FAIL  {k}: kubectl kustomize: {e.stderr}")
            continue
        check_kustomization(k, text, objs)
    try:
        check_replay_job(render("base")[1])
    except subprocess.CalledProcessError as e:
        RESULTS.append(("replay: renders", e))
        print(f"FAIL  replay: kubectl kustomize: {e.stderr}")
    prometheus_rule_in_sync()
    dashboard_promql()
    if not os.access(a.cccgate, os.X_OK):
        print(f"{a.cccgate} is not built (cargo build -p cccgate)")
        return 2
    loader_script_checks(os.path.abspath(a.cccgate))
    image_checks(os.path.abspath(a.cccgate))
    replay_cli_checks(os.path.abspath(a.cccgate))
    failed = [n for n, e in RESULTS if e is not None]
    print(f"\ncheck_deploy: {len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
