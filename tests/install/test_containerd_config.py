"""containerd's config after the runtime phase, read back by the real
containerd (`containerd config dump`), for the four configs a host starts
with: version 1, version 2, the containerd.io package's, and none; and the
small TOML reader and writer behind it, against Python's own TOML parser."""

import argparse
import os
import subprocess
import tomllib

import pytest

import install_support as sup
from install_support import ko

REPO = "registry.local:5000/k8s"
PAUSE = REPO + "/pause:3.1"

V1_CONFIG = """\
root = "/var/lib/containerd"
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins.cri]
    stream_server_address = "127.0.0.1"
    [plugins.cri.containerd]
      snapshotter = "overlayfs"
  [plugins.cgroups]
    no_prometheus = false
"""

V2_CONFIG = """\
version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs"]

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "k8s.gcr.io/pause:3.2"   # the default of containerd 1.4
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"
"""

# /etc/containerd/config.toml of the containerd.io package (Docker's repos).
PACKAGE_CONFIG = """\
#   Copyright 2018-2020 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");
#   you may not use this file except in compliance with the License.

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0
"""

# /etc/containerd/config.toml of Debian's containerd package (bookworm):
# its CRI plugin looks for CNI plugins in /usr/lib/cni.
DEBIAN_CONFIG = """\
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""

REAL_RUNNER = ko.Runner   # before install_fake replaces it
STARTS = {"v1": V1_CONFIG, "v2": V2_CONFIG, "package": PACKAGE_CONFIG,
          "debian": DEBIAN_CONFIG, "none": None}


class RealContainerdRunner(sup.FakeRunner):
    """The recorder, except that `containerd ...` runs the real binary."""

    def _execute(self, argv, timeout=300, tee=None, input_text=None):
        if argv[0] == "containerd":
            self.calls.append((list(argv), True))
            return REAL_RUNNER._execute(self, argv, timeout=timeout)
        return sup.FakeRunner._execute(self, argv, timeout, tee, input_text)


def dump(path):
    result = subprocess.run(["containerd", "--config", path, "config", "dump"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def run_runtime_phase(bundle, root):
    """master's runtime phase for --cri containerd on root; its (closed) ctx."""
    args = argparse.Namespace(bundle=bundle, root=root, cri="containerd",
                              image_repository=REPO, skip_phases=None,
                              dry_run=False, no_progress=True,
                              containerd_address=None, command="master")
    ctx = ko.NodeContext(args, "master")
    try:
        ko.phase_runtime(ctx)
    finally:
        ctx.close()
    return ctx


@pytest.mark.parametrize("start", sorted(STARTS))
def test_runtime_phase_gives_containerd_the_bundled_pause(start, bundle_dir,
                                                          tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    real = RealContainerdRunner(root, runner.cluster)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: real.bind(dry_run))
    if STARTS[start] is not None:
        sup.write(root, ko.CONTAINERD_CONFIG, STARTS[start])
    ctx = run_runtime_phase(bundle_dir, root)
    config = dump(os.path.join(root, ko.CONTAINERD_CONFIG.lstrip("/")))
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == PAUSE
    # the CNI plugins go to /opt/cni/bin; Debian's containerd looks in
    # /usr/lib/cni unless told (found by the air-gap lab's containerd node)
    cni = config["plugins"]["io.containerd.grpc.v1.cri"]["cni"]
    assert (cni["bin_dir"], cni["conf_dir"]) == (ko.CNI_BIN_DIR, ko.CNI_CONF_DIR)
    assert not set(config.get("disabled_plugins", [])) & {
        "cri", "io.containerd.grpc.v1.cri"}
    if start == "v2":
        assert ctx.found.cgroup_driver == "systemd"
        assert "io.containerd.snapshotter.v1.btrfs" in config["disabled_plugins"]
    if start == "v1":
        assert config["plugins"]["io.containerd.grpc.v1.cri"][
            "stream_server_address"] == "127.0.0.1"
    # A second run changes nothing.
    path = os.path.join(root, ko.CONTAINERD_CONFIG.lstrip("/"))
    before = open(path).read()
    run_runtime_phase(bundle_dir, root)
    assert open(path).read() == before


TRICKY = """\
version = 2
a = 'lit\\eral'
"b.c" = "q\\"uote\\\\ \\u00e9\\ttab"
n = -12_000
f = 1.5e3
t = true
arr = [
  "x", # comment
  'y',
]
inline = { k = 1, "s p" = "v" }
dotted.key = "d"

[tbl."with.dot"]
  nested = [[1, 2], ["a"]]
[tbl.empty]
"""


def test_toml_reader_agrees_with_tomllib_and_writer_round_trips():
    data = ko.toml_loads(TRICKY)
    assert data == tomllib.loads(TRICKY)
    text = ko.toml_dumps(data)
    assert tomllib.loads(text) == data
    assert ko.toml_loads(text) == data


@pytest.mark.parametrize("text", ['a = "unterminated\n', "[[arr]]\n", "a = 1\na = 2\n",
                                  'a = """multi"""\n', "d = 1979-05-27\n",
                                  "a = 1 b = 2\n"])
def test_toml_reader_refuses_what_it_does_not_know(text):
    with pytest.raises(ko.TomlError):
        ko.toml_loads(text)


def test_toml_writer_quotes_keys_and_strings():
    value = 'evil"\n[plugins]\nx = "y'
    text = ko.toml_dumps({"plugins": {"io.containerd.grpc.v1.cri": {
        "sandbox_image": value}}})
    assert tomllib.loads(text)["plugins"]["io.containerd.grpc.v1.cri"][
        "sandbox_image"] == value


