"""Unit tests of the pure parts of bundle mode and the verifier: image
references, auth challenges, schema1 digests, mirrors, checksum files, the
image plan per version, the tar writer and hostile tar members."""

import base64
import hashlib
import io
import json
import os
import tarfile

import pytest

import k8s_offline as ko


@pytest.mark.parametrize("text,expected", [
    ("quay.io/coreos/flannel:v0.11.0-amd64",
     ("quay.io", "coreos/flannel", "v0.11.0-amd64", None)),
    ("nginx", ("docker.io", "library/nginx", "latest", None)),
    ("user/app:1", ("docker.io", "user/app", "1", None)),
    ("127.0.0.1:5000/pause:3.1", ("127.0.0.1:5000", "pause", "3.1", None)),
    ("localhost/x/y:z", ("localhost", "x/y", "z", None)),
    ("registry.aliyuncs.com/google_containers/etcd:3.3.15-0",
     ("registry.aliyuncs.com", "google_containers/etcd", "3.3.15-0", None)),
    ("a/b@sha256:" + "0" * 64, ("docker.io", "a/b", None, "sha256:" + "0" * 64)),
])
def test_parse_image_ref(text, expected):
    ref = ko.parse_image_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "a/b@sha256:xyz", "a/b:",
                                  "a/b:-bad", "a//b"])
def test_parse_image_ref_rejects(text):
    with pytest.raises(ko.UserError):
        ko.parse_image_ref(text)


def test_parse_challenges_basic_and_bearer_in_one_header():
    header = ('Basic realm="quay", Bearer realm="https://quay.io/v2/auth",'
              'service="quay.io",scope="repository:coreos/flannel:pull"')
    found = dict(ko.parse_challenges(header))
    assert found["basic"]["realm"] == "quay"
    assert found["bearer"] == {"realm": "https://quay.io/v2/auth",
                               "service": "quay.io",
                               "scope": "repository:coreos/flannel:pull"}


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_schema1_digest_covers_the_jws_payload_only():
    payload = b'{\n   "schemaVersion": 1,\n   "name": "x"'
    tail = b"\n}"
    protected = _b64url(json.dumps({"formatLength": len(payload),
                                    "formatTail": _b64url(tail)}).encode())
    signed = payload + (',\n   "signatures": [{"protected": "%s"}]' % protected
                        ).encode() + tail
    digest = ko.manifest_digest(ko.MT_DOCKER_SCHEMA1_SIGNED, signed)
    assert digest == "sha256:" + hashlib.sha256(payload + tail).hexdigest()
    assert digest != "sha256:" + hashlib.sha256(signed).hexdigest()


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
    checked = ko.cross_check_images(images, files, "v1.16.0", ko.host_arch(),
                                    _Cache(str(tmp_path)))
    etcd = [i for i in checked if i["name"] == "etcd"][0]
    assert etcd["tag"] == "3.3.17-0"
    assert etcd["source"].endswith("/etcd:3.3.17-0") and etcd["ref"].endswith(":3.3.17-0")


def test_cross_check_refuses_images_the_table_lacks(tmp_path):
    images = ko.plan_images("v1.16.0", "amd64")
    files = _fake_kubeadm(tmp_path, ["k8s.gcr.io/kube-apiserver:v1.16.0",
                                     "k8s.gcr.io/new-addon:1.0"])
    with pytest.raises(ko.UserError, match="new-addon"):
        ko.cross_check_images(images, files, "v1.16.0", ko.host_arch(),
                              _Cache(str(tmp_path)))
