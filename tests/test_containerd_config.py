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


@pytest.mark.parametrize("start", sorted(STARTS))
def test_runtime_phase_gives_containerd_the_bundled_pause(start, bundle_dir,
                                                          tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    real = RealContainerdRunner(root, runner.cluster)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: real.bind(dry_run))
    if STARTS[start] is not None:
        sup.write(root, ko.CONTAINERD_CONFIG, STARTS[start])
    args = argparse.Namespace(bundle=bundle_dir, root=root, cri="containerd",
                              image_repository=REPO, skip_phases=None,
                              dry_run=False, no_progress=True,
                              containerd_address=None, command="master")
    ctx = ko.InstallContext(args, "master")
    try:
        ko.phase_runtime(ctx)
    finally:
        ctx.close()
    config = dump(os.path.join(root, ko.CONTAINERD_CONFIG.lstrip("/")))
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == PAUSE
    # the CNI plugins go to /opt/cni/bin; Debian's containerd looks in
    # /usr/lib/cni unless told (found by the air-gap lab's containerd node)
    cni = config["plugins"]["io.containerd.grpc.v1.cri"]["cni"]
    assert (cni["bin_dir"], cni["conf_dir"]) == (ko.CNI_BIN_DIR, ko.CNI_CONF_DIR)
    assert not set(config.get("disabled_plugins", [])) & {
        "cri", "io.containerd.grpc.v1.cri"}
    if start == "v2":
        assert ctx.cgroup_driver == "systemd"
        assert "io.containerd.snapshotter.v1.btrfs" in config["disabled_plugins"]
    if start == "v1":
        assert config["plugins"]["io.containerd.grpc.v1.cri"][
            "stream_server_address"] == "127.0.0.1"
    # A second run changes nothing.
    path = os.path.join(root, ko.CONTAINERD_CONFIG.lstrip("/"))
    before = open(path).read()
    ctx = ko.InstallContext(args, "master")
    try:
        ko.phase_runtime(ctx)
    finally:
        ctx.close()
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
    ("version = 3\n", "has version = 3; this tool writes versions 1 and 2"),
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
