"""The registry client section of k8s_offline.py: image references, auth
challenges, schema1 manifest digests, and credentials that never leak."""

import base64
import hashlib
import json
import os

import pytest

import k8s_offline as ko


@pytest.mark.parametrize("text,expected", [
    ("quay.io/coreos/flannel:v0.11.0-amd64",
     ("quay.io", "coreos/flannel", "v0.11.0-amd64", None)),
    ("nginx", ("docker.io", "library/nginx", "latest", None)),
    ("user/app:1", ("docker.io", "user/app", "1", None)),
    ("127.0.0.1:5000/pause:3.1", ("127.0.0.1:5000", "pause", "3.1", None)),
    ("localhost/x/y:z", ("localhost", "x/y", "z", None)),
    ("registry.aliyuncs.com/google_containers/etcd:3.3.15-0",
     ("registry.aliyuncs.com", "google_containers/etcd", "3.3.15-0", None)),
    ("a/b@sha256:" + "0" * 64, ("docker.io", "a/b", None, "sha256:" + "0" * 64)),
])
def test_parse_image_ref(text, expected):
    ref = ko.parse_image_ref(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "a/b@sha256:xyz", "a/b:",
                                  "a/b:-bad", "a//b"])
def test_parse_image_ref_rejects(text):
    with pytest.raises(ko.UserError):
        ko.parse_image_ref(text)


def test_parse_challenges_basic_and_bearer_in_one_header():
    header = ('Basic realm="quay", Bearer realm="https://quay.io/v2/auth",'
              'service="quay.io",scope="repository:coreos/flannel:pull"')
    found = dict(ko.parse_challenges(header))
    assert found["basic"]["realm"] == "quay"
    assert found["bearer"] == {"realm": "https://quay.io/v2/auth",
                               "service": "quay.io",
                               "scope": "repository:coreos/flannel:pull"}


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_schema1_digest_covers_the_jws_payload_only():
    payload = b'{\n   "schemaVersion": 1,\n   "name": "x"'
    tail = b"\n}"
    protected = _b64url(json.dumps({"formatLength": len(payload),
                                    "formatTail": _b64url(tail)}).encode())
    signed = payload + (',\n   "signatures": [{"protected": "%s"}]' % protected
                        ).encode() + tail
    digest = ko.manifest_digest(ko.MT_DOCKER_SCHEMA1_SIGNED, signed)
    assert digest == "sha256:" + hashlib.sha256(payload + tail).hexdigest()
    assert digest != "sha256:" + hashlib.sha256(signed).hexdigest()


def test_credentials_never_leak(token_registry, make_bundle_args, make_docker_config,
                                run_cli, tmp_path):
    """A searched-for password appears in no output, log or bundle byte, on
    success and on failure."""
    secret = "Zq9-unique-credential-7731"
    env = {"DOCKER_CONFIG": make_docker_config(token_registry.host, password=secret)}
    output = tmp_path / "out.tar"
    rc, out, err = run_cli("-v", "bundle", *make_bundle_args(token_registry.host),
                           "--output", output, "--cache-dir", tmp_path / "c", env=env)
    assert rc != 0 and "rejected the credentials" in err, err   # wrong password
    assert secret not in out + err
    import base64
    encoded = base64.b64encode(("tester:" + secret).encode()).decode()
    assert encoded not in out + err
    assert not output.exists()
    for root, _, names in os.walk(str(tmp_path)):
        for name in names:
            with open(os.path.join(root, name), "rb") as handle:
                data = handle.read()
            assert secret.encode() not in data and encoded.encode() not in data, name
