"""Session fixtures for k8s-offline's tests (see tests/fixtures/ for the code).

Servers (all on 127.0.0.1, started lazily, once per session, stopped at the end):
  anon_registry    plain HTTP, anonymous; every test image is pushed here (test_images)
  basic_registry   htpasswd (bcrypt) auth, same storage          user REGISTRY_USER
  token_server     bearer-token server (JWT RS256 signed, cert in the registry's bundle)
  token_registry   bearer-token auth, same storage
  file_server      dl.k8s.io / github.com stand-ins, Range support
Install-mode fixtures (tests/install_support.py):
  bundle_dir       a tiny valid bundle folder, built once per test module
  host             (root, runner): a --root host tree and the recording FakeRunner
                   (a command it has no answer for fails the test: declare it
                   with runner.expect(...); see fake_runner_check)
Helpers:
  bundle_args          flags sending every bundle download of amd64 to the fixtures
  make_bundle_args     the same for another registry / arch / checksum file
  make_docker_config   a DOCKER_CONFIG dir with {"auths": {HOST: {"auth": b64(user:pass)}}}
  run_cli              run ``python k8s_offline.py ARGS`` -> (rc, stdout, stderr)
  k8s_version          the suite's one Kubernetes version (fixtures.K8S_VERSION)
  python36             a Python 3.6 (any patch), else a loud skip
  dockerd              the docker daemon is reachable (started if needed, else a clear failure)
  containerd           a standalone containerd; .ctr(...) runs ctr against its socket
OS package archives (tests/fixtures/osarchive.py: real debs, rpms, signed indexes):
  apt_archives         apt archives under prefixes (good, unsigned, badsig, ...) on 127.0.0.1
  rpm_repos            createrepo_c repositories (centos, rocky, centos-tampered)
  containerd_release   containerd's and runc's release files in file_server
  debian_bundle        bundle --os debian-12 --with-containerd (a .tar)
  centos_bundle        bundle --os centos-7 (a .tar)
"""

import base64
import json
import os
import subprocess
import sys
import time

import pytest

# The one path set-up of the suite: tests/ for `fixtures` and
# `install_support`, the repository for `k8s_offline`.
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _path in (REPO_ROOT, TESTS_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fixtures import daemons, fileserver, images, osarchive, registry  # noqa: E402
from fixtures import K8S_VERSION  # noqa: E402
import install_support  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "k8s_offline.py")
REGISTRY_USER = "tester"
REGISTRY_PASSWORD = "s3cret-Pa55"
TIMINGS = {}


def _timed(name, fn):
    t = time.monotonic()
    out = fn()
    TIMINGS[name] = time.monotonic() - t
    return out


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line("fixture setup times: " + ", ".join(
            "%s %.2fs" % kv for kv in TIMINGS.items()))


@pytest.fixture(scope="session")
def fx_workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fx"))


@pytest.fixture(scope="session")
def registry_storage(fx_workdir):
    path = os.path.join(fx_workdir, "registry-storage")
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def anon_registry(fx_workdir, registry_storage):
    reg = registry.Registry(fx_workdir, storage_dir=registry_storage, name="anon")
    _timed("anon_registry", reg.start)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def test_images(anon_registry, fx_workdir):
    """images.ImageSet: every test image pushed, with the digests the registry serves."""
    return _timed("test_images(build+push)",
                  lambda: images.push_all(anon_registry.host, fx_workdir))


@pytest.fixture(scope="session")
def basic_registry(fx_workdir, registry_storage, test_images):
    reg = registry.Registry(fx_workdir, auth="htpasswd", storage_dir=registry_storage,
                            users={REGISTRY_USER: REGISTRY_PASSWORD}, name="basic")
    _timed("basic_registry", reg.start)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_server(fx_workdir):
    ts = _timed("token_server", lambda: registry.TokenServer(
        fx_workdir, users={REGISTRY_USER: REGISTRY_PASSWORD}).start())
    yield ts
    ts.stop()


@pytest.fixture(scope="session")
def token_registry(fx_workdir, registry_storage, token_server, test_images):
    reg = registry.Registry(fx_workdir, auth="token", token_server=token_server,
                            storage_dir=registry_storage, name="token")
    _timed("token_registry", reg.start)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def file_server(fx_workdir):
    fs = fileserver.FileServer(os.path.join(fx_workdir, "files"))
    _timed("file_server", fs.start)
    yield fs
    fs.stop()


@pytest.fixture(scope="session")
def make_bundle_args(file_server, fx_workdir, test_images):
    """make_bundle_args(registry_host=None, arch="amd64", checksum_override=None) ->
    the flags pulling every image from REGISTRY_HOST (default: anon_registry)
    and every file from file_server, with a matching --checksum-file."""
    counter = [0]

    def make(registry_host=None, arch="amd64", checksum_override=None):
        host = registry_host or test_images.host
        counter[0] += 1
        ck = file_server.checksum_file(
            os.path.join(fx_workdir, "sha256sums-%s-%d.txt" % (arch, counter[0])),
            arch=arch, override=checksum_override)
        args = ["--image-repository", host,
                "--registry-mirror", "quay.io=%s" % host,
                "--insecure-registry", host]
        args += file_server.mirror_args()
        args += ["--checksum-file", ck, "--no-progress"]
        if arch != "amd64":
            args += ["--arch", arch]
        return args

    return make


