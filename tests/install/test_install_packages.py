"""The packages phase and the bundled containerd (host preparation): real
dpkg and rpm install a bundle's packages into a test root (--root), every
other command is the FakeRunner's.  The bundles are conftest's debian_bundle
and centos_bundle, made by `bundle --os` from real archives."""

import os
import tarfile

import pytest

import install_support as sup
import k8s_offline as ko
from fixtures import osarchive

REAL_RUNNER = ko.Runner
REQUIRED = ("libc6", "base-files", "util-linux", "mount", "init-system-helpers")
BARE_TOOLS = ("touch", "swapoff", "systemctl", "iptables-save")


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
    top = osarchive.extract_bundle(debian_bundle, str(tmp_path / "bundle"))
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


# -- RPM: rpm into a test root ------------------------------------------------

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


def test_master_phase_packages_installs_them_before_preflight(
        debian_bundle, apt_archives, tmp_path, monkeypatch, caplog):
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    runner = fake_host(monkeypatch, root)
    assert ko.main(["master", "phase", "packages", "--root", root, "--bundle",
                    debian_bundle, "--no-progress"]) == 0
    assert installed_packages(root) == sorted(
        osarchive.DEB_EXPECTED + list(REQUIRED))
    ran = [r.getMessage().split("]")[0][1:] for r in caplog.records
           if r.getMessage().startswith("[") and "done in" in r.getMessage()]
    assert ran == ["verify", "packages", "preflight"]
    assert not runner.ran("kubeadm")


def _one_cpu(root, monkeypatch):
    sup.write(root, "/proc/cpuinfo", "processor\t: 0\n\n")


def _swap_on(root, monkeypatch):
    sup.write(root, "/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n"
              "/swapfile file 1048572 0 -2\n")


def _port_busy(root, monkeypatch):
    with open(os.path.join(root, "proc/net/tcp"), "a") as handle:
        handle.write(sup.tcp_line(6443))


def _not_root(root, monkeypatch):
    monkeypatch.setattr(ko, "current_euid", lambda: 1000)


@pytest.mark.parametrize("change,says", [
    (_one_cpu, "needs at least 2 CPUs"), (_swap_on, "swap is on"),
    (_port_busy, "6443"), (_not_root, "must run as root")],
    ids=["1-cpu", "swap-on", "port-6443-busy", "not-root"])
def test_a_bare_host_preflight_refuses_before_dpkg_runs(
        change, says, debian_bundle, apt_archives, tmp_path, monkeypatch,
        capsys):
    """What no package can fix is refused before the packages phase
    changes the host, not after dpkg -i has run."""
    root = bare_debian(str(tmp_path / "root"), apt_archives)
    runner = fake_host(monkeypatch, root)
    change(root, monkeypatch)
    before = sup.snapshot(root)
    assert ko.main(master_argv(root, debian_bundle)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and says in errors[0], err
    assert err.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in err
    assert not runner.ran("dpkg", "--root=" + root, "-i")
    assert sup.snapshot(root) == before
