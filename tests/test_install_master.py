"""master, join, token, reset, status against a --root tree and a recorder."""

import json
import os
import stat
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import install_support as sup  # noqa: E402
from install_support import ko  # noqa: E402


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return sup.make_bundle(str(tmp_path_factory.mktemp("bundle")))


@pytest.fixture
def host(tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    return root, runner


def run(root, bundle, *argv):
    return ko.main(list(argv[:1]) + ["--root", root, "--bundle", bundle,
                                     "--no-progress"] + list(argv[1:]))


def rpath(root, path):
    return os.path.join(root, path.lstrip("/"))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_master_runs_every_phase_in_order(host, bundle_dir, capsys):
    root, runner = host
    join_file = os.path.join(root, "..", "join.json")
    assert run(root, bundle_dir, "master", "--join-file", join_file,
               "--allow-pods-on-master") == 0
    captured = capsys.readouterr()
    err = captured.err
    order = [line.split("]")[0][1:] for line in err.splitlines()
             if line.startswith("[") and "done in" in line]
    assert order == [phase.name for phase in ko.MASTER_PHASES]
    # Files installed with their modes.
    assert mode(rpath(root, "/usr/bin/kubeadm")) == 0o755
    assert mode(rpath(root, "/usr/bin/crictl")) == 0o755
    assert sorted(os.listdir(rpath(root, "/opt/cni/bin"))) == [
        "bridge", "flannel", "host-local", "loopback", "portmap"]
    with open(rpath(root, ko.KUBELET_DROPIN)) as handle:
        assert "KUBELET_KUBEADM_ARGS" in handle.read()
    with open(rpath(root, ko.MODULES_FILE)) as handle:
        assert handle.read().split() == ["br_netfilter", "overlay"]
    with open(rpath(root, ko.SYSCTL_FILE)) as handle:
        assert "net.bridge.bridge-nf-call-iptables = 1" in handle.read()
    with open(rpath(root, ko.CRICTL_CONFIG)) as handle:
        assert "unix:///var/run/dockershim.sock" in handle.read()
    # kubeconfig for root, 0600.
    assert mode(rpath(root, "/root/.kube/config")) == 0o600
    # Commands, in order.
    cmds = [" ".join(argv) for argv in runner.commands()]
    assert "systemctl enable kubelet" in cmds
    load = cmds.index("docker load")
    init = [i for i, c in enumerate(cmds) if c.startswith("kubeadm init --config")]
    apply = [i for i, c in enumerate(cmds) if " apply -f " in c]
    assert load < init[0] < apply[0]
    assert any("node-role.kubernetes.io/master-" in c for c in cmds)
    # Join file: 0600 with every field.
    assert mode(join_file) == 0o600
    with open(join_file) as handle:
        info = json.load(handle)
    assert info["api_server_endpoint"] == sup.HOST_IP + ":6443"
    assert info["token"] == sup.TOKEN
    assert info["discovery_token_ca_cert_hash"] == sup.CA_HASH
    assert info["kubernetes_version"] == "v1.16.0" and info["arch"] == "amd64"
    assert info["certificate_key"] is None
    assert "join --join-file %s" % join_file in captured.out


def test_master_images_are_all_loaded_under_kubeadm_names(host, bundle_dir):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait",
               "--image-repository", "registry.local:5000/k8s") == 0
    tags = set(runner.cluster.docker_images)
    assert "registry.local:5000/k8s/kube-apiserver:v1.16.0" in tags
    assert "registry.local:5000/k8s/pause:3.1" in tags
    assert "quay.io/coreos/flannel:v0.11.0-amd64" in tags
    assert "docker.io/library/nginx:1.17" in tags
    assert not any(t.startswith("k8s.gcr.io/") for t in tags)
    docs, _ = sup.read_config_documents(rpath(root, ko.INIT_CONFIG))
    cluster = [d for d in docs if d["kind"] == "ClusterConfiguration"][0]
    assert cluster["imageRepository"] == "registry.local:5000/k8s"


