"""bundle --os: the distribution's packages from a real apt archive (debs
built with dpkg-deb, indexed by dpkg-scanpackages, Release by apt-ftparchive,
signed by a throwaway gpg key) served on 127.0.0.1, resolved against the
minimal install, each checked against the signed metadata."""

import json
import os
import tarfile

import pytest

import install_support as sup
import k8s_offline as ko
from fixtures import fileserver, osarchive

DEBIAN = "https://deb.debian.org/debian/"


@pytest.fixture(scope="session")
def apt_archives(fx_workdir):
    """A FileServer holding apt archives under prefixes:
    good/ (signed), unsigned/, missing-dep/ (conntrack needs a library the
    archive lacks), tampered/ (a .deb that is not what Packages says),
    badsig/ (signed by another key).  .key is the good key's keyring."""
    folder = os.path.join(fx_workdir, "apt")
    server = fileserver.FileServer(os.path.join(folder, "files"))
    key = osarchive.GpgKey(os.path.join(folder, "key"))
    other = osarchive.GpgKey(os.path.join(folder, "other"),
                             uid="someone else <o@example.org>")
    try:
        base = lambda name: os.path.join(server.root, name, "debian")
        server.built = osarchive.build_apt_archive(base("good"), key=key)
        osarchive.build_apt_archive(base("unsigned"), key=None)
        specs = [dict(s, depends=s["depends"] + ", libgone1")
                 if s["name"] == "conntrack" else s
                 for s in osarchive.DEB_SPECS]
        osarchive.build_apt_archive(base("missing-dep"), key=key, specs=specs)
        built = osarchive.build_apt_archive(base("tampered"), key=key)
        with open(os.path.join(base("tampered"), built["socat"][0]), "ab") as h:
            h.write(b"\0")
        osarchive.build_apt_archive(base("badsig"), key=other)
        osarchive.build_apt_archive(base("nosig-file"), key=key,
                                    inrelease=False)
    finally:
        key.close()
        other.close()
    server.key = key
    server.start()
    yield server
    server.stop()


def _mirror(server, prefix):
    return ["--file-mirror", "%s=%s/%s/debian/" % (DEBIAN, server.base_url,
                                                   prefix)]


def _debian_12(run_cli, bundle_args, tmp_path, apt_archives, prefix):
    """bundle --os debian-12 from the archive under prefix, checked with
    the good key."""
    return _bundle(run_cli, bundle_args, tmp_path, "--os", "debian-12",
                   "--os-keyring", apt_archives.key.keyring,
                   *_mirror(apt_archives, prefix))


def _bundle(run_cli, bundle_args, tmp_path, *extra):
    output = tmp_path / "b.tar"
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--output", output, "--cache-dir", tmp_path / "cache"] +
        [str(e) for e in extra]))
    return rc, out, err, output


def _meta(output):
    with tarfile.open(str(output)) as tar:
        top = tar.getnames()[0].split("/")[0]
        meta = json.loads(tar.extractfile(top + "/bundle.json").read())
        members = dict((m.name[len(top) + 1:], tar.extractfile(m).read())
                       for m in tar.getmembers() if m.isfile())
    return meta, members


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
    meta, members = _meta(output)
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


def test_os_release_gpg_without_inrelease_is_checked_too(
        run_cli, bundle_args, apt_archives, tmp_path):
    rc, out, err, output = _debian_12(run_cli, bundle_args, tmp_path,
                                      apt_archives, "nosig-file")
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
    root = os.path.join(apt_archives.root, "ubuntu", "ubuntu")
    if not os.path.isdir(root):
        osarchive.build_apt_archive(root, suite="jammy", key=None,
                                    components=("main", "universe"))
    rc, out, err, output = _bundle(
        run_cli, bundle_args, tmp_path, "--os", "ubuntu-22.04",
        "--file-mirror", "http://archive.ubuntu.com/ubuntu/=%s/ubuntu/ubuntu/"
        % apt_archives.base_url)
    assert rc == 0, err
    assert "--os ubuntu-22.04: 22 packages; http://archive.ubuntu.com/ubuntu: " \
           "signature NOT checked (no keyring: give --os-keyring)" in out
    meta, _ = _meta(output)
    assert meta["os_packages"]["ubuntu-22.04"]["version_id"] == "22.04"


