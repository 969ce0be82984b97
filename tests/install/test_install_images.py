"""Images streamed from a bundle into a real dockerd and a real containerd
(the dockerd and containerd fixtures of conftest.py), and the install
commands under Python 3.6."""

import argparse
import os
import subprocess
import sys
import uuid

import pytest

import install_support as sup
from install_support import ko



@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory):
    tag = uuid.uuid4().hex[:10]
    path = sup.make_bundle(str(tmp_path_factory.mktemp("rb")), busybox=True,
                           image_prefix=tag + "/",
                           extra_images=("k8so-test.local/extra-%s:1" % tag,))
    bundle = ko.Bundle(path)
    yield bundle, tag
    bundle.close()


def context(bundle_path, root, cri, role, repo, address=None):
    args = argparse.Namespace(bundle=bundle_path, root=root, cri=cri,
                              image_repository=repo, skip_phases=None,
                              dry_run=False, no_progress=False,
                              containerd_address=address, command="master")
    return sup.with_runner(ko.NodeContext(args, role))


def test_docker_load_streams_role_images_then_skips(dockerd, real_bundle,
                                                    tmp_path):
    bundle, tag = real_bundle
    repo = "k8so-test.local/" + tag
    worker = context(bundle.path, str(tmp_path), "docker", "worker", repo)
    targets = {}
    try:
        ko.phase_images(worker)
        loads = [a for a in worker.runner.seen if a[:2] == ["docker", "load"]]
        assert 1 <= len(loads) <= ko.RUNTIMES["docker"].load_streams
        for image in bundle.meta["images"]:
            target = ko.image_target(image, repo)
            targets[target] = image
            got = ko.docker_image_id(worker.runner, target)
            if image in bundle.images_for_role("worker"):
                assert got == image["config_digest"], target
            else:
                assert got is None, target
        # The loaded image runs (its layers are intact).
        pause = repo + "/pause:3.1"
        out = subprocess.check_output(
            ["docker", "run", "--rm", "--network", "none", pause,
             "/bin/busybox", "cat", "/etc/image-name"], timeout=120)
        assert out.decode().strip() == tag + "/pause:3.1"
        # A master then loads only what the worker did not.
        master = context(bundle.path, str(tmp_path), "docker", "master", repo)
        ko.phase_images(master)
        assert [a for a in master.runner.seen if a[:2] == ["docker", "load"]]
        for target, image in targets.items():
            assert ko.docker_image_id(master.runner, target) == \
                image["config_digest"]
        # A re-run loads nothing.
        again = context(bundle.path, str(tmp_path), "docker", "master", repo)
        ko.phase_images(again)
        assert not [a for a in again.runner.seen if a[:2] == ["docker", "load"]]
    finally:
        subprocess.call(["docker", "rmi", "-f"] + list(targets),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_containerd_import_names_and_skips(containerd, real_bundle, tmp_path):
    bundle, tag = real_bundle
    sock = containerd.sock      # the standalone containerd of conftest.py
    ctx = context(bundle.path, str(tmp_path), "containerd", "master",
                  "k8s.gcr.io", sock)
    ko.phase_images(ctx)
    imports = [a for a in ctx.runner.seen if "import" in a]
    assert len(imports) == ko.RUNTIMES["containerd"].load_streams == 1
    assert all(a == ["ctr", "--address", sock, "-n", "k8s.io", "images",
                     "import", "-"] for a in imports)
    have = ko.containerd_images(ctx)
    for image in bundle.meta["images"]:
        name = ko._normalize_image_name(ko.image_target(image, "k8s.gcr.io"))
        assert have.get(name) == image["manifest_digest"], name
    again = context(bundle.path, str(tmp_path), "containerd", "master",
                    "k8s.gcr.io", sock)
    ko.phase_images(again)
    assert not [a for a in again.runner.seen if "import" in a]


def test_python36_help_and_dry_run(tmp_path, python36):
    script = os.path.join(sup.REPO, "k8s_offline.py")
    out = subprocess.run([python36, "-S", script, "--help"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=60)
    assert out.returncode == 0 and b"master" in out.stdout
    bundle = sup.make_bundle(str(tmp_path / "b"))
    root = sup.make_root(str(tmp_path / "root"))
    before = sup.snapshot(root)
    result = subprocess.run(
        [python36, script, "master", "--dry-run", "--root", root, "--bundle",
         bundle,
         "--no-progress", "--apiserver-advertise-address", "192.168.50.10",
         "--skip-phases", "runtime,images,preflight"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "would run: kubeadm init --config" in err
    assert "Traceback" not in err
    assert sup.snapshot(root) == before


def test_vermin_says_python36():
    result = subprocess.run([sys.executable, "-c",
                             "import sys, vermin; sys.argv[0] = 'vermin'; "
                             "sys.exit(vermin.main())",
                             "--no-tips", "--violations", "-t=3.6-",
                             os.path.join(sup.REPO, "k8s_offline.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=300)
    assert result.returncode == 0, result.stdout.decode()