def test_unreadable_containerd_config_stops_preflight(tmp_path, monkeypatch,
                                                      capsys, bundle_dir):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    sup.write(root, ko.CONTAINERD_CONFIG, "[[proxy_plugins]]\n")
    before = sup.snapshot(root)
    code = ko.main(["master", "--root", root, "--bundle", bundle_dir,
                    "--no-progress", "--cri", "containerd"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot read /etc/containerd/config.toml (line 1: arrays of " \
        "tables are not supported)" in err
    assert sup.snapshot(root) == before


@pytest.mark.parametrize("text,words", [
    ("version = 4\n", "has version = 4; this tool writes versions 1, 2 and 3"),
    ('disabled_plugins = "cri"\n', "disabled_plugins in /etc/containerd/config.toml "
                                   "is not a list"),
    ('version = 2\nplugins = 1\n', "plugins in /etc/containerd/config.toml is not a table")])
def test_a_config_this_tool_cannot_rewrite_stops_preflight(text, words, tmp_path,
                                                           monkeypatch, capsys,
                                                           bundle_dir):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    sup.write(root, ko.CONTAINERD_CONFIG, text)
    before = sup.snapshot(root)
    assert ko.main(["master", "--root", root, "--bundle", bundle_dir,
                    "--no-progress", "--cri", "containerd"]) == 2
    assert words in capsys.readouterr().err.strip().splitlines()[-1]
    assert sup.snapshot(root) == before


# -- containerd 2.x, the systemd cgroup driver, pinned images -----------------

def runtime_phase_with(tmp_path, monkeypatch, version, containerd_version,
                       config=None):
    """The runtime phase on a fixture host for a bundle of VERSION whose
    containerd says it is CONTAINERD_VERSION; (config as data, ctx)."""
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    runner.cluster.containerd_version = containerd_version
    if config is not None:
        sup.write(root, ko.CONTAINERD_CONFIG, config)
    bundle = sup.make_bundle(str(tmp_path / "b"), version=version)
    ctx = run_runtime_phase(bundle, root)
    with open(os.path.join(root, ko.CONTAINERD_CONFIG.lstrip("/"))) as h:
        return tomllib.loads(h.read()), ctx


def test_containerd_2_gets_a_version_3_config_with_the_pinned_sandbox(
        tmp_path, monkeypatch):
    config, ctx = runtime_phase_with(tmp_path, monkeypatch, "v1.37.2",
                                     "v2.1.4")
    assert config["version"] == 3
    plugins = config["plugins"]
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"] == {
        "sandbox": PAUSE}
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert (runtime["cni"]["bin_dir"], runtime["cni"]["conf_dir"]) == (
        ko.CNI_BIN_DIR, ko.CNI_CONF_DIR)
    assert runtime["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": True}
    assert "io.containerd.grpc.v1.cri" not in plugins
    assert ctx.found.cgroup_driver == "systemd"


def test_containerd_1_from_1_22_uses_the_systemd_driver(tmp_path,
                                                        monkeypatch):
    config, ctx = runtime_phase_with(tmp_path, monkeypatch, "v1.22.17",
                                     "v1.6.20", DEBIAN_CONFIG)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": True}
    assert ctx.found.cgroup_driver == "systemd"


def test_containerd_version_is_read_from_its_own_words():
    class Runner(object):
        def __init__(self, out):
            self.out = out

        def run(self, argv, **kwargs):
            return ko.CommandResult(argv, 0, self.out, "")
    assert ko.containerd_version(Runner(
        "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7\n")) \
        == (2, 1)
    assert ko.containerd_version(Runner(
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"
        "+deb12u3\n")) == (1, 6)


def test_containerd_before_1_22_keeps_its_cgroup_driver(tmp_path,
                                                        monkeypatch):
    _, ctx = runtime_phase_with(tmp_path, monkeypatch, "v1.21.14", "v1.6.20")
    assert ctx.found.cgroup_driver == "cgroupfs"


def test_a_version_3_config_the_host_has_is_kept_version_3(tmp_path,
                                                           monkeypatch):
    config, _ = runtime_phase_with(
        tmp_path, monkeypatch, "v1.36.3", "v2.2.1",
        "version = 3\n[plugins.'io.containerd.cri.v1.images']\n"
        "  snapshotter = 'overlayfs'\n")
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images == {"snapshotter": "overlayfs",
                      "pinned_images": {"sandbox": PAUSE}}


def test_the_real_ctr_labels_an_imported_image_pinned(containerd, tmp_path):
    """The label argv the images phase gives ctr works on the real ctr:
    an image imported into k8s.io is labeled io.cri-containerd.pinned."""
    bundle = sup.make_bundle(str(tmp_path / "b"), extra_images=())
    meta = ko.Bundle(bundle)
    try:
        image = [i for i in meta.meta["images"] if i["name"] == "pause"][0]
        target = "registry.local:5000/k8s/pause:3.1"
        layout = tmp_path / "layout.tar"
        with open(str(layout), "wb") as handle:
            ko.write_oci_layout(handle, meta, [(image, target)],
                                ko.Progress(0, "x", enabled=False))
    finally:
        meta.close()
    ctr = ["ctr", "--address", containerd.sock, "-n", "k8s.io"]
    with open(str(layout), "rb") as handle:
        subprocess.run(ctr + ["images", "import", "-"], stdin=handle,
                       check=True, timeout=120)

    class Ctx(object):
        containerd_address = containerd.sock
        runner = ko.Runner()
    adapter = ko.RUNTIMES["containerd"]
    assert adapter.pin(Ctx, [target]) == 1
    assert ko.PINNED_LABEL in ko.containerd_image_labels(Ctx)[target]
    assert adapter.pin(Ctx, [target]) == 0        # a re-run changes nothing
