#!/usr/bin/env python3
"""A scripted PKCS#11 session through PyKCS11, covering every mechanism the
hsm-ha module (libhsm_pkcs11.so) offers, run unchanged against SoftHSM2 and
against our module (tests/tests/pkcs11_pykcs11.rs runs both, side by side).

    pykcs11_session.py --module PATH --token-label L --pin PIN [--flavor auto]

It opens a R/W session, logs in as CKU_USER and, for each mechanism,
generates the keys it needs and exercises it. Signatures are verified on the
token and, with the `cryptography` package, off the token (public keys read
through C_GetAttributeValue); ciphertexts are decrypted back; secret keys of
known value (session keys, ECDH and KDF outputs) are checked against Python's
own computation. Every key label is a valid Key Vault key name
(`[0-9a-zA-Z-]`) with a random suffix per run; the token keys made are
destroyed at the end.

One line per check: `PASS name`, `FAIL name: detail` or `N/A name: reason`;
`INFO ...` lines carry notes. The exit status is 1 when any check failed.

Where our module documents a behaviour that differs from SoftHSM2, the check
tests each side's documented behaviour (the flavor is detected from the
token's manufacturer, or forced with --flavor):

- token keys are never extractable on hsm-ha (CKA_SENSITIVE=TRUE and
  CKA_EXTRACTABLE=FALSE forced); SoftHSM2 keeps what the template asks;
- AES-GCM encryption: hsm-ha generates the 12-byte IV and writes it back into
  CK_GCM_PARAMS.pIv; SoftHSM2 uses the caller's IV as is;
- hsm-ha makes no SHA-1 signatures, its CKM_RSA_PKCS signs only SHA-256/384/512
  DigestInfo, and it has no RSA PKCS#1 v1.5 encryption; SoftHSM2 has all three;
- C_DestroyObject on an hsm-ha private key deletes the key, public object
  included; SoftHSM2 keeps the public object;
- CKM_SP800_108_COUNTER_KDF: SoftHSM2 2.6 does not implement it (N/A there);
  its CK_SP800_108_KDF_PARAMS (which holds pointers, and which PyKCS11 has no
  class for) is laid out here with ctypes.

The documented N/A lines are exactly those in DOCUMENTED_NA.
"""

import argparse
import ctypes
import hashlib
import hmac
import os
import secrets
import sys
import threading
import time
import traceback

import PyKCS11
from PyKCS11 import (
    AES_GCM_Mechanism,
    ECDH1_DERIVE_Mechanism,
    EDDSA_Mechanism,
    Mechanism,
    PyKCS11Error,
    RSA_PSS_Mechanism,
    RSAOAEPMechanism,
    ckbytelist,
)
from PyKCS11.LowLevel import (
    CKA_CLASS,
    CKA_DECRYPT,
    CKA_DERIVE,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_ENCRYPT,
    CKA_EXTRACTABLE,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_LABEL,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PRIVATE,
    CKA_PRIVATE_EXPONENT,
    CKA_PUBLIC_EXPONENT,
    CKA_SENSITIVE,
    CKA_SIGN,
    CKA_TOKEN,
    CKA_UNWRAP,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_VERIFY,
    CKA_WRAP,
    CKD_NULL,
    CKF_DECRYPT,
    CKF_DERIVE,
    CKF_DIGEST,
    CKF_ENCRYPT,
    CKF_GENERATE,
    CKF_GENERATE_KEY_PAIR,
    CKF_LOGIN_REQUIRED,
    CKF_RW_SESSION,
    CKF_SIGN,
    CKF_TOKEN_INITIALIZED,
    CKF_UNWRAP,
    CKF_VERIFY,
    CKF_WRAP,
    CKG_MGF1_SHA1,
    CKG_MGF1_SHA256,
    CKG_MGF1_SHA384,
    CKG_MGF1_SHA512,
    CKK_AES,
    CKK_EC,
    CKK_EC_EDWARDS,
    CKK_GENERIC_SECRET,
    CKK_RSA,
    CKM_AES_GCM,
    CKM_AES_KEY_GEN,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_EC_KEY_PAIR_GEN,
    CKM_ECDH1_DERIVE,
    CKM_ECDSA,
    CKM_ECDSA_SHA1,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
    CKM_EDDSA,
    CKM_GENERIC_SECRET_KEY_GEN,
    CKM_RSA_PKCS,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_PKCS_PSS,
    CKM_SHA1_RSA_PKCS,
    CKM_SHA256,
    CKM_SHA256_HMAC,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384,
    CKM_SHA384_HMAC,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512,
    CKM_SHA512_HMAC,
    CKM_SHA512_RSA_PKCS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_SHA_1,
    CKM_SP800_108_COUNTER_KDF,
    CKO_PRIVATE_KEY,
    CKO_PUBLIC_KEY,
    CKO_SECRET_KEY,
    CKR_AEAD_DECRYPT_FAILED,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_GENERAL_ERROR,
    CKR_KEY_SIZE_RANGE,
    CKR_WRAPPED_KEY_INVALID,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OK,
    CKR_SIGNATURE_INVALID,
    CKR_TEMPLATE_INCONSISTENT,
    CKU_USER,
)
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FLAVOR_SOFTHSM = "softhsm"
FLAVOR_HSMHA = "hsm-ha"
SOFTHSM_NO_ECDSA_HASH = "SoftHSM2 2.6 has no CKM_ECDSA_SHA* (hash-and-sign ECDSA)"
SOFTHSM_OAEP_SHA1_ONLY = "SoftHSM2 2.6 does CKM_RSA_PKCS_OAEP with SHA-1 only (CKR_ARGUMENTS_BAD otherwise)"
ECDSA_HASH_MECHS = (CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512)

# The N/A lines this script may print, by flavor: (check, reason).
DOCUMENTED_NA = {
    FLAVOR_SOFTHSM: {
        "sp800-108-counter-kdf": "SoftHSM2 does not implement CKM_SP800_108_COUNTER_KDF",
        "ecdsa-sha256-p256": SOFTHSM_NO_ECDSA_HASH,
        "ecdsa-sha384-p384": SOFTHSM_NO_ECDSA_HASH,
        "ecdsa-sha512-p521": SOFTHSM_NO_ECDSA_HASH,
        "ecdsa-sha256-multipart": SOFTHSM_NO_ECDSA_HASH,
        "rsa-oaep-sha256": SOFTHSM_OAEP_SHA1_ONLY,
        "rsa-oaep-wrap-sha256": SOFTHSM_OAEP_SHA1_ONLY,
    },
    FLAVOR_HSMHA: {},
}

# DER of CKA_EC_PARAMS.
CURVES = {
    "p256": (bytes.fromhex("06082a8648ce3d030107"), ec.SECP256R1(), 32),
    "p384": (bytes.fromhex("06052b81040022"), ec.SECP384R1(), 48),
    "p521": (bytes.fromhex("06052b81040023"), ec.SECP521R1(), 66),
}
ED25519_OID = bytes.fromhex("06032b6570")
ED25519_PRINTABLE = b"\x13\x0cedwards25519"

# DigestInfo prefixes (RFC 8017, 9.2 note 1).
DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
HASHES = {
    "sha1": (hashlib.sha1, hashes.SHA1(), CKM_SHA_1, CKG_MGF1_SHA1),
    "sha256": (hashlib.sha256, hashes.SHA256(), CKM_SHA256, CKG_MGF1_SHA256),
    "sha384": (hashlib.sha384, hashes.SHA384(), CKM_SHA384, CKG_MGF1_SHA384),
    "sha512": (hashlib.sha512, hashes.SHA512(), CKM_SHA512, CKG_MGF1_SHA512),
}


class NotApplicable(Exception):
    """A check that does not apply (documented in DOCUMENTED_NA)."""


class CheckFailed(Exception):
    """A check's expectation not met."""


def rv_name(rv):
    return PyKCS11.CKR.get(rv, hex(rv)) if isinstance(rv, int) else str(rv)


def expect(cond, detail):
    if not cond:
        raise CheckFailed(detail)


def expect_rv(expected, fn, *args):
    """Calls fn(*args), which must raise PyKCS11Error with a CK_RV in
    `expected` (a set); returns that CK_RV."""
    try:
        fn(*args)
    except PyKCS11Error as e:
        expect(
            e.value in expected,
            f"expected {'/'.join(rv_name(r) for r in sorted(expected))}, got {e}",
        )
        return e.value
    raise CheckFailed(
        f"expected {'/'.join(rv_name(r) for r in sorted(expected))}, got CKR_OK"
    )


def call(rv, what):
    if rv != CKR_OK:
        raise CheckFailed(f"{what}: {rv_name(rv)}")


def hid(handle):
    """A CK_OBJECT_HANDLE as an int."""
    return handle.value() if hasattr(handle, "value") else int(handle)


def tamper(data):
    b = bytearray(bytes(data))
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def der_octet_string_value(data):
    """The value of a DER OCTET STRING (CKA_EC_POINT), or data itself when it
    is not one (some tokens return the raw point)."""
    if len(data) >= 2 and data[0] == 0x04:
        n = data[1]
        off = 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(data[2 : 2 + k], "big")
            off = 2 + k
        if off + n == len(data):
            return data[off:]
    return data


