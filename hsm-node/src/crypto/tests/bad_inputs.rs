//! Wrong inputs give their precise error codes, and messages never carry key bytes.

use super::*;
use hsm_api::{DeriveAlgorithm, KeyCreateParameters, MacAlgorithm};
use EncryptionAlgorithm::*;
use SignatureAlgorithm::*;

#[test]
fn create_parameters_that_do_not_fit() {
    let bad = |p: KeyCreateParameters| {
        let e = KeySpec::from_create(&p).expect_err("should be refused");
        assert_eq!(e.code(), ErrorCode::BadParameter, "{e}");
        e.to_string()
    };
    assert!(bad(KeyCreateParameters::rsa(1024)).contains("1024"));
    assert!(bad(KeyCreateParameters::rsa(2047)).contains("2048, 3072, 4096"));
    let mut p = KeyCreateParameters::rsa(2048);
    p.public_exponent = Some(3);
    assert!(bad(p).contains("public_exponent 3"));
    let mut p = KeyCreateParameters::rsa(2048);
    p.crv = Some(Curve::P256);
    bad(p);
    let mut p = KeyCreateParameters::ec(Curve::Ed25519);
    assert!(bad(p.clone()).contains("not an EC curve"));
    p.crv = Some(Curve::P256);
    p.key_size = Some(384);
    assert!(bad(p.clone()).contains("does not match crv P-256"));
    p.key_size = None;
    p.public_exponent = Some(65537);
    bad(p);
    assert!(bad(KeyCreateParameters::okp(Curve::P256)).contains("not an OKP curve"));
    let mut p = KeyCreateParameters::okp(Curve::Ed25519);
    p.key_size = Some(512);
    bad(p);
    assert!(bad(KeyCreateParameters::oct(100)).contains("key_size 100"));
    bad(KeyCreateParameters::oct(1024));
    let mut p = KeyCreateParameters::oct(256);
    p.crv = Some(Curve::X25519);
    bad(p);
    // Direct generation with a spec that is not valid.
    assert_eq!(
        code(KeyMaterial::generate(&KeySpec::Rsa { bits: 1024 })),
        ErrorCode::BadParameter
    );
    assert_eq!(
        code(KeyMaterial::generate(&KeySpec::Ec(Curve::X25519))),
        ErrorCode::BadParameter
    );
    assert_eq!(
        code(KeyMaterial::generate(&KeySpec::Oct { bits: 100 })),
        ErrorCode::BadParameter
    );
}

#[test]
fn wrong_digest_length() {
    let rsa = load(rsa2048());
    let ec = load(&gen(KeySpec::Ec(Curve::P256)));
    let p521 = load(&gen(KeySpec::Ec(Curve::P521)));
    for (k, alg, len) in [
        (&rsa, Rs256, 31),
        (&rsa, Rs256, 48),
        (&rsa, Ps384, 32),
        (&rsa, Rs512, 0),
        (&ec, Es256, 33),
        (&ec, Es256, 20),
        (&p521, Es512, 66),
    ] {
        let d = vec![1u8; len];
        let e = k.sign(alg, &d).expect_err("sign");
        assert_eq!(e.code(), ErrorCode::InvalidDigestLength, "{e}");
        assert_eq!(
            e,
            CryptoError::InvalidDigestLength {
                alg,
                expected: alg.digest_len().unwrap(),
                actual: len
            }
        );
        assert_eq!(
            code(k.verify(alg, &d, &[0u8; 64])),
            ErrorCode::InvalidDigestLength
        );
    }
}

