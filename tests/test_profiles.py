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
# The newest patch of each minor in bundle/releases.json (1.16-1.20), of
# each minor in kubeadm-images-by-version.tsv (1.21-1.36; its pause, etcd
# and CoreDNS tags) and the release the lab proves (1.37), with the image
# repository its bundle names.
RELEASES = {
    "v1.16.15": None, "v1.17.17": None, "v1.18.20": None, "v1.19.16": None,
    "v1.20.15": None,
    "v1.21.14": ("k8s.gcr.io", "3.4.1", "3.4.13-0", "v1.8.0"),
    "v1.22.17": ("registry.k8s.io", "3.5", "3.5.6-0", "v1.8.4"),
    "v1.23.17": ("registry.k8s.io", "3.6", "3.5.6-0", "v1.8.6"),
    "v1.24.17": ("registry.k8s.io", "3.7", "3.5.6-0", "v1.8.6"),
    "v1.25.16": ("registry.k8s.io", "3.8", "3.5.9-0", "v1.9.3"),
    "v1.26.15": ("registry.k8s.io", "3.9", "3.5.10-0", "v1.9.3"),
    "v1.27.16": ("registry.k8s.io", "3.9", "3.5.12-0", "v1.10.1"),
    "v1.28.15": ("registry.k8s.io", "3.9", "3.5.15-0", "v1.10.1"),
    "v1.29.15": ("registry.k8s.io", "3.9", "3.5.16-0", "v1.11.1"),
    "v1.30.14": ("registry.k8s.io", "3.9", "3.5.15-0", "v1.11.3"),
    "v1.31.14": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.11.3"),
    "v1.32.13": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.11.3"),
    "v1.33.13": ("registry.k8s.io", "3.10", "3.5.24-0", "v1.12.0"),
    "v1.34.10": ("registry.k8s.io", "3.10.1", "3.6.5-0", "v1.12.1"),
    "v1.35.7": ("registry.k8s.io", "3.10.1", "3.6.6-0", "v1.13.1"),
    "v1.36.3": ("registry.k8s.io", "3.10.2", "3.6.8-0", "v1.14.2"),
    "v1.37.2": ("registry.k8s.io", "3.10.2", "3.7.0-0", "v1.14.6"),
}
MINORS = sorted(RELEASES, key=ko.parse_version)
CERT_KEY = "ab" * 32


def release_bundle(folder, version, **options):
    """A fixture bundle of VERSION as bundle writes one (for 1.21 on:
    bundle.json's image_repository, CoreDNS at coredns/coredns)."""
    facts = RELEASES[version]
    if facts is None:
        return sup.make_bundle(folder, version=version, **options)
    repository, pause, etcd, coredns = facts
    images = [(name, version) for name in (
        "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kube-proxy")] + [("pause", pause), ("etcd", etcd),
                          ("coredns/coredns", coredns)]
    return sup.make_bundle(folder, version=version, kubeadm_images=images,
                           image_repository=repository, **options)


@pytest.fixture(scope="module", params=MINORS)
def minor_bundle(request, tmp_path_factory):
    version = request.param
    folder = str(tmp_path_factory.mktemp("bundle-" + version))
    return version, release_bundle(folder, version)


def context(root, bundle, command="master", role="master", flags=()):
    args = ko.build_parser().parse_args(
        [command, "--root", root, "--bundle", bundle, "--no-progress"] +
        list(flags))
    return ko.InstallContext(args, role)


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
    """(root, runner, ctx(cri)): an InstallContext on the fixture host."""
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