@pytest.mark.parametrize("flags, says", [
    (["--os", "debian-13"], "error: unknown --os debian-13: give one of "
     "centos-7, debian-10, debian-11, debian-12, rocky-8, ubuntu-18.04, "
     "ubuntu-20.04, ubuntu-22.04"),
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

@pytest.fixture(scope="session")
def containerd_release(file_server):
    return osarchive.serve_containerd_release(file_server.root)


def test_with_containerd_bundles_upstream_containerd_runc_and_a_unit(
        run_cli, bundle_args, containerd_release, tmp_path):
    rc, out, err, output = _bundle(run_cli, bundle_args, tmp_path,
                                   "--with-containerd")
    assert rc == 0, err
    meta, members = _meta(output)
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
    meta, _ = _meta(output)
    assert meta["checksum_sources"]["archives/runc.amd64"][0] == \
        "--checksum-file %s" % args[position]


# -- the packages phase: real dpkg into a test root ----------------------------


REAL_RUNNER = ko.Runner
REQUIRED = ("libc6", "base-files", "util-linux", "mount", "init-system-helpers")
BARE_TOOLS = ("touch", "swapoff", "systemctl", "iptables-save")


@pytest.fixture(scope="session")
def debian_bundle(run_cli, bundle_args, apt_archives, containerd_release,
                  fx_workdir):
    """The bundle a user makes for bare Debian 12 hosts (a .tar)."""
    folder = os.path.join(fx_workdir, "debian-bundle")
    os.makedirs(folder, exist_ok=True)
    output = os.path.join(folder, "b.tar")
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--os", "debian-12", "--os-keyring", apt_archives.key.keyring,
        "--with-containerd", "--output", output,
        "--cache-dir", os.path.join(folder, "cache")] +
        _mirror(apt_archives, "good")))
    assert rc == 0, err
    return output


class PackagesRunner(sup.FakeRunner):
    """The test host's runner: dpkg and dpkg-query run for real (on the
    test root), everything else is the FakeRunner's."""

    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        if argv[0] in ("dpkg", "dpkg-query"):
            self.calls.append((list(argv), True))
            return REAL_RUNNER._execute(self, argv, timeout=timeout)
        return super(PackagesRunner, self)._execute(argv, timeout, tee,
                                                    input_text)


