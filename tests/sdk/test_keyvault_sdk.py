"""The official azure-keyvault-keys SDK, unchanged, against the hsm-ha proxy.

Run by `tests/tests/proxy_sdk.rs`, which starts `hsm-proxy dev` and sets
HSM_DEV_JSON to the path of its dev.json (url, ca_cert and the role
passwords). Run by hand against any dev group:

    HSM_DEV_JSON=hsm-dev/dev.json .venv/bin/python -m pytest -q tests/sdk

Every signature the proxy makes is checked again with the `cryptography`
package from the public JWK the SDK returned, and the proxy decrypts and
unwraps RSA ciphertexts made by `cryptography` as well as by the SDK. The
README's "Python SDK" example runs here as written. Key names carry a random
suffix, so the suite can run twice against one group.
"""

import base64
import hashlib
import json
import os
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient, KeyCurveName, KeyType
from azure.keyvault.keys.crypto import (
    CryptographyClient,
    EncryptionAlgorithm,
    KeyWrapAlgorithm,
    SignatureAlgorithm,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

RUN = uuid.uuid4().hex[:8]
API_VERSION = "7.5"


def name(stem):
    return f"sdk-{stem}-{RUN}"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---------------------------------------------------------------- credentials


class ProxyCredential:
    """A `TokenCredential`: logs in to the proxy with a role's password.

    The SDK calls `get_token` after the proxy's 401 challenge, once per client.
    """

    def __init__(self, dev, role, password):
        self.url = dev["url"]
        self.ca = dev["ca_cert"]
        self.role = role
        self.password = password
        self.calls = []

    def _login(self):
        r = requests.post(
            f"{self.url}/login",
            json={"role": self.role, "password": self.password},
            verify=self.ca,
            timeout=30,
        )
        assert r.status_code == 200, f"login as {self.role}: {r.status_code} {r.text}"
        body = r.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] > 0
        return body["access_token"], int(time.time()) + int(body["expires_in"])

    def get_token(self, *scopes, claims=None, tenant_id=None, enable_cae=False, **kwargs):
        self.calls.append(("get_token", scopes, tenant_id))
        token, expires_on = self._login()
        return AccessToken(token, expires_on)


class ProxyTokenInfoCredential(ProxyCredential):
    """The same credential with the newer `SupportsTokenInfo` protocol, which
    azure-core >= 1.31 prefers when present."""

    def get_token_info(self, *scopes, options=None):
        self.calls.append(("get_token_info", scopes, (options or {}).get("tenant_id")))
        token, expires_on = self._login()
        return AccessTokenInfo(token, expires_on)


# ------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def dev():
    path = os.environ.get("HSM_DEV_JSON")
    if not path:
        pytest.fail("HSM_DEV_JSON is not set: point it at the dev.json of `hsm-proxy dev`")
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def officer(dev):
    return ProxyTokenInfoCredential(dev, "crypto-officer", dev["crypto_officer_password"])


@pytest.fixture(scope="session")
def user(dev):
    return ProxyCredential(dev, "crypto-user", dev["crypto_user_password"])


@pytest.fixture(scope="session")
def keys(dev, officer):
    return KeyClient(
        vault_url=dev["url"],
        credential=officer,
        verify_challenge_resource=False,
        connection_verify=dev["ca_cert"],
    )


@pytest.fixture(scope="session")
def user_keys(dev, user):
    return KeyClient(
        vault_url=dev["url"],
        credential=user,
        verify_challenge_resource=False,
        connection_verify=dev["ca_cert"],
    )


def crypto(dev, key, cred):
    return CryptographyClient(
        key, credential=cred, verify_challenge_resource=False, connection_verify=dev["ca_cert"]
    )


@pytest.fixture(scope="session")
def rsa_key(keys):
    return keys.create_rsa_key(name("rsa"), size=2048)


@pytest.fixture(scope="session")
def ec_key(keys):
    return keys.create_ec_key(name("ec"), curve=KeyCurveName.p_256)


@pytest.fixture(scope="session")
def oct_key(keys):
    return keys.create_oct_key(name("oct"), size=256, hardware_protected=True)


# -------------------------------------------------------------------- helpers


