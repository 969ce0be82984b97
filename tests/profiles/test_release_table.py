"""The shipped release table (bundle/releases.json): well-formed, complete
(every patch release of 1.16-1.36 the sources list, every arch), per patch
where kubeadm changed an image or its repository within a minor (v1.19.0's
etcd, v1.30.5's CoreDNS, v1.24.9's registry.k8s.io), what the generator
(tests/gen_releases.py) writes, and a broken or foreign table refused in one
line."""

import json
import os

import pytest

import k8s_offline as ko

# The last patch release of each minor in the table (1.16-1.20 are final;
# 1.21+ as far as kubeadm-images-by-version.tsv goes; 1.37 has none yet).
LAST_PATCH = {"1.16": 15, "1.17": 17, "1.18": 20, "1.19": 16, "1.20": 15,
              "1.21": 14, "1.22": 17, "1.23": 17, "1.24": 17, "1.25": 16,
              "1.26": 15, "1.27": 16, "1.28": 15, "1.29": 15, "1.30": 14,
              "1.31": 14, "1.32": 13, "1.33": 13, "1.34": 10, "1.35": 7,
              "1.36": 3}
OLD_MINORS = ("1.16", "1.17", "1.18", "1.19", "1.20")   # node tarball pins
WITHDRAWN = {"v1.17.10", "v1.18.7", "v1.18.11"}   # incomplete or no artifacts


@pytest.fixture(scope="module")
def table():
    os.environ.pop(ko.RELEASE_TABLE_ENV, None)
    return ko.release_table()


def test_shipped_table_is_well_formed(table):
    assert ko.release_table_problem(table) is None
    assert set(table["minors"]) == set(ko.SUPPORTED_MINORS) == set(
        LAST_PATCH) | {"1.37"}
    assert ko.SUPPORTED_MINORS == tuple("1.%d" % m for m in range(16, 38))


def test_every_patch_release_is_there_with_its_images(table):
    wanted = set("v%s.%d" % (minor, patch) for minor, last in LAST_PATCH.items()
                 for patch in range(last + 1))
    assert set(table["releases"]) == wanted
    for version, entry in table["releases"].items():
        assert set(entry["images"]) == {"pause", "etcd", "coredns"}, version


def test_every_release_and_arch_has_a_pinned_node_tarball_sha512(table):
    missing = [(version, arch) for version, entry in table["releases"].items()
               for arch in ko.ARCHES
               if version not in WITHDRAWN and version[1:5] in OLD_MINORS
               and arch not in entry.get("node_sha512", {})]
    assert missing == []
    assert all(table["releases"][v].get("do_not_use") for v in WITHDRAWN)
    values = [h for e in table["releases"].values()
              for h in e.get("node_sha512", {}).values()]
    assert len(values) == len(set(values)), "a sha512 appears twice"


@pytest.mark.parametrize("minor", OLD_MINORS)
@pytest.mark.parametrize("arch", sorted(ko.ARCHES))
def test_cni_and_crictl_are_pinned_for_every_minor_and_arch(minor, arch):
    files = dict((f["key"], f) for f in ko.plan_files("v%s.0" % minor, arch))
    for key in ("cni", "crictl"):
        assert files[key]["pinned"], (minor, arch, key)
        assert files[key]["url"].rsplit("/", 1)[1].count(arch) == 1


def test_v1_16_0_values_are_the_release_notes(table):
    pinned = table["releases"]["v1.16.0"]["node_sha512"]
    assert pinned["amd64"].startswith("e987f141bc0a")
    assert pinned["arm64"].startswith("365bdf9759e2")
    assert table["minors"]["1.16"]["cni_sha256"]["amd64"].startswith("3ca15c0a18ee")
    assert table["minors"]["1.16"]["crictl_sha256"]["arm64"].startswith("62b60ab7")


@pytest.mark.parametrize("version,etcd", [("v1.19.0", "3.4.9-1"),
                                          ("v1.19.1", "3.4.13-0"),
                                          ("v1.19.16", "3.4.13-0"),
                                          ("v1.18.20", "3.4.3-0"),
                                          ("v1.16.15", "3.3.15-0")])
