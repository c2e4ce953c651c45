#!/usr/bin/env python3
"""Checks of the Helm chart in charts/coffer: `helm lint`, `helm template` in
several configurations, and the rendered manifests' properties (security
context, probes, socket hostPath, tolerations, RBAC exactly as needed, HMAC
Secret, provider arguments, NOTES). Run through e2e/chart_test.sh, which
supplies helm and a Python with PyYAML.

Usage: chart_check.py --helm HELM [--root REPO]
Prints one line per check and a closing `N passed, N failed` line; exits 1
if any check failed.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tomllib
import traceback

import yaml

RELEASE = "coffer"
NAMESPACE = "csi-test"
DEFAULT_DIR = "/var/run/secrets-store-csi-providers"


class Checks:
    def __init__(self, helm, root):
        self.helm = helm
        self.root = root
        self.chart = os.path.join(root, "charts", "coffer")
        self.passed = 0
        self.failed = []

    # ---- helm ---------------------------------------------------------------

    def run(self, *args, expect_ok=True):
        proc = subprocess.run(
            [self.helm, *args], capture_output=True, text=True, timeout=120
        )
        if expect_ok and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def template(self, *args):
        out = self.run("template", RELEASE, self.chart, "--namespace", NAMESPACE, *args).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        return Rendered(docs)

    def notes(self, *args):
        out = self.run(
            "install", RELEASE, self.chart, "--namespace", NAMESPACE,
            "--dry-run=client", *args,
        ).stdout
        assert "NOTES:" in out, f"no NOTES in the dry-run output:\n{out[-2000:]}"
        return out.split("NOTES:", 1)[1]

    # ---- bookkeeping --------------------------------------------------------

    def check(self, name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            detail = str(e) if isinstance(e, AssertionError) else traceback.format_exc()
            self.failed.append(name)
            print(f"FAIL - {name}: {detail}")
        else:
            self.passed += 1
            print(f"ok   - {name}")


class Rendered:
    def __init__(self, docs):
        self.docs = docs

    def kinds(self):
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind):
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def daemonset(self):
        return self.one("DaemonSet")

    def pod(self):
        return self.daemonset()["spec"]["template"]["spec"]

    def container(self):
        containers = self.pod()["containers"]
        assert len(containers) == 1, f"expected one container, found {len(containers)}"
        return containers[0]

    def args(self):
        return self.container().get("args", [])

    def flag(self, name):
        """Values of --name=VALUE arguments."""
        prefix = f"--{name}="
        return [a[len(prefix):] for a in self.args() if a.startswith(prefix)]

    def env(self):
        return {e["name"]: e for e in self.container().get("env", [])}

    def volume(self, name):
        for v in self.pod().get("volumes", []):
            if v["name"] == name:
                return v
        raise AssertionError(f"no volume {name!r}")

    def mount(self, name):
        for m in self.container().get("volumeMounts", []):
            if m["name"] == name:
                return m
        raise AssertionError(f"no volumeMount {name!r}")


def eq(got, want, what):
    assert got == want, f"{what}: got {got!r}, want {want!r}"


# ---- properties every rendering must have ------------------------------------


def hardened(r):
    sc = r.container().get("securityContext") or {}
    eq(sc.get("readOnlyRootFilesystem"), True, "readOnlyRootFilesystem")
    eq(sc.get("allowPrivilegeEscalation"), False, "allowPrivilegeEscalation")
    eq(sc.get("privileged", False), False, "privileged")
    caps = sc.get("capabilities") or {}
    eq(caps.get("drop"), ["ALL"], "capabilities.drop")
    eq(caps.get("add", []), [], "capabilities.add")
    pod_sc = r.pod().get("securityContext") or {}
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    eq(seccomp, "RuntimeDefault", "seccompProfile.type")
    # Root only for the root-owned hostPath; never more than that.
    eq(sc.get("runAsUser"), 0, "runAsUser")
    assert not r.pod().get("hostNetwork"), "hostNetwork must be off"
    assert not r.pod().get("hostPID"), "hostPID must be off"


def probes(r):
    c = r.container()
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    assert "http" in ports, f"no port named http: {ports}"
    eq(c["livenessProbe"]["httpGet"]["path"], "/healthz", "livenessProbe path")
    eq(c["readinessProbe"]["httpGet"]["path"], "/readyz", "readinessProbe path")
    for probe in ("livenessProbe", "readinessProbe"):
        port = c[probe]["httpGet"]["port"]
        eq(ports.get(port, port), ports["http"], f"{probe} port")
    addr = r.flag("health-addr")
    eq(len(addr), 1, "--health-addr count")
    eq(addr[0].rsplit(":", 1)[1], str(ports["http"]), "--health-addr port")


def socket_dir(r, host_dir=DEFAULT_DIR):
    vol = r.volume("providers")
    eq(vol.get("hostPath", {}).get("path"), host_dir, "providers hostPath.path")
    eq(vol["hostPath"].get("type"), "DirectoryOrCreate", "providers hostPath.type")
    mount = r.mount("providers")
    assert not mount.get("readOnly"), "the socket directory must be writable"
    eq(r.flag("socket-dir"), [mount["mountPath"]], "--socket-dir")


def scheduling(r):
    pod = r.pod()
    eq(pod.get("tolerations"), [{"operator": "Exists"}], "tolerations")
    eq(pod.get("priorityClassName"), "system-node-critical", "priorityClassName")
    eq(pod.get("nodeSelector", {}).get("kubernetes.io/os"), "linux", "nodeSelector os")
    eq(r.daemonset()["spec"]["updateStrategy"]["type"], "RollingUpdate", "updateStrategy")
    eq(r.daemonset()["metadata"]["namespace"], NAMESPACE, "DaemonSet namespace")
    res = r.container().get("resources") or {}
    for side in ("requests", "limits"):
        for what in ("cpu", "memory"):
            assert what in res.get(side, {}), f"resources.{side}.{what} missing"


def no_rbac(r):
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        eq(r.all(kind), [], kind)
    eq(r.pod().get("automountServiceAccountToken"), False, "automountServiceAccountToken")


def hmac_secret(r):
    secret = r.one("Secret")
    name = secret["metadata"]["name"]
    eq(secret["metadata"]["namespace"], NAMESPACE, "Secret namespace")
    key = base64.b64decode(secret["data"]["key"])
    assert len(key) >= 16, f"HMAC key is {len(key)} bytes, coffer wants at least 16"
    eq(r.volume("hmac-key").get("secret", {}).get("secretName"), name, "hmac-key volume")
    mount = r.mount("hmac-key")
    eq(mount.get("readOnly"), True, "hmac-key mount readOnly")
    eq(r.flag("hmac-key-file"), [mount["mountPath"].rstrip("/") + "/key"], "--hmac-key-file")


def everywhere(r):
    hardened(r)
    probes(r)
    scheduling(r)


def values_paths(tree, prefix="", leaves=False):
    """Dotted paths of values.yaml, down to keys whose values are Kubernetes
    objects (resources, securityContext, ...), which are documented whole.
    With `leaves`, only the keys that hold a value (not a group of keys)."""
    whole = {
        "resources", "podSecurityContext", "securityContext", "updateStrategy",
        "livenessProbe", "readinessProbe",
    }
    for key, value in tree.items():
        path = f"{prefix}{key}"
        group = isinstance(value, dict) and value and path not in whole
        if not (leaves and group):
            yield path
        if group:
            yield from values_paths(value, path + ".", leaves)


def schema_has(schema, path):
    node = schema
    for part in path.split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    opts = ap.parse_args()
    c = Checks(opts.helm, opts.root)
    all_values = os.path.join(c.chart, "ci", "all-values.yaml")

    with open(os.path.join(c.root, "Cargo.toml"), "rb") as f:
        cargo_version = tomllib.load(f)["package"]["version"]
    with open(os.path.join(c.chart, "Chart.yaml")) as f:
        chart = yaml.safe_load(f)
    with open(os.path.join(c.chart, "values.yaml")) as f:
        values = yaml.safe_load(f)
    with open(os.path.join(c.chart, "values.schema.json")) as f:
        schema = json.load(f)

    def chart_yaml():
        eq(chart["apiVersion"], "v2", "Chart.yaml apiVersion")
        eq(str(chart["appVersion"]), cargo_version, "appVersion vs Cargo.toml version")

    c.check("Chart.yaml: apiVersion v2, appVersion = Cargo.toml version", chart_yaml)
    c.check("helm lint --strict (defaults)", lambda: c.run("lint", "--strict", c.chart))
    c.check(
        "helm lint --strict (every backend: ci/all-values.yaml)",
        lambda: c.run("lint", "--strict", c.chart, "-f", all_values),
    )

    # ---- defaults ---------------------------------------------------------
    def defaults():
        r = c.template()
        eq(r.kinds(), ["DaemonSet", "Secret", "ServiceAccount"], "rendered kinds")
        everywhere(r)
        socket_dir(r)
        no_rbac(r)
        hmac_secret(r)
        eq(r.flag("provider"), ["coffer"], "--provider")
        eq(r.flag("log-format"), ["json"], "--log-format")
        eq(r.flag("log-level"), ["info"], "--log-level")
        eq(r.container()["image"], f"coffer:{cargo_version}", "image")
        # Nothing the running binary may not know yet is passed by default.
        for flag in ("vault-ca-cert", "vault-client-cert", "cache-size", "aws-pod-identity-endpoint"):
            eq(r.flag(flag), [], f"--{flag} by default")
        eq(r.env(), {}, "env by default")
        eq(r.one("ServiceAccount")["metadata"]["name"], r.pod()["serviceAccountName"], "ServiceAccount")

    c.check("template defaults: hardened, probes, hostPath, tolerations, no RBAC, HMAC Secret", defaults)

    # ---- everything on ------------------------------------------------------
    def everything():
        r = c.template("-f", all_values)
        everywhere(r)
        socket_dir(r)
        hmac_secret(r)
        eq(r.flag("provider"), ["coffer", "vault", "openbao", "aws"], "--provider")
        role = r.one("ClusterRole")
        eq(len(role["rules"]), 1, "ClusterRole rule count")
        rule = role["rules"][0]
        eq(rule["apiGroups"], [""], "ClusterRole apiGroups")
        eq(sorted(rule["resources"]), ["nodes", "serviceaccounts"], "ClusterRole resources")
        eq(rule["verbs"], ["get"], "ClusterRole verbs")
        assert "resourceNames" not in rule, "unexpected resourceNames"
        binding = r.one("ClusterRoleBinding")
        eq(binding["roleRef"]["name"], role["metadata"]["name"], "ClusterRoleBinding roleRef")
        eq(
            binding["subjects"],
            [{"kind": "ServiceAccount", "name": r.pod()["serviceAccountName"], "namespace": NAMESPACE}],
            "ClusterRoleBinding subjects",
        )
        for kind in ("Role", "RoleBinding"):
            eq(r.all(kind), [], kind)
        eq(r.pod().get("automountServiceAccountToken"), True, "automountServiceAccountToken")
        env = r.env()
        eq(env["COFFER_AWS_KUBE_API"].get("value"), "true", "COFFER_AWS_KUBE_API")
        eq(env["AWS_REGION"].get("value"), "eu-west-1", "AWS_REGION")
        assert env["AWS_ENDPOINT_URL"].get("value", "").startswith("https://"), "AWS_ENDPOINT_URL"
        eq(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName", "NODE_NAME")
        eq(r.flag("vault-addr"), ["https://vault.vault.svc:8200"], "--vault-addr")
        eq(r.flag("vault-auth-mount"), ["jwt"], "--vault-auth-mount")
        eq(r.flag("vault-namespace"), ["team-a"], "--vault-namespace")
        eq(r.flag("cache-size"), ["2000"], "--cache-size")
        eq(r.flag("max-response-bytes"), ["8388608"], "--max-response-bytes (no float formatting)")
        eq(r.volume("vault-ca").get("configMap", {}).get("name"), "vault-ca", "vault-ca volume")
        ca_mount = r.mount("vault-ca")
        eq(ca_mount.get("readOnly"), True, "vault-ca readOnly")
        eq(r.flag("vault-ca-cert"), [ca_mount["mountPath"] + "/ca.crt"], "--vault-ca-cert")
        eq(r.mount("vault-client").get("readOnly"), True, "vault-client readOnly")
        svc = r.one("Service")
        eq(svc["spec"]["ports"][0]["targetPort"], "http", "Service targetPort")
        eq(svc["spec"]["selector"], r.daemonset()["spec"]["selector"]["matchLabels"], "Service selector")
        sm = r.one("ServiceMonitor")
        eq(sm["spec"]["endpoints"][0]["port"], svc["spec"]["ports"][0]["name"], "ServiceMonitor port")
        eq(sm["spec"]["endpoints"][0]["path"], "/metrics", "ServiceMonitor path")
        eq(sm["metadata"]["labels"].get("release"), "prometheus", "ServiceMonitor labels")
        for label, value in sm["spec"]["selector"]["matchLabels"].items():
            eq(svc["metadata"]["labels"].get(label), value, f"Service label {label}")
        eq(r.pod().get("imagePullSecrets"), [{"name": "registry"}], "imagePullSecrets")
        eq(r.mount("extra-ca").get("readOnly"), True, "extraVolumeMounts")
        assert "--vault-ca-path=/etc/extra-ca" in r.args(), "extraArgs"
        eq(r.env()["RUST_BACKTRACE"].get("value"), "1", "extraEnv")
        labels = r.daemonset()["spec"]["template"]["metadata"]["labels"]
        eq(labels.get("example.com/tier"), "node", "podLabels")
        annotations = r.daemonset()["spec"]["template"]["metadata"]["annotations"]
        eq(annotations.get("example.com/team"), "platform", "podAnnotations")
        eq(r.pod()["nodeSelector"], {"kubernetes.io/os": "linux", "example.com/pool": "general"}, "nodeSelector")

    c.check("template every backend + metrics + ServiceMonitor: RBAC exactly get serviceaccounts,nodes", everything)

    def three_providers():
        r = c.template("--set", "providers={vault,openbao,aws}")
        eq(r.flag("provider"), ["vault", "openbao", "aws"], "--provider args")
        everywhere(r)

    c.check("template --set providers={vault,openbao,aws}: three --provider args", three_providers)

    def tenant_policy():
        r = c.template()
        eq(r.flag("tls-file-dir"), ["/etc/coffer", "/etc/ssl", "/etc/pki"], "default --tls-file-dir")
        eq(r.flag("vault-allow-http"), [], "no --vault-allow-http by default")
        eq(r.flag("vault-allowed-address"), [], "no --vault-allowed-address by default")
        r = c.template("--set", "extraVolumes[0].name=ca", "--set", "extraVolumes[0].emptyDir.medium=Memory",
                       "--set", "extraVolumeMounts[0].name=ca", "--set", "extraVolumeMounts[0].mountPath=/etc/team-ca",
                       "--set", "vault.allowedAddresses={https://vault.corp:8200}",
                       "--set", "vault.allowHttp=false", "--set", "vault.allowSkipVerify=false")
        eq(r.flag("tls-file-dir"), ["/etc/coffer", "/etc/ssl", "/etc/pki", "/etc/team-ca"], "--tls-file-dir with a mount")
        eq(r.flag("vault-allowed-address"), ["https://vault.corp:8200"], "--vault-allowed-address")
        eq(r.flag("vault-allow-http"), ["false"], "--vault-allow-http")
        eq(r.flag("vault-allow-skip-verify"), ["false"], "--vault-allow-skip-verify")
        r = c.template("--set", "tlsFileDirs={/srv/tls}")
        eq(r.flag("tls-file-dir"), ["/srv/tls"], "--tls-file-dir from tlsFileDirs")
        r = c.template("--set-json", "tlsFileDirs=[]")
        eq(r.flag("tls-file-dir"), [], "tlsFileDirs=[]: any directory")
        everywhere(r)

    c.check("template tenant policy: --tls-file-dir defaults and the vault.allow* values", tenant_policy)

    def vault_only():
        r = c.template("--set", "providers={vault,openbao}", "--set", "vault.address=https://vault:8200",
                       "--set", "vault.caCert.secret=vault-tls", "--set", "vault.skipVerify=true")
        no_rbac(r)
        everywhere(r)
        eq(r.volume("vault-ca").get("secret", {}).get("secretName"), "vault-tls", "vault-ca from a Secret")
        assert "--vault-skip-verify" in r.args(), "--vault-skip-verify"

    c.check("template Vault/OpenBao only: no RBAC, no API token, CA from a Secret", vault_only)

    def aws_without_kube_api():
        r = c.template("--set", "providers={aws}", "--set", "aws.enabled=true",
                       "--set", "aws.kubeApi=false", "--set", "aws.region=us-east-1")
        no_rbac(r)
        eq(r.env()["COFFER_AWS_KUBE_API"].get("value"), "false", "COFFER_AWS_KUBE_API")

    c.check("template AWS with kubeApi=false: no RBAC, no API token", aws_without_kube_api)

    def aws_rbac_off():
        r = c.template("--set", "aws.enabled=true", "--set", "rbac.create=false")
        eq(r.all("ClusterRole"), [], "ClusterRole with rbac.create=false")

    c.check("template rbac.create=false: no ClusterRole", aws_rbac_off)

    def hmac_existing():
        r = c.template("--set", "hmacKey.existingSecret=my-key", "--set", "hmacKey.secretKey=hmac")
        eq(r.all("Secret"), [], "Secret with existingSecret")
        eq(r.volume("hmac-key")["secret"]["secretName"], "my-key", "hmac-key volume")
        eq(r.flag("hmac-key-file"), [r.mount("hmac-key")["mountPath"] + "/hmac"], "--hmac-key-file")

    c.check("template hmacKey.existingSecret: no Secret, that Secret mounted", hmac_existing)

    def hmac_off():
        r = c.template("--set", "hmacKey.create=false")
        eq(r.all("Secret"), [], "Secret with create=false")
        eq(r.flag("hmac-key-file"), [], "--hmac-key-file")

    c.check("template hmacKey.create=false: no Secret, no --hmac-key-file", hmac_off)

    def hmac_lookup():
        with open(os.path.join(c.chart, "templates", "hmac-secret.yaml")) as f:
            text = f.read()
        assert re.search(r'lookup\s+"v1"\s+"Secret"\s+\.Release\.Namespace', text), \
            "hmac-secret.yaml must reuse the existing key through lookup"
        assert "randAlphaNum" in text, "hmac-secret.yaml must generate the key with randAlphaNum"

    c.check("HMAC Secret keeps its key across upgrades (lookup)", hmac_lookup)

    def other_dir():
        r = c.template("--set", "providerVolume=/etc/kubernetes/secrets-store-csi-providers")
        socket_dir(r, "/etc/kubernetes/secrets-store-csi-providers")

    c.check("template providerVolume: hostPath follows", other_dir)

    def rejected():
        cases = {
            "provider name with a dot": ["--set", "providers={bad.name}"],
            "no providers": ["--set", "providers=null"],
            "empty providers": ["--set-json", "providers=[]"],
            "log format": ["--set", "logFormat=xml"],
            "unknown key": ["--set", "replicas=3"],
            "unknown vault key": ["--set", "vault.adress=https://x"],
            "vault address scheme": ["--set", "vault.address=vault:8200"],
            "CA from both": ["--set", "vault.caCert.configMap=a", "--set", "vault.caCert.secret=b"],
            "duration": ["--set", "mountTimeout=soon"],
        }
        for what, args in cases.items():
            proc = c.run("template", RELEASE, c.chart, *args, expect_ok=False)
            assert proc.returncode != 0, f"{what}: accepted {args}"

    c.check("schema and template reject bad values", rejected)

    def notes():
        default = c.notes()
        assert f"{DEFAULT_DIR}/coffer.sock" in default, "socket path in NOTES"
        assert "tokenRequests" in default and "audience: vault" in default, "vault audience"
        assert "sts.amazonaws.com" not in default, "AWS audiences without AWS"
        assert "spec.provider" in default, "spec.provider hint"
        full = c.notes("-f", all_values)
        for aud in ("vault", "openbao", "sts.amazonaws.com", "pods.eks.amazonaws.com"):
            assert f"audience: {aud}" in full, f"audience {aud} missing"
        for name in ("coffer", "vault", "openbao", "aws"):
            assert f"{DEFAULT_DIR}/{name}.sock" in full, f"{name}.sock missing"
        odd = c.notes("--set", "providerVolume=/opt/sockets")
        assert "WARNING: /opt/sockets" in odd, "warning for a directory the driver does not search"

    c.check("NOTES: sockets, spec.provider, tokenRequests audiences", notes)

    def schema_covers_values():
        missing = [p for p in values_paths(values) if not schema_has(schema, p)]
        assert not missing, f"values.yaml keys without a schema entry: {missing}"

    c.check("values.schema.json covers every values.yaml key", schema_covers_values)

    def documented():
        with open(os.path.join(c.root, "docs", "install.md")) as f:
            doc = f.read()
        missing = [p for p in values_paths(values, leaves=True) if f"`{p}`" not in doc]
        assert not missing, f"values keys not in docs/install.md: {missing}"

    c.check("docs/install.md documents every values.yaml key", documented)

    print(f"chart: {c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