@pytest.fixture(scope="session")
def bundle_args(make_bundle_args):
    """Flags for an amd64 bundle from anon_registry + file_server (add --output, --cache-dir)."""
    return make_bundle_args()


@pytest.fixture(scope="session")
def make_docker_config(fx_workdir):
    counter = [0]

    def make(host, user=REGISTRY_USER, password=REGISTRY_PASSWORD):
        counter[0] += 1
        d = os.path.join(fx_workdir, "docker-config-%d" % counter[0])
        os.makedirs(d, exist_ok=True)
        auth = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"auths": {host: {"auth": auth}}}, f)
        return d

    return make


@pytest.fixture(scope="session")
def empty_docker_config(fx_workdir):
    d = os.path.join(fx_workdir, "docker-config-empty")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"auths": {}}, f)
    return d


@pytest.fixture(scope="session")
def run_cli(empty_docker_config, fx_workdir):
    """run_cli(*args, env=None, timeout=900) -> (rc, stdout, stderr) of
    ``python k8s_offline.py ARGS``.  Proxies point at a dead 127.0.0.1 port
    (loopback excluded) so any request to a non-local host fails fast instead
    of leaving the machine; DOCKER_CONFIG is an empty config unless ENV sets
    one; XDG_CACHE_HOME is a private directory."""
    cache_home = os.path.join(fx_workdir, "xdg-cache")

    def run(*args, env=None, timeout=900, cwd=None):
        e = dict(os.environ)
        dead = "http://127.0.0.1:9"
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                  "ALL_PROXY", "all_proxy"):
            e[k] = dead
        e["NO_PROXY"] = e["no_proxy"] = "127.0.0.1,localhost"
        e["DOCKER_CONFIG"] = empty_docker_config
        e["XDG_CACHE_HOME"] = cache_home
        e["PYTHONDONTWRITEBYTECODE"] = "1"
        e.update(env or {})
        r = subprocess.run([sys.executable, SCRIPT] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, text=True, timeout=timeout,
                           cwd=cwd or fx_workdir, env=e)
        return r.returncode, r.stdout, r.stderr

    return run


@pytest.fixture(scope="session")
def dockerd(fx_workdir):
    """The docker daemon answers (started here if it did not). Fails, never skips."""
    try:
        _timed("dockerd", lambda: daemons.ensure_dockerd(fx_workdir))
    except RuntimeError as e:
        pytest.fail("docker daemon unavailable: %s" % e, pytrace=False)
    return daemons.DOCKER_SOCK


