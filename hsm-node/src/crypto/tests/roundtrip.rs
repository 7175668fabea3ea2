//! Every key type and algorithm through its operations and back.

use super::*;
use hsm_api::{DeriveAlgorithm, KeyCreateParameters, KeyFamily, KeyOperation, MacAlgorithm};

fn all_generated() -> Vec<KeyMaterial> {
    vec![
        rsa2048().clone(),
        gen(KeySpec::Ec(Curve::P256)),
        gen(KeySpec::Ec(Curve::P384)),
        gen(KeySpec::Ec(Curve::P521)),
        gen(KeySpec::Ed25519),
        gen(KeySpec::X25519),
        gen(KeySpec::Oct { bits: 128 }),
        gen(KeySpec::Oct { bits: 192 }),
        gen(KeySpec::Oct { bits: 256 }),
        gen(KeySpec::Oct { bits: 384 }),
        gen(KeySpec::Oct { bits: 512 }),
    ]
}

#[test]
fn loaded_key_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LoadedKey>();
    assert_send_sync::<KeyMaterial>();
}

#[test]
fn create_parameters_defaults_and_choices() {
    let ok = |p: KeyCreateParameters| KeySpec::from_create(&p).unwrap();
    assert_eq!(
        ok(KeyCreateParameters::rsa(3072)),
        KeySpec::Rsa { bits: 3072 }
    );
    let mut p = KeyCreateParameters::rsa(2048);
    p.key_size = None;
    p.public_exponent = Some(65537);
    assert_eq!(ok(p), KeySpec::Rsa { bits: 2048 });
    let mut p = KeyCreateParameters::ec(Curve::P384);
    p.kty = KeyType::Ec;
    assert_eq!(ok(p.clone()), KeySpec::Ec(Curve::P384));
    p.crv = None;
    assert_eq!(ok(p.clone()), KeySpec::Ec(Curve::P256));
    p.crv = Some(Curve::P521);
    p.key_size = Some(521);
    assert_eq!(ok(p), KeySpec::Ec(Curve::P521));
    assert_eq!(ok(KeyCreateParameters::okp(Curve::X25519)), KeySpec::X25519);
    let mut p = KeyCreateParameters::okp(Curve::Ed25519);
    p.crv = None;
    assert_eq!(ok(p), KeySpec::Ed25519);
    for bits in [128, 192, 256, 384, 512] {
        assert_eq!(ok(KeyCreateParameters::oct(bits)), KeySpec::Oct { bits });
    }
    let mut p = KeyCreateParameters::oct(128);
    p.key_size = None;
    assert_eq!(ok(p), KeySpec::Oct { bits: 256 });
}

#[test]
fn generate_describe_and_default_ops() {
    use KeyOperation::*;
    let expect: [(&str, KeyFamily, Vec<KeyOperation>); 11] = [
        (
            "RSA-2048",
            KeyFamily::Rsa,
            vec![Sign, Verify, Encrypt, Decrypt, WrapKey, UnwrapKey],
        ),
        ("EC-P256", KeyFamily::Ec, vec![Sign, Verify, DeriveKey]),
        ("EC-P384", KeyFamily::Ec, vec![Sign, Verify, DeriveKey]),
        ("EC-P521", KeyFamily::Ec, vec![Sign, Verify, DeriveKey]),
        ("OKP-Ed25519", KeyFamily::Okp, vec![Sign, Verify]),
        ("OKP-X25519", KeyFamily::Okp, vec![DeriveKey]),
        ("oct-128", KeyFamily::Oct, vec![]),
        ("oct-192", KeyFamily::Oct, vec![]),
        ("oct-256", KeyFamily::Oct, vec![]),
        ("oct-384", KeyFamily::Oct, vec![]),
        ("oct-512", KeyFamily::Oct, vec![]),
    ];
    let oct_ops = vec![
        Encrypt, Decrypt, WrapKey, UnwrapKey, Sign, Verify, DeriveKey,
    ];
    for (m, (label, family, ops)) in all_generated().iter().zip(expect) {
        assert_eq!(m.describe(), label);
        assert_eq!(m.family(), family);
        assert!(m.is_private(), "{label}");
        let ops = if family == KeyFamily::Oct {
            oct_ops.clone()
        } else {
            ops
        };
        assert_eq!(m.default_key_ops(), ops, "{label}");
        assert_eq!(load(m).material_family(), family);
    }
}