#[test]
fn algorithm_that_does_not_fit_the_key() {
    let rsa = load(rsa2048());
    let p256 = load(&gen(KeySpec::Ec(Curve::P256)));
    let p384 = load(&gen(KeySpec::Ec(Curve::P384)));
    let ed = load(&gen(KeySpec::Ed25519));
    let x = load(&gen(KeySpec::X25519));
    let o128 = load(&gen(KeySpec::Oct { bits: 128 }));
    let o256 = load(&gen(KeySpec::Oct { bits: 256 }));
    let o512 = load(&gen(KeySpec::Oct { bits: 512 }));
    let d32 = [0u8; 32];
    let d48 = [0u8; 48];

    let mismatch = ErrorCode::AlgorithmKeyMismatch;
    // ES256 on P-384, ES384 on P-256, RS256 on EC, ES256 on RSA, EdDSA on EC ...
    let e = p384.sign(Es256, &d32).unwrap_err();
    assert_eq!(e.code(), mismatch);
    assert_eq!(
        e.to_string(),
        "ES256 needs an EC P-256 key; this key is EC-P384"
    );
    assert_eq!(code(p256.sign(Es384, &d48)), mismatch);
    assert_eq!(code(p256.sign(Rs256, &d32)), mismatch);
    assert_eq!(code(p256.verify(Rs256, &d32, &[0; 64])), mismatch);
    assert_eq!(code(rsa.sign(Es256, &d32)), mismatch);
    assert_eq!(code(rsa.sign(EdDsa, b"m")), mismatch);
    assert_eq!(code(p256.sign(EdDsa, b"m")), mismatch);
    assert_eq!(code(ed.sign(Es256, &d32)), mismatch);
    assert_eq!(code(ed.verify(Rs256, &d32, &[0; 64])), mismatch);
    assert_eq!(code(x.sign(EdDsa, b"m")), mismatch);
    assert_eq!(code(o256.sign(Rs256, &d32)), mismatch);
    // The mismatch is reported before the digest length.
    assert_eq!(code(p384.sign(Es256, &[0u8; 3])), mismatch);

    // A256GCM on a 128-bit oct key, GCM on RSA, RSA-OAEP on oct, AES on EC.
    let e = o128.encrypt(A256Gcm, b"x", None).unwrap_err();
    assert_eq!(e.code(), mismatch);
    assert_eq!(
        e.to_string(),
        "A256GCM needs an oct key of 256 bits; this key is oct-128"
    );
    assert_eq!(code(o256.encrypt(A128Gcm, b"x", None)), mismatch);
    assert_eq!(code(o512.encrypt(A256Gcm, b"x", None)), mismatch);
    assert_eq!(
        code(o128.decrypt(A256Gcm, b"x", Some(&[0; 12]), None, Some(&[0; 16]))),
        mismatch
    );
    assert_eq!(code(rsa.encrypt(A256Gcm, b"x", None)), mismatch);
    assert_eq!(code(o256.encrypt(RsaOaep, b"x", None)), mismatch);
    assert_eq!(code(p256.encrypt(RsaOaep256, b"x", None)), mismatch);
    assert_eq!(code(o128.wrap(A256Kw, &[0; 16])), mismatch);
    assert_eq!(code(o256.wrap(A128Kwp, &[0; 16])), mismatch);
    assert_eq!(code(o256.unwrap(A192Kw, &[0; 24])), mismatch);
    assert_eq!(code(rsa.wrap(A256Kw, &[0; 16])), mismatch);
    assert_eq!(code(o256.wrap(RsaOaep, &[0; 16])), mismatch);
    // HMAC needs oct; ECDH needs EC/X25519; KBKDF needs oct.
    assert_eq!(code(rsa.mac(MacAlgorithm::Hs256, b"x")), mismatch);
    assert_eq!(
        code(p256.verify_mac(MacAlgorithm::Hs256, b"x", &[0; 32])),
        mismatch
    );
    assert_eq!(code(rsa.ecdh(&p256_public())), mismatch);
    assert_eq!(code(ed.ecdh(&p256_public())), mismatch);
    assert_eq!(code(o256.ecdh(&p256_public())), mismatch);
    assert_eq!(
        code(p256.kbkdf(DeriveAlgorithm::KbkdfHmacSha256, b"i", 32)),
        mismatch
    );
    // ECDH across curves.
    assert_eq!(code(p384.ecdh(&p256_public())), mismatch);
    assert_eq!(code(x.ecdh(&p256_public())), mismatch);
    assert_eq!(
        code(p256.ecdh(&gen(KeySpec::X25519).public_jwk())),
        mismatch
    );
    assert_eq!(code(x.ecdh(&gen(KeySpec::Ed25519).public_jwk())), mismatch);
}