@pytest.fixture(scope="session")
def containerd(tmp_path_factory):
    c = daemons.Containerd(str(tmp_path_factory.mktemp("ctrd")))
    try:
        _timed("containerd", c.start)
    except RuntimeError as e:
        pytest.fail("standalone containerd unavailable: %s" % e, pytrace=False)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A tiny valid bundle folder (install_support.make_bundle), one per module."""
    return install_support.make_bundle(str(tmp_path_factory.mktemp("bundle")))


@pytest.fixture(scope="session")
def k8s_version():
    """The Kubernetes version the whole suite is of (fixtures.K8S_VERSION)."""
    return K8S_VERSION


@pytest.fixture(scope="session")
def python36():
    """A Python 3.6 of any patch (install_support.find_python36); without
    one the test skips, saying loudly what is then left unchecked."""
    path = install_support.find_python36()
    if not path:
        pytest.skip("NO PYTHON 3.6 HERE (looked for %s): vermin (make lint) "
                    "is then the ONLY check that k8s_offline.py runs on 3.6"
                    % " and ".join(install_support.PY36_PLACES))
    return path


@pytest.fixture(autouse=True)
def fake_runner_check():
    """Fail the test when a FakeRunner was asked a command it has no answer
    for, or its kubeadm a config kubeadm would refuse, even when the tool
    caught the FakeCommandError, or when a command the test declared with
    runner.expect(...) never ran (install_support.FakeRunner)."""
    del install_support.LIVE[:]
    yield
    problems = [problem for runner in install_support.LIVE
                for problem in runner.problems]
    problems += ["runner.expect%r was declared but no command used it"
                 % (prefix,) for runner in install_support.LIVE
                 for prefix in runner.unused()]
    del install_support.LIVE[:]
    if problems:
        pytest.fail("the fake host was asked what it cannot answer:\n  " +
                    "\n  ".join(problems), pytrace=False)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """(root, runner): a fixture host tree for --root and the recording runner."""
    root = install_support.make_root(str(tmp_path / "root"))
    runner = install_support.install_fake(monkeypatch, root)
    return root, runner


# -- OS package archives -------------------------------------------------------

def _archive_server(folder, build):
    """A FileServer on 127.0.0.1 for archives build(root, key, other) writes
    under its root (key and other: throwaway signing keys); .key is key."""
    server = fileserver.FileServer(os.path.join(folder, "files"))
    key = osarchive.GpgKey(os.path.join(folder, "key"))
    other = osarchive.GpgKey(os.path.join(folder, "other"),
                             uid="someone else <o@example.org>")
    try:
        server.built = build(server.root, key, other)
    finally:
        key.close()
        other.close()
    server.key = key
    return server.start()


def _apt_archives(root, key, other):
    base = lambda name: os.path.join(root, name, "debian")
    built = osarchive.build_apt_archive(base("good"), key=key)
    osarchive.build_apt_archive(base("unsigned"), key=None)
    specs = [dict(s, depends=s["depends"] + ", libgone1")
             if s["name"] == "conntrack" else s for s in osarchive.DEB_SPECS]
    osarchive.build_apt_archive(base("missing-dep"), key=key, specs=specs)
    tampered = osarchive.build_apt_archive(base("tampered"), key=key)
    with open(os.path.join(base("tampered"), tampered["socat"][0]), "ab") as h:
        h.write(b"\0")
    osarchive.build_apt_archive(base("badsig"), key=other)
    osarchive.build_apt_archive(base("nosig-file"), key=key, inrelease=False)
    osarchive.build_apt_archive(base("expired"), key=key,
                                valid_until="Thu, 01 Jan 2015 00:00:00 UTC")
    osarchive.build_apt_archive(base("valid"), key=key,
                                valid_until="Fri, 01 Jan 2100 00:00:00 UTC")
    osarchive.build_apt_archive(os.path.join(root, "ubuntu", "ubuntu"),
                                suite="jammy", components=("main", "universe"))
    osarchive.build_apt_archive(os.path.join(root, "ports", "ubuntu-ports"),
                                suite="focal", arch="arm64", key=key,
                                components=("main", "universe"))
    osarchive.build_apt_archive(base("trixie"), suite="trixie", key=key)
    osarchive.build_apt_archive(os.path.join(root, "noble", "ubuntu"),
                                suite="noble", key=key,
                                components=("main", "universe"))
    return built


def _rpm_repos(root, key, other):
    built = osarchive.build_rpm_repos([os.path.join(root, "centos")], key=key)
    osarchive.build_rpm_repos([os.path.join(root, "rocky", name, "x86_64", "os")
                               for name in ("BaseOS", "AppStream")],
                              compress="xz")
    osarchive.build_rpm_repos([os.path.join(root, "rocky9", name, "x86_64", "os")
                               for name in ("BaseOS", "AppStream")],
                              specs=osarchive.RPM_SPECS_EL9, key=key,
                              compress="xz")
    tampered = osarchive.build_rpm_repos(
        [os.path.join(root, "centos-tampered")], key=key)
    socat = [path for _, path, _ in tampered.values() if "socat" in path][0]
    with open(os.path.join(root, "centos-tampered", socat), "ab") as h:
        h.write(b"\0")
    return built


@pytest.fixture(scope="session")
def apt_archives(fx_workdir):
    """apt archives under PREFIX/debian/: good (signed by .key), unsigned,
    missing-dep (conntrack needs a library the archive lacks), tampered (a
    .deb that is not what Packages says), badsig (signed by another key),
    nosig-file (Release + Release.gpg, no InRelease), expired and valid
    (Valid-Until 2015 and 2100), trixie (debian-13, signed); ubuntu/ubuntu
    (jammy, unsigned), noble/ubuntu (noble, signed), ports/ubuntu-ports
    (focal arm64, signed).  .built: {package:
    (pool path, sha256)} of good."""
    server = _archive_server(os.path.join(fx_workdir, "apt"), _apt_archives)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def containerd_release(file_server):
    return osarchive.serve_containerd_release(file_server.root)


@pytest.fixture(scope="session")
def rpm_repos(fx_workdir):
    """centos/ (one repository, signed repomd.xml, gzip), rocky/ (BaseOS and
    AppStream, xz, unsigned), rocky9/ (the same, signed, EL9's iptables-nft
    in place of iptables and iptables-ebtables), centos-tampered/ (socat is not what primary.xml
    says).  .built: {file: (repository, path, sha256)} of centos."""
    server = _archive_server(os.path.join(fx_workdir, "rpm"), _rpm_repos)
    yield server
    server.stop()


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
        osarchive.mirror_args(apt_archives, "good")))
    assert rc == 0, err
    return output


@pytest.fixture(scope="session")
def centos_bundle(run_cli, bundle_args, rpm_repos, fx_workdir):
    folder = os.path.join(fx_workdir, "centos-bundle")
    os.makedirs(folder, exist_ok=True)
    output = os.path.join(folder, "b.tar")
    rc, out, err = run_cli("bundle", *(list(bundle_args) + [
        "--os", "centos-7", "--os-keyring", rpm_repos.key.keyring,
        "--output", output, "--cache-dir", os.path.join(folder, "cache"),
        "--file-mirror", "%s=%s/centos/" % (osarchive.CENTOS,
                                            rpm_repos.base_url)]))
    assert rc == 0, err
    return output
