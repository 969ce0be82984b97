"""bundle --os and --with-containerd (the bundle writer): the distribution's
packages from real archives served on 127.0.0.1 (debs built with dpkg-deb,
indexed by dpkg-scanpackages, Release by apt-ftparchive, signed by a
throwaway gpg key; rpms built with rpmbuild in createrepo_c repositories),
resolved against the minimal install, each checked against the signed
metadata; containerd and runc checked against their published sha256sum
files.  The archives are conftest's apt_archives and rpm_repos."""

import os

import pytest

import k8s_offline as ko
from fixtures import fileserver, osarchive


def _debian_12(run_cli, bundle_args, tmp_path, apt_archives, prefix):
    """bundle --os debian-12 from the archive under prefix, checked with
    the good key."""
    return _bundle(run_cli, bundle_args, tmp_path, "--os", "debian-12",
                   "--os-keyring", apt_archives.key.keyring,
                   *osarchive.mirror_args(apt_archives, prefix))


def _bundle(run_cli, bundle_args, tmp_path, *extra):
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--output", output, "--cache-dir", tmp_path / "cache"] +
        [str(e) for e in extra]))
    return rc, out, err, output


def _one_error_line(rc, err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert lines[-1].startswith("error: "), err
    return lines[-1]


def test_os_debian_12_bundles_what_the_minimal_install_lacks(
        run_cli, bundle_args, apt_archives, tmp_path):
    rc, out, err, output = _debian_12(run_cli, bundle_args, tmp_path,
                                      apt_archives, "good")
    assert rc == 0, err
    meta, members = osarchive.bundle_meta(output)
    entry = meta["os_packages"]["debian-12"]
    names = [p["name"] for p in entry["packages"]]
    assert sorted(names) == osarchive.DEB_EXPECTED
    # dependencies first: every package comes after what it needs
    for position, package in enumerate(entry["packages"]):
        for need in package["needs"]:
            assert names.index(need) < position, (package["name"], need)
    assert dict((p["name"], p["needs"]) for p in entry["packages"])[
        "conntrack"] == ["libmnl0", "libnetfilter-conntrack3"]
    # the virtual ebtables-backend is met by the package providing it
    assert "libebt-nft" in dict((p["name"], p["needs"])
                                for p in entry["packages"])["ebtables"]
    for package in entry["packages"]:
        path, sha = apt_archives.built[package["name"]]
        assert package["path"] == "packages/debian-12/" + os.path.basename(path)
        assert meta["files"][package["path"]]["sha256"] == sha
        assert osarchive.sha256(members[package["path"]]) == sha
    assert entry["signatures"] == ["https://deb.debian.org/debian: signature "
                                   "checked with %s" % apt_archives.key.keyring]
    assert "--os debian-12: %d packages; https://deb.debian.org/debian: " \
           "signature checked with" % len(names) in out
    assert run_cli("verify", output)[0] == 0


@pytest.mark.parametrize("prefix", ["nosig-file", "valid"])
def test_os_release_gpg_or_a_valid_until_to_come_is_accepted(
        run_cli, bundle_args, apt_archives, tmp_path, prefix):
    rc, out, err, output = _debian_12(run_cli, bundle_args, tmp_path,
                                      apt_archives, prefix)
    assert rc == 0, err
    assert "signature checked with" in out


@pytest.mark.parametrize("prefix, says", [
    ("badsig", "InRelease does not verify with {keyring}: refusing the "
     "archive (give its key with --os-keyring)"),
    ("unsigned", "has no InRelease and no Release.gpg, so the keyring "
     "{keyring} cannot check it: use a signed archive"),
    ("missing-dep", "error: conntrack needs libgone1, which the debian-12 "
     "archive lacks: check the archive or --file-mirror"),
    ("tampered", "socat_1.0-1_amd64.deb failed its sha256 check 5 times: the "
     "source or a proxy is corrupting it"),
    ("expired", "Release expired on Thu, 01 Jan 2015 00:00:00 UTC "
     "(Valid-Until): the mirror serves a stale index; use a current mirror"),
])
def test_os_bad_archives_are_one_line_and_no_bundle(
        run_cli, bundle_args, apt_archives, tmp_path, prefix, says):
    rc, out, err, output = _debian_12(run_cli, bundle_args, tmp_path,
                                      apt_archives, prefix)
    line = _one_error_line(rc, err)
    assert line.endswith(says.format(keyring=apt_archives.key.keyring)), line
    assert not output.exists()
    cached = str(tmp_path / "cache" / "sha256")     # only verified bytes
    assert all(osarchive.sha256_file(os.path.join(cached, name)) == name
               for name in os.listdir(cached) if len(name) == 64)


def test_os_without_a_keyring_says_the_signature_was_not_checked(
        run_cli, bundle_args, apt_archives, tmp_path):
    # ubuntu-22.04's keyring is not installed on Debian: nothing checks it.
    assert not os.path.exists(ko.DISTROS["ubuntu-22.04"]["keyring"])
    rc, out, err, output = _bundle(
        run_cli, bundle_args, tmp_path, "--os", "ubuntu-22.04",
        "--file-mirror", "http://archive.ubuntu.com/ubuntu/=%s/ubuntu/ubuntu/"
        % apt_archives.base_url)
    assert rc == 0, err
    assert "--os ubuntu-22.04: 22 packages; http://archive.ubuntu.com/ubuntu: " \
           "signature NOT checked (no keyring: give --os-keyring)" in out
    meta, _ = osarchive.bundle_meta(output)
    assert meta["os_packages"]["ubuntu-22.04"]["version_id"] == "22.04"


@pytest.mark.parametrize("flags, says", [
    (["--os", "debian-14"], "error: unknown --os debian-14: give one of "
     "centos-7, debian-10, debian-11, debian-12, debian-13, rocky-8, rocky-9, "
     "ubuntu-18.04, ubuntu-20.04, ubuntu-22.04, ubuntu-24.04"),
    (["--os", "debian-12", "--arch", "s390x"], "error: --os needs --arch "
     "amd64 or arm64 (the distributions' archives are bundled for those "
     "only), not s390x"),
    (["--os", "debian-12", "--os-keyring", "/nonexistent/k.gpg"],
     "error: --os-keyring /nonexistent/k.gpg is not a file: give a keyring "
     "gpgv reads (gpg --export output)"),
    (["--with-docker", "--with-containerd"], "error: --with-docker and "
     "--with-containerd both carry containerd: give one of them"),
])
def test_os_bad_flags_are_one_line(run_cli, bundle_args, tmp_path, flags, says):
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path, *flags)
    assert _one_error_line(rc, err) == says
    assert not output.exists()


