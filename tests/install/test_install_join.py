"""join (worker and control plane, by join file and by flags) against a --root
tree and a recorder; `master` writes the join file `join` reads."""

import os

import pytest

import install_support as sup
from install_support import ko, mode, ran_phases, rpath, run


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
        "cgroup-driver": "cgroupfs",
        # the kubelet's sandbox is the bundled pause (the flag is there
        # up to 1.34)
        "pod-infra-container-image": "k8s.gcr.io/pause:3.1"}
    assert "controlPlane" not in join
    tags = set(runner.cluster.docker_images)
    assert "k8s.gcr.io/kube-proxy:" + sup.K8S_VERSION in tags
    assert "k8s.gcr.io/pause:3.1" in tags
    assert "docker.io/library/nginx:1.17" in tags
    assert "k8s.gcr.io/kube-apiserver:" + sup.K8S_VERSION not in tags
    assert "k8s.gcr.io/etcd:3.3.15-0" not in tags
    assert runner.ran("kubeadm", "join", "--config", ko.JOIN_CONFIG)


def test_join_control_plane_with_flags(host, bundle_dir, capsys):
    root, runner = host
    assert run(root, bundle_dir, "join", "--control-plane", "--apiserver",
               "10.1.1.1:6443", "--token", sup.TOKEN,
               "--discovery-token-ca-cert-hash", sup.CA_HASH,
               "--certificate-key", sup.CERT_KEY, "--no-wait",
               "--image-repository", "k8s.gcr.io") == 0
    # run_if: a control-plane join runs the kubeconfig phase a worker skips
    assert ran_phases(capsys.readouterr().err)[-3:] == [
        "join", "kubeconfig", "wait"]
    docs, _ = sup.read_config_documents(rpath(root, ko.JOIN_CONFIG))
    assert docs[0]["controlPlane"]["certificateKey"] == sup.CERT_KEY
    assert "k8s.gcr.io/kube-apiserver:" + sup.K8S_VERSION in runner.cluster.docker_images
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
