"""A stick that cannot be turned against the host (issue 9): hostile or
damaged bundle.json fields, folder layouts, flags and join files.  Every
case: exit status 2, one line, no "unexpected", no traceback, the --root
tree byte-identical, nothing written outside it, and no run that hangs."""

import contextlib
import json
import os
import signal
import stat
import sys

import pytest

import install_support as sup
from install_support import ko

@contextlib.contextmanager
def deadline(seconds=60):
    """A hang is a failure, not a stuck suite."""
    def expired(signum, frame):
        raise AssertionError("the run hung for %d s" % seconds)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def assert_refused(capsys, tmp_path, argv, expected, stdin=None):
    """Run argv: rc 2, one error line holding expected, nothing changed in
    tmp_path (the --root tree, the bundle, the join file) or on the real
    host; return the line."""
    before, real = sup.tree(str(tmp_path)), sup.real_state()
    with deadline():
        code = ko.main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0], err
    assert "error: unexpected" not in err and "Traceback" not in err, err
    assert "Logging error" not in err
    assert expected in errors[0], errors[0]
    assert sup.tree(str(tmp_path)) == before, "the tree changed"
    assert sup.real_state() == real, "the real host changed"
    return errors[0]


def rewrite_meta(bundle, change=None, raw=None):
    """Apply change(meta) to bundle.json and write a matching .sha256, as a
    hostile stick would: the hash checks pass, the content is wrong."""
    path = os.path.join(bundle, ko.BUNDLE_JSON)
    if raw is None:
        with open(path) as handle:
            meta = json.load(handle)
        change(meta)
        raw = json.dumps(meta).encode()
    with open(path, "wb") as handle:
        handle.write(raw)
    with open(os.path.join(bundle, ko.BUNDLE_JSON_SHA), "wb") as handle:
        handle.write(ko.bundle_json_sha_line(raw))


def _set(path, value):
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _delete(key):
    return lambda meta: meta.pop(key)


def _manifest_is_a_layer(meta):
    meta["images"][0]["manifest_digest"] = meta["images"][0]["layers"][0]


def _rename_file(old, new):
    def change(meta):
        meta["files"][new] = meta["files"].pop(old)
    return change


def _binary_key(meta):
    meta["binaries"]["../../../../tmp/x"] = "bin/kubelet"


DEEP = b'{"format": 1, "versions": ' + b"[" * 200000 + b"]" * 200000 + b"}"