def test_etcd_follows_the_patch_release(version, etcd):
    tags = dict((i["name"], i["tag"]) for i in ko.plan_images(version, "amd64"))
    assert tags["etcd"] == etcd


def test_images_command_names_etcd_3_4_9_for_v1_19_0(run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", "v1.19.0")
    assert rc == 0, err
    assert "registry.k8s.io/etcd:3.4.9-1" in out.split()
    assert "registry.k8s.io/etcd:3.4.13-0" not in out.split()


def test_withdrawn_release_is_refused_with_the_upstream_reason(run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", "v1.18.11")
    assert rc == 2
    assert err.strip() == ('error: Kubernetes v1.18.11 is not supported: its '
                           'release notes say "No artifacts for v1.18.11 were '
                           'released.": choose another patch release')


def test_help_offers_what_the_table_holds(run_cli):
    rc, out, _ = run_cli("bundle", "--help")
    text = " ".join(out.split())
    assert "any release from v1.16.0 to v1.36.3 but v1.17.10, v1.18.7, " \
        "v1.18.11 (withdrawn upstream)" in text
    assert "minors %s" % ", ".join(ko.SUPPORTED_MINORS) in text
    assert "a patch of 1.34, 1.35, 1.36, 1.37 newer than that (v1.37.0 on) " \
        "when its kubeadm runs here" in text
    assert "amd64, arm64, arm, ppc64le, s390x" in text


@pytest.mark.parametrize("change,words", [
    (lambda t: t.update(schema=2), "schema is not 1"),
    (lambda t: t["releases"]["v1.16.0"]["node_sha512"].update(amd64="xyz"),
     "release v1.16.0: node_sha512 of amd64 is not a sha512"),
    (lambda t: t["releases"].update({"v1.38.0": t["releases"]["v1.16.0"]}),
     "release 'v1.38.0' is not a supported version"),
    (lambda t: t["releases"]["v1.30.0"]["binaries_sha256"]["amd64"].update(
        kubeadm="z" * 64), "release v1.30.0: bad binaries_sha256"),
    (lambda t: t["releases"]["v1.30.0"].update(coredns_path="../x"),
     "release v1.30.0: bad coredns_path or image_repository"),
    (lambda t: t["minors"]["1.35"].pop("containerd"),
     "minor 1.35 lacks a containerd version"),
    (lambda t: t["minors"]["1.17"]["cni_tarball"].update(amd64="../evil"),
     "minor 1.17: bad cni_tarball"),
    (lambda t: t["releases"]["v1.16.3"]["images"].pop("etcd"),
     "release v1.16.3 lacks an image tag")])
def test_a_malformed_table_is_refused_in_one_line(change, words, table, tmp_path,
                                                  run_cli):
    broken = json.loads(json.dumps(table))
    change(broken)
    path = tmp_path / "releases.json"
    path.write_text(json.dumps(broken))
    rc, out, err = run_cli("images", env={ko.RELEASE_TABLE_ENV: str(path)})
    assert rc == 2
    assert err.strip() == "error: the release table %s is malformed (%s): " \
        "restore it from git" % (path, words)


def test_the_table_is_what_the_generator_writes():
    """bundle/releases.json's 1.21+ entries come from tests/gen_releases.py
    (the tsv and the facts): a hand edit, or a stale table, shows here."""
    import subprocess
    import sys
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # tests/
    gen = os.path.join(here, "gen_releases.py")
    shared = os.environ.get("K8SO_SHARED", os.path.join(
        os.path.dirname(os.path.dirname(here)), "shared"))
    if not os.path.isfile(os.path.join(shared, "kubeadm-images-by-version.tsv")):
        shared = "/work/shared"
    if not os.path.isfile(os.path.join(shared, "kubeadm-images-by-version.tsv")):
        pytest.skip("the generator's inputs (shared/) are not on this machine")
    result = subprocess.run([sys.executable, gen, "--check"],
                            env=dict(os.environ, K8SO_SHARED=shared),
                            stdout=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stdout


# Per minor 1.21-1.37: a patch release with kubeadm's pause, etcd and CoreDNS
# (shared/kubeadm-images-by-version.tsv), the repository kubeadm names them
# under by default, and the patch-level changes within a minor.
MODERN = [
    ("v1.21.0", "3.4.1", "3.4.13-0", "v1.8.0", "k8s.gcr.io"),
    ("v1.21.14", "3.4.1", "3.4.13-0", "v1.8.0", "k8s.gcr.io"),
    ("v1.22.0", "3.5", "3.5.0-0", "v1.8.4", "k8s.gcr.io"),
    ("v1.22.16", "3.5", "3.5.0-0", "v1.8.4", "k8s.gcr.io"),
    ("v1.22.17", "3.5", "3.5.6-0", "v1.8.4", "registry.k8s.io"),
    ("v1.23.14", "3.6", "3.5.5-0", "v1.8.6", "k8s.gcr.io"),
    ("v1.23.15", "3.6", "3.5.6-0", "v1.8.6", "registry.k8s.io"),
    ("v1.24.0", "3.7", "3.5.3-0", "v1.8.6", "k8s.gcr.io"),
    ("v1.24.8", "3.7", "3.5.5-0", "v1.8.6", "k8s.gcr.io"),
    ("v1.24.9", "3.7", "3.5.6-0", "v1.8.6", "registry.k8s.io"),
    ("v1.25.0", "3.8", "3.5.4-0", "v1.9.3", "registry.k8s.io"),
    ("v1.25.15", "3.8", "3.5.9-0", "v1.9.3", "registry.k8s.io"),
    ("v1.26.13", "3.9", "3.5.10-0", "v1.9.3", "registry.k8s.io"),
    ("v1.27.12", "3.9", "3.5.12-0", "v1.10.1", "registry.k8s.io"),
    ("v1.28.14", "3.9", "3.5.15-0", "v1.10.1", "registry.k8s.io"),
    ("v1.29.11", "3.9", "3.5.16-0", "v1.11.1", "registry.k8s.io"),
    ("v1.30.4", "3.9", "3.5.12-0", "v1.11.1", "registry.k8s.io"),
    ("v1.30.5", "3.9", "3.5.15-0", "v1.11.3", "registry.k8s.io"),
    ("v1.31.0", "3.10", "3.5.15-0", "v1.11.1", "registry.k8s.io"),
    ("v1.31.1", "3.10", "3.5.15-0", "v1.11.3", "registry.k8s.io"),
    ("v1.31.14", "3.10", "3.5.24-0", "v1.11.3", "registry.k8s.io"),
    ("v1.32.10", "3.10", "3.5.24-0", "v1.11.3", "registry.k8s.io"),
    ("v1.33.0", "3.10", "3.5.21-0", "v1.12.0", "registry.k8s.io"),
    ("v1.34.1", "3.10.1", "3.6.4-0", "v1.12.1", "registry.k8s.io"),
    ("v1.34.2", "3.10.1", "3.6.5-0", "v1.12.1", "registry.k8s.io"),
    ("v1.35.7", "3.10.1", "3.6.6-0", "v1.13.1", "registry.k8s.io"),
    ("v1.36.3", "3.10.2", "3.6.8-0", "v1.14.2", "registry.k8s.io"),
]


@pytest.mark.parametrize("version,pause,etcd,coredns,repository", MODERN)
def test_images_of_a_modern_release(version, pause, etcd, coredns, repository,
                                    run_cli):
    """`images` pulls every image from registry.k8s.io (k8s.gcr.io is
    frozen); bundle.json names them as that kubeadm does by default."""
    rc, out, err = run_cli("images", "--kubernetes-version", version)
    assert rc == 0, err
    wanted = ["registry.k8s.io/%s:%s" % (name, version) for name in
              ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
               "kube-proxy")]
    wanted += ["registry.k8s.io/pause:" + pause, "registry.k8s.io/etcd:" + etcd,
               "registry.k8s.io/coredns/coredns:" + coredns,
               "ghcr.io/flannel-io/flannel:v0.28.9",
               "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"]
    assert out.split() == wanted
    refs = dict((i["name"], i["ref"]) for i in ko.plan_images(version, "arm64"))
    assert refs["coredns"] == "%s/coredns/coredns:%s" % (repository, coredns)
    assert refs["pause"] == "%s/pause:%s" % (repository, pause)
    assert ko.version_facts(version)["image_repository"] == repository


def test_every_minor_from_1_21_has_its_images(table):
    for minor in ko.SUPPORTED_MINORS[5:-1]:
        tags = dict((i["name"], i["tag"]) for i in ko.plan_images(
            "v%s.0" % minor, "amd64"))
        assert tags["kube-apiserver"] == "v%s.0" % minor
        assert tags["coredns"].startswith("v1.")
    assert "v1.37.0" not in table["releases"]


@pytest.mark.parametrize("version", ["v1.37.2", "v1.36.4", "v1.34.11"])
def test_a_release_newer_than_the_table_is_left_to_its_kubeadm(version, run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", version)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert ("newer than the release table" in lines[0] and
            "its own kubeadm lists, which only bundle runs: run bundle for "
            "it on a linux/amd64 host" in lines[0])


def test_a_release_never_made_is_still_refused(run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", "v1.33.14")
    assert rc == 2
    assert "not a release in the release table (v1.16.0 to v1.36.3)" in err


@pytest.mark.parametrize("minor,containerd,runc", [
    ("1.16", "1.6.20", "1.1.5"), ("1.28", "1.6.20", "1.1.5"),
    ("1.29", "1.7.28", "1.4.3"), ("1.34", "1.7.28", "1.4.3"),
    ("1.35", "2.3.4", "1.4.3"), ("1.37", "2.3.4", "1.4.3")])
def test_containerd_and_runc_follow_the_minor(minor, containerd, runc):
    files = dict((f["key"], f) for f in ko.plan_files(
        "v%s.0" % minor, "amd64", with_containerd=True))
    assert files["containerd"]["url"].endswith(
        "/v%s/containerd-%s-linux-amd64.tar.gz" % (containerd, containerd))
    assert files["containerd"]["publisher"].endswith(".tar.gz.sha256sum")
    assert files["runc"]["url"].endswith("/v%s/runc.amd64" % runc)


def test_modern_binaries_are_pinned_where_the_facts_give_a_sha256():
    files = dict((f["key"], f) for f in ko.plan_files("v1.36.0", "amd64"))
    assert files["kubeadm"]["pinned"].startswith("f962dcee1f49")
    assert files["kubelet"]["pinned"].startswith("d857082946c2")
    assert files["kubectl"]["pinned"].startswith("123d8c8844f4")
    assert files["kubeadm"]["url"] == \
        "https://dl.k8s.io/release/v1.36.0/bin/linux/amd64/kubeadm"
    assert files["kubeadm"]["always_publisher"]
    assert files["crictl"]["pinned"].startswith("83855e114566")
    assert files["cni"]["pinned"].startswith("b98f74a0f852")
    other = dict((f["key"], f) for f in ko.plan_files("v1.36.1", "arm64"))
    assert other["kubeadm"]["pinned"] is None          # publisher's .sha256


def test_cri_dockerd_comes_with_docker_where_there_is_no_dockershim(run_cli):
    keys = [f["key"] for f in ko.plan_files("v1.24.0", "amd64", with_docker=True)]
    assert "cri-dockerd" in keys and "docker" in keys
    alone = dict((f["key"], f) for f in ko.plan_files(
        "v1.37.0", "arm64", with_cri_dockerd=True))
    assert alone["cri-dockerd"]["url"] == (
        "https://github.com/Mirantis/cri-dockerd/releases/download/v0.3.24/"
        "cri-dockerd-0.3.24.arm64.tgz")
    assert alone["cri-dockerd"]["pinned"].startswith("c783a0373588")
    assert alone["cri-dockerd"]["publisher"] is None
    assert "cri-dockerd" not in [f["key"] for f in ko.plan_files(
        "v1.23.17", "amd64", with_docker=True)]
    with pytest.raises(ko.UserError, match="--with-cri-dockerd is for "
                       "Kubernetes 1.24 and later"):
        ko.plan_files("v1.23.17", "amd64", with_cri_dockerd=True)
