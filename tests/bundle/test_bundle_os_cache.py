"""bundle --os on a warm cache (issue 21): the signed index is fetched and
checked every run, but the packages it resolves to are kept in the cache by
the sha256 of the metadata files it names.  A warm run reads no Packages or
primary file; a new index is resolved again; a damaged record is ignored.
The archives are conftest's apt_archives and rpm_repos (real, signed, on
127.0.0.1)."""

import glob
import json
import os

import k8s_offline as ko
from fixtures import osarchive


def _bundle(run_cli, bundle_args, tmp_path, name, *extra):
    output = tmp_path / name
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--output", output, "--cache-dir", tmp_path / "cache", "--no-progress"]
        + [str(e) for e in extra]))
    return rc, out, err, output


def _debian(apt_archives, prefix):
    return ["--os", "debian-12", "--os-keyring", apt_archives.key.keyring] + \
        osarchive.mirror_args(apt_archives, prefix)


def _metadata_requests(server, since, suffix):
    return [r for r in server.requests[since:] if suffix in r[1]]


def _drop_metadata_blobs(tmp_path, names):
    """Delete the cached copies of the metadata files (by their content), so
    a run that needs them must fetch them again."""
    dropped = 0
    for path in glob.glob(str(tmp_path / "cache" / "sha256" / "*")):
        with open(path, "rb") as handle:
            head = handle.read(6)
        if head in names:
            os.unlink(path)
            dropped += 1
    return dropped


XZ, GZIP = b"\xfd7zXZ\x00", b"\x1f\x8b\x08\x00\x00\x00"


def test_a_warm_os_bundle_reads_no_packages_index(
        run_cli, bundle_args, apt_archives, tmp_path):
    rc, out, err, first = _bundle(run_cli, bundle_args, tmp_path, "a.tar",
                                  *_debian(apt_archives, "good"))
    assert rc == 0, err
    assert "resolved from the signed index" in out + err
    assert len(glob.glob(str(tmp_path / "cache" / "resolved" / "*.json"))) == 1
    # Without the cached Packages file a run that parses must fetch it.
    assert _drop_metadata_blobs(tmp_path, (XZ[:6], GZIP[:6])) >= 1
    since = len(apt_archives.requests)
    rc, out, err, second = _bundle(run_cli, bundle_args, tmp_path, "b.tar",
                                   *_debian(apt_archives, "good"))
    assert rc == 0, err
    assert "as resolved before from the same signed index" in out + err
    assert _metadata_requests(apt_archives, since, "/Packages") == []
    # the signed index itself is fetched and checked again
    assert _metadata_requests(apt_archives, since, "/InRelease") != []
    assert "signature checked with %s" % apt_archives.key.keyring in out + err
    meta_a, _ = osarchive.bundle_meta(first)
    meta_b, members = osarchive.bundle_meta(second)
    assert meta_a["os_packages"] == meta_b["os_packages"]
    for package in meta_b["os_packages"]["debian-12"]["packages"]:
        assert osarchive.sha256(members[package["path"]]) == \
            apt_archives.built[package["name"]][1]


def test_a_new_index_is_resolved_again(run_cli, bundle_args, apt_archives,
                                       tmp_path):
    rc, out, err, _ = _bundle(run_cli, bundle_args, tmp_path, "a.tar",
                              *_debian(apt_archives, "good"))
    assert rc == 0, err
    # missing-dep's Packages differs (conntrack needs libgone1): the cached
    # resolution of good must not answer for it.
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path, "b.tar",
                                   *_debian(apt_archives, "missing-dep"))
    assert rc == 2, out
    assert err.strip().splitlines()[-1].endswith(
        "libgone1, which the debian-12 archive lacks: check the archive or "
        "--file-mirror"), err
    assert not output.exists()


def test_a_damaged_resolution_record_is_made_again(
        run_cli, bundle_args, apt_archives, tmp_path):
    rc, out, err, _ = _bundle(run_cli, bundle_args, tmp_path, "a.tar",
                              *_debian(apt_archives, "good"))
    assert rc == 0, err
    (record,) = glob.glob(str(tmp_path / "cache" / "resolved" / "*.json"))
    with open(record) as handle:
        packages = json.load(handle)
    packages[0]["file"] = "../../etc/passwd"
    with open(record, "w") as handle:
        json.dump(packages, handle)
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path, "b.tar",
                                   *_debian(apt_archives, "good"))
    assert rc == 0, err
    assert "resolved from the signed index" in out + err
    meta, _ = osarchive.bundle_meta(output)
    assert all(p["path"].startswith("packages/debian-12/") and ".." not in
               p["path"] for p in meta["os_packages"]["debian-12"]["packages"])


def test_a_warm_rpm_bundle_reads_no_primary_file(
        run_cli, bundle_args, rpm_repos, tmp_path):
    flags = ["--os", "centos-7", "--os-keyring", rpm_repos.key.keyring,
             "--file-mirror", "%s=%s/centos/" % (osarchive.CENTOS,
                                                 rpm_repos.base_url)]
    rc, out, err, _ = _bundle(run_cli, bundle_args, tmp_path, "a.tar", *flags)
    assert rc == 0, err
    assert _drop_metadata_blobs(tmp_path, (GZIP[:6],)) >= 1
    since = len(rpm_repos.requests)
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path, "b.tar",
                                   *flags)
    assert rc == 0, err
    assert "as resolved before" in out + err
    assert _metadata_requests(rpm_repos, since, "primary") == []
    assert _metadata_requests(rpm_repos, since, "repomd.xml") != []


def test_the_resolution_key_follows_every_metadata_sha256():
    sources = [("main", [("http://a/Packages.xz", "1" * 64),
                         ("http://a/Packages.gz", "2" * 64)])]
    key = ko.resolution_key("debian-12", "amd64", ["socat"], sources)
    assert ko.SHA256_HEX_RE.fullmatch(key)
    changed = [("main", [("http://a/Packages.xz", "3" * 64),
                         ("http://a/Packages.gz", "2" * 64)])]
    assert ko.resolution_key("debian-12", "amd64", ["socat"], changed) != key
    assert ko.resolution_key("debian-12", "arm64", ["socat"], sources) != key
    assert ko.resolution_key("debian-12", "amd64", ["socat", "x"],
                             sources) != key
    assert ko.resolution_key("debian-11", "amd64", ["socat"], sources) != key