def test_rerun_changes_nothing_and_loads_nothing(host, bundle_dir):
    root, runner = host
    args = ("master", "--no-wait", "--join-file", os.path.join(root, "..", "j"))
    assert run(root, bundle_dir, *args) == 0
    before = sup.snapshot(root)
    runner.calls[:] = []
    assert run(root, bundle_dir, *args) == 0
    cmds = [" ".join(a) for a in runner.commands()]
    assert "docker load" not in cmds
    assert not [c for c in cmds if c.startswith("kubeadm init")]
    assert not [c for c in cmds if c.startswith("kubeadm reset")]
    assert sup.snapshot(root) == before


def test_kubeadm_config_field_by_field(host, bundle_dir, tmp_path):
    root, runner = host
    extra = tmp_path / "extra.yaml"
    extra.write_text("---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                     "kind: KubeProxyConfiguration\nconntrack:\n"
                     "  maxPerCore: 0\n")
    runner.cluster.cgroup_driver = "systemd"
    assert run(root, bundle_dir, "master", "--no-wait", "--upload-certs",
               "--pod-network-cidr", "10.32.0.0/16",
               "--service-cidr", "10.100.0.0/16",
               "--control-plane-endpoint", "lb.example:6443",
               "--kubeadm-config-extra", str(extra)) == 0
    path = rpath(root, ko.INIT_CONFIG)
    assert mode(path) == 0o600
    with open(path) as handle:
        docs = {d["kind"]: d for d in yaml.safe_load_all(handle) if d}
    init = docs["InitConfiguration"]
    assert init["apiVersion"] == "kubeadm.k8s.io/v1beta2"
    assert init["localAPIEndpoint"] == {"advertiseAddress": sup.HOST_IP,
                                        "bindPort": 6443}
    assert init["nodeRegistration"]["name"] == "node-a"
    assert init["nodeRegistration"]["criSocket"] == "/var/run/dockershim.sock"
    assert init["nodeRegistration"]["kubeletExtraArgs"] == {
        "cgroup-driver": "systemd"}
    assert len(init["certificateKey"]) == 64
    cluster = docs["ClusterConfiguration"]
    assert cluster["kubernetesVersion"] == "v1.16.0"
    assert cluster["controlPlaneEndpoint"] == "lb.example:6443"
    assert cluster["networking"]["podSubnet"] == "10.32.0.0/16"
    assert cluster["networking"]["serviceSubnet"] == "10.100.0.0/16"
    assert cluster["imageRepository"] == "k8s.gcr.io"
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert docs["KubeProxyConfiguration"]["conntrack"] == {"maxPerCore": 0}
    init_cmd = runner.ran("kubeadm", "init", "--config")[0]
    assert "--upload-certs" in init_cmd
    # The flannel manifest got the same pod network.
    with open(rpath(root, ko.FLANNEL_RENDERED)) as handle:
        cm = [d for d in yaml.safe_load_all(handle)
              if d and d["kind"] == "ConfigMap"][0]
    assert json.loads(cm["data"]["net-conf.json"])["Network"] == "10.32.0.0/16"
    # The join file carries the certificate key made at init.
    with open(os.path.join(bundle_dir, ko.JOIN_FILE_NAME)) as handle:
        info = json.load(handle)
    assert info["certificate_key"] == init["certificateKey"]


def test_sudo_user_gets_own_kubeconfig(host, bundle_dir, monkeypatch):
    root, runner = host
    monkeypatch.setenv("SUDO_USER", "alice")
    chowns = []
    monkeypatch.setattr(ko.os, "chown", lambda p, u, g: chowns.append((p, u, g)))
    assert run(root, bundle_dir, "master", "--no-wait", "--skip-phases",
               "join-file") == 0
    path = rpath(root, "/home/alice/.kube/config")
    assert mode(path) == 0o600
    assert (path, 1000, 1000) in chowns