# (id, change to bundle.json, text expected in the error line)
META_CASES = [
    ("size-as-string", _set(("files", "bin/kubelet", "size"), "12"),
     'files["bin/kubelet"].size'),
    ("size-negative", _set(("files", "bin/kubelet", "size"), -1),
     'files["bin/kubelet"].size'),
    ("sha-uppercase", _set(("files", "bin/kubelet", "sha256"), "AB" * 32),
     'files["bin/kubelet"].sha256'),
    ("missing-files", _delete("files"), "has no files"),
    ("missing-images", _delete("images"), "has no images"),
    ("list-for-dict", _set(("binaries",), ["bin/kubeadm"]), "binaries is list"),
    ("images-as-dict", _set(("images",), {"pause": 1}), "images is dict"),
    ("image-not-an-object", _set(("images", 0), "pause"), "images[0] is str"),
    ("layers-a-string", _set(("images", 0, "layers"), "sha256:" + "a" * 64),
     "images[0].layers"),
    ("manifest-is-a-layer", _manifest_is_a_layer, "images/blobs/sha256/"),
    ("version-banana", _set(("kubernetes_version",), "banana"),
     "kubernetes_version"),
    ("version-unsupported", _set(("kubernetes_version",), "v1.99.0"),
     "kubernetes_version"),
    ("arch-mips", _set(("arch",), u"mips\u00e9"), "arch"),
    ("format-true", _set(("format",), True), "format"),
    ("format-string", _set(("format",), "1"), "format"),
    ("binary-key-traversal", _binary_key, "binaries has the name"),
    ("binary-path-elsewhere", _set(("binaries", "kubelet"), "bin/kubectl"),
     "binaries.kubelet"),
    ("file-name-traversal", _rename_file("bin/kubelet", "bin/../../x"),
     "files has the name"),
    ("file-name-newline", _rename_file("bin/kubelet", "bin/kubelet\n"),
     "files has the name"),
    ("image-ref-dash", _set(("images", 0, "ref"), "-evil.io/x:1"),
     "images[0].ref"),
    ("image-tag-newline", _set(("images", 0, "tag"), sup.K8S_VERSION + "\n"),
     "images[0].tag"),
    ("image-repository-quote", _set(("images", 0, "repository"),
                                    'pause"\nBinaryName = "/tmp/evil'),
     "images[0].repository"),
    ("image-digest-short", _set(("images", 0, "config_digest"), "sha256:12"),
     "images[0].config_digest"),
    ("unknown-field", _set(("evil",), 1), "unknown field"),
    ("name-mismatch", _set(("name",), "k8s-offline-%s-linux-arm64"
                                  % sup.K8S_VERSION),
     "field name"),
    ("flannel-unlisted", _set(("flannel_manifest",), "manifests/other.yml"),
     "manifests/other.yml"),
    ("unit-key-unknown", _set(("systemd", "evil.service"),
                              "systemd/kubelet.service"), "systemd has the name"),
    # issue 22: more shapes, and the images every cluster needs
    ("images-over-the-cap", lambda meta: meta.update(
        images=meta["images"] * 60), "images is list, expected a list of at"),
    ("size-a-float", _set(("files", "bin/kubelet", "size"), 1.5),
     'files["bin/kubelet"].size'),
    ("size-a-bool", _set(("files", "bin/kubelet", "size"), True),
     'files["bin/kubelet"].size'),
    ("sha-short", _set(("files", "bin/kubelet", "sha256"), "ab" * 31),
     'files["bin/kubelet"].sha256'),
    ("layers-over-the-cap", _set(("images", 0, "layers"),
                                 ["sha256:" + "a" * 64] * 1001),
     "images[0].layers"),
    ("image-name-newline", _set(("images", 0, "name"), "pause\n"),
     "images[0].name"),
    ("manifest-text-html", _set(("images", 0, "manifest_media_type"),
                                "text/html"), "images[0].manifest_media_type"),
    ("image-kubeadm-a-string", _set(("images", 0, "kubeadm"), "yes"),
     "images[0].kubeadm"),
    ("versions-a-list", _set(("versions",), ["v1.16.0"]), "versions is list"),
    ("version-newline", _set(("kubernetes_version",), "v1.16.0\n"),
     "kubernetes_version"),
    ("arch-newline", _set(("arch",), "amd64\n"), "arch"),
    ("name-newline", _set(("name",), "k8s-offline-v1.16.0-linux-amd64\n"),
     "field name"),
    ("tool-version-a-list", _set(("tool_version",), ["0.1.0"]),
     "tool_version"),
    ("file-name-absolute", _rename_file("bin/kubelet", "/etc/passwd"),
     "files has the name"),
    ("flannel-traversal", _set(("flannel_manifest",), "../x.yml"),
     "flannel_manifest"),
    ("binary-absolute", _set(("binaries", "kubelet"), "/bin/sh"),
     'binaries["kubelet"]'),
    ("unit-traversal", _set(("systemd", "kubelet.service"),
                            "systemd/../../x"), 'systemd["kubelet.service"]'),
    ("script-elsewhere", _set(("script",), "evil.py"), "script"),
    ("no-coredns-image", lambda meta: meta.update(images=[
        i for i in meta["images"] if i["name"] != "coredns"]),
     "has no coredns image"),
    ("no-etcd-image", lambda meta: meta.update(images=[
        i for i in meta["images"] if i["name"] != "etcd"]),
     "has no etcd image"),
    ("no-kube-proxy-image", lambda meta: meta.update(images=[
        i for i in meta["images"] if i["name"] != "kube-proxy"]),
     "has no kube-proxy image"),
    ("flannel-as-kubeadm", lambda meta: [i.update(kubeadm=True) for i in
                                         meta["images"]
                                         if i["name"] == "flannel"],
     "has no flannel image"),
]


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory):
    return sup.make_bundle(str(tmp_path_factory.mktemp("good")))


def fresh_bundle(tmp_path, good_bundle):
    import shutil
    copy = str(tmp_path / "stick" / os.path.basename(good_bundle))
    shutil.copytree(good_bundle, copy, symlinks=True)
    return copy


def _link_loop(bundle):
    os.symlink(".", os.path.join(bundle, "images", "loop"))


def _extra_folder(bundle):
    os.mkdir(os.path.join(bundle, "extra"))


def _fifo(relpath):
    def change(bundle):
        os.unlink(os.path.join(bundle, relpath))
        os.mkfifo(os.path.join(bundle, relpath))
    return change


def _link_to_copy(relpath):
    def change(bundle):
        path = os.path.join(bundle, relpath)
        os.rename(path, path + ".real")
        os.symlink(os.path.basename(relpath) + ".real", path)
    return change


def _link_outside(relpath):
    def change(bundle):
        path = os.path.join(bundle, relpath)
        with open(path, "rb") as handle:
            data = handle.read()
        outside = os.path.join(os.path.dirname(os.path.dirname(bundle)),
                               "outside-" + os.path.basename(relpath))
        with open(outside, "wb") as handle:
            handle.write(data)
        os.unlink(path)
        os.symlink(outside, path)
    return change


def _folder_link(bundle):
    os.rename(os.path.join(bundle, "systemd"), os.path.join(bundle, "sd"))
    os.symlink("sd", os.path.join(bundle, "systemd"))


def _dev_zero(relpath):
    def change(bundle):
        os.unlink(os.path.join(bundle, relpath))
        os.symlink("/dev/zero", os.path.join(bundle, relpath))
    return change


def _folder_for(relpath):
    def change(bundle):
        os.unlink(os.path.join(bundle, relpath))
        os.mkdir(os.path.join(bundle, relpath))
    return change


