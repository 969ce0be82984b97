"""What the test FakeRunner's kubeadm accepts in a --config file.

The config APIs: kubeadm.k8s.io/v1beta2 (kubeadm 1.15-1.26), v1beta3
(1.22-1.36) and v1beta4 (1.31 on; see ../shared/K8S-FACTS.md and
K8S-MODERN-FACTS.md section 3); the fields below are the JSON names of
their Go types (cmd/kubeadm/app/apis/kubeadm/v1beta*/types.go:
InitConfiguration, ClusterConfiguration, JoinConfiguration and the structs
they hold).  The
fake is stricter than kubeadm, which warns about an unknown field and goes
on: here an unknown kind, apiVersion or field, or a value of the wrong type,
is a test failure, because the tool writes each of them itself.

The component configs kubeadm passes on (KubeletConfiguration,
KubeProxyConfiguration) are checked for their apiVersion only: their fields
are the kubelet's and kube-proxy's, not kubeadm's.
"""

import re

import yaml

STR, INT, BOOL = "string", "integer", "boolean"
ANY = "any"


class ListOf(object):
    def __init__(self, item):
        self.item = item


class MapOf(object):
    def __init__(self, value):
        self.value = value


API_ENDPOINT = {"advertiseAddress": STR, "bindPort": INT}
TAINT = {"key": STR, "value": STR, "effect": STR, "timeAdded": STR}
NODE_REGISTRATION = {"name": STR, "criSocket": STR, "taints": ListOf(TAINT),
                     "kubeletExtraArgs": MapOf(STR),
                     "ignorePreflightErrors": ListOf(STR)}
BOOTSTRAP_TOKEN = {"token": STR, "description": STR, "ttl": STR,
                   "expires": STR, "usages": ListOf(STR),
                   "groups": ListOf(STR)}
HOST_PATH_MOUNT = {"name": STR, "hostPath": STR, "mountPath": STR,
                   "readOnly": BOOL, "pathType": STR}
COMPONENT = {"extraArgs": MapOf(STR), "extraVolumes": ListOf(HOST_PATH_MOUNT)}
IMAGE_META = {"imageRepository": STR, "imageTag": STR}
TYPE_META = {"apiVersion": STR, "kind": STR}

V1BETA2 = {
    "InitConfiguration": dict(TYPE_META, **{
        "bootstrapTokens": ListOf(BOOTSTRAP_TOKEN),
        "nodeRegistration": NODE_REGISTRATION,
        "localAPIEndpoint": API_ENDPOINT,
        "certificateKey": STR}),
    "ClusterConfiguration": dict(TYPE_META, **{
        "etcd": {"local": dict(IMAGE_META, dataDir=STR,
                               extraArgs=MapOf(STR),
                               serverCertSANs=ListOf(STR),
                               peerCertSANs=ListOf(STR)),
                 "external": {"endpoints": ListOf(STR), "caFile": STR,
                              "certFile": STR, "keyFile": STR}},
        "networking": {"serviceSubnet": STR, "podSubnet": STR,
                       "dnsDomain": STR},
        "kubernetesVersion": STR,
        "controlPlaneEndpoint": STR,
        "apiServer": dict(COMPONENT, certSANs=ListOf(STR),
                          timeoutForControlPlane=STR),
        "controllerManager": COMPONENT,
        "scheduler": COMPONENT,
        "dns": dict(IMAGE_META, type=STR),
        "certificatesDir": STR,
        "imageRepository": STR,
        "useHyperKubeImage": BOOL,
        "featureGates": MapOf(BOOL),
        "clusterName": STR}),
    "JoinConfiguration": dict(TYPE_META, **{
        "nodeRegistration": NODE_REGISTRATION,
        "caCertPath": STR,
        "discovery": {"bootstrapToken": {"token": STR,
                                         "apiServerEndpoint": STR,
                                         "caCertHashes": ListOf(STR),
                                         "unsafeSkipCAVerification": BOOL},
                      "file": {"kubeConfigPath": STR},
                      "tlsBootstrapToken": STR,
                      "timeout": STR},
        "controlPlane": {"localAPIEndpoint": API_ENDPOINT,
                         "certificateKey": STR}}),
}



def _without(fields, *names):
    return dict((key, value) for key, value in fields.items()
                if key not in names)


