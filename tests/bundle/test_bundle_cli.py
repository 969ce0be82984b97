"""CLI-level tests of `k8s_offline.py bundle / verify / images` against the
local fixtures (registries, file server, dockerd, standalone containerd).

The contract they check:
- bundle: one tar, one top directory k8s-offline-v1.16.0-linux-ARCH/, with
  k8s_offline.py, bundle.json, bin/, archives/, systemd/, manifests/ and
  images/ (an OCI layout plus a docker-archive manifest.json into blobs/).
- bundle.json "images": [{ref, source, manifest_digest, config_digest, layers}]
  where ref is the name kubeadm looks for (k8s.gcr.io/NAME:TAG, the flannel and
  extra images under their own names) and the digests are the registry's.
- failures: exit != 0, exactly one error line on stderr (no traceback), and
  nothing left at or beside the output path.
"""

import collections
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile

import pytest

from fixtures import K8S_VERSION, fileserver, images

import install_support as sup
from install_support import ko

VERSION = K8S_VERSION
SCRIPT = os.path.join(sup.REPO, "k8s_offline.py")
CLI_TIMEOUT = 600


def top_dir(arch="amd64"):
    return "k8s-offline-%s-linux-%s" % (VERSION, arch)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def hexof(digest):
    assert digest.startswith("sha256:") and re.fullmatch(r"[0-9a-f]{64}", digest[7:]), digest
    return digest[7:]


def layer_digests(entry):
    """bundle.json layers as digests (plain strings or {"digest": ...} objects)."""
    return [l if isinstance(l, str) else l["digest"] for l in entry["layers"]]


def one_error_line(rc, err):
    """The contract for a failure: rc != 0, no traceback, exactly one error line."""
    assert rc != 0, "expected a failure, got rc 0; stderr:\n" + err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if re.search(r"\berror\b", l, re.I)]
    assert len(lines) == 1, "expected exactly one error line on stderr, got:\n" + err
    last = [l for l in err.splitlines() if l.strip()][-1]
    assert last == lines[0], "the error line should be the last line:\n" + err
    print("error line:", lines[0])
    return lines[0]


class BundleTar:
    """A bundle tar read into memory (the test bundles are a few MB)."""

    def __init__(self, path, arch="amd64"):
        self.path = path
        self.top = top_dir(arch)
        with tarfile.open(path) as tf:
            self.members = tf.getmembers()
            self.data = {}
            for m in self.members:
                if m.isfile():
                    self.data[m.name] = tf.extractfile(m).read()
        self.meta = json.loads(self.file("bundle.json"))

    def file(self, rel):
        return self.data[self.top + "/" + rel]

    def has(self, rel):
        return (self.top + "/" + rel) in self.data

    def image(self, ref):
        found = [i for i in self.meta["images"] if i["ref"] == ref]
        assert len(found) == 1, "%s listed %d times in bundle.json: %s" % (
            ref, len(found), [i["ref"] for i in self.meta["images"]])
        return found[0]

    def blob(self, digest):
        return self.file("images/blobs/sha256/" + hexof(digest))


def run_bundle(run_cli, args, out, cache, env=None, timeout=CLI_TIMEOUT):
    return run_cli("bundle", *args, "--output", str(out), "--cache-dir", str(cache),
                   env=env, timeout=timeout)


def assert_ok(result):
    rc, out, err = result[:3]
    assert rc == 0, "bundle failed (rc %s)\nstdout:\n%s\nstderr:\n%s" % (rc, out, err)
    assert "Traceback" not in err


def expected_refs(test_images, arch="amd64"):
    """{bundle.json ref: (PushedImage, arch)} of a default bundle."""
    out = {}
    for img in test_images.for_bundle(arch):
        out[img.spec.kubeadm_ref] = img
    return out


# --------------------------------------------------------------------------
# one amd64 bundle shared by most tests

@pytest.fixture(scope="module")
def extra_refs(test_images):
    host = test_images.host
    return [test_images.get("workload/hello:1.0").ref(host),
            test_images.get("workload/hello-oci:1.0").ref(host)]