#[test]
fn larger_rsa_keys_generate_and_sign() {
    for bits in [3072, 4096] {
        let m = gen(KeySpec::Rsa { bits });
        assert_eq!(m.describe(), format!("RSA-{bits}"));
        let k = load(&m);
        for alg in [SignatureAlgorithm::Rs256, SignatureAlgorithm::Ps512] {
            let d = digest_for(alg, b"bigger keys");
            let sig = k.sign(alg, &d).unwrap();
            assert_eq!(sig.len(), bits as usize / 8);
            assert!(k.verify(alg, &d, &sig).unwrap());
        }
        let n = m.public_jwk().n.unwrap();
        assert_eq!(n.0.len(), bits as usize / 8);
    }
}

#[test]
fn sign_verify_every_signing_key_and_algorithm() {
    let keys = [
        rsa2048().clone(),
        gen(KeySpec::Ec(Curve::P256)),
        gen(KeySpec::Ec(Curve::P384)),
        gen(KeySpec::Ec(Curve::P521)),
        gen(KeySpec::Ed25519),
    ];
    let mut checked = 0;
    for m in &keys {
        let k = load(m);
        let public = load(&public_twin(m));
        for alg in sig_algs(m) {
            let d = digest_for(alg, b"the message");
            let sig = k.sign(alg, &d).unwrap();
            match m.curve() {
                Some(c) if m.family() == KeyFamily::Ec => assert_eq!(sig.len(), 2 * c.field_len()),
                Some(_) => assert_eq!(sig.len(), 64),
                None => assert_eq!(sig.len(), 256),
            }
            assert!(
                k.verify(alg, &d, &sig).unwrap(),
                "{alg} on {}",
                m.describe()
            );
            assert!(public.verify(alg, &d, &sig).unwrap(), "public-only {alg}");
            // A flipped bit anywhere in the signature, or another digest: false.
            for pos in [0, sig.len() / 2, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[pos] ^= 0x01;
                assert!(!k.verify(alg, &d, &bad).unwrap(), "tampered {alg} at {pos}");
            }
            let other = digest_for(alg, b"another message");
            assert!(!k.verify(alg, &other, &sig).unwrap());
            // Truncated or empty signatures are false, not errors.
            assert!(!k.verify(alg, &d, &sig[..sig.len() - 1]).unwrap());
            assert!(!k.verify(alg, &d, &[]).unwrap());
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn signatures_verify_after_storage_round_trip() {
    let m = gen(KeySpec::Ec(Curve::P256));
    let d = digest_for(SignatureAlgorithm::Es256, b"stored");
    let sig = load(&m).sign(SignatureAlgorithm::Es256, &d).unwrap();
    let back = KeyMaterial::from_bytes(&m.to_bytes()).unwrap();
    assert!(load(&back)
        .verify(SignatureAlgorithm::Es256, &d, &sig)
        .unwrap());
    let sig2 = load(&back).sign(SignatureAlgorithm::Es256, &d).unwrap();
    assert!(load(&m)
        .verify(SignatureAlgorithm::Es256, &d, &sig2)
        .unwrap());
}

#[test]
fn gcm_encrypt_decrypt_with_aad_and_tampering() {
    use EncryptionAlgorithm::*;
    for (bits, alg) in [(128, A128Gcm), (192, A192Gcm), (256, A256Gcm)] {
        let k = load(&gen(KeySpec::Oct { bits }));
        for pt in [&b""[..], b"x", b"sixteen byte msg", &[7u8; 1000]] {
            let aad = b"context";
            let e = k.encrypt(alg, pt, Some(aad)).unwrap();
            let iv = e.iv.clone().unwrap();
            let tag = e.tag.clone().unwrap();
            assert_eq!(iv.len(), 12);
            assert_eq!(tag.len(), 16);
            assert_eq!(e.ciphertext.len(), pt.len());
            let out = k
                .decrypt(alg, &e.ciphertext, Some(&iv), Some(aad), Some(&tag))
                .unwrap();
            assert_eq!(out.as_slice(), pt);

            let mut bad_tag = tag.clone();
            bad_tag[15] ^= 0x80;
            let r = k.decrypt(alg, &e.ciphertext, Some(&iv), Some(aad), Some(&bad_tag));
            assert_eq!(code(r), ErrorCode::DecryptionFailed);
            let r = k.decrypt(alg, &e.ciphertext, Some(&iv), Some(b"other"), Some(&tag));
            assert_eq!(code(r), ErrorCode::DecryptionFailed);
            let r = k.decrypt(alg, &e.ciphertext, Some(&iv), None, Some(&tag));
            assert_eq!(code(r), ErrorCode::DecryptionFailed);
            let mut bad_iv = iv.clone();
            bad_iv[0] ^= 1;
            let r = k.decrypt(alg, &e.ciphertext, Some(&bad_iv), Some(aad), Some(&tag));
            assert_eq!(code(r), ErrorCode::DecryptionFailed);
            if !pt.is_empty() {
                let mut bad_ct = e.ciphertext.clone();
                bad_ct[0] ^= 1;
                let r = k.decrypt(alg, &bad_ct, Some(&iv), Some(aad), Some(&tag));
                assert_eq!(code(r), ErrorCode::DecryptionFailed);
            }
        }
        // Without aad on both sides.
        let e = k.encrypt(alg, b"no aad", None).unwrap();
        let out = k
            .decrypt(alg, &e.ciphertext, e.iv.as_deref(), None, e.tag.as_deref())
            .unwrap();
        assert_eq!(out.as_slice(), b"no aad");
        // Fresh IV every time.
        let e2 = k.encrypt(alg, b"no aad", None).unwrap();
        assert_ne!(e.iv, e2.iv);
        assert_ne!(e.ciphertext, e2.ciphertext);
    }
}

#[test]
fn rsa_oaep_encrypt_with_public_decrypt_with_private() {
    use EncryptionAlgorithm::*;
    let private = load(rsa2048());
    let public = load(&public_twin(rsa2048()));
    for (alg, max) in [(RsaOaep, 256 - 2 * 20 - 2), (RsaOaep256, 256 - 2 * 32 - 2)] {
        for pt in [&b""[..], b"a secret", &vec![0x5a; max][..]] {
            let e = public.encrypt(alg, pt, None).unwrap();
            assert_eq!(e.ciphertext.len(), 256);
            assert!(e.iv.is_none() && e.tag.is_none());
            let out = private
                .decrypt(alg, &e.ciphertext, None, None, None)
                .unwrap();
            assert_eq!(out.as_slice(), pt);
            let mut bad = e.ciphertext.clone();
            bad[100] ^= 4;
            let r = private.decrypt(alg, &bad, None, None, None);
            assert_eq!(code(r), ErrorCode::DecryptionFailed);
        }
        let too_long = vec![1u8; max + 1];
        assert_eq!(
            code(public.encrypt(alg, &too_long, None)),
            ErrorCode::BadParameter
        );
        // A public-only key cannot decrypt.
        let e = public.encrypt(alg, b"x", None).unwrap();
        let r = public.decrypt(alg, &e.ciphertext, None, None, None);
        assert_eq!(code(r), ErrorCode::OperationNotPermitted);
    }
    // The SHA-1 and SHA-256 variants are not interchangeable.
    let e = private.encrypt(RsaOaep, b"x", None).unwrap();
    let r = private.decrypt(RsaOaep256, &e.ciphertext, None, None, None);
    assert_eq!(code(r), ErrorCode::DecryptionFailed);
}

#[test]
fn aes_key_wrap_round_trips_every_size_and_length() {
    use EncryptionAlgorithm::*;
    for (bits, kw, kwp) in [
        (128, A128Kw, A128Kwp),
        (192, A192Kw, A192Kwp),
        (256, A256Kw, A256Kwp),
    ] {
        let k = load(&gen(KeySpec::Oct { bits }));
        for len in [16usize, 24, 32, 40, 64] {
            let key = random_bytes(len).unwrap();
            let w = k.wrap(kw, &key).unwrap();
            assert_eq!(w.len(), len + 8);
            assert_eq!(k.unwrap(kw, &w).unwrap().as_slice(), key.as_slice());
            let mut bad = w.clone();
            bad[len / 2] ^= 1;
            assert_eq!(code(k.unwrap(kw, &bad)), ErrorCode::DecryptionFailed);
        }
        for len in 1usize..=70 {
            let key = random_bytes(len).unwrap();
            let w = k.wrap(kwp, &key).unwrap();
            assert_eq!(w.len(), len.div_ceil(8) * 8 + 8, "KWP of {len} bytes");
            assert_eq!(k.unwrap(kwp, &w).unwrap().as_slice(), key.as_slice());
            let mut bad = w.clone();
            bad[0] ^= 1;
            assert_eq!(code(k.unwrap(kwp, &bad)), ErrorCode::DecryptionFailed);
        }
        // KW and KWP outputs are not interchangeable.
        let w = k.wrap(kw, &[9u8; 16]).unwrap();
        assert_eq!(code(k.unwrap(kwp, &w)), ErrorCode::DecryptionFailed);
    }
}

#[test]
fn rsa_wrap_unwrap() {
    use EncryptionAlgorithm::*;
    let k = load(rsa2048());
    let public = load(&public_twin(rsa2048()));
    let key = random_bytes(32).unwrap();
    for alg in [RsaOaep, RsaOaep256] {
        let w = public.wrap(alg, &key).unwrap();
        assert_eq!(k.unwrap(alg, &w).unwrap().as_slice(), key.as_slice());
        assert_eq!(
            code(public.unwrap(alg, &w)),
            ErrorCode::OperationNotPermitted
        );
    }
}

#[test]
fn hmac_every_size_and_algorithm() {
    for bits in [128, 192, 256, 384, 512] {
        let k = load(&gen(KeySpec::Oct { bits }));
        for alg in MacAlgorithm::ALL.iter().copied() {
            let mac = k.mac(alg, b"data").unwrap();
            assert_eq!(mac.len(), alg.tag_len());
            assert!(k.verify_mac(alg, b"data", &mac).unwrap());
            assert!(!k.verify_mac(alg, b"Data", &mac).unwrap());
            let mut bad = mac.clone();
            bad[alg.tag_len() - 1] ^= 1;
            assert!(!k.verify_mac(alg, b"data", &bad).unwrap());
            assert!(!k.verify_mac(alg, b"data", &mac[..16]).unwrap());
            assert!(!k.verify_mac(alg, b"data", &[]).unwrap());
        }
    }
}

#[test]
fn storage_round_trip_every_kind_private_and_public() {
    let mut kinds = all_generated();
    let publics: Vec<KeyMaterial> = kinds.iter().filter_map(KeyMaterial::to_public).collect();
    assert_eq!(publics.len(), 6);
    kinds.extend(publics);
    for m in &kinds {
        let bytes = m.to_bytes();
        assert_eq!(bytes[0], 1, "format version");
        let back = KeyMaterial::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes().as_slice(), bytes.as_slice(), "{m:?}");
        assert_eq!(back.describe(), m.describe());
        assert_eq!(back.is_private(), m.is_private());
        assert_eq!(back.public_jwk(), m.public_jwk());
        assert_eq!(back.public_digest(), m.public_digest());
        LoadedKey::load(&back).unwrap();
    }
}

#[test]
fn public_jwk_shape_and_import_round_trip() {
    for m in all_generated() {
        let jwk = m.public_jwk();
        assert_eq!(jwk.kty, Some(KeyType::hsm(m.family())));
        assert!(jwk.kid.is_none() && jwk.key_ops.is_none());
        assert!(jwk.d.is_none() && jwk.k.is_none() && jwk.p.is_none());
        match m.family() {
            KeyFamily::Rsa => {
                assert_eq!(jwk.n.as_ref().unwrap().0.len(), 256);
                assert_eq!(jwk.e.as_ref().unwrap().0, vec![1, 0, 1]);
            }
            KeyFamily::Ec => {
                let fl = m.curve().unwrap().field_len();
                assert_eq!(jwk.crv, m.curve());
                assert_eq!(jwk.x.as_ref().unwrap().0.len(), fl);
                assert_eq!(jwk.y.as_ref().unwrap().0.len(), fl);
            }
            KeyFamily::Okp => {
                assert_eq!(jwk.crv, m.curve());
                assert_eq!(jwk.x.as_ref().unwrap().0.len(), 32);
                assert!(jwk.y.is_none());
            }
            KeyFamily::Oct => {
                assert_eq!(
                    jwk,
                    JsonWebKey {
                        kty: Some(KeyType::OctHsm),
                        ..JsonWebKey::default()
                    }
                );
                continue;
            }
        }
        let imported = KeyMaterial::from_jwk(&jwk).unwrap();
        assert!(!imported.is_private());
        assert_eq!(imported.public_jwk(), jwk);
        assert_eq!(imported.public_digest(), m.public_digest());
        assert_eq!(imported.describe(), m.describe());
    }
}

/// Private JWKs rebuilt from generated keys import to the same key.
#[test]
fn private_jwk_import_of_generated_keys() {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};

    // RSA: components recovered from the stored PKCS#8 by RustCrypto.
    let m = rsa2048();
    let material::Inner::Rsa(parts) = &m.inner else {
        panic!("not RSA")
    };
    let sk = rsa::RsaPrivateKey::from_pkcs8_der(parts.pkcs8.as_ref().unwrap()).unwrap();
    let be = |b: &rsa::BigUint| B64(b.to_bytes_be());
    let primes = sk.primes();
    let mut jwk = m.public_jwk();
    jwk.kty = Some(KeyType::Rsa);
    jwk.d = Some(be(sk.d()));
    jwk.p = Some(be(&primes[0]));
    jwk.q = Some(be(&primes[1]));
    jwk.dp = Some(be(sk.dp().unwrap()));
    jwk.dq = Some(be(sk.dq().unwrap()));
    let qinv = sk.qinv().unwrap().to_biguint().unwrap();
    jwk.qi = Some(B64(qinv.to_bytes_be()));
    assert_eq!(sk.n().to_bytes_be(), jwk.n.as_ref().unwrap().0);
    let imported = KeyMaterial::from_jwk(&jwk).unwrap();
    assert!(imported.is_private());
    check_same_key(m, &imported);

    // EC: d from the library's own export.
    for c in [Curve::P256, Curve::P384, Curve::P521] {
        let m = gen(KeySpec::Ec(c));
        let material::Inner::Ec(parts) = &m.inner else {
            panic!("not EC")
        };
        let alg = material::ecdsa_signing(c).unwrap();
        let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, parts.pkcs8.as_ref().unwrap())
            .unwrap();
        use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
        let d: EcPrivateKeyBin = kp.private_key().as_be_bytes().unwrap();
        let mut jwk = m.public_jwk();
        jwk.d = Some(B64(d.as_ref().to_vec()));
        let imported = KeyMaterial::from_jwk(&jwk).unwrap();
        assert!(imported.is_private());
        check_same_key(&m, &imported);
    }

    // OKP: the 32 stored bytes are the JWK's d.
    for spec in [KeySpec::Ed25519, KeySpec::X25519] {
        let m = gen(spec);
        let (material::Inner::Ed25519(p) | material::Inner::X25519(p)) = &m.inner else {
            panic!("not OKP")
        };
        let mut jwk = m.public_jwk();
        jwk.d = Some(B64(p.private.as_ref().unwrap().to_vec()));
        let imported = KeyMaterial::from_jwk(&jwk).unwrap();
        assert!(imported.is_private());
        check_same_key(&m, &imported);
    }

    // oct: k.
    let m = gen(KeySpec::Oct { bits: 256 });
    let material::Inner::Oct(k) = &m.inner else {
        panic!("not oct")
    };
    let imported = KeyMaterial::from_jwk(&JsonWebKey {
        kty: Some(KeyType::OctHsm),
        k: Some(B64(k.to_vec())),
        ..JsonWebKey::default()
    })
    .unwrap();
    check_same_key(&m, &imported);
}