fn p256_public() -> JsonWebKey {
    gen(KeySpec::Ec(Curve::P256)).public_jwk()
}

#[test]
fn wrong_parameters_for_the_operation() {
    let rsa = load(rsa2048());
    let o128 = load(&gen(KeySpec::Oct { bits: 128 }));
    let o192 = load(&gen(KeySpec::Oct { bits: 192 }));
    let o256 = load(&gen(KeySpec::Oct { bits: 256 }));
    let bad = ErrorCode::BadParameter;

    // Key wrap input not a multiple of 8 (or too short), for every KEK size.
    for (k, alg) in [(&o128, A128Kw), (&o192, A192Kw), (&o256, A256Kw)] {
        for len in [0usize, 8, 15, 17, 23, 31] {
            let e = k.wrap(alg, &vec![0u8; len]).unwrap_err();
            assert_eq!(e.code(), bad, "{alg} {len}: {e}");
        }
        for len in [0usize, 8, 16, 25, 33] {
            assert_eq!(
                code(k.unwrap(alg, &vec![0u8; len])),
                bad,
                "{alg} unwrap {len}"
            );
        }
    }
    for (k, alg) in [(&o128, A128Kwp), (&o192, A192Kwp), (&o256, A256Kwp)] {
        assert_eq!(code(k.wrap(alg, &[])), bad);
        for len in [0usize, 8, 17] {
            assert_eq!(
                code(k.unwrap(alg, &vec![0u8; len])),
                bad,
                "{alg} unwrap {len}"
            );
        }
    }
    // Algorithms of the other operation.
    assert_eq!(code(o256.encrypt(A256Kw, b"x", None)), bad);
    assert_eq!(code(o256.decrypt(A256Kwp, b"x", None, None, None)), bad);
    assert_eq!(code(o256.wrap(A256Gcm, &[0; 16])), bad);
    assert_eq!(code(o256.unwrap(A256Gcm, &[0; 24])), bad);

    // GCM decrypt: iv and tag required, with their sizes.
    let e = o256.encrypt(A256Gcm, b"payload", Some(b"aad")).unwrap();
    let (iv, tag) = (e.iv.clone().unwrap(), e.tag.clone().unwrap());
    let ct = &e.ciphertext;
    assert_eq!(
        code(o256.decrypt(A256Gcm, ct, None, Some(b"aad"), Some(&tag))),
        bad
    );
    assert_eq!(
        code(o256.decrypt(A256Gcm, ct, Some(&iv), Some(b"aad"), None)),
        bad
    );
    assert_eq!(
        code(o256.decrypt(A256Gcm, ct, Some(&iv[..8]), Some(b"aad"), Some(&tag))),
        bad
    );
    assert_eq!(
        code(o256.decrypt(A256Gcm, ct, Some(&[0; 16]), Some(b"aad"), Some(&tag))),
        bad
    );
    assert_eq!(
        code(o256.decrypt(A256Gcm, ct, Some(&iv), Some(b"aad"), Some(&tag[..12]))),
        bad
    );

    // RSA takes no aad, iv or tag; ciphertext must be the modulus length.
    assert_eq!(code(rsa.encrypt(RsaOaep, b"x", Some(b"aad"))), bad);
    let c = rsa.encrypt(RsaOaep, b"x", None).unwrap().ciphertext;
    assert_eq!(
        code(rsa.decrypt(RsaOaep, &c, None, Some(b"aad"), None)),
        bad
    );
    assert_eq!(
        code(rsa.decrypt(RsaOaep, &c, Some(&[0; 12]), None, None)),
        bad
    );
    assert_eq!(
        code(rsa.decrypt(RsaOaep, &c, None, None, Some(&[0; 16]))),
        bad
    );
    assert_eq!(code(rsa.decrypt(RsaOaep, &c[..255], None, None, None)), bad);
    assert_eq!(code(rsa.unwrap(RsaOaep256, &[0u8; 300])), bad);

    // KBKDF: output length and algorithm.
    for len in [0, KBKDF_MAX_OUTPUT + 1] {
        assert_eq!(
            code(o256.kbkdf(DeriveAlgorithm::KbkdfHmacSha256, b"i", len)),
            bad
        );
    }
    assert_eq!(code(o256.kbkdf(DeriveAlgorithm::Ecdh, b"i", 32)), bad);
    assert_eq!(
        code(kbkdf(DeriveAlgorithm::KbkdfHmacSha512, b"", b"i", 32)),
        bad
    );

    // ECDH: peer must be a public EC/OKP JWK.
    let p256 = gen(KeySpec::Ec(Curve::P256));
    let me = load(&p256);
    let mut peer = gen(KeySpec::Ec(Curve::P256)).public_jwk();
    peer.d = Some(B64(vec![1; 32]));
    assert_eq!(code(me.ecdh(&peer)), bad);
    assert_eq!(code(me.ecdh(&rsa2048().public_jwk())), bad);
    assert_eq!(code(me.ecdh(&JsonWebKey::default())), bad);
    // A public-only key cannot take part in ECDH or sign.
    let public = load(&public_twin(&p256));
    assert_eq!(
        code(public.ecdh(&p256_public())),
        ErrorCode::OperationNotPermitted
    );
    assert_eq!(
        code(public.sign(Es256, &[0; 32])),
        ErrorCode::OperationNotPermitted
    );
    let ed_public = load(&public_twin(&gen(KeySpec::Ed25519)));
    assert_eq!(
        code(ed_public.sign(EdDsa, b"m")),
        ErrorCode::OperationNotPermitted
    );
    let rsa_public = load(&public_twin(rsa2048()));
    assert_eq!(
        code(rsa_public.sign(Ps256, &[0; 32])),
        ErrorCode::OperationNotPermitted
    );
}