def assert_proxy_kid(dev, kid, key_name, versioned=True):
    """A kid is `https://HOST:PORT/keys/{name}/{version}` of the proxy."""
    assert "/partitions/" not in kid, kid
    proxy = urlsplit(dev["url"])
    got = urlsplit(kid)
    assert (got.scheme, got.netloc) == ("https", proxy.netloc), kid
    for m in dev["members"]:
        assert urlsplit(m["url"]).netloc not in kid, f"member {m['name']} leaks in {kid}"
    parts = got.path.split("/")
    if versioned:
        assert parts[:3] == ["", "keys", key_name], kid
        assert len(parts) == 4 and len(parts[3]) == 32, kid
        int(parts[3], 16)
    else:
        assert parts[:3] in (["", "keys", key_name], ["", "deletedkeys", key_name]), kid


def public_rsa(key):
    n = int.from_bytes(key.key.n, "big")
    e = int.from_bytes(key.key.e, "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def public_ec(key):
    assert key.key.crv == KeyCurveName.p_256
    x = int.from_bytes(key.key.x, "big")
    y = int.from_bytes(key.key.y, "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def independently_verify(key, alg, digest, signature):
    """Verifies with `cryptography`; raises InvalidSignature when wrong."""
    pre = Prehashed(hashes.SHA256())
    if alg == SignatureAlgorithm.rs256:
        public_rsa(key).verify(signature, digest, padding.PKCS1v15(), pre)
    elif alg == SignatureAlgorithm.ps256:
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        public_rsa(key).verify(signature, digest, pss, pre)
    elif alg == SignatureAlgorithm.es256:
        assert len(signature) == 64, "ES256 signatures are raw r||s"
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        public_ec(key).verify(encode_dss_signature(r, s), digest, ec.ECDSA(pre))
    else:
        raise AssertionError(alg)


def remote_verify(client, key, alg, digest, signature):
    """`POST .../verify` through the SDK's own pipeline (challenge, token):
    the CryptographyClient verifies locally whenever it holds the public key."""
    req = HttpRequest(
        "POST",
        f"{key.id}/verify",
        params={"api-version": API_VERSION},
        json={"alg": SignatureAlgorithm(alg).value, "digest": b64url(digest), "value": b64url(signature)},
    )
    resp = client.send_request(req)
    assert resp.status_code == 200, resp.text()
    return resp.json()["value"]


# ---------------------------------------------------------------------- tests


def test_unauthenticated_request_gets_the_bearer_challenge(dev):
    r = requests.get(f"{dev['url']}/keys", params={"api-version": API_VERSION}, verify=dev["ca_cert"])
    assert r.status_code == 401
    base = dev["url"]
    assert r.headers["WWW-Authenticate"] == f'Bearer authorization="{base}/login", resource="{base}"'
    assert r.json()["error"]["code"] == "Unauthorized"


def test_create_rsa_ec_and_oct_keys(dev, keys, officer, rsa_key, ec_key, oct_key):
    assert rsa_key.name == name("rsa")
    # Every key lives in the HSM, so it reports the `-HSM` type, as Managed HSM does.
    assert rsa_key.key_type == KeyType.rsa_hsm
    assert len(rsa_key.key.n) == 256
    assert rsa_key.key.e == b"\x01\x00\x01"
    assert public_rsa(rsa_key).key_size == 2048
    assert rsa_key.key.d is None
    assert_proxy_kid(dev, rsa_key.id, name("rsa"))

    assert ec_key.key_type == KeyType.ec_hsm
    assert ec_key.key.crv == KeyCurveName.p_256
    assert len(ec_key.key.x) == 32 and len(ec_key.key.y) == 32
    public_ec(ec_key)  # the point is on the curve
    assert ec_key.key.d is None
    assert_proxy_kid(dev, ec_key.id, name("ec"))

    assert oct_key.key_type == KeyType.oct_hsm
    assert oct_key.key.k is None, "a symmetric key's material never leaves the HSM"
    assert_proxy_kid(dev, oct_key.id, name("oct"))

    for k in (rsa_key, ec_key, oct_key):
        p = k.properties
        assert p.enabled is True
        assert p.created_on is not None and p.updated_on is not None
        assert p.recovery_level == "Recoverable+Purgeable"
        assert p.version and len(p.version) == 32
        assert p.vault_url == dev["url"]
    assert {"sign", "verify"} <= set(ec_key.key_operations)
    assert {"encrypt", "decrypt", "wrapKey", "unwrapKey"} <= set(oct_key.key_operations)

    # The SDK logged in after the proxy's challenge, with the proxy's /login
    # as tenant and the proxy's origin as resource.
    kinds = {(c[0], c[1], c[2]) for c in officer.calls}
    assert ("get_token_info", (f"{dev['url']}/.default",), "login") in kinds, officer.calls


def test_get_key_latest_and_by_version(dev, keys, rsa_key, ec_key, oct_key):
    for k in (rsa_key, ec_key, oct_key):
        latest = keys.get_key(k.name)
        assert latest.id == k.id
        assert latest.key_type == k.key_type
        by_version = keys.get_key(k.name, k.properties.version)
        assert by_version.id == k.id
    assert keys.get_key(ec_key.name).key.x == ec_key.key.x
    assert keys.get_key(rsa_key.name).key.n == rsa_key.key.n
    with pytest.raises(ResourceNotFoundError) as e:
        keys.get_key(name("never-made"))
    assert e.value.status_code == 404
    assert e.value.error.code == "KeyNotFound"


def test_list_follows_next_link_across_pages(dev, keys, rsa_key, ec_key, oct_key):
    made = {name(f"page{i:02d}") for i in range(30)}
    for n in sorted(made):
        keys.create_ec_key(n, curve="P-256")
    wanted = made | {rsa_key.name, ec_key.name, oct_key.name}

    # Default page size (25): more than one page, nextLink followed by the SDK.
    pages = list(keys.list_properties_of_keys().by_page())
    assert len(pages) >= 2
    listed = [p for page in pages for p in page]
    names = [p.name for p in listed]
    assert len(names) == len(set(names)), "a key is listed twice across pages"
    assert wanted <= set(names)
    for p in listed:
        assert_proxy_kid(dev, p.id, p.name, versioned=False)
        assert p.enabled is True

    # A small page size: every page but the last is full.
    small = [list(page) for page in keys.list_properties_of_keys(max_page_size=7).by_page()]
    assert all(len(page) == 7 for page in small[:-1])
    assert 1 <= len(small[-1]) <= 7
    assert [p.name for page in small for p in page] == names


def test_sign_and_verify_rs256_ps256_es256(dev, keys, officer, user, rsa_key, ec_key):
    digest = hashlib.sha256(b"hsm-ha sdk interop").digest()
    other = hashlib.sha256(b"something else").digest()
    for key, alg in (
        (rsa_key, SignatureAlgorithm.rs256),
        (rsa_key, SignatureAlgorithm.ps256),
        (ec_key, SignatureAlgorithm.es256),
    ):
        # Signing as the crypto officer (client from the key) and as the
        # crypto user (client from the kid alone: it fetches the key).
        for cc in (crypto(dev, key, officer), crypto(dev, key.id, user)):
            signed = cc.sign(alg, digest)
            assert signed.algorithm == alg
            assert signed.key_id == key.id
            assert len(signed.signature) == (256 if key is rsa_key else 64)
            independently_verify(key, alg, digest, signed.signature)
            with pytest.raises(InvalidSignature):
                independently_verify(key, alg, other, signed.signature)

            assert cc.verify(alg, digest, signed.signature).is_valid is True
            assert cc.verify(alg, other, signed.signature).is_valid is False
            # The proxy's own verify, through the SDK pipeline.
            assert remote_verify(keys, key, alg, digest, signed.signature) is True
            assert remote_verify(keys, key, alg, other, signed.signature) is False

    # ECDSA and PSS are randomised: two signatures differ and both verify.
    cc = crypto(dev, ec_key, officer)
    a = cc.sign(SignatureAlgorithm.es256, digest).signature
    b = cc.sign(SignatureAlgorithm.es256, digest).signature
    assert a != b


def test_encrypt_decrypt_rsa_oaep_256_and_a256gcm(dev, officer, user, rsa_key, oct_key):
    plaintext = b"attack at dawn \x00\xff" * 3

    # RSA-OAEP-256: the SDK encrypts locally, the proxy decrypts.
    cc = crypto(dev, rsa_key, user)
    enc = cc.encrypt(EncryptionAlgorithm.rsa_oaep_256, plaintext)
    assert enc.key_id == rsa_key.id
    assert len(enc.ciphertext) == 256
    dec = cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext)
    assert dec.plaintext == plaintext
    assert dec.key_id == rsa_key.id
    # A ciphertext made by `cryptography` from the JWK decrypts as well.
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    ct = public_rsa(rsa_key).encrypt(b"from cryptography", oaep)
    assert cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, ct).plaintext == b"from cryptography"
    with pytest.raises(HttpResponseError) as e:
        cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, bytes(256))
    assert e.value.status_code == 400

    # A256GCM on the HSM-only oct key: the proxy encrypts and makes the IV.
    cc = crypto(dev, oct_key, officer)
    aad = b"header v1"
    enc = cc.encrypt(EncryptionAlgorithm.a256_gcm, plaintext, additional_authenticated_data=aad)
    assert enc.key_id == oct_key.id
    assert enc.algorithm == EncryptionAlgorithm.a256_gcm
    assert len(enc.iv) == 12
    assert len(enc.tag) == 16
    assert enc.aad == aad
    assert len(enc.ciphertext) == len(plaintext)
    assert enc.ciphertext != plaintext
    again = cc.encrypt(EncryptionAlgorithm.a256_gcm, plaintext, additional_authenticated_data=aad)
    assert again.iv != enc.iv and again.ciphertext != enc.ciphertext

    dec = cc.decrypt(
        EncryptionAlgorithm.a256_gcm,
        enc.ciphertext,
        iv=enc.iv,
        authentication_tag=enc.tag,
        additional_authenticated_data=aad,
    )
    assert dec.plaintext == plaintext
    assert dec.key_id == oct_key.id
    # A changed aad or tag fails authentication.
    for bad in (
        dict(iv=enc.iv, authentication_tag=enc.tag, additional_authenticated_data=b"header v2"),
        dict(iv=enc.iv, authentication_tag=bytes(16), additional_authenticated_data=aad),
    ):
        with pytest.raises(HttpResponseError) as e:
            cc.decrypt(EncryptionAlgorithm.a256_gcm, enc.ciphertext, **bad)
        assert e.value.status_code == 400


