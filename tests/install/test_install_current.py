"""master, join and reset for the current minors (1.21 to 1.37) against a
--root tree and the recorder: the runtime each minor gets (containerd by
default from 1.24, Docker through cri-dockerd), the cgroup v1 refusal of
1.35 and --allow-cgroup-v1, the kubelet units in /usr/lib/systemd/system,
and the bundled images pinned against the kubelet's image GC."""

import json
import os

import pytest

import install_support as sup
from install_support import ko, rpath, run

V137 = "v1.37.2"
CGROUP_V1_MOUNTS = ("tmpfs /sys/fs/cgroup tmpfs ro,nosuid 0 0\n"
                    "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
CGROUP_V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n"


@pytest.fixture
def current(host, tmp_path):
    """(root, runner, bundle(version, **options)) on a cgroup v2 host."""
    root, runner = host
    sup.write(root, "/proc/mounts", CGROUP_V2_MOUNTS)

    def bundle(version=V137, **options):
        return sup.release_bundle(str(tmp_path / ("b-%s-%d" % (
            version, len(os.listdir(str(tmp_path)))))), version, **options)
    return root, runner, bundle


def config_docs(root, path):
    docs, _ = sup.read_config_documents(rpath(root, path))
    return dict((doc["kind"], doc) for doc in docs)


def last_error_line(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_master_on_1_37_uses_containerd_and_the_new_places(current):
    root, runner, bundle = current
    path = bundle()
    assert run(root, path, "master", "--no-wait", "--join-file",
               os.path.join(root, "..", "j.json")) == 0
    docs = config_docs(root, ko.INIT_CONFIG)
    init, cluster = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["nodeRegistration"]["criSocket"] == \
        "unix:///run/containerd/containerd.sock"
    # no kubelet --pod-infra-container-image in 1.35 on: containerd's
    # config names the sandbox
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "cgroup-driver", "value": "systemd"}]
    assert cluster["imageRepository"] == "registry.k8s.io"
    assert cluster["dns"] == {"imageRepository": "registry.k8s.io/coredns"}
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    # every bundled image under the name kubeadm looks for, pinned
    loaded = runner.cluster.containerd_images
    assert "registry.k8s.io/coredns/coredns:v1.14.6" in loaded
    assert "registry.k8s.io/pause:3.10.2" in loaded
    assert all(ko.PINNED_LABEL in runner.cluster.containerd_labels.get(
        name, ()) for name in loaded)
    # the kubelet's units where the packages put them from 1.24
    assert os.path.isfile(rpath(root, "/usr/lib/systemd/system/kubelet.service"))
    assert os.path.isfile(rpath(
        root, "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"))
    assert not os.path.exists(rpath(root, "/etc/systemd/system/kubelet.service"))
    with open(rpath(root, ko.CONTAINERD_CONFIG)) as handle:
        assert "SystemdCgroup = true" in handle.read()


def test_a_rerun_on_1_37_pins_and_loads_nothing_again(current):
    root, runner, bundle = current
    path = bundle()
    args = ("master", "--no-wait", "--join-file",
            os.path.join(root, "..", "j.json"))
    assert run(root, path, *args) == 0
    runner.calls[:] = []
    assert run(root, path, *args) == 0
    cmds = [" ".join(argv) for argv in runner.commands()]
    assert not [c for c in cmds if " images label " in c or "import" in c]


def test_docker_on_1_24_without_cri_dockerd_is_refused_before_any_change(
        current, capsys):
    root, runner, bundle = current
    path = bundle("v1.24.17")
    before = sup.snapshot(root)
    assert run(root, path, "master", "--cri", "docker") == 2
    line = last_error_line(capsys)
    assert "no dockershim" in line and "--cri containerd" in line
    assert sup.snapshot(root) == before


def test_docker_on_1_23_still_uses_the_dockershim(current):
    root, runner, bundle = current
    assert run(root, bundle("v1.23.17"), "master", "--no-wait", "--cri",
               "docker", "--join-file", os.path.join(root, "..", "j")) == 0
    init = config_docs(root, ko.INIT_CONFIG)["InitConfiguration"]
    assert init["nodeRegistration"]["criSocket"] == "/var/run/dockershim.sock"