/// Same public view, same stored bytes, and each can use what the other made.
fn check_same_key(a: &KeyMaterial, b: &KeyMaterial) {
    assert_eq!(a.public_jwk(), b.public_jwk());
    assert_eq!(a.public_digest(), b.public_digest());
    let (ka, kb) = (load(a), load(b));
    for alg in sig_algs(a) {
        let d = digest_for(alg, b"same key");
        assert!(ka.verify(alg, &d, &kb.sign(alg, &d).unwrap()).unwrap());
        assert!(kb.verify(alg, &d, &ka.sign(alg, &d).unwrap()).unwrap());
    }
    match a.family() {
        KeyFamily::Oct => {
            assert_eq!(a.to_bytes().as_slice(), b.to_bytes().as_slice());
            let mac = ka.mac(MacAlgorithm::Hs256, b"m").unwrap();
            assert!(kb.verify_mac(MacAlgorithm::Hs256, b"m", &mac).unwrap());
        }
        KeyFamily::Rsa => {
            let e = ka
                .encrypt(EncryptionAlgorithm::RsaOaep256, b"m", None)
                .unwrap();
            let out = kb
                .decrypt(
                    EncryptionAlgorithm::RsaOaep256,
                    &e.ciphertext,
                    None,
                    None,
                    None,
                )
                .unwrap();
            assert_eq!(out.as_slice(), b"m");
        }
        _ if a.curve() == Some(Curve::X25519) => {
            assert_eq!(a.to_bytes().as_slice(), b.to_bytes().as_slice());
            let peer = gen(KeySpec::X25519);
            assert_eq!(
                ka.ecdh(&peer.public_jwk()).unwrap().as_slice(),
                kb.ecdh(&peer.public_jwk()).unwrap().as_slice()
            );
        }
        _ => {}
    }
}