def test_containerd_runtime_config_and_import(host, bundle_dir):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--cri", "containerd",
               "--skip-phases", "join-file") == 0
    with open(rpath(root, ko.CONTAINERD_CONFIG)) as handle:
        text = handle.read()
    assert 'sandbox_image = "k8s.gcr.io/pause:3.1"' in text
    with open(rpath(root, ko.CRICTL_CONFIG)) as handle:
        assert "unix:///run/containerd/containerd.sock" in handle.read()
    assert runner.ran("ctr", "--address", "/run/containerd/containerd.sock",
                      "-n", "k8s.io", "images", "import", "-")
    assert "k8s.gcr.io/kube-apiserver:v1.16.0" in runner.cluster.containerd_images
    docs, _ = sup.read_config_documents(rpath(root, ko.INIT_CONFIG))
    assert docs[0]["nodeRegistration"]["criSocket"] == \
        "/run/containerd/containerd.sock"


def test_containerd_config_enables_cri_and_keeps_driver():
    text = ('disabled_plugins = ["cri"]\nversion = 2\n[plugins."io.containerd.'
            'grpc.v1.cri"]\n  sandbox_image = "x"\n  SystemdCgroup = true\n')
    new = ko.containerd_config_with(text, "r/pause:3.1")
    assert 'disabled_plugins = []' in new
    assert 'sandbox_image = "r/pause:3.1"' in new
    assert ko.containerd_cgroup_driver(new) == "systemd"
    assert ko.containerd_cgroup_driver("") == "cgroupfs"


PHASE_FAILURES = [
    ("host", ("modprobe",)),
    ("runtime", ("systemctl", "enable", "--now", "docker")),
    ("install", ("systemctl", "enable", "kubelet")),
    ("images", ("docker", "load")),
    ("init", ("kubeadm", "init", "--config")),
    ("network", ("kubectl", "--kubeconfig", ko.ADMIN_CONF, "apply")),
    ("join-file", ("kubeadm", "token", "create")),
]


