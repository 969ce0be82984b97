"""The shipped release table (bundle/releases.json): well-formed, complete
(every patch release of 1.16-1.20, every arch), per patch where kubeadm
changed an image within a minor (v1.19.0's etcd), and a broken or foreign
table refused in one line."""

import json
import os

import pytest

import k8s_offline as ko

# The last patch release of each supported minor (all long out of support).
LAST_PATCH = {"1.16": 15, "1.17": 17, "1.18": 20, "1.19": 16, "1.20": 15}
WITHDRAWN = {"v1.17.10", "v1.18.7", "v1.18.11"}   # incomplete or no artifacts


@pytest.fixture(scope="module")
def table():
    os.environ.pop(ko.RELEASE_TABLE_ENV, None)
    return ko.release_table()


def test_shipped_table_is_well_formed(table):
    assert ko.release_table_problem(table) is None
    assert set(table["minors"]) == set(ko.SUPPORTED_MINORS) == set(LAST_PATCH)


def test_every_patch_release_is_there_with_its_images(table):
    wanted = set("v%s.%d" % (minor, patch) for minor, last in LAST_PATCH.items()
                 for patch in range(last + 1))
    assert set(table["releases"]) == wanted
    for version, entry in table["releases"].items():
        assert set(entry["images"]) == {"pause", "etcd", "coredns"}, version


def test_every_release_and_arch_has_a_pinned_node_tarball_sha512(table):
    missing = [(version, arch) for version, entry in table["releases"].items()
               for arch in ko.ARCHES
               if version not in WITHDRAWN and arch not in entry.get("node_sha512", {})]
    assert missing == []
    assert all(table["releases"][v].get("do_not_use") for v in WITHDRAWN)
    values = [h for e in table["releases"].values()
              for h in e.get("node_sha512", {}).values()]
    assert len(values) == len(set(values)), "a sha512 appears twice"


@pytest.mark.parametrize("minor", sorted(LAST_PATCH))
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
    assert "any release from v1.16.0 to v1.20.15 but v1.17.10, v1.18.7, " \
        "v1.18.11 (withdrawn upstream)" in text
    assert "amd64, arm64, arm, ppc64le, s390x" in text


@pytest.mark.parametrize("change,words", [
    (lambda t: t.update(schema=2), "schema is not 1"),
    (lambda t: t["releases"]["v1.16.0"]["node_sha512"].update(amd64="xyz"),
     "release v1.16.0: node_sha512 of amd64 is not a sha512"),
    (lambda t: t["releases"].update({"v1.21.0": t["releases"]["v1.16.0"]}),
     "release 'v1.21.0' is not a supported version"),
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