def test_docker_on_1_30_goes_through_the_bundled_cri_dockerd(current):
    root, runner, bundle = current
    path = bundle("v1.30.14", cri_dockerd=True)
    assert run(root, path, "master", "--no-wait", "--cri", "docker",
               "--join-file", os.path.join(root, "..", "j")) == 0
    docs = config_docs(root, ko.INIT_CONFIG)
    assert docs["InitConfiguration"]["nodeRegistration"]["criSocket"] == \
        "unix:///var/run/cri-dockerd.sock"
    # Docker keeps its images from the GC by the kubelet's thresholds
    assert docs["KubeletConfiguration"]["imageGCHighThresholdPercent"] == 100
    assert os.stat(rpath(root, ko.CRI_DOCKERD_BIN)).st_mode & 0o111
    for unit in ("cri-docker.service", "cri-docker.socket"):
        assert os.path.isfile(rpath(root, "/etc/systemd/system/" + unit))
    with open(rpath(root, ko.CRI_DOCKERD_DROPIN)) as handle:
        dropin = handle.read()
    assert "--pod-infra-container-image=registry.k8s.io/pause:3.9" in dropin
    assert dropin.startswith("[Service]\nExecStart=\nExecStart=/usr/bin/"
                             "cri-dockerd --container-runtime-endpoint fd://")
    assert ("enable", "--now", "cri-docker.service") in runner.cluster.started
    with open(rpath(root, ko.CRICTL_CONFIG)) as handle:
        assert "unix:///var/run/cri-dockerd.sock" in handle.read()
    assert "registry.k8s.io/pause:3.9" in runner.cluster.docker_images


def test_without_cri_the_runtime_is_containerd_from_1_24(current):
    root, runner, bundle = current
    args = ko.build_parser().parse_args(["master", "--root", root, "--bundle",
                                         bundle("v1.24.17")])
    assert ko.NodeContext(args, "master").cri == "containerd"
    args = ko.build_parser().parse_args(["master", "--root", root, "--bundle",
                                         bundle("v1.23.17")])
    assert ko.NodeContext(args, "master").cri == "docker"


@pytest.mark.parametrize("version,taints", [
    ("v1.23.17", ["node-role.kubernetes.io/master-"]),
    ("v1.24.17", ["node-role.kubernetes.io/master-",
                  "node-role.kubernetes.io/control-plane-"]),
    ("v1.25.16", ["node-role.kubernetes.io/control-plane-"])])
def test_allow_pods_on_master_removes_the_taints_kubeadm_sets(current,
                                                             version, taints):
    root, runner, bundle = current
    for taint in taints:
        runner.expect("kubectl", "--kubeconfig", ko.ADMIN_CONF, "taint",
                      "nodes", "node-a", taint)
    assert run(root, bundle(version), "master", "--no-wait", "--cri",
               "containerd", "--allow-pods-on-master", "--join-file",
               os.path.join(root, "..", "j")) == 0
    assert [argv[-1] for argv in runner.ran("kubectl", "--kubeconfig",
                                            ko.ADMIN_CONF, "taint")] == taints


# -- cgroup v1 ----------------------------------------------------------------

def test_1_35_on_a_cgroup_v1_host_is_refused_before_any_change(current,
                                                               capsys):
    root, runner, bundle = current
    sup.write(root, "/proc/mounts", CGROUP_V1_MOUNTS)
    path = bundle("v1.35.7")
    before = sup.snapshot(root)
    assert run(root, path, "master") == 2
    line = last_error_line(capsys)
    assert "cgroup v1" in line and "--allow-cgroup-v1" in line
    assert sup.snapshot(root) == before


def test_allow_cgroup_v1_sets_fail_cgroup_v1_and_ignores_one_check(current,
                                                                  capsys):
    root, runner, bundle = current
    sup.write(root, "/proc/mounts", CGROUP_V1_MOUNTS)
    assert run(root, bundle(), "master", "--no-wait", "--allow-cgroup-v1",
               "--join-file", os.path.join(root, "..", "j")) == 0
    err = capsys.readouterr().err
    assert "cgroup v1 on this host" in err
    assert "--allow-cgroup-v1: kubeadm's SystemVerification" in err
    kubelet = config_docs(root, ko.INIT_CONFIG)["KubeletConfiguration"]
    assert kubelet["failCgroupV1"] is False
    init = [argv for argv in runner.ran("kubeadm", "init")
            if "--config" in argv]
    assert init[0][-1] == "--ignore-preflight-errors=SystemVerification"


def test_a_1_34_bundle_needs_no_flag_on_cgroup_v1(current, capsys):
    root, runner, bundle = current
    sup.write(root, "/proc/mounts", CGROUP_V1_MOUNTS)
    assert run(root, bundle("v1.34.10"), "master", "--no-wait",
               "--join-file", os.path.join(root, "..", "j")) == 0
    assert "failCgroupV1" not in config_docs(root, ko.INIT_CONFIG)[
        "KubeletConfiguration"]


def test_the_host_cgroup_version_is_read_from_proc_mounts(tmp_path):
    root = str(tmp_path)
    host = ko.Host(root)
    assert ko.host_cgroup_version(host) is None
    sup.write(root, "/proc/mounts", CGROUP_V2_MOUNTS)
    assert ko.host_cgroup_version(host) == 2
    sup.write(root, "/proc/mounts", CGROUP_V1_MOUNTS)
    assert ko.host_cgroup_version(host) == 1


# -- the kubelet's units --------------------------------------------------------

