"""The bundle writer section of k8s_offline.py, its pure parts: file mirrors,
checksum files, the image plan per version, the tar writer and the cross-check
against kubeadm's own image list.  Image references, auth challenges and
schema1 digests are tests/bundle/test_registry_client.py; hostile tar members
tests/kernel/test_bundle_reader.py."""

import hashlib
import io
import os
import tarfile

import pytest

import k8s_offline as ko


def test_file_mirror_uses_longest_prefix():
    mirrors = [("https://dl.k8s.io", "http://a"),
               ("https://dl.k8s.io/release", "http://b")]
    assert ko.apply_file_mirror("https://dl.k8s.io/release/v1/x", mirrors) == \
        "http://b/v1/x"
    assert ko.apply_file_mirror("https://dl.k8s.io/other", mirrors) == "http://a/other"
    assert ko.apply_file_mirror("https://github.com/x", mirrors) == "https://github.com/x"


def test_checksum_file(tmp_path):
    good = tmp_path / "sums"
    good.write_text("# comment\n%s  kubeadm\n%s *dir/crictl.tgz\n" % ("A" * 64, "b" * 64))
    good.write_text("# comment\n%s  kubeadm\n%s *dir/crictl.tgz\n%s  node.tar.gz\n"
                    % ("A" * 64, "b" * 64, "c" * 128))
    assert ko.read_checksum_file(str(good)) == (
        {"kubeadm": "a" * 64, "crictl.tgz": "b" * 64}, {"node.tar.gz": "c" * 128})
    bad = tmp_path / "bad"
    bad.write_text("xyz kubeadm\n")
    with pytest.raises(ko.UserError, match="line 1"):
        ko.read_checksum_file(str(bad))


def test_plan_v1_16_matches_kubeadm_list():
    refs = [i["ref"] for i in ko.plan_images("v1.16.0", "amd64")]
    assert refs == [
        "k8s.gcr.io/kube-apiserver:v1.16.0", "k8s.gcr.io/kube-controller-manager:v1.16.0",
        "k8s.gcr.io/kube-scheduler:v1.16.0", "k8s.gcr.io/kube-proxy:v1.16.0",
        "k8s.gcr.io/pause:3.1", "k8s.gcr.io/etcd:3.3.15-0", "k8s.gcr.io/coredns:1.6.2",
        "quay.io/coreos/flannel:v0.11.0-amd64"]
    sources = [i["source"] for i in ko.plan_images("v1.16.0", "arm64", "mirror.cn/gc")]
    assert sources[0] == "mirror.cn/gc/kube-apiserver:v1.16.0"
    assert sources[-1] == "quay.io/coreos/flannel:v0.11.0-arm64"


def test_plan_v1_20_and_files():
    tags = dict((i["name"], i["tag"]) for i in ko.plan_images("v1.20.2", "amd64"))
    assert (tags["pause"], tags["etcd"], tags["coredns"]) == ("3.2", "3.4.13-0", "1.7.0")
    urls = [f["url"] for f in ko.plan_files("v1.16.0", "amd64")]
    assert "https://dl.k8s.io/release/v1.16.0/bin/linux/amd64/kubeadm" in urls
    assert any(u.endswith("/v0.7.5/cni-plugins-amd64-v0.7.5.tgz") for u in urls)
    urls = [f["url"] for f in ko.plan_files("v1.20.2", "amd64")]
    assert any(u.endswith("/cni-plugins-linux-amd64-v0.8.7.tgz") for u in urls)


@pytest.mark.parametrize("version", ["v1.15.3", "v2.0.0", "1.16", "latest"])
def test_unsupported_versions(version):
    with pytest.raises(ko.UserError):
        ko.plan_images(version, "amd64")


def test_tar_writer_is_deterministic_and_readable(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(3000))
    hexd = hashlib.sha256(blob.read_bytes()).hexdigest()
    outputs = []
    for n in range(2):
        out = io.BytesIO()
        writer = ko.TarWriter(out)
        writer.add_dir("top")
        writer.add_bytes("top/a.txt", b"hello")
        writer.add_file("top/blob", str(blob), hexd, 0o755)
        writer.close()
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1]
    with tarfile.open(fileobj=io.BytesIO(outputs[0])) as tar:
        assert tar.extractfile("top/a.txt").read() == b"hello"
        assert tar.getmember("top/blob").mode == 0o755
        assert tar.extractfile("top/blob").read() == blob.read_bytes()


def test_tar_writer_refuses_a_damaged_cache_file(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"not what the name says")
    with pytest.raises(ko.UserError, match="damaged"):
        ko.TarWriter(io.BytesIO()).add_file("x", str(blob), "0" * 64)
    assert not blob.exists()


class _Cache(object):
    def __init__(self, folder):
        self.folder = folder

    def path(self, hexd):
        return os.path.join(self.folder, hexd)