# kubeadm.k8s.io/v1beta3 (kubeadm 1.22-1.36; cmd/kubeadm/app/apis/kubeadm/
# v1beta3/types.go): useHyperKubeImage and dns.type gone, imagePullPolicy
# and skipPhases new (1.22 release notes).
NODE_REGISTRATION_V1BETA3 = dict(NODE_REGISTRATION, imagePullPolicy=STR)
V1BETA3 = {
    "InitConfiguration": dict(V1BETA2["InitConfiguration"],
                              nodeRegistration=NODE_REGISTRATION_V1BETA3,
                              skipPhases=ListOf(STR)),
    "ClusterConfiguration": dict(
        _without(V1BETA2["ClusterConfiguration"], "useHyperKubeImage"),
        dns=IMAGE_META),
    "JoinConfiguration": dict(V1BETA2["JoinConfiguration"],
                              nodeRegistration=NODE_REGISTRATION_V1BETA3,
                              skipPhases=ListOf(STR)),
}

# kubeadm.k8s.io/v1beta4 (kubeadm 1.31 on; kubeadm-config.v1beta4.md):
# extraArgs and kubeletExtraArgs are lists of {name, value}; the timeouts
# moved from apiServer.timeoutForControlPlane and discovery.timeout into
# Init/JoinConfiguration.timeouts.
ARG = {"name": STR, "value": STR}
ENV = {"name": STR, "value": STR}
TIMEOUTS = {"controlPlaneComponentHealthCheck": STR, "kubeletHealthCheck": STR,
            "kubernetesAPICall": STR, "etcdAPICall": STR, "tlsBootstrap": STR,
            "discovery": STR, "upgradeManifests": STR}
NODE_REGISTRATION_V1BETA4 = dict(NODE_REGISTRATION_V1BETA3,
                                 kubeletExtraArgs=ListOf(ARG),
                                 imagePullSerial=BOOL)
COMPONENT_V1BETA4 = {"extraArgs": ListOf(ARG),
                     "extraVolumes": ListOf(HOST_PATH_MOUNT),
                     "extraEnvs": ListOf(ENV)}
V1BETA4 = {
    "InitConfiguration": dict(V1BETA3["InitConfiguration"],
                              nodeRegistration=NODE_REGISTRATION_V1BETA4,
                              timeouts=TIMEOUTS, dryRun=BOOL),
    "ClusterConfiguration": dict(
        V1BETA3["ClusterConfiguration"],
        etcd={"local": dict(IMAGE_META, dataDir=STR,
                            extraArgs=ListOf(ARG), extraEnvs=ListOf(ENV),
                            serverCertSANs=ListOf(STR),
                            peerCertSANs=ListOf(STR)),
              "external": V1BETA2["ClusterConfiguration"]["etcd"]["external"]},
        apiServer=dict(COMPONENT_V1BETA4, certSANs=ListOf(STR)),
        controllerManager=COMPONENT_V1BETA4, scheduler=COMPONENT_V1BETA4,
        dns=dict(IMAGE_META, disabled=BOOL), proxy={"disabled": BOOL},
        encryptionAlgorithm=STR, certificateValidityPeriod=STR,
        caCertificateValidityPeriod=STR),
    "JoinConfiguration": dict(
        V1BETA3["JoinConfiguration"],
        nodeRegistration=NODE_REGISTRATION_V1BETA4, timeouts=TIMEOUTS,
        dryRun=BOOL,
        discovery=_without(V1BETA2["JoinConfiguration"]["discovery"],
                           "timeout")),
}

# The config APIs each kubeadm minor reads: {API version: kinds' fields}.
# v1beta2 went in 1.27 (kubernetes #114540), v1beta3 in 1.37 (#136016).
APIS = {"kubeadm.k8s.io/v1beta2": V1BETA2, "kubeadm.k8s.io/v1beta3": V1BETA3,
        "kubeadm.k8s.io/v1beta4": V1BETA4}
KUBEADM_APIS = dict(
    (minor, dict((api, APIS[api]) for api, first, last in (
        ("kubeadm.k8s.io/v1beta2", 15, 26), ("kubeadm.k8s.io/v1beta3", 22, 36),
        ("kubeadm.k8s.io/v1beta4", 31, 37)) if first <= minor <= last))
    for minor in range(15, 38))