def bare_debian(root, apt_archives, os_release=("debian", "12"),
                installed=REQUIRED):
    """A Debian host tree with only `installed` (dpkg-installed for real
    from the archive): no conntrack, socat, iptables, ip, ..."""
    sup.make_root(root, tools=BARE_TOOLS)
    for folder in ("var/lib/dpkg/updates", "var/lib/dpkg/info"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
    sup.write(root, "/etc/os-release", 'PRETTY_NAME="Test"\nID=%s\n'
              'VERSION_ID="%s"\n' % os_release)
    pool = os.path.join(apt_archives.root, "good", "debian")
    # the required packages first: iptables pre-depends on one of them
    for batch in ([n for n in installed if n in REQUIRED],
                  [n for n in installed if n not in REQUIRED]):
        if batch:
            osarchive.run(["dpkg", "--root=" + root, "-i"] + [
                os.path.join(pool, apt_archives.built[name][0])
                for name in batch])
    return root


def installed_packages(root):
    out = osarchive.run(["dpkg-query", "--admindir=" + os.path.join(
        root, "var/lib/dpkg"), "-W", "-f", "${Package} ${Status}\n"])
    return sorted(line.split()[0] for line in out.decode().splitlines()
                  if line.endswith(" installed"))


def fake_host(monkeypatch, root):
    runner = PackagesRunner(root)
    sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    runner.cluster.containerd_up = False
    original = runner.answer

    def answer(argv):
        if argv[:4] == ["systemctl", "enable", "--now", "containerd"]:
            runner.cluster.containerd_up = True
        if argv[0] == "ctr" and "version" in argv and \
                not runner.cluster.containerd_up:
            return 1, ""
        return original(argv)
    runner.answer = answer
    return runner


def master_argv(root, bundle, *extra):
    return ["master", "--root", root, "--bundle", bundle, "--no-progress",
            "--no-wait", "--skip-phases", "join-file"] + list(extra)


def test_bare_debian_12_gets_its_packages_and_containerd_from_the_bundle(
        debian_bundle, apt_archives, tmp_path, monkeypatch, caplog):
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    assert installed_packages(root) == sorted(
        osarchive.DEB_EXPECTED + list(REQUIRED))
    for tool in ("usr/sbin/conntrack", "usr/bin/socat", "usr/sbin/ebtables",
                 "usr/sbin/ethtool", "usr/sbin/ipset", "usr/sbin/iptables",
                 "usr/bin/ip", "usr/sbin/modprobe", "usr/sbin/sysctl"):
        assert os.access(os.path.join(root, tool), os.X_OK), tool
    # one dpkg -i of exactly what the host lacked, dependencies first
    dpkg = runner.ran("dpkg", "--root=" + root, "-i")
    batches = [[os.path.basename(path).split("_")[0] for path in argv[3:]]
               for argv in dpkg]
    # procps pre-depends on libproc2-0: dpkg must configure that one first
    assert len(batches) == 2
    assert "libproc2-0" in batches[0] and batches[1][0] == "procps"
    order = batches[0] + batches[1]
    assert sorted(order) == osarchive.DEB_EXPECTED
    assert order.index("libmnl0") < order.index("conntrack")
    assert order.index("libnetfilter-conntrack3") < order.index("conntrack")
    assert order.index("libip4tc2") < order.index("iptables")
    # the staged copies are gone
    assert not os.path.exists(os.path.join(root, ko.PACKAGES_STAGE_DIR.lstrip("/")))
    # the bundled containerd, as upstream lays it out, started by its unit
    for name in osarchive.CONTAINERD_BINARIES:
        assert os.access(os.path.join(root, "usr/local/bin", name), os.X_OK)
    runc = os.path.join(root, "usr/local/sbin/runc")
    assert os.access(runc, os.X_OK)
    with tarfile.open(debian_bundle) as tar:
        top = tar.getnames()[0].split("/")[0]
        assert open(runc, "rb").read() == tar.extractfile(
            top + "/archives/runc.amd64").read()
    unit = open(os.path.join(root, "etc/systemd/system/containerd.service")).read()
    assert unit == ko.CONTAINERD_LOCAL_SERVICE
    assert runner.ran("systemctl", "enable", "--now", "containerd")
    assert os.path.isfile(os.path.join(root, "etc/containerd/config.toml"))
    phases = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("[") and "done in" not in
              r.getMessage()]
    assert [p.split("]")[0][1:] for p in phases][:3] == [
        "verify", "packages", "preflight"]


def test_a_second_run_installs_nothing_again(
        debian_bundle, apt_archives, tmp_path, monkeypatch):
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    before = installed_packages(root)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    assert not runner.ran("dpkg", "--root=" + root, "-i")
    assert installed_packages(root) == before