class Runner:
    def __init__(self, args):
        self.args = args
        self.failed = 0
        self.results = []
        self.prefix = "p11t-" + secrets.token_hex(4)
        self.token_objects = []  # handles to destroy at the end
        self.lib = PyKCS11.PyKCS11Lib()
        self.flavor = None
        self.slot = None
        self.session = None
        self.mechs = set()
        self.keys = {}
        self.anchor = None

    # -- reporting -----------------------------------------------------
    def check(self, name, fn, *args):
        """Runs one check on a session of its own (a failed operation left
        active cannot leak into the next check)."""
        try:
            self.session = self.lib.openSession(self.slot, CKF_RW_SESSION)
            try:
                fn(*args)
            finally:
                self.session.closeSession()
        except NotApplicable as e:
            reason = str(e)
            if name not in DOCUMENTED_NA.get(self.flavor, {}):
                self.failed += 1
                print(f"FAIL {name}: undocumented N/A: {reason}", flush=True)
            else:
                print(f"N/A {name}: {reason}", flush=True)
            return False
        except (CheckFailed, PyKCS11Error, InvalidSignature) as e:
            self.failed += 1
            detail = str(e) or type(e).__name__
            if isinstance(e, InvalidSignature):
                detail = "cryptography rejected the signature"
            print(f"FAIL {name}: {detail}", flush=True)
            return False
        except Exception as e:  # pylint: disable=broad-except
            self.failed += 1
            tb = traceback.format_exc().strip().splitlines()[-3:]
            print(f"FAIL {name}: {type(e).__name__}: {e} | {' | '.join(tb)}", flush=True)
            return False
        print(f"PASS {name}", flush=True)
        return True

    def info(self, text):
        print(f"INFO {text}", flush=True)

    def label(self, what):
        return f"{self.prefix}-{what}"

    @property
    def s(self):
        return self.session

    # -- helpers -------------------------------------------------------
    def track(self, *handles):
        self.token_objects.extend(handles)

    def attr_rv(self, obj, attr):
        """C_GetAttributeValue of one attribute; returns its CK_RV."""
        t = PyKCS11.LowLevel.ckattrlist(1)
        t[0].SetType(attr)
        return self.s.lib.C_GetAttributeValue(self.s.session, obj, t)

    def find(self, template):
        return self.s.findObjects(template)

    def ec_public(self, pub, curve):
        point = der_octet_string_value(bytes(self.s.getAttributeValue(pub, [CKA_EC_POINT], True)[0]))
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point), point

    def rsa_public(self, pub):
        n, e = self.s.getAttributeValue(pub, [CKA_MODULUS, CKA_PUBLIC_EXPONENT], True)
        return rsa.RSAPublicNumbers(
            int.from_bytes(bytes(e), "big"), int.from_bytes(bytes(n), "big")
        ).public_key()

    def bad_input_rv(self, spec):
        """The CK_RVs a module gives for ciphertext or wrapped key that does
        not authenticate or unpad: the spec's, or SoftHSM2 2.6's
        CKR_GENERAL_ERROR."""
        return {CKR_GENERAL_ERROR} if self.flavor == FLAVOR_SOFTHSM else spec

    def verify_on_token(self, pub, data, sig, mech, what):
        expect(self.s.verify(pub, data, sig, mech), f"{what}: C_Verify rejected the signature")
        expect(
            not self.s.verify(pub, data, tamper(sig), mech),
            f"{what}: C_Verify accepted a wrong signature",
        )

    def sign_multipart(self, key, mech, parts):
        lib, h = self.s.lib, self.s.session
        call(lib.C_SignInit(h, mech.to_native(), key), "C_SignInit")
        for p in parts:
            call(lib.C_SignUpdate(h, ckbytelist(p)), "C_SignUpdate")
        sig = ckbytelist()
        call(lib.C_SignFinal(h, sig), "C_SignFinal (length)")
        call(lib.C_SignFinal(h, sig), "C_SignFinal")
        return bytes(sig)

    def verify_multipart(self, key, mech, parts, sig):
        lib, h = self.s.lib, self.s.session
        call(lib.C_VerifyInit(h, mech.to_native(), key), "C_VerifyInit")
        for p in parts:
            call(lib.C_VerifyUpdate(h, ckbytelist(p)), "C_VerifyUpdate")
        return lib.C_VerifyFinal(h, ckbytelist(sig))

    def multipart_out(self, fn, data, what):
        """One C_EncryptUpdate/C_EncryptFinal/C_DecryptUpdate/C_DecryptFinal
        through PyKCS11 1.5.20, whose wrapper makes two calls of its own: a
        length query (NULL output), then the call with a buffer of that
        length (seen with OpenSC's pkcs11-spy). So these also check that a
        length query neither consumes the part nor ends the operation."""
        args = (self.s.session,) if data is None else (self.s.session, ckbytelist(data))
        out = ckbytelist()
        call(fn(*args, out), what)
        return bytes(out)
        # PyKCS11's low-level wrapper makes the two calls itself when given
        # an empty list: a length query (NULL output), then the call with a
        # buffer of that length.
        out = ckbytelist()
        call(fn(*args, out), what)
        return bytes(out)

    def gcm_encrypt(self, key, plaintext, aad):
        """C_Encrypt with CKM_AES_GCM (128-bit tag); returns (iv passed,
        iv after the call, ciphertext||tag)."""
        iv_in = secrets.token_bytes(12)
        mech = AES_GCM_Mechanism(iv_in, aad, 128)
        ct = bytes(self.s.encrypt(key, plaintext, mech))
        # PyKCS11 points pIv at mech._source_iv's buffer: a module that
        # writes the IV back into pIv writes it there.
        iv_out = bytes(mech._source_iv)  # pylint: disable=protected-access
        return iv_in, iv_out, ct

    def gcm_decrypt(self, key, iv, ct, aad):
        return bytes(self.s.decrypt(key, ct, AES_GCM_Mechanism(iv, aad, 128)))

    def session_secret(self, value, key_type=CKK_AES, extractable=False):
        """A session secret key of known value (C_CreateObject). hsm-ha lets
        an extractable key held by the module only be wrapped
        (CKR_KEY_FUNCTION_NOT_PERMITTED otherwise), so the keys used for
        crypto are not extractable and the wrap targets are."""
        tpl = [
            (CKA_CLASS, CKO_SECRET_KEY),
            (CKA_KEY_TYPE, key_type),
            (CKA_TOKEN, False),
            (CKA_VALUE, value),
            (CKA_EXTRACTABLE, extractable),
            (CKA_SENSITIVE, not extractable),
        ]
        if key_type == CKK_AES:
            tpl += [(CKA_ENCRYPT, True), (CKA_DECRYPT, True)]
        else:
            tpl += [(CKA_SIGN, True), (CKA_VERIFY, True)]
        return self.s.createObject(tpl)

    def expect_aes_value(self, key, value, what):
        """key must encrypt like an AES key of `value`: C_Encrypt with
        CKM_AES_GCM on the token, decrypted by Python with `value`."""
        pt = secrets.token_bytes(45)
        aad = b"hsm-ha aad"
        _, iv, ct = self.gcm_encrypt(key, pt, aad)
        try:
            got = AESGCM(value).decrypt(iv, ct, aad)
        except Exception as e:  # pylint: disable=broad-except
            raise CheckFailed(f"{what}: Python could not decrypt the token's AES-GCM output ({type(e).__name__})") from e
        expect(got == pt, f"{what}: AES-GCM plaintext differs")

    def expect_hmac_value(self, key, value, what):
        data = secrets.token_bytes(77)
        mac = bytes(self.s.sign(key, data, Mechanism(CKM_SHA256_HMAC)))
        expect(
            mac == hmac.new(value, data, hashlib.sha256).digest(),
            f"{what}: HMAC-SHA256 differs from Python's with the expected key value",
        )

    # -- setup ---------------------------------------------------------
    def open(self):
        self.lib.load(self.args.module)
        slots = self.lib.getSlotList(tokenPresent=True)
        for slot in slots:
            ti = self.lib.getTokenInfo(slot)
            if ti.label.strip() == self.args.token_label:
                self.slot = slot
                break
        if self.slot is None:
            raise CheckFailed(f"no token labelled {self.args.token_label!r} in slots {slots}")
        ti = self.lib.getTokenInfo(self.slot)
        if self.args.flavor == "auto":
            self.flavor = FLAVOR_SOFTHSM if ti.manufacturerID.strip().startswith("SoftHSM") else FLAVOR_HSMHA
        else:
            self.flavor = self.args.flavor
        self.info(
            f"flavor {self.flavor}: token {ti.label.strip()!r}, manufacturer "
            f"{ti.manufacturerID.strip()!r}, model {ti.model.strip()!r}, slots {len(slots)}, "
            f"labels prefix {self.prefix}"
        )
        # Held open for the whole run: the login belongs to the application
        # and ends with its last session.
        self.anchor = self.lib.openSession(self.slot, CKF_RW_SESSION)

    # -- checks --------------------------------------------------------
    def c_token_info(self):
        slots = self.lib.getSlotList(tokenPresent=True)
        ti = self.lib.getTokenInfo(self.slot)
        expect(ti.label.strip() == self.args.token_label, f"label {ti.label!r}")
        expect(ti.flags & CKF_TOKEN_INITIALIZED, f"CKF_TOKEN_INITIALIZED not set: flags {ti.flags:#x}")
        expect(ti.flags & CKF_LOGIN_REQUIRED, f"CKF_LOGIN_REQUIRED not set: flags {ti.flags:#x}")
        if self.flavor == FLAVOR_HSMHA:
            expect(len(slots) == 1, f"hsm-ha has one slot; C_GetSlotList gave {slots}")
            expect(ti.label.strip() == "hsm-ha", f"hsm-ha's token label is 'hsm-ha', got {ti.label!r}")
        self.lib.getSlotInfo(self.slot)
        self.lib.getInfo()

    def c_login(self):
        self.s.login(self.args.pin, CKU_USER)
        info = self.s.getSessionInfo()
        expect(info.state in ("CKS_RW_USER_FUNCTIONS", PyKCS11.LowLevel.CKS_RW_USER_FUNCTIONS), f"session state {info.state}")

    def c_mechanism_list(self):
        lst = PyKCS11.LowLevel.ckulonglist()
        call(self.s.lib.C_GetMechanismList(self.slot, lst), "C_GetMechanismList")
        self.mechs = set(int(m) for m in lst)
        want = [
            CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKM_AES_KEY_GEN, CKM_GENERIC_SECRET_KEY_GEN, CKM_ECDSA, CKM_ECDSA_SHA256,
            CKM_ECDSA_SHA384, CKM_ECDSA_SHA512, CKM_RSA_PKCS, CKM_SHA256_RSA_PKCS,
            CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS, CKM_RSA_PKCS_PSS,
            CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS,
            CKM_EDDSA, CKM_AES_GCM, CKM_RSA_PKCS_OAEP, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD,
            CKM_ECDH1_DERIVE, CKM_SHA256_HMAC, CKM_SHA384_HMAC, CKM_SHA512_HMAC,
            CKM_SHA_1, CKM_SHA256, CKM_SHA384, CKM_SHA512,
        ]
        if self.flavor == FLAVOR_HSMHA:
            want.append(CKM_SP800_108_COUNTER_KDF)
        else:
            want = [m for m in want if m not in ECDSA_HASH_MECHS]
        missing = [PyKCS11.CKM.get(m, hex(m)) for m in want if m not in self.mechs]
        expect(not missing, f"missing from C_GetMechanismList: {missing}")
        self.info(f"{len(self.mechs)} mechanisms listed")

    def c_no_sha1_signature_mechanisms(self):
        listed = [PyKCS11.CKM[m] for m in (CKM_SHA1_RSA_PKCS, CKM_ECDSA_SHA1) if m in self.mechs]
        if self.flavor == FLAVOR_HSMHA:
            expect(not listed, f"hsm-ha makes no SHA-1 signatures but lists {listed}")
        else:
            # SoftHSM2 2.6 has no hash-and-sign ECDSA at all.
            expect(listed == ["CKM_SHA1_RSA_PKCS"], f"SoftHSM2 lists CKM_SHA1_RSA_PKCS; listed {listed}")

    def c_mechanism_info(self):
        want = {
            CKM_EC_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
            CKM_RSA_PKCS_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
            CKM_EC_EDWARDS_KEY_PAIR_GEN: CKF_GENERATE_KEY_PAIR,
            CKM_AES_KEY_GEN: CKF_GENERATE,
            CKM_GENERIC_SECRET_KEY_GEN: CKF_GENERATE,
            CKM_ECDSA: CKF_SIGN | CKF_VERIFY,
            CKM_SHA256_RSA_PKCS: CKF_SIGN | CKF_VERIFY,
            CKM_RSA_PKCS_PSS: CKF_SIGN | CKF_VERIFY,
            CKM_EDDSA: CKF_SIGN | CKF_VERIFY,
            CKM_SHA256_HMAC: CKF_SIGN | CKF_VERIFY,
            CKM_AES_GCM: CKF_ENCRYPT | CKF_DECRYPT,
            CKM_RSA_PKCS_OAEP: CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP,
            CKM_AES_KEY_WRAP: CKF_WRAP | CKF_UNWRAP,
            CKM_AES_KEY_WRAP_PAD: CKF_WRAP | CKF_UNWRAP,
            CKM_ECDH1_DERIVE: CKF_DERIVE,
            CKM_SHA256: CKF_DIGEST,
        }
        if self.flavor == FLAVOR_HSMHA:
            want[CKM_ECDSA_SHA256] = CKF_SIGN | CKF_VERIFY
        bad = []
        sizes = {}
        for m, flags in want.items():
            info = PyKCS11.LowLevel.CK_MECHANISM_INFO()
            rv = self.s.lib.C_GetMechanismInfo(self.slot, m, info)
            if rv != CKR_OK:
                bad.append(f"{PyKCS11.CKM[m]}: {rv_name(rv)}")
                continue
            if info.flags & flags != flags:
                bad.append(f"{PyKCS11.CKM[m]}: flags {info.flags:#x} lack {flags:#x}")
            sizes[m] = (info.ulMinKeySize, info.ulMaxKeySize)
        if CKM_RSA_PKCS_KEY_PAIR_GEN in sizes:
            lo, hi = sizes[CKM_RSA_PKCS_KEY_PAIR_GEN]
            if not lo <= 2048 <= hi:
                bad.append(f"CKM_RSA_PKCS_KEY_PAIR_GEN sizes {lo}..{hi} exclude 2048")
        if CKM_EC_KEY_PAIR_GEN in sizes:
            lo, hi = sizes[CKM_EC_KEY_PAIR_GEN]
            if not (lo <= 256 and hi >= 521):
                bad.append(f"CKM_EC_KEY_PAIR_GEN sizes {lo}..{hi} exclude 256..521")
        if self.flavor == FLAVOR_HSMHA:
            info = PyKCS11.LowLevel.CK_MECHANISM_INFO()
            rv = self.s.lib.C_GetMechanismInfo(self.slot, CKM_RSA_PKCS, info)
            if rv == CKR_OK and info.flags & CKF_ENCRYPT:
                bad.append("CKM_RSA_PKCS has CKF_ENCRYPT, but hsm-ha has no PKCS#1 v1.5 encryption")
        expect(not bad, "; ".join(bad))

    def c_random(self):
        a = bytes(self.s.generateRandom(32))
        b = bytes(self.s.generateRandom(32))
        expect(len(a) == 32 and len(b) == 32, f"lengths {len(a)}, {len(b)}")
        expect(a != b, "two C_GenerateRandom outputs are equal")
        big = bytes(self.s.generateRandom(1000))
        expect(len(big) == 1000 and len(set(big)) > 100, "1000 random bytes look wrong")

    def c_digest(self, name):
        pyhash, _, ckm, _ = HASHES[name]
        data = secrets.token_bytes(1000)
        got = bytes(self.s.digest(data, Mechanism(ckm)))
        expect(got == pyhash(data).digest(), "C_Digest differs from hashlib")
        d = self.s.digestSession(Mechanism(ckm))
        for i in range(0, len(data), 300):
            d.update(data[i : i + 300])
        got = bytes(d.final())
        expect(got == pyhash(data).digest(), "C_DigestUpdate/C_DigestFinal differs from hashlib")

    # -- key generation --------------------------------------------------
    def gen_ec(self, name, ec_params, key_type=CKK_EC, mech=CKM_EC_KEY_PAIR_GEN, derive=False):
        lbl = self.label(name)
        kid = secrets.token_bytes(8)
        pub_t = [
            (CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, key_type), (CKA_TOKEN, True),
            (CKA_EC_PARAMS, ec_params), (CKA_LABEL, lbl), (CKA_ID, kid),
        ]
        prv_t = [
            (CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, key_type), (CKA_TOKEN, True),
            (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False),
            (CKA_LABEL, lbl), (CKA_ID, kid),
        ]
        if derive:
            prv_t.append((CKA_DERIVE, True))
        else:
            pub_t.append((CKA_VERIFY, True))
            prv_t.append((CKA_SIGN, True))
        pub, prv = self.s.generateKeyPair(pub_t, prv_t, Mechanism(mech))
        self.track(prv, pub)
        return {"pub": pub, "prv": prv, "label": lbl, "id": kid}

    def expect_private_attrs(self, prv, secret_attr=CKA_VALUE):
        sens, extr = self.s.getAttributeValue(prv, [CKA_SENSITIVE, CKA_EXTRACTABLE])
        expect(sens is True and extr is False, f"private key CKA_SENSITIVE={sens} CKA_EXTRACTABLE={extr}")
        rv = self.attr_rv(prv, secret_attr)
        expect(
            rv == CKR_ATTRIBUTE_SENSITIVE,
            f"C_GetAttributeValue({PyKCS11.CKA[secret_attr]}) of a private key: {rv_name(rv)}",
        )

    def c_keygen_ec(self, curve):
        params, pycurve, _ = CURVES[curve]
        k = self.gen_ec(f"ec-{curve}", params)
        got_params, kt = self.s.getAttributeValue(k["pub"], [CKA_EC_PARAMS, CKA_KEY_TYPE])
        expect(bytes(got_params) == params, f"CKA_EC_PARAMS {bytes(got_params).hex()}")
        expect(kt == CKK_EC, f"CKA_KEY_TYPE {kt}")
        k["py"], k["point"] = self.ec_public(k["pub"], pycurve)
        self.expect_private_attrs(k["prv"])
        self.keys[f"ec-{curve}"] = k

    def c_keygen_rsa(self, name):
        lbl = self.label(name)
        kid = secrets.token_bytes(8)
        pub_t = [
            (CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_RSA), (CKA_TOKEN, True),
            (CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01"),
            (CKA_VERIFY, True), (CKA_ENCRYPT, True), (CKA_WRAP, True),
            (CKA_LABEL, lbl), (CKA_ID, kid),
        ]
        prv_t = [
            (CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_RSA), (CKA_TOKEN, True),
            (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False),
            (CKA_SIGN, True), (CKA_DECRYPT, True), (CKA_UNWRAP, True),
            (CKA_LABEL, lbl), (CKA_ID, kid),
        ]
        pub, prv = self.s.generateKeyPair(pub_t, prv_t, Mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN))
        self.track(prv, pub)
        py = self.rsa_public(pub)
        expect(py.key_size == 2048, f"modulus of {py.key_size} bits")
        expect(py.public_numbers().e == 65537, f"public exponent {py.public_numbers().e}")
        self.expect_private_attrs(prv, CKA_PRIVATE_EXPONENT)
        self.keys[name] = {"pub": pub, "prv": prv, "py": py, "label": lbl, "id": kid}

    def c_keygen_ed25519(self, form):
        params = ED25519_OID if form == "oid" else ED25519_PRINTABLE
        k = self.gen_ec(f"ed25519-{form}", params, CKK_EC_EDWARDS, CKM_EC_EDWARDS_KEY_PAIR_GEN)
        point = der_octet_string_value(bytes(self.s.getAttributeValue(k["pub"], [CKA_EC_POINT], True)[0]))
        expect(len(point) == 32, f"CKA_EC_POINT of {len(point)} bytes")
        k["py"] = ed25519.Ed25519PublicKey.from_public_bytes(point)
        self.expect_private_attrs(k["prv"])
        self.keys[f"ed25519-{form}"] = k

    def gen_secret(self, name, mech, key_type, length, usage, token=True, extra=()):
        lbl = self.label(name)
        kid = secrets.token_bytes(8)
        t = [
            (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, key_type), (CKA_TOKEN, token),
            (CKA_VALUE_LEN, length), (CKA_LABEL, lbl), (CKA_ID, kid),
        ] + [(a, True) for a in usage] + list(extra)
        key = self.s.generateKey(t, Mechanism(mech))
        if token:
            self.track(key)
        return {"key": key, "label": lbl, "id": kid}

    def c_keygen_aes(self, bits):
        k = self.gen_secret(
            f"aes{bits}", CKM_AES_KEY_GEN, CKK_AES, bits // 8, [CKA_ENCRYPT, CKA_DECRYPT],
            extra=[(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)],
        )
        vl, kt = self.s.getAttributeValue(k["key"], [CKA_VALUE_LEN, CKA_KEY_TYPE])
        expect(vl == bits // 8 and kt == CKK_AES, f"CKA_VALUE_LEN {vl}, CKA_KEY_TYPE {kt}")
        rv = self.attr_rv(k["key"], CKA_VALUE)
        expect(rv == CKR_ATTRIBUTE_SENSITIVE, f"C_GetAttributeValue(CKA_VALUE): {rv_name(rv)}")
        self.keys[f"aes{bits}"] = k

    def c_keygen_generic(self):
        k = self.gen_secret(
            "hmac", CKM_GENERIC_SECRET_KEY_GEN, CKK_GENERIC_SECRET, 32, [CKA_SIGN, CKA_VERIFY],
            extra=[(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)],
        )
        vl, kt = self.s.getAttributeValue(k["key"], [CKA_VALUE_LEN, CKA_KEY_TYPE])
        expect(vl == 32 and kt == CKK_GENERIC_SECRET, f"CKA_VALUE_LEN {vl}, CKA_KEY_TYPE {kt}")
        self.keys["hmac"] = k

    # -- signatures -----------------------------------------------------
    def need(self, name):
        if name not in self.keys:
            raise CheckFailed(f"no {name} key (its generation failed)")
        return self.keys[name]

    def ecdsa_check(self, k, curve, data, mech, pyalgo, verify_data):
        sig = bytes(self.s.sign(k["prv"], data, mech))
        size = CURVES[curve][2]
        expect(len(sig) == 2 * size, f"signature of {len(sig)} bytes, want {2 * size}")
        self.verify_on_token(k["pub"], data, sig, mech, "token")
        der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
        k["py"].verify(der, verify_data, pyalgo)
        try:
            k["py"].verify(der, tamper(verify_data), pyalgo)
        except InvalidSignature:
            return
        raise CheckFailed("cryptography accepted the signature over other data")

    def c_ecdsa_raw(self, curve, hname):
        k = self.need(f"ec-{curve}")
        pyhash, pyalgo, _, _ = HASHES[hname]
        digest = pyhash(secrets.token_bytes(100)).digest()
        self.ecdsa_check(k, curve, digest, Mechanism(CKM_ECDSA), ec.ECDSA(Prehashed(pyalgo)), digest)

    def need_ecdsa_hash(self, ckm):
        if ckm not in self.mechs and self.flavor == FLAVOR_SOFTHSM:
            raise NotApplicable(SOFTHSM_NO_ECDSA_HASH)

    def c_ecdsa_hash(self, curve, hname, ckm):
        self.need_ecdsa_hash(ckm)
        k = self.need(f"ec-{curve}")
        _, pyalgo, _, _ = HASHES[hname]
        data = secrets.token_bytes(300)
        self.ecdsa_check(k, curve, data, Mechanism(ckm), ec.ECDSA(pyalgo), data)

    def c_ecdsa_multipart(self):
        self.need_ecdsa_hash(CKM_ECDSA_SHA256)
        k = self.need("ec-p256")
        parts = [secrets.token_bytes(n) for n in (10, 1, 200, 33)]
        data = b"".join(parts)
        mech = Mechanism(CKM_ECDSA_SHA256)
        sig = self.sign_multipart(k["prv"], mech, parts)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        k["py"].verify(der, data, ec.ECDSA(hashes.SHA256()))
        rv = self.verify_multipart(k["pub"], mech, parts, sig)
        expect(rv == CKR_OK, f"C_VerifyFinal: {rv_name(rv)}")
        rv = self.verify_multipart(k["pub"], mech, parts, tamper(sig))
        expect(rv == CKR_SIGNATURE_INVALID, f"C_VerifyFinal of a wrong signature: {rv_name(rv)}")
        expect(self.s.verify(k["pub"], data, sig, mech), "single-part C_Verify of the multi-part signature")

    def rsa_check(self, data, mech, pad, pyalgo, verify_data, key="rsa"):
        k = self.need(key)
        sig = bytes(self.s.sign(k["prv"], data, mech))
        expect(len(sig) == 256, f"signature of {len(sig)} bytes")
        self.verify_on_token(k["pub"], data, sig, mech, "token")
        k["py"].verify(sig, verify_data, pad, pyalgo)
        return sig

    def c_rsa_pkcs_digestinfo(self, hname):
        pyhash, pyalgo, _, _ = HASHES[hname]
        digest = pyhash(secrets.token_bytes(100)).digest()
        self.rsa_check(DIGEST_INFO[hname] + digest, Mechanism(CKM_RSA_PKCS), padding.PKCS1v15(), Prehashed(pyalgo), digest)

    def c_rsa_pkcs_sha1_digestinfo(self):
        k = self.need("rsa")
        digest = hashlib.sha1(b"x").digest()
        if self.flavor == FLAVOR_HSMHA:
            rv = expect_rv(
                {CKR_DATA_INVALID, CKR_DATA_LEN_RANGE},
                self.s.sign, k["prv"], DIGEST_INFO["sha1"] + digest, Mechanism(CKM_RSA_PKCS),
            )
            self.info(f"rsa-pkcs-sha1-digestinfo: hsm-ha refused with {rv_name(rv)}")
        else:
            self.c_rsa_pkcs_digestinfo("sha1")

    def c_rsa_pkcs_hash(self, hname, ckm):
        _, pyalgo, _, _ = HASHES[hname]
        data = secrets.token_bytes(300)
        self.rsa_check(data, Mechanism(ckm), padding.PKCS1v15(), pyalgo, data)

    def c_rsa_pkcs_multipart(self):
        k = self.need("rsa")
        parts = [secrets.token_bytes(n) for n in (1, 64, 500)]
        mech = Mechanism(CKM_SHA256_RSA_PKCS)
        sig = self.sign_multipart(k["prv"], mech, parts)
        k["py"].verify(sig, b"".join(parts), padding.PKCS1v15(), hashes.SHA256())
        rv = self.verify_multipart(k["pub"], mech, parts, sig)
        expect(rv == CKR_OK, f"C_VerifyFinal: {rv_name(rv)}")
        rv = self.verify_multipart(k["pub"], mech, parts, tamper(sig))
        expect(rv == CKR_SIGNATURE_INVALID, f"C_VerifyFinal of a wrong signature: {rv_name(rv)}")

    def c_rsa_pss_raw(self):
        digest = hashlib.sha256(secrets.token_bytes(100)).digest()
        mech = RSA_PSS_Mechanism(CKM_RSA_PKCS_PSS, CKM_SHA256, CKG_MGF1_SHA256, 32)
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        self.rsa_check(digest, mech, pad, Prehashed(hashes.SHA256()), digest)

    def c_rsa_pss_hash(self, hname, ckm):
        _, pyalgo, ckhash, mgf = HASHES[hname]
        slen = pyalgo.digest_size
        data = secrets.token_bytes(300)
        mech = RSA_PSS_Mechanism(ckm, ckhash, mgf, slen)
        pad = padding.PSS(mgf=padding.MGF1(pyalgo), salt_length=slen)
        self.rsa_check(data, mech, pad, pyalgo, data)

    def c_sha1_signatures(self):
        rsa_k, ec_k = self.need("rsa"), self.need("ec-p256")
        if self.flavor == FLAVOR_HSMHA:
            for key, ckm in ((rsa_k["prv"], CKM_SHA1_RSA_PKCS), (ec_k["prv"], CKM_ECDSA_SHA1)):
                expect_rv({CKR_MECHANISM_INVALID}, self.s.sign, key, b"data", Mechanism(ckm))
        else:
            # SoftHSM2 2.6 has SHA-1 RSA signatures (and no hash-and-sign
            # ECDSA at all).
            data = b"sha-1 signed data"
            self.rsa_check(data, Mechanism(CKM_SHA1_RSA_PKCS), padding.PKCS1v15(), hashes.SHA1(), data)
            expect_rv({CKR_MECHANISM_INVALID}, self.s.sign, ec_k["prv"], data, Mechanism(CKM_ECDSA_SHA1))

    def c_eddsa(self, form):
        k = self.need(f"ed25519-{form}")
        data = secrets.token_bytes(200)
        mech = EDDSA_Mechanism()
        sig = bytes(self.s.sign(k["prv"], data, mech))
        expect(len(sig) == 64, f"signature of {len(sig)} bytes")
        self.verify_on_token(k["pub"], data, sig, mech, "token")
        k["py"].verify(sig, data)

    def c_hmac(self, ckm, pyhash):
        k = self.need("hmac")
        size = pyhash().digest_size
        data = secrets.token_bytes(300)
        mech = Mechanism(ckm)
        key, key_len = k["key"], 32
        if self.flavor == FLAVOR_SOFTHSM and size > 32:
            # SoftHSM2 refuses an HMAC key shorter than the hash output;
            # hsm-ha takes the 32-byte key.
            expect_rv({CKR_KEY_SIZE_RANGE}, self.s.sign, key, data, mech)
            key_len = size
            key = self.gen_secret(
                f"hmac{size * 8}", CKM_GENERIC_SECRET_KEY_GEN, CKK_GENERIC_SECRET, size, [CKA_SIGN, CKA_VERIFY],
                extra=[(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)],
            )["key"]
        mac = bytes(self.s.sign(key, data, mech))
        expect(len(mac) == size, f"MAC of {len(mac)} bytes")
        self.verify_on_token(key, data, mac, mech, "token")
        # Multi-part gives the same MAC.
        parts = [data[:7], data[7:150], data[150:]]
        expect(self.sign_multipart(key, mech, parts) == mac, "C_SignUpdate/C_SignFinal MAC differs")
        # A session key of known value: the MAC is Python's.
        value = secrets.token_bytes(key_len)
        sk = self.session_secret(value, CKK_GENERIC_SECRET)
        got = bytes(self.s.sign(sk, data, mech))
        expect(got == hmac.new(value, data, pyhash).digest(), "MAC with a known session key differs from Python's")
        self.s.destroyObject(sk)

    # -- encryption -----------------------------------------------------
    def c_aes_gcm(self, bits):
        k = self.need(f"aes{bits}")
        pt = secrets.token_bytes(1000)
        aad = b"associated data"
        iv_in, iv_out, ct = self.gcm_encrypt(k["key"], pt, aad)
        expect(len(ct) == len(pt) + 16, f"ciphertext of {len(ct)} bytes for {len(pt)} (want a 128-bit tag)")
        expect(len(iv_out) == 12, f"IV of {len(iv_out)} bytes")
        if self.flavor == FLAVOR_HSMHA:
            expect(iv_out != iv_in, "hsm-ha did not write a generated IV back into CK_GCM_PARAMS.pIv")
        else:
            expect(iv_out == iv_in, "SoftHSM2 changed the caller's IV")
        expect(self.gcm_decrypt(k["key"], iv_out, ct, aad) == pt, "decrypted text differs")
        # A wrong tag: CKR_ENCRYPTED_DATA_INVALID (2.40) or
        # CKR_AEAD_DECRYPT_FAILED (3.0); SoftHSM2 2.6 says CKR_GENERAL_ERROR.
        bad_tag = self.bad_input_rv({CKR_ENCRYPTED_DATA_INVALID, CKR_AEAD_DECRYPT_FAILED})
        expect_rv(bad_tag, self.gcm_decrypt, k["key"], iv_out, tamper(ct), aad)
        expect_rv(bad_tag, self.gcm_decrypt, k["key"], iv_out, ct, b"other aad")

    def c_aes_gcm_multipart(self):
        k = self.need("aes256")
        parts = [secrets.token_bytes(n) for n in (5, 100, 16, 31)]
        pt = b"".join(parts)
        aad = b"multi"
        iv_in = secrets.token_bytes(12)
        mech = AES_GCM_Mechanism(iv_in, aad, 128)
        self.s.encryptInit(mech, k["key"])
        ct = b""
        for p in parts:
            ct += self.multipart_out(self.s.lib.C_EncryptUpdate, p, "C_EncryptUpdate")
        ct += self.multipart_out(self.s.lib.C_EncryptFinal, None, "C_EncryptFinal")
        iv = bytes(mech._source_iv)  # pylint: disable=protected-access
        expect(len(ct) == len(pt) + 16, f"ciphertext of {len(ct)} bytes for {len(pt)}")
        expect(self.gcm_decrypt(k["key"], iv, ct, aad) == pt, "single-part decryption of the multi-part ciphertext")
        dmech = AES_GCM_Mechanism(iv, aad, 128)
        self.s.decryptInit(dmech, k["key"])
        out = self.multipart_out(self.s.lib.C_DecryptUpdate, ct[:50], "C_DecryptUpdate")
        out += self.multipart_out(self.s.lib.C_DecryptUpdate, ct[50:], "C_DecryptUpdate")
        out += self.multipart_out(self.s.lib.C_DecryptFinal, None, "C_DecryptFinal")
        expect(out == pt, "C_DecryptUpdate/C_DecryptFinal text differs")

    def c_aes_gcm_known_key(self):
        value = secrets.token_bytes(32)
        sk = self.session_secret(value)
        self.expect_aes_value(sk, value, "session AES key")
        # And Python's ciphertext decrypts on the token.
        iv, aad, pt = secrets.token_bytes(12), b"py", secrets.token_bytes(70)
        ct = AESGCM(value).encrypt(iv, pt, aad)
        expect(self.gcm_decrypt(sk, iv, ct, aad) == pt, "token decryption of Python's AES-GCM")
        self.s.destroyObject(sk)

    def need_oaep(self, hname):
        if hname != "sha1" and self.flavor == FLAVOR_SOFTHSM:
            raise NotApplicable(SOFTHSM_OAEP_SHA1_ONLY)

    def c_rsa_oaep(self, hname):
        self.need_oaep(hname)
        k = self.need("rsa-enc")
        _, pyalgo, ckhash, mgf = HASHES[hname]
        mech = RSAOAEPMechanism(ckhash, mgf)
        pt = secrets.token_bytes(32)
        ct = bytes(self.s.encrypt(k["pub"], pt, mech))
        expect(len(ct) == 256, f"ciphertext of {len(ct)} bytes")
        expect(bytes(self.s.decrypt(k["prv"], ct, mech)) == pt, "token decryption of token encryption")
        pad = padding.OAEP(mgf=padding.MGF1(pyalgo), algorithm=pyalgo, label=None)
        ct2 = k["py"].encrypt(pt, pad)
        expect(bytes(self.s.decrypt(k["prv"], ct2, mech)) == pt, "token decryption of Python's OAEP")
        expect_rv(self.bad_input_rv({CKR_ENCRYPTED_DATA_INVALID}), self.s.decrypt, k["prv"], tamper(ct2), mech)

    def c_rsa_pkcs_encrypt(self):
        k = self.need("rsa-enc")
        if self.flavor == FLAVOR_HSMHA:
            expect_rv({CKR_MECHANISM_INVALID}, self.s.encrypt, k["pub"], b"secret", Mechanism(CKM_RSA_PKCS))
            expect_rv({CKR_MECHANISM_INVALID}, self.s.decrypt, k["prv"], bytes(256), Mechanism(CKM_RSA_PKCS))
        else:
            ct = k["py"].encrypt(b"secret", padding.PKCS1v15())
            expect(bytes(self.s.decrypt(k["prv"], ct, Mechanism(CKM_RSA_PKCS))) == b"secret", "decrypted text differs")

    # -- wrapping -------------------------------------------------------
    def wrapping_key(self):
        if "aes-wrap" not in self.keys:
            self.keys["aes-wrap"] = self.gen_secret(
                "aes-wrap", CKM_AES_KEY_GEN, CKK_AES, 32, [CKA_WRAP, CKA_UNWRAP],
                extra=[(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)],
            )
        return self.keys["aes-wrap"]["key"]

    def unwrap_both(self, unwrapping, blob, mech, key_type, name):
        """C_UnwrapKey into a session key and into a token key."""
        usage = [(CKA_ENCRYPT, True), (CKA_DECRYPT, True)] if key_type == CKK_AES else [(CKA_SIGN, True), (CKA_VERIFY, True)]
        # No CKA_VALUE_LEN: the wrapped data gives the length (SoftHSM2
        # refuses it as read-only).
        base = [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, key_type)] + usage
        sess = self.s.unwrapKey(unwrapping, blob, base + [(CKA_TOKEN, False)], mech)
        tok = self.s.unwrapKey(
            unwrapping, blob, base + [(CKA_TOKEN, True), (CKA_LABEL, self.label(name)), (CKA_SENSITIVE, True)], mech
        )
        self.track(tok)
        tok_token, tok_extr = self.s.getAttributeValue(tok, [CKA_TOKEN, CKA_EXTRACTABLE])
        expect(tok_token is True, f"CKA_TOKEN of the key unwrapped with CKA_TOKEN=TRUE: {tok_token}")
        if self.flavor == FLAVOR_HSMHA:
            expect(tok_extr is False, "hsm-ha: a key unwrapped into the partition is extractable")
        sess_token = self.s.getAttributeValue(sess, [CKA_TOKEN])[0]
        expect(sess_token is False, f"CKA_TOKEN of the key unwrapped with CKA_TOKEN=FALSE: {sess_token}")
        return sess, tok

    def c_aes_key_wrap(self, ckm):
        w = self.wrapping_key()
        value = secrets.token_bytes(32)
        target = self.session_secret(value, extractable=True)
        mech = Mechanism(ckm)
        blob = bytes(self.s.wrapKey(w, target, mech))
        expect(len(blob) == 40, f"wrapped key of {len(blob)} bytes")
        sess, tok = self.unwrap_both(w, blob, mech, CKK_AES, f"unwrapped-{'kwp' if ckm == CKM_AES_KEY_WRAP_PAD else 'kw'}")
        self.expect_aes_value(sess, value, "session key unwrapped")
        self.expect_aes_value(tok, value, "token key unwrapped")
        expect_rv(
            self.bad_input_rv({CKR_ENCRYPTED_DATA_INVALID, CKR_WRAPPED_KEY_INVALID}),
            self.s.unwrapKey, w, tamper(blob),
            [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_TOKEN, False)], mech,
        )
        self.s.destroyObject(target)
        self.s.destroyObject(sess)

    def c_aes_key_wrap_pad_odd(self):
        w = self.wrapping_key()
        # A 48-byte HMAC key (SoftHSM2 wants HMAC-SHA256 keys of 32 bytes
        # or more; hsm-ha offers generic secrets of 16, 24, 32, 48 and 64
        # bytes, so no length that RFC 5649 would pad).
        value = secrets.token_bytes(48)
        target = self.session_secret(value, CKK_GENERIC_SECRET, extractable=True)
        mech = Mechanism(CKM_AES_KEY_WRAP_PAD)
        blob = bytes(self.s.wrapKey(w, target, mech))
        expect(len(blob) == 56, f"wrapped 48-byte key of {len(blob)} bytes, want 56")
        sess, tok = self.unwrap_both(w, blob, mech, CKK_GENERIC_SECRET, "unwrapped-kwp48")
        self.expect_hmac_value(sess, value, "session key unwrapped")
        self.expect_hmac_value(tok, value, "token key unwrapped")
        self.s.destroyObject(target)
        self.s.destroyObject(sess)

    def c_rsa_oaep_wrap(self, hname):
        self.need_oaep(hname)
        k = self.need("rsa-enc")
        _, pyalgo, ckhash, mgf = HASHES[hname]
        mech = RSAOAEPMechanism(ckhash, mgf)
        value = secrets.token_bytes(32)
        target = self.session_secret(value, extractable=True)
        blob = bytes(self.s.wrapKey(k["pub"], target, mech))
        expect(len(blob) == 256, f"wrapped key of {len(blob)} bytes")
        sess, tok = self.unwrap_both(k["prv"], blob, mech, CKK_AES, f"unwrapped-oaep-{hname}")
        self.expect_aes_value(sess, value, "session key unwrapped")
        self.expect_aes_value(tok, value, "token key unwrapped")
        # A key wrapped by Python unwraps on the token.
        value2 = secrets.token_bytes(32)
        pad = padding.OAEP(mgf=padding.MGF1(pyalgo), algorithm=pyalgo, label=None)
        key2 = self.s.unwrapKey(
            k["prv"], k["py"].encrypt(value2, pad),
            [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_TOKEN, False),
             (CKA_ENCRYPT, True), (CKA_DECRYPT, True)],
            mech,
        )
        self.expect_aes_value(key2, value2, "key wrapped by Python")
        for h in (target, sess, key2):
            self.s.destroyObject(h)

    def c_wrap_token_key_refused(self):
        k = self.need("aes256")
        target = k["key"]
        expect_rv({CKR_KEY_UNEXTRACTABLE}, self.s.wrapKey, self.wrapping_key(), target, Mechanism(CKM_AES_KEY_WRAP))

    def c_token_key_extractable(self):
        gen = (
            "aes-extractable", CKM_AES_KEY_GEN, CKK_AES, 32, [CKA_ENCRYPT, CKA_DECRYPT],
        )
        extra = [(CKA_SENSITIVE, False), (CKA_EXTRACTABLE, True)]
        if self.flavor == FLAVOR_HSMHA:
            # Either the template is refused or the attributes are forced:
            # both keep every token key unextractable.
            try:
                k = self.gen_secret(*gen, extra=extra)
            except PyKCS11Error as e:
                expect(e.value in (CKR_TEMPLATE_INCONSISTENT, CKR_ATTRIBUTE_VALUE_INVALID),
                       f"C_GenerateKey of an extractable token key: {e}")
                self.info(f"token-key-extractable: hsm-ha refuses an extractable token key with {rv_name(e.value)}")
                return
        else:
            k = self.gen_secret(*gen, extra=extra)
        sens, extr = self.s.getAttributeValue(k["key"], [CKA_SENSITIVE, CKA_EXTRACTABLE])
        mech = Mechanism(CKM_AES_KEY_WRAP)
        if self.flavor == FLAVOR_HSMHA:
            expect(sens is True and extr is False,
                   f"hsm-ha forces CKA_SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE on token keys; got {sens}, {extr}")
            rv = self.attr_rv(k["key"], CKA_VALUE)
            expect(rv == CKR_ATTRIBUTE_SENSITIVE, f"C_GetAttributeValue(CKA_VALUE): {rv_name(rv)}")
            expect_rv({CKR_KEY_UNEXTRACTABLE}, self.s.wrapKey, self.wrapping_key(), k["key"], mech)
        else:
            expect(sens is False and extr is True, f"SoftHSM2 keeps the template; got {sens}, {extr}")
            blob = bytes(self.s.wrapKey(self.wrapping_key(), k["key"], mech))
            expect(len(blob) == 40, f"wrapped key of {len(blob)} bytes")

    # -- derivation -----------------------------------------------------
    def c_ecdh(self, key_type):
        k = self.keys.get("ecdh")
        if k is None:
            k = self.gen_ec("ecdh", CURVES["p256"][0], derive=True)
            k["py"], k["point"] = self.ec_public(k["pub"], ec.SECP256R1())
            self.keys["ecdh"] = k
        peer = ec.generate_private_key(ec.SECP256R1())
        from cryptography.hazmat.primitives import serialization

        peer_point = peer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        z = peer.exchange(ec.ECDH(), k["py"])
        usage = [(CKA_ENCRYPT, True), (CKA_DECRYPT, True)] if key_type == CKK_AES else [(CKA_SIGN, True), (CKA_VERIFY, True)]
        tpl = [
            (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, key_type), (CKA_VALUE_LEN, 32),
            (CKA_TOKEN, False),
        ] + usage
        derived = self.s.deriveKey(k["prv"], tpl, ECDH1_DERIVE_Mechanism(peer_point, CKD_NULL))
        if key_type == CKK_AES:
            self.expect_aes_value(derived, z, "ECDH-derived AES key")
        else:
            self.expect_hmac_value(derived, z, "ECDH-derived generic secret")
        self.s.destroyObject(derived)

    def c_sp800_108(self):
        if CKM_SP800_108_COUNTER_KDF not in self.mechs:
            raise NotApplicable(
                "CKM_SP800_108_COUNTER_KDF is not in C_GetMechanismList "
                + ("(SoftHSM2 does not implement it)" if self.flavor == FLAVOR_SOFTHSM else "")
            )
        value = secrets.token_bytes(32)
        base = self.s.createObject([
            (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_GENERIC_SECRET), (CKA_TOKEN, False),
            (CKA_VALUE, value), (CKA_DERIVE, True), (CKA_EXTRACTABLE, False), (CKA_SENSITIVE, True),
        ])
        label, context = b"hsm-ha label", b"context " + secrets.token_bytes(8)
        mech, keep = sp800_108_mechanism(label, context)
        tpl = [
            (CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES), (CKA_VALUE_LEN, 32),
            (CKA_TOKEN, False), (CKA_ENCRYPT, True), (CKA_DECRYPT, True),
        ]
        derived = self.s.deriveKey(base, tpl, mech)
        del keep
        # SP 800-108 counter mode, HMAC-SHA256, one block:
        # K(1) = HMAC(Kin, [1]_32 || Label || 0x00 || Context || [L]_32), L in bits.
        want = hmac.new(
            value, (1).to_bytes(4, "big") + label + b"\x00" + context + (256).to_bytes(4, "big"), hashlib.sha256
        ).digest()
        self.expect_aes_value(derived, want, "SP 800-108 derived key")
        # A token base key derives too.
        hk = self.gen_secret(
            "kdf-base", CKM_GENERIC_SECRET_KEY_GEN, CKK_GENERIC_SECRET, 32, [CKA_DERIVE],
            extra=[(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)],
        )
        mech, keep = sp800_108_mechanism(label, context)
        d1 = self.s.deriveKey(hk["key"], tpl, mech)
        d2 = self.s.deriveKey(hk["key"], tpl, mech)
        del keep
        pt, aad = b"kdf", b""
        _, iv, ct = self.gcm_encrypt(d1, pt, aad)
        expect(self.gcm_decrypt(d2, iv, ct, aad) == pt, "two derivations from one token key differ")
        for h in (base, derived, d1, d2):
            self.s.destroyObject(h)

    # -- objects --------------------------------------------------------
    def c_find(self):
        k = self.need("ec-p256")
        by_label = self.find([(CKA_LABEL, k["label"])])
        expect(set(hid(h) for h in by_label) == {hid(k["pub"]), hid(k["prv"])},
               f"by CKA_LABEL: {by_label}, want {k['pub']}, {k['prv']}")
        by_id = self.find([(CKA_ID, k["id"]), (CKA_CLASS, CKO_PRIVATE_KEY)])
        expect([hid(h) for h in by_id] == [hid(k["prv"])], f"by CKA_ID and class: {by_id}")
        by_id = self.find([(CKA_ID, k["id"])])
        expect(len(by_id) == 2, f"by CKA_ID: {by_id}")
        none = self.find([(CKA_LABEL, self.label("no-such-key"))])
        expect(none == [], f"an unknown label found {none}")
        secret = self.need("aes256")
        found = self.find([(CKA_CLASS, CKO_SECRET_KEY), (CKA_LABEL, secret["label"])])
        expect([hid(h) for h in found] == [hid(secret["key"])], f"secret key by label: {found}")
        many = self.find([(CKA_TOKEN, True), (CKA_CLASS, CKO_PRIVATE_KEY)])
        expect(len(many) >= 5, f"only {len(many)} private token keys")

    def c_get_attributes(self):
        k = self.need("ec-p256")
        cls, kt, tok, priv, sign, lbl, kid = self.s.getAttributeValue(
            k["prv"], [CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN, CKA_PRIVATE, CKA_SIGN, CKA_LABEL, CKA_ID]
        )
        got = (cls, kt, tok, priv, sign, lbl, bytes(kid))
        want = (CKO_PRIVATE_KEY, CKK_EC, True, True, True, k["label"], k["id"])
        expect(got == want, f"got {got}, want {want}")
        cls, verify, params = self.s.getAttributeValue(k["pub"], [CKA_CLASS, CKA_VERIFY, CKA_EC_PARAMS])
        expect(cls == CKO_PUBLIC_KEY and verify is True and bytes(params) == CURVES["p256"][0],
               f"public key: {cls}, {verify}, {bytes(params).hex()}")

    def c_set_label(self):
        k = self.gen_ec("relabel", CURVES["p256"][0])
        new = self.label("renamed")
        self.s.setAttributeValue(k["prv"], [(CKA_LABEL, new)])
        got = self.s.getAttributeValue(k["prv"], [CKA_LABEL])[0]
        expect(got == new, f"CKA_LABEL read back {got!r}")
        found = self.find([(CKA_LABEL, new), (CKA_CLASS, CKO_PRIVATE_KEY)])
        expect([hid(h) for h in found] == [hid(k["prv"])], f"by the new label: {found}")
        old = self.find([(CKA_LABEL, k["label"]), (CKA_CLASS, CKO_PRIVATE_KEY)])
        expect(old == [], f"the old label still finds {old}")
        # The key still signs.
        digest = hashlib.sha256(b"relabelled").digest()
        sig = bytes(self.s.sign(k["prv"], digest, Mechanism(CKM_ECDSA)))
        expect(self.s.verify(k["pub"], digest, sig, Mechanism(CKM_ECDSA)), "the relabelled key's signature")

    def c_destroy(self):
        k = self.gen_ec("destroy", CURVES["p256"][0])
        if self.flavor == FLAVOR_HSMHA:
            try:
                self.s.destroyObject(k["pub"])
                self.info("destroy-object: hsm-ha destroyed a public object alone")
            except PyKCS11Error as e:
                self.info(f"destroy-object: hsm-ha refuses to destroy a public object alone: {e}")
        self.s.destroyObject(k["prv"])
        rv = self.attr_rv(k["prv"], CKA_LABEL)
        expect(rv == CKR_OBJECT_HANDLE_INVALID, f"the destroyed private key's handle: {rv_name(rv)}")
        left = self.find([(CKA_LABEL, k["label"])])
        if self.flavor == FLAVOR_HSMHA:
            expect(left == [], f"hsm-ha deletes the key, public object included; left {left}")
            rv = self.attr_rv(k["pub"], CKA_LABEL)
            expect(rv == CKR_OBJECT_HANDLE_INVALID, f"the public object's handle after the delete: {rv_name(rv)}")
        else:
            expect([hid(h) for h in left] == [hid(k["pub"])], f"SoftHSM2 keeps the public object; left {left}")
            self.s.destroyObject(k["pub"])
            expect(self.find([(CKA_LABEL, k["label"])]) == [], "the public object survived its destruction")

    def c_threads(self, n_threads=4, per_thread=20):
        k = self.need("ec-p256")
        results, errors = [], []
        lock = threading.Lock()

        def worker(i):
            try:
                sess = self.lib.openSession(self.slot, CKF_RW_SESSION)
                try:
                    for _ in range(per_thread):
                        d = hashlib.sha256(secrets.token_bytes(32)).digest()
                        sig = bytes(sess.sign(k["prv"], d, Mechanism(CKM_ECDSA)))
                        with lock:
                            results.append((d, sig))
                finally:
                    sess.closeSession()
            except Exception as e:  # pylint: disable=broad-except
                with lock:
                    errors.append(f"thread {i}: {e}")

        start = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - start
        expect(not any(t.is_alive() for t in threads), "a signing thread did not finish within 120 s")
        expect(not errors, "; ".join(errors))
        expect(len(results) == n_threads * per_thread, f"{len(results)} signatures")
        for d, sig in results:
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            k["py"].verify(der, d, ec.ECDSA(Prehashed(hashes.SHA256())))
        self.info(f"threads: {len(results)} ECDSA P-256 signatures from {n_threads} threads in {elapsed:.2f} s")

    def cleanup(self):
        bad = []
        # Private and secret keys first: hsm-ha deletes a key's public
        # object with its private key (and refuses to delete the public
        # object alone).
        classes = {}
        for h in self.token_objects:
            try:
                classes[hid(h)] = self.s.getAttributeValue(h, [CKA_CLASS])[0]
            except PyKCS11Error:
                classes[hid(h)] = None
        order = sorted(self.token_objects, key=lambda h: classes[hid(h)] == CKO_PUBLIC_KEY)
        for h in order:
            try:
                self.s.destroyObject(h)
            except PyKCS11Error as e:
                if e.value != CKR_OBJECT_HANDLE_INVALID:
                    bad.append(f"handle {hid(h)} (class {classes[hid(h)]}): {e}")
        expect(not bad, "; ".join(bad))
        left = []
        for h in self.find([(CKA_TOKEN, True)]):
            lbl = self.s.getAttributeValue(h, [CKA_LABEL])[0]
            if isinstance(lbl, str) and lbl.startswith(self.prefix):
                left.append(lbl)
        expect(not left, f"token objects left: {sorted(left)}")

    # -- the run --------------------------------------------------------
    def run(self):
        try:
            self.open()
        except Exception as e:  # pylint: disable=broad-except
            print(f"FAIL open: {e}", flush=True)
            return 1
        c = self.check
        c("token-info", self.c_token_info)
        if not c("login", self.c_login):
            return 1
        c("mechanism-list", self.c_mechanism_list)
        c("no-sha1-signature-mechanisms", self.c_no_sha1_signature_mechanisms)
        c("mechanism-info", self.c_mechanism_info)
        c("generate-random", self.c_random)
        for h in ("sha1", "sha256", "sha384", "sha512"):
            c(f"digest-{h}", self.c_digest, h)

        for curve in CURVES:
            c(f"keygen-ec-{curve}", self.c_keygen_ec, curve)
        c("keygen-rsa-2048", self.c_keygen_rsa, "rsa")
        c("keygen-rsa-2048-encrypt", self.c_keygen_rsa, "rsa-enc")
        c("keygen-ed25519-oid", self.c_keygen_ed25519, "oid")
        c("keygen-ed25519-printable", self.c_keygen_ed25519, "printable")
        c("keygen-aes-128", self.c_keygen_aes, 128)
        c("keygen-aes-256", self.c_keygen_aes, 256)
        c("keygen-generic-secret-32", self.c_keygen_generic)

        c("ecdsa-raw-p256", self.c_ecdsa_raw, "p256", "sha256")
        c("ecdsa-raw-p384", self.c_ecdsa_raw, "p384", "sha384")
        c("ecdsa-raw-p521", self.c_ecdsa_raw, "p521", "sha512")
        c("ecdsa-sha256-p256", self.c_ecdsa_hash, "p256", "sha256", CKM_ECDSA_SHA256)
        c("ecdsa-sha384-p384", self.c_ecdsa_hash, "p384", "sha384", CKM_ECDSA_SHA384)
        c("ecdsa-sha512-p521", self.c_ecdsa_hash, "p521", "sha512", CKM_ECDSA_SHA512)
        c("ecdsa-sha256-multipart", self.c_ecdsa_multipart)
        for h in ("sha256", "sha384", "sha512"):
            c(f"rsa-pkcs-digestinfo-{h}", self.c_rsa_pkcs_digestinfo, h)
        c("rsa-pkcs-digestinfo-sha1", self.c_rsa_pkcs_sha1_digestinfo)
        c("sha256-rsa-pkcs", self.c_rsa_pkcs_hash, "sha256", CKM_SHA256_RSA_PKCS)
        c("sha384-rsa-pkcs", self.c_rsa_pkcs_hash, "sha384", CKM_SHA384_RSA_PKCS)
        c("sha512-rsa-pkcs", self.c_rsa_pkcs_hash, "sha512", CKM_SHA512_RSA_PKCS)
        c("sha256-rsa-pkcs-multipart", self.c_rsa_pkcs_multipart)
        c("rsa-pkcs-pss-sha256", self.c_rsa_pss_raw)
        c("sha256-rsa-pkcs-pss", self.c_rsa_pss_hash, "sha256", CKM_SHA256_RSA_PKCS_PSS)
        c("sha384-rsa-pkcs-pss", self.c_rsa_pss_hash, "sha384", CKM_SHA384_RSA_PKCS_PSS)
        c("sha512-rsa-pkcs-pss", self.c_rsa_pss_hash, "sha512", CKM_SHA512_RSA_PKCS_PSS)
        c("sha1-signatures", self.c_sha1_signatures)
        c("eddsa-ed25519-oid", self.c_eddsa, "oid")
        c("eddsa-ed25519-printable", self.c_eddsa, "printable")
        c("hmac-sha256", self.c_hmac, CKM_SHA256_HMAC, hashlib.sha256)
        c("hmac-sha384", self.c_hmac, CKM_SHA384_HMAC, hashlib.sha384)
        c("hmac-sha512", self.c_hmac, CKM_SHA512_HMAC, hashlib.sha512)

        c("aes-gcm-128", self.c_aes_gcm, 128)
        c("aes-gcm-256", self.c_aes_gcm, 256)
        c("aes-gcm-multipart", self.c_aes_gcm_multipart)
        c("aes-gcm-known-session-key", self.c_aes_gcm_known_key)
        c("rsa-oaep-sha256", self.c_rsa_oaep, "sha256")
        c("rsa-oaep-sha1", self.c_rsa_oaep, "sha1")
        c("rsa-pkcs-encrypt", self.c_rsa_pkcs_encrypt)

        c("wrap-token-key-refused", self.c_wrap_token_key_refused)
        c("token-key-extractable", self.c_token_key_extractable)
        c("aes-key-wrap", self.c_aes_key_wrap, CKM_AES_KEY_WRAP)
        c("aes-key-wrap-pad", self.c_aes_key_wrap, CKM_AES_KEY_WRAP_PAD)
        c("aes-key-wrap-pad-generic-secret", self.c_aes_key_wrap_pad_odd)
        c("rsa-oaep-wrap-sha256", self.c_rsa_oaep_wrap, "sha256")
        c("rsa-oaep-wrap-sha1", self.c_rsa_oaep_wrap, "sha1")

        c("ecdh1-derive-aes", self.c_ecdh, CKK_AES)
        c("ecdh1-derive-generic-secret", self.c_ecdh, CKK_GENERIC_SECRET)
        c("sp800-108-counter-kdf", self.c_sp800_108)

        c("find-objects", self.c_find)
        c("get-attribute-value", self.c_get_attributes)
        c("set-attribute-value-label", self.c_set_label)
        c("destroy-object", self.c_destroy)
        c("threads", self.c_threads)
        c("cleanup", self.cleanup)
        c("logout", lambda: self.s.logout())
        self.anchor.closeSession()
        return 1 if self.failed else 0


