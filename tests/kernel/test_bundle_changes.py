"""A bundle that changes between `verify` and its use (issue 9): every
later phase hashes what it reads on the way to the host, so a member
changed after the verify phase is refused before it lands, for a folder
bundle and for a tar changed in place; with real dockerd and containerd
the import stream breaks before the changed blob is whole."""

import os
import subprocess
import uuid

import pytest

import install_support as sup
from install_support import ko


def member(meta, kind):
    pause = [i for i in meta["images"] if i["name"] == "pause"][0]
    return {"binary": "bin/kubelet", "cni": meta["archives"]["cni"],
            "crictl": meta["archives"]["crictl"],
            "unit": "systemd/kubelet.service",
            "flannel": "manifests/kube-flannel.yml",
            "layer": "images/blobs/sha256/" + pause["layers"][-1][7:],
            "config": "images/blobs/sha256/" + pause["config_digest"][7:],
            "docker": meta["archives"].get("docker")}[kind]


def flip_in_place(bundle, relpath):
    """Flip one byte of a member where it lies: in the folder's file, or
    inside the .tar at the member's offset (same size, same inode)."""
    if bundle.kind == "tar":
        info = bundle.members[relpath]
        path, offset = bundle.path, info.offset_data + info.size // 2
    else:
        path = os.path.join(bundle.path, relpath)
        offset = os.path.getsize(path) // 2
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 1]))


def swap_for_link(bundle, relpath, tmp_path):
    evil = tmp_path / "evil"
    evil.write_bytes(b"#!/bin/sh\necho evil\n")
    path = os.path.join(bundle.path, relpath)
    os.unlink(path)
    os.symlink(str(evil), path)


def change_after_verify(monkeypatch, change):
    original = ko.verify_bundle

    def verify_then_change(bundle, progress=True):
        original(bundle, progress)
        change(bundle)
    monkeypatch.setattr(ko, "verify_bundle", verify_then_change)


def leftovers(root):
    return [os.path.join(folder, name) for folder, _, names in os.walk(root)
            for name in names if name.startswith(".k8s-offline-")]


KINDS = ["binary", "cni", "crictl", "unit", "flannel", "layer", "config",
         "docker"]


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
@pytest.mark.parametrize("kind", KINDS)
def test_member_changed_after_verify_is_refused(kind, as_tar, tmp_path,
                                                monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    path = sup.make_bundle(str(tmp_path / "b"), as_tar=as_tar,
                           with_docker=(kind == "docker"))
    if kind == "docker":
        runner.cluster.docker_running = False
    changed = {}

    def change(bundle):
        changed["relpath"] = member(bundle.meta, kind)
        flip_in_place(bundle, changed["relpath"])
    change_after_verify(monkeypatch, change)
    code = ko.main(["master", "--root", root, "--bundle", path,
                    "--no-progress", "--no-wait"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and "error: unexpected" not in err, err
    assert changed["relpath"] in errors[0], errors[0]
    assert "sha256" in errors[0]
    assert leftovers(root) == []
    if kind == "binary":
        assert not os.path.exists(os.path.join(root, "usr/bin/kubelet"))
    if kind in ("layer", "config"):
        assert runner.cluster.docker_images == {}
    if kind == "flannel":
        assert not runner.ran("kubectl", "--kubeconfig", ko.ADMIN_CONF,
                              "apply")


def test_member_swapped_for_a_link_after_verify_is_refused(tmp_path,
                                                           monkeypatch,
                                                           capsys):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    path = sup.make_bundle(str(tmp_path / "b"))
    change_after_verify(monkeypatch, lambda bundle: swap_for_link(
        bundle, "bin/kubelet", tmp_path))
    code = ko.main(["master", "--root", root, "--bundle", path,
                    "--no-progress", "--no-wait"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "bin/kubelet is a link" in err
    assert not os.path.exists(os.path.join(root, "usr/bin/kubelet"))


def test_folder_component_swapped_for_a_link_is_refused(tmp_path,
                                                        monkeypatch, capsys):
    """A link in the middle of a path (bin -> elsewhere) is not followed."""
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    path = sup.make_bundle(str(tmp_path / "b"))

    def swap_folder(bundle):
        os.rename(os.path.join(bundle.path, "bin"), str(tmp_path / "bin"))
        os.symlink(str(tmp_path / "bin"), os.path.join(bundle.path, "bin"))
    change_after_verify(monkeypatch, swap_folder)
    code = ko.main(["master", "--root", root, "--bundle", path,
                    "--no-progress", "--no-wait"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "is a link or not a regular file" in err


def test_unchanged_bundle_installs_the_verified_bytes(tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    path = sup.make_bundle(str(tmp_path / "b"), as_tar=True)
    assert ko.main(["master", "--root", root, "--bundle", path,
                    "--no-progress", "--no-wait"]) == 0
    bundle = ko.Bundle(path)
    try:
        for name, relpath in bundle.meta["binaries"].items():
            with open(os.path.join(root, "usr/bin", name), "rb") as handle:
                assert sup.sha256(handle.read()) == \
                    bundle.meta["files"][relpath]["sha256"]
    finally:
        bundle.close()


# -- real runtimes ----------------------------------------------------------

def changed_bundle_context(tmp_path, cri, address=None, as_tar=False):
    tag = uuid.uuid4().hex[:10]
    path = sup.make_bundle(str(tmp_path / "rb"), busybox=True, as_tar=as_tar,
                           image_prefix=tag + "/", extra_images=())
    bundle = ko.Bundle(path)
    ko.verify_bundle(bundle, progress=False)
    pause = [i for i in bundle.meta["images"] if i["name"] == "pause"][0]
    flip_in_place(bundle, "images/blobs/sha256/" + pause["layers"][0][7:])
    repo = "k8so-test.local/" + tag
    args = ko.argparse.Namespace(bundle=path, root=str(tmp_path), cri=cri,
                                 image_repository=repo, skip_phases=None,
                                 dry_run=False, no_progress=True,
                                 containerd_address=address, command="join")
    ctx = sup.with_runner(ko.NodeContext(args, "worker"))
    ctx._bundle = bundle
    return ctx, bundle, repo


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
def test_docker_load_breaks_on_a_changed_layer(dockerd, tmp_path, as_tar):
    ctx, bundle, repo = changed_bundle_context(tmp_path, "docker",
                                               as_tar=as_tar)
    targets = [ko.image_target(i, repo) for i in bundle.images_for_role("worker")]
    try:
        with pytest.raises(ko.BundleError) as exc:
            ko.phase_images(ctx)
        assert "fails its sha256 check" in str(exc.value)
        for target in targets:
            assert ko.docker_image_id(ctx.runner, target) is None, target
    finally:
        bundle.close()
        subprocess.call(["docker", "rmi", "-f"] + targets,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tar"])
def test_ctr_import_breaks_on_a_changed_layer(containerd, tmp_path, as_tar):
    ctx, bundle, repo = changed_bundle_context(tmp_path, "containerd",
                                               containerd.sock, as_tar=as_tar)
    # flannel keeps its quay.io name (no repo prefix): another test of the
    # session may have imported its own flannel into this containerd.
    before = ko.containerd_images(ctx)
    try:
        with pytest.raises(ko.BundleError) as exc:
            ko.phase_images(ctx)
        assert "fails its sha256 check" in str(exc.value)
        have = ko.containerd_images(ctx)
        for image in bundle.images_for_role("worker"):
            name = ko._normalize_image_name(ko.image_target(image, repo))
            assert have.get(name) == before.get(name), name
    finally:
        bundle.close()