def test_only_what_the_host_lacks_is_installed_and_nothing_upgraded(
        debian_bundle, apt_archives, tmp_path, monkeypatch):
    have = REQUIRED + ("libip4tc2", "libxtables12", "netbase", "iptables",
                       "libmnl0")
    root = bare_debian(str(tmp_path / "root"), apt_archives, installed=have)
    status = os.path.join(root, "var/lib/dpkg/status")
    with open(status) as handle:       # the host's iptables is older
        text = handle.read()
    older = text.replace("Version: 1.8.9-2\nDepends: libip4tc2",
                         "Version: 1.8.7-1\nDepends: libip4tc2")
    assert older != text
    with open(status, "w") as handle:
        handle.write(older)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    names = sorted(os.path.basename(p).split("_")[0]
                   for argv in runner.ran("dpkg", "--root=" + root, "-i")
                   for p in argv[3:])
    assert names == sorted(set(osarchive.DEB_EXPECTED) - set(have))
    assert installed_packages(root) == sorted(
        osarchive.DEB_EXPECTED + list(REQUIRED))
    out = osarchive.run(["dpkg-query", "--admindir=" + os.path.join(
        root, "var/lib/dpkg"), "-W", "-f", "${Version}", "iptables"])
    assert out == b"1.8.7-1"


def test_dry_run_on_a_bare_host_changes_nothing_and_shows_the_install(
        debian_bundle, apt_archives, tmp_path, monkeypatch, caplog):
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    before = sup.snapshot(root)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle, "--dry-run")) == 0
    assert sup.snapshot(root) == before
    shown = [argv for argv, executed in runner.calls if not executed]
    dpkg = [argv for argv in shown if argv[:3] == ["dpkg", "--root=" + root,
                                                   "-i"]]
    assert sum(len(argv) - 3 for argv in dpkg) == len(osarchive.DEB_EXPECTED)
    text = caplog.text
    assert "installing %d packages for debian-12: " % len(
        osarchive.DEB_EXPECTED) in text
    assert "would write /usr/local/sbin/runc" in text
    assert "would write /usr/local/bin/containerd " in text
    assert "would write /etc/systemd/system/containerd.service" in text


@pytest.mark.parametrize("os_release, says", [
    (("debian", "11"), "error: this host is debian-11 and lacks conntrack, "
     "socat, ebtables, ethtool, ipset, iptables, ip, tc, modprobe, sysctl, "
     "but the bundle carries packages only for debian-12: rebuild it with "
     "--os debian-11"),
    (("fedora", "39"), "error: this host (fedora 39 in /etc/os-release) lacks "
     "conntrack, socat, ebtables, ethtool, ipset, iptables, ip, tc, modprobe, "
     "sysctl and no --os covers it (the bundle has debian-12): install "
     "conntrack, socat, ebtables, ethtool, ipset, iptables, ip, tc, modprobe, "
     "sysctl with the host's own packages"),
])
def test_a_host_the_bundle_does_not_cover_is_refused_unchanged(
        run_cli, debian_bundle, apt_archives, tmp_path, monkeypatch,
        os_release, says, capsys):
    root = bare_debian(str(tmp_path / "root"), apt_archives,
                       os_release=os_release)
    before = sup.snapshot(root)
    fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error")] \
        == [says]
    assert "Traceback" not in err
    assert sup.snapshot(root) == before


def test_a_host_of_another_os_that_lacks_nothing_still_installs(
        debian_bundle, tmp_path, monkeypatch, caplog):
    root = sup.make_root(str(tmp_path / "root"))        # every tool there
    sup.write(root, "/etc/os-release", "ID=ubuntu\nVERSION_ID=\"22.04\"\n")
    for tool in ("ipset", "modprobe", "sysctl"):
        sup.write(root, "/usr/sbin/" + tool, "#!/bin/sh\n", 0o755)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    assert not runner.ran("dpkg", "--root=" + root, "-i")
    assert "this host (ubuntu 22.04) has every tool the packages supply; the " \
           "bundle's packages are for debian-12" in caplog.text