#[test]
fn ecdh_with_points_that_are_not_valid() {
    let me = load(&gen(KeySpec::Ec(Curve::P256)));
    let mut peer = p256_public();
    let y = peer.y.as_mut().unwrap();
    y.0[31] ^= 1;
    assert_eq!(code(me.ecdh(&peer)), ErrorCode::InvalidKeyMaterial);
    // X25519 low-order point (all zeros): the shared secret would be zero.
    let x = load(&gen(KeySpec::X25519));
    let peer = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::X25519),
        x: Some(B64(vec![0; 32])),
        ..JsonWebKey::default()
    };
    assert_eq!(code(x.ecdh(&peer)), ErrorCode::InvalidKeyMaterial);
}

fn rsa_private_jwk() -> JsonWebKey {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PrivateKeyParts;
    let m = rsa2048();
    let material::Inner::Rsa(parts) = &m.inner else {
        panic!("not RSA")
    };
    let sk = rsa::RsaPrivateKey::from_pkcs8_der(parts.pkcs8.as_ref().unwrap()).unwrap();
    let be = |b: &rsa::BigUint| B64(b.to_bytes_be());
    let mut jwk = m.public_jwk();
    jwk.d = Some(be(sk.d()));
    jwk.p = Some(be(&sk.primes()[0]));
    jwk.q = Some(be(&sk.primes()[1]));
    jwk.dp = Some(be(sk.dp().unwrap()));
    jwk.dq = Some(be(sk.dq().unwrap()));
    jwk.qi = Some(B64(sk.qinv().unwrap().to_biguint().unwrap().to_bytes_be()));
    jwk
}

fn invalid(jwk: &JsonWebKey) -> String {
    let e = KeyMaterial::from_jwk(jwk).expect_err("should be refused");
    assert_eq!(e.code(), ErrorCode::InvalidKeyMaterial, "{e}");
    e.to_string()
}

