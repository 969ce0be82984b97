"""systemd units come from the bundle (verified bytes), the bundled static
runtime installs containerd.service as well as docker.service, and the code
binds every module-level name once."""

import ast
import json
import os

import install_support as sup
from install_support import ko


def master(root, bundle, *extra):
    return ["master", "--root", root, "--bundle", bundle, "--no-progress",
            "--no-wait", "--skip-phases", "join-file"] + list(extra)


def host_bytes(root, path):
    with open(os.path.join(root, path.lstrip("/")), "rb") as handle:
        return handle.read()


def bundle_bytes(bundle, unit):
    with open(os.path.join(bundle, "systemd", unit), "rb") as handle:
        return handle.read()


def test_kubelet_units_are_the_bundles_own(tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    assert ko.main(master(root, bundle)) == 0
    assert host_bytes(root, ko.kubelet_unit_files("/etc/systemd/system")["kubelet.service"]) == bundle_bytes(bundle, "kubelet.service")
    assert host_bytes(root, ko.kubelet_unit_files("/etc/systemd/system")["10-kubeadm.conf"]) == bundle_bytes(bundle,
                                                               "10-kubeadm.conf")


def _starts_when_enabled(runner, service, flag):
    original = runner.answer

    def answer(argv):
        if argv[:4] == ["systemctl", "enable", "--now", service]:
            setattr(runner.cluster, flag, True)
        if flag == "containerd_up" and argv[0] == "ctr" and "version" in argv \
                and not runner.cluster.containerd_up:
            return 1, ""
        return original(argv)
    runner.answer = answer


def test_bundled_docker_installs_containerd_and_docker_units(tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"), with_docker=True)
    runner.cluster.docker_running = False
    _starts_when_enabled(runner, "docker", "docker_running")
    assert ko.main(master(root, bundle)) == 0
    assert host_bytes(root, ko.RUNTIME_UNITS["docker.service"]) == bundle_bytes(bundle, "docker.service")
    assert host_bytes(root, "/etc/systemd/system/containerd.service") == \
        bundle_bytes(bundle, "containerd.service")
    enables = [argv[3] for argv in runner.ran("systemctl", "enable", "--now")]
    assert enables == ["containerd", "docker"]


def test_bundled_containerd_serves_cri_containerd(tmp_path, monkeypatch):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"), with_docker=True)
    runner.cluster.containerd_up = False
    _starts_when_enabled(runner, "containerd", "containerd_up")
    assert ko.main(master(root, bundle, "--cri", "containerd")) == 0
    assert host_bytes(root, "/etc/systemd/system/containerd.service") == \
        bundle_bytes(bundle, "containerd.service")
    assert not os.path.exists(os.path.join(root, ko.RUNTIME_UNITS["docker.service"].lstrip("/")))
    assert os.access(os.path.join(root, "usr/bin/containerd"), os.X_OK)
    assert runner.ran("systemctl", "enable", "--now", "containerd")


def test_a_bundle_without_its_units_is_refused_before_the_host_changes(
        tmp_path, monkeypatch, capsys):
    root = sup.make_root(str(tmp_path / "root"))
    runner = sup.install_fake(monkeypatch, root)
    bundle = sup.make_bundle(str(tmp_path / "b"))
    meta_path = os.path.join(bundle, ko.BUNDLE_JSON)
    with open(meta_path) as handle:
        meta = json.load(handle)
    del meta["systemd"]["10-kubeadm.conf"]
    data = ko.canonical_json(meta)
    with open(meta_path, "wb") as handle:
        handle.write(data)
    with open(os.path.join(bundle, ko.BUNDLE_JSON_SHA), "wb") as handle:
        handle.write(ko.bundle_json_sha_line(data))
    before = sup.snapshot(root)
    assert ko.main(master(root, bundle)) == 2
    err = capsys.readouterr().err
    assert "error: the bundle has no 10-kubeadm.conf: rebuild it" in err
    assert sup.snapshot(root) == before
    assert runner.calls == []


def test_every_module_level_name_is_bound_once_and_no_function_repeats():
    with open(ko.__file__) as handle:
        tree = ast.parse(handle.read())
    names, bodies = {}, {}
    for node in tree.body:
        targets = []
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            targets = [node.name]
            if isinstance(node, ast.FunctionDef):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and \
                        isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                key = (ast.dump(node.args), "".join(ast.dump(b) for b in body))
                assert key not in bodies, "%s repeats %s" % (node.name, bodies[key])
                bodies[key] = node.name
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        for name in targets:
            assert name not in names, "%s is bound twice (lines %d and %d)" % (
                name, names[name], node.lineno)
            names[name] = node.lineno
