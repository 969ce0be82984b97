"""Install mode on a bundle made by the real bundle writer (from the local
registry and file server fixtures): master with the recorder, and the
images loaded into the real dockerd and a standalone containerd."""

import argparse
import os
import subprocess

import pytest
import yaml

import install_support as sup
from install_support import ko


@pytest.fixture(scope="module")
def real_bundle(run_cli, bundle_args, tmp_path_factory):
    out = tmp_path_factory.mktemp("realbundle")
    path = str(out / ("k8s-offline-%s-linux-amd64.tar" % sup.K8S_VERSION))
    rc, stdout, stderr = run_cli("bundle", *bundle_args, "--output", path,
                                 "--cache-dir", str(out / "cache"))
    assert rc == 0, stderr
    assert os.path.isfile(path), os.listdir(str(out))
    return path


def context(bundle, root, cri, repo, address=None):
    args = argparse.Namespace(bundle=bundle, root=root, cri=cri,
                              image_repository=repo, skip_phases=None,
                              dry_run=False, no_progress=True,
                              containerd_address=address, command="master")
    return sup.with_runner(ko.NodeContext(args, "master"))


def test_master_on_real_bundle(real_bundle, tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    assert ko.main(["master", "--root", root, "--bundle", real_bundle,
                    "--no-progress", "--no-wait", "--join-file",
                    str(tmp_path / "j.json")]) == 0
    bundle = ko.Bundle(real_bundle)
    try:
        wanted = set(ko.image_target(i, "k8s.gcr.io")
                     for i in bundle.meta["images"])
        flannel = [i["ref"] for i in bundle.meta["images"]
                   if i["name"] == "flannel"][0]
    finally:
        bundle.close()
    assert wanted <= set(runner.cluster.docker_images)
    with open(os.path.join(root, ko.FLANNEL_RENDERED.lstrip("/"))) as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d]
    ds = [d for d in docs if d["kind"] == "DaemonSet"]
    assert len(ds) == 1
    spec = ds[0]["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == flannel
    assert spec["initContainers"][0]["image"] == flannel
    assert os.listdir(os.path.join(root, "opt/cni/bin"))
    assert os.access(os.path.join(root, "usr/bin/crictl"), os.X_OK)


def test_real_bundle_into_dockerd(real_bundle, dockerd, tmp_path):
    repo = "k8so-realbundle.local"
    ctx = context(real_bundle, str(tmp_path), "docker", repo)
    targets = []
    try:
        ko.phase_images(ctx)
        for image in ctx.bundle.meta["images"]:
            target = ko.image_target(image, repo)
            targets.append(target)
            assert ko.docker_image_id(ctx.runner, target) == \
                image["config_digest"], target
        again = context(real_bundle, str(tmp_path), "docker", repo)
        ko.phase_images(again)
        assert not [a for a in again.runner.seen if a[:2] == ["docker", "load"]]
        again.close()
    finally:
        ctx.close()
        subprocess.call(["docker", "rmi", "-f"] + targets,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_real_bundle_into_containerd(real_bundle, containerd, tmp_path):
    ctx = context(real_bundle, str(tmp_path), "containerd", "k8s.gcr.io",
                  containerd.sock)
    try:
        ko.phase_images(ctx)
        have = ko.containerd_images(ctx)
        for image in ctx.bundle.meta["images"]:
            name = ko._normalize_image_name(ko.image_target(image,
                                                            "k8s.gcr.io"))
            assert have.get(name) == image["manifest_digest"], name
    finally:
        ctx.close()