LAYOUT_CASES = [
    ("link-loop", _link_loop, "images/loop"),
    ("unlisted-folder", _extra_folder, "bundle folder extra"),
    ("fifo-sha256", _fifo(ko.BUNDLE_JSON_SHA), ko.BUNDLE_JSON_SHA),
    ("fifo-member", _fifo("bin/kubelet"), "bin/kubelet"),
    ("link-bundle-json", _link_to_copy(ko.BUNDLE_JSON), ko.BUNDLE_JSON),
    ("link-member", _link_to_copy("bin/kubelet"), "bin/kubelet"),
    ("link-member-outside", _link_outside("bin/kubeadm"), "bin/kubeadm"),
    ("link-folder", _folder_link, "systemd"),
    # issue 22
    ("sha256-dev-zero", _dev_zero(ko.BUNDLE_JSON_SHA), ko.BUNDLE_JSON_SHA),
    ("member-a-folder", _folder_for("bin/kubelet"), "bin/kubelet"),
    ("bundle-json-a-folder", _folder_for(ko.BUNDLE_JSON), ko.BUNDLE_JSON),
]


def _meta(change):
    return lambda bundle: rewrite_meta(bundle, change)


# Every way a stick was found to hurt: bundle.json fields, then the layout.
STICK_CASES = [(name, _meta(change), expected)
               for name, change, expected in META_CASES] + [
    ("nested-200000-deep", lambda bundle: rewrite_meta(bundle, raw=DEEP),
     "is not valid JSON")] + LAYOUT_CASES


@pytest.mark.parametrize("command", ["verify", "master"])
@pytest.mark.parametrize("change,expected", [c[1:] for c in STICK_CASES],
                         ids=[c[0] for c in STICK_CASES])
def test_hostile_stick(command, change, expected, tmp_path, host, capsys,
                       good_bundle):
    root, runner = host
    bundle = fresh_bundle(tmp_path, good_bundle)
    change(bundle)
    argv = ["verify", bundle] if command == "verify" else \
        ["master", "--root", root, "--bundle", bundle, "--no-progress"]
    assert_refused(capsys, tmp_path, argv, expected)
    assert runner.commands() == []


# -- flags --------------------------------------------------------------------

def _fifo_file(tmp_path, name="extra.fifo"):
    path = str(tmp_path / name)
    os.mkfifo(path)
    return path