def test_a_dependency_too_old_on_the_host_is_refused_before_dpkg_runs(
        debian_bundle, apt_archives, tmp_path, monkeypatch, capsys):
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    status = os.path.join(root, "var/lib/dpkg/status")
    with open(status) as handle:
        text = handle.read()
    # the host's init-system-helpers is older than procps and iptables need
    text = text.replace("Package: init-system-helpers\nStatus: install ok "
                        "installed\nPriority: required\nSection: admin\n"
                        "Maintainer: t <t@example.org>\nArchitecture: amd64\n"
                        "Version: 1.65.2", "Package: init-system-helpers\n"
                        "Status: install ok installed\nPriority: required\n"
                        "Section: admin\nMaintainer: t <t@example.org>\n"
                        "Architecture: amd64\nVersion: 1.20")
    assert "Version: 1.20" in text
    with open(status, "w") as handle:
        handle.write(text)
    before = sup.snapshot(root)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 2
    err = capsys.readouterr().err
    assert "error: iptables needs init-system-helpers (>= 1.54~), which " \
           "neither this host nor the bundle has (this host has " \
           "init-system-helpers 1.20): install it first, or rebuild the " \
           "bundle with --os debian-12 from the archive this host uses" in err
    assert not runner.ran("dpkg", "--root=" + root, "-i")
    assert sup.snapshot(root) == before


def test_a_package_changed_in_the_bundle_is_refused_before_the_host_changes(
        debian_bundle, apt_archives, tmp_path, monkeypatch, capsys):
    folder = str(tmp_path / "bundle")
    with tarfile.open(debian_bundle) as tar:
        tar.extractall(folder)
    top = os.path.join(folder, os.listdir(folder)[0])
    victim = [name for name in os.listdir(os.path.join(
        top, "packages", "debian-12")) if name.startswith("conntrack_")][0]
    with open(os.path.join(top, "packages", "debian-12", victim), "ab") as h:
        h.write(b"\0")
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    before = sup.snapshot(root)
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, top)) == 2
    err = capsys.readouterr().err
    assert "packages/debian-12/%s" % victim in err.splitlines()[-1]
    assert not runner.ran("dpkg", "--root=" + root, "-i")
    assert sup.snapshot(root) == before


# -- RPM: a real createrepo_c repository, rpm into a test root ----------------

CENTOS = "https://vault.centos.org/7.9.2009/os/x86_64/"
ROCKY = "https://dl.rockylinux.org/vault/rocky/8.9/"


@pytest.fixture(scope="session")
def rpm_repos(fx_workdir):
    """centos/ (one repository, signed repomd.xml, gzip), rocky/ (BaseOS and
    AppStream, xz, unsigned), centos-tampered/ (socat is not what primary.xml
    says).  .key: the signing key."""
    folder = os.path.join(fx_workdir, "rpm")
    server = fileserver.FileServer(os.path.join(folder, "files"))
    key = osarchive.GpgKey(os.path.join(folder, "key"))
    try:
        server.built = osarchive.build_rpm_repos(
            [os.path.join(server.root, "centos")], key=key)
        osarchive.build_rpm_repos(
            [os.path.join(server.root, "rocky", name, "x86_64", "os")
             for name in ("BaseOS", "AppStream")], compress="xz")
        built = osarchive.build_rpm_repos(
            [os.path.join(server.root, "centos-tampered")], key=key)
        socat = [path for _, path, _ in built.values() if "socat" in path][0]
        with open(os.path.join(server.root, "centos-tampered", socat), "ab") as h:
            h.write(b"\0")
    finally:
        key.close()
    server.key = key
    server.start()
    yield server
    server.stop()


def _rpm_bundle(run_cli, bundle_args, tmp_path, rpm_repos, os_id, prefix,
                keyring=True):
    upstream = CENTOS if os_id == "centos-7" else ROCKY
    return _bundle(run_cli, bundle_args, tmp_path, "--os", os_id,
                   *((["--os-keyring", rpm_repos.key.keyring] if keyring
                      else []) + ["--file-mirror", "%s=%s/%s/" % (
                          upstream, rpm_repos.base_url, prefix)]))


