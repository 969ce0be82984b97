"""The suite's own helpers.  The FakeRunner must be able to fail: a command
it has no answer for, and a kubeadm config kubeadm would refuse, fail the
test.  The Python 3.6 finder takes any 3.6 patch."""

import json
import sys

import pytest

import fake_kubeadm
import install_support as sup
from install_support import K8S_VERSION, ko

V1BETA2 = "kubeadm.k8s.io/v1beta2"


def docs(*documents):
    return "---\n".join(json.dumps(doc) + "\n" for doc in documents)


def init_doc(**changes):
    doc = {"apiVersion": V1BETA2, "kind": "InitConfiguration",
           "localAPIEndpoint": {"advertiseAddress": sup.HOST_IP,
                                "bindPort": 6443},
           "nodeRegistration": {"name": "node-a",
                                "criSocket": "/var/run/dockershim.sock",
                                "kubeletExtraArgs": {"cgroup-driver":
                                                     "cgroupfs"}}}
    doc.update(changes)
    return doc


def cluster_doc(**changes):
    doc = {"apiVersion": V1BETA2, "kind": "ClusterConfiguration",
           "kubernetesVersion": K8S_VERSION, "imageRepository": "k8s.gcr.io",
           "networking": {"podSubnet": "10.244.0.0/16",
                          "serviceSubnet": "10.96.0.0/12",
                          "dnsDomain": "cluster.local"},
           "apiServer": {"certSANs": [sup.HOST_IP, "node-a"]}}
    doc.update(changes)
    return doc


def join_doc(**changes):
    doc = {"apiVersion": V1BETA2, "kind": "JoinConfiguration",
           "discovery": {"bootstrapToken": {
               "token": sup.TOKEN, "apiServerEndpoint": sup.HOST_IP + ":6443",
               "caCertHashes": [sup.CA_HASH]}},
           "nodeRegistration": {"name": "node-b"}}
    doc.update(changes)
    return doc


def test_an_unknown_command_fails_the_test(host):
    root, runner = host
    with pytest.raises(sup.FakeCommandError) as exc:
        runner.run(["frobnicate", "--all"])
    assert "no answer for ['frobnicate', '--all']" in str(exc.value)
    assert runner.problems == [str(exc.value)]
    del runner.problems[:]      # this test wanted it


def test_the_tool_cannot_swallow_an_unknown_command(host):
    """FakeCommandError passes main()'s `except Exception`."""
    root, runner = host
    assert not issubclass(sup.FakeCommandError, Exception)
    runner.fail.clear()
    with pytest.raises(sup.FakeCommandError):
        try:
            runner.run(["frobnicate"])
        except Exception:       # what main() does with a bug
            pytest.fail("the fake's refusal was caught as an Exception")
    del runner.problems[:]


def test_a_declared_command_answers_as_declared(host):
    root, runner = host
    runner.expect("firewall-cmd", "--reload", rc=3, out="not running\n")
    result = runner.run(["firewall-cmd", "--reload"], check=False)
    assert (result.returncode, result.stdout) == (3, "not running\n")
    with pytest.raises(sup.FakeCommandError):
        runner.run(["firewall-cmd", "--permanent", "--add-port=1/tcp"])
    del runner.problems[:]


def test_a_declaration_no_command_used_fails_the_test(host):
    root, runner = host
    runner.expect("swapoff", "-a")
    runner.expect("setenforce", "0")
    runner.run(["setenforce", "0"])
    assert runner.unused() == [("swapoff", "-a")]
    del runner.expected[:]      # this test wanted it


def test_enabling_the_kubelet_needs_its_unit(host):
    root, runner = host
    result = runner.run(["systemctl", "enable", "kubelet"], check=False)
    assert result.returncode == 1 and "does not exist" in result.stdout
    sup.write(root, ko.kubelet_unit_files("/etc/systemd/system")["kubelet.service"], "[Unit]\n")
    assert runner.run(["systemctl", "enable", "kubelet"]).ok


def test_kubectl_apply_needs_the_manifest_and_a_kubeconfig(host):
    root, runner = host
    argv = ["kubectl", "--kubeconfig", ko.ADMIN_CONF, "apply", "-f",
            "/var/lib/k8s-offline/kube-flannel.yml"]
    assert runner.run(argv, check=False).returncode == 1
    sup.write(root, ko.ADMIN_CONF, "x")
    sup.write(root, "/var/lib/k8s-offline/kube-flannel.yml", "x")
    assert runner.run(argv).ok
    assert runner.cluster.applied == ["/var/lib/k8s-offline/kube-flannel.yml"]


