"""The kernel's formats against real readers: the YAML subset against
PyYAML, the TOML reader against tomllib and containerd's own default config,
deb_version_compare against dpkg --compare-versions.

The rule for each reader: on every text it either gives what the real
reader gives or refuses it with its own error; it never gives a different
value, and it never accepts what the real reader refuses."""

import os
import shutil
import subprocess
import tomllib

import pytest
import yaml

import install_support as sup
from install_support import ko

# -- the YAML subset ------------------------------------------------------------

# Documents as kubeadm configs and Kubernetes manifests are written.
YAML_AGREED = [
    "a: 1\n",
    "a: b\nc: d\n",
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration"
    "\nmode: ipvs\n",
    "kind: KubeletConfiguration\ncgroupDriver: systemd\nmaxPods: 110\n"
    "failSwapOn: false\nrotateCertificates: true\n",
    "podSubnet: 10.244.0.0/16\nport: 6443\nratio: 1.5\nversion: v1.16.0\n",
    "a:\n  b:\n    c: deep\n  d: 2\n",
    "list:\n- 1\n- two\n- \"three\"\n",
    "list:\n  - a\n  - b\n",
    "pods:\n- name: x\n  image: k8s.gcr.io/pause:3.1\n- name: y\n",
    "nested:\n-\n  - 1\n  - 2\n-\n  - 3\n",
    "flow: [1, two, \"three\", 'four']\n",
    "flow: {a: 1, b: [x, y], c: {d: e}}\n",
    "empty_list: []\nempty_map: {}\n",
    "q1: 'it''s'\nq2: \"tab\\there\"\nq3: \"#not a comment\"\n",
    "a: 1  # a comment\n# a whole-line comment\nb: x#y\n",
    "nothing:\nnull1: null\nnull2: ~\n",
    "t: true\nf: False\nT: TRUE\n",
    "\"quoted key\": 1\n'single key': 2\n",
    "url: https://example.org:6443/x\n",
    "neg: -3\nplus: +4\nfloat: -2.5e+3\n",
    "extraArgs:\n  feature-gates: \"A=true,B=false\"\n  v: \"4\"\n",
    "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [1, 2]}\n",
    "- a\n- b: c\n  d: e\n",
]

YAML_REFUSED = [
    ("a: &anchor 1\nb: *anchor\n", "anchors, aliases"),
    ("a: !!str 1\n", "anchors, aliases, tags"),
    ("a: |\n  text\n", "block scalars"),
    ("a: >\n  text\n", "block scalars"),
    ("a:\n\tb: 1\n", "tab"),
    ("a: 1\na: 2\n", "repeats the key a"),
    ("a: 1\n  b: 2\n", "indented more"),
    ("a: [1, 2\n", "unclosed"),
    ("a: \"open\n", "bad double-quoted string"),
    ("a: 'open\n", "bad single-quoted string"),
    ("a: [1] x\n", "text after a closing bracket"),
]