def test_os_centos_7_from_a_createrepo_c_repository(
        run_cli, bundle_args, rpm_repos, tmp_path):
    rc, out, err, output = _rpm_bundle(run_cli, bundle_args, tmp_path,
                                       rpm_repos, "centos-7", "centos")
    assert rc == 0, err
    meta, members = _meta(output)
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
    meta, _ = _meta(output)
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


@pytest.fixture(scope="session")
def centos_bundle(run_cli, bundle_args, rpm_repos, fx_workdir):
    folder = os.path.join(fx_workdir, "centos-bundle")
    os.makedirs(folder, exist_ok=True)
    output = os.path.join(folder, "b.tar")
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--os", "centos-7", "--os-keyring", rpm_repos.key.keyring,
        "--output", output, "--cache-dir", os.path.join(folder, "cache"),
        "--file-mirror", "%s=%s/centos/" % (CENTOS, rpm_repos.base_url)]))
    assert rc == 0, err
    return output


def bare_centos(root, rpm_repos):
    """A CentOS 7 host tree whose rpm database holds the core packages."""
    sup.make_root(root, tools=BARE_TOOLS)
    os.makedirs(os.path.join(root, "var/lib"))
    sup.write(root, "/etc/os-release", 'NAME="CentOS Linux"\nID="centos"\n'
              'VERSION_ID="7"\n')
    core = [path for name, (_, path, _) in sorted(rpm_repos.built.items())
            if name.split("-")[0] in ("glibc", "bash", "filesystem", "kmod")
            or name.startswith(("util-linux-", "libmnl-", "iproute-",
                                "iptables-1", "procps-ng-"))]
    osarchive.run(["rpm", "--root", root, "--initdb"])
    osarchive.run(["rpm", "--root", root, "-Uvh"] + [
        os.path.join(rpm_repos.root, "centos", path) for path in core])
    return root


def rpm_installed(root):
    out = osarchive.run(["rpm", "--root", root, "-qa", "--qf", "%{NAME}\n"])
    return sorted(out.decode().split())


class RpmRunner(PackagesRunner):
    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        if argv[0] == "rpm":
            self.calls.append((list(argv), True))
            return REAL_RUNNER._execute(self, argv, timeout=timeout)
        return super(RpmRunner, self)._execute(argv, timeout, tee, input_text)


def test_bare_centos_7_gets_its_packages_with_rpm(
        centos_bundle, rpm_repos, tmp_path, monkeypatch):
    root = bare_centos(str(tmp_path / "root"), rpm_repos)
    core = rpm_installed(root)
    runner = RpmRunner(root)
    sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    assert ko.main(master_argv(root, centos_bundle)) == 0
    assert rpm_installed(root) == sorted(core + osarchive.RPM_EXPECTED)
    for tool in ("usr/sbin/conntrack", "usr/bin/socat", "usr/sbin/ebtables",
                 "usr/sbin/ipset", "usr/sbin/ethtool"):
        assert os.access(os.path.join(root, tool), os.X_OK), tool
    tested = runner.ran("rpm", "--root", root, "-Uvh")
    assert len(tested) == 2 and tested[0][-1] == "--test"
    assert sorted(os.path.basename(p).rsplit("-", 2)[0]
                  for p in tested[1][4:]) == osarchive.RPM_EXPECTED
    runner.calls = []
    assert ko.main(master_argv(root, centos_bundle)) == 0
    assert not runner.ran("rpm", "--root", root, "-Uvh")


