"""The Kubernetes manifests in deploy/kubernetes, checked without a cluster: every
document parses, carries what the API server requires, and is consistent with the
others and with Loom (selectors, RBAC names, capabilities, volumes, a ConfigMap loomd
accepts)."""

import glob
import os
import subprocess
import tempfile

import pytest

import harness

yaml = pytest.importorskip("yaml")
KUBE = os.path.join(harness.REPO, "deploy", "kubernetes")


def documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(KUBE, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is not None:
                    docs.append((os.path.basename(path), doc))
    return docs


def by_kind(kind):
    return [doc for _, doc in documents() if doc["kind"] == kind]


def test_every_document_has_what_the_api_server_requires():
    docs = documents()
    assert {doc["kind"] for _, doc in docs} == {
        "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    for name, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), name
        assert doc["metadata"].get("name"), name
        cluster_scoped = doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding")
        assert ("namespace" in doc["metadata"]) != cluster_scoped, (name, doc["kind"])
        if not cluster_scoped:
            assert doc["metadata"]["namespace"] == "loom-system", name


def test_rbac_binds_the_daemonset_account_read_only():
    account = by_kind("ServiceAccount")[0]
    role = by_kind("ClusterRole")[0]
    binding = by_kind("ClusterRoleBinding")[0]
    ds = by_kind("DaemonSet")[0]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["roleRef"]["kind"] == "ClusterRole"
    subject = binding["subjects"][0]
    assert (subject["name"], subject["namespace"]) == (account["metadata"]["name"], account["metadata"]["namespace"])
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_daemonset_is_what_loomd_needs_and_no_more():
    ds = by_kind("DaemonSet")[0]
    spec = ds["spec"]
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, mount
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    args = " ".join(container["args"])
    for flag in ("--config=/etc/loom/loom.yaml", "--state-dir=/run/loom", "--admin-socket=/run/loom/admin.sock"):
        assert flag in args
    config_volume = volumes[mounts["/etc/loom"]["name"]]
    assert config_volume["configMap"]["name"] == by_kind("ConfigMap")[0]["metadata"]["name"]
    # Every flag the DaemonSet passes is one loomd knows.
    help_text = harness.run(harness.loomd_path(), "--help").stdout
    for arg in container["args"]:
        assert arg.split("=")[0] in help_text, arg


def test_configmap_is_a_configuration_loomd_accepts():
    config = by_kind("ConfigMap")[0]["data"]["loom.yaml"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    try:
        p = subprocess.run([harness.loomctl_path(), "config", "validate", f.name], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    finally:
        os.unlink(f.name)
