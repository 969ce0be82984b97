"""`images` and a bundle for each minor 1.16-1.37, and for arm64, with no
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

# One release of every minor from 1.21 (the patch-level changes among them):
# (version, arch, binaries pinned, extra bundle flags).  v1.37.2 is newer
# than the table: its kubeadm (a stand-in answering `config images list`
# as the real one does) gives the tags.
MODERN = [("v1.21.14", "amd64", True, ()), ("v1.22.17", "amd64", False, ()),
          ("v1.23.15", "arm64", False, ()), ("v1.24.9", "amd64", False,
                                             ("--with-cri-dockerd",)),
          ("v1.25.0", "amd64", True, ()), ("v1.26.15", "amd64", False, ()),
          ("v1.27.16", "amd64", False, ()), ("v1.28.0", "amd64", True,
                                              ("--with-containerd",)),
          ("v1.29.15", "amd64", False, ()), ("v1.30.5", "amd64", False, ()),
          ("v1.31.1", "arm64", False, ()), ("v1.32.13", "amd64", False, ()),
          ("v1.33.0", "amd64", True, ()), ("v1.34.10", "amd64", False, ()),
          ("v1.35.7", "amd64", False, ("--with-containerd",)),
          ("v1.36.3", "amd64", False, ("--with-cri-dockerd",)),
          ("v1.37.2", "amd64", False, ("--with-containerd",))]
V1_37_2 = {"pause": "3.10.2", "etcd": "3.7.0-0", "coredns": "v1.14.6"}


@pytest.fixture(scope="module")
def served(file_server, test_images, tmp_path_factory):
    """The local publisher for every case, and a release table pinning
    exactly what CASES says."""
    os.environ.pop(ko.RELEASE_TABLE_ENV, None)
    table = json.loads(json.dumps(ko.release_table()))
    for minor in table["minors"].values():
        for key in ("cni_sha256", "crictl_sha256"):
            minor[key] = {}
        minor["cri_dockerd_sha256"] = {}
    for entry in table["releases"].values():
        entry["node_sha512"] = {}
        entry.pop("binaries_sha256", None)
    host = test_images.host
    tagged = set()
    for version, arch, pinned, flags in MODERN:
        minor_key = version[1:].rsplit(".", 1)[0]
        minor = table["minors"][minor_key]
        release = table["releases"].get(version)
        tags = release["images"] if release else V1_37_2
        lines = None
        if not release:
            lines = ["registry.k8s.io/%s:%s" % (name, version) for name in
                     ko.CONTROL_PLANE_COMPONENTS + ("kube-proxy",)]
            lines += ["registry.k8s.io/pause:" + tags["pause"],
                      "registry.k8s.io/etcd:" + tags["etcd"],
                      "registry.k8s.io/coredns/coredns:" + tags["coredns"]]
        files = dict((f["key"], f["url"]) for f in ko.plan_files(version, arch))
        got = releases.serve_release(file_server, version, arch, files["cni"],
                                     files["crictl"], kubeadm_lines=lines)
        if pinned:
            release["binaries_sha256"] = {arch: got["binaries_sha256"]}
        if "--with-containerd" in flags:
            runtime = dict((f["key"], f) for f in ko.plan_files(
                version, arch, with_containerd=True))
            releases.serve_archive(file_server, runtime["containerd"]["url"],
                                   ["bin/containerd", "bin/ctr"], "beside")
            releases.serve_archive(file_server, runtime["runc"]["url"], None,
                                   runtime["runc"]["publisher"])
        if "--with-cri-dockerd" in flags or "--with-docker" in flags:
            url = [f["url"] for f in ko.plan_files(
                version, arch, with_cri_dockerd=True) if f["key"] == "cri-dockerd"][0]
            minor["cri_dockerd_sha256"][arch] = releases.serve_archive(
                file_server, url, ["cri-dockerd/cri-dockerd"])
        wanted = [(name, "v1.16.0", version) for name in
                  ko.CONTROL_PLANE_COMPONENTS + ("kube-proxy",)]
        wanted += [("pause", "3.1", tags["pause"]), ("etcd", "3.3.15-0", tags["etcd"])]
        for repo, src, dst in wanted:
            if (repo, dst) not in tagged:
                releases.retag(host, repo, src, dst)
                tagged.add((repo, dst))
        for repo, dst in (("coredns/coredns", tags["coredns"]),
                          ("flannel-io/flannel", minor["flannel"]),
                          ("flannel-io/flannel-cni-plugin",
                           minor["flannel_cni_plugin"])):
            if (repo, dst) not in tagged:
                releases.copy_image(host, "coredns", "1.6.2", repo, dst)
                tagged.add((repo, dst))
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
            "--registry-mirror", "ghcr.io=%s" % host,
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


@pytest.mark.parametrize("version,arch,pinned,flags", MODERN)
def test_a_modern_release_bundles_from_the_local_servers(
        version, arch, pinned, flags, served, run_cli, test_images, file_server,
        tmp_path):
    """Every minor 1.21-1.37: kubeadm's images under the repository and path
    its kubeadm names by default (bundle.json image_repository), the flannel
    v0.28 line with both its images and a manifest naming them, the minor's
    runtimes and cri-dockerd, and what vouched for each binary."""
    table_path, table = served
    env = {ko.RELEASE_TABLE_ENV: table_path}
    release = table["releases"].get(version)
    rc, listed, err = run_cli("images", "--kubernetes-version", version, "--arch",
                              arch, "--image-repository", test_images.host, env=env)
    assert rc == (0 if release else 2), err
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *_flags(test_images, file_server),
                           "--kubernetes-version", version, "--arch", arch,
                           "--output", output, "--cache-dir", tmp_path / "c",
                           *flags, env=env)
    assert rc == 0, err
    name = "k8s-offline-%s-linux-%s" % (version, arch)
    with tarfile.open(str(output)) as tar:
        meta = json.loads(tar.extractfile(name + "/bundle.json").read())
        manifest = tar.extractfile(name + "/manifests/kube-flannel.yml").read(
            ).decode()
        units = dict((unit, tar.extractfile(name + "/" + path).read().decode())
                     for unit, path in meta["systemd"].items())
    tags = release["images"] if release else V1_37_2
    repository = release["image_repository"] if release else "registry.k8s.io"
    assert meta["image_repository"] == repository
    refs = dict((i["name"], i["ref"]) for i in meta["images"])
    assert refs["coredns"] == "%s/coredns/coredns:%s" % (repository, tags["coredns"])
    assert refs["etcd"] == "%s/etcd:%s" % (repository, tags["etcd"])
    assert refs["kube-proxy"] == "%s/kube-proxy:%s" % (repository, version)
    assert refs["flannel"] == "ghcr.io/flannel-io/flannel:v0.28.9"
    assert refs["flannel-cni-plugin"] == \
        "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"
    sources = sorted(i["source"] for i in meta["images"])
    if release:
        assert sources == sorted(listed.split())
    assert "%s/coredns/coredns:%s" % (test_images.host, tags["coredns"]) in sources
    assert "namespace: kube-flannel" in manifest
    assert "image: %s" % refs["flannel-cni-plugin"] in manifest
    assert "kind: PodSecurityPolicy" not in manifest
    assert "apiVersion: rbac.authorization.k8s.io/v1beta1" not in manifest
    minor = table["minors"][version[1:].rsplit(".", 1)[0]]
    checks = meta["checksum_sources"]
    for binary in ("kubeadm", "kubelet", "kubectl"):
        publisher = "publisher's file https://dl.k8s.io/release/%s/bin/linux/" \
            "%s/%s.sha256" % (version, arch, binary)
        expected = ["pinned table (bundle/releases.json)"] if pinned else []
        assert checks["bin/" + binary] == expected + [publisher]
    versions = meta["versions"]
    if "--with-containerd" in flags:
        assert (versions["containerd"], versions["runc"]) == (
            minor["containerd"], minor["runc"])
        assert checks[meta["archives"]["containerd"]][0].endswith(".tar.gz.sha256sum")
    else:
        assert versions["containerd"] is None
    if "--with-cri-dockerd" in flags or "--with-docker" in flags:
        assert versions["cri-dockerd"] == minor["cri_dockerd"]
        path = meta["archives"]["cri-dockerd"]
        assert checks[path] == ["pinned table (bundle/releases.json)"]
        assert "--pod-infra-container-image=%s\n" % refs["pause"] in \
            units["cri-docker.service"]
        assert "ListenStream=/run/cri-dockerd.sock" in units["cri-docker.socket"]
    else:
        assert versions["cri-dockerd"] is None and "cri-docker.service" not in units
    assert run_cli("verify", output)[0] == 0
