"""kubeadm, kubelet and kubectl from the node release tarball, checked
against its published sha512 (the value the v1.16.0 release notes give) and
against the .sha256 files beside the single binaries."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile


import k8s_offline as ko

TARBALL = "kubernetes-node-linux-amd64.tar.gz"


def test_v1_16_0_pins_are_the_release_notes_values():
    pinned = ko.version_facts("v1.16.0")["node_sha512"]
    assert pinned["amd64"].startswith("e987f141bc0a")
    assert len(pinned["arm64"]) == 128


def _serve_tarball(file_server, change=None):
    """A node tarball holding the file server's own stand-in binaries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in ("kubeadm", "kubelet", "kubectl", "kube-proxy"):
            source = file_server.path(name) if name != "kube-proxy" else None
            data = open(source, "rb").read() if source else b"proxy"
            if change and name == change:
                data += b"x"
            info = tarfile.TarInfo("kubernetes/node/bin/" + name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(raw.getvalue(), mtime=0)
    path = os.path.join(file_server.root, "dl.k8s.io", "v1.16.0", TARBALL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return hashlib.sha512(data).hexdigest()


def _args(bundle_args, tmp_path, sha512):
    args = list(bundle_args)
    i = args.index("--checksum-file")
    with open(args[i + 1]) as handle:
        lines = handle.read()
    sums = tmp_path / "sums"
    sums.write_text(lines + "%s  %s\n" % (sha512, TARBALL))
    args[i + 1] = str(sums)
    return args + ["--output", str(tmp_path / "b.tar"), "--cache-dir",
                   str(tmp_path / "cache")]


def _binary_gets(file_server):
    return [r for r in file_server.count()
            if r[0] == "GET" and r[1].endswith(("/kubeadm", "/kubelet", "/kubectl"))]


def test_binaries_come_from_the_pinned_tarball(run_cli, bundle_args, file_server,
                                               tmp_path):
    sha512 = _serve_tarball(file_server)
    before = len(_binary_gets(file_server))
    rc, out, err = run_cli("bundle", *_args(bundle_args, tmp_path, sha512))
    assert rc == 0, err
    assert "checked against the sha512 the release published" in err
    assert len(_binary_gets(file_server)) == before, "single binaries were fetched"
    with tarfile.open(str(tmp_path / "b.tar")) as tar:
        top = tar.getnames()[0].split("/")[0]
        kubeadm = tar.extractfile(top + "/bin/kubeadm").read()
    assert hashlib.sha256(kubeadm).hexdigest() == file_server.sha256("kubeadm")
    assert run_cli("verify", tmp_path / "b.tar")[0] == 0


def test_a_tarball_binary_unlike_its_published_sha256_is_refused(run_cli, bundle_args,
                                                                 file_server, tmp_path):
    sha512 = _serve_tarball(file_server, change="kubelet")
    rc, out, err = run_cli("bundle", *_args(bundle_args, tmp_path, sha512))
    assert rc != 0
    assert "kubelet" in err and "refusing it" in err
    assert not (tmp_path / "b.tar").exists()


def test_a_tarball_unlike_its_sha512_is_refused(run_cli, bundle_args, file_server,
                                                tmp_path):
    _serve_tarball(file_server)
    rc, out, err = run_cli("bundle", *_args(bundle_args, tmp_path, "0" * 128))
    assert rc != 0
    assert "failed its sha512 check" in err
    assert not (tmp_path / "b.tar").exists()


def test_node_tarball_bundle_has_the_default_name_and_runs_from_its_folder(
        run_cli, bundle_args, file_server, tmp_path):
    """The README's path: bundle, extract, cd into k8s-offline-<v>-linux-<a>,
    run master --dry-run there (the bundle found beside the script)."""
    sha512 = _serve_tarball(file_server)
    rc, out, err = run_cli("bundle", *_args(bundle_args, tmp_path, sha512))
    assert rc == 0, err
    name = "k8s-offline-v1.16.0-linux-amd64"
    with tarfile.open(str(tmp_path / "b.tar")) as tar:
        assert set(n.split("/")[0] for n in tar.getnames()) == {name}
        meta = json.loads(tar.extractfile(name + "/bundle.json").read())
        tar.extractall(str(tmp_path / "x"))
    assert meta["name"] == name
    folder = tmp_path / "x" / name
    result = subprocess.run(
        [sys.executable, str(folder / "k8s_offline.py"), "master", "--dry-run",
         "--no-progress"], cwd=str(folder), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "every file checked" in result.stderr
    assert "dry run: nothing was changed" in result.stderr