@pytest.mark.parametrize("phase,prefix", PHASE_FAILURES)
def test_rerun_after_failure_continues(host, bundle_dir, phase, prefix, capsys):
    root, runner = host
    if phase == "host":
        os.rmdir(rpath(root, "/sys/module/br_netfilter"))
        import shutil
        shutil.rmtree(rpath(root, "/proc/sys/net/bridge"))
        with open(rpath(root, "/proc/modules"), "w") as handle:
            handle.write("overlay 1 0 - Live 0x0\n")
    if phase == "runtime":
        runner.cluster.docker_running = False
        sup.write(root, "/usr/bin/dockerd", "#!/bin/sh\n", 0o755)
    runner.fail[prefix] = 1
    join_file = os.path.join(root, "..", "join-%s.json" % phase)
    args = ("master", "--no-wait", "--join-file", join_file)
    if phase == "runtime":
        runner.fail[prefix] = 1
    assert run(root, bundle_dir, *args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not os.path.exists(join_file)
    if phase == "runtime":
        runner.cluster.docker_running = True
    runner.calls[:] = []
    assert run(root, bundle_dir, *args) == 0, capsys.readouterr().err
    assert os.path.exists(join_file)
    state = json.load(open(rpath(root, ko.STATE_FILE)))
    assert state["init"] == "done" and state["role"] == "master"
    cmds = [" ".join(a) for a in runner.commands()]
    inits = [c for c in cmds if c.startswith("kubeadm init --config")]
    if phase in ("network", "join-file"):
        assert inits == []          # init finished the first time
    else:
        assert len(inits) == 1
    if phase == "init":
        assert "kubeadm reset -f" in cmds    # the half-done init undone first
        assert cmds.index("kubeadm reset -f") < cmds.index(inits[0])
    else:
        assert "kubeadm reset -f" not in cmds


def test_dry_run_changes_nothing(host, bundle_dir, capsys):
    root, runner = host
    before = sup.snapshot(root)
    bundle_before = sup.snapshot(os.path.dirname(bundle_dir))
    assert run(root, bundle_dir, "master", "--dry-run",
               "--upload-certs") == 0
    out = capsys.readouterr()
    text = out.err + out.out
    assert sup.snapshot(root) == before
    assert sup.snapshot(os.path.dirname(bundle_dir)) == bundle_before
    assert not os.path.exists(rpath(root, ko.INSTALL_LOG))
    changes = [argv for argv, executed in runner.calls if not executed]
    executed = runner.commands()
    for argv in executed:   # only reads ran
        assert argv[0] in ("docker", "ip", "iptables", "systemctl", "ctr") \
            and argv[:2] != ["docker", "load"], argv
    printed = [" ".join(a) for a in changes]
    assert "docker load" in printed
    assert any(p.startswith("kubeadm init --config") for p in printed)
    for phase in ko.MASTER_PHASES:
        assert "[%s]" % phase.name in text
    assert "would write /usr/bin/kubeadm" in text
    assert "would run: kubeadm init --config" in text


def test_dry_run_reset_join_token_change_nothing(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    before = sup.snapshot(root)
    runner.calls[:] = []
    assert ko.main(["reset", "--root", root, "--dry-run"]) == 0
    assert ko.main(["token", "--root", root, "--bundle", bundle_dir,
                    "--dry-run", "--join-file", str(tmp_path / "t.json")]) == 0
    assert not os.path.exists(str(tmp_path / "t.json"))
    assert sup.snapshot(root) == before
    assert all(argv[0] in ("iptables-save", "ip6tables-save")
               for argv in runner.commands())


def test_wait_reports_pending_pod_and_incomplete_bundle(host, bundle_dir,
                                                        capsys):
    root, runner = host
    runner.cluster.pods = [
        sup.pod_json("etcd-node-a"),
        sup.pod_json("kube-flannel-ds-x", "Pending", "ImagePullBackOff",
                     "quay.io/coreos/flannel:v0.11.0-amd64")]
    assert run(root, bundle_dir, "master", "--wait-timeout", "60") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the cluster was not ready after 60 s")
    assert "kube-flannel-ds-x" in last and "ImagePullBackOff" in last
    assert "bundle is incomplete" in last
    assert "waiting for:" in err
    # Bounded: the fake clock moved about 60 s, not more.
    assert 60 <= runner.clock["t"] - 1600000000.0 <= 60 + 2 * ko.WAIT_INTERVAL


def test_wait_succeeds_when_node_becomes_ready(host, bundle_dir, capsys):
    root, runner = host
    runner.cluster.node_ready = False
    calls = {"n": 0}
    original = runner.answer

    def answer(argv):
        if argv[0] == "kubectl" and "node" in argv:
            calls["n"] += 1
            runner.cluster.node_ready = calls["n"] >= 3
        return original(argv)
    runner.answer = answer
    assert run(root, bundle_dir, "master", "--wait-timeout", "120",
               "--skip-phases", "join-file") == 0
    err = capsys.readouterr().err
    assert "cni config uninitialized" in err
    assert "is Ready and every kube-system pod Running" in err


def test_token_writes_fresh_join_file(host, bundle_dir, tmp_path, capsys):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "first.json")) == 0
    runner.calls[:] = []
    path = str(tmp_path / "fresh.json")
    assert ko.main(["token", "--root", root, "--bundle", bundle_dir,
                    "--join-file", path]) == 0
    info = json.load(open(path))
    assert info["certificate_key"] == sup.CERT_KEY
    assert mode(path) == 0o600
    assert runner.ran("kubeadm", "token", "create", "--print-join-command")
    assert runner.ran("kubeadm", "init", "phase", "upload-certs",
                      "--upload-certs")
    assert "--control-plane" in capsys.readouterr().out


def test_token_on_non_master_refuses(host, capsys):
    root, runner = host
    assert ko.main(["token", "--root", root]) == 2
    assert "not a master" in capsys.readouterr().err


def test_status_shows_nodes_pods_and_cert_warning(host, capsys):
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    runner.cluster.cert_output = (
        "CERTIFICATE                EXPIRES                  RESIDUAL TIME   "
        "EXTERNALLY MANAGED\n"
        "admin.conf                 Sep 20, 2020 10:00 UTC   364d            no\n"
        "apiserver                  Oct 01, 2020 10:00 UTC   364d            no\n")
    assert ko.main(["status", "--root", root]) == 0
    out, err = capsys.readouterr()
    assert "node-a" in out and "Ready" in out and "etcd-node-a" in out
    assert "admin.conf" in out
    assert "warning: cluster certificates expire in 6 days" in err
    assert runner.ran("kubeadm", "alpha", "certs", "check-expiration")


