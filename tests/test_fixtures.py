"""The fixtures themselves work (no k8s_offline.py needed)."""

import base64
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import urllib.parse

import requests

from fixtures import K8S_VERSION, images
from fixtures.images import ACCEPT_ALL

TIMEOUT = 30


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_member(gz_blob, name):
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(gz_blob))) as tf:
        f = tf.extractfile(name)
        return f.read() if f else None


def parse_challenge(header):
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


# ---------------------------------------------------------------- registries

def test_anonymous_registry_serves_v2_and_catalog(anon_registry, test_images):
    r = requests.get(anon_registry.url + "/v2/", timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    repos = requests.get(anon_registry.url + "/v2/_catalog", timeout=TIMEOUT).json()
    assert set(repos["repositories"]) >= {s.name for s in images.IMAGE_SPECS}


def test_every_manifest_and_blob_matches_its_digest(anon_registry, test_images):
    s = requests.Session()
    for img in test_images.images.values():
        base = "%s/v2/%s" % (anon_registry.url, img.name)
        r = s.get("%s/manifests/%s" % (base, img.tag), headers={"Accept": ACCEPT_ALL},
                  timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == img.digest
        if img.media_type != images.SCHEMA1_SIGNED:
            assert sha(r.content) == img.digest
        for p in img.platforms.values():
            blobs = list(p.layers) + ([p.config_digest] if p.config_digest else [])
            for d in blobs:
                b = s.get("%s/blobs/%s" % (base, d), timeout=TIMEOUT)
                assert b.status_code == 200 and sha(b.content) == d
            if p.config_digest:
                cfg = s.get("%s/blobs/%s" % (base, p.config_digest), timeout=TIMEOUT).json()
                assert cfg["architecture"] == p.arch
                assert len(cfg["rootfs"]["diff_ids"]) == len(p.layers)
            top = s.get("%s/blobs/%s" % (base, p.layers[-1]), timeout=TIMEOUT).content
            assert read_member(top, "msg").decode() == p.msg


def test_manifest_list_has_two_platforms_with_different_content(anon_registry, test_images):
    for name in ("kube-apiserver:" + K8S_VERSION, "pause:3.1"):
        img = test_images.get(name)
        r = requests.get("%s/v2/%s/manifests/%s" % (anon_registry.url, img.name, img.tag),
                         headers={"Accept": ACCEPT_ALL}, timeout=TIMEOUT)
        body = r.json()
        assert r.headers["Content-Type"] in (images.DOCKER_LIST, images.OCI_INDEX)
        plats = {m["platform"]["architecture"]: m["digest"] for m in body["manifests"]}
        assert set(plats) == {"amd64", "arm64"}
        assert plats["amd64"] != plats["arm64"]
        amd, arm = img.platforms["amd64"], img.platforms["arm64"]
        assert (amd.manifest_digest, arm.manifest_digest) == (plats["amd64"], plats["arm64"])
        assert amd.msg != arm.msg and "amd64" in amd.msg and "arm64" in arm.msg
        assert amd.layers[0] == test_images.base_layers["amd64"]
        assert arm.layers[0] == test_images.base_layers["arm64"]
    assert test_images.get("kube-apiserver:" + K8S_VERSION).media_type == images.DOCKER_LIST
    assert test_images.get("pause:3.1").media_type == images.OCI_INDEX


def test_flannel_is_schema1_with_throwaway_entries(anon_registry, test_images):
    for arch in ("amd64", "arm64"):
        img = test_images.get("coreos/flannel:v0.11.0-" + arch)
        r = requests.get("%s/v2/coreos/flannel/manifests/v0.11.0-%s" % (anon_registry.url, arch),
                         headers={"Accept": ACCEPT_ALL}, timeout=TIMEOUT)
        assert r.headers["Content-Type"] == images.SCHEMA1_SIGNED
        m = r.json()
        assert m["schemaVersion"] == 1 and m["architecture"] == arch
        assert "signatures" in m
        v1 = [json.loads(h["v1Compatibility"]) for h in m["history"]]
        assert any(h.get("throwaway") for h in v1)
        assert img.platforms[arch].layers[0] == test_images.base_layers[arch]
        assert img.platforms[arch].config_digest is None


def test_control_plane_images_share_the_busybox_base_layer(anon_registry, test_images):
    base = test_images.base_layers["amd64"]
    for img in test_images.for_bundle("amd64"):
        assert img.platforms["amd64"].layers[0] == base
    blob = requests.get("%s/v2/pause/blobs/%s" % (anon_registry.url, base),
                        timeout=TIMEOUT).content
    with open(images.BUSYBOX, "rb") as f:
        assert read_member(blob, "bin/busybox") == f.read()
    # the per-image layers are all different
    tops = [i.platforms["amd64"].layers[-1] for i in test_images.images.values()
            if "amd64" in i.platforms]
    assert len(tops) == len(set(tops))


def test_registry_access_log_counts_blob_downloads(anon_registry, test_images):
    mark = anon_registry.mark()
    d = test_images.base_layers["amd64"]
    requests.get("%s/v2/etcd/blobs/%s" % (anon_registry.url, d), timeout=TIMEOUT)
    requests.head("%s/v2/etcd/blobs/%s" % (anon_registry.url, d), timeout=TIMEOUT)
    assert anon_registry.blob_gets(mark) == [d]


def test_basic_registry_rejects_bad_password(basic_registry, test_images):
    url = basic_registry.url + "/v2/"
    r = requests.get(url, timeout=TIMEOUT)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert requests.get(url, auth=("tester", "wrong"), timeout=TIMEOUT).status_code == 401
    assert requests.get(url, auth=("nobody", "s3cret-Pa55"), timeout=TIMEOUT).status_code == 401
    ok = requests.get(basic_registry.url + "/v2/kube-proxy/manifests/" + K8S_VERSION,
                      auth=("tester", "s3cret-Pa55"), headers={"Accept": ACCEPT_ALL},
                      timeout=TIMEOUT)
    assert ok.status_code == 200
    assert ok.headers["Docker-Content-Digest"] == test_images.get("kube-proxy:" + K8S_VERSION).digest


def _token(token_server, challenge_params, auth):
    q = {"service": challenge_params["service"]}
    if "scope" in challenge_params:
        q["scope"] = challenge_params["scope"]
    return requests.get(challenge_params["realm"] + "?" + urllib.parse.urlencode(q),
                        auth=auth, timeout=TIMEOUT)


def test_token_registry_challenges_and_accepts_token(token_registry, token_server, test_images):
    img = test_images.get("kube-apiserver:" + K8S_VERSION)
    url = "%s/v2/%s/manifests/%s" % (token_registry.url, img.name, img.tag)
    r = requests.get(url, headers={"Accept": ACCEPT_ALL}, timeout=TIMEOUT)
    assert r.status_code == 401
    scheme, params = parse_challenge(r.headers["WWW-Authenticate"])
    assert scheme == "Bearer"
    assert params["realm"] == token_server.realm
    assert params["realm"].startswith("http://127.0.0.1:")
    assert params["service"] == token_server.service
    assert params["scope"] == "repository:kube-apiserver:pull"
    # no / wrong credentials at the token server
    assert _token(token_server, params, None).status_code == 401
    assert _token(token_server, params, ("tester", "nope")).status_code == 401
    t = _token(token_server, params, ("tester", "s3cret-Pa55"))
    assert t.status_code == 200
    body = t.json()
    assert body["token"] == body["access_token"]
    ok = requests.get(url, headers={"Accept": ACCEPT_ALL,
                                    "Authorization": "Bearer " + body["token"]},
                      timeout=TIMEOUT)
    assert ok.status_code == 200, ok.text
    assert ok.headers["Docker-Content-Digest"] == img.digest
    # the token is scoped: another repository is refused
    other = requests.get("%s/v2/etcd/manifests/3.3.15-0" % token_registry.url,
                         headers={"Authorization": "Bearer " + body["token"]},
                         timeout=TIMEOUT)
    assert other.status_code == 401
    # a forged token is refused
    head, claims, sig = body["token"].split(".")
    forged = head + "." + claims + "." + base64.urlsafe_b64encode(b"x" * 256).decode().rstrip("=")
    bad = requests.get(url, headers={"Authorization": "Bearer " + forged}, timeout=TIMEOUT)
    assert bad.status_code == 401


# ---------------------------------------------------------------- file server

def test_file_server_serves_tree_and_sha256(file_server):
    for arch in ("amd64", "arm64"):
        for base, url in __import__("fixtures.fileserver", fromlist=["x"]).upstream_urls(arch).items():
            r = requests.get(file_server.url_for(url), timeout=TIMEOUT)
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == file_server.sha256(base, arch)
            if base in ("kubeadm", "kubelet", "kubectl"):
                s = requests.get(file_server.url_for(url) + ".sha256", timeout=TIMEOUT)
                assert s.text == file_server.sha256(base, arch)
    kubeadm = file_server.url_for(
        "https://dl.k8s.io/release/%s/bin/linux/amd64/kubeadm" % K8S_VERSION)
    assert kubeadm.startswith("http://127.0.0.1:")
    assert requests.get(file_server.base_url + "/dl.k8s.io/nope", timeout=TIMEOUT).status_code == 404
    assert requests.get(file_server.base_url + "/../etc/passwd", timeout=TIMEOUT).status_code == 404


def test_file_server_honours_range(file_server):
    url = file_server.url_for(
        "https://dl.k8s.io/release/%s/bin/linux/amd64/kubelet" % K8S_VERSION)
    with open(file_server.path("kubelet"), "rb") as f:
        data = f.read()
    size = len(data)
    r = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=TIMEOUT)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == "bytes 100-199/%d" % size
    assert r.content == data[100:200]
    r = requests.get(url, headers={"Range": "bytes=%d-" % (size - 1000)}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == data[-1000:]
    r = requests.get(url, headers={"Range": "bytes=-10"}, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == data[-10:]
    r = requests.get(url, headers={"Range": "bytes=%d-" % size}, timeout=TIMEOUT)
    assert r.status_code == 416
    # resume: first half + ranged second half == whole file
    first = requests.get(url, headers={"Range": "bytes=0-%d" % (size // 2 - 1)}, timeout=TIMEOUT)
    rest = requests.get(url, headers={"Range": "bytes=%d-" % (size // 2)}, timeout=TIMEOUT)
    assert first.content + rest.content == data
    assert ("GET", urllib.parse.urlsplit(url).path, "bytes=100-199", 206) in file_server.count()


def test_stand_in_files_are_usable(file_server, tmp_path):
    out = subprocess.run(["sh", file_server.path("kubeadm")], stdout=subprocess.PIPE,
                         text=True, timeout=TIMEOUT)
    assert out.returncode == 0 and "kubeadm %s linux/amd64" % K8S_VERSION in out.stdout
    with tarfile.open(file_server.path("cni-plugins-amd64-v0.7.5.tgz")) as tf:
        assert {"./flannel", "./bridge", "./host-local", "./portmap", "./loopback"} <= set(tf.getnames())
    with tarfile.open(file_server.path("crictl-v1.16.1-linux-amd64.tar.gz")) as tf:
        assert tf.getnames() == ["crictl"]


def test_checksum_file_format(file_server, tmp_path):
    p = file_server.checksum_file(str(tmp_path / "sums"), override={"kubectl": "0" * 64})
    lines = open(p).read().splitlines()
    assert len(lines) == 5
    entries = dict(reversed(l.split("  ", 1)) for l in lines)
    assert entries["kubeadm"] == file_server.sha256("kubeadm")
    assert entries["kubectl"] == "0" * 64
    assert entries["cni-plugins-amd64-v0.7.5.tgz"] == file_server.sha256("cni-plugins-amd64-v0.7.5.tgz")
    # the same lines `sha256sum -c` accepts
    sums = tmp_path / "sums-ok"
    file_server.checksum_file(str(sums))
    files_dir = os.path.dirname(file_server.path("kubeadm"))
    r = subprocess.run(["sha256sum", "-c", str(sums), "--ignore-missing"], cwd=files_dir,
                       stdout=subprocess.PIPE, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and r.stdout.count(": OK") == 3


# ---------------------------------------------------------------- helpers

def test_bundle_args_point_only_at_loopback(bundle_args, make_bundle_args, anon_registry):
    text = " ".join(bundle_args)
    for flag in ("--image-repository", "--registry-mirror", "--insecure-registry",
                 "--file-mirror", "--checksum-file", "--no-progress"):
        assert flag in bundle_args
    assert "quay.io=%s" % anon_registry.host in bundle_args
    hosts = re.findall(r"(?:https?://|=|^|\s)((?:\d+\.){3}\d+)", text)
    assert hosts and set(hosts) == {"127.0.0.1"}
    arm = make_bundle_args(arch="arm64")
    assert arm[arm.index("--arch") + 1] == "arm64"
    ck = open(arm[arm.index("--checksum-file") + 1]).read()
    assert "cni-plugins-arm64-v0.7.5.tgz" in ck


def test_run_cli_helper(run_cli, tmp_path, monkeypatch):
    import conftest
    monkeypatch.setattr(conftest, "SCRIPT", "-c")
    # run_cli passes argv to `python SCRIPT ...`; with SCRIPT "-c" the first arg is code
    rc, out, err = run_cli("import os,sys; print(os.environ['DOCKER_CONFIG']); "
                           "sys.stderr.write('e\\n'); sys.exit(3)")
    assert rc == 3 and os.path.isdir(out.strip()) and err == "e\n"


def test_make_docker_config(make_docker_config, basic_registry):
    d = make_docker_config(basic_registry.host)
    cfg = json.load(open(os.path.join(d, "config.json")))
    user, pw = base64.b64decode(cfg["auths"][basic_registry.host]["auth"]).decode().split(":", 1)
    r = requests.get(basic_registry.url + "/v2/", auth=(user, pw), timeout=TIMEOUT)
    assert r.status_code == 200


def _run_hello(tag, network, img):
    """`cat /msg` in the loaded hello image on `network`: it answers the image's message."""
    r = subprocess.run(["docker", "run", "--rm", "--network", network, tag, "sh", "-c", "cat /msg"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == img.platforms["amd64"].msg


def test_dockerd_runs_a_test_image(dockerd, anon_registry, test_images):
    tag = "k8s-offline-fixture-test/hello:1.0"
    img = _hello_in_dockerd(anon_registry, test_images, tag)
    try:
        _run_hello(tag, "none", img)
        iid = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag],
                             stdout=subprocess.PIPE, text=True, timeout=60).stdout.strip()
        assert iid == img.platforms["amd64"].config_digest
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)


def test_containerd_imports_an_archive(containerd, anon_registry, test_images, tmp_path):
    img = test_images.get("workload/hello-oci:1.0")
    archive = str(tmp_path / "hello.tar")
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    "docker://" + img.ref(anon_registry.host),
                    "docker-archive:%s:k8s-offline-fixture/hello:1.0" % archive],
                   check=True, timeout=120)
    r = containerd.ctr("-n", "k8s.io", "images", "import", archive)
    assert r.returncode == 0, r.stderr
    ls = containerd.ctr("-n", "k8s.io", "images", "ls", "-q")
    assert "docker.io/k8s-offline-fixture/hello:1.0" in ls.stdout.split()


def _hello_in_dockerd(anon_registry, test_images, tag):
    img = test_images.get("workload/hello:1.0")
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
                    "docker://" + img.ref(anon_registry.host), "docker-daemon:" + tag],
                   check=True, timeout=120)
    return img


def _link_exists(name):
    return subprocess.run(["ip", "link", "show", name], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def test_a_fresh_dockerd_leaves_the_host_bridge_working(dockerd, anon_registry, test_images):
    """A fresh dockerd (the air-gapped host of test_local_images) must not touch the host's
    network: one started with --bridge none in the host's namespace deleted docker0, and every
    later `docker build` with a RUN step (the lab's node images) failed on a fresh machine."""
    from fixtures import daemons
    assert _link_exists("docker0"), "the host's docker0 is missing before the test: restart dockerd"
    folder = "/tmp/k8so-fd-%s" % os.urandom(4).hex()
    os.makedirs(folder)
    daemons.FreshDockerd(folder).start().cleanup()
    assert _link_exists("docker0"), "a fresh dockerd deleted the host's docker0"
    tag = "k8s-offline-fixture-test/hello-bridge:1.0"
    img = _hello_in_dockerd(anon_registry, test_images, tag)
    try:
        _run_hello(tag, "bridge", img)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