def test_rpm_host_missing_a_core_library_is_refused_unchanged(
        centos_bundle, rpm_repos, tmp_path, monkeypatch, capsys):
    root = bare_centos(str(tmp_path / "root"), rpm_repos)
    osarchive.run(["rpm", "--root", root, "-e", "--nodeps", "libmnl"])
    before = sup.snapshot(root)
    runner = RpmRunner(root)
    sup.install_fake(monkeypatch, root)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: runner.bind(dry_run))
    assert ko.main(master_argv(root, centos_bundle)) == 2
    err = capsys.readouterr().err
    assert "error: rpm -Uvh --test (the dependency check) failed (exit " in err
    assert "): libmnl.so.0()(64bit) is needed by" in err
    assert [argv[-1] for argv in runner.ran("rpm", "--root", root, "-Uvh")] \
        == ["--test"]
    after = sup.snapshot(root)
    changed = sorted(path for path in set(before) | set(after)
                     if before.get(path) != after.get(path))
    assert [p for p in changed if ".rpmdb" not in p] == []


# -- a bare host has no iproute2 before the packages phase ---------------------

class NoIpRunner(REAL_RUNNER):
    """The real runner on a host without `ip` (the command is not found)."""

    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        if argv[0] == "ip":
            return ko.CommandResult(argv, 127, "", "ip: No such file or directory")
        return REAL_RUNNER._execute(self, argv, timeout=timeout, tee=tee,
                                    input_text=input_text)


def test_host_addresses_without_ip_come_from_the_kernel():
    ip = ko.host_addresses(REAL_RUNNER())      # this machine has iproute2
    kernel = ko.host_addresses(NoIpRunner())
    assert ("lo", ko.ipaddress.ip_interface("127.0.0.1/8")) in kernel
    route = ko.default_route_interface(ko.Host("/"))
    assert [a for name, a in kernel if name == route] == \
        [a for name, a in ip if name == route][:1]
    assert set(kernel) <= set(ip) | set(ko.host_addresses(REAL_RUNNER()))


# -- arm64, and a stick that lies about its packages ----------------------------

def test_os_ubuntu_arm64_reads_the_ports_archive(
        run_cli, make_bundle_args, apt_archives, tmp_path):
    root = os.path.join(apt_archives.root, "ports", "ubuntu-ports")
    if not os.path.isdir(root):
        osarchive.build_apt_archive(root, suite="focal", arch="arm64",
                                    components=("main", "universe"),
                                    key=apt_archives.key)
    rc, out, err, output = _bundle(
        run_cli, make_bundle_args(arch="arm64"), tmp_path,
        "--os", "ubuntu-20.04", "--os-keyring", apt_archives.key.keyring,
        "--file-mirror", "http://ports.ubuntu.com/ubuntu-ports/=%s/ports/"
        "ubuntu-ports/" % apt_archives.base_url)
    assert rc == 0, err
    meta, _ = _meta(output)
    packages = meta["os_packages"]["ubuntu-20.04"]["packages"]
    assert sorted(p["name"] for p in packages) == osarchive.DEB_EXPECTED
    assert set(p["arch"] for p in packages) == {"arm64", "all"}
    assert "http://ports.ubuntu.com/ubuntu-ports: signature checked" in out


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
])
def test_a_bundle_json_that_lies_about_packages_is_refused(
        run_cli, debian_bundle, tmp_path, change, says):
    folder = str(tmp_path / "bundle")
    with tarfile.open(debian_bundle) as tar:
        tar.extractall(folder)
    top = os.path.join(folder, os.listdir(folder)[0])
    _rewrite_meta(top, change)
    rc, out, err = run_cli("verify", top)
    assert rc == 2
    assert says in err.splitlines()[-1], err


def test_a_host_with_docker_keeps_docker_as_its_runtime(
        debian_bundle, tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"),
                         tools=sup.TOOLS + ("ipset", "dockerd"))
    sup.write(root, "/etc/os-release", "ID=ubuntu\nVERSION_ID=\"22.04\"\n")
    runner = fake_host(monkeypatch, root)
    assert ko.main(master_argv(root, debian_bundle)) == 0
    assert runner.ran("docker", "info")
    assert not os.path.exists(os.path.join(root, "usr/local/bin/containerd"))
    assert not runner.ran("systemctl", "enable", "--now", "containerd")