def test_wrap_and_unwrap_rsa_oaep_and_a256kw(dev, officer, user, rsa_key, oct_key):
    cek = os.urandom(32)

    # RSA-OAEP: wrapped locally by the SDK and by `cryptography`, unwrapped by the proxy.
    cc = crypto(dev, rsa_key, user)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.rsa_oaep, cek)
    assert wrapped.key_id == rsa_key.id
    assert len(wrapped.encrypted_key) == 256
    unwrapped = cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
    assert unwrapped.key == cek
    assert unwrapped.key_id == rsa_key.id
    oaep_sha1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    other = public_rsa(rsa_key).encrypt(cek, oaep_sha1)
    assert cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, other).key == cek

    # A256KW (RFC 3394) on the oct key: both sides on the proxy.
    cc = crypto(dev, oct_key, officer)
    wrapped = cc.wrap_key(KeyWrapAlgorithm.aes_256, cek)
    assert wrapped.key_id == oct_key.id
    assert len(wrapped.encrypted_key) == 40
    assert cc.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == cek
    # RFC 3394 is deterministic.
    assert cc.wrap_key(KeyWrapAlgorithm.aes_256, cek).encrypted_key == wrapped.encrypted_key
    tampered = bytes([wrapped.encrypted_key[0] ^ 1]) + wrapped.encrypted_key[1:]
    with pytest.raises(HttpResponseError) as e:
        cc.unwrap_key(KeyWrapAlgorithm.aes_256, tampered)
    assert e.value.status_code == 400


