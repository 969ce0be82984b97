"""bundle --split: a bundle in 1 MiB parts plus its index, made by the real
bundle writer from the local registry and file server fixtures; verify,
master and join read the parts in place; every damaged-part case is refused
by name; the FAT32 warning of an unsplit bundle."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

import install_support as sup
from install_support import ko

NAME = "k8s-offline-%s-linux-amd64.tar" % sup.K8S_VERSION
PART = 1024 * 1024


@pytest.fixture(scope="module")
def bundles(run_cli, bundle_args, tmp_path_factory):
    """(split folder, unsplit .tar) of the same bundle; the split one has
    a docker-daemon-free plain content, in parts of 1 MiB."""
    out = tmp_path_factory.mktemp("split")
    cache = str(out / "cache")
    split = out / "split"
    whole = out / "whole"
    rc, _, err = run_cli("bundle", *bundle_args, "--split", "1M", "--output",
                         str(split / NAME), "--cache-dir", cache)
    assert rc == 0, err
    rc, _, err = run_cli("bundle", *bundle_args, "--output", str(whole / NAME),
                         "--cache-dir", cache)
    assert rc == 0, err
    return str(split), str(whole / NAME)


def parts_of(folder):
    return sorted(n for n in os.listdir(folder)
                  if n.startswith(NAME + ".") and n[len(NAME) + 1:].isdigit())


def copy_split(bundles, tmp_path):
    target = str(tmp_path / "stick")
    shutil.copytree(bundles[0], target)
    return target


def sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_parts_and_index_make_the_same_tarball(bundles):
    split, whole = bundles
    parts = parts_of(split)
    assert len(parts) >= 3, parts          # two whole parts to swap
    assert parts[0] == NAME + ".000"
    assert sorted(os.listdir(split)) == parts + [NAME + ko.PARTS_INDEX_SUFFIX]
    with open(os.path.join(split, NAME + ko.PARTS_INDEX_SUFFIX)) as handle:
        index = json.load(handle)
    assert index["bundle"] == NAME and index["part_size"] == PART
    assert [p["name"] for p in index["parts"]] == parts
    for entry in index["parts"]:
        path = os.path.join(split, entry["name"])
        assert os.path.getsize(path) == entry["size"] <= PART
        assert sha256_file(path) == entry["sha256"]
    # cat NAME.tar.0* > NAME.tar gives the unsplit bundle, byte for byte.
    joined = hashlib.sha256()
    for name in parts:
        with open(os.path.join(split, name), "rb") as handle:
            joined.update(handle.read())
    assert joined.hexdigest() == sha256_file(whole)
    assert index["size"] == os.path.getsize(whole)


@pytest.mark.parametrize("given", ["index", "tar", "first-part"])
def test_verify_reads_the_parts_in_place(run_cli, bundles, given):
    split = bundles[0]
    path = os.path.join(split, {"index": NAME + ko.PARTS_INDEX_SUFFIX,
                                "tar": NAME,
                                "first-part": NAME + ".000"}[given])
    rc, out, err = run_cli("verify", path, "--no-progress")
    assert rc == 0, err
    assert "OK:" in out
    assert not os.path.exists(os.path.join(split, NAME))   # nothing joined


def swap(folder, first, second):
    a, b = (os.path.join(folder, "%s.%03d" % (NAME, n)) for n in (first, second))
    os.rename(a, a + ".tmp")
    os.rename(b, a)
    os.rename(a + ".tmp", b)


def flip_byte(path, offset):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xff]))


def truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 1)


def relink(path):
    """The part as a link to the same bytes elsewhere."""
    os.rename(path, path + ".elsewhere")
    os.symlink(path + ".elsewhere", path)


def refifo(path):
    os.unlink(path)
    os.mkfifo(path)


DAMAGE = {
    "missing": (lambda d: os.unlink(os.path.join(d, NAME + ".002")),
                NAME + ".002 is missing"),
    "extra": (lambda d: shutil.copy(os.path.join(d, NAME + ".000"),
                                    os.path.join(d, NAME + ".%03d" % len(
                                        parts_of(d)))), "is not listed in"),
    "reordered": (lambda d: swap(d, 0, 1), NAME + ".000 fails its sha256"),
    "reordered-last": (lambda d: swap(d, 1, len(parts_of(d)) - 1),
                       NAME + ".001 has "),
    "damaged-middle": (lambda d: flip_byte(os.path.join(d, NAME + ".001"),
                                           PART // 2),
                       NAME + ".001 fails its sha256"),
    "damaged-last": (lambda d: flip_byte(
        os.path.join(d, parts_of(d)[-1]), 100), "fails its sha256"),
    "cut-short": (lambda d: truncate(os.path.join(d, NAME + ".001")),
                  NAME + ".001 has 1048575 bytes"),
    "a-link": (lambda d: relink(os.path.join(d, NAME + ".001")),
               "cannot read part %s.001: a link" % NAME),
    "a-fifo": (lambda d: refifo(os.path.join(d, NAME + ".001")),
               "part %s.001 is not a regular file" % NAME),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_verify_refuses_a_bad_part_by_name(run_cli, bundles, tmp_path, case):
    stick = copy_split(bundles, tmp_path)
    damage, expected = DAMAGE[case]
    damage(stick)
    rc, out, err = run_cli("verify", os.path.join(stick, NAME), "--no-progress")
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in lines[0], lines[0]
    if case == "damaged-last":
        assert parts_of(stick)[-1] in lines[0]


@pytest.mark.parametrize("field, value, expected", [
    ("name", "../etc/passwd", "parts[1].name"),
    ("name", NAME + ".005", "lists " + NAME + ".005 as part 1"),
    ("size", -1, "parts[1].size"),
    ("size", 12, "gives " + NAME + ".001 the size 12"),
    ("sha256", "ab" * 31, "parts[1].sha256"),
])
def test_a_hostile_index_is_refused_in_one_line(run_cli, bundles, tmp_path,
                                                field, value, expected):
    stick = copy_split(bundles, tmp_path)
    index_path = os.path.join(stick, NAME + ko.PARTS_INDEX_SUFFIX)
    with open(index_path) as handle:
        index = json.load(handle)
    index["parts"][1][field] = value
    with open(index_path, "w") as handle:
        json.dump(index, handle)
    rc, out, err = run_cli("verify", index_path, "--no-progress")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err


def test_a_missing_index_is_refused_in_one_line(run_cli, bundles, tmp_path):
    stick = copy_split(bundles, tmp_path)
    os.unlink(os.path.join(stick, NAME + ko.PARTS_INDEX_SUFFIX))
    rc, out, err = run_cli("verify", os.path.join(stick, NAME + ".000"),
                           "--no-progress")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert NAME + ko.PARTS_INDEX_SUFFIX in err


def tree(root):
    found = []
    for folder, _, files in os.walk(root):
        found += [os.path.join(folder, name) for name in files]
    return sorted(found)


def test_master_and_join_install_from_the_parts(bundles, tmp_path, monkeypatch,
                                                capsys):
    split = bundles[0]
    root = sup.make_root(str(tmp_path / "master"))
    runner = sup.install_fake(monkeypatch, root)
    join_file = str(tmp_path / "join.json")
    assert ko.main(["master", "--root", root, "--bundle",
                    os.path.join(split, NAME), "--no-progress", "--no-wait",
                    "--join-file", join_file]) == 0
    bundle = ko.Bundle(os.path.join(split, NAME))
    try:
        images = bundle.meta["images"]
    finally:
        bundle.close()
    assert set(ko.image_target(i, "k8s.gcr.io") for i in images) <= \
        set(runner.cluster.docker_images)
    worker = sup.make_root(str(tmp_path / "worker"))
    runner = sup.install_fake(monkeypatch, worker)
    path = sup.write_join_file(tmp_path, image_repository="k8s.gcr.io",
                               control_plane_nodes=["master-1"])
    assert ko.main(["join", "--root", worker, "--bundle",
                    os.path.join(split, NAME + ".000"), "--no-progress",
                    "--join-file", path, "--no-wait"]) == 0
    assert runner.ran("kubeadm", "join", "--config", ko.JOIN_CONFIG)
    assert "k8s.gcr.io/kube-proxy:" + sup.K8S_VERSION in runner.cluster.docker_images


def test_master_refuses_a_damaged_part_and_leaves_the_host(
        bundles, tmp_path, monkeypatch, capsys):
    stick = copy_split(bundles, tmp_path)
    flip_byte(os.path.join(stick, NAME + ".001"), PART // 2)
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    before = tree(root)
    assert ko.main(["master", "--root", root, "--bundle",
                    os.path.join(stick, NAME), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "part %s.001 fails its sha256 check" % NAME in err
    assert "Traceback" not in err
    log = os.path.join(root, ko.INSTALL_LOG.lstrip("/"))
    assert [p for p in tree(root) if p != log] == before   # only its log
    assert not [a for a in runner.commands() if a[:2] == ["docker", "load"]]


def test_images_load_into_containerd_from_the_parts(bundles, containerd,
                                                    tmp_path):
    ctx = sup.install_context(os.path.join(bundles[0], NAME + ko.PARTS_INDEX_SUFFIX),
                              str(tmp_path), "containerd", "master",
                              containerd.sock)
    try:
        ko.verify_bundle(ctx.bundle, progress=False)
        ko.phase_images(ctx)
        have = ko.containerd_images(ctx)
        for image in ctx.bundle.meta["images"]:
            name = ko._normalize_image_name(ko.image_target(image, "k8s.gcr.io"))
            assert have.get(name) == image["manifest_digest"], name
    finally:
        ctx.close()


def test_a_rerun_is_up_to_date_and_switching_form_removes_the_other(
        run_cli, bundle_args, bundles, tmp_path):
    out = str(tmp_path / "b")
    cache = str(tmp_path / "cache")
    output = os.path.join(out, NAME)
    rc, _, err = run_cli("bundle", *bundle_args, "--split", "1M", "--output",
                         output, "--cache-dir", cache)
    assert rc == 0, err
    stamps = dict((n, os.stat(os.path.join(out, n)).st_mtime_ns)
                  for n in os.listdir(out))
    rc, _, err = run_cli("bundle", *bundle_args, "--split", "1M", "--output",
                         output, "--cache-dir", cache)
    assert rc == 0, err
    assert "up to date" in err
    assert stamps == dict((n, os.stat(os.path.join(out, n)).st_mtime_ns)
                          for n in os.listdir(out))
    rc, _, err = run_cli("bundle", *bundle_args, "--output", output,
                         "--cache-dir", cache)
    assert rc == 0, err
    assert os.listdir(out) == [NAME]
    rc, _, err = run_cli("bundle", *bundle_args, "--split", "2M", "--output",
                         output, "--cache-dir", cache)
    assert rc == 0, err
    assert NAME not in os.listdir(out)
    assert sorted(os.listdir(out)) == parts_of(out) + [NAME + ko.PARTS_INDEX_SUFFIX]


def test_an_unsplit_bundle_of_the_fat32_size_warns(run_cli, bundle_args,
                                                   tmp_path):
    cache = str(tmp_path / "cache")
    rc, _, err = run_cli("bundle", *bundle_args, "--output",
                         str(tmp_path / "a" / NAME), "--cache-dir", cache)
    assert rc == 0, err
    assert "FAT32" not in err
    size = os.path.getsize(str(tmp_path / "a" / NAME))
    rc, _, err = run_cli("bundle", *bundle_args, "--output",
                         str(tmp_path / "b" / NAME), "--cache-dir", cache,
                         env={ko.LARGE_BUNDLE_ENV: str(size)})
    assert rc == 0, err
    warning = [line for line in err.splitlines() if "FAT32" in line]
    assert len(warning) == 1 and "--split fat32" in warning[0], err
    rc, _, err = run_cli("bundle", *bundle_args, "--split", "1M", "--output",
                         str(tmp_path / "c" / NAME), "--cache-dir", cache,
                         env={ko.LARGE_BUNDLE_ENV: "1"})
    assert rc == 0, err
    assert "FAT32" not in err


@pytest.mark.parametrize("text, size", [
    ("fat32", 4 * 1024 ** 3 - 1), ("FAT32", 4 * 1024 ** 3 - 1),
    ("4G", 4 * 1024 ** 3), ("700M", 700 * 1024 ** 2), ("1M", 1024 ** 2),
    ("2GiB", 2 * 1024 ** 3), ("1048576", 1048576)])
def test_split_sizes(text, size):
    assert ko.parse_split_size(text) == size


@pytest.mark.parametrize("text", ["", "4X", "-1M", "100K", "0", "1.5G",
                                  "4G\n1"])
def test_bad_split_sizes_are_refused(text):
    with pytest.raises(ko.UserError):
        ko.parse_split_size(text)


def test_bad_split_on_the_command_line_is_one_line(run_cli, tmp_path):
    rc, out, err = run_cli("bundle", "--split", "10K", "--output",
                           str(tmp_path / NAME), "--no-progress")
    assert rc == 2
    assert err.strip().splitlines() == [
        "error: bad --split 10K: parts must be at least 1M"]
    assert os.listdir(str(tmp_path)) == []


def test_python36_reads_the_parts_and_names_a_bad_one(bundles, tmp_path,
                                                      python36):
    stick = copy_split(bundles, tmp_path)
    argv = [python36, "-S", os.path.join(sup.REPO, "k8s_offline.py"), "verify",
            os.path.join(stick, NAME), "--no-progress"]
    ok = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    swap(stick, 0, 1)
    bad = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: part %s.000 fails its sha256 check: it is damaged, from "
        "another bundle, or the parts were renamed out of order; recopy it"
        % NAME]


def test_the_tool_comes_out_of_the_first_part_alone(bundles, tmp_path):
    """The hosts need k8s_offline.py to read the parts: bundle writes it
    right after bundle.json, so GNU tar takes it from NAME.tar.000 alone."""
    top = NAME[:-len(".tar")]
    result = subprocess.run(
        ["tar", "-xf", os.path.join(bundles[0], NAME + ".000"), "--occurrence",
         top + "/k8s_offline.py"], cwd=str(tmp_path), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(sup.REPO, "k8s_offline.py"), "rb") as handle:
        assert (tmp_path / top / "k8s_offline.py").read_bytes() == handle.read()


def test_parts_writer_stops_at_the_most_parts_and_leaves_nothing(tmp_path):
    output = str(tmp_path / NAME)
    writer = ko.PartsWriter(output, 512, ".partial-1")
    with pytest.raises(ko.UserError) as refused:
        for _ in range(ko.MAX_PARTS + 1):
            writer.write(b"x" * 512)
    assert "more than %d parts" % ko.MAX_PARTS in str(refused.value)
    assert len(os.listdir(str(tmp_path))) == ko.MAX_PARTS
    writer.remove()
    assert os.listdir(str(tmp_path)) == []


def test_a_swap_inside_one_member_names_the_first_wrong_part(tmp_path):
    """Parts 001 and 002 swapped where one member covers both (the lab's
    kubeadm binary did): the read that completes 001 refuses it, and the
    check of every part that follows still names 001, not 002."""
    output = str(tmp_path / NAME)
    writer = ko.PartsWriter(output, 4096, ".partial-1")
    writer.write(os.urandom(4 * 4096 + 100))
    writer.close()
    ko.publish_parts(output, writer)
    swap(str(tmp_path), 1, 2)
    reader = ko.PartsReader(output + ko.PARTS_INDEX_SUFFIX)
    with pytest.raises(ko.BundleError) as first:
        while reader.read(1000):
            pass
    assert "part %s.001 fails" % NAME in str(first.value)
    with pytest.raises(ko.BundleError) as again:
        reader.require_all_parts()
    assert "part %s.001 fails" % NAME in str(again.value)