#[test]
fn ecdh_both_sides_agree_on_every_curve() {
    for (spec, len) in [
        (KeySpec::Ec(Curve::P256), 32),
        (KeySpec::Ec(Curve::P384), 48),
        (KeySpec::Ec(Curve::P521), 66),
        (KeySpec::X25519, 32),
    ] {
        let (a, b) = (gen(spec), gen(spec));
        let ab = load(&a).ecdh(&b.public_jwk()).unwrap();
        let ba = load(&b).ecdh(&a.public_jwk()).unwrap();
        assert_eq!(ab.len(), len);
        assert_eq!(ab.as_slice(), ba.as_slice());
        // The plain kty spelling of the peer works too.
        let mut peer = b.public_jwk();
        peer.kty = Some(if a.family() == KeyFamily::Ec {
            KeyType::Ec
        } else {
            KeyType::Okp
        });
        assert_eq!(load(&a).ecdh(&peer).unwrap().as_slice(), ab.as_slice());
        // A different peer gives a different secret.
        let c = gen(spec);
        assert_ne!(
            load(&a).ecdh(&c.public_jwk()).unwrap().as_slice(),
            ab.as_slice()
        );
    }
}

#[test]
fn kbkdf_on_a_key_matches_the_standalone_function() {
    let m = gen(KeySpec::Oct { bits: 256 });
    let material::Inner::Oct(k) = &m.inner else {
        panic!("not oct")
    };
    let key = load(&m);
    for alg in [
        DeriveAlgorithm::KbkdfHmacSha256,
        DeriveAlgorithm::KbkdfHmacSha384,
        DeriveAlgorithm::KbkdfHmacSha512,
    ] {
        for len in [16, 32, 33, 64, 100] {
            let a = key.kbkdf(alg, b"label\0context", len).unwrap();
            let b = kbkdf(alg, k, b"label\0context", len).unwrap();
            assert_eq!(a.len(), len);
            assert_eq!(a.as_slice(), b.as_slice());
        }
        let other = key.kbkdf(alg, b"label\0other", 32).unwrap();
        assert_ne!(
            other.as_slice(),
            key.kbkdf(alg, b"label\0context", 32).unwrap().as_slice()
        );
    }
}

