"""`cluster` over real SSH: a real sshd on loopback addresses 127.0.0.2-4
(one address per "host"), a real ssh client, one non-root user with a sudo
password per host (its home is the host's disk), real sudo -S.

What runs for real on the far side: preflight (uname, df, stat, sudo),
the copy and its same-bytes skip, this repository's k8s_offline.py
`verify` of a real bundle, `cluster probe`, `status`.  kubeadm cannot run
here, so master, join and token are answered by a stand-in program (the
STAND_IN below, copied to the hosts in place of k8s_offline.py through
K8SO_CLUSTER_TOOL) that records what it was asked, as root or not, and
hands a join file from the master to the joins; the real master and join
over ssh are the lab's (tests/e2e) to prove.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import install_support as sup
from fixtures import sshkeys

SCRIPT = os.path.join(sup.REPO, "k8s_offline.py")
USERS = ("k8so20a", "k8so20b", "k8so20c")
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PASSWORD = "s3cret sudo-pw 20"
SUDOERS = "/etc/sudoers.d/k8so20-cluster-tests"
# The operator's Python (CLUSTER_TEST_PYTHON=~/.pyenv/versions/3.6.15/bin/python3
# runs the cluster side on 3.6; the hosts run their own python3).
PYTHON = os.environ.get("CLUSTER_TEST_PYTHON") or sys.executable

STAND_IN = r'''#!/usr/bin/env python3
"""A stand-in for k8s_offline.py on the far side of cluster's ssh."""
import json, os, sys
REAL, SHARED = %(real)r, %(shared)r
here = os.path.dirname(os.path.abspath(__file__))
user = os.path.basename(os.path.dirname(here))
args = sys.argv[1:]
os.umask(0)
with open(os.path.join(SHARED, "calls.log"), "a") as log:
    log.write(json.dumps({"user": user, "argv": args,
                          "euid": os.geteuid()}) + "\n")
if args[0] == "verify":
    os.execv(sys.executable, [sys.executable, REAL] + args)
def state_of(name):
    try:
        with open(os.path.join(SHARED, name + ".json")) as handle:
            return json.load(handle)
    except IOError:
        return {}
def save(**changes):
    state = state_of(user)
    state.update(changes)
    with open(os.path.join(SHARED, user + ".json"), "w") as handle:
        json.dump(state, handle)
def flag(name):
    return args[args.index(name) + 1]
if args[:2] == ["cluster", "probe"]:
    mine = state_of(user)
    out = {"hostname": user, "initialized": bool(mine.get("initialized")),
           "joined": bool(mine.get("joined"))}
    if out["initialized"]:
        out["nodes"] = dict((state_of(name[:-5]).get("node"), True)
                            for name in os.listdir(SHARED)
                            if name.endswith(".json")
                            and state_of(name[:-5]).get("joined"))
    print(json.dumps(out))
    sys.exit(0)
if os.path.exists(os.path.join(SHARED, "fail-" + user)):
    sys.stderr.write("stand-in: %%s told to fail\n" %% args[0])
    sys.exit(1)
if os.geteuid() != 0:
    sys.stderr.write("stand-in: must run as root\n")
    sys.exit(1)
if args[0] in ("master", "token"):
    os.umask(0o077)
    with open(flag("--join-file"), "w") as handle:
        json.dump({"token": "stand-in-token-%%d" %% len(open(os.path.join(
            SHARED, "calls.log")).readlines())}, handle)
    os.umask(0)
    if args[0] == "master":
        save(initialized=True, joined=True, node=flag("--node-name")
             if "--node-name" in args else user)
elif args[0] == "join":
    import time
    began = time.time()
    cut = os.path.join(SHARED, "cut-" + user)
    if os.path.exists(cut):
        # the cable is pulled mid-join: this host's sshd port answers every
        # packet with a reset from now on (the test takes the rule away)
        import subprocess
        subprocess.check_call(["iptables", "-I", "INPUT", "-p", "tcp",
                               "--dport", open(cut).read().strip(), "-j",
                               "REJECT", "--reject-with", "tcp-reset"])
        for _ in range(100):
            sys.stdout.write("joining...\n")
            sys.stdout.flush()
            time.sleep(0.1)
        sys.exit(0)
    if os.path.exists(os.path.join(SHARED, "slow")):
        time.sleep(1.5)
    with open(flag("--join-file")) as handle:
        token = json.load(handle)["token"]
    if not token.startswith("stand-in-token-"):
        sys.exit("stand-in: a join file of no master")
    save(joined=True, token=token, began=began, ended=time.time(),
         node=flag("--node-name") if "--node-name" in args else user)
elif args[0] == "remove-node":
    if not state_of(user).get("initialized"):
        sys.exit("stand-in: remove-node on no master")
    for name in os.listdir(SHARED):
        if name.endswith(".json") and state_of(name[:-5]).get("node") == \
                args[1]:
            removed = dict(state_of(name[:-5]), joined=False, removed=True)
            with open(os.path.join(SHARED, name), "w") as handle:
                json.dump(removed, handle)
elif args[0] == "reset":
    save(initialized=False, joined=False, reset=True)
elif args[0] == "status":
    print("stand-in status of %%s" %% user)
else:
    sys.exit("stand-in: unknown command %%s" %% args)