def test_a_foreign_kubelet_unit_in_etc_is_refused_from_1_24(current, capsys):
    root, runner, bundle = current
    sup.write(root, "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
              "[Service]\n")
    before = sup.snapshot(root)
    assert run(root, bundle(), "master") == 2
    line = last_error_line(capsys)
    assert ("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf would "
            "override the kubelet unit") in line
    assert sup.snapshot(root) == before


def test_this_tools_older_units_are_moved_and_reset_keeps_the_new_ones(current):
    root, runner, bundle = current
    old = "/etc/systemd/system/kubelet.service"
    sup.write(root, old, "[Unit]\n")
    sup.write(root, ko.STATE_FILE, json.dumps({"units": [old]}), 0o600)
    assert run(root, bundle(), "master", "--no-wait", "--join-file",
               os.path.join(root, "..", "j")) == 0
    assert not os.path.exists(rpath(root, old))
    state = json.load(open(rpath(root, ko.STATE_FILE)))
    assert state["units"] == [
        "/usr/lib/systemd/system/kubelet.service",
        "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"]
    # reset leaves the kubelet installed, as kubeadm reset does: restore on
    # a reset master runs kubeadm init with no bundle (the lab's daytwo).
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    assert os.path.exists(rpath(root, state["units"][0]))
    assert os.path.exists(rpath(root, state["units"][1]))
    assert ("disable", "kubelet") not in runner.cluster.started


def test_join_on_1_37_writes_a_v1beta4_join_config(current, tmp_path):
    root, runner, bundle = current
    path = bundle()
    join_file = sup.write_join_file(tmp_path, kubernetes_version=V137)
    assert ko.main(["join", "--root", root, "--bundle", path, "--no-progress",
                    "--no-wait", "--join-file", join_file]) == 0
    join = config_docs(root, ko.JOIN_CONFIG)["JoinConfiguration"]
    assert join["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert join["nodeRegistration"]["criSocket"] == \
        "unix:///run/containerd/containerd.sock"


def test_reset_of_a_1_37_node_names_the_socket_as_a_url(current):
    root, runner, bundle = current
    assert run(root, bundle(), "master", "--no-wait", "--join-file",
               os.path.join(root, "..", "j")) == 0
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    reset = runner.ran("kubeadm", "reset", "-f")[-1]
    assert reset[-2:] == ["--cri-socket",
                          "unix:///run/containerd/containerd.sock"]


def test_a_systemd_dropin_takes_plain_words_only():
    assert ko.systemd_dropin([("Service", [("ExecStart", []), (
        "ExecStart", ["/usr/bin/x", "--a=b:1"])])]) == \
        "[Service]\nExecStart=\nExecStart=/usr/bin/x --a=b:1\n"
    with pytest.raises(ko.UserError):
        ko.systemd_dropin([("Service", [("ExecStart", ["a b\nX=1"])])])


def test_docker_with_cgroupfs_on_1_22_is_followed_and_warned(current,
                                                             capsys):
    root, runner, bundle = current
    runner.cluster.cgroup_driver = "cgroupfs"
    assert run(root, bundle("v1.22.17"), "master", "--no-wait", "--cri",
               "docker", "--join-file", os.path.join(root, "..", "j")) == 0
    assert "docker uses the cgroupfs cgroup driver, Kubernetes v1.22.17 " \
        "expects systemd" in capsys.readouterr().err
    kubelet = config_docs(root, ko.INIT_CONFIG)["KubeletConfiguration"]
    assert kubelet["cgroupDriver"] == "cgroupfs"     # the two agree


V028_MANIFEST = """\
  net-conf.json: |
    {
      "Network": "10.244.0.0/16",
      "Backend": {"Type": "vxlan"}
    }
      initContainers:
      - name: install-cni-plugin
        image: ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3
      - name: install-cni
        image: ghcr.io/flannel-io/flannel:v0.28.9
      containers:
      - name: kube-flannel
        image: ghcr.io/flannel-io/flannel:v0.28.9
"""


def test_the_v0_28_manifest_keeps_each_image_in_its_container():
    refs = {"flannel": "ghcr.io/flannel-io/flannel:v0.28.9",
            "flannel-cni-plugin":
                "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"}
    text = ko.render_flannel(V028_MANIFEST, "10.32.0.0/16", refs)
    assert '"Network": "10.32.0.0/16"' in text
    assert text.count(refs["flannel"]) == 2
    assert text.count(refs["flannel-cni-plugin"]) == 1
    # refs under another name (a mirror) go to the container of their kind
    mirrored = dict((k, "mirror.local/" + v.split("/", 1)[1])
                    for k, v in refs.items())
    text = ko.render_flannel(V028_MANIFEST, "10.244.0.0/16", mirrored)
    assert "install-cni-plugin\n        image: mirror.local/flannel-io/" \
        "flannel-cni-plugin:v1.9.1-flannel3\n" in text
    assert text.count("mirror.local/flannel-io/flannel:v0.28.9") == 2