def test_the_fake_kubeadm_is_the_bundles_version(host, tmp_path):
    root, runner = host
    assert runner.installed_kubeadm_version() == K8S_VERSION
    sup.write(root, "/usr/bin/kubeadm", "#!/bin/sh\necho fake kubeadm "
              "v1.18.3\n", 0o755)
    assert runner.installed_kubeadm_version() == "v1.18.3"
    assert runner.run(["kubeadm", "version", "-o", "short"]).stdout == \
        "v1.18.3\n"


# -- the fake kubeadm's config check ------------------------------------------

def test_a_config_kubeadm_takes_passes():
    text = docs(init_doc(certificateKey="ab" * 32), cluster_doc(
        controlPlaneEndpoint="lb:6443"), {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration", "cgroupDriver": "systemd"}, {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration", "mode": "ipvs"})
    assert fake_kubeadm.check_config("init", text, K8S_VERSION) == []
    assert fake_kubeadm.check_config("join", docs(join_doc()),
                                     K8S_VERSION) == []


@pytest.mark.parametrize("command,text,problem", [
    ("init", docs(init_doc(apiVersion="kubeadm.k8s.io/v1beta1")),
     "is apiVersion kubeadm.k8s.io/v1beta2, not 'kubeadm.k8s.io/v1beta1'"),
    ("init", docs(init_doc(apiVersion="kubeadm.k8s.io/v1beta3")),
     "not 'kubeadm.k8s.io/v1beta3'"),
    ("init", docs(init_doc(kind="MasterConfiguration")),
     "kubeadm init reads no kind 'MasterConfiguration'"),
    ("init", docs(init_doc(), join_doc()),
     "kubeadm init reads no kind 'JoinConfiguration'"),
    ("join", docs(init_doc()), "kubeadm join reads no kind"),
    ("init", docs(init_doc(skipPhases=["addon/kube-proxy"])),
     "InitConfiguration: unknown field 'skipPhases'"),   # v1beta3 only
    ("init", docs(init_doc(nodeRegistration={"name": "a",
                                             "imagePullPolicy": "Never"})),
     "InitConfiguration.nodeRegistration: unknown field 'imagePullPolicy'"),
    ("init", docs(init_doc(localAPIEndpoint={"bindPort": "6443"})),
     "localAPIEndpoint.bindPort: a integer expected, got '6443'"),
    ("init", docs(cluster_doc(networking={"podCIDR": "10.244.0.0/16"})),
     "ClusterConfiguration.networking: unknown field 'podCIDR'"),
    ("init", docs(cluster_doc(kubernetesVersion="v1.17.0")),
     "kubernetesVersion 'v1.17.0' is not the bundled kubeadm's " + K8S_VERSION),
    ("init", docs(cluster_doc(apiServer={"certSANs": "node-a"})),
     "apiServer.certSANs: a list expected"),
    ("init", docs(cluster_doc(), cluster_doc()), "ClusterConfiguration twice"),
    ("init", docs({"apiVersion": "kubelet.config.k8s.io/v1",
                   "kind": "KubeletConfiguration"}),
     "is apiVersion kubelet.config.k8s.io/v1beta1"),
    ("init", "kind: [unclosed\n", "the config is not YAML"),
    ("join", docs(join_doc(discovery={})), "neither bootstrapToken nor file"),
    ("join", docs(join_doc(controlPlane={"certificateKey": 7})),
     "controlPlane.certificateKey: a string expected"),
])
def test_a_config_kubeadm_refuses_is_named(command, text, problem):
    problems = fake_kubeadm.check_config(command, text, K8S_VERSION)
    assert any(problem in p for p in problems), problems


def test_a_kubeadm_without_a_known_config_api_refuses():
    assert fake_kubeadm.check_config("init", docs(init_doc()), "v1.38.0") == [
        "this fake kubeadm knows no config API of v1.38.0"]


V1BETA3, V1BETA4 = "kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"