# -- --with-containerd -------------------------------------------------------

def test_with_containerd_bundles_upstream_containerd_runc_and_a_unit(
        run_cli, bundle_args, containerd_release, tmp_path):
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path,
                                   "--with-containerd")
    assert rc == 0, err
    meta, members = osarchive.bundle_meta(output)
    tarball = "containerd-1.6.20-linux-amd64.tar.gz"
    assert meta["archives"]["containerd"] == "archives/" + tarball
    assert meta["archives"]["runc"] == "archives/runc.amd64"
    assert osarchive.sha256(members["archives/" + tarball]) == \
        containerd_release[tarball]
    assert osarchive.sha256(members["archives/runc.amd64"]) == \
        containerd_release["runc.amd64"]
    assert meta["versions"]["containerd"] == "1.6.20"
    assert meta["versions"]["runc"] == "1.1.5"
    unit = members["systemd/containerd.service"].decode()
    assert "\nExecStart=/usr/local/bin/containerd\n" in unit
    assert meta["systemd"]["containerd.service"] == "systemd/containerd.service"
    assert "docker.service" not in meta["systemd"]
    assert meta["checksum_sources"]["archives/runc.amd64"] == [
        "publisher's file https://github.com/opencontainers/runc/releases/"
        "download/v1.1.5/runc.sha256sum"]
    assert meta["checksum_sources"]["archives/" + tarball] == [
        "publisher's file https://github.com/containerd/containerd/releases/"
        "download/v1.6.20/%s.sha256sum" % tarball]
    assert run_cli("verify", output)[0] == 0


def test_with_containerd_refuses_runc_that_differs_from_its_sha256sum(
        run_cli, bundle_args, containerd_release, tmp_path):
    other = fileserver.FileServer(str(tmp_path / "files"))
    osarchive.serve_containerd_release(other.root, bad_runc_sum=True)
    with other:
        rc, out, err, output = _bundle(
            run_cli, bundle_args, tmp_path, "--with-containerd",
            "--file-mirror", "https://github.com/opencontainers/=%s/github.com/"
            "opencontainers/" % other.base_url)
    line = _one_error_line(rc, err)
    assert "runc.amd64 failed its sha256 check" in line
    assert not output.exists()


def test_checksum_file_replaces_the_containerd_publishers_files(
        run_cli, bundle_args, containerd_release, tmp_path):
    args = list(bundle_args)
    position = args.index("--checksum-file") + 1
    with open(args[position]) as handle:
        lines = handle.read()
    args[position] = str(tmp_path / "sums")
    with open(args[position], "w") as handle:
        handle.write(lines + "".join("%s  %s\n" % (hexd, name) for name, hexd
                                     in sorted(containerd_release.items())))
    rc, out, err, output = _bundle(run_cli, args, tmp_path, "--with-containerd")
    assert rc == 0, err
    meta, _ = osarchive.bundle_meta(output)
    assert meta["checksum_sources"]["archives/runc.amd64"][0] == \
        "--checksum-file %s" % args[position]