#[test]
fn bad_rsa_jwks() {
    let good = rsa_private_jwk();
    assert!(KeyMaterial::from_jwk(&good).unwrap().is_private());

    // d inconsistent with the rest.
    let mut j = good.clone();
    j.d.as_mut().unwrap().0[100] ^= 1;
    assert!(invalid(&j).contains("inconsistent"));
    // A CRT value inconsistent.
    let mut j = good.clone();
    j.qi.as_mut().unwrap().0[10] ^= 1;
    invalid(&j);
    // n not p*q.
    let mut j = good.clone();
    j.n.as_mut().unwrap().0[200] ^= 1;
    invalid(&j);
    // Missing private members.
    let mut j = good.clone();
    j.dq = None;
    j.qi = None;
    assert!(invalid(&j).contains("missing: dq, qi"));
    // Missing e, foreign member, small modulus, even exponent.
    let mut j = good.clone();
    j.e = None;
    assert!(invalid(&j).contains("`e`"));
    let mut j = good.public_jwk_only();
    j.x = Some(B64(vec![1; 32]));
    assert!(invalid(&j).contains("`x` does not belong"));
    let mut j = good.public_jwk_only();
    j.n = Some(B64(j.n.unwrap().0[..128].to_vec()));
    assert!(invalid(&j).contains("1024 bits"));
    let mut j = good.public_jwk_only();
    j.e = Some(B64(vec![1, 0, 0]));
    assert!(invalid(&j).contains("not valid"));
    // kty is required; key_hsm is not supported.
    let mut j = good.public_jwk_only();
    j.kty = None;
    invalid(&j);
    let mut j = good.public_jwk_only();
    j.key_hsm = Some(B64(vec![1, 2, 3]));
    assert_eq!(code(KeyMaterial::from_jwk(&j)), ErrorCode::NotSupported);
    // Leading zeros on n and e are tolerated.
    let mut j = good.public_jwk_only();
    j.n.as_mut().unwrap().0.insert(0, 0);
    j.e.as_mut().unwrap().0.insert(0, 0);
    assert_eq!(
        KeyMaterial::from_jwk(&j).unwrap().public_jwk(),
        rsa2048().public_jwk()
    );
}

trait PublicOnly {
    fn public_jwk_only(&self) -> JsonWebKey;
}

impl PublicOnly for JsonWebKey {
    fn public_jwk_only(&self) -> JsonWebKey {
        JsonWebKey {
            kty: self.kty,
            n: self.n.clone(),
            e: self.e.clone(),
            ..JsonWebKey::default()
        }
    }
}

#[test]
fn bad_ec_jwks() {
    let m = gen(KeySpec::Ec(Curve::P256));
    let public = m.public_jwk();
    // A point not on the curve.
    let mut j = public.clone();
    j.y.as_mut().unwrap().0[31] ^= 1;
    assert!(invalid(&j).contains("not on curve P-256"));
    // The right point, the wrong curve.
    let mut j = public.clone();
    j.crv = Some(Curve::P384);
    invalid(&j);
    // Coordinates too long, missing y, an OKP curve, no crv.
    let mut j = public.clone();
    j.x.as_mut().unwrap().0.insert(0, 1);
    assert!(invalid(&j).contains("longer than the 32 bytes"));
    let mut j = public.clone();
    j.y = None;
    invalid(&j);
    let mut j = public.clone();
    j.crv = Some(Curve::Ed25519);
    assert!(invalid(&j).contains("not an EC curve"));
    let mut j = public.clone();
    j.crv = None;
    invalid(&j);
    // d that does not match x, y; d out of range; n on an EC key.
    let mut j = public.clone();
    j.d = Some(B64(vec![7; 32]));
    assert!(invalid(&j).contains("does not match"));
    let mut j = public.clone();
    j.d = Some(B64(vec![0xff; 32]));
    invalid(&j);
    let mut j = public.clone();
    j.d = Some(B64(vec![0; 32]));
    invalid(&j);
    let mut j = public.clone();
    j.n = Some(B64(vec![1; 256]));
    invalid(&j);
    // The point at infinity / all zeros.
    let mut j = public.clone();
    j.x = Some(B64(vec![0; 32]));
    j.y = Some(B64(vec![0; 32]));
    invalid(&j);
}