def _fake_kubeadm(tmp_path, lines):
    script = tmp_path / ("f" * 64)
    script.write_text("#!/bin/sh\n[ \"$1 $2 $3\" = 'config images list' ] || exit 3\n"
                      + "".join("echo %s\n" % line for line in lines))
    return [{"key": "kubeadm", "sha256": "f" * 64}]


def test_cross_check_takes_kubeadms_tags(tmp_path):
    images = ko.plan_images("v1.16.0", "amd64")
    wanted = [i["ref"] for i in images if i["kubeadm"]]
    wanted = [r.replace("etcd:3.3.15-0", "etcd:3.3.17-0") for r in wanted]
    files = _fake_kubeadm(tmp_path, wanted)
    checked, repository = ko.cross_check_images(
        images, files, "v1.16.0", ko.host_arch(), _Cache(str(tmp_path)))
    assert repository == "k8s.gcr.io"
    etcd = [i for i in checked if i["name"] == "etcd"][0]
    assert etcd["tag"] == "3.3.17-0"
    assert etcd["source"].endswith("/etcd:3.3.17-0") and etcd["ref"].endswith(":3.3.17-0")


V1_37_2 = ["registry.k8s.io/kube-apiserver:v1.37.2",
           "registry.k8s.io/kube-controller-manager:v1.37.2",
           "registry.k8s.io/kube-scheduler:v1.37.2",
           "registry.k8s.io/kube-proxy:v1.37.2",
           "registry.k8s.io/coredns/coredns:v1.14.6",
           "registry.k8s.io/pause:3.10.2", "registry.k8s.io/etcd:3.7.0-0"]


def test_a_release_newer_than_the_table_takes_kubeadms_list(tmp_path):
    """v1.37.2 is in no table: its tags, paths and repository are what its
    kubeadm prints (a script printing those lines stands in for it here)."""
    images = ko.plan_images("v1.37.2", ko.host_arch(), "mirror.test:5000",
                            kubeadm_lists=True)
    files = _fake_kubeadm(tmp_path, V1_37_2)
    checked, repository = ko.cross_check_images(
        images, files, "v1.37.2", ko.host_arch(), _Cache(str(tmp_path)))
    assert repository == "registry.k8s.io"
    kubeadm = sorted(i["ref"] for i in checked if i["kubeadm"])
    assert kubeadm == sorted(V1_37_2)
    by_name = dict((i["name"], i) for i in checked)
    assert by_name["coredns"]["repository"] == "coredns/coredns"
    assert by_name["coredns"]["source"] == "mirror.test:5000/coredns/coredns:v1.14.6"
    assert by_name["etcd"]["tag"] == "3.7.0-0"
    assert by_name["flannel-cni-plugin"]["ref"] == \
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"


def test_a_release_newer_than_the_table_needs_its_kubeadm_to_run(tmp_path):
    images = ko.plan_images("v1.37.2", ko.host_arch(), kubeadm_lists=True)
    script = tmp_path / ("f" * 64)
    script.write_text("#!/bin/sh\nexit 1\n")
    with pytest.raises(ko.UserError) as exc:
        ko.cross_check_images(images, [{"key": "kubeadm", "sha256": "f" * 64}],
                              "v1.37.2", ko.host_arch(), _Cache(str(tmp_path)))
    assert "v1.37.2 is newer than the release table" in str(exc.value)
    assert "cannot list its images on this host" in str(exc.value)
    other = "arm64" if ko.host_arch() != "arm64" else "amd64"
    with pytest.raises(ko.UserError, match="bundle it on a linux/%s host" % other):
        ko.cross_check_images(images, [], "v1.37.2", other, _Cache(str(tmp_path)))


def test_kubeadm_moving_the_repository_wins(tmp_path):
    """The table says v1.24.9 names registry.k8s.io (a patch number the
    facts mark unconfirmed): the kubeadm that runs has the last word."""
    images = ko.plan_images("v1.24.9", "amd64")
    lines = [i["ref"].replace("registry.k8s.io/", "k8s.gcr.io/")
             for i in images if i["kubeadm"]]
    files = _fake_kubeadm(tmp_path, lines)
    checked, repository = ko.cross_check_images(
        images, files, "v1.24.9", ko.host_arch(), _Cache(str(tmp_path)))
    assert repository == "k8s.gcr.io"
    assert sorted(i["ref"] for i in checked if i["kubeadm"]) == sorted(lines)
    assert all(i["source"].startswith("registry.k8s.io/")
               for i in checked if i["kubeadm"])


def test_cross_check_refuses_images_the_table_lacks(tmp_path):
    images = ko.plan_images("v1.16.0", "amd64")
    files = _fake_kubeadm(tmp_path, ["k8s.gcr.io/kube-apiserver:v1.16.0",
                                     "k8s.gcr.io/new-addon:1.0"])
    with pytest.raises(ko.UserError, match="new-addon"):
        ko.cross_check_images(images, files, "v1.16.0", ko.host_arch(),
                              _Cache(str(tmp_path)))
