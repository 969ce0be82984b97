"""Bad input to the bundle-side commands (bundle, images, verify) and to the
cluster-side ones on a host that is no master, table driven: each gives one clear line 'error: what: what to do', a non-zero exit,
no traceback, and leaves nothing under the output name.  The install-side
table is tests/install/test_install_badinput.py."""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _out(tmp):
    return str(tmp / "out" / "b.tar")


# (id, argv builder(tmp, flags) -> argv, text expected in the error line)
CASES = [
    ("version-garbage", lambda t, f: ["bundle", "--kubernetes-version", "latest"] + f,
     "bad Kubernetes version"),
    ("version-unsupported", lambda t, f: ["bundle", "--kubernetes-version", "v1.15.0"] + f,
     "not supported"),
    ("version-future", lambda t, f: ["bundle", "--kubernetes-version", "v9.9.9"] + f,
     "not supported"),
    ("arch-unknown", lambda t, f: ["bundle", "--arch", "mips"] + f, "unknown architecture"),
    ("mirror-no-equals", lambda t, f: ["bundle"] + f + ["--registry-mirror", "quay.io"],
     "bad --registry-mirror"),
    ("mirror-empty-side", lambda t, f: ["bundle"] + f + ["--registry-mirror", "=x:5000"],
     "bad --registry-mirror"),
    ("file-mirror-bad", lambda t, f: ["bundle"] + f + ["--file-mirror", "https://x"],
     "bad --file-mirror"),
    ("jobs-zero", lambda t, f: ["bundle"] + f + ["--jobs", "0"], "--jobs"),
    ("jobs-not-a-number", lambda t, f: ["bundle"] + f + ["--jobs", "many"], "--jobs"),
    ("timeout-zero", lambda t, f: ["bundle"] + f + ["--timeout", "0"], "--timeout"),
    ("extra-image-bad-ref", lambda t, f: ["bundle"] + f + ["--extra-image", "UPPER/Case"],
     "bad image reference"),
    ("extra-image-dash", lambda t, f: ["bundle"] + f + ["--extra-image=-evil.io/x:1"],
     "bad image reference"),
    ("extra-image-newline", lambda t, f: ["bundle"] + f + ["--extra-image", "nginx:1\n"],
     "bad image reference"),
    ("extra-image-bad-digest", lambda t, f: ["bundle"] + f + ["--extra-image", "a@sha256:12"],
     "bad image reference"),
    ("checksum-file-missing", lambda t, f: ["bundle"] + f + ["--checksum-file",
                                                              str(t / "nope")],
     "cannot read --checksum-file"),
    ("checksum-file-garbage", lambda t, f: ["bundle"] + f + ["--checksum-file",
                                                              str(_garbage(t))],
     "is not 'SHA256  FILENAME'"),
    ("checksum-file-fifo", lambda t, f: ["bundle"] + f + ["--checksum-file",
                                                           _fifo(t)],
     "--checksum-file"),
    ("output-under-a-file", lambda t, f: ["bundle"] + f + ["--output",
                                                            str(_a_file(t)) + "/x.tar"],
     "cannot write the bundle"),
    ("cache-under-a-file", lambda t, f: ["bundle"] + f + ["--cache-dir",
                                                           str(_a_file(t)) + "/c"],
     "cannot create the cache folder"),
    ("unknown-flag", lambda t, f: ["bundle", "--frobnicate"], "unrecognized arguments"),
    ("unknown-command", lambda t, f: ["frobnicate"], "invalid choice"),
    ("images-bad-version", lambda t, f: ["images", "--kubernetes-version", "1.16"],
     "bad Kubernetes version"),
    ("images-bad-arch", lambda t, f: ["images", "--arch", "x86"], "unknown architecture"),
    ("verify-missing", lambda t, f: ["verify", str(t / "none.tar")], "does not exist"),
    ("verify-not-a-tar", lambda t, f: ["verify", str(_garbage(t))], "not a readable bundle"),
    ("verify-empty-folder", lambda t, f: ["verify", str(t)], "has no bundle.json"),
    # The cluster-side commands on a host (an empty --root) that is no master.
    ("status-not-a-master", lambda t, f: ["status", "--root", _root(t)],
     "not a master"),
    ("remove-node-bad-name", lambda t, f: ["remove-node", "Bad_Name!", "--root", _root(t)],
     "bad node name"),
    ("remove-node-not-a-master", lambda t, f: ["remove-node", "node-2", "--root", _root(t)],
     "not a master"),
    ("token-not-a-master", lambda t, f: ["token", "--root", _root(t)], "not a master"),
    ("reset-unconfirmed", lambda t, f: ["reset", "--root", _root(t)], "--yes"),
    ("master-unknown-cri", lambda t, f: ["master", "--cri", "podman", "--root", _root(t)],
     "invalid choice"),
]


def _root(tmp):
    path = tmp / "host-root"
    path.mkdir(exist_ok=True)
    return str(path)


def _garbage(tmp):
    path = tmp / "garbage.txt"
    path.write_text("this is not what you think\n")
    return path


def _fifo(tmp):
    path = str(tmp / "sums.fifo")
    os.mkfifo(path)
    return path


def _a_file(tmp):
    path = tmp / "a-file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(build, expected, run_cli, bundle_args, tmp_path):
    flags = list(bundle_args) + ["--output", _out(tmp_path),
                                 "--cache-dir", str(tmp_path / "cache")]
    rc, out, err = run_cli(*build(tmp_path, flags))
    assert rc == 2, err
    assert "Traceback" not in err and "error: unexpected" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert expected in errors[0], errors[0]
    assert ": " in errors[0][len("error: "):], "no 'what to do' part: " + errors[0]
    assert not os.path.exists(_out(tmp_path))
    root = tmp_path / "host-root"
    assert not root.exists() or os.listdir(str(root)) == [], "the host tree changed"


def test_insecure_registry_only_affects_the_hosts_named(run_cli, test_images,
                                                       make_bundle_args, tmp_path):
    """Plain HTTP is used only for the host named: naming another host
    leaves the test registry on verified HTTPS, which it cannot speak."""
    args = make_bundle_args()
    i = args.index("--insecure-registry")
    args[i + 1] = "127.0.0.2:5000"
    rc, out, err = run_cli("bundle", *args, "--output", tmp_path / "o.tar",
                           "--cache-dir", tmp_path / "c")
    assert rc != 0
    assert "--insecure-registry %s" % test_images.host in err
    assert not (tmp_path / "o.tar").exists()


def test_every_command_is_an_argv_list():
    """No shell strings anywhere: no shell=True, os.system or os.popen."""
    with open(os.path.join(REPO, "k8s_offline.py")) as handle:
        source = handle.read()
    assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", source)