def test_backup_purge_restore_and_use(dev, keys, officer):
    n = name("backup")
    key = keys.create_ec_key(n, curve="P-256")
    blob = keys.backup_key(n)
    assert isinstance(blob, bytes) and len(blob) > 0

    keys.begin_delete_key(n).wait()
    keys.purge_deleted_key(n)
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(n)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(n)

    restored = keys.restore_key_backup(blob)
    assert restored.name == n
    assert restored.id == key.id, "a restore brings back the same version"
    assert_proxy_kid(dev, restored.id, n)
    assert (restored.key.x, restored.key.y) == (key.key.x, key.key.y)
    assert keys.get_key(n).id == key.id

    # The restored key signs, and the signature verifies under the original public key.
    digest = hashlib.sha256(b"after restore").digest()
    sig = crypto(dev, restored, officer).sign(SignatureAlgorithm.es256, digest).signature
    independently_verify(key, SignatureAlgorithm.es256, digest, sig)

    # Restoring over a live key is refused.
    with pytest.raises(HttpResponseError) as e:
        keys.restore_key_backup(blob)
    assert e.value.status_code == 409


def test_delete_recover_delete_purge(dev, keys, officer):
    n = name("deleted")
    key = keys.create_rsa_key(n, size=2048)

    deleted = keys.begin_delete_key(n).result()
    assert deleted.name == n
    assert deleted.id == key.id
    assert deleted.recovery_id is not None
    assert_proxy_kid(dev, deleted.recovery_id, n, versioned=False)
    assert deleted.recovery_id == f"{dev['url']}/deletedkeys/{n}"
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date > deleted.deleted_date

    with pytest.raises(ResourceNotFoundError):
        keys.get_key(n)
    got = keys.get_deleted_key(n)
    assert got.id == key.id
    assert got.recovery_id == deleted.recovery_id
    listed = {d.name: d for d in keys.list_deleted_keys()}
    assert n in listed
    assert listed[n].recovery_id == deleted.recovery_id
    assert listed[n].deleted_date is not None
    assert n not in {p.name for p in keys.list_properties_of_keys()}

    recovered = keys.begin_recover_deleted_key(n).result()
    assert recovered.id == key.id
    assert keys.get_key(n).key.n == key.key.n
    digest = hashlib.sha256(b"after recover").digest()
    sig = crypto(dev, recovered, officer).sign(SignatureAlgorithm.rs256, digest).signature
    independently_verify(key, SignatureAlgorithm.rs256, digest, sig)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(n)

    keys.begin_delete_key(n).wait()
    keys.purge_deleted_key(n)
    with pytest.raises(ResourceNotFoundError):
        keys.get_deleted_key(n)
    with pytest.raises(ResourceNotFoundError):
        keys.get_key(n)
    assert n not in {d.name for d in keys.list_deleted_keys()}