def test_os_debian_13_and_ubuntu_24_04_from_their_signed_archives(
        run_cli, bundle_args, apt_archives, tmp_path):
    """The distributions people run 1.3x on: trixie and noble, each checked
    with the key that signed it, in one bundle."""
    rc, out, err, output = _bundle(
        run_cli, list(bundle_args) + ["--kubernetes-version", "v1.16.0"],
        tmp_path, "--os", "debian-13", "--os", "ubuntu-24.04",
        "--os-keyring", apt_archives.key.keyring,
        "--file-mirror", "%s=%s/trixie/debian/" % (osarchive.DEBIAN,
                                                   apt_archives.base_url),
        "--file-mirror", "http://archive.ubuntu.com/ubuntu/=%s/noble/ubuntu/"
        % apt_archives.base_url)
    assert rc == 0, err
    meta, members = osarchive.bundle_meta(output)
    for os_id, version_id, url in (
            ("debian-13", "13", "https://deb.debian.org/debian"),
            ("ubuntu-24.04", "24.04", "http://archive.ubuntu.com/ubuntu")):
        entry = meta["os_packages"][os_id]
        assert entry["version_id"] == version_id
        assert sorted(p["name"] for p in entry["packages"]) == \
            osarchive.DEB_EXPECTED
        assert entry["signatures"] == ["%s: signature checked with %s" % (
            url, apt_archives.key.keyring)]
        for package in entry["packages"]:
            assert package["path"].startswith("packages/%s/" % os_id)
            assert osarchive.sha256(members[package["path"]]) == \
                meta["files"][package["path"]]["sha256"]
    assert run_cli("verify", output)[0] == 0


# -- RPM: createrepo_c repositories -------------------------------------------

def _rpm_bundle(run_cli, bundle_args, tmp_path, rpm_repos, os_id, prefix,
                keyring=True):
    upstream = osarchive.CENTOS if os_id == "centos-7" else osarchive.ROCKY
    return _bundle(run_cli, bundle_args, tmp_path, "--os", os_id,
                   *((["--os-keyring", rpm_repos.key.keyring] if keyring
                      else []) + ["--file-mirror", "%s=%s/%s/" % (
                          upstream, rpm_repos.base_url, prefix)]))