@pytest.fixture(scope="module")
def amd64_run(run_cli, bundle_args, extra_refs, tmp_path_factory, anon_registry, file_server):
    d = tmp_path_factory.mktemp("bundle-amd64")
    out, cache = d / "out" / "k8s.tar", d / "cache"
    out.parent.mkdir()
    mark = anon_registry.mark()
    nreq = len(file_server.count())
    args = list(bundle_args)
    for r in extra_refs:
        args += ["--extra-image", r]
    rc, stdout, stderr = run_bundle(run_cli, args, out, cache)
    return {"rc": rc, "stdout": stdout, "stderr": stderr, "out": out, "cache": cache,
            "args": args, "dir": d, "blob_gets": anon_registry.blob_gets(mark),
            "file_requests": file_server.count()[nreq:]}


@pytest.fixture(scope="module")
def amd64_bundle(amd64_run):
    assert_ok((amd64_run["rc"], amd64_run["stdout"], amd64_run["stderr"]))
    assert amd64_run["out"].is_file()
    return BundleTar(str(amd64_run["out"]))


@pytest.fixture(scope="module")
def extracted(amd64_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("extracted")
    with tarfile.open(amd64_bundle.path) as tf:
        for m in tf.getmembers():
            assert not m.issym() and not m.islnk() and ".." not in m.name.split("/")
        tf.extractall(str(d))
    return d / amd64_bundle.top


def test_bundle_layout(amd64_bundle, amd64_run):
    names = [m.name for m in amd64_bundle.members]
    assert len(names) == len(set(names)), "duplicate tar members"
    top = amd64_bundle.top
    assert all(n == top or n.startswith(top + "/") for n in names), names
    for rel in ("k8s_offline.py", "bundle.json", "bin/kubeadm", "bin/kubelet", "bin/kubectl",
                "archives/cni-plugins-amd64-v0.7.5.tgz",
                "archives/crictl-v1.16.1-linux-amd64.tar.gz",
                "systemd/kubelet.service", "systemd/10-kubeadm.conf",
                "manifests/kube-flannel.yml", "images/oci-layout", "images/index.json",
                "images/manifest.json"):
        assert amd64_bundle.has(rel), "missing %s/%s" % (top, rel)
    with open(SCRIPT, "rb") as f:
        assert amd64_bundle.file("k8s_offline.py") == f.read()
    # nothing but the bundle itself next to the output
    assert sorted(os.listdir(str(amd64_run["out"].parent))) == ["k8s.tar"]


def test_binaries_and_archives_are_the_downloaded_bytes(amd64_bundle, file_server):
    for base in fileserver.BINARIES:
        data = amd64_bundle.file("bin/" + base)
        assert sha256_hex(data) == file_server.sha256(base)
        mode = [m for m in amd64_bundle.members
                if m.name == amd64_bundle.top + "/bin/" + base][0].mode
        assert mode & 0o111, "bin/%s is not executable" % base
    for base in ("cni-plugins-amd64-v0.7.5.tgz", "crictl-v1.16.1-linux-amd64.tar.gz"):
        assert sha256_hex(amd64_bundle.file("archives/" + base)) == file_server.sha256(base)


def test_bundle_json_files_match_the_tar(amd64_bundle, file_server):
    files = amd64_bundle.meta["files"]
    for base in fileserver.BINARIES:
        assert files["bin/" + base]["sha256"] == file_server.sha256(base)
    assert files["archives/cni-plugins-amd64-v0.7.5.tgz"]["sha256"] == \
        file_server.sha256("cni-plugins-amd64-v0.7.5.tgz")
    for rel, info in files.items():
        data = amd64_bundle.file(rel)
        assert info["size"] == len(data), rel
        assert info["sha256"] == sha256_hex(data), rel


def test_verify_accepts_the_bundle(run_cli, amd64_bundle):
    rc, out, err = run_cli("verify", amd64_bundle.path, "--no-progress")
    assert rc == 0, err
    assert "Traceback" not in err


def _rewrite_tar(src, dst, name, change):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            if m.isfile():
                data = tin.extractfile(m).read()
                if m.name == name:
                    data = change(data)
                    m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
            else:
                tout.addfile(m)


@pytest.mark.parametrize("what", ["binary", "layer", "bundle.json"])
def test_verify_rejects_a_changed_byte(run_cli, amd64_bundle, tmp_path, test_images, what):
    top = amd64_bundle.top
    if what == "binary":
        name = top + "/bin/kubelet"
    elif what == "layer":
        name = top + "/images/blobs/sha256/" + hexof(test_images.base_layers["amd64"])
    else:
        name = top + "/bundle.json"

    def flip(data):
        i = len(data) // 2
        if what == "bundle.json":
            # change one digit of one recorded size: still valid JSON
            return re.sub(rb'"size": ?(\d)', lambda m: m.group(0)[:-1] +
                          str((int(m.group(1)) + 1) % 10).encode(), data, count=1)
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]

    bad = tmp_path / "tampered.tar"
    _rewrite_tar(amd64_bundle.path, str(bad), name, flip)
    rc, out, err = run_cli("verify", str(bad), "--no-progress")
    one_error_line(rc, err)