@pytest.mark.parametrize("text", YAML_AGREED)
def test_yaml_subset_reads_what_pyyaml_reads(text):
    assert ko.parse_yaml_document(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text,words", YAML_REFUSED)
def test_yaml_subset_refuses_what_it_does_not_read(text, words):
    with pytest.raises(ko.YamlSubsetError) as exc:
        ko.parse_yaml_document(text)
    assert words in str(exc.value)


@pytest.mark.parametrize("manifest", ["kube-flannel.yml",
                                      "kube-flannel-v0.28.yml"])
def test_yaml_subset_reads_the_bundled_flannel_manifest_like_pyyaml(manifest):
    """Every document of each flannel line's manifest is read as PyYAML
    reads it, or refused (its ConfigMap holds block scalars)."""
    with open(os.path.join(sup.REPO, "manifests", manifest)) as h:
        documents = ko.split_documents(h.read())
    read = refused = 0
    for document in documents:
        try:
            value = ko.parse_yaml_document(document)
        except ko.YamlSubsetError:
            refused += 1
            continue
        assert value == yaml.safe_load(document), document[:200]
        read += 1
    assert read >= 5 and refused <= 1


def test_yaml_subset_depth_is_bounded():
    text = "a: " + "[" * (ko.MAX_YAML_DEPTH + 5) + "]" * (ko.MAX_YAML_DEPTH + 5)
    with pytest.raises(ko.YamlSubsetError) as exc:
        ko.parse_yaml_document(text)
    assert "nested more than" in str(exc.value)


def test_yaml_mapping_writes_what_pyyaml_reads_back():
    pairs = (("runtime-endpoint", "unix:///run/containerd/containerd.sock"),
             ("timeout", 10), ("debug", False))
    assert yaml.safe_load(ko.yaml_mapping(pairs)) == dict(pairs)


# -- the TOML reader ------------------------------------------------------------

TOML_AGREED = [
    'version = 2\n',
    'root = "/var/lib/containerd"\nstate = \'/run/containerd\'\n',
    '[grpc]\n  address = "/run/containerd/containerd.sock"\n  uid = 0\n',
    '[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "k8s.gcr.io/'
    'pause:3.1"\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.'
    'runc.options]\n  SystemdCgroup = true\n',
    'disabled_plugins = ["cri"]\n',
    'a = [\n  1,\n  2, # two\n]\n',
    'a.b.c = 1\na.d = "x"\n',
    '"quoted key" = 1\n\'literal key\' = 2\n',
    'inline = { a = 1, b = "two", c = [true, false] }\n',
    'f = 1.5\ne = 1e6\nneg = -3\nplus = +4\nunder = 1_000\n',
    's = "esc \\" \\\\ \\t \\n \\u00e9"\n',
    '# only a comment\n\n[empty]\n',
    'nested = [[1, 2], ["a"]]\n',
]

TOML_INVALID = [
    'a = \n', 'a = [1,\n', '[a\n', "a = 'x\n", 'a = tru\n', '= 1\n',
    '[a]\n[a]\n', 'a = 1\na = 2\n', 'a.b = 1\na = 2\n',
    'a = { b = 1, }\n', 'a = 1 b = 2\n', 'a = "x" y\n',
]


@pytest.mark.parametrize("text", TOML_AGREED)
def test_toml_reader_reads_what_tomllib_reads(text):
    assert ko.toml_loads(text) == tomllib.loads(text)


@pytest.mark.parametrize("text", TOML_INVALID)
def test_toml_reader_refuses_what_tomllib_refuses(text):
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    with pytest.raises(ko.TomlError) as exc:
        ko.toml_loads(text)
    assert str(exc.value).startswith("line ")


@pytest.mark.parametrize("text", ['t = 1979-05-27T07:32:00Z\n',
                                  'h = 0x1F\n', '[[a]]\nb = 1\n',
                                  "m = '''\nx'''\n", 'i = inf\n'])
def test_toml_reader_refuses_valid_toml_it_does_not_know(text):
    """Valid TOML outside the reader's part: refused, never misread."""
    tomllib.loads(text)
    with pytest.raises(ko.TomlError):
        ko.toml_loads(text)


CONTAINERD = shutil.which("containerd")


def test_toml_reader_reads_containerds_own_default_config():
    assert CONTAINERD, "containerd is missing: .ci/run installs it"
    text = subprocess.run([CONTAINERD, "config", "default"],
                          stdout=subprocess.PIPE, check=True, timeout=60,
                          universal_newlines=True).stdout
    assert ko.toml_loads(text) == tomllib.loads(text)
    rewritten = ko.containerd_config_with(text, "k8s.gcr.io/pause:3.1")
    assert tomllib.loads(rewritten) == ko.toml_loads(rewritten)


# -- deb versions ---------------------------------------------------------------

DPKG = shutil.which("dpkg")
DEB_PAIRS = [
    ("1.0", "1.0"), ("1.0", "1.1"), ("1.10", "1.9"), ("1.0-1", "1.0-2"),
    ("1:1.0", "2.0"), ("0:1.0", "1.0"), ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc2"), ("1.0~", "1.0~~"), ("1.0+dfsg", "1.0"),
    ("1.0a", "1.0"), ("1.0a", "1.0+"), ("1.0-1ubuntu1", "1.0-1"),
    ("1.2.3-4", "1.2.3-4+deb12u1"), ("1.13.1-0ubuntu1~20.04.1", "1.13.1"),
    ("20.10.24+dfsg1-1", "20.10.5+dfsg1-1"), ("1.6.20~ds1-1", "1.6.20-1"),
    ("2:1.8.9-2", "1.8.9-2"), ("1.0.0", "1.0"), ("1.00", "1.0"),
    ("1.0-0", "1.0"), ("a", "b"), ("1.0.", "1.0"), ("1.0-a", "1.0-b"),
    ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12"), ("1.1.1n-0+deb11u5", "1.1.1"),
]


def dpkg_order(left, right):
    for op, order in (("lt", -1), ("eq", 0), ("gt", 1)):
        if subprocess.call([DPKG, "--compare-versions", left, op, right]) == 0:
            return order
    raise AssertionError("dpkg orders neither way: %s %s" % (left, right))


@pytest.mark.parametrize("left,right", DEB_PAIRS)
def test_deb_version_compare_orders_as_dpkg(left, right):
    assert DPKG, "dpkg is missing: the suite runs on Debian"
    expected = dpkg_order(left, right)
    assert ko.deb_version_compare(left, right) == expected
    assert ko.deb_version_compare(right, left) == -expected


@pytest.mark.parametrize("installed,op,version,holds", [
    ("1.0", ">=", "1.0", True), ("1.0", ">>", "1.0", False),
    ("1.0~rc1", "<<", "1.0", True), ("2:0.1", ">=", "9.9", True),
    ("1.0", "=", "1.0-0", True), ("1.0", "<=", "0.9", False),
    ("1.0", None, None, True)])
def test_deb_relation_holds(installed, op, version, holds):
    assert ko.deb_relation_holds(installed, op, version) is holds