COMPONENT_APIS = {"KubeletConfiguration": "kubelet.config.k8s.io/v1beta1",
                  "KubeProxyConfiguration": "kubeproxy.config.k8s.io/v1alpha1"}
# The kinds each command reads from its --config.
COMMAND_KINDS = {
    "init": ("InitConfiguration", "ClusterConfiguration",
             "KubeletConfiguration", "KubeProxyConfiguration"),
    "join": ("JoinConfiguration",)}


def minor_of(version):
    match = re.match(r"^v1\.(\d+)\.\d+$", version or "")
    if not match:
        raise ValueError("%r is not a Kubernetes version vX.Y.Z" % (version,))
    return int(match.group(1))


def _type_ok(kind, value):
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == BOOL:
        return isinstance(value, bool)
    return kind == ANY


def check_value(where, schema, value):
    """[problem] of VALUE against SCHEMA (a field dict, ListOf, MapOf or a
    scalar type)."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return ["%s: a mapping expected, got %r" % (where, value)]
        problems = []
        for key in sorted(value):
            if key not in schema:
                problems.append("%s: unknown field %r" % (where, key))
            else:
                problems += check_value("%s.%s" % (where, key), schema[key],
                                        value[key])
        return problems
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return ["%s: a list expected, got %r" % (where, value)]
        problems = []
        for index, item in enumerate(value):
            problems += check_value("%s[%d]" % (where, index), schema.item,
                                    item)
        return problems
    if isinstance(schema, MapOf):
        if not isinstance(value, dict):
            return ["%s: a mapping expected, got %r" % (where, value)]
        problems = []
        for key in sorted(value):
            problems += check_value("%s[%r]" % (where, key), schema.value,
                                    value[key])
        return problems
    if not _type_ok(schema, value):
        return ["%s: a %s expected, got %r" % (where, schema, value)]
    return []


def check_config(command, text, kubeadm_version):
    """[problem] of a `kubeadm COMMAND --config` file's TEXT for the kubeadm
    of KUBEADM_VERSION; [] when that kubeadm takes it."""
    minor = minor_of(kubeadm_version)
    if minor not in KUBEADM_APIS:
        return ["this fake kubeadm knows no config API of %s"
                % kubeadm_version]
    apis = KUBEADM_APIS[minor]
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        return ["the config is not YAML: %s" % exc]
    problems, seen = [], set()
    for number, doc in enumerate(docs, 1):
        where = "document %d" % number
        if not isinstance(doc, dict):
            problems.append("%s is not a mapping" % where)
            continue
        kind = doc.get("kind")
        if kind not in COMMAND_KINDS[command]:
            problems.append("%s: kubeadm %s reads no kind %r" % (
                where, command, kind))
            continue
        if kind in seen:
            problems.append("%s: %s twice" % (where, kind))
        seen.add(kind)
        if kind in COMPONENT_APIS:
            if doc.get("apiVersion") != COMPONENT_APIS[kind]:
                problems.append("%s: %s is apiVersion %s, not %r" % (
                    where, kind, COMPONENT_APIS[kind], doc.get("apiVersion")))
            continue
        if doc.get("apiVersion") not in apis:
            problems.append("%s: %s of kubeadm %s is apiVersion %s, not %r"
                            % (where, kind, kubeadm_version,
                               " or ".join(sorted(apis)),
                               doc.get("apiVersion")))
            continue
        problems += check_value(kind, apis[doc["apiVersion"]][kind], doc)
        if kind == "ClusterConfiguration":
            version = doc.get("kubernetesVersion")
            if version is not None and version != kubeadm_version:
                problems.append("ClusterConfiguration.kubernetesVersion %r is "
                                "not the bundled kubeadm's %s"
                                % (version, kubeadm_version))
    if command == "join":
        joins = [doc for doc in docs if isinstance(doc, dict)
                 and doc.get("kind") == "JoinConfiguration"]
        discovery = (joins[0].get("discovery") or {}) if joins else {}
        if not joins:
            problems.append("no JoinConfiguration in the config")
        elif not (discovery.get("bootstrapToken") or discovery.get("file")):
            problems.append("JoinConfiguration.discovery has neither "
                            "bootstrapToken nor file")
    return problems