#[test]
fn seal_open_and_random() {
    let key: [u8; 32] = random_bytes(32).unwrap().try_into().unwrap();
    for pt in [&b""[..], b"stored key blob", &[3u8; 4096]] {
        let s = seal(&key, b"partition/key/version", pt).unwrap();
        assert_eq!(s.len(), 12 + pt.len() + 16);
        let out = open(&key, b"partition/key/version", &s).unwrap();
        assert_eq!(out.as_slice(), pt);
        assert_eq!(
            code(open(&key, b"partition/other/version", &s)),
            ErrorCode::DecryptionFailed
        );
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            code(open(&key, b"partition/key/version", &bad)),
            ErrorCode::DecryptionFailed
        );
        let mut other_key = key;
        other_key[0] ^= 1;
        assert_eq!(
            code(open(&other_key, b"partition/key/version", &s)),
            ErrorCode::DecryptionFailed
        );
    }
    assert_eq!(
        code(open(&key, b"", &[0u8; 27])),
        ErrorCode::DecryptionFailed
    );
    let a = seal(&key, b"", b"same").unwrap();
    let b = seal(&key, b"", b"same").unwrap();
    assert_ne!(a, b, "nonces are random");

    assert_eq!(random_bytes(0).unwrap().len(), 0);
    let r1 = random_bytes(64).unwrap();
    let r2 = random_bytes(64).unwrap();
    assert_eq!(r1.len(), 64);
    assert_ne!(r1, r2);
}