def test_cert_command_by_version():
    assert ko.cert_check_command("v1.16.0")[1] == "alpha"
    assert ko.cert_check_command("v1.20.2") == ["kubeadm", "certs",
                                                "check-expiration"]


def test_remove_node_drains_then_deletes(host, capsys):
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    assert ko.main(["remove-node", "node-b", "--root", root]) == 0
    cmds = [" ".join(a) for a in runner.commands()]
    drain = [i for i, c in enumerate(cmds) if " drain node-b" in c]
    delete = [i for i, c in enumerate(cmds) if c.endswith("delete node node-b")]
    assert drain and delete and drain[0] < delete[0]
    assert ko.main(["remove-node", "node-z", "--root", root]) == 2
    assert "node node-z not found" in capsys.readouterr().err


def test_remove_node_of_a_gone_node_deletes_without_draining(host, capsys):
    """A node whose kubelet is gone cannot evict its pods: a drain would
    wait out its whole timeout (300 s in the lab), so the node is deleted."""
    root, runner = host
    sup.write(root, ko.ADMIN_CONF, "x")
    runner.cluster.node_ready = False
    assert ko.main(["remove-node", "node-b", "--root", root]) == 0
    cmds = [" ".join(a) for a in runner.commands()]
    assert not [c for c in cmds if " drain " in c]
    assert [c for c in cmds if c.endswith("delete node node-b")]
    assert "not Ready" in capsys.readouterr().err


