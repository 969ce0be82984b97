"""cluster's inventory: kubespray's inventory.ini and kubeasz's hosts read
as Ansible reads them, sealos-style flags, and every bad input refused in
one line that names the line, before any host is reached (no sshd here:
the hosts named are on 127.0.0.x, and nothing listens there for them)."""

import os
import subprocess
import sys

import pytest

import install_support as sup
from install_support import ko

SCRIPT = os.path.join(sup.REPO, "k8s_offline.py")

# kubespray's inventory/sample/inventory.ini shape (2.2x), with the groups
# kubespray has and this tool does not use.
KUBESPRAY = """\
# ## Configure 'ip' variable to bind kubernetes services on a
# ## different ip than the default iface
[all]
node1 ansible_host=10.0.0.11 ip=192.168.10.11 etcd_member_name=etcd1
node2 ansible_host=10.0.0.12 ip=192.168.10.12 ansible_port=2222
node3 ansible_host=10.0.0.13  # ip=10.3.0.3
bastion ansible_host=10.0.0.99 ansible_user=jump

[bastion]
bastion

[kube_control_plane]
node1

[etcd]
node1

[kube_node]
node1
node2
node3

[calico_rr]

[k8s_cluster:children]
kube_control_plane
kube_node
calico_rr

[k8s_cluster:vars]
ansible_user=deploy
ansible_become=true

[all:vars]
ansible_ssh_private_key_file=~/.ssh/deploy_ed25519
ansible_python_interpreter=/usr/bin/python3
"""

KUBEASZ = """\
[etcd]
192.168.1.1

[kube_master]
192.168.1.1 k8s_nodename='master-01'

[kube_node]
192.168.1.3 k8s_nodename='worker-01'
192.168.1.4 k8s_nodename='worker-02'

[harbor]

[ex_lb]
#192.168.1.6 LB_ROLE=backup EX_APISERVER_VIP=192.168.1.250

[chrony]

[all:vars]
SECURE_PORT="6443"
CONTAINER_RUNTIME="containerd"
CLUSTER_NETWORK="calico"
ansible_ssh_user=root
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return sup.make_bundle(str(tmp_path_factory.mktemp("bundle")), as_tar=True)


def read(text):
    return ko.hosts_from_inventory(text, "inventory.ini")


def test_kubespray_inventory_as_ansible_reads_it():
    hosts = read(KUBESPRAY)
    assert [h.name for h in hosts] == ["node1", "node2", "node3"]
    node1, node2, node3 = hosts
    assert (node1.address, node1.port, node1.node_ip) == ("10.0.0.11", 22,
                                                          "192.168.10.11")
    assert node1.control_plane and node1.worker and node1.role == \
        "control-plane,worker"
    assert (node2.port, node2.control_plane, node2.worker) == (2222, False,
                                                               True)
    assert node3.node_ip is None          # a comment, not a var
    assert [h.node_name for h in hosts] == ["node1", "node2", "node3"]
    for host in hosts:                    # k8s_cluster:vars through children
        assert (host.user, host.become) == ("deploy", True)
        assert host.key[0] == os.path.expanduser("~/.ssh/deploy_ed25519")
        assert host.python == "/usr/bin/python3"
    ko.require_cluster_hosts(hosts, "inventory.ini")


def test_kubeasz_hosts_file():
    hosts = read(KUBEASZ)
    assert [(h.address, h.role, h.node_name, h.user) for h in hosts] == [
        ("192.168.1.1", "control-plane", "master-01", "root"),
        ("192.168.1.3", "worker", "worker-01", "root"),
        ("192.168.1.4", "worker", "worker-02", "root")]


def test_groups_through_children_and_ranges_and_precedence():
    hosts = read("""\
[masters]
cp[1:2] ansible_host=10.1.0.1

[workers]
w[08:10]