#[test]
fn public_digest_identifies_keys() {
    let a = gen(KeySpec::Ec(Curve::P256));
    let b = gen(KeySpec::Ec(Curve::P256));
    assert_eq!(a.public_digest(), a.to_public().unwrap().public_digest());
    assert_eq!(a.public_digest(), a.clone().public_digest());
    assert_ne!(a.public_digest(), b.public_digest());
    // The digest is SHA-256 over the public view's storage bytes.
    let expect = sha2::Sha256::digest(a.to_public().unwrap().to_bytes().as_slice());
    assert_eq!(a.public_digest().to_vec(), expect.to_vec());

    let k1 = gen(KeySpec::Oct { bits: 256 });
    let k2 = gen(KeySpec::Oct { bits: 256 });
    assert!(k1.to_public().is_none());
    assert_ne!(k1.public_digest(), k2.public_digest());
    let back = KeyMaterial::from_bytes(&k1.to_bytes()).unwrap();
    assert_eq!(k1.public_digest(), back.public_digest());
    // It is not a plain hash of the key bytes.
    let material::Inner::Oct(k) = &k1.inner else {
        panic!("not oct")
    };
    assert_ne!(
        k1.public_digest().to_vec(),
        sha2::Sha256::digest(k.as_slice()).to_vec()
    );
}

#[test]
fn debug_output_never_shows_key_bytes() {
    for m in all_generated() {
        let dbg = format!("{m:?} {:?}", load(&m));
        assert!(dbg.contains(&m.describe()), "{dbg}");
        let stored = m.to_bytes();
        // No run of 8 stored bytes appears in hex or decimal-list form.
        let secret = &stored[stored.len() - 8..];
        assert!(!dbg.contains(&::hex::encode(secret)), "{dbg}");
        assert!(
            !dbg.contains(format!("{secret:?}").trim_matches(['[', ']'])),
            "{dbg}"
        );
        assert!(dbg.len() < 100, "{dbg}");
    }
    let e = load(&gen(KeySpec::Oct { bits: 128 }))
        .encrypt(EncryptionAlgorithm::A128Gcm, b"plaintext!", None)
        .unwrap();
    let dbg = format!("{e:?}");
    assert!(!dbg.contains(&::hex::encode(&e.ciphertext)), "{dbg}");
}
