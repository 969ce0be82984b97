"""The bundle reader and verifier section of k8s_offline.py.  Hostile or
damaged bundles (issue 5): every kind of member with one byte flipped or cut
short is refused by `verify`, which names the bad member; `verify` prints the
bundle.json sha256 that `bundle` printed; a tar with hostile members (unsafe
paths, links, devices, duplicates, too many members) is refused on opening."""

import io
import json
import os
import re
import tarfile

import pytest

import k8s_offline as ko
from fixtures import osarchive


@pytest.fixture(scope="module")
def good_bundle(run_cli, bundle_args, tmp_path_factory):
    work = tmp_path_factory.mktemp("hostile")
    output = work / "good.tar"
    rc, out, err = run_cli("bundle", *bundle_args, "--output", output,
                           "--cache-dir", work / "cache")
    assert rc == 0, err
    printed = re.search(r"bundle\.json sha256: ([0-9a-f]{64})", out).group(1)
    with tarfile.open(str(output)) as tar:
        top = tar.getnames()[0].split("/")[0]
        meta = json.loads(tar.extractfile(top + "/bundle.json").read())
    return output, printed, top, meta


def member_of_kind(meta, kind):
    images = meta["images"]
    return {
        "binary": "bin/kubeadm",
        "archive": meta["archives"]["cni"],
        "layer": "images/blobs/sha256/" + images[0]["layers"][-1][7:],
        "config": "images/blobs/sha256/" + images[0]["config_digest"][7:],
        "manifest": "images/blobs/sha256/" + images[0]["manifest_digest"][7:],
        "index": "images/index.json",
        "docker-manifest": "images/manifest.json",
        "script": "k8s_offline.py",
        "flannel": "manifests/kube-flannel.yml",
        "unit": "systemd/kubelet.service",
        "bundle.json": "bundle.json",
    }[kind]


def rewrite(src, dst, top, target, change):
    """Copy the tar, applying change(bytes) -> bytes to one member."""
    with tarfile.open(str(src)) as tin, tarfile.open(str(dst), "w") as tout:
        for info in tin:
            data = tin.extractfile(info).read() if info.isfile() else None
            if info.name == top + "/" + target:
                data = change(data)
                info.size = len(data)
            tout.addfile(info, None if data is None else io.BytesIO(data))