#[test]
fn bad_okp_and_oct_jwks() {
    let ed = gen(KeySpec::Ed25519);
    let mut j = ed.public_jwk();
    j.x = Some(B64(vec![1; 31]));
    assert!(invalid(&j).contains("32 bytes"));
    let mut j = ed.public_jwk();
    j.d = Some(B64(vec![3; 32]));
    assert!(invalid(&j).contains("does not match"));
    let mut j = ed.public_jwk();
    j.d = Some(B64(vec![3; 64]));
    invalid(&j);
    let mut j = ed.public_jwk();
    j.crv = Some(Curve::P256);
    assert!(invalid(&j).contains("not an OKP curve"));
    let mut j = ed.public_jwk();
    j.y = Some(B64(vec![1; 32]));
    invalid(&j);
    let x = gen(KeySpec::X25519);
    let mut j = x.public_jwk();
    j.d = Some(B64(vec![9; 32]));
    assert!(invalid(&j).contains("X25519 private key `d` does not match"));

    let oct_jwk = |k: Vec<u8>| JsonWebKey {
        kty: Some(KeyType::Oct),
        k: Some(B64(k)),
        ..JsonWebKey::default()
    };
    // 100 bits cannot be written in whole bytes; 96 and 104 bits bracket it.
    for len in [0usize, 1, 12, 13, 20, 33, 65] {
        let msg = invalid(&oct_jwk(vec![5; len]));
        assert!(
            msg.contains(&format!("oct key of {} bits", len * 8)),
            "{msg}"
        );
    }
    let mut j = oct_jwk(vec![5; 16]);
    j.n = Some(B64(vec![1]));
    invalid(&j);
    let mut j = oct_jwk(vec![5; 16]);
    j.k = None;
    assert!(invalid(&j).contains("`k`"));
}

#[test]
fn corrupt_storage_blobs() {
    let corrupt = |b: &[u8]| {
        let e = KeyMaterial::from_bytes(b).expect_err("corrupt");
        assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    };
    corrupt(&[]);
    corrupt(&[1]);
    corrupt(&[2, 9, 0, 0]);
    corrupt(&[1, 0x7f, 1, 2, 3]);
    corrupt(&[1, 9, 1, 2, 3]); // oct of 3 bytes
    for m in [
        rsa2048().clone(),
        gen(KeySpec::Ec(Curve::P384)),
        gen(KeySpec::Ed25519),
    ] {
        let b = m.to_bytes();
        corrupt(&b[..b.len() - 1]);
        let mut extra = b.to_vec();
        extra.push(0);
        corrupt(&extra);
    }
    // An EC public point off the curve.
    let m = gen(KeySpec::Ec(Curve::P256)).to_public().unwrap();
    let mut b = m.to_bytes().to_vec();
    let last = b.len() - 1;
    b[last] ^= 1;
    corrupt(&b);
    // A curve tag that does not exist.
    let mut b = m.to_bytes().to_vec();
    b[2] = 9;
    corrupt(&b);
}

#[test]
fn error_messages_never_carry_key_bytes() {
    let good = rsa_private_jwk();
    let mut j = good.clone();
    j.d.as_mut().unwrap().0[100] ^= 1;
    let msg = invalid(&j);
    for part in [&j.d, &j.p, &j.q] {
        let bytes = &part.as_ref().unwrap().0;
        assert!(!msg.contains(&::hex::encode(&bytes[..8])), "{msg}");
    }
    assert!(msg.len() < 200, "{msg}");
    // Every error variant's message is short and made of words and numbers.
    let k = oct(&[0xab; 32]);
    let errors = [
        k.encrypt(A128Gcm, b"x", None).unwrap_err(),
        k.unwrap(A256Kw, &[0xcd; 24]).unwrap_err(),
        k.decrypt(A256Gcm, &[0xcd; 8], Some(&[0; 12]), None, Some(&[0; 16]))
            .unwrap_err(),
        k.sign(Rs256, &[0; 32]).unwrap_err(),
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.to_lowercase().contains("abab"), "{s}");
        assert!(!s.to_lowercase().contains("cdcd"), "{s}");
        assert!(!format!("{e:?}").to_lowercase().contains("abab"));
    }
}