def test_bundle_json_images_match_the_registry(amd64_bundle, test_images, anon_registry,
                                               extra_refs):
    meta = amd64_bundle.meta
    want = expected_refs(test_images)
    refs = [i["ref"] for i in meta["images"]]
    assert sorted(refs) == sorted(list(want) + extra_refs)
    for ref, img in want.items():
        entry = amd64_bundle.image(ref)
        p = img.platforms["amd64"]
        assert entry["source"].endswith("/%s:%s" % (img.name, img.tag)), entry["source"]
        assert layer_digests(entry) == p.layers, ref
        if img.media_type in (images.SCHEMA1_SIGNED, images.SCHEMA1):
            hexof(entry["manifest_digest"])
            hexof(entry["config_digest"])
        else:
            assert entry["manifest_digest"] == p.manifest_digest, ref
            assert entry["config_digest"] == p.config_digest, ref
    for name, ref in zip(("workload/hello:1.0", "workload/hello-oci:1.0"), extra_refs):
        entry = amd64_bundle.image(ref)
        p = test_images.get(name).platforms["amd64"]
        assert entry["source"] == ref
        assert (entry["manifest_digest"], entry["config_digest"], layer_digests(entry)) == \
            (p.manifest_digest, p.config_digest, p.layers)


def test_control_plane_refs_are_what_kubeadm_looks_for(amd64_bundle):
    refs = {i["ref"] for i in amd64_bundle.meta["images"]}
    for name in ("kube-apiserver:" + VERSION,
                 "kube-controller-manager:" + VERSION,
                 "kube-scheduler:" + VERSION, "kube-proxy:" + VERSION,
                 "pause:3.1",
                 "etcd:3.3.15-0", "coredns:1.6.2"):
        assert "k8s.gcr.io/" + name in refs
    assert "quay.io/coreos/flannel:v0.11.0-amd64" in refs


def test_images_dir_is_an_oci_layout_and_a_docker_archive(amd64_bundle):
    b = amd64_bundle
    assert json.loads(b.file("images/oci-layout"))["imageLayoutVersion"] == "1.0.0"
    # every blob is named by its digest
    prefix = b.top + "/images/blobs/sha256/"
    blobs = {n[len(prefix):]: d for n, d in b.data.items() if n.startswith(prefix)}
    assert blobs
    for hexd, data in blobs.items():
        assert sha256_hex(data) == hexd
    index = json.loads(b.file("images/index.json"))
    index_digests = {m["digest"] for m in index["manifests"]}
    docker = json.loads(b.file("images/manifest.json"))
    by_tag = {}
    for entry in docker:
        for t in entry.get("RepoTags") or []:
            by_tag[t] = entry
    for img in b.meta["images"]:
        assert img["manifest_digest"] in index_digests, img["ref"]
        m = json.loads(b.blob(img["manifest_digest"]))
        assert m["config"]["digest"] == img["config_digest"]
        assert [l["digest"] for l in m["layers"]] == layer_digests(img)
        cfg = json.loads(b.blob(img["config_digest"]))
        assert cfg["architecture"] == "amd64"
        assert len(cfg["rootfs"]["diff_ids"]) == len(m["layers"])
        d = by_tag[img["ref"]]
        assert d["Config"] == "blobs/sha256/" + hexof(img["config_digest"])
        assert d["Layers"] == ["blobs/sha256/" + hexof(x) for x in layer_digests(img)]


def test_shared_layers_are_stored_once(amd64_bundle, test_images):
    base = test_images.base_layers["amd64"]
    name = amd64_bundle.top + "/images/blobs/sha256/" + hexof(base)
    assert [m.name for m in amd64_bundle.members].count(name) == 1
    users = [i["ref"] for i in amd64_bundle.meta["images"] if base in layer_digests(i)]
    assert len(users) == len(amd64_bundle.meta["images"])  # every amd64 image uses it
    docker = json.loads(amd64_bundle.file("images/manifest.json"))
    count = collections.Counter(l for e in docker for l in e["Layers"])
    assert count["blobs/sha256/" + hexof(base)] == len(docker)