def test_os_centos_7_from_a_createrepo_c_repository(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _rpm_bundle(run_cli, bundle_args, tmp_path,
                                       rpm_repos, "centos-7", "centos")
    assert rc == 0, err
    meta, members = osarchive.bundle_meta(output)
    entry = meta["os_packages"]["centos-7"]
    assert (entry["id"], entry["version_id"], entry["family"]) == \
        ("centos", "7", "rpm")
    names = [p["name"] for p in entry["packages"]]
    assert sorted(names) == osarchive.RPM_EXPECTED
    versions = dict((p["name"], p["version"]) for p in entry["packages"])
    assert versions["ipset"] == "0:7.1-1.el7"        # the newer of two
    assert versions["ethtool"] == "2:4.8-1.el7"
    for position, package in enumerate(entry["packages"]):
        for need in package["needs"]:
            assert names.index(need) < position
        _, _, sha = rpm_repos.built[os.path.basename(package["path"])]
        assert meta["files"][package["path"]]["sha256"] == sha
        assert osarchive.sha256(members[package["path"]]) == sha
    assert entry["signatures"] == [
        "https://vault.centos.org/7.9.2009/os/x86_64: signature checked "
        "with %s" % rpm_repos.key.keyring]
    assert run_cli("verify", output)[0] == 0


def test_os_rocky_8_reads_both_repositories_and_says_unsigned(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _rpm_bundle(run_cli, bundle_args, tmp_path,
                                       rpm_repos, "rocky-8", "rocky",
                                       keyring=False)
    assert rc == 0, err
    meta, _ = osarchive.bundle_meta(output)
    names = sorted(p["name"] for p in meta["os_packages"]["rocky-8"]["packages"])
    assert names == sorted(set(osarchive.RPM_EXPECTED) - {"ebtables"} |
                           {"iptables", "iptables-ebtables"})
    assert "https://dl.rockylinux.org/vault/rocky/8.9/AppStream/x86_64/os: " \
           "signature NOT checked (no keyring: give --os-keyring)" in out
    assert "packages/rocky-8/socat-1.7.3.2-1.el7.x86_64.rpm" in meta["files"]


def test_os_rpm_whose_sha256_differs_from_primary_is_refused(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _rpm_bundle(run_cli, bundle_args, tmp_path,
                                       rpm_repos, "centos-7", "centos-tampered")
    line = _one_error_line(rc, err)
    assert "socat-1.7.3.2-1.el7.x86_64.rpm failed its sha256 check" in line
    assert not output.exists()


def test_os_rpm_repository_signed_by_no_one_is_refused_with_a_keyring(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _rpm_bundle(run_cli, bundle_args, tmp_path,
                                       rpm_repos, "rocky-8", "rocky")
    line = _one_error_line(rc, err)
    assert "repomd.xml (repomd.xml.asc) is missing, so it cannot be checked " \
           "with %s: refusing the repository" % rpm_repos.key.keyring in line


def test_os_rocky_9_takes_iptables_nft_from_a_signed_repository(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _bundle(
        run_cli, bundle_args, tmp_path, "--os", "rocky-9", "--os-keyring",
        rpm_repos.key.keyring, "--file-mirror", "%s=%s/rocky9/" % (
            osarchive.ROCKY9, rpm_repos.base_url))
    assert rc == 0, err
    meta, _ = osarchive.bundle_meta(output)
    entry = meta["os_packages"]["rocky-9"]
    assert (entry["id"], entry["version_id"]) == ("rocky", "9")
    names = sorted(p["name"] for p in entry["packages"])
    assert names == sorted(set(osarchive.RPM_EXPECTED) - {"ebtables"} |
                           {"iptables-nft"})
    assert entry["signatures"] == [
        "https://dl.rockylinux.org/vault/rocky/9.5/%s/x86_64/os: signature "
        "checked with %s" % (repo, rpm_repos.key.keyring)
        for repo in ("BaseOS", "AppStream")]
    assert run_cli("verify", output)[0] == 0


# -- arm64 ----------------------------------------------------------------------

def test_os_ubuntu_arm64_reads_the_ports_archive(
        run_cli, make_bundle_args, apt_archives, tmp_path):
    rc, out, err, output = _bundle(
        run_cli, make_bundle_args(arch="arm64"), tmp_path,
        "--os", "ubuntu-20.04", "--os-keyring", apt_archives.key.keyring,
        "--file-mirror", "http://ports.ubuntu.com/ubuntu-ports/=%s/ports/"
        "ubuntu-ports/" % apt_archives.base_url)
    assert rc == 0, err
    meta, _ = osarchive.bundle_meta(output)
    packages = meta["os_packages"]["ubuntu-20.04"]["packages"]
    assert sorted(p["name"] for p in packages) == osarchive.DEB_EXPECTED
    assert set(p["arch"] for p in packages) == {"arm64", "all"}
    assert "http://ports.ubuntu.com/ubuntu-ports: signature checked" in out


def test_os_is_repeatable_one_entry_per_distribution(
        run_cli, bundle_args, apt_archives, rpm_repos, tmp_path):
    keyring = str(tmp_path / "both.gpg")      # gpgv reads joined keyrings
    with open(keyring, "wb") as out:
        for part in (apt_archives.key.keyring, rpm_repos.key.keyring):
            with open(part, "rb") as handle:
                out.write(handle.read())
    rc, out, err, output = _bundle(
        run_cli, bundle_args, tmp_path, "--os", "debian-12", "--os",
        "centos-7", "--os", "debian-12", "--os-keyring", keyring,
        *(osarchive.mirror_args(apt_archives, "good") + [
            "--file-mirror", "%s=%s/centos/" % (osarchive.CENTOS,
                                                rpm_repos.base_url)]))
    assert rc == 0, err
    meta, _ = osarchive.bundle_meta(output)
    found = dict((os_id, sorted(p["name"] for p in entry["packages"]))
                 for os_id, entry in meta["os_packages"].items())
    assert found == {"debian-12": osarchive.DEB_EXPECTED,
                     "centos-7": osarchive.RPM_EXPECTED}
    assert [line.split(":")[0] for line in out.splitlines()
            if line.startswith("--os ")] == ["--os centos-7", "--os debian-12"]
    # one keyring checks every archive: an unsigned one is refused with it
    rc, out, err, output = _bundle(
        run_cli, bundle_args, tmp_path, "--os", "ubuntu-22.04",
        "--os-keyring", keyring, "--file-mirror",
        "http://archive.ubuntu.com/ubuntu/=%s/ubuntu/ubuntu/"
        % apt_archives.base_url)
    assert "jammy/ has no InRelease and no Release.gpg, so the keyring" in \
        _one_error_line(rc, err)