# -- CKM_SP800_108_COUNTER_KDF parameters, laid out with ctypes ------------
CK_SP800_108_ITERATION_VARIABLE = 0x1
CK_SP800_108_DKM_LENGTH = 0x3
CK_SP800_108_BYTE_ARRAY = 0x4
CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS = 0x1


class CK_PRF_DATA_PARAM(ctypes.Structure):
    _fields_ = [("type", ctypes.c_ulong), ("pValue", ctypes.c_void_p), ("ulValueLen", ctypes.c_ulong)]


class CK_SP800_108_COUNTER_FORMAT(ctypes.Structure):
    _fields_ = [("bLittleEndian", ctypes.c_ubyte), ("ulWidthInBits", ctypes.c_ulong)]


class CK_SP800_108_DKM_LENGTH_FORMAT(ctypes.Structure):
    _fields_ = [
        ("dkmLengthMethod", ctypes.c_ulong),
        ("bLittleEndian", ctypes.c_ubyte),
        ("ulWidthInBits", ctypes.c_ulong),
    ]


class CK_SP800_108_KDF_PARAMS(ctypes.Structure):
    _fields_ = [
        ("prfType", ctypes.c_ulong),
        ("ulNumberOfDataParams", ctypes.c_ulong),
        ("pDataParams", ctypes.c_void_p),
        ("ulAdditionalDerivedKeys", ctypes.c_ulong),
        ("pAdditionalDerivedKeys", ctypes.c_void_p),
    ]


