"""master against a --root tree and a recorder.  The other install commands
have their own files: test_install_join.py, tests/daytwo/test_token.py,
tests/reset/test_reset.py; status, wait and remove-node are
tests/daytwo/test_cluster_checks.py."""

import json
import os

import pytest
import yaml

import install_support as sup
from install_support import ko, mode, rpath, run


def test_master_runs_every_phase_in_order(host, bundle_dir, capsys):
    root, runner = host
    join_file = os.path.join(root, "..", "join.json")
    runner.expect("kubectl", "--kubeconfig", ko.ADMIN_CONF, "taint", "nodes",
                  "node-a", "node-role.kubernetes.io/master-")
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
    with open(rpath(root, ko.kubelet_unit_files("/etc/systemd/system")["10-kubeadm.conf"])) as handle:
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
    assert info["kubernetes_version"] == sup.K8S_VERSION and info["arch"] == "amd64"
    assert info["certificate_key"] is None
    assert "join --join-file %s" % join_file in captured.out


def test_master_images_are_all_loaded_under_kubeadm_names(host, bundle_dir):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait",
               "--image-repository", "registry.local:5000/k8s") == 0
    tags = set(runner.cluster.docker_images)
    assert "registry.local:5000/k8s/kube-apiserver:" + sup.K8S_VERSION in tags
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
        "cgroup-driver": "systemd",
        "pod-infra-container-image": "k8s.gcr.io/pause:3.1"}
    assert len(init["certificateKey"]) == 64
    cluster = docs["ClusterConfiguration"]
    assert cluster["kubernetesVersion"] == sup.K8S_VERSION
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
    assert run(root, bundle_dir, "master", "--no-wait", "--skip-phases",
               "join-file") == 0
    path = rpath(root, "/home/alice/.kube/config")
    assert mode(path) == 0o600
    for owned in (path, os.path.dirname(path)):
        assert (os.stat(owned).st_uid, os.stat(owned).st_gid) == (1000, 1000)
    assert mode(os.path.dirname(path)) == 0o700


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
    assert "k8s.gcr.io/kube-apiserver:" + sup.K8S_VERSION in runner.cluster.containerd_images
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
        runner.expect("modprobe", "br_netfilter")
        runner.expect("sysctl", "-w")
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
    if phase == "init":     # word for word, as restore's (one shared run)
        assert ("error: kubeadm init failed (exit 1): simulated failure of "
                "kubeadm: the full output is in %s; fix the cause and run "
                "master again\n" % ko.KUBEADM_INIT_LOG) in err
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


def test_every_run_is_logged_0600(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    path = rpath(root, ko.INSTALL_LOG)
    assert mode(path) == 0o600
    text = open(path).read()
    assert "[init] done in" in text and "run: kubeadm init --config" in text


def test_modules_loaded_and_persisted_overlay_failure_only_warns(host,
                                                                bundle_dir,
                                                                capsys):
    root, runner = host
    import shutil
    for module in ("br_netfilter", "overlay"):
        os.rmdir(rpath(root, "/sys/module/" + module))
    shutil.rmtree(rpath(root, "/proc/sys/net/bridge"))
    open(rpath(root, "/proc/modules"), "w").close()
    runner.expect("modprobe")
    runner.expect("sysctl", "-w")
    runner.fail[("modprobe", "overlay")] = 1
    assert run(root, bundle_dir, "master", "--no-wait", "--skip-phases",
               "join-file") == 0
    assert runner.ran("modprobe", "br_netfilter")
    assert "warning: cannot load the kernel module overlay" in \
        capsys.readouterr().err
    sysctl = runner.ran("sysctl", "-w")[0]
    assert "net.bridge.bridge-nf-call-iptables=1" in sysctl
    assert "net.ipv4.ip_forward=1" not in sysctl      # already 1