def test_reset_removes_what_we_added(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    sup.write(root, "/etc/cni/net.d/10-flannel.conflist", "{}")
    os.makedirs(rpath(root, "/sys/class/net/flannel.1"))
    runner.calls[:] = []
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    for path in ("/etc/kubernetes", "/root/.kube/config", ko.STATE_DIR,
                 "/etc/cni/net.d/10-flannel.conflist"):
        assert not os.path.exists(rpath(root, path)), path
    assert os.path.exists(rpath(root, "/usr/bin/kubeadm"))
    cmds = [" ".join(a) for a in runner.commands()]
    assert cmds[0].startswith("kubeadm reset -f")
    assert "ip link delete flannel.1" in cmds
    assert "ip link delete cni0" not in cmds
    assert "iptables-restore" in cmds


def test_iptables_filter_keeps_other_rules():
    text = ("*nat\n:KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n"
            "-A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -s 10.244.0.0/16 "
            "-j RETURN\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT\n")
    new, removed = ko.filter_iptables_save(text, "10.244.0.0/16")
    assert removed == 3
    assert "MASQUERADE" in new and ":DOCKER" in new and "KUBE" not in new
    assert "10.244" not in new and new.endswith("COMMIT\n")


def test_join_worker_with_join_file(host, bundle_dir, tmp_path):
    root, runner = host
    path = sup.write_join_file(tmp_path, image_repository="k8s.gcr.io",
                               control_plane_nodes=["master-1"])
    assert run(root, bundle_dir, "join", "--join-file", path,
               "--no-wait") == 0
    docs, _ = sup.read_config_documents(rpath(root, ko.JOIN_CONFIG))
    join = docs[0]
    assert join["kind"] == "JoinConfiguration"
    assert join["discovery"]["bootstrapToken"] == {
        "token": sup.TOKEN, "apiServerEndpoint": sup.HOST_IP + ":6443",
        "caCertHashes": [sup.CA_HASH]}
    assert join["nodeRegistration"]["kubeletExtraArgs"] == {
        "cgroup-driver": "cgroupfs"}
    assert "controlPlane" not in join
    tags = set(runner.cluster.docker_images)
    assert "k8s.gcr.io/kube-proxy:v1.16.0" in tags
    assert "k8s.gcr.io/pause:3.1" in tags
    assert "docker.io/library/nginx:1.17" in tags
    assert "k8s.gcr.io/kube-apiserver:v1.16.0" not in tags
    assert "k8s.gcr.io/etcd:3.3.15-0" not in tags
    assert runner.ran("kubeadm", "join", "--config", ko.JOIN_CONFIG)


def test_join_control_plane_with_flags(host, bundle_dir, capsys):
    root, runner = host
    assert run(root, bundle_dir, "join", "--control-plane", "--apiserver",
               "10.1.1.1:6443", "--token", sup.TOKEN,
               "--discovery-token-ca-cert-hash", sup.CA_HASH,
               "--certificate-key", sup.CERT_KEY, "--no-wait",
               "--image-repository", "k8s.gcr.io") == 0
    docs, _ = sup.read_config_documents(rpath(root, ko.JOIN_CONFIG))
    assert docs[0]["controlPlane"]["certificateKey"] == sup.CERT_KEY
    assert "k8s.gcr.io/kube-apiserver:v1.16.0" in runner.cluster.docker_images
    assert os.path.exists(rpath(root, "/root/.kube/config"))


def test_join_expired_token_refused_by_kubeadm(host, bundle_dir, capsys):
    root, runner = host
    runner.fail[("kubeadm", "join")] = 1
    original = runner._execute

    def execute(argv, **kwargs):
        result = original(argv, **kwargs)
        if argv[:2] == ["kubeadm", "join"] and not result.ok:
            result.stderr = ("error execution phase preflight: couldn't validate"
                             " the identity of the API Server: token id "
                             "\"abcdef\" is invalid for this cluster or it has "
                             "expired")
        return result
    runner._execute = execute
    assert run(root, bundle_dir, "join", "--apiserver", "10.1.1.1:6443",
               "--token", sup.TOKEN, "--discovery-token-ca-cert-hash",
               sup.CA_HASH, "--no-wait", "--image-repository",
               "k8s.gcr.io") == 2
    assert "run `k8s_offline.py token` on the master" in \
        capsys.readouterr().err


KUBEADM_NODE_EXISTS = (
    "[preflight] Running pre-flight checks\n"
    "[kubelet-start] Checking for an existing Node in the cluster with name "
    "\"worker-1\" and status \"Ready\"\n"
    "error execution phase kubelet-start: a Node with name \"worker-1\" and "
    "status \"Ready\" already exists in the cluster. You must delete the "
    "existing Node or change the name of this new joining Node\n"
    "To see the stack trace of this error execute with --v=5 or higher\n")


def test_explain_join_failure_names_the_reason_not_kubeadm_footer():
    line = ko.explain_join_failure(KUBEADM_NODE_EXISTS)
    assert "stack trace" not in line
    assert "worker-1" in line and "remove-node worker-1" in line
    other = ko.explain_join_failure(
        "error execution phase preflight: [preflight] Some fatal errors "
        "occurred:\n\t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: "
        "/etc/kubernetes/kubelet.conf already exists\n"
        "To see the stack trace of this error execute with --v=5 or higher\n")
    assert "kubelet.conf already exists" in other and "stack trace" not in other


def _join_refused_as_stale(runner, times):
    """kubeadm join fails `times` times as when the node was reset moments
    ago and the cluster still lists it as Ready."""
    runner.fail[("kubeadm", "join")] = times
    original = runner._execute

    def execute(argv, **kwargs):
        result = original(argv, **kwargs)
        if argv[:2] == ["kubeadm", "join"] and not result.ok:
            result.stderr = KUBEADM_NODE_EXISTS
        return result
    runner._execute = execute


def _join_by_flags(root, bundle_dir):
    return run(root, bundle_dir, "join", "--apiserver", "10.1.1.1:6443",
               "--token", sup.TOKEN, "--discovery-token-ca-cert-hash",
               sup.CA_HASH, "--no-wait", "--image-repository", "k8s.gcr.io")


def test_join_right_after_reset_waits_for_the_old_node(host, bundle_dir):
    root, runner = host
    _join_refused_as_stale(runner, 2)
    assert _join_by_flags(root, bundle_dir) == 0
    assert len(runner.ran("kubeadm", "join")) == 3
    # each refused attempt is undone before the next one
    assert len(runner.ran("kubeadm", "reset", "-f")) >= 2


def test_join_gives_up_on_a_node_that_stays_ready(host, bundle_dir, capsys):
    root, runner = host
    _join_refused_as_stale(runner, 1000)
    started = runner.clock["t"]
    assert _join_by_flags(root, bundle_dir) == 2
    attempts = len(runner.ran("kubeadm", "join"))
    assert 2 <= attempts <= 1 + ko.STALE_NODE_WAIT // ko.STALE_NODE_RETRY
    assert runner.clock["t"] - started <= ko.STALE_NODE_WAIT
    assert "remove-node worker-1" in capsys.readouterr().err


def test_every_run_is_logged_0600(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    path = rpath(root, ko.INSTALL_LOG)
    assert mode(path) == 0o600
    text = open(path).read()
    assert "[init] done in" in text and "run: kubeadm init --config" in text


def test_join_dry_run_changes_nothing(host, bundle_dir, tmp_path, capsys):
    root, runner = host
    path = sup.write_join_file(tmp_path)
    before = sup.snapshot(root)
    assert run(root, bundle_dir, "join", "--join-file", path, "--dry-run") == 0
    assert sup.snapshot(root) == before
    err = capsys.readouterr().err
    assert "would run: kubeadm join --config %s" % ko.JOIN_CONFIG in err
    assert not runner.ran("kubeadm")


def test_worker_join_waits_for_its_node_with_kubelet_credentials(
        host, bundle_dir, tmp_path, capsys):
    root, runner = host
    path = sup.write_join_file(tmp_path)
    runner.cluster.node_ready = False
    assert run(root, bundle_dir, "join", "--join-file", path,
               "--wait-timeout", "30") == 2
    assert "node node-a is NotReady: cni config uninitialized" in capsys.readouterr().err
    gets = [a for a in runner.commands() if a[0] == "kubectl"]
    assert gets and all(a[2] == ko.KUBELET_CONF for a in gets)
    assert not [a for a in gets if "pods" in a]
    runner.cluster.node_ready = True
    assert run(root, bundle_dir, "join", "--join-file", path) == 0
    assert len(runner.ran("kubeadm", "join")) == 1


@pytest.mark.parametrize("as_tar", [False, True])
def test_join_file_travels_with_the_bundle(tmp_path, monkeypatch, as_tar):
    """master writes the join file into the extracted bundle folder (or
    beside the .tar); join on another host finds it there and the bundle
    still verifies."""
    bundle = sup.make_bundle(str(tmp_path / "usb"), as_tar=as_tar)
    master_root = sup.make_root(str(tmp_path / "m"))
    sup.install_fake(monkeypatch, master_root)
    assert run(master_root, bundle, "master", "--no-wait") == 0
    expected = os.path.join(bundle if not as_tar else os.path.dirname(bundle),
                            ko.JOIN_FILE_NAME)
    assert mode(expected) == 0o600
    worker_root = sup.make_root(str(tmp_path / "w"), hostname="node-b")
    sup.install_fake(monkeypatch, worker_root)
    assert run(worker_root, bundle, "join", "--no-wait") == 0
    docs, _ = sup.read_config_documents(rpath(worker_root, ko.JOIN_CONFIG))
    assert docs[0]["discovery"]["bootstrapToken"]["token"] == sup.TOKEN
    assert docs[0]["nodeRegistration"]["name"] == "node-b"


def test_modules_loaded_and_persisted_overlay_failure_only_warns(host,
                                                                bundle_dir,
                                                                capsys):
    root, runner = host
    import shutil
    for module in ("br_netfilter", "overlay"):
        os.rmdir(rpath(root, "/sys/module/" + module))
    shutil.rmtree(rpath(root, "/proc/sys/net/bridge"))
    open(rpath(root, "/proc/modules"), "w").close()
    runner.fail[("modprobe", "overlay")] = 1
    assert run(root, bundle_dir, "master", "--no-wait", "--skip-phases",
               "join-file") == 0
    assert runner.ran("modprobe", "br_netfilter")
    assert "warning: cannot load the kernel module overlay" in \
        capsys.readouterr().err
    sysctl = runner.ran("sysctl", "-w")[0]
    assert "net.bridge.bridge-nf-call-iptables=1" in sysctl
    assert "net.ipv4.ip_forward=1" not in sysctl      # already 1