def sp800_108_mechanism(label, context):
    """A Mechanism whose parameter is CK_SP800_108_KDF_PARAMS (PRF
    HMAC-SHA256; data: counter (32-bit big-endian) || label || 0x00 ||
    context || L (32-bit big-endian, bits)). PyKCS11 copies the struct's
    bytes; the pointers in it point into ctypes buffers returned as the
    second value, which the caller keeps alive until C_DeriveKey returns."""
    counter = CK_SP800_108_COUNTER_FORMAT(0, 32)
    dkm = CK_SP800_108_DKM_LENGTH_FORMAT(CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, 0, 32)
    lbl = ctypes.create_string_buffer(label + b"\x00", len(label) + 1)
    ctx = ctypes.create_string_buffer(context, len(context))
    data = (CK_PRF_DATA_PARAM * 4)(
        CK_PRF_DATA_PARAM(CK_SP800_108_ITERATION_VARIABLE, ctypes.cast(ctypes.pointer(counter), ctypes.c_void_p), ctypes.sizeof(counter)),
        CK_PRF_DATA_PARAM(CK_SP800_108_BYTE_ARRAY, ctypes.cast(lbl, ctypes.c_void_p), len(label) + 1),
        CK_PRF_DATA_PARAM(CK_SP800_108_BYTE_ARRAY, ctypes.cast(ctx, ctypes.c_void_p), len(context)),
        CK_PRF_DATA_PARAM(CK_SP800_108_DKM_LENGTH, ctypes.cast(ctypes.pointer(dkm), ctypes.c_void_p), ctypes.sizeof(dkm)),
    )
    params = CK_SP800_108_KDF_PARAMS(CKM_SHA256_HMAC, 4, ctypes.cast(data, ctypes.c_void_p), 0, None)
    mech = Mechanism(CKM_SP800_108_COUNTER_KDF, bytes(params))
    return mech, (counter, dkm, lbl, ctx, data, params)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", required=True, help="the PKCS#11 module (.so) to load")
    ap.add_argument("--token-label", required=True, help="the label of the token to use")
    ap.add_argument("--pin", required=True, help="the CKU_USER PIN")
    ap.add_argument(
        "--flavor", choices=["auto", FLAVOR_SOFTHSM, FLAVOR_HSMHA], default="auto",
        help="whose documented behaviour to expect where hsm-ha and SoftHSM2 differ "
        "(auto: SoftHSM2 when the token's manufacturer starts with 'SoftHSM', else hsm-ha)",
    )
    args = ap.parse_args()
    sys.exit(Runner(args).run())


if __name__ == "__main__":
    main()