def _big_file(tmp_path):
    path = str(tmp_path / "big.yaml")
    with open(path, "wb") as handle:
        handle.write(b"# x\n" * (ko.MAX_EXTRA_CONFIG_BYTES // 4 + 1))
    return path


def _extra(text):
    def make(tmp_path):
        path = str(tmp_path / "extra.yaml")
        with open(path, "w") as handle:
            handle.write(text)
        return path
    return make


NESTED_KIND = ("apiVersion: kubeadm.k8s.io/v1beta2\nmetadata:\n  kind: Hidden\n"
               "kind: ClusterConfiguration\n")
EVIL_REPOSITORY = 'k8s.gcr.io"\n  BinaryName = "/tmp/evil-runc'

# (id, extra master flags (a callable gets tmp_path), expected text)
FLAG_CASES = [
    ("root-empty", None, "--root ''"),
    ("node-name-dots", ["--node-name", "a..b"], "bad --node-name"),
    ("node-name-newline", ["--node-name", "node-a\n"], "bad --node-name"),
    ("node-name-label-too-long", ["--node-name", "a" * 64], "bad --node-name"),
    ("endpoint-no-port", ["--control-plane-endpoint", "lb.local"],
     "bad --control-plane-endpoint"),
    ("endpoint-port-too-big", ["--control-plane-endpoint", "10.0.0.1:99999"],
     "bad --control-plane-endpoint"),
    ("endpoint-newline", ["--control-plane-endpoint", "10.0.0.1:6443\n"],
     "bad --control-plane-endpoint"),
    ("endpoint-ipv6", ["--control-plane-endpoint", "[fd00::1]:6443"], "IPv6"),
    ("pod-cidr-30", ["--pod-network-cidr", "10.244.0.0/30"], "too small"),
    ("pod-cidr-32", ["--pod-network-cidr", "10.244.0.1/32"], "too small"),
    ("pod-cidr-ipv6", ["--pod-network-cidr", "fd00::/64"], "IPv6"),
    ("advertise-not-here", ["--apiserver-advertise-address", "10.9.9.9"],
     "not an address of this host"),
    ("advertise-ipv6", ["--apiserver-advertise-address", "fd00::10"], "IPv6"),
    ("advertise-garbage", ["--apiserver-advertise-address", "1.2.3"],
     "bad --apiserver-advertise-address"),
    ("image-repository-toml", ["--image-repository", EVIL_REPOSITORY],
     "bad --image-repository"),
    ("image-repository-dash", ["--image-repository=-evil.io"],
     "bad --image-repository"),
    ("image-repository-newline", ["--image-repository", "k8s.gcr.io\n"],
     "bad --image-repository"),
    ("containerd-address-newline", ["--cri", "containerd",
                                    "--containerd-address", "/run/c.sock\nx"],
     "bad --containerd-address"),
    ("ignore-preflight-shell", ["--ignore-preflight-errors", "all;reboot"],
     "bad --ignore-preflight-errors"),
    ("extra-fifo", lambda t: ["--kubeadm-config-extra", _fifo_file(t)],
     "not a regular file"),
    ("extra-dev-zero", ["--kubeadm-config-extra", "/dev/zero"],
     "not a regular file"),
    ("extra-too-big", lambda t: ["--kubeadm-config-extra", _big_file(t)],
     "larger than"),
    ("extra-nested-kind", lambda t: ["--kubeadm-config-extra",
                                     _extra(NESTED_KIND)(t)],
     "ClusterConfiguration in"),
    ("extra-json-reserved", lambda t: ["--kubeadm-config-extra", _extra(
        '{"apiVersion": "kubeadm.k8s.io/v1beta2", "kind": '
        '"InitConfiguration"}\n')(t)], "InitConfiguration in"),
    ("extra-anchor", lambda t: ["--kubeadm-config-extra", _extra(
        "apiVersion: v1\nkind: KubeProxyConfiguration\nmode: &m ipvs\n")(t)],
     "cannot be read"),
    ("extra-not-a-mapping", lambda t: ["--kubeadm-config-extra",
                                       _extra("- a\n- b\n")(t)],
     "has no kind or apiVersion"),
    ("skip-verify", ["--skip-phases", "verify"], "--skip-phases verify is refused"),
    ("skip-preflight", ["--skip-phases", "preflight"],
     "--skip-phases preflight is refused"),
    ("wait-timeout-zero", ["--wait-timeout", "0"], "--wait-timeout"),
    # issue 22: a file flag naming a folder, and YAML that is slow or deep
    ("extra-a-folder", lambda t: ["--kubeadm-config-extra", str(t)],
     "not a regular file"),
    ("extra-not-utf8", lambda t: ["--kubeadm-config-extra", _extra_bytes(
        t, b"kind: \xff\n")], "not UTF-8"),
    ("extra-deep-json", lambda t: ["--kubeadm-config-extra", _extra_bytes(
        t, b"[" * 100000 + b"]" * 100000)], "cannot be read"),
    ("extra-deep-flow", lambda t: ["--kubeadm-config-extra", _extra(
        "apiVersion: v1\nkind: KubeProxyConfiguration\nmode: " +
        "[" * 200 + "]" * 200 + "\n")(t)], "cannot be read"),
    ("extra-a-line-of-spaces", lambda t: ["--kubeadm-config-extra", _extra(
        "x" + " " * (ko.MAX_EXTRA_CONFIG_BYTES - 8) + "y\n")(t)],
     "cannot be read"),
    ("pod-cidr-garbage", ["--pod-network-cidr", "10.244.0.0/16\n"],
     "--pod-network-cidr"),
    ("wait-timeout-negative", ["--wait-timeout", "-5"], "--wait-timeout"),
]


def _extra_bytes(tmp_path, data):
    path = str(tmp_path / "extra.bin")
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@pytest.mark.parametrize("flags,expected", [c[1:] for c in FLAG_CASES],
                         ids=[c[0] for c in FLAG_CASES])
def test_bad_master_flag(flags, expected, tmp_path, host, capsys, good_bundle):
    root, runner = host
    if flags is None:       # --root "": it once meant the real /
        argv = ["master", "--root", "", "--bundle", good_bundle]
    else:
        flags = flags(tmp_path) if callable(flags) else flags
        argv = ["master", "--root", root, "--bundle", good_bundle,
                "--no-progress"] + flags
    assert_refused(capsys, tmp_path, argv, expected)
    assert [a for a in runner.commands() if a[:2] != ["ip", "-o"]] == []


def test_extra_config_one_line_json_is_accepted(tmp_path, host, good_bundle):
    """A valid one-line JSON document passes and reaches kubeadm's config
    (through the serializer, as JSON)."""
    root, _ = host
    path = _extra('{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", '
                  '"kind": "KubeProxyConfiguration", "mode": "ipvs"}')(tmp_path)
    assert ko.main(["master", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--no-wait", "--skip-phases", "join-file",
                    "--kubeadm-config-extra", path]) == 0
    docs, _ = sup.read_config_documents(os.path.join(
        root, ko.INIT_CONFIG.lstrip("/")))
    assert {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration", "mode": "ipvs"} in docs


def test_extra_config_yaml_is_parsed_and_serialized(tmp_path, host,
                                                    good_bundle):
    root, _ = host
    path = _extra("# proxy\napiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                  "kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n"
                  "  scheduler: 'rr'\n  excludeCIDRs: [10.0.0.0/8]\n"
                  "---\napiVersion: kubelet.config.k8s.io/v1beta1\n"
                  "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\n"
                  "maxPods: 50\n")(tmp_path)
    assert ko.main(["master", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--no-wait", "--skip-phases", "join-file",
                    "--kubeadm-config-extra", path]) == 0
    docs, text = sup.read_config_documents(os.path.join(
        root, ko.INIT_CONFIG.lstrip("/")))
    assert {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration", "mode": "ipvs",
            "ipvs": {"scheduler": "rr", "excludeCIDRs": ["10.0.0.0/8"]}} in docs
    assert {"apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration", "cgroupDriver": "cgroupfs",
            "maxPods": 50} in docs
    assert "# proxy" not in text


# -- join files and join flags ------------------------------------------------

def _join_deep(tmp_path):
    path = str(tmp_path / "join.json")
    with open(path, "wb") as handle:
        handle.write(b"[" * 30000 + b"]" * 30000)
    return path


def _join(**changes):
    return lambda tmp_path: sup.write_join_file(tmp_path, **changes)


# (id, join file maker, extra join flags, expected text)
JOIN_CASES = [
    ("token-newline", _join(token=sup.TOKEN + "\n"), [], "bad token"),
    ("hash-newline", _join(discovery_token_ca_cert_hash=sup.CA_HASH + "\n"),
     [], "bad CA hash"),
    ("key-newline", _join(certificate_key=sup.CERT_KEY + "\n",
                          certificate_key_expires=1600000000 + 3600),
     ["--control-plane"], "bad certificate key"),
    ("image-repository-toml", _join(image_repository=EVIL_REPOSITORY), [],
     "bad image repository"),
    ("endpoint-newline", _join(api_server_endpoint=sup.HOST_IP + ":6443\n"),
     [], "bad API server endpoint"),
    ("endpoint-ipv6", _join(api_server_endpoint="[fd00::1]:6443"), [], "IPv6"),
    ("endpoint-port-zero", _join(api_server_endpoint=sup.HOST_IP + ":0"), [],
     "bad API server endpoint"),
    ("endpoint-not-a-string", _join(api_server_endpoint=["x"]), [],
     "bad API server endpoint"),
    ("nodes-a-string", _join(control_plane_nodes="node-a"), [],
     "bad control_plane_nodes"),
    ("nodes-bad-name", _join(control_plane_nodes=["a..b"]), [],
     "bad control_plane_nodes"),
    ("expires-a-string", _join(token_expires="soon"), [], "bad token_expires"),
    ("unknown-field", _join(evil=1), [], "unknown field evil"),
    ("fifo", lambda t: _fifo_file(t, "join.fifo"), [], "not a regular file"),
    ("dev-zero", lambda t: "/dev/zero", [], "not a regular file"),
    ("deep-json", _join_deep, [], "is not valid JSON"),
    ("advertise-not-here",
     _join(certificate_key=sup.CERT_KEY,
           certificate_key_expires=1600000000 + 3600),
     ["--control-plane", "--apiserver-advertise-address", "10.9.9.9"],
     "not an address of this host"),
    ("key-flag-newline", _join(), ["--control-plane", "--certificate-key",
                                   sup.CERT_KEY + "\n"], "bad certificate key"),
    ("node-name-dots", _join(), ["--node-name", "a..b"], "bad --node-name"),
    ("image-repository-flag", _join(), ["--image-repository", EVIL_REPOSITORY],
     "bad --image-repository"),
    ("skip-verify", _join(), ["--skip-phases", "verify"],
     "--skip-phases verify is refused"),
    # issue 22
    ("join-file-a-folder", lambda t: str(t), [], "not a regular file"),
    ("join-file-a-list", lambda t: _extra_bytes(t, b"[1, 2]"), [],
     "is not a join file"),
    ("join-file-not-utf8", lambda t: _extra_bytes(t, b'{"token": "\xff"}'),
     [], "is not valid JSON"),
    ("token-uppercase", _join(token=sup.TOKEN.upper()), [], "bad token"),
    ("hash-short", _join(discovery_token_ca_cert_hash="sha256:" + "ab" * 31),
     [], "bad CA hash"),
    ("other-version", _join(kubernetes_version="v1.17.0"), [],
     "is for kubernetes version v1.17.0"),
    ("other-arch", _join(arch="arm64"), [], "is for arch arm64"),
    ("endpoint-inner-newline", _join(api_server_endpoint="10.0.0.1\n:6443"),
     [], "bad API server endpoint"),
]


@pytest.mark.parametrize("make,flags,expected", [c[1:] for c in JOIN_CASES],
                         ids=[c[0] for c in JOIN_CASES])
def test_bad_join_input(make, flags, expected, tmp_path, host, capsys,
                        good_bundle):
    root, runner = host
    path = make(tmp_path)
    argv = ["join", "--root", root, "--bundle", good_bundle, "--no-progress",
            "--no-wait", "--join-file", path] + flags
    assert_refused(capsys, tmp_path, argv, expected)
    assert [a for a in runner.commands() if a[:2] != ["ip", "-o"]] == []


def test_bad_join_flags_token_newline(tmp_path, host, capsys, good_bundle):
    root, _ = host
    assert_refused(capsys, tmp_path, [
        "join", "--root", root, "--bundle", good_bundle, "--apiserver",
        sup.HOST_IP + ":6443", "--token", sup.TOKEN + "\n",
        "--discovery-token-ca-cert-hash", sup.CA_HASH], "bad token")


# -- what gets written --------------------------------------------------------

def test_host_path_refuses_what_resolves_outside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(tmp_path), str(root / "etc" / "out"))
    host = ko.Host(str(root))
    for bad in ("/etc/out/x", "/../x", "etc/relative", "/etc/a\x00b"):
        with pytest.raises(ko.UserError):
            host.path(bad)
    assert host.path("/etc/ok") == str(root / "etc" / "ok")


def test_join_command_is_shell_quoted(tmp_path, host, capsys):
    root, _ = host
    folder = tmp_path / "my stick; rm -rf x"
    folder.mkdir()
    bundle = sup.make_bundle(str(folder))
    assert ko.main(["master", "--root", root, "--bundle", bundle,
                    "--no-progress", "--no-wait"]) == 0
    out = capsys.readouterr().out
    line = [l for l in out.splitlines() if "join --join-file" in l][0]
    import shlex
    words = shlex.split(line)
    assert words[-1] == os.path.join(bundle, ko.JOIN_FILE_NAME)


def test_reset_removes_only_its_own_kubeconfigs(tmp_path, host, capsys):
    root, runner = host
    sup.write(root, "/etc/important", "keep")
    sup.write(root, "/root/.kube/config", "kubeconfig", 0o600)
    sup.write(root, "/home/alice/notes", "keep")
    state = {"role": "master", "kubeconfigs": [
        "/etc", "/home/alice", "/root/.kube/config", "/../../tmp/x",
        "/usr/sbin", 7]}
    sup.write(root, ko.STATE_FILE, json.dumps(state), 0o600)
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    err = capsys.readouterr().err
    assert os.path.exists(os.path.join(root, "etc/important"))
    assert os.path.exists(os.path.join(root, "home/alice/notes"))
    assert os.path.exists(os.path.join(root, "usr/sbin/ip"))
    assert not os.path.exists(os.path.join(root, "root/.kube/config"))
    assert "left alone" in err


# -- logs ---------------------------------------------------------------------

def test_logs_do_not_follow_links_and_are_private(tmp_path, host, capsys,
                                                  good_bundle):
    root, runner = host
    target = tmp_path / "elsewhere.log"
    target.write_text("untouched\n")
    os.symlink(str(target), os.path.join(root, "var/log/k8s-offline.log"))
    sup.write(root, ko.KUBEADM_INIT_LOG, "old output\n", 0o644)
    assert ko.main(["master", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--no-wait"]) == 0
    err = capsys.readouterr().err
    assert target.read_text() == "untouched\n"
    assert len([l for l in err.splitlines()
                if "cannot write the log" in l]) == 1, err
    init_log = os.path.join(root, ko.KUBEADM_INIT_LOG.lstrip("/"))
    assert stat.S_IMODE(os.stat(init_log).st_mode) == 0o600
    assert "old output" not in open(init_log).read()


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "outside"])
def test_kubeadm_log_that_is_a_link_is_refused(inside, tmp_path, host, capsys,
                                               good_bundle):
    root, runner = host
    target = os.path.join(root, "etc/passwd") if inside \
        else str(tmp_path / "elsewhere.log")
    if not inside:
        with open(target, "w") as handle:
            handle.write("untouched\n")
    before = open(target).read()
    os.symlink(target, os.path.join(root, ko.KUBEADM_INIT_LOG.lstrip("/")))
    code = ko.main(["master", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--no-wait"])
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and "error: unexpected" not in err, err
    assert ("cannot write" if inside else "outside") in errors[0]
    assert open(target).read() == before
    assert not runner.ran("kubeadm", "init")


def test_real_runner_tee_is_private_and_refuses_links(tmp_path):
    path = tmp_path / "kubeadm-init.log"
    path.write_text("secret from last time\n")
    os.chmod(str(path), 0o644)
    result = ko.Runner().run(["echo", "token abc"], tee=str(path))
    assert result.ok and path.read_text() == "token abc\n"
    assert stat.S_IMODE(os.stat(str(path)).st_mode) == 0o600
    link = tmp_path / "link.log"
    os.symlink(str(path), str(link))
    with pytest.raises(ko.UserError):
        ko.Runner().run(["echo", "x"], tee=str(link))
    assert path.read_text() == "token abc\n"


def test_a_full_disk_log_gives_one_line(tmp_path, capsys):
    log_file = str(tmp_path / "run.log")
    ko.setup_logging(log_file=log_file)
    handler = [h for h in ko.log.handlers
               if getattr(h, "where", None) == log_file][0]
    handler.stream = open("/dev/full", "w")
    for number in range(20):
        ko.log.info("line %d with a non-ASCII path /m\u00fcnchen", number)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
    assert len([l for l in err.splitlines()
                if "cannot write the log" in l]) == 1, err
    assert "line 19" in err      # the run went on, on the terminal
    ko.log.handlers[:] = []


def test_c_locale_with_a_non_ascii_path(tmp_path, good_bundle):
    import shutil
    import subprocess
    folder = tmp_path / "st\u00fcck"
    shutil.copytree(good_bundle, str(folder / os.path.basename(good_bundle)))
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0",
               PYTHONUTF8="0")
    env.pop("PYTHONIOENCODING", None)
    result = subprocess.run(
        [sys.executable, os.path.join(sup.REPO, "k8s_offline.py"), "verify",
         "--no-progress", str(folder / os.path.basename(good_bundle))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
    err = result.stderr.decode("ascii", "replace")
    assert result.returncode == 0, err
    assert "Logging error" not in err and "Traceback" not in err
    assert b"OK: " in result.stdout


def test_c_locale_log_of_a_non_ascii_name(tmp_path):
    """The run log under a C locale (Python 3.6 when present: it has no
    UTF-8 coercion) takes a non-ASCII file name without a traceback."""
    import subprocess
    python = sup.find_python36() or sys.executable
    root = tmp_path / "root"
    sup.write(str(root), "/etc/cni/net.d/m\u00fcnchen.conf", "{}")
    (root / "var" / "log").mkdir(parents=True)
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONCOERCECLOCALE="0",
               PYTHONUTF8="0")
    env.pop("PYTHONIOENCODING", None)
    result = subprocess.run(
        [python, os.path.join(sup.REPO, "k8s_offline.py"), "-v", "reset",
         "--root", str(root), "--yes"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, timeout=120)
    err = result.stderr.decode("ascii", "replace")
    assert result.returncode == 0, err
    assert "Logging error" not in err and "Traceback" not in err, err
    log_file = root / "var" / "log" / "k8s-offline.log"
    assert "nchen.conf" in log_file.read_text(encoding="utf-8")   # escaped
    assert stat.S_IMODE(os.stat(str(log_file)).st_mode) == 0o600
    assert not (root / "etc" / "cni" / "net.d" / "m\u00fcnchen.conf").exists()


def test_dry_run_may_leave_out_the_safety_phases_loudly(tmp_path, host, capsys,
                                                        good_bundle):
    root, _ = host
    before = sup.tree(str(tmp_path))
    assert ko.main(["master", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--dry-run", "--skip-phases",
                    "verify,preflight"]) == 0
    err = capsys.readouterr().err
    assert "warning: the verify phase is left out of this dry run" in err
    assert "warning: the preflight phase is left out of this dry run" in err
    assert sup.tree(str(tmp_path)) == before


# -- a sudo user's ~/.kube (issue 22) -------------------------------------------

def _kube_link(root):
    """~alice/.kube is alice's link to a folder root reads as config."""
    os.makedirs(os.path.join(root, "etc/apt/apt.conf.d"))
    os.symlink("../../etc/apt/apt.conf.d", os.path.join(root,
                                                       "home/alice/.kube"))


def _kube_not_hers(root):
    os.makedirs(os.path.join(root, "home/alice/.kube"))
    os.chown(os.path.join(root, "home/alice/.kube"), 0, 0)


def _config_link(root):
    os.makedirs(os.path.join(root, "home/alice/.kube"))
    os.chown(os.path.join(root, "home/alice/.kube"), 1000, 1000)
    sup.write(root, "/etc/shadow-like", "keep")
    os.symlink("../../../etc/shadow-like", os.path.join(
        root, "home/alice/.kube/config"))


@pytest.mark.parametrize("change,refused", [
    (_kube_link, True), (_kube_not_hers, True), (_config_link, False)],
    ids=["kube-is-a-link", "kube-not-hers", "config-is-a-link"])
def test_a_sudo_users_kube_folder_is_never_followed(change, refused, tmp_path,
                                                    host,
                                                    capsys, monkeypatch,
                                                    good_bundle):
    root, runner = host
    monkeypatch.setenv("SUDO_USER", "alice")
    change(root)
    outside = {rel: entry for rel, entry in sup.tree(root).items()
               if not rel.startswith(("home/alice", "etc/kubernetes", "var/",
                                      "root/", "etc/systemd", "usr/", "opt/",
                                      "etc/sysctl.d", "etc/modules-load.d",
                                      "etc/crictl.yaml", "etc/fstab",
                                      "etc/cni", "etc/docker"))}
    with deadline():
        code = ko.main(["master", "--root", root, "--bundle", good_bundle,
                        "--no-progress", "--no-wait", "--skip-phases",
                        "join-file"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("no kubeconfig copied for alice" in err) == refused, err
    after = sup.tree(root)
    assert not os.path.exists(os.path.join(root, "etc/apt/apt.conf.d/config"))
    for rel, entry in outside.items():
        assert after.get(rel) == entry, rel
    assert os.path.exists(os.path.join(root, "root/.kube/config"))
    if not refused:   # the link itself was replaced, not followed
        st = os.lstat(os.path.join(root, "home/alice/.kube/config"))
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 1000


def test_reset_unlinks_a_kubeconfig_copy_through_its_folder(tmp_path, host,
                                                            capsys):
    root, runner = host
    os.makedirs(os.path.join(root, "etc/apt/apt.conf.d"))
    sup.write(root, "/etc/apt/apt.conf.d/config", "root runs this")
    os.symlink("../../etc/apt/apt.conf.d", os.path.join(root,
                                                       "home/alice/.kube"))
    sup.write(root, "/root/.kube/config", "kubeconfig", 0o600)
    sup.write(root, ko.STATE_FILE, json.dumps({
        "role": "master", "kubeconfigs": ["/root/.kube/config",
                                          "/home/alice/.kube/config"]}), 0o600)
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    err = capsys.readouterr().err
    assert os.path.exists(os.path.join(root, "etc/apt/apt.conf.d/config"))
    assert not os.path.exists(os.path.join(root, "root/.kube/config"))
    assert "/home/alice/.kube is a link" in err


def _drop_image(name):
    def change(meta):
        meta["images"] = [image for image in meta["images"]
                          if image["name"] != name]
    return change


def _flannel_as_extra(meta):
    for image in meta["images"]:
        if image["name"] == "flannel":
            image["extra"] = True


@pytest.mark.parametrize("command", ["verify", "master"])
@pytest.mark.parametrize("change,expected", [
    (_drop_image("flannel"), "has no flannel image"),
    (_drop_image("pause"), "has no pause image"),
    (_drop_image("kube-apiserver"), "has no kube-apiserver image"),
    (_flannel_as_extra, "has no flannel image"),
], ids=["no-flannel", "no-pause", "no-apiserver", "flannel-only-extra"])
def test_a_resigned_bundle_without_a_needed_image_fails_verify(
        command, change, expected, tmp_path, host, capsys, good_bundle):
    """Refused by verify, not after kubeadm init."""
    root, runner = host
    bundle = fresh_bundle(tmp_path, good_bundle)
    rewrite_meta(bundle, change)
    argv = ["verify", bundle] if command == "verify" else \
        ["master", "--root", root, "--bundle", bundle, "--no-progress"]
    assert_refused(capsys, tmp_path, argv, expected)
    assert runner.commands() == []


def test_the_run_log_holds_no_token_or_certificate_key(tmp_path, host, capsys,
                                                       good_bundle):
    """The run log gets attached to bug reports: kubeadm's output is logged
    there with its token and certificate key redacted."""
    root, runner = host
    bundle = fresh_bundle(tmp_path, good_bundle)
    assert ko.main(["master", "--root", root, "--bundle", bundle,
                    "--no-progress", "--no-wait"]) == 0
    capsys.readouterr()
    text = open(os.path.join(root, "var/log/k8s-offline.log")).read()
    with open(os.path.join(bundle, ko.JOIN_FILE_NAME)) as handle:
        info = json.load(handle)
    assert info["token"] == sup.TOKEN
    assert "kubeadm token create" in text
    assert sup.TOKEN not in text
    if info.get("certificate_key"):
        assert info["certificate_key"] not in text
    assert "abcdef.<redacted>" in text
    # the join file and kubeadm's own log keep them, private
    init_log = os.path.join(root, ko.KUBEADM_INIT_LOG.lstrip("/"))
    assert stat.S_IMODE(os.stat(init_log).st_mode) == 0o600


def test_redaction_of_secrets_in_log_text():
    key = "ab" * 32
    text = ("kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef "
            "--discovery-token-ca-cert-hash sha256:%s --certificate-key %s\n"
            "[upload-certs] Using certificate key:\n%s\n"
            '"certificateKey": "%s", image sha256:%s' % (key, key, key, key,
                                                        key))
    out = ko.redact_secrets(text)
    assert "0123456789abcdef" not in out
    assert out.count(key) == 2            # the CA hash and the image digest
    assert "sha256:" + key in out


# -- linear-time YAML (issue 22) -------------------------------------------------

MIB = 1 << 20


@pytest.mark.parametrize("text,parses", [
    ("x" + " " * MIB + "y\n", False),
    ("kind: A\nx" + " " * MIB + "y\n", False),
    ("a: [" + "1, " * (MIB // 3) + "1]\n", True),
    ("a: {" + ", ".join("k%d: v" % i for i in range(MIB // 10)) + "}\n",
     True),
    ("a: [" + '"x", ' * (MIB // 5) + '"x"]\n', True),
    ("a:" + " " * MIB + "b\n", True),
], ids=["spaces-in-a-line", "spaces-after-a-key", "flow-list", "flow-map",
        "flow-strings", "spaces-before-a-value"])
def test_a_1mib_document_parses_in_linear_time(text, parses):
    """A benchmark-style bound, generous for a loaded machine: linear
    parsing takes well under a second here, the old quadratic one took
    minutes (a line of 256 KiB spaces: over a minute)."""
    import time
    started = time.monotonic()
    with deadline(120):
        try:
            ko.parse_yaml_document(text)
            parsed = True
        except ko.YamlSubsetError:
            parsed = False
    took = time.monotonic() - started
    assert parsed == parses
    assert took < 10, "%.1f s for 1 MiB" % took


def test_the_run_log_under_root_follows_no_link_out_of_it(tmp_path, host,
                                                         capsys, good_bundle):
    """/var/log under --root linked elsewhere: the run log is placed
    through the host's path check, never written outside the root."""
    root, runner = host
    outside = tmp_path / "outside-log"
    outside.mkdir()
    os.rmdir(os.path.join(root, "var/log"))
    os.symlink(str(outside), os.path.join(root, "var/log"))
    with deadline():
        code = ko.main(["master", "--root", root, "--bundle", good_bundle,
                        "--no-progress", "--no-wait", "--skip-phases",
                        "join-file"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert "refusing the host path /var/log" in errors[0]
    assert os.listdir(str(outside)) == []
    assert len([line for line in err.splitlines()
                if "cannot write the log" in line]) == 1, err


def test_a_world_writable_join_file_is_warned_about(tmp_path, host, capsys,
                                                    good_bundle):
    """FAT32 keeps no file modes: a join file there is world-writable (and
    readable); join warns, once, and names --join-file outside the stick."""
    root, runner = host
    path = sup.write_join_file(tmp_path)
    os.chmod(path, 0o666)
    code = ko.main(["join", "--root", root, "--bundle", good_bundle,
                    "--no-progress", "--no-wait", "--join-file", path])
    err = capsys.readouterr().err
    assert code == 0, err
    warned = [line for line in err.splitlines() if "world-writable" in line]
    assert len(warned) == 1 and "--join-file" in warned[0], err
