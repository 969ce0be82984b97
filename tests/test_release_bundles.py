"""`images` and a bundle for each minor 1.16-1.20, and for arm64, with no
--checksum-file: the release table (a copy of the shipped one whose pins
match the local servers' bytes, through K8SO_RELEASE_TABLE) vouches for what
it pins, the publisher's own .sha256 files for the rest, and bundle.json and
the summary say which vouched for each file."""

import json
import os
import tarfile

import pytest

import install_support as sup
from install_support import ko
from fixtures import releases

# (version, arch, node tarball sha512 pinned, CNI and crictl sha256 pinned)
CASES = [("v1.16.0", "amd64", True, True),
         ("v1.17.4", "amd64", False, False),
         ("v1.18.2", "amd64", True, False),
         ("v1.19.0", "amd64", False, True),
         ("v1.20.15", "amd64", True, True),
         ("v1.16.0", "arm64", True, False),
         ("v1.20.15", "arm64", False, True)]
SOURCE_IMAGES = {"pause": "3.1", "etcd": "3.3.15-0", "coredns": "1.6.2"}


@pytest.fixture(scope="module")
def served(file_server, test_images, tmp_path_factory):
    """The local publisher for every case, and a release table pinning
    exactly what CASES says."""
    os.environ.pop(ko.RELEASE_TABLE_ENV, None)
    table = json.loads(json.dumps(ko.release_table()))
    for minor in table["minors"].values():
        for key in ("cni_sha256", "crictl_sha256"):
            minor[key] = {}
    for entry in table["releases"].values():
        entry["node_sha512"] = {}
    host = test_images.host
    tagged = set()
    for version, arch, node_pinned, archives_pinned in CASES:
        files = dict((f["key"], f["url"]) for f in ko.plan_files(version, arch))
        got = releases.serve_release(file_server, version, arch, files["cni"],
                                     files["crictl"])
        release = table["releases"][version]
        minor = table["minors"][version[1:].rsplit(".", 1)[0]]
        if node_pinned:
            release["node_sha512"][arch] = got["node_sha512"]
        if archives_pinned:
            minor["cni_sha256"][arch] = got["cni_sha256"]
            minor["crictl_sha256"][arch] = got["crictl_sha256"]
        wanted = [(name, "v1.16.0", version) for name in
                  ko.CONTROL_PLANE_COMPONENTS + ("kube-proxy",)]
        wanted += [(name, SOURCE_IMAGES[name], release["images"][name])
                   for name in SOURCE_IMAGES]
        wanted.append(("coreos/flannel", "v0.11.0-" + arch,
                       "%s-%s" % (minor["flannel"], arch)))
        for repo, src, dst in wanted:
            if src != dst and (repo, dst) not in tagged:
                releases.retag(host, repo, src, dst)
                tagged.add((repo, dst))
    path = str(tmp_path_factory.mktemp("table") / "releases.json")
    with open(path, "w") as handle:
        json.dump(table, handle)
    return path, table


def _flags(test_images, file_server):
    host = test_images.host
    return ["--image-repository", host, "--registry-mirror", "quay.io=%s" % host,
            "--insecure-registry", host, "--no-progress"] + file_server.mirror_args()


@pytest.mark.parametrize("version,arch,node_pinned,archives_pinned", CASES)
def test_images_and_bundle_without_a_checksum_file(
        version, arch, node_pinned, archives_pinned, served, run_cli,
        test_images, file_server, tmp_path):
    table_path, table = served
    env = {ko.RELEASE_TABLE_ENV: table_path}
    rc, listed, err = run_cli("images", "--kubernetes-version", version, "--arch",
                              arch, "--image-repository", test_images.host, env=env)
    assert rc == 0, err
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *_flags(test_images, file_server),
                           "--kubernetes-version", version, "--arch", arch,
                           "--output", output, "--cache-dir", tmp_path / "c", env=env)
    assert rc == 0, err
    name = "k8s-offline-%s-linux-%s" % (version, arch)
    with tarfile.open(str(output)) as tar:
        meta = json.loads(tar.extractfile(name + "/bundle.json").read())
    assert meta["name"] == name and meta["arch"] == arch
    assert sorted(i["source"] for i in meta["images"]) == sorted(listed.split())
    tags = dict((i["name"], i["tag"]) for i in meta["images"] if i["kubeadm"])
    images = table["releases"][version]["images"]
    assert (tags["pause"], tags["etcd"], tags["coredns"]) == (
        images["pause"], images["etcd"], images["coredns"])
    sources = meta["checksum_sources"]
    tarball = "kubernetes-node-linux-%s.tar.gz" % arch
    for binary in ("kubeadm", "kubelet", "kubectl"):
        publisher = "publisher's file https://dl.k8s.io/release/%s/bin/linux/%s/" \
            "%s.sha256" % (version, arch, binary)
        expected = [publisher]
        if node_pinned:
            expected.insert(0, "release notes (sha512 of %s, pinned table)" % tarball)
        assert sources["bin/" + binary] == expected
    for key in ("cni", "crictl"):
        path = meta["archives"][key]
        if archives_pinned:
            assert sources[path] == ["pinned table (bundle/releases.json)"]
        else:
            assert len(sources[path]) == 1
            assert sources[path][0].startswith("publisher's file https://github.com/")
            assert sources[path][0].endswith(path.rsplit("/", 1)[1] + ".sha256")
        assert "  %s: %s" % (path, "; ".join(sources[path])) in out
    assert run_cli("verify", output)[0] == 0


def test_a_download_unlike_the_publishers_file_is_refused(served, run_cli, test_images,
                                                    file_server, tmp_path):
    table_path, table = served
    url = [f["url"] for f in ko.plan_files("v1.16.0", "amd64") if f["key"] == "cni"][0]
    path = os.path.join(file_server.root, url.split("://", 1)[1] + ".sha256")
    with open(path) as handle:
        good = handle.read()
    with open(path, "w") as handle:
        handle.write("%s  %s\n" % ("0" * 64, url.rsplit("/", 1)[1]))
    broken = json.loads(json.dumps(table))
    broken["minors"]["1.16"]["cni_sha256"].pop("amd64")
    broken_path = tmp_path / "t.json"
    broken_path.write_text(json.dumps(broken))
    try:
        rc, out, err = run_cli("bundle", *_flags(test_images, file_server),
                               "--output", tmp_path / "b.tar", "--cache-dir",
                               tmp_path / "c", env={ko.RELEASE_TABLE_ENV:
                                                    str(broken_path)})
    finally:
        with open(path, "w") as handle:
            handle.write(good)
    assert rc != 0
    assert "failed its sha256 check" in err
    assert not (tmp_path / "b.tar").exists()