@pytest.mark.parametrize("version,text,problem", [
    # v1beta2 went in 1.27, v1beta3 in 1.37; v1beta4 came in 1.31
    ("v1.27.16", docs(init_doc()), "is apiVersion kubeadm.k8s.io/v1beta3, "
     "not 'kubeadm.k8s.io/v1beta2'"),
    ("v1.37.2", docs(init_doc(apiVersion=V1BETA3)), "is apiVersion "
     "kubeadm.k8s.io/v1beta4, not 'kubeadm.k8s.io/v1beta3'"),
    ("v1.30.14", docs(init_doc(apiVersion=V1BETA4)), "not 'kubeadm.k8s.io/"
     "v1beta4'"),
    # v1beta3 dropped useHyperKubeImage and dns.type
    ("v1.22.17", docs(cluster_doc(apiVersion=V1BETA3, kubernetesVersion=
                                  "v1.22.17", useHyperKubeImage=False)),
     "ClusterConfiguration: unknown field 'useHyperKubeImage'"),
    ("v1.22.17", docs(cluster_doc(apiVersion=V1BETA3, kubernetesVersion=
                                  "v1.22.17", dns={"type": "CoreDNS"})),
     "ClusterConfiguration.dns: unknown field 'type'"),
    # v1beta4: name/value lists, the timeouts moved
    ("v1.31.14", docs(init_doc(apiVersion=V1BETA4, nodeRegistration={
        "kubeletExtraArgs": {"cgroup-driver": "systemd"}})),
     "nodeRegistration.kubeletExtraArgs: a list expected"),
    ("v1.31.14", docs(cluster_doc(apiVersion=V1BETA4, kubernetesVersion=
                                  "v1.31.14", apiServer={"extraArgs": {
                                      "v": "2"}})),
     "apiServer.extraArgs: a list expected"),
    ("v1.31.14", docs(cluster_doc(apiVersion=V1BETA4, kubernetesVersion=
                                  "v1.31.14", apiServer={
                                      "timeoutForControlPlane": "4m0s"})),
     "apiServer: unknown field 'timeoutForControlPlane'"),
    ("v1.31.14", docs(init_doc(apiVersion=V1BETA4, nodeRegistration={
        "kubeletExtraArgs": [{"name": "v", "value": 2}]})),
     "kubeletExtraArgs[0].value: a string expected"),
])
def test_the_newer_config_apis_refuse_what_their_kubeadm_refuses(
        version, text, problem):
    problems = fake_kubeadm.check_config("init", text, version)
    assert any(problem in p for p in problems), problems


def test_the_newer_config_apis_take_their_own_shapes():
    assert fake_kubeadm.check_config("init", docs(
        init_doc(apiVersion=V1BETA4, nodeRegistration={
            "kubeletExtraArgs": [{"name": "v", "value": "2"}]},
            timeouts={"controlPlaneComponentHealthCheck": "4m0s"}),
        cluster_doc(apiVersion=V1BETA4, kubernetesVersion="v1.37.2",
                    dns={"imageRepository": "r.example/coredns"})),
        "v1.37.2") == []
    assert fake_kubeadm.check_config("join", docs(join_doc(
        apiVersion=V1BETA4, timeouts={"discovery": "5m0s"})), "v1.31.14") == []


def test_kubeadm_init_with_a_refused_config_fails_the_test(host):
    root, runner = host
    sup.write(root, ko.INIT_CONFIG, docs(init_doc(bogus=1)))
    with pytest.raises(sup.FakeCommandError) as exc:
        runner.run(["kubeadm", "init", "--config", ko.INIT_CONFIG])
    assert "would be refused: InitConfiguration: unknown field 'bogus'" in \
        str(exc.value)
    assert runner.ran("kubeadm", "init")   # recorded, then refused
    del runner.problems[:]


def test_the_suites_version_is_the_tools_default(k8s_version):
    """Bundle-mode tests build the tool's default version from the fixture
    servers, which serve the suite's version: the two must be one."""
    assert k8s_version == sup.K8S_VERSION == ko.DEFAULT_KUBERNETES_VERSION


# -- the Python 3.6 finder -----------------------------------------------------

def _pyenv(home, version, target):
    folder = home / ".pyenv" / "versions" / version / "bin"
    folder.mkdir(parents=True)
    (folder / "python3").symlink_to(target)
    return str(folder / "python3")


def test_find_python36_takes_any_36_patch_and_only_36(python36, tmp_path,
                                                      monkeypatch):
    home = tmp_path / "home"
    older = _pyenv(home, "3.6.7", python36)
    newer = _pyenv(home, "3.6.10", python36)
    _pyenv(home, "3.6.99", sys.executable)      # named 3.6, is not
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sup, "_PY36", [])
    assert sup.find_python36() == newer != older


def test_find_python36_without_one_says_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sup, "_PY36", [])
    assert sup.find_python36() is None