'''


def free_port(address):
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def sh(*argv, **kwargs):
    return subprocess.run(list(argv), check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          **kwargs)


class Lab(object):
    """The sshd, its users and the client's key and known_hosts."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="k8so20-ssh-")
        os.chmod(self.base, 0o755)
        self.shared = os.path.join(self.base, "shared")
        os.mkdir(self.shared)
        # not sticky: fs.protected_regular would keep root from appending
        # to a record a user made first
        os.chmod(self.shared, 0o777)
        self.port = free_port(ADDRESSES[0])
        self.key = os.path.join(self.base, "id_client")
        self.known_hosts = os.path.join(self.base, "known_hosts")
        self.password_file = os.path.join(self.base, "sudo-password")
        self.sshd = None

    def start(self):
        for user in USERS:
            sshkeys.add_user(user, PASSWORD)
        with open(SUDOERS, "w") as handle:
            for user in USERS:
                handle.write("%s ALL=(ALL:ALL) ALL\nDefaults:%s lecture=never"
                             "\n" % (user, user))
        os.chmod(SUDOERS, 0o440)
        self.key, hostkey, public, keys = sshkeys.make_keys(self.base, USERS)
        with open(self.known_hosts, "w") as handle:
            for address in ADDRESSES:
                handle.write("[%s]:%d %s\n" % (address, self.port, public))
        config = os.path.join(self.base, "sshd_config")
        with open(config, "w") as handle:
            handle.write("\n".join(
                ["Port %d" % self.port] +
                ["ListenAddress %s" % address for address in ADDRESSES] +
                ["HostKey %s" % hostkey,
                 "PidFile %s/sshd.pid" % self.base,
                 "AuthorizedKeysFile %s/%%u" % keys,
                 "StrictModes no", "UsePAM no", "PasswordAuthentication no",
                 "KbdInteractiveAuthentication no", "PermitRootLogin no",
                 "AllowUsers %s" % " ".join(USERS), "LogLevel VERBOSE", ""]))
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", 0o755)
        self.sshd_log = open(os.path.join(self.base, "sshd.log"), "w")
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f",
                                      config], stdout=self.sshd_log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        for address in ADDRESSES:
            while True:
                try:
                    socket.create_connection((address, self.port), 1).close()
                    break
                except OSError:
                    assert self.sshd.poll() is None, self.read_sshd_log()
                    assert time.time() < deadline, "sshd did not listen"
                    time.sleep(0.1)
        with open(self.password_file, "w") as handle:
            handle.write(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)

    def read_sshd_log(self):
        with open(os.path.join(self.base, "sshd.log")) as handle:
            return handle.read()

    def stop(self):
        if self.sshd is not None:
            self.sshd.terminate()
            self.sshd.wait(10)
        for user in USERS:
            subprocess.call(["userdel", "-r", "-f", user], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        if os.path.exists(SUDOERS):
            os.unlink(SUDOERS)
        shutil.rmtree(self.base, ignore_errors=True)

    def stand_in(self):
        path = os.path.join(self.base, "stand_in.py")
        with open(path, "w") as handle:
            handle.write(STAND_IN % {"real": SCRIPT, "shared": self.shared})
        os.chmod(path, 0o755)
        return path

    def reset_hosts(self):
        """Every host's home and the stand-in's records empty again."""
        for user in USERS:
            shutil.rmtree("/home/%s/k8s-offline" % user, ignore_errors=True)
        for name in os.listdir(self.shared):
            os.unlink(os.path.join(self.shared, name))

    def inventory(self, where, users=USERS, addresses=ADDRESSES, extra=""):
        lines = ["[all]"]
        for number, (user, address) in enumerate(zip(users, addresses), 1):
            lines.append("node%d ansible_host=%s ansible_port=%d "
                         "ansible_user=%s ansible_become=true" % (
                             number, address, self.port, user))
        lines += ["", "[kube_control_plane]", "node1", "", "[etcd]", "node1",
                  "", "[kube_node]"] + ["node%d" % n for n in
                                        range(2, len(users) + 1)]
        lines += ["", "[k8s_cluster:children]", "kube_control_plane",
                  "kube_node", "", "[calico_rr]", "", "[bastion]", "",
                  "[all:vars]",
                  "ansible_ssh_private_key_file=%s" % self.key, extra, ""]
        path = os.path.join(where, "inventory.ini")
        with open(path, "w") as handle:
            handle.write("\n".join(lines))
        return path

    def calls(self):
        path = os.path.join(self.shared, "calls.log")
        if not os.path.exists(path):
            return []
        with open(path) as handle:
            return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def lab():
    lab = Lab()
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def bundle(tmp_path):
    return sup.make_bundle(str(tmp_path), as_tar=True)


def cluster(lab, tmp_path, *argv, **kwargs):
    """Run `k8s_offline.py cluster ARGV` in tmp_path -> (rc, out, err)."""
    env = dict(os.environ)
    env.pop("K8SO_CLUSTER_TOOL", None)
    if kwargs.get("stand_in", True):
        env["K8SO_CLUSTER_TOOL"] = lab.stand_in()
    if "--known-hosts" not in argv:
        argv += ("--known-hosts", lab.known_hosts)
    proc = subprocess.run(
        [PYTHON, SCRIPT, "cluster"] + list(argv), cwd=str(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def host_logs(tmp_path):
    folder = tmp_path / "k8s-offline-cluster-logs"
    if not folder.is_dir():
        return ""
    return "".join(path.read_text() for path in sorted(folder.iterdir()))


def ran(lab, command):
    return [(call["user"], call["euid"]) for call in lab.calls()
            if call["argv"][0] == command]


def test_up_sets_up_every_host_then_a_second_run_changes_nothing(
        lab, tmp_path, bundle):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path))
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress")
    assert rc == 0, err
    # master first, as root through sudo -S, then the two workers joined
    # with the join file the master wrote; every node Ready.
    assert ran(lab, "master") == [("k8so20a", 0)]
    assert sorted(ran(lab, "join")) == [("k8so20b", 0), ("k8so20c", 0)]
    verified = ran(lab, "verify")
    assert sorted(user for user, _ in verified) == list(USERS)
    assert all(euid != 0 for _, euid in verified)   # verify needs no root
    for user in USERS[1:]:
        # the join file travelled and was removed after the join
        assert not os.path.exists("/home/%s/k8s-offline/%s" % (
            user, "k8s-offline-join.json"))
        with open(os.path.join(lab.shared, user + ".json")) as handle:
            assert json.load(handle)["token"].startswith("stand-in-token-")
    master_argv = [c["argv"] for c in lab.calls() if c["argv"][0] == "master"]
    assert master_argv[0][master_argv[0].index("--node-name") + 1] == "node1"
    assert "--allow-pods-on-master" not in master_argv[0]
    assert "--upload-certs" not in master_argv[0]
    for phase in ("preflight", "copy", "verify", "master", "workers", "wait"):
        assert "[%s] node1" % phase in err or phase in ("workers",), phase
    assert "[workers] node2 (worker): done" in err
    assert "[wait] node3 (worker): Ready" in err
    assert out.count("Ready") == 3 and "HOST" in out       # the summary
    logs = host_logs(tmp_path)
    assert "verify --no-progress" in logs and PASSWORD not in logs + out + err
    for user in USERS:      # the real tool and the bundle, byte for byte
        assert sup.sha256(open("/home/%s/k8s-offline/%s" % (
            user, os.path.basename(bundle)), "rb").read()) == sup.sha256(
                open(bundle, "rb").read())
    before = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress")
    assert rc == 0, err
    again = [c["argv"][0] for c in lab.calls()[before:]]
    assert "master" not in again and "join" not in again, again
    assert "token" not in again
    assert err.count("skipped: holds the same bytes") == 3
    assert "[master] node1 (control-plane): skipped: already a control plane" \
        in err


def test_a_failed_worker_stops_only_itself_and_a_rerun_finishes_it(
        lab, tmp_path, bundle):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path))
    open(os.path.join(lab.shared, "fail-k8so20c"), "w").close()
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress", "--parallel",
                           "2")
    assert rc == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cluster up failed on 1 of 3 hosts: node3 "
                           "(workers: join failed (exit 1): stand-in: join told "
                           "to fail)"), last
    assert "Traceback" not in err
    assert sorted(u for u, _ in ran(lab, "join")) == ["k8so20b", "k8so20c"]
    assert not os.path.exists(os.path.join(lab.shared, "k8so20c.json"))
    assert "[wait] node2 (worker): Ready" in err
    os.unlink(os.path.join(lab.shared, "fail-k8so20c"))
    before = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress")
    assert rc == 0, err
    again = [(c["user"], c["argv"][0]) for c in lab.calls()[before:]
             if c["argv"][0] not in ("verify", "cluster")]
    # a fresh join file from the done master, then the one missing join
    assert again == [("k8so20a", "token"), ("k8so20c", "join")], again


def test_a_failed_master_stops_every_join(lab, tmp_path, bundle):
    lab.reset_hosts()
    open(os.path.join(lab.shared, "fail-k8so20a"), "w").close()
    rc, out, err = cluster(lab, tmp_path, "up", "-i", lab.inventory(
        str(tmp_path)), "--bundle", bundle, "--become-password-file",
        lab.password_file, "--no-progress")
    assert rc == 1
    assert ran(lab, "join") == []
    assert "[master] node2 (worker): skipped: the first control plane node1 " \
        "failed" in err
    assert "node1 (master: master failed (exit 1)" in err.splitlines()[-1]


def test_a_host_in_both_groups_loses_its_taint(lab, tmp_path, bundle):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path), users=USERS[:1],
                              addresses=ADDRESSES[:1])
    with open(inventory, "a") as handle:
        handle.write("\n[kube_node]\nnode1\n")
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress")
    assert rc == 0, err
    master = [c["argv"] for c in lab.calls() if c["argv"][0] == "master"]
    assert "--allow-pods-on-master" in master[0]
    assert "control-plane,worker" in out


EXTRA_CONFIG = ("apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
                "kind: KubeProxyConfiguration\nconntrack:\n  maxPerCore: 0\n")


def test_a_kubeadm_config_extra_here_goes_to_the_first_master_only(
        lab, tmp_path, bundle):
    """master's --kubeadm-config-extra, given once to cluster up: the file
    on this machine travels to the first control plane (0600, beside the
    bundle) and master gets its path there; the joins never see it."""
    lab.reset_hosts()
    extra = tmp_path / "extra.yaml"
    extra.write_text(EXTRA_CONFIG)
    inventory = lab.inventory(str(tmp_path))
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress",
                           "--kubeadm-config-extra", str(extra))
    assert rc == 0, err
    master = [c["argv"] for c in lab.calls() if c["argv"][0] == "master"][0]
    there = "/home/%s/k8s-offline/kubeadm-config-extra.yaml" % USERS[0]
    assert master[master.index("--kubeadm-config-extra") + 1] == there
    with open(there) as handle:
        assert handle.read() == EXTRA_CONFIG
    assert os.stat(there).st_mode & 0o777 == 0o600
    for call in lab.calls():
        if call["argv"][0] == "join":
            assert "--kubeadm-config-extra" not in call["argv"]
    for user in USERS[1:]:
        assert not os.path.exists("/home/%s/k8s-offline/kubeadm-config-"
                                  "extra.yaml" % user)
    # the dry run names it; a file master would refuse reaches no host
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--dry-run", "--kubeadm-config-extra",
                           str(extra))
    planned = [line for line in out.splitlines() if "[master]" in line]
    assert rc == 0 and len(planned) == 2, out
    assert "cat '>' '~/k8s-offline/kubeadm-config-extra.yaml'" in planned[0]
    assert "--kubeadm-config-extra '~/k8s-offline/kubeadm-config-extra.yaml'" \
        in planned[1], planned
    lab.reset_hosts()
    extra.write_text("kind: ClusterConfiguration\napiVersion: "
                     "kubeadm.k8s.io/v1beta2\n")
    lines, logins = bad(lab, tmp_path, bundle, "-i", inventory,
                        "--become-password-file", lab.password_file,
                        "--kubeadm-config-extra", str(extra))
    assert lines[-1].startswith("error: ClusterConfiguration in %s is "
                                "generated by this tool" % extra), lines
    assert logins == 0


def test_sudo_password_from_a_file_never_reaches_argv_logs_or_output(
        lab, tmp_path, bundle):
    """The real tool this time (no stand-in): status over ssh as root
    through sudo -S; this machine runs no cluster, so status refuses."""
    inventory = up_then_the_real_tool(lab, tmp_path, bundle, 1)
    rc, out, err = cluster(lab, tmp_path, "status", "-i", inventory,
                           "--become-password-file", lab.password_file,
                           stand_in=False)
    logs = host_logs(tmp_path)
    assert PASSWORD not in logs + out + err
    assert "sudo -S -p '' --" in logs
    # the real tool ran as root (sudo took the password) and found no
    # cluster here: one line, naming the host
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("error: node1: status "
                                                   "failed (exit 2)"), err


def up_then_the_real_tool(lab, tmp_path, bundle, count):
    """A real master would change this machine: the stand-in sets the first
    COUNT hosts up, then the real tool replaces it there; the inventory."""
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path), users=USERS[:count],
                              addresses=ADDRESSES[:count])
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress", "--no-wait")
    assert rc == 0, err
    for user in USERS[:count]:
        shutil.copy(SCRIPT, "/home/%s/k8s-offline/k8s_offline.py" % user)
    return inventory


def test_probe_runs_the_real_tool_as_root(lab, tmp_path, bundle):
    up_then_the_real_tool(lab, tmp_path, bundle, 1)
    proc = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=%s"
         % lab.known_hosts, "-i", lab.key, "-p", str(lab.port), "-l",
         USERS[0], ADDRESSES[0], "sudo -S -p '' -- python3 "
         "k8s-offline/k8s_offline.py cluster probe"], input=PASSWORD + "\n",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert state == {"hostname": socket.gethostname().lower(),
                     "initialized": os.path.exists("/etc/kubernetes/admin.conf"),
                     "joined": os.path.exists("/etc/kubernetes/kubelet.conf")}


@pytest.mark.parametrize("state,initialized,joined", [
    (None, True, True),                       # set up by hand: left alone
    ({"role": "worker", "join": "done"}, False, True),
    ({"role": "worker", "join": "started"}, False, False),
    ({"role": "master", "init": "started"}, False, False),
    ({"role": "master", "init": "done"}, True, True)])
def test_probe_calls_a_half_done_join_or_init_not_done(
        tmp_path, monkeypatch, capsys, state, initialized, joined):
    """A join cut off mid-way (its ssh session killed) can leave the
    kubelet to finish its TLS bootstrap, so kubelet.conf appears: the
    tool's own record says the join never finished, and the next
    cluster up must run it again (join resets a half-done join first)."""
    from install_support import ko
    root = str(tmp_path)
    sup.write(root, ko.KUBELET_CONF, "apiVersion: v1\nkind: Config\n", 0o600)
    if state is None or state["role"] == "master":
        sup.write(root, ko.ADMIN_CONF, "apiVersion: v1\nkind: Config\n", 0o600)
    if state is not None:
        sup.write(root, ko.STATE_FILE, json.dumps(state), 0o600)
    monkeypatch.setattr(ko, "Runner", lambda dry_run=False: FailingRunner())
    assert ko.main(["cluster", "probe", "--root", root]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (got["initialized"], got["joined"]) == (initialized, joined)


class FailingRunner(object):
    """kubectl on a host with no API server."""

    def run(self, argv, **kwargs):
        from install_support import ko
        return ko.CommandResult(argv, 1, "", "connection refused")


@pytest.mark.parametrize("stderr,says", [
    # the lab saw this: node3's sshd killed with its session mid-join; ssh
    # printed nothing of its own, the last line was the remote tool's
    ("[join] kubeadm join from a generated config file\n",
     "lost the ssh connection (port 22) in the middle of join: check the "
     "host and its network"),
    ("", "lost the ssh connection (port 22) in the middle of join"),
    ("[join] started\nConnection to 10.0.0.3 closed by remote host.\n",
     "lost the ssh connection (port 22) in the middle of join"),
    ("ssh: connect to host 10.0.0.3 port 22: Connection refused\n",
     "cannot reach it over ssh (port 22): ssh: connect to host 10.0.0.3 "
     "port 22: Connection refused"),
    ("Timeout, server 10.0.0.3 not responding.\n",
     "cannot reach it over ssh (port 22): Timeout, server 10.0.0.3 not "
     "responding.")])
def test_an_ssh_failure_names_ssh_s_reason_not_the_command_s_output(
        stderr, says):
    from install_support import ko
    host = ko.ClusterHost("node3", 1)
    result = ko.CommandResult(["ssh"], 255, "", stderr)
    assert ko.ssh_failure(host, result, "join").startswith(says)


def test_dry_run_prints_the_plan_and_reaches_no_host(lab, tmp_path, bundle):
    lab.reset_hosts()
    before = lab.read_sshd_log().count("Connection from")
    rc, out, err = cluster(lab, tmp_path, "up", "-i", lab.inventory(
        str(tmp_path)), "--bundle", bundle, "--dry-run",
        "--become-password-file", lab.password_file)
    assert rc == 0, err
    assert lab.read_sshd_log().count("Connection from") == before
    assert lab.calls() == []
    assert not (tmp_path / "k8s-offline-cluster-logs").exists()
    assert "[master] node1 (control-plane): would run: ssh k8so20a@127.0.0.2 " \
        "sudo -S -p '' -- python3" in out
    assert "join --bundle" in out and "[workers] node3 (worker)" in out
    assert PASSWORD not in out + err


def bad(lab, tmp_path, bundle, *argv):
    before = lab.read_sshd_log().count("Accepted publickey")
    calls = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, "up", "--bundle", bundle,
                           "--no-progress", *argv)
    assert rc == 2, (out, err)
    assert "Traceback" not in err
    for user in USERS:     # no host holds anything
        assert not os.path.exists("/home/%s/k8s-offline" % user), user
    assert len(lab.calls()) == calls
    return err.strip().splitlines(), lab.read_sshd_log().count(
        "Accepted publickey") - before


def test_wrong_sudo_password_changes_no_host(lab, tmp_path, bundle):
    lab.reset_hosts()
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password\n")
    lines, logins = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path)), "--become-password-file", str(wrong))
    assert any(line.startswith("[preflight] node1 (control-plane): FAILED: "
                               "sudo refused the password")
               for line in lines), lines
    assert lines[-1].startswith("error: preflight failed on node1, node2, "
                                "node3: no host was changed")
    assert logins >= 3


def test_no_sudo_password_says_how_to_give_one(lab, tmp_path, bundle):
    lab.reset_hosts()
    lines, _ = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path), users=USERS[:1], addresses=ADDRESSES[:1]))
    assert any(line.startswith("[preflight] node1 (control-plane): FAILED: "
                               "sudo wants a password: give --ask-become-pass "
                               "(-K) or --become-password-file FILE")
               for line in lines), lines


def test_another_arch_changes_no_host(lab, tmp_path):
    lab.reset_hosts()
    arm = sup.make_bundle(str(tmp_path), arch="arm64", as_tar=True)
    lines, _ = bad(lab, tmp_path, arm, "-i", lab.inventory(
        str(tmp_path), users=USERS[:1], addresses=ADDRESSES[:1]),
        "--become-password-file", lab.password_file)
    assert "[preflight] node1 (control-plane): FAILED: the bundle is for " \
        "arm64 but this host is amd64: make a bundle with --arch amd64 for " \
        "it in" in lines[-2], lines


def test_an_unreachable_host_is_named_and_no_host_changed(lab, tmp_path,
                                                          bundle):
    lab.reset_hosts()
    lines, _ = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path), users=USERS[:2], addresses=(ADDRESSES[0],
                                                   "127.0.0.9")),
        "--become-password-file", lab.password_file, "--connect-timeout", "2")
    assert any(line.startswith("[preflight] node2 (worker): FAILED: cannot "
                               "reach it over ssh (port %d)" % lab.port)
               for line in lines), lines
    assert lines[-1].startswith("error: preflight failed on node2:")


def test_an_unknown_host_key_is_refused_without_accept_new(lab, tmp_path,
                                                           bundle):
    lab.reset_hosts()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = lab.inventory(str(tmp_path), users=USERS[:1],
                              addresses=ADDRESSES[:1])
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress", "--known-hosts",
                           str(empty))
    assert rc == 2
    assert "its host key is not in known_hosts" in err
    assert not os.path.exists("/home/%s/k8s-offline" % USERS[0])
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress", "--known-hosts",
                           str(empty), "--accept-new-host-keys", "--no-wait")
    assert rc == 0, err
    assert "WARNING: --accept-new-host-keys" in err
    # the key was written (ssh may hash the name): ssh-keygen finds it
    assert subprocess.call(["ssh-keygen", "-F", "[%s]:%d" % (
        ADDRESSES[0], lab.port), "-f", str(empty)],
        stdout=subprocess.DEVNULL) == 0


def test_a_damaged_bundle_here_reaches_no_host(lab, tmp_path, bundle):
    lab.reset_hosts()
    import tarfile
    with tarfile.open(bundle) as tar:      # a byte of the largest file's data
        member = max(tar.getmembers(), key=lambda m: m.size)
    with open(bundle, "r+b") as handle:
        handle.seek(member.offset_data + member.size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xff]))
    lines, logins = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path)), "--become-password-file", lab.password_file)
    assert lines[-1].startswith("error: the bundle on this machine is "
                                "damaged, so no host was changed:"), lines
    assert logins == 0
    with open(bundle, "r+b") as handle:    # the tar's first header: no index
        handle.write(b"?")
    lines, logins = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path)), "--become-password-file", lab.password_file)
    assert lines[-1].startswith("error: the bundle on this machine is "
                                "damaged, so no host was changed:"), lines
    assert logins == 0
    lines, logins = bad(lab, tmp_path, str(tmp_path / "missing.tar"), "-i",
                        lab.inventory(str(tmp_path)))
    assert lines == ["error: the bundle on this machine is damaged, so no "
                     "host was changed: bundle %s does not exist: give the "
                     "bundle .tar or its extracted folder"
                     % (tmp_path / "missing.tar")] or "does not exist" in \
        lines[-1]
    assert logins == 0


def test_an_unreadable_key_is_refused_before_any_host(lab, tmp_path, bundle):
    lab.reset_hosts()
    public = lab.key + ".pub"
    lines, logins = bad(lab, tmp_path, bundle, "-i", lab.inventory(
        str(tmp_path), extra="ansible_ssh_private_key_file=%s" % public))
    assert lines == ["error: host node1: ansible_ssh_private_key_file %s "
                     "holds no private key: give the private key file (not "
                     "the .pub)" % public], lines
    assert logins == 0
    lines, _ = bad(lab, tmp_path, bundle, "--masters", ADDRESSES[0],
                   "--ssh-key", str(tmp_path / "nokey"))
    assert len(lines) == 1 and "--ssh-key" in lines[0] and "nokey" in lines[0]


def state(lab, user):
    path = os.path.join(lab.shared, user + ".json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def test_ha_control_planes_join_one_at_a_time_before_the_workers(
        lab, tmp_path, bundle):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path))
    text = open(inventory).read().replace("[kube_control_plane]\nnode1",
                                          "[kube_control_plane]\nnode1\nnode2")
    # node2: a control plane that runs pods too (in both groups)
    with open(inventory, "w") as handle:
        handle.write(text)
    rc, out, err = cluster(lab, tmp_path, "up", "-i", inventory, "--bundle",
                           bundle, "--become-password-file",
                           lab.password_file, "--no-progress",
                           "--control-plane-endpoint", "127.0.0.2:6443")
    assert rc == 0, err
    order = [(c["user"], c["argv"]) for c in lab.calls()
             if c["argv"][0] in ("master", "join")]
    assert [(user, argv[0], "--control-plane" in argv) for user, argv in
            order] == [("k8so20a", "master", False),
                       ("k8so20b", "join", True), ("k8so20c", "join", False)]
    master = order[0][1]
    assert "--upload-certs" in master
    assert master[master.index("--control-plane-endpoint") + 1] == \
        "127.0.0.2:6443"
    assert "--control-plane-endpoint" not in order[2][1]
    probes = [c["argv"] for c in lab.calls() if c["argv"][:2] == [
        "cluster", "probe"] and c["user"] == "k8so20a"]
    assert [p[2:] for p in probes if len(p) > 2] == [["--untaint",
                                                       "node2"]], probes
    assert "node2 (control-plane,worker)" in err


def test_parallel_joins_the_workers_at_once_or_one_by_one(lab, tmp_path,
                                                         bundle):
    for parallel, overlap in (("2", True), ("1", False)):
        lab.reset_hosts()
        open(os.path.join(lab.shared, "slow"), "w").close()
        rc, out, err = cluster(lab, tmp_path, "up", "-i", lab.inventory(
            str(tmp_path)), "--bundle", bundle, "--become-password-file",
            lab.password_file, "--no-progress", "--parallel", parallel)
        assert rc == 0, err
        b, c = state(lab, "k8so20b"), state(lab, "k8so20c")
        both = b["began"] < c["ended"] and c["began"] < b["ended"]
        assert both is overlap, (parallel, b, c)


def test_a_split_bundle_travels_as_its_parts(lab, tmp_path, bundle):
    lab.reset_hosts()
    name = os.path.basename(bundle)
    folder = tmp_path / "split"
    folder.mkdir()
    data = open(bundle, "rb").read()
    size = 256 * 1024
    parts = []
    for number, start in enumerate(range(0, len(data), size)):
        chunk = data[start:start + size]
        part = "%s.%03d" % (name, number)
        (folder / part).write_bytes(chunk)
        parts.append({"name": part, "size": len(chunk),
                      "sha256": sup.sha256(chunk)})
    index = folder / (name + ".parts.json")
    index.write_text(json.dumps({"format": 1, "bundle": name, "size":
                                 len(data), "part_size": size,
                                 "parts": parts}))
    rc, out, err = cluster(lab, tmp_path, "up", "-i", lab.inventory(
        str(tmp_path), users=USERS[:1], addresses=ADDRESSES[:1]), "--bundle",
        str(index), "--become-password-file", lab.password_file,
        "--no-progress")
    assert rc == 0, err
    there = sorted(os.listdir("/home/%s/k8s-offline" % USERS[0]))
    assert there == sorted([p["name"] for p in parts] + [
        index.name, "k8s_offline.py", "k8s-offline-join.json"])
    verify = [c["argv"] for c in lab.calls() if c["argv"][0] == "verify"]
    assert verify[0][-1].endswith("/k8s-offline/" + index.name)
    # a second run sends no part again
    rc, out, err = cluster(lab, tmp_path, "up", "-i", lab.inventory(
        str(tmp_path), users=USERS[:1], addresses=ADDRESSES[:1]), "--bundle",
        str(index), "--become-password-file", lab.password_file,
        "--no-progress")
    assert "skipped: holds the same bytes (%d files)" % (len(parts) + 2) in err


def test_remove_then_add_a_worker_and_reset_all(lab, tmp_path, bundle):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path), users=USERS[:2],
                              addresses=ADDRESSES[:2])
    common = ("-i", inventory, "--become-password-file", lab.password_file)
    rc, out, err = cluster(lab, tmp_path, "up", "--bundle", bundle,
                           "--no-progress", *common)
    assert rc == 0, err
    # a third host added to the inventory later joins; the others are left
    bigger = lab.inventory(str(tmp_path))
    before = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, "add", "--bundle", bundle,
                           "--no-progress", "-i", bigger,
                           "--become-password-file", lab.password_file)
    assert rc == 0, err
    changed = [(c["user"], c["argv"][0]) for c in lab.calls()[before:]
               if c["argv"][0] not in ("verify", "cluster")]
    assert changed == [("k8so20a", "token"), ("k8so20c", "join")], changed
    rc, out, err = cluster(lab, tmp_path, "remove", "node3", "-i", bigger,
                           "--become-password-file", lab.password_file)
    assert rc == 0, err
    assert state(lab, "k8so20c")["reset"] and state(lab, "k8so20c")["removed"]
    assert "[remove] node3 (worker): removed and reset" in err
    rc, out, err = cluster(lab, tmp_path, "remove", "node1", "-i", bigger,
                           "--become-password-file", lab.password_file)
    assert rc == 2 and "node1 is the first control plane" in err
    rc, out, err = cluster(lab, tmp_path, "reset", "-i", bigger,
                           "--become-password-file", lab.password_file)
    assert rc == 2 and "run it again with --yes" in err
    before = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, "reset", "--yes", "-i", bigger,
                           "--become-password-file", lab.password_file)
    assert rc == 0, err
    resets = [c["user"] for c in lab.calls()[before:]
              if c["argv"][0] == "reset"]
    assert sorted(resets[:2]) == ["k8so20b", "k8so20c"]
    assert resets[2:] == ["k8so20a"]          # the first control plane last
    assert not state(lab, "k8so20a")["initialized"]


def test_ask_become_pass_reads_the_password_from_the_terminal(
        lab, tmp_path, bundle):
    import pty
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path), users=USERS[:1],
                              addresses=ADDRESSES[:1])
    env = dict(os.environ, K8SO_CLUSTER_TOOL=lab.stand_in())
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(str(tmp_path))
        os.execve(PYTHON, [
            PYTHON, SCRIPT, "cluster", "up", "-i", inventory,
            "--bundle", bundle, "--no-progress", "-K", "--known-hosts",
            lab.known_hosts], env)
    seen = b""
    deadline = time.time() + 120
    sent = False
    while time.time() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if not sent and b"BECOME password:" in seen:
            os.write(fd, PASSWORD.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = seen.decode("utf-8", "replace")
    assert sent and os.WEXITSTATUS(status) == 0, text
    assert PASSWORD not in text + host_logs(tmp_path)
    assert ran(lab, "master") == [("k8so20a", 0)]


def test_the_real_tool_takes_the_master_and_join_lines_cluster_builds(
        lab, tmp_path, bundle):
    """The exact master and join command lines cluster sends, run by this
    repository's k8s_offline.py as root through sudo -S on the far side,
    with --dry-run added (a real run would set up this machine): its
    argparse and every check before the first change accept them."""
    from install_support import ko
    inventory = up_then_the_real_tool(lab, tmp_path, bundle, 2)
    args = ko.build_parser().parse_args([
        "cluster", "up", "-i", inventory, "--bundle", bundle,
        "--become-password-file", lab.password_file, "--known-hosts",
        lab.known_hosts, "--log-dir", str(tmp_path / "logs"),
        "--image-repository", "registry.local:5000/k8s",
        "--pod-network-cidr", "10.200.0.0/16"])
    hosts, where = ko.cluster_hosts(args)
    ctx = ko.ClusterContext(args, hosts, where)
    ctx.found.bundle_name = os.path.basename(bundle)
    master, worker = hosts
    try:
        for host in hosts:
            ko.find_home(ctx, host)
        result = ctx.ssh.run(master, ctx.tool_argv(
            master, *ko.master_argv(ctx, master)) + ["--dry-run"], root=True)
        assert result.returncode == 0, result.output()
        assert "dry run: nothing was changed" in result.output()
        # the cluster's flag reached it, and sudo told it who the user is
        assert "registry.local:5000/k8s/kube-apiserver:v1.16.0" in \
            result.output()
        assert "kubeconfig /home/%s/.kube/config" % USERS[0] in \
            result.output()
        join_file = sup.write_join_file(tmp_path, token_expires=int(
            time.time()) + 3600)
        target = "/home/%s/k8s-offline/k8s-offline-join.json" % USERS[1]
        shutil.copy(join_file, target)
        result = ctx.ssh.run(worker, ctx.tool_argv(
            worker, *ko.join_argv(ctx, worker)) + ["--dry-run"], root=True)
        assert result.returncode == 0, result.output()
        assert "dry run: nothing was changed" in result.output()
        assert "registry.local:5000/k8s" in result.output()
        # and a line the real tool refuses is one line, exit 2
        result = ctx.ssh.run(worker, ctx.tool_argv(
            worker, *ko.join_argv(ctx, worker)) + ["--dry-run",
                                                   "--node-name", "Bad_Name"],
                             root=True)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    finally:
        ctx.close()


NETNS, VETH, INNER = "k8so20w", "k8so20h", "k8so20n"
NETNS_HOST, NETNS_PEER = "10.220.0.2", "10.220.0.1"


@pytest.fixture
def netns_host(lab):
    """The third user's host in a network namespace of its own (a veth to
    10.220.0.1 here), with its own sshd on 10.220.0.2."""
    ip = ["ip", "netns", "exec", NETNS]
    sh("ip", "netns", "add", NETNS)
    sshd = None
    try:
        sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", INNER)
        sh("ip", "link", "set", INNER, "netns", NETNS)
        sh("ip", "addr", "add", NETNS_PEER + "/30", "dev", VETH)
        sh("ip", "link", "set", VETH, "up")
        sh(*ip + ["ip", "addr", "add", NETNS_HOST + "/30", "dev", INNER])
        sh(*ip + ["ip", "link", "set", INNER, "up"])
        sh(*ip + ["ip", "link", "set", "lo", "up"])
        config = os.path.join(lab.base, "sshd_config")
        netns_config = config + ".netns"
        with open(config) as handle:
            text = handle.read()
        lines = [line for line in text.splitlines()
                 if not line.startswith(("ListenAddress", "PidFile"))]
        lines += ["ListenAddress %s" % NETNS_HOST,
                  "PidFile %s/sshd-netns.pid" % lab.base]
        with open(netns_config, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        with open(lab.known_hosts) as handle:
            key = handle.readline().split(None, 1)[1]
        with open(lab.known_hosts, "a") as handle:
            handle.write("[%s]:%d %s" % (NETNS_HOST, lab.port, key))
        log = open(os.path.join(lab.base, "sshd-netns.log"), "w")
        sshd = subprocess.Popen(ip + ["/usr/sbin/sshd", "-D", "-e", "-f",
                                      netns_config], stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while True:
            try:
                socket.create_connection((NETNS_HOST, lab.port), 1).close()
                break
            except OSError:
                assert sshd.poll() is None and time.time() < deadline
                time.sleep(0.1)
        yield NETNS_HOST
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
        subprocess.call(["ip", "netns", "del", NETNS])
        subprocess.call(["ip", "link", "del", VETH], stderr=subprocess.DEVNULL)


def test_a_worker_cut_off_mid_join_is_named_and_the_others_complete(
        lab, tmp_path, bundle, netns_host):
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path), addresses=ADDRESSES[:2] + (
        netns_host,))
    with open(os.path.join(lab.shared, "cut-k8so20c"), "w") as handle:
        handle.write(str(lab.port))
    argv = ("up", "-i", inventory, "--bundle", bundle,
            "--become-password-file", lab.password_file, "--no-progress")
    rc, out, err = cluster(lab, tmp_path, *argv)
    assert rc == 1, err
    lines = err.strip().splitlines()
    failed = [line for line in lines if line.startswith("[workers] node3")]
    assert len(failed) == 1 and failed[0].startswith(
        "[workers] node3 (worker): FAILED: lost the ssh connection (port %d) "
        "in the middle of join: check the host and its network" % lab.port) \
        or failed[0].startswith("[workers] node3 (worker): FAILED: cannot "
                                "reach it over ssh (port %d): " % lab.port), \
        lines
    assert lines[-1].startswith("error: cluster up failed on 1 of 3 hosts: "
                                "node3 (workers: ")
    assert "[wait] node2 (worker): Ready" in err
    assert "[wait] node1 (control-plane): Ready" in err
    assert "Traceback" not in err
    # the cable is back: the same command finishes node3 alone
    os.unlink(os.path.join(lab.shared, "cut-k8so20c"))
    subprocess.check_call(["ip", "netns", "exec", NETNS, "iptables", "-D",
                           "INPUT", "-p", "tcp", "--dport", str(lab.port),
                           "-j", "REJECT", "--reject-with", "tcp-reset"])
    before = len(lab.calls())
    rc, out, err = cluster(lab, tmp_path, *argv)
    assert rc == 0, err
    again = [(c["user"], c["argv"][0]) for c in lab.calls()[before:]
             if c["argv"][0] not in ("verify", "cluster")]
    assert again == [("k8so20a", "token"), ("k8so20c", "join")], again
    assert "[wait] node3 (worker): Ready" in err


def test_fan_out_lets_a_host_that_holds_the_bundle_pass_it_on(
        lab, tmp_path, bundle):
    lab.reset_hosts()
    argv = ("up", "-i", lab.inventory(str(tmp_path)), "--bundle", bundle,
            "--become-password-file", lab.password_file, "--no-progress",
            "--fan-out")
    rc, out, err = cluster(lab, tmp_path, *argv)
    assert rc == 0, err
    # round 1: here -> node1; round 2: here -> node2 and node1 -> node3
    size = os.path.getsize(bundle)
    lines = [line for line in err.splitlines() if line.startswith("[copy] node")]
    assert [line.split(" in ")[0] for line in lines] == [
        "[copy] node1 (control-plane): copied %s from this machine"
        % ko_size(size),
        "[copy] node2 (worker): copied %s from this machine" % ko_size(size),
        "[copy] node3 (worker): copied %s from node1" % ko_size(size)] or \
        sorted(line.split(" in ")[0] for line in lines[1:]) == sorted([
            "[copy] node2 (worker): copied %s from this machine"
            % ko_size(size),
            "[copy] node3 (worker): copied %s from node1" % ko_size(size)]), \
        lines
    with open(bundle, "rb") as handle:
        want = sup.sha256(handle.read())
    for user in USERS:
        with open("/home/%s/k8s-offline/%s" % (user, os.path.basename(
                bundle)), "rb") as handle:
            assert sup.sha256(handle.read()) == want
        assert not [name for name in os.listdir("/home/%s/k8s-offline" % user)
                    if name.endswith(".partial")]
    assert "-c 'import hashlib, os, socket, sys" in host_logs(tmp_path)
    # a host the others cannot reach at its address: this machine sends
    lab.reset_hosts()
    inventory = lab.inventory(str(tmp_path))
    text = open(inventory).read().replace(
        "ansible_host=%s " % ADDRESSES[0], "ansible_host=%s ip=10.255.255.1 "
        % ADDRESSES[0])
    with open(inventory, "w") as handle:
        handle.write(text)
    rc, out, err = cluster(lab, tmp_path, *argv)
    assert rc == 0, err
    assert "[copy] node3 (worker): copied %s from this machine" % ko_size(
        size) in err
    assert "fan-out from node1 failed" in host_logs(tmp_path)


def ko_size(size):
    from install_support import ko
    return ko.human_size(size)
