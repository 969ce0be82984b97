"""reset: removes what master added and nothing else (the iptables rules
included); reset and token --dry-run change nothing."""

import os

import install_support as sup
from install_support import ko, rpath, run


def test_dry_run_reset_join_token_change_nothing(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    before = sup.snapshot(root)
    runner.calls[:] = []
    assert ko.main(["reset", "--root", root, "--dry-run"]) == 0
    assert ko.main(["token", "--root", root, "--bundle", bundle_dir,
                    "--dry-run", "--join-file", str(tmp_path / "t.json")]) == 0
    assert not os.path.exists(str(tmp_path / "t.json"))
    assert sup.snapshot(root) == before
    assert all(argv[0] in ("iptables-save", "ip6tables-save")
               for argv in runner.commands())


def test_reset_removes_what_we_added(host, bundle_dir, tmp_path):
    root, runner = host
    assert run(root, bundle_dir, "master", "--no-wait", "--join-file",
               str(tmp_path / "j.json")) == 0
    sup.write(root, "/etc/cni/net.d/10-flannel.conflist", "{}")
    os.makedirs(rpath(root, "/sys/class/net/flannel.1"))
    runner.calls[:] = []
    runner.expect("ip", "link", "delete", "flannel.1")
    assert ko.main(["reset", "--root", root, "--yes"]) == 0
    for path in ("/etc/kubernetes", "/root/.kube/config", ko.STATE_DIR,
                 "/etc/cni/net.d/10-flannel.conflist"):
        assert not os.path.exists(rpath(root, path)), path
    assert os.path.exists(rpath(root, "/usr/bin/kubeadm"))
    cmds = [" ".join(a) for a in runner.commands()]
    assert cmds[0].startswith("kubeadm reset -f")
    assert "ip link delete flannel.1" in cmds
    assert "ip link delete cni0" not in cmds
    assert "iptables-restore" in cmds
    restored = runner.cluster.iptables_restored
    assert len(restored) == 1 and "MASQUERADE" in restored[0]
    assert "KUBE-" not in restored[0]


def test_iptables_filter_keeps_other_rules():
    text = ("*nat\n:KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n"
            "-A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -s 10.244.0.0/16 "
            "-j RETURN\n-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE\nCOMMIT\n")
    new, removed = ko.filter_iptables_save(text, "10.244.0.0/16")
    assert removed == 3
    assert "MASQUERADE" in new and ":DOCKER" in new and "KUBE" not in new
    assert "10.244" not in new and new.endswith("COMMIT\n")