[kube_control_plane:children]
masters
[kube_node:children]
workers
[workers:vars]
ansible_port=2200
[all:vars]
ansible_port=22
ansible_user=a
[kube_node:vars]
ansible_user=b
""".replace("cp[1:2] ansible_host=10.1.0.1", "cp1 ansible_host=10.1.0.1\n"
            "cp2 ansible_host=10.1.0.2"))
    assert [(h.name, h.role, h.port, h.user) for h in hosts] == [
        ("cp1", "control-plane", 22, "a"), ("cp2", "control-plane", 22, "a"),
        ("w08", "worker", 2200, "b"), ("w09", "worker", 2200, "b"),
        ("w10", "worker", 2200, "b")]


def test_a_changed_value_changes_what_is_read():
    """The parser reads values, it does not answer the same whatever the
    text: a host var wins over the group's."""
    hosts = read(KUBESPRAY.replace("node3 ansible_host=10.0.0.13",
                                   "node3 ansible_host=10.0.0.13 "
                                   "ansible_user=other ansible_port=2022"))
    assert (hosts[2].user, hosts[2].port) == ("other", 2022)
    assert hosts[1].user == "deploy"


@pytest.mark.parametrize("change, message", [
    (("ansible_port=2222", "ansible_port=22x"),
     "inventory.ini line 5: host node2: ansible_port=22x is not a port "
     "number: give 1 to 65535"),
    (("ansible_port=2222", "ansible_port=70000"),
     "inventory.ini line 5: host node2: ansible_port=70000 is not a port "
     "number: give 1 to 65535"),
    (("ansible_become=true", "ansible_become=maybe"),
     "inventory.ini line 32: ansible_become=maybe is not a boolean: give "
     "true or false"),
    (("ansible_host=10.0.0.12", "ansible_host=10.0.0.12;rm"),
     "inventory.ini line 5: ansible_host=10.0.0.12;rm is neither an IP "
     "address nor a host name: fix it"),
    (("ansible_user=deploy", "ansible_user='de ploy'"),
     "inventory.ini line 31: host node1: ansible_user=de ploy is not a user "
     "name: fix it"),
    (("ip=192.168.10.12", "ip=192.168.10"),
     "inventory.ini line 5: host node2: ip=192.168.10 is not an IP address: "
     "fix it"),
    (("[kube_node]", "[kube_node"),
     "inventory.ini line 18: '[kube_node' is not a [group] header: close it "
     "with ]"),
    (("[calico_rr]", "[calico_rr:hosts:x]"),
     "inventory.ini line 23: '[calico_rr:hosts:x]' is not a group header "
     "([name], [name:vars] or [name:children])"),
    (("etcd_member_name=etcd1", "etcd_member_name"),
     "inventory.ini line 4: 'etcd_member_name' is not key=value: fix the "
     "line"),
    (("node3 ansible_host=10.0.0.13", "node3 ansible_host='10.0.0.13"),
     "inventory.ini line 6: cannot split it (No closing quotation): close "
     "its quotes"),
    (("ip=192.168.10.12", "ip=192.168.10.11"),
     "inventory.ini gives the address 192.168.10.11 to two hosts, node1 and "
     "node2: give each host its own"),
    (("node3 ansible_host=10.0.0.13", "node3 ansible_host=10.0.0.12 "
      "ansible_port=2222"),
     "inventory.ini reaches two hosts, node2 and node3, at 10.0.0.12 port "
     "2222: give each host its own"),
    (("[kube_control_plane]\nnode1", "[kube_control_plane]"),
     "inventory.ini names no control-plane host: list one under "
     "[kube_control_plane] (or --masters)"),
    (("ansible_port=2222", "ansible_password=x"),
     "inventory.ini line 5: host node2: ansible_password: cluster takes no "
     "password from the inventory: log in with a key (ssh-copy-id), give "
     "the sudo password with -K or --become-password-file"),
])
def test_a_bad_inventory_is_refused_in_one_line(tmp_path, bundle, change,
                                                message):
    text = KUBESPRAY.replace(*change)
    assert text != KUBESPRAY
    path = tmp_path / "inventory.ini"
    path.write_text(text)
    with pytest.raises(ko.UserError) as caught:
        ko.require_cluster_hosts(read(text), "inventory.ini")
    assert str(caught.value) == message
    # the command line: one line, exit 2, no host reached (127.0.0.x would
    # refuse, and no ssh runs: a dry run would not connect either)
    proc = subprocess.run([sys.executable, SCRIPT, "cluster", "up", "-i",
                           "inventory.ini", "--bundle", bundle],
                          cwd=str(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "error: %s\n" % message
    assert not (tmp_path / "k8s-offline-cluster-logs").exists()


def run_cli(tmp_path, bundle, *argv):
    proc = subprocess.run([sys.executable, SCRIPT, "cluster", "up",
                           "--bundle", bundle] + list(argv),
                          cwd=str(tmp_path), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("argv, message", [
    (("--masters", "10.0.0.1", "--workers", "10.0.0.2:22x"),
     "--workers: the port of --workers 10.0.0.2:22x is not a number from 1 "
     "to 65535: give IP[:PORT]"),
    (("--masters", "10.0.0.1,10.0.0.1"),
     "--masters/--workers gives the address 10.0.0.1 to two hosts, 10.0.0.1 "
     "and 10.0.0.1: give each host its own"),
    (("--workers", "10.0.0.2"),
     "no hosts: give -i inventory.ini (kubespray's) or --masters IP,... "
     "[--workers IP,...]"),
    (("--masters", "10.0.0.1,10.0.0.2"),
     "2 control-plane hosts need --control-plane-endpoint HOST:PORT (a load "
     "balancer or virtual IP in front of their API servers on 6443)"),
    (("--masters", "10.0.0.1", "--parallel", "0"),
     "bad --parallel 0: give 1 to 256"),
    (("--masters", "10.0.0.1", "--pod-network-cidr", "10.244.0.0/33"),
     "bad --pod-network-cidr 10.244.0.0/33: give a network like "
     "10.244.0.0/16"),
    (("--masters", "10.0.0.1", "--user", "a b"),
     "bad --user 'a b': give a user name"),
    (("--masters", "10.0.0.1", "-i", "x.ini"),
     "give either -i INVENTORY or --masters/--workers, not both"),
    (("--masters", "10.0.0.1", "--become-password-file", "/nonexistent"),
     "cannot read --become-password-file /nonexistent: No such file or "
     "directory"),
    (("--masters", "10.0.0.1", "--ask-become-pass"),
     "--ask-become-pass needs a terminal: give --become-password-file FILE "
     "instead"),
])
def test_bad_flags_are_refused_in_one_line(tmp_path, bundle, argv, message):
    rc, out, err = run_cli(tmp_path, bundle, *argv)
    assert (rc, err) == (2, "error: %s\n" % message)


def test_flags_in_sealos_style(tmp_path):
    args = ko.build_parser().parse_args([
        "cluster", "up", "--bundle", "b.tar", "--masters",
        "10.0.0.1:2201", "--nodes", "10.0.0.2,[fd00::3]:2203", "--user",
        "ops", "--port", "2200", "--control-plane-endpoint", "10.0.0.1:6443"])
    hosts, _ = ko.cluster_hosts(args)
    assert [(h.address, h.port, h.role, h.user) for h in hosts] == [
        ("10.0.0.1", 2201, "control-plane", "ops"),
        ("10.0.0.2", 2200, "worker", "ops"),
        ("fd00::3", 2203, "worker", "ops")]


def test_the_remote_commands_quote_every_value():
    host = read(KUBESPRAY)[0]
    transport = ko.SSHTransport(ko.build_parser().parse_args(
        ["cluster", "up", "--bundle", "b", "--masters", "10.0.0.1"]), "pw")
    line = transport.command_line(host, ["sh", "-c", "cat > 'x y'; $(id)"],
                                  root=True)
    assert line == ("sudo -S -p '' -- sh -c 'cat > '\"'\"'x y'\"'\"'; "
                    "$(id)'")
    assert "pw" not in " ".join(transport.ssh_argv(host)) + line
    argv = transport.ssh_argv(host)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes",
                   "ControlMaster=auto", "ConnectTimeout=10"):
        assert option in argv
    assert argv[-2:] == ["--", "10.0.0.11"]


def test_dry_run_plans_ha_in_order(tmp_path, bundle):
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(key)], check=True)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(KUBESPRAY.replace(
        "[kube_control_plane]\nnode1", "[kube_control_plane]\nnode1\nnode2")
        .replace("~/.ssh/deploy_ed25519", str(key)))
    rc, out, err = run_cli(tmp_path, bundle, "-i", str(inventory), "--dry-run",
                           "--control-plane-endpoint", "lb.example:6443",
                           "--image-repository", "registry.local:5000/k8s")
    assert rc == 0, err
    lines = [line for line in out.splitlines() if "would run" in line]
    master = [line for line in lines if line.startswith("  [master]")]
    assert len(master) == 1 and "node1" in master[0]
    for flag in ("--upload-certs", "--allow-pods-on-master",
                 "--control-plane-endpoint lb.example:6443",
                 "--image-repository registry.local:5000/k8s",
                 "--apiserver-advertise-address 192.168.10.11"):
        assert flag in master[0], flag
    joins = [line for line in lines if " join " in line]
    assert [line.split()[1] for line in joins] == ["node2", "node3"]
    assert "--control-plane" in joins[0] and "--control-plane" not in joins[1]
    assert "--image-repository registry.local:5000/k8s" in joins[1]
    assert "--control-plane-endpoint" not in joins[1]
    assert out.index("[master]") < out.index("[control-planes]") < out.index(
        "[workers]")
    assert "dry run: no host was reached or changed" in err