def test_crypto_user_uses_keys_but_cannot_manage_them(dev, user_keys, user, ec_key):
    assert user_keys.get_key(ec_key.name).id == ec_key.id
    digest = hashlib.sha256(b"user").digest()
    sig = crypto(dev, ec_key, user).sign(SignatureAlgorithm.es256, digest).signature
    independently_verify(ec_key, SignatureAlgorithm.es256, digest, sig)
    with pytest.raises(HttpResponseError) as e:
        user_keys.create_ec_key(name("by-user"), curve="P-256")
    assert e.value.status_code == 403
    with pytest.raises(HttpResponseError) as e:
        user_keys.begin_delete_key(ec_key.name)
    assert e.value.status_code == 403
    assert user_keys.get_key(ec_key.name).id == ec_key.id
    assert any(c[0] == "get_token" for c in user.calls)


def test_readme_python_example_runs_as_written(dev):
    """The README's "Python SDK" example, with its dev.json path pointed at this group."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme.split("## Python SDK", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'open("hsm-dev/dev.json")' in code
    code = code.replace('open("hsm-dev/dev.json")', f"open({os.environ['HSM_DEV_JSON']!r})")
    code = code.replace('"signer"', repr(name("readme")))
    scope = {}
    exec(compile(code, "README.md (Python SDK)", "exec"), scope)
    assert scope["key"].name == name("readme")
    assert_proxy_kid(dev, scope["key"].id, name("readme"))
    independently_verify(scope["key"], SignatureAlgorithm.es256, scope["digest"], scope["sig"])