def test_shared_layers_are_downloaded_once(amd64_run, amd64_bundle, test_images):
    counts = collections.Counter(amd64_run["blob_gets"])
    assert counts, "no blob download seen in the registry's access log"
    dup = {d: n for d, n in counts.items() if n > 1}
    assert not dup, "blobs fetched more than once: %s" % dup
    assert counts[test_images.base_layers["amd64"]] == 1


def _docker(*args, timeout=300, check=True):
    r = subprocess.run(["docker"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, "docker %s failed: %s" % (" ".join(args), r.stderr)
    return r


def _docker_image_id(ref):
    r = _docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def test_docker_load_and_run(dockerd, amd64_bundle, extracted, test_images):
    refs = [i["ref"] for i in amd64_bundle.meta["images"]]
    before = {r: _docker_image_id(r) for r in refs}
    tar = subprocess.Popen(["tar", "-C", str(extracted / "images"), "-c", "."],
                           stdout=subprocess.PIPE)
    try:
        load = subprocess.run(["docker", "load"], stdin=tar.stdout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        tar.stdout.close()
        tar.wait(60)
    try:
        assert load.returncode == 0, load.stderr
        for img in amd64_bundle.meta["images"]:
            assert _docker_image_id(img["ref"]) == img["config_digest"], img["ref"]
        want = expected_refs(test_images)
        for ref in ("k8s.gcr.io/kube-apiserver:" + VERSION, "k8s.gcr.io/pause:3.1",
                    "quay.io/coreos/flannel:v0.11.0-amd64"):
            r = _docker("run", "--rm", "--network", "none", ref, "sh", "-c", "cat /msg")
            assert r.stdout == want[ref].platforms["amd64"].msg
    finally:
        for ref, old in before.items():
            if old is None:
                _docker("rmi", ref, check=False)


def test_ctr_import(containerd, amd64_bundle, extracted, tmp_path):
    archive = tmp_path / "images.tar"
    subprocess.run(["tar", "-C", str(extracted / "images"), "-cf", str(archive), "."],
                   check=True, timeout=300)
    r = containerd.ctr("-n", "k8s.io", "images", "import", str(archive))
    assert r.returncode == 0, r.stderr
    ls = containerd.ctr("-n", "k8s.io", "images", "ls")
    assert ls.returncode == 0, ls.stderr
    listed = {}
    for line in ls.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3:
            listed[cols[0]] = cols[2]
    for img in amd64_bundle.meta["images"]:
        assert img["ref"] in listed, "%s not imported: %s" % (img["ref"], sorted(listed))
        if "flannel" not in img["ref"]:
            assert listed[img["ref"]] == img["manifest_digest"], img["ref"]


def test_second_run_fetches_no_blob_again(run_cli, amd64_run, amd64_bundle, anon_registry,
                                          file_server, tmp_path):
    mark = anon_registry.mark()
    nreq = len(file_server.count())
    out = tmp_path / "again.tar"
    result = run_bundle(run_cli, amd64_run["args"], out, amd64_run["cache"])
    assert_ok(result)
    assert anon_registry.blob_gets(mark) == [], "blobs fetched again with a warm cache"
    again = BundleTar(str(out))
    assert again.meta["images"] == amd64_bundle.meta["images"]
    assert again.meta["files"] == amd64_bundle.meta["files"]
    big = {urlpath for urlpath in
           ("/" + u.split("://", 1)[1] for u in fileserver.upstream_urls("amd64").values())}
    refetched = [r for r in file_server.count()[nreq:]
                 if r[0] == "GET" and r[1] in big and r[3] in (200, 206)]
    assert refetched == [], "files downloaded again with a warm cache: %s" % refetched


def test_arm64_bundle_picks_the_arm64_manifests(run_cli, make_bundle_args, test_images,
                                                file_server, tmp_path):
    out = tmp_path / "arm64.tar"
    assert_ok(run_bundle(run_cli, make_bundle_args(arch="arm64"), out, tmp_path / "cache"))
    b = BundleTar(str(out), arch="arm64")
    want = expected_refs(test_images, "arm64")
    assert sorted(i["ref"] for i in b.meta["images"]) == sorted(want)
    assert "quay.io/coreos/flannel:v0.11.0-arm64" in want
    for ref, img in want.items():
        entry = b.image(ref)
        p = img.platforms["arm64"]
        assert layer_digests(entry) == p.layers, ref
        assert p.layers[0] == test_images.base_layers["arm64"]
        if img.is_list:
            assert entry["manifest_digest"] == p.manifest_digest
            assert entry["manifest_digest"] != img.platforms["amd64"].manifest_digest
            assert entry["config_digest"] == p.config_digest
        cfg = json.loads(b.blob(entry["config_digest"]))
        assert cfg["architecture"] == "arm64"
    assert sha256_hex(b.file("bin/kubeadm")) == file_server.sha256("kubeadm", "arm64")
    assert b.has("archives/cni-plugins-arm64-v0.7.5.tgz")
    rc, _, err = run_cli("verify", str(out), "--no-progress")
    assert rc == 0, err


# --------------------------------------------------------------------------
# authentication

def test_bundle_through_token_auth(run_cli, make_bundle_args, make_docker_config,
                                   token_registry, token_server, test_images, tmp_path):
    out = tmp_path / "token.tar"
    before = len(token_server.requests_seen)
    env = {"DOCKER_CONFIG": make_docker_config(token_registry.host)}
    args = make_bundle_args(token_registry.host) + ["--jobs", "1"]
    assert_ok(run_bundle(run_cli, args, out, tmp_path / "cache", env=env))
    seen = token_server.requests_seen[before:]
    assert seen and all(s[1] == "tester" and s[2] == 200 for s in seen), seen
    b = BundleTar(str(out))
    api = b.image("k8s.gcr.io/kube-apiserver:" + VERSION)
    assert api["manifest_digest"] == \
        test_images.get("kube-apiserver:" + VERSION).platforms["amd64"].manifest_digest


def test_bundle_through_basic_auth(run_cli, make_bundle_args, make_docker_config,
                                   basic_registry, test_images, tmp_path):
    out = tmp_path / "basic.tar"
    env = {"DOCKER_CONFIG": make_docker_config(basic_registry.host)}
    assert_ok(run_bundle(run_cli, make_bundle_args(basic_registry.host), out,
                         tmp_path / "cache", env=env))
    b = BundleTar(str(out))
    assert b.image("k8s.gcr.io/etcd:3.3.15-0")["config_digest"] == \
        test_images.get("etcd:3.3.15-0").platforms["amd64"].config_digest


# --------------------------------------------------------------------------
# the images command

def test_images_default_list(run_cli):
    rc, out, err = run_cli("images")
    assert rc == 0, err
    assert sorted(out.split()) == sorted([
        "registry.k8s.io/kube-apiserver:v1.16.0",
        "registry.k8s.io/kube-controller-manager:v1.16.0",
        "registry.k8s.io/kube-scheduler:v1.16.0",
        "registry.k8s.io/kube-proxy:v1.16.0",
        "registry.k8s.io/pause:3.1",
        "registry.k8s.io/etcd:3.3.15-0",
        "registry.k8s.io/coredns:1.6.2",
        "quay.io/coreos/flannel:v0.11.0-amd64",
    ])


def test_images_with_repository_and_arch(run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", "v1.16.0",
                           "--image-repository", "127.0.0.1:5000", "--arch", "arm64")
    assert rc == 0, err
    lines = out.split()
    assert "127.0.0.1:5000/kube-apiserver:v1.16.0" in lines
    assert "127.0.0.1:5000/coredns:1.6.2" in lines
    assert "quay.io/coreos/flannel:v0.11.0-arm64" in lines
    assert len(lines) == 8


def test_images_unknown_version(run_cli):
    rc, out, err = run_cli("images", "--kubernetes-version", "v9.9.9")
    assert "v9.9.9" in one_error_line(rc, err)


# --------------------------------------------------------------------------
# failures: exit != 0, one error line, no output

def _fail_case(run_cli, tmp_path, args, env=None, output=None, timeout=CLI_TIMEOUT):
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    out = output or (outdir / "bundle.tar")
    rc, stdout, stderr = run_bundle(run_cli, args, out, tmp_path / "cache", env=env,
                                    timeout=timeout)
    line = one_error_line(rc, stderr)
    assert not os.path.lexists(str(out)), "a file was left at the output path"
    leftovers = os.listdir(str(outdir))
    assert leftovers == [], "files left beside the output: %s" % leftovers
    return line


def test_fail_unknown_version(run_cli, bundle_args, tmp_path):
    line = _fail_case(run_cli, tmp_path, bundle_args + ["--kubernetes-version", "v9.9.9"])
    assert "v9.9.9" in line


def test_fail_unknown_arch(run_cli, bundle_args, tmp_path):
    line = _fail_case(run_cli, tmp_path, bundle_args + ["--arch", "sparc64"])
    assert "sparc64" in line


def test_fail_unreachable_registry(run_cli, file_server, make_bundle_args, tmp_path):
    args = make_bundle_args("127.0.0.1:1")
    line = _fail_case(run_cli, tmp_path, args)
    assert "127.0.0.1:1" in line


@pytest.mark.parametrize("kind", ["token", "basic"])
def test_fail_wrong_credentials(run_cli, make_bundle_args, make_docker_config, token_registry,
                                basic_registry, tmp_path, kind):
    reg = token_registry if kind == "token" else basic_registry
    env = {"DOCKER_CONFIG": make_docker_config(reg.host, password="not-the-password")}
    line = _fail_case(run_cli, tmp_path, make_bundle_args(reg.host), env=env)
    assert re.search(r"credential|unauthori[sz]ed|denied|401|login|password", line, re.I), line
    assert "not-the-password" not in line


def test_fail_no_credentials(run_cli, make_bundle_args, token_registry, tmp_path):
    line = _fail_case(run_cli, tmp_path, make_bundle_args(token_registry.host))
    assert re.search(r"credential|unauthori[sz]ed|denied|401|login", line, re.I), line


def test_fail_missing_extra_image(run_cli, bundle_args, test_images, tmp_path):
    ref = "%s/workload/does-not-exist:1.0" % test_images.host
    line = _fail_case(run_cli, tmp_path, bundle_args + ["--extra-image", ref])
    assert "workload/does-not-exist" in line


@pytest.mark.parametrize("name", ["kubeadm", "cni-plugins-amd64-v0.7.5.tgz"])
def test_fail_checksum_mismatch(run_cli, make_bundle_args, tmp_path, name):
    args = make_bundle_args(checksum_override={name: "ab" * 32})
    line = _fail_case(run_cli, tmp_path, args)
    assert name in line


def test_fail_output_parent_is_a_file(run_cli, bundle_args, tmp_path):
    blocker = tmp_path / "out" / "not-a-dir"
    blocker.parent.mkdir()
    blocker.write_text("x")
    out = blocker / "bundle.tar"
    rc, _, err = run_bundle(run_cli, bundle_args, out, tmp_path / "cache")
    line = one_error_line(rc, err)
    assert "not-a-dir" in line
    assert blocker.read_text() == "x"
    assert os.listdir(str(blocker.parent)) == ["not-a-dir"]


def test_fail_output_dir_unwritable(run_cli, bundle_args, tmp_path):
    # root may write anywhere on a normal file system; /proc refuses new files
    out = "/proc/k8s-offline-test-bundle.tar"
    rc, _, err = run_bundle(run_cli, bundle_args, out, tmp_path / "cache")
    line = one_error_line(rc, err)
    assert "/proc" in line
    assert not os.path.lexists(out)


# -- bundle runs the hosts' checks before it writes (issue 22) -------------------

def test_an_image_list_longer_than_verify_takes_is_refused_first(run_cli,
                                                                  tmp_path):
    """600 images: verify on the host would refuse the bundle; bundle
    refuses it before the first download."""
    listing = tmp_path / "images.txt"
    listing.write_text("".join("registry.local:5000/app%d:1\n" % number
                               for number in range(600)))
    rc, out, err = run_cli("bundle", "--image-list", str(listing), "--output",
                           str(tmp_path / "out" / "b.tar"), "--cache-dir",
                           str(tmp_path / "cache"), "--no-progress",
                           timeout=120)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "at most %d images" % ko.MAX_BUNDLE_IMAGES in lines[0], err
    out_dir = str(tmp_path / "out")
    assert not os.path.exists(out_dir) or os.listdir(out_dir) == []


def test_a_bundle_json_verify_would_refuse_is_never_written(tmp_path):
    """A manifest served as text/html passes the registry client but not
    verify's schema: bundle checks bundle.json as the hosts will, first."""
    bundle = ko.Bundle(sup.make_bundle(str(tmp_path)))
    meta = json.loads(json.dumps(bundle.meta))
    bundle.close()
    ko.require_bundle_before_writing(meta)
    meta["images"][0]["manifest_media_type"] = "text/html"
    with pytest.raises(ko.UserError) as caught:
        ko.require_bundle_before_writing(meta)
    assert "images[0].manifest_media_type" in str(caught.value)
    assert "verify on the hosts would refuse" in str(caught.value)
