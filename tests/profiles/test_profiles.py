"""The profiles: the kubeadm config each supported minor gets (golden files
under tests/golden/1.NN/, checked by the fake kubeadm of that version too)
and the runtime plan (what the runtime phase will do on which host).

K8S_OFFLINE_UPDATE_GOLDEN=1 rewrites the golden files (the tests then fail,
so a rewrite is always looked at and committed by hand)."""

import os

import pytest

import fake_kubeadm
import install_support as sup
from install_support import ko

GOLDEN = os.path.join(sup.HERE, "golden")
UPDATE = os.environ.get("K8S_OFFLINE_UPDATE_GOLDEN") == "1"
MINORS = sorted(sup.RELEASES, key=ko.parse_version)
CERT_KEY = "ab" * 32


@pytest.fixture(scope="module", params=MINORS)
def minor_bundle(request, tmp_path_factory):
    version = request.param
    folder = str(tmp_path_factory.mktemp("bundle-" + version))
    return version, sup.release_bundle(folder, version)


def context(root, bundle, command="master", role="master", flags=()):
    args = ko.build_parser().parse_args(
        [command, "--root", root, "--bundle", bundle, "--no-progress"] +
        list(flags))
    return ko.NodeContext(args, role)


def join_info(**changes):
    info = {"api_server_endpoint": sup.HOST_IP + ":6443", "token": sup.TOKEN,
            "discovery_token_ca_cert_hash": sup.CA_HASH}
    info.update(changes)
    return info


def renders(root, bundle, runner):
    """{golden file name: (kubeadm command, config text)}."""
    docker = context(root, bundle, flags=["--cri", "docker"])
    runner.cluster.cgroup_driver = "systemd"
    ha = context(root, bundle, flags=[
        "--cri", "containerd", "--control-plane-endpoint", "lb.example:6443",
        "--node-name", "master-1", "--pod-network-cidr", "10.32.0.0/16",
        "--allow-cgroup-v1"])
    worker = context(root, bundle, "join", "worker",
                     ["--cri", "containerd", "--node-name", "worker-1"])
    control = context(root, bundle, "join", "control-plane",
                      ["--cri", "docker", "--node-name", "master-2",
                       "--apiserver-advertise-address", sup.HOST_IP])
    return {
        "init-docker.json": ("init", ko.kubeadm_init_config(docker)),
        "init-containerd-ha.json": ("init", ko.kubeadm_init_config(
            ha, CERT_KEY)),
        "join-worker.json": ("join", ko.kubeadm_join_config(
            worker, join_info())),
        "join-control-plane.json": ("join", ko.kubeadm_join_config(
            control, join_info(certificate_key=CERT_KEY))),
    }


def test_kubeadm_configs_per_minor_match_their_golden_files(minor_bundle,
                                                            host):
    version, bundle = minor_bundle
    root, runner = host
    sup.write(root, "/usr/bin/kubeadm", "#!/bin/sh\necho fake kubeadm %s\n"
              % version, 0o755)
    # containerd's config as the runtime phase leaves it (systemd from 1.22)
    sup.write(root, ko.CONTAINERD_CONFIG, ko.containerd_config_with(
        None, "registry.k8s.io/pause:3.10", (1, 7),
        ko.profile(version)["cgroup_driver"]))
    minor = ".".join(version[1:].split(".")[:2])
    folder = os.path.join(GOLDEN, minor)
    written = []
    for name, (command, text) in sorted(renders(root, bundle,
                                                runner).items()):
        assert fake_kubeadm.check_config(command, text, version) == [], name
        path = os.path.join(folder, name)
        if UPDATE:
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text)
            written.append(path)
            continue
        with open(path) as handle:
            assert text == handle.read(), (
                "%s changed: if that is meant, run with "
                "K8S_OFFLINE_UPDATE_GOLDEN=1 and commit the diff" % path)
    if written:
        pytest.fail("golden files written: %s" % ", ".join(written))


def test_golden_files_cover_every_minor_and_nothing_else():
    assert sorted(os.listdir(GOLDEN)) == [
        ".".join(v[1:].split(".")[:2]) for v in MINORS]
    for minor in os.listdir(GOLDEN):
        assert sorted(os.listdir(os.path.join(GOLDEN, minor))) == [
            "init-containerd-ha.json", "init-docker.json",
            "join-control-plane.json", "join-worker.json"]


def test_the_golden_init_config_is_the_bundles_version():
    """A golden file that cannot fail the renderer's version: each minor's
    files name that minor's kubernetesVersion."""
    for version in MINORS:
        minor = ".".join(version[1:].split(".")[:2])
        with open(os.path.join(GOLDEN, minor, "init-docker.json")) as h:
            assert '"kubernetesVersion": "%s"' % version in h.read()


# -- the runtime plan -----------------------------------------------------------

@pytest.fixture
def plan_host(host, bundle_dir):
    """(root, runner, ctx(cri)): a NodeContext on the fixture host."""
    root, runner = host

    def ctx(cri):
        return context(root, bundle_dir, flags=["--cri", cri])
    return root, runner, ctx


def test_runtime_plan_docker_running(plan_host):
    root, runner, ctx = plan_host
    assert ko.runtime_plan(ctx("docker")) == "running"


def test_runtime_plan_docker_installed_but_stopped_is_started(plan_host):
    root, runner, ctx = plan_host
    runner.cluster.docker_running = False
    sup.write(root, "/usr/bin/dockerd", "#!/bin/sh\n", 0o755)
    assert ko.runtime_plan(ctx("docker")) == "start"


def test_runtime_plan_docker_from_the_bundle(plan_host, tmp_path):
    root, runner, _ = plan_host
    runner.cluster.docker_running = False
    bundle = sup.make_bundle(str(tmp_path / "b"), with_docker=True)
    assert ko.runtime_plan(context(root, bundle, flags=[
        "--cri", "docker"])) == "install"


def test_runtime_plan_no_docker_anywhere_is_one_clear_refusal(plan_host):
    root, runner, ctx = plan_host
    runner.cluster.docker_running = False
    with pytest.raises(ko.UserError) as exc:
        ko.runtime_plan(ctx("docker"))
    assert str(exc.value).startswith("no container runtime: Docker is not "
                                     "running, not installed")
    assert "(the bundle carries containerd)" not in str(exc.value)


def test_runtime_plan_containerd_running(plan_host):
    root, runner, ctx = plan_host
    assert ko.runtime_plan(ctx("containerd")) == "running"
    assert runner.ran("ctr", "--address", "/run/containerd/containerd.sock",
                      "version")


def test_runtime_plan_containerd_installed_but_stopped_is_started(plan_host):
    root, runner, ctx = plan_host
    runner.fail[("ctr",)] = 1
    sup.write(root, "/usr/bin/containerd", "#!/bin/sh\n", 0o755)
    assert ko.runtime_plan(ctx("containerd")) == "start"


def test_runtime_plan_containerd_from_the_bundle(plan_host):
    root, runner, ctx = plan_host
    runner.fail[("ctr",)] = 1
    context_ = ctx("containerd")
    context_.bundle.meta["archives"].update(
        containerd="archives/containerd.tar.gz", runc="archives/runc")
    assert ko.runtime_plan(context_) == "install"


def test_runtime_plan_no_containerd_anywhere_is_one_clear_refusal(plan_host):
    root, runner, ctx = plan_host
    runner.fail[("ctr",)] = 1
    with pytest.raises(ko.UserError) as exc:
        ko.runtime_plan(ctx("containerd"))
    assert str(exc.value).startswith("no container runtime: containerd is "
                                     "not running or not installed")