def test_all_vars_lose_to_a_group_even_when_all_lists_the_hosts():
    """kubespray's sample lists every host under [all]: [all:vars] is
    still the weakest, as in Ansible."""
    hosts = read(KUBESPRAY.replace("[all:vars]\n", "[all:vars]\n"
                                   "ansible_user=root\nansible_port=2022\n"))
    assert [(h.user, h.port) for h in hosts] == [("deploy", 2022),
                                                 ("deploy", 2222),
                                                 ("deploy", 2022)]


class _Answers(object):
    """A runner answering execute() with the given results in turn and
    recording each argv (a test failure when asked more than it holds)."""

    def __init__(self, *results):
        self.results, self.calls = list(results), []

    def execute(self, argv, timeout=300, input_text=None):
        self.calls.append(argv)
        assert self.results, "ssh was run again: %r" % (argv,)
        return self.results.pop(0)


def _transport(runner, monkeypatch):
    monkeypatch.setattr(ko, "sleep", lambda seconds: None)
    transport = ko.SSHTransport(ko.build_parser().parse_args(
        ["cluster", "up", "--bundle", "b", "--masters", "10.0.0.1"]), None)
    transport.runner = runner
    return transport


@pytest.mark.parametrize("stdout, stderr", [
    # the session was established, then it broke: the command may be running
    ("", "client_loop: send disconnect: Connection reset by peer\n"),
    ("", "Connection to 10.0.0.11 closed by remote host.\n"),
    ("[init] Using Kubernetes version\n", "Read from remote host 10.0.0.11: "
     "Connection reset by peer\n"),
    ("", "[preflight] Running pre-flight checks\npacket_write_wait: Connection "
     "to 10.0.0.11 port 22: Broken pipe\n"),
])
def test_a_session_lost_mid_command_is_never_run_again(monkeypatch, stdout,
                                                       stderr):
    host = read(KUBESPRAY)[0]
    runner = _Answers(ko.CommandResult(["ssh"], 255, stdout, stderr))
    result = _transport(runner, monkeypatch).run(host, ["kubeadm", "join"])
    assert result.returncode == 255
    assert len(runner.calls) == 1


@pytest.mark.parametrize("stderr", [
    "ssh: connect to host 10.0.0.11 port 22: Connection refused\n",
    "kex_exchange_identification: read: Connection reset by peer\n"
    "Connection reset by 10.0.0.11 port 22\n",
    "ssh: connect to host 10.0.0.11 port 22: Connection timed out\n",
])
def test_a_connection_that_never_opened_is_tried_again(monkeypatch, stderr):
    host = read(KUBESPRAY)[0]
    runner = _Answers(ko.CommandResult(["ssh"], 255, "", stderr),
                      ko.CommandResult(["ssh"], 0, "ok\n", ""))
    result = _transport(runner, monkeypatch).run(host, ["true"])
    assert (result.returncode, len(runner.calls)) == (0, 2)