def flip(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def truncate(data):
    return data[: len(data) - 1]


KINDS = ["binary", "archive", "layer", "config", "manifest", "index",
         "docker-manifest", "script", "flannel", "unit", "bundle.json"]


@pytest.mark.parametrize("change", [flip, truncate], ids=["flip", "truncate"])
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_member_is_refused_by_name(kind, change, good_bundle, run_cli, tmp_path):
    output, _, top, meta = good_bundle
    target = member_of_kind(meta, kind)
    bad = tmp_path / "bad.tar"
    rewrite(output, bad, top, target, change)
    rc, out, err = run_cli("verify", bad)
    assert rc != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert target in errors[0] or os.path.basename(target) in errors[0], errors[0]


def test_verify_prints_what_bundle_printed(good_bundle, run_cli):
    output, printed, _, _ = good_bundle
    rc, out, err = run_cli("verify", output)
    assert rc == 0, err
    assert "bundle.json sha256: %s" % printed in out


def test_extracted_folder_verifies_and_an_extra_file_is_refused(good_bundle, run_cli,
                                                                tmp_path):
    output, _, top, _ = good_bundle
    with tarfile.open(str(output)) as tar:
        tar.extractall(str(tmp_path))
    folder = tmp_path / top
    assert run_cli("verify", folder)[0] == 0
    (folder / "bin" / "evil").write_bytes(b"#!/bin/sh\n")
    rc, out, err = run_cli("verify", folder)
    assert rc != 0 and "bin/evil" in err


def test_missing_member_is_refused(good_bundle, run_cli, tmp_path):
    output, _, top, meta = good_bundle
    bad = tmp_path / "missing.tar"
    with tarfile.open(str(output)) as tin, tarfile.open(str(bad), "w") as tout:
        for info in tin:
            if info.name != top + "/bin/kubelet":
                tout.addfile(info, tin.extractfile(info) if info.isfile() else None)
    rc, out, err = run_cli("verify", bad)
    assert rc != 0 and "bin/kubelet" in err and "missing" in err


def test_cut_tarball_is_refused(good_bundle, run_cli, tmp_path):
    output, _, _, _ = good_bundle
    data = output.read_bytes()
    bad = tmp_path / "cut.tar"
    bad.write_bytes(data[: len(data) * 2 // 3])
    rc, out, err = run_cli("verify", bad)
    assert rc != 0 and "Traceback" not in err
    assert len([l for l in err.splitlines() if l.startswith("error:")]) == 1, err


def _hostile_tar(path, add):
    with tarfile.open(str(path), "w") as tar:
        info = tarfile.TarInfo("top/bundle.json")
        data = json.dumps({"format": 1}).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        add(tar)


def _member(name, kind=tarfile.REGTYPE, target=""):
    def add(tar):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info, io.BytesIO(b""))
    return add


@pytest.mark.parametrize("add,reason", [
    (_member("top/../../etc/passwd"), "unsafe path"),
    (_member("/etc/passwd"), "unsafe path"),
    (_member("top/link", tarfile.SYMTYPE, "/etc/shadow"), "link or device"),
    (_member("top/hard", tarfile.LNKTYPE, "top/bundle.json"), "link or device"),
    (_member("top/dev", tarfile.CHRTYPE), "link or device"),
    (_member("top/bundle.json"), "appears twice"),
    (_member("other/file"), "one top folder"),
])
def test_hostile_members_are_refused(tmp_path, add, reason):
    path = tmp_path / "hostile.tar"
    _hostile_tar(path, add)
    with pytest.raises(ko.BundleError, match=reason):
        ko.Bundle(str(path))


def test_a_huge_member_count_is_refused(tmp_path):
    path = tmp_path / "many.tar"
    with tarfile.open(str(path), "w") as tar:
        for n in range(ko.MAX_BUNDLE_MEMBERS + 1):
            info = tarfile.TarInfo("top/f%d" % n)
            tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ko.BundleError, match="more than"):
        ko.Bundle(str(path))


# -- os_packages (bundle --os) -----------------------------------------------

def _rewrite_meta(top, change):
    path = os.path.join(top, ko.BUNDLE_JSON)
    with open(path) as handle:
        meta = json.load(handle)
    change(meta)
    data = ko.canonical_json(meta)
    with open(path, "wb") as handle:
        handle.write(data)
    with open(os.path.join(top, ko.BUNDLE_JSON_SHA), "wb") as handle:
        handle.write(ko.bundle_json_sha_line(data))


def _first_package(meta):
    return meta["os_packages"]["debian-12"]["packages"][0]


@pytest.mark.parametrize("change, says", [
    (lambda m: _first_package(m).update(path="bin/kubeadm"),
     "lists bin/kubeadm under os_packages.debian-12"),
    (lambda m: _first_package(m).update(name="-rf"),
     "os_packages[\"debian-12\"].packages[0].name is \"-rf\", not a valid value"),
    (lambda m: _first_package(m).update(requires=[["libc6 (>= 2; rm -rf)"]]),
     "is \"libc6 (>= 2; rm -rf)\", not a valid value"),
    (lambda m: m["os_packages"].update({"debian-99": m["os_packages"][
        "debian-12"]}), "has the name \"debian-99\", which is not allowed"),
    (lambda m: m["os_packages"]["debian-12"].update(family="apk"),
     "family is \"apk\", not a valid value"),
    (lambda m: m["os_packages"]["debian-12"].update(id="centos"),
     "os_packages.debian-12 is for centos 12 (deb), not debian-12"),
])
def test_a_bundle_json_that_lies_about_packages_is_refused(
        run_cli, debian_bundle, tmp_path, change, says):
    top = osarchive.extract_bundle(debian_bundle, str(tmp_path / "bundle"))
    _rewrite_meta(top, change)
    rc, out, err = run_cli("verify", top)
    assert rc == 2
    assert says in err.splitlines()[-1], err
