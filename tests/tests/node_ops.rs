//! Every operation of a node, over real mutual TLS against a running
//! `hsm-node` process, each result checked by an independent implementation
//! (RustCrypto): signatures are verified from the public JWK, ciphertexts and
//! wrapped keys are opened (or compared byte for byte) with keys of known
//! bytes that were imported, MACs and derived keys are recomputed locally.
//!
//! Three node processes, one per group: asymmetric keys (sign, verify, RSA
//! encryption and wrapping, imports), symmetric keys (AES-GCM, AES-KW/KWP,
//! HMAC, ECDH and KBKDF derivation, rng), and key management (list paging,
//! versions, rotate, update, delete, recover, purge, backup, restore).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use hmac::{Hmac, Mac};
use hsm_api::{
    is_valid_version, Client, ClientError, Curve, DeriveAlgorithm, EncryptionAlgorithm, ErrorCode,
    JsonWebKey, KeyAttributes, KeyBundle, KeyCreateParameters, KeyDeriveParameters, KeyFamily,
    KeyImportParameters, KeyOp, KeyOperation, KeyOperationsParameters, KeyType,
    KeyUpdateParameters, MacAlgorithm, SignatureAlgorithm, Tags, B64,
};
use hsm_tests::TestNode;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::OsRng;
use rand::RngCore;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The longest any one group may take, node start excluded. Generous: it
/// bounds a hang, it does not measure speed.
const BOUND: Duration = Duration::from_secs(240);

const MSG: &[u8] = b"hsm-ha node_ops: a message to be signed";

// ---------------------------------------------------------------------------
// The three groups.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_keys_sign_encrypt_wrap_and_import_cross_checked() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    bounded(&node, asymmetric(&node)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_keys_gcm_key_wrap_mac_derive_and_rng_cross_checked() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    bounded(&node, symmetric(&node)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_management_round_trips() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    bounded(&node, management(&node)).await
}

/// Runs a group under [`BOUND`]; a failure carries the node's log.
async fn bounded(
    node: &TestNode,
    body: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    match tokio::time::timeout(BOUND, body).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context(format!("node log:\n{}", node.log()))),
        Err(_) => anyhow::bail!("not done within {BOUND:?}; node log:\n{}", node.log()),
    }
}

// ---------------------------------------------------------------------------
// Asymmetric keys.
// ---------------------------------------------------------------------------

async fn asymmetric(node: &TestNode) -> anyhow::Result<()> {
    use SignatureAlgorithm::*;
    let co = node.officer().await?;
    let cu = node.user().await?;

    // RSA-2048: the JWK, every RSA signature algorithm.
    let rsa = co
        .create_key("rsa2048", &KeyCreateParameters::rsa(2048))
        .await?;
    let rsa_kid = kid_of(&rsa);
    version_of(node, "rsa2048", &rsa_kid);
    assert_eq!(rsa.key.kty, Some(KeyType::RsaHsm));
    assert_public_only(&rsa.key);
    let n = field(&rsa.key.n, "n");
    assert_eq!(n.len(), 256, "RSA-2048 modulus length");
    assert!(n[0] & 0x80 != 0, "RSA-2048 modulus has its top bit set");
    assert_eq!(field(&rsa.key.e, "e"), [1, 0, 1], "public exponent 65537");
    assert_eq!(rsa.attributes.enabled, Some(true));
    assert_eq!(rsa.attributes.exportable, Some(false));
    assert!(rsa.key.crv.is_none() && rsa.key.x.is_none() && rsa.key.y.is_none());
    let rsa_pub = Public::from_jwk(&rsa.key);
    for alg in [Rs256, Rs384, Rs512, Ps256, Ps384, Ps512] {
        sign_checked(node, &co, &rsa_kid, alg, MSG, &rsa_pub, 256).await?;
    }
    // PKCS#1 v1.5 is deterministic: the same digest gives the same signature.
    let d = tbs(Rs256, MSG);
    let a = co.sign("rsa2048", None, Rs256, &d).await?;
    let b = co.sign("rsa2048", None, Rs256, &d).await?;
    assert_eq!(a.value, b.value, "RS256 is deterministic");
    // A crypto user uses keys too.
    let by_user = cu.sign("rsa2048", None, Ps256, &tbs(Ps256, MSG)).await?;
    assert!(rsa_pub.verifies(Ps256, &tbs(Ps256, MSG), &by_user.value.0));
    assert_code(
        cu.create_key("by-user", &KeyCreateParameters::ec(Curve::P256))
            .await,
        ErrorCode::Forbidden,
    );
    // Bad requests.
    assert_code(
        co.sign("rsa2048", None, Rs256, &[7u8; 20]).await,
        ErrorCode::InvalidDigestLength,
    );
    assert_code(
        co.sign("rsa2048", None, Rs512, &[7u8; 32]).await,
        ErrorCode::InvalidDigestLength,
    );
    assert_code(
        co.sign("rsa2048", None, Es256, &[7u8; 32]).await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    assert_code(
        co.sign("rsa2048", None, EdDsa, MSG).await,
        ErrorCode::AlgorithmKeyMismatch,
    );

    // RSA encryption and key wrapping, both directions where a private key
    // is at hand; the node's own ciphertexts are opened by the node.
    for alg in [
        EncryptionAlgorithm::RsaOaep,
        EncryptionAlgorithm::RsaOaep256,
    ] {
        rsa_crypt_checked(&co, "rsa2048", &rsa_kid, alg, &rsa_pub, None).await?;
    }
    assert_code(
        co.encrypt("rsa2048", None, EncryptionAlgorithm::A256Gcm, b"x", None)
            .await,
        ErrorCode::AlgorithmKeyMismatch,
    );

    // RSA-3072 and a single RSA-4096.
    for bits in [3072u32, 4096] {
        let name = format!("rsa{bits}");
        let k = co
            .create_key(&name, &KeyCreateParameters::rsa(bits))
            .await?;
        assert_eq!(k.key.kty, Some(KeyType::RsaHsm));
        assert_public_only(&k.key);
        let len = (bits / 8) as usize;
        let n = field(&k.key.n, "n");
        assert_eq!(n.len(), len, "RSA-{bits} modulus length");
        assert!(n[0] & 0x80 != 0, "RSA-{bits} modulus has its top bit set");
        let public = Public::from_jwk(&k.key);
        let algs: &[SignatureAlgorithm] = if bits == 3072 {
            &[Rs384, Ps256, Ps512]
        } else {
            &[Ps512]
        };
        for alg in algs {
            sign_checked(node, &co, &kid_of(&k), *alg, MSG, &public, len).await?;
        }
    }

    // EC keys: full-width coordinates, raw r‖s signatures.
    for (crv, alg, sig_len) in [
        (Curve::P256, Es256, 64),
        (Curve::P384, Es384, 96),
        (Curve::P521, Es512, 132),
    ] {
        let name = format!("ec-{}", crv.as_str().to_lowercase());
        let k = co.create_key(&name, &KeyCreateParameters::ec(crv)).await?;
        assert_eq!(k.key.kty, Some(KeyType::EcHsm));
        assert_eq!(k.key.crv, Some(crv));
        assert_public_only(&k.key);
        assert!(k.key.n.is_none() && k.key.e.is_none());
        assert_eq!(
            field(&k.key.x, "x").len(),
            crv.field_len(),
            "{crv} x is full width"
        );
        assert_eq!(
            field(&k.key.y, "y").len(),
            crv.field_len(),
            "{crv} y is full width"
        );
        let ops = k.key.key_ops.clone().unwrap_or_default();
        assert!(
            ops.contains(&KeyOperation::Sign) && ops.contains(&KeyOperation::DeriveKey),
            "{crv} key_ops {ops:?}"
        );
        let public = Public::from_jwk(&k.key);
        sign_checked(node, &co, &kid_of(&k), alg, MSG, &public, sig_len).await?;
        // The digest is what is signed: a digest of another length is refused.
        let wrong = if crv == Curve::P256 { 48 } else { 32 };
        assert_code(
            co.sign(&name, None, alg, &vec![1u8; wrong]).await,
            ErrorCode::InvalidDigestLength,
        );
    }
    assert_code(
        co.sign("ec-p-256", None, Es384, &[1u8; 48]).await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    assert_code(
        co.sign("ec-p-384", None, Es256, &[1u8; 32]).await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    assert_code(
        co.sign("ec-p-256", None, Rs256, &[1u8; 32]).await,
        ErrorCode::AlgorithmKeyMismatch,
    );

    // Ed25519: PureEdDSA over the message itself, short and long.
    let ed = co
        .create_key("ed25519", &KeyCreateParameters::okp(Curve::Ed25519))
        .await?;
    assert_eq!(ed.key.kty, Some(KeyType::OkpHsm));
    assert_eq!(ed.key.crv, Some(Curve::Ed25519));
    assert_public_only(&ed.key);
    assert_eq!(field(&ed.key.x, "x").len(), 32);
    assert!(ed.key.y.is_none());
    let ed_pub = Public::from_jwk(&ed.key);
    sign_checked(node, &co, &kid_of(&ed), EdDsa, MSG, &ed_pub, 64).await?;
    let long: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    sign_checked(node, &co, &kid_of(&ed), EdDsa, &long, &ed_pub, 64).await?;
    assert_code(
        co.sign("ed25519", None, Es256, &[1u8; 32]).await,
        ErrorCode::AlgorithmKeyMismatch,
    );

    // Imports: the node signs with exactly the key we made.
    import_rsa_checked(node, &co).await?;
    import_ec_checked(node, &co).await?;
    import_ed25519_checked(node, &co).await?;
    assert_code(
        cu.import_key("by-user", &import_params(oct_jwk(&[0u8; 32])))
            .await,
        ErrorCode::Forbidden,
    );
    Ok(())
}

/// RSA-OAEP(-256) encrypt/decrypt and wrapkey/unwrapkey on key `name`.
/// With `private` (an imported key), the node's ciphertexts are also opened
/// locally.
async fn rsa_crypt_checked(
    co: &Client,
    name: &str,
    kid: &str,
    alg: EncryptionAlgorithm,
    public: &Public,
    private: Option<&RsaPrivateKey>,
) -> anyhow::Result<()> {
    let Public::Rsa(pk) = public else {
        panic!("{name} is not an RSA key")
    };
    let k_len = pk.size();
    for op in [KeyOp::Decrypt, KeyOp::UnwrapKey] {
        let pt = random(32);
        let ct = pk.encrypt(&mut OsRng, oaep(alg), &pt)?;
        let r = co.crypt(name, None, op, &params(alg, &ct)).await?;
        assert_eq!(r.kid, kid, "{alg} {op:?}: kid of the answer");
        assert_eq!(
            r.value.0, pt,
            "{alg} {op:?}: node opens RustCrypto's ciphertext"
        );
        let mut bad = ct.clone();
        bad[k_len / 2] ^= 0x01;
        assert_code(
            co.crypt(name, None, op, &params(alg, &bad)).await,
            ErrorCode::DecryptionFailed,
        );
    }
    // The other OAEP hash does not open it.
    let other = match alg {
        EncryptionAlgorithm::RsaOaep => EncryptionAlgorithm::RsaOaep256,
        _ => EncryptionAlgorithm::RsaOaep,
    };
    let ct = pk.encrypt(&mut OsRng, oaep(other), b"other hash")?;
    assert_code(
        co.crypt(name, None, KeyOp::Decrypt, &params(alg, &ct))
            .await,
        ErrorCode::DecryptionFailed,
    );

    for (seal, open) in [
        (KeyOp::Encrypt, KeyOp::Decrypt),
        (KeyOp::WrapKey, KeyOp::UnwrapKey),
    ] {
        let pt = random(32);
        let a = co.crypt(name, None, seal, &params(alg, &pt)).await?;
        let b = co.crypt(name, None, seal, &params(alg, &pt)).await?;
        assert_eq!(a.kid, kid);
        assert_eq!(
            a.value.0.len(),
            k_len,
            "{alg} {seal:?}: ciphertext is one modulus long"
        );
        assert!(
            a.iv.is_none() && a.tag.is_none() && a.aad.is_none(),
            "{alg}: no iv/tag/aad"
        );
        assert_ne!(a.value, b.value, "{alg} {seal:?}: OAEP is randomised");
        for c in [&a, &b] {
            let back = co.crypt(name, None, open, &params(alg, &c.value.0)).await?;
            assert_eq!(back.value.0, pt, "{alg}: node opens its own {seal:?}");
            if let Some(sk) = private {
                assert_eq!(
                    sk.decrypt(oaep(alg), &c.value.0)?,
                    pt,
                    "{alg}: RustCrypto opens the node's {seal:?}"
                );
            }
        }
    }
    Ok(())
}

async fn import_rsa_checked(node: &TestNode, co: &Client) -> anyhow::Result<()> {
    use SignatureAlgorithm::*;
    let sk = RsaPrivateKey::new(&mut OsRng, 2048)?;
    let [p, q] = sk.primes() else {
        panic!("two primes")
    };
    let big = |b: &BigUint| Some(B64(b.to_bytes_be()));
    let jwk = JsonWebKey {
        kty: Some(KeyType::Rsa),
        n: big(sk.n()),
        e: big(sk.e()),
        d: big(sk.d()),
        p: big(p),
        q: big(q),
        dp: sk.dp().and_then(big),
        dq: sk.dq().and_then(big),
        qi: sk.crt_coefficient().as_ref().and_then(big),
        ..Default::default()
    };
    let k = co.import_key("imp-rsa", &import_params(jwk)).await?;
    let kid = kid_of(&k);
    version_of(node, "imp-rsa", &kid);
    assert_eq!(k.key.kty, Some(KeyType::RsaHsm));
    assert_public_only(&k.key);
    assert_eq!(
        field(&k.key.n, "n"),
        sk.n().to_bytes_be(),
        "imported modulus"
    );
    assert_eq!(
        field(&k.key.e, "e"),
        sk.e().to_bytes_be(),
        "imported exponent"
    );
    let mine = Public::Rsa(sk.to_public_key());
    for alg in [Rs256, Ps256, Ps384, Rs512] {
        sign_checked(node, co, &kid, alg, MSG, &mine, 256).await?;
    }
    // RS256 is deterministic: the node's signature is the one we make.
    let d = tbs(Rs256, MSG);
    let theirs = co.sign("imp-rsa", None, Rs256, &d).await?;
    assert_eq!(
        theirs.value.0,
        sk.sign(Pkcs1v15Sign::new::<Sha256>(), &d)?,
        "RS256 by the imported key"
    );
    for alg in [
        EncryptionAlgorithm::RsaOaep,
        EncryptionAlgorithm::RsaOaep256,
    ] {
        rsa_crypt_checked(co, "imp-rsa", &kid, alg, &mine, Some(&sk)).await?;
    }
    Ok(())
}

async fn import_ec_checked(node: &TestNode, co: &Client) -> anyhow::Result<()> {
    let sk = p256::ecdsa::SigningKey::random(&mut OsRng);
    let point = sk.verifying_key().to_encoded_point(false);
    let (x, y) = (
        point.x().expect("x").to_vec(),
        point.y().expect("y").to_vec(),
    );
    let jwk = JsonWebKey {
        kty: Some(KeyType::Ec),
        crv: Some(Curve::P256),
        d: Some(B64(sk.to_bytes().to_vec())),
        x: Some(B64(x.clone())),
        y: Some(B64(y.clone())),
        ..Default::default()
    };
    let k = co.import_key("imp-ec", &import_params(jwk.clone())).await?;
    let kid = kid_of(&k);
    version_of(node, "imp-ec", &kid);
    assert_eq!(k.key.kty, Some(KeyType::EcHsm));
    assert_eq!(k.key.crv, Some(Curve::P256));
    assert_public_only(&k.key);
    assert_eq!(
        (field(&k.key.x, "x"), field(&k.key.y, "y")),
        (x, y),
        "imported point"
    );
    let mine = Public::P256(*sk.verifying_key());
    sign_checked(node, co, &kid, SignatureAlgorithm::Es256, MSG, &mine, 64).await?;

    // A private scalar with somebody else's public point is not a key.
    let other = p256::ecdsa::SigningKey::random(&mut OsRng);
    let other_point = other.verifying_key().to_encoded_point(false);
    let bad = JsonWebKey {
        x: Some(B64(other_point.x().expect("x").to_vec())),
        y: Some(B64(other_point.y().expect("y").to_vec())),
        ..jwk
    };
    assert_code(
        co.import_key("imp-ec-bad", &import_params(bad)).await,
        ErrorCode::InvalidKeyMaterial,
    );
    Ok(())
}

async fn import_ed25519_checked(node: &TestNode, co: &Client) -> anyhow::Result<()> {
    use ed25519_dalek::Signer;
    let seed: [u8; 32] = random(32).try_into().expect("32 bytes");
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let x = sk.verifying_key().to_bytes().to_vec();
    let jwk = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::Ed25519),
        d: Some(B64(seed.to_vec())),
        x: Some(B64(x.clone())),
        ..Default::default()
    };
    let k = co.import_key("imp-ed", &import_params(jwk)).await?;
    let kid = kid_of(&k);
    version_of(node, "imp-ed", &kid);
    assert_eq!(k.key.kty, Some(KeyType::OkpHsm));
    assert_eq!(k.key.crv, Some(Curve::Ed25519));
    assert_public_only(&k.key);
    assert_eq!(field(&k.key.x, "x"), x, "imported Ed25519 public key");
    let mine = Public::Ed25519(sk.verifying_key());
    let sig = sign_checked(node, co, &kid, SignatureAlgorithm::EdDsa, MSG, &mine, 64).await?;
    // Ed25519 is deterministic: the node's signature is the one we make.
    assert_eq!(
        sig,
        sk.sign(MSG).to_bytes().to_vec(),
        "EdDSA by the imported key"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Symmetric keys, derivation and the random generator.
// ---------------------------------------------------------------------------

async fn symmetric(node: &TestNode) -> anyhow::Result<()> {
    let co = node.officer().await?;
    let cu = node.user().await?;

    // Created oct keys of every size: no key bytes in the answer; they work
    // on the node (their bytes are unknown, so only round trips here).
    for bits in [128u32, 192, 256, 384, 512] {
        let name = format!("oct{bits}");
        let k = co
            .create_key(&name, &KeyCreateParameters::oct(bits))
            .await?;
        version_of(node, &name, &kid_of(&k));
        assert_eq!(k.key.kty, Some(KeyType::OctHsm));
        assert_public_only(&k.key);
        let ops = k.key.key_ops.clone().unwrap_or_default();
        assert!(
            ops.contains(&KeyOperation::DeriveKey),
            "oct key_ops {ops:?}"
        );
    }
    for (name, alg) in [
        ("oct128", EncryptionAlgorithm::A128Gcm),
        ("oct192", EncryptionAlgorithm::A192Gcm),
        ("oct256", EncryptionAlgorithm::A256Gcm),
    ] {
        let pt = random(64);
        let e = co.encrypt(name, None, alg, &pt, Some(b"aad")).await?;
        let d = co
            .crypt(
                name,
                None,
                KeyOp::Decrypt,
                &gcm_params(alg, &e.value.0, e.iv.clone(), Some(b"aad"), e.tag.clone()),
            )
            .await?;
        assert_eq!(d.value.0, pt, "{alg} round trip on a created key");
        let kw_alg = match alg {
            EncryptionAlgorithm::A128Gcm => EncryptionAlgorithm::A128Kw,
            EncryptionAlgorithm::A192Gcm => EncryptionAlgorithm::A192Kw,
            _ => EncryptionAlgorithm::A256Kw,
        };
        let w = co
            .crypt(name, None, KeyOp::WrapKey, &params(kw_alg, &pt[..32]))
            .await?;
        let u = co
            .crypt(name, None, KeyOp::UnwrapKey, &params(kw_alg, &w.value.0))
            .await?;
        assert_eq!(u.value.0, &pt[..32], "{kw_alg} round trip on a created key");
    }
    let m = co.mac("oct512", None, MacAlgorithm::Hs512, MSG).await?;
    assert_eq!(m.value.0.len(), 64);
    assert!(
        co.verify_mac("oct512", None, MacAlgorithm::Hs512, MSG, &m.value.0)
            .await?
    );

    // Imported keys of known bytes: everything checked against RustCrypto.
    let k128 = random(16);
    let k192 = random(24);
    let k256 = random(32);
    for (name, k) in [("aes128", &k128), ("aes192", &k192), ("aes256", &k256)] {
        let b = co.import_key(name, &import_params(oct_jwk(k))).await?;
        version_of(node, name, &kid_of(&b));
        assert_eq!(
            b.key.kty,
            Some(KeyType::OctHsm),
            "imported oct keys are reported as oct-HSM"
        );
        assert_public_only(&b.key);
    }
    for (name, alg, key) in [
        ("aes128", EncryptionAlgorithm::A128Gcm, &k128),
        ("aes192", EncryptionAlgorithm::A192Gcm, &k192),
        ("aes256", EncryptionAlgorithm::A256Gcm, &k256),
    ] {
        gcm_checked(&co, &cu, name, alg, key).await?;
    }
    assert_code(
        co.encrypt("aes128", None, EncryptionAlgorithm::A256Gcm, b"x", None)
            .await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    assert_code(
        co.encrypt("aes256", None, EncryptionAlgorithm::A128Gcm, b"x", None)
            .await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    assert_code(
        co.encrypt("aes256", None, EncryptionAlgorithm::RsaOaep, b"x", None)
            .await,
        ErrorCode::AlgorithmKeyMismatch,
    );

    for (name, key, kw, kwp) in [
        (
            "aes128",
            &k128,
            EncryptionAlgorithm::A128Kw,
            EncryptionAlgorithm::A128Kwp,
        ),
        (
            "aes192",
            &k192,
            EncryptionAlgorithm::A192Kw,
            EncryptionAlgorithm::A192Kwp,
        ),
        (
            "aes256",
            &k256,
            EncryptionAlgorithm::A256Kw,
            EncryptionAlgorithm::A256Kwp,
        ),
    ] {
        key_wrap_checked(&co, name, key, kw, kwp).await?;
    }
    assert_code(
        co.crypt(
            "aes128",
            None,
            KeyOp::WrapKey,
            &params(EncryptionAlgorithm::A256Kw, &[0u8; 32]),
        )
        .await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    key_wrap_vectors(&co).await?;

    // The Managed HSM spelling of A256KWPAD, sent as raw JSON.
    let data = random(20);
    let aes256 = co.get_key("aes256", None).await?;
    let v = version_of(node, "aes256", &kid_of(&aes256));
    let body =
        serde_json::json!({"alg": "CKM_AES_KEY_WRAP_PAD", "value": hsm_api::b64::encode(&data)});
    let (status, bytes) = co
        .raw(
            http::Method::POST,
            &format!("/keys/aes256/{v}/wrapkey"),
            Some("application/json"),
            serde_json::to_vec(&body)?.into(),
        )
        .await?;
    assert_eq!(
        status,
        http::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let r: hsm_api::KeyOperationResult = serde_json::from_slice(&bytes)?;
    assert_eq!(
        r.value.0,
        aes_kw(&k256, true, &data),
        "CKM_AES_KEY_WRAP_PAD is A256KWPAD"
    );

    // HMAC.
    for (name, alg, len) in [
        ("hmac256", MacAlgorithm::Hs256, 32),
        ("hmac384", MacAlgorithm::Hs384, 48),
        ("hmac512", MacAlgorithm::Hs512, 64),
    ] {
        let key = random(len);
        co.import_key(name, &import_params(oct_jwk(&key))).await?;
        mac_checked(&co, &cu, name, alg, &key).await?;
    }

    derive_ecdh_checked(node, &co, &cu).await?;
    derive_kbkdf_checked(node, &co).await?;

    // The random generator.
    let a = cu.rng(32).await?;
    let b = cu.rng(32).await?;
    assert_eq!((a.len(), b.len()), (32, 32));
    assert_ne!(a, b, "two draws of 32 bytes differ");
    assert_ne!(a, vec![0u8; 32]);
    assert_eq!(co.rng(1).await?.len(), 1);
    assert_eq!(co.rng(128).await?.len(), 128);
    assert_code(co.rng(0).await, ErrorCode::BadParameter);
    assert_code(co.rng(129).await, ErrorCode::BadParameter);
    Ok(())
}

/// AES-GCM on an oct key whose bytes are `key`: the node's output opens
/// with `aes-gcm`, `aes-gcm`'s output opens on the node, and a wrong tag,
/// AAD or IV is refused.
async fn gcm_checked(
    co: &Client,
    cu: &Client,
    name: &str,
    alg: EncryptionAlgorithm,
    key: &[u8],
) -> anyhow::Result<()> {
    let aad: &[u8] = b"header: v1";
    let pt = random(100);

    // Node seals, RustCrypto opens.
    let e = co.encrypt(name, None, alg, &pt, Some(aad)).await?;
    assert_eq!(
        e.kid,
        kid_of(&co.get_key(name, None).await?),
        "{alg}: kid of the answer"
    );
    let iv = e.iv.clone().expect("GCM encrypt returns an iv").0;
    let tag = e.tag.clone().expect("GCM encrypt returns a tag").0;
    assert_eq!(iv.len(), 12, "{alg}: iv length");
    assert_eq!(tag.len(), 16, "{alg}: tag length");
    assert_eq!(
        e.aad.as_ref().map(|a| a.0.as_slice()),
        Some(aad),
        "{alg}: aad echoed"
    );
    assert_eq!(
        e.value.0.len(),
        pt.len(),
        "{alg}: ciphertext without the tag"
    );
    let sealed = [e.value.0.as_slice(), &tag].concat();
    assert_eq!(
        gcm(key, false, &iv, aad, &sealed).expect("aes-gcm opens the node's ciphertext"),
        pt
    );
    // Without AAD, by a crypto user; a fresh iv each time.
    let e2 = cu.encrypt(name, None, alg, &pt, None).await?;
    assert!(e2.aad.is_none(), "{alg}: no aad, none echoed");
    let iv2 = e2.iv.clone().expect("iv").0;
    assert_ne!(iv2, iv, "{alg}: a fresh iv per encryption");
    let sealed2 = [e2.value.0.as_slice(), &e2.tag.clone().expect("tag").0].concat();
    assert_eq!(
        gcm(key, false, &iv2, b"", &sealed2).expect("aes-gcm opens (no aad)"),
        pt
    );
    // An empty plaintext still authenticates.
    let e3 = co.encrypt(name, None, alg, b"", Some(aad)).await?;
    assert!(
        e3.value.0.is_empty(),
        "{alg}: empty plaintext, empty ciphertext"
    );
    let sealed3 = e3.tag.clone().expect("tag").0;
    assert_eq!(
        gcm(key, false, &e3.iv.clone().expect("iv").0, aad, &sealed3).expect("empty"),
        b""
    );

    // RustCrypto seals, the node opens.
    let iv = random(12);
    let sealed = gcm(key, true, &iv, aad, &pt).expect("aes-gcm seals");
    let (ct, tag) = sealed.split_at(pt.len());
    let open = |ct: &[u8], iv: &[u8], aad: Option<&[u8]>, tag: &[u8]| {
        gcm_params(
            alg,
            ct,
            Some(B64(iv.to_vec())),
            aad,
            Some(B64(tag.to_vec())),
        )
    };
    let d = cu
        .crypt(name, None, KeyOp::Decrypt, &open(ct, &iv, Some(aad), tag))
        .await?;
    assert_eq!(d.value.0, pt, "{alg}: node opens aes-gcm's ciphertext");
    let mut bad_tag = tag.to_vec();
    bad_tag[0] ^= 0x80;
    assert_code(
        co.crypt(
            name,
            None,
            KeyOp::Decrypt,
            &open(ct, &iv, Some(aad), &bad_tag),
        )
        .await,
        ErrorCode::DecryptionFailed,
    );
    assert_code(
        co.crypt(
            name,
            None,
            KeyOp::Decrypt,
            &open(ct, &iv, Some(b"header: v2"), tag),
        )
        .await,
        ErrorCode::DecryptionFailed,
    );
    assert_code(
        co.crypt(name, None, KeyOp::Decrypt, &open(ct, &iv, None, tag))
            .await,
        ErrorCode::DecryptionFailed,
    );
    let mut bad_iv = iv.clone();
    bad_iv[11] ^= 0x01;
    assert_code(
        co.crypt(
            name,
            None,
            KeyOp::Decrypt,
            &open(ct, &bad_iv, Some(aad), tag),
        )
        .await,
        ErrorCode::DecryptionFailed,
    );
    let mut bad_ct = ct.to_vec();
    bad_ct[50] ^= 0x01;
    assert_code(
        co.crypt(
            name,
            None,
            KeyOp::Decrypt,
            &open(&bad_ct, &iv, Some(aad), tag),
        )
        .await,
        ErrorCode::DecryptionFailed,
    );
    // The iv is the node's to make on encrypt.
    let with_iv = gcm_params(alg, &pt, Some(B64(iv.clone())), None, None);
    assert_code(
        co.crypt(name, None, KeyOp::Encrypt, &with_iv).await,
        ErrorCode::BadParameter,
    );
    // A decrypt without its tag is a bad request, never a plaintext.
    let no_tag = gcm_params(alg, ct, Some(B64(iv.clone())), Some(aad), None);
    let err = co
        .crypt(name, None, KeyOp::Decrypt, &no_tag)
        .await
        .expect_err("GCM decrypt without a tag");
    assert_eq!(err.status(), Some(400), "{err}");
    Ok(())
}

/// AES-KW (RFC 3394) and AES-KWP (RFC 5649): the node's wrapping equals
/// `aes-kw`'s byte for byte, and the node unwraps `aes-kw`'s.
async fn key_wrap_checked(
    co: &Client,
    name: &str,
    kek: &[u8],
    kw: EncryptionAlgorithm,
    kwp: EncryptionAlgorithm,
) -> anyhow::Result<()> {
    for len in [16usize, 24, 32, 64] {
        let data = random(len);
        let w = co
            .crypt(name, None, KeyOp::WrapKey, &params(kw, &data))
            .await?;
        assert_eq!(
            w.value.0,
            aes_kw(kek, false, &data),
            "{kw} of {len} bytes equals aes-kw's"
        );
        let other = random(len);
        let u = co
            .crypt(
                name,
                None,
                KeyOp::UnwrapKey,
                &params(kw, &aes_kw(kek, false, &other)),
            )
            .await?;
        assert_eq!(u.value.0, other, "{kw}: node unwraps aes-kw's");
    }
    for len in [1usize, 7, 8, 20, 33] {
        let data = random(len);
        let w = co
            .crypt(name, None, KeyOp::WrapKey, &params(kwp, &data))
            .await?;
        assert_eq!(
            w.value.0,
            aes_kw(kek, true, &data),
            "{kwp} of {len} bytes equals aes-kw's"
        );
        let other = random(len);
        let u = co
            .crypt(
                name,
                None,
                KeyOp::UnwrapKey,
                &params(kwp, &aes_kw(kek, true, &other)),
            )
            .await?;
        assert_eq!(u.value.0, other, "{kwp}: node unwraps aes-kw's");
    }
    let mut bad = aes_kw(kek, false, &random(32));
    bad[5] ^= 0x01;
    assert_code(
        co.crypt(name, None, KeyOp::UnwrapKey, &params(kw, &bad))
            .await,
        ErrorCode::DecryptionFailed,
    );
    let mut bad = aes_kw(kek, true, &random(20));
    bad[5] ^= 0x01;
    assert_code(
        co.crypt(name, None, KeyOp::UnwrapKey, &params(kwp, &bad))
            .await,
        ErrorCode::DecryptionFailed,
    );
    // A KW wrapping is not a KWP wrapping.
    let w = aes_kw(kek, false, &random(32));
    assert_code(
        co.crypt(name, None, KeyOp::UnwrapKey, &params(kwp, &w))
            .await,
        ErrorCode::DecryptionFailed,
    );
    Ok(())
}

/// The published vectors of RFC 3394 §4.1 and RFC 5649 §6.
async fn key_wrap_vectors(co: &Client) -> anyhow::Result<()> {
    let h = |s: &str| hex::decode(s).expect("hex");
    let kek = h("000102030405060708090A0B0C0D0E0F");
    let data = h("00112233445566778899AABBCCDDEEFF");
    let want = h("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5");
    assert_eq!(
        aes_kw(&kek, false, &data),
        want,
        "aes-kw agrees with RFC 3394"
    );
    co.import_key("rfc3394", &import_params(oct_jwk(&kek)))
        .await?;
    let w = co
        .crypt(
            "rfc3394",
            None,
            KeyOp::WrapKey,
            &params(EncryptionAlgorithm::A128Kw, &data),
        )
        .await?;
    assert_eq!(w.value.0, want, "RFC 3394 4.1");
    let u = co
        .crypt(
            "rfc3394",
            None,
            KeyOp::UnwrapKey,
            &params(EncryptionAlgorithm::A128Kw, &want),
        )
        .await?;
    assert_eq!(u.value.0, data, "RFC 3394 4.1 unwrap");

    let kek = h("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
    co.import_key("rfc5649", &import_params(oct_jwk(&kek)))
        .await?;
    for (data, want) in [
        (
            "c37b7e6492584340bed12207808941155068f738",
            "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a",
        ),
        ("466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"),
    ] {
        let (data, want) = (h(data), h(want));
        assert_eq!(
            aes_kw(&kek, true, &data),
            want,
            "aes-kw agrees with RFC 5649"
        );
        let w = co
            .crypt(
                "rfc5649",
                None,
                KeyOp::WrapKey,
                &params(EncryptionAlgorithm::A192Kwp, &data),
            )
            .await?;
        assert_eq!(w.value.0, want, "RFC 5649 vector");
        let u = co
            .crypt(
                "rfc5649",
                None,
                KeyOp::UnwrapKey,
                &params(EncryptionAlgorithm::A192Kwp, &want),
            )
            .await?;
        assert_eq!(u.value.0, data, "RFC 5649 unwrap");
    }
    Ok(())
}

async fn mac_checked(
    co: &Client,
    cu: &Client,
    name: &str,
    alg: MacAlgorithm,
    key: &[u8],
) -> anyhow::Result<()> {
    for data in [MSG.to_vec(), Vec::new(), random(1000)] {
        let r = co.mac(name, None, alg, &data).await?;
        assert_eq!(
            r.kid,
            kid_of(&co.get_key(name, None).await?),
            "{alg}: kid of the answer"
        );
        assert_eq!(r.value.0.len(), alg.tag_len());
        assert_eq!(
            r.value.0,
            hmac(alg, key, &[data.as_slice()]),
            "{alg} over {} bytes equals RustCrypto's",
            data.len()
        );
        assert!(
            cu.verify_mac(name, None, alg, &data, &r.value.0).await?,
            "{alg}: verifymac of the good tag"
        );
        let mut bad = r.value.0.clone();
        bad[0] ^= 0x01;
        assert!(
            !cu.verify_mac(name, None, alg, &data, &bad).await?,
            "{alg}: verifymac of a wrong tag"
        );
        assert!(
            !cu.verify_mac(name, None, alg, b"other data", &r.value.0)
                .await?,
            "{alg}: verifymac of other data"
        );
        assert!(
            !cu.verify_mac(name, None, alg, &data, &r.value.0[..16])
                .await?,
            "{alg}: verifymac of a truncated tag"
        );
    }
    Ok(())
}

async fn derive_ecdh_checked(node: &TestNode, co: &Client, cu: &Client) -> anyhow::Result<()> {
    let info: &[u8] = b"ecdh-label\x00ecdh-context\x00\x00\x01\x00";

    // X25519.
    let x = co
        .create_key("x25519", &KeyCreateParameters::okp(Curve::X25519))
        .await?;
    assert_eq!(x.key.kty, Some(KeyType::OkpHsm));
    assert_eq!(x.key.crv, Some(Curve::X25519));
    assert_public_only(&x.key);
    assert_eq!(
        x.key.key_ops,
        Some(vec![KeyOperation::DeriveKey]),
        "X25519 keys only derive"
    );
    let node_x: [u8; 32] = field(&x.key.x, "x")
        .try_into()
        .expect("X25519 x is 32 bytes");
    let mine = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(random(32)).expect("32"));
    let my_pub = x25519_dalek::PublicKey::from(&mine);
    let shared = mine
        .diffie_hellman(&x25519_dalek::PublicKey::from(node_x))
        .to_bytes()
        .to_vec();
    let peer = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::X25519),
        x: Some(B64(my_pub.as_bytes().to_vec())),
        ..Default::default()
    };
    derived_checked(
        node,
        co,
        "x25519",
        derive_params(DeriveAlgorithm::Ecdh, "x25519-raw", Some(&peer), None, None),
        &shared,
    )
    .await?;
    let via_kdf = kbkdf(MacAlgorithm::Hs256, &shared, info, 32);
    derived_checked(
        node,
        co,
        "x25519",
        derive_params(
            DeriveAlgorithm::Ecdh,
            "x25519-kdf",
            Some(&peer),
            Some(info),
            None,
        ),
        &via_kdf,
    )
    .await?;
    // Without `info` the key is the raw secret, so its size is fixed.
    assert_code(
        co.derive(
            "x25519",
            None,
            &derive_params(
                DeriveAlgorithm::Ecdh,
                "x25519-128",
                Some(&peer),
                None,
                Some(128),
            ),
        )
        .await,
        ErrorCode::BadParameter,
    );
    assert_code(
        co.derive(
            "x25519",
            None,
            &derive_params(DeriveAlgorithm::Ecdh, "x25519-nopeer", None, None, None),
        )
        .await,
        ErrorCode::BadParameter,
    );
    // Deriving makes a key: a crypto officer's business.
    assert_code(
        cu.derive(
            "x25519",
            None,
            &derive_params(
                DeriveAlgorithm::Ecdh,
                "x25519-user",
                Some(&peer),
                None,
                None,
            ),
        )
        .await,
        ErrorCode::Forbidden,
    );
    assert_code(
        co.get_key("x25519-user", None).await,
        ErrorCode::KeyNotFound,
    );

    // P-256 (32-byte secret) and P-384 (48-byte secret).
    let p256 = co
        .create_key("p256-ecdh", &KeyCreateParameters::ec(Curve::P256))
        .await?;
    let node_pk = p256::PublicKey::from_sec1_bytes(&ec_point(&p256.key))?;
    let mine = p256::SecretKey::random(&mut OsRng);
    let shared = p256::ecdh::diffie_hellman(mine.to_nonzero_scalar(), node_pk.as_affine());
    let shared = shared.raw_secret_bytes().to_vec();
    let peer = ec_peer(
        Curve::P256,
        mine.public_key().to_encoded_point(false).as_bytes(),
    );
    derived_checked(
        node,
        co,
        "p256-ecdh",
        derive_params(DeriveAlgorithm::Ecdh, "p256-raw", Some(&peer), None, None),
        &shared,
    )
    .await?;
    let via_kdf = kbkdf(MacAlgorithm::Hs256, &shared, info, 24);
    derived_checked(
        node,
        co,
        "p256-ecdh",
        derive_params(
            DeriveAlgorithm::Ecdh,
            "p256-kdf",
            Some(&peer),
            Some(info),
            Some(192),
        ),
        &via_kdf,
    )
    .await?;
    // A peer on another curve is refused.
    let x_peer = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::X25519),
        x: Some(B64(vec![9u8; 32])),
        ..Default::default()
    };
    let err = co
        .derive(
            "p256-ecdh",
            None,
            &derive_params(
                DeriveAlgorithm::Ecdh,
                "p256-mixed",
                Some(&x_peer),
                None,
                None,
            ),
        )
        .await
        .expect_err("ECDH of a P-256 key with an X25519 peer");
    assert_eq!(err.status(), Some(400), "{err}");
    assert_code(co.get_key("p256-mixed", None).await, ErrorCode::KeyNotFound);

    let p384 = co
        .create_key("p384-ecdh", &KeyCreateParameters::ec(Curve::P384))
        .await?;
    let node_pk = p384::PublicKey::from_sec1_bytes(&ec_point(&p384.key))?;
    let mine = p384::SecretKey::random(&mut OsRng);
    let shared = p384::ecdh::diffie_hellman(mine.to_nonzero_scalar(), node_pk.as_affine());
    let shared = shared.raw_secret_bytes().to_vec();
    let peer = ec_peer(
        Curve::P384,
        mine.public_key().to_encoded_point(false).as_bytes(),
    );
    derived_checked(
        node,
        co,
        "p384-ecdh",
        derive_params(
            DeriveAlgorithm::Ecdh,
            "p384-raw",
            Some(&peer),
            None,
            Some(384),
        ),
        &shared,
    )
    .await?;

    // A key whose key_ops lack deriveKey does not derive.
    let ed = co
        .create_key("ed-no-derive", &KeyCreateParameters::okp(Curve::Ed25519))
        .await?;
    assert!(!ed
        .key
        .key_ops
        .clone()
        .unwrap_or_default()
        .contains(&KeyOperation::DeriveKey));
    let ed_peer = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::X25519),
        x: Some(B64(my_pub.as_bytes().to_vec())),
        ..Default::default()
    };
    assert_code(
        co.derive(
            "ed-no-derive",
            None,
            &derive_params(
                DeriveAlgorithm::Ecdh,
                "ed-derived",
                Some(&ed_peer),
                None,
                None,
            ),
        )
        .await,
        ErrorCode::OperationNotPermitted,
    );
    // MAC is for oct keys.
    assert_code(
        co.mac("p256-ecdh", None, MacAlgorithm::Hs256, MSG).await,
        ErrorCode::AlgorithmKeyMismatch,
    );
    Ok(())
}

async fn derive_kbkdf_checked(node: &TestNode, co: &Client) -> anyhow::Result<()> {
    let kin = random(32);
    co.import_key("kdk", &import_params(oct_jwk(&kin))).await?;
    let info: &[u8] = b"kbkdf-label\x00kbkdf-context\x00\x00\x02\x00";
    for (alg, prf, bits, target) in [
        (
            DeriveAlgorithm::KbkdfHmacSha256,
            MacAlgorithm::Hs256,
            256u32,
            "kdf-sha256-256",
        ),
        // Two blocks: the counter runs 1, 2.
        (
            DeriveAlgorithm::KbkdfHmacSha256,
            MacAlgorithm::Hs256,
            512,
            "kdf-sha256-512",
        ),
        // Truncated block.
        (
            DeriveAlgorithm::KbkdfHmacSha256,
            MacAlgorithm::Hs256,
            192,
            "kdf-sha256-192",
        ),
        (
            DeriveAlgorithm::KbkdfHmacSha384,
            MacAlgorithm::Hs384,
            384,
            "kdf-sha384-384",
        ),
        (
            DeriveAlgorithm::KbkdfHmacSha512,
            MacAlgorithm::Hs512,
            512,
            "kdf-sha512-512",
        ),
        (
            DeriveAlgorithm::KbkdfHmacSha512,
            MacAlgorithm::Hs512,
            128,
            "kdf-sha512-128",
        ),
    ] {
        let want = kbkdf(prf, &kin, info, (bits / 8) as usize);
        derived_checked(
            node,
            co,
            "kdk",
            derive_params(alg, target, None, Some(info), Some(bits)),
            &want,
        )
        .await?;
    }
    // The default size is 256 bits; other info, other key.
    let want = kbkdf(MacAlgorithm::Hs256, &kin, b"other", 32);
    derived_checked(
        node,
        co,
        "kdk",
        derive_params(
            DeriveAlgorithm::KbkdfHmacSha256,
            "kdf-default",
            None,
            Some(b"other"),
            None,
        ),
        &want,
    )
    .await?;
    assert_code(
        co.derive(
            "kdk",
            None,
            &derive_params(
                DeriveAlgorithm::KbkdfHmacSha256,
                "kdf-bad-size",
                None,
                Some(info),
                Some(100),
            ),
        )
        .await,
        ErrorCode::BadParameter,
    );
    let peer = JsonWebKey {
        kty: Some(KeyType::Okp),
        crv: Some(Curve::X25519),
        x: Some(B64(vec![9u8; 32])),
        ..Default::default()
    };
    assert_code(
        co.derive(
            "kdk",
            None,
            &derive_params(
                DeriveAlgorithm::KbkdfHmacSha256,
                "kdf-peer",
                Some(&peer),
                Some(info),
                None,
            ),
        )
        .await,
        ErrorCode::BadParameter,
    );
    assert_code(
        co.derive(
            "kdk",
            None,
            &derive_params(
                DeriveAlgorithm::KbkdfHmacSha256,
                "kdk",
                None,
                Some(info),
                None,
            ),
        )
        .await,
        ErrorCode::BadParameter,
    );
    Ok(())
}

/// Derives from `from` and checks the new key holds exactly `want`: by an
/// HMAC for 256/384/512-bit keys, by AES-GCM for 128/192-bit ones.
async fn derived_checked(
    node: &TestNode,
    co: &Client,
    from: &str,
    p: KeyDeriveParameters,
    want: &[u8],
) -> anyhow::Result<()> {
    let target = p.target.clone();
    let b = co.derive(from, None, &p).await?;
    version_of(node, &target, &kid_of(&b));
    assert_eq!(
        b.key.kty,
        Some(KeyType::OctHsm),
        "{target}: derived keys are oct"
    );
    assert_public_only(&b.key);
    assert_eq!(
        co.get_key(&target, None).await?,
        b,
        "{target}: stored as answered"
    );
    let data: &[u8] = b"derived key check";
    match want.len() {
        32 | 48 | 64 => {
            let alg = match want.len() {
                32 => MacAlgorithm::Hs256,
                48 => MacAlgorithm::Hs384,
                _ => MacAlgorithm::Hs512,
            };
            let m = co.mac(&target, None, alg, data).await?;
            assert_eq!(
                m.value.0,
                hmac(alg, want, &[data]),
                "{target}: the node's key is the one derived locally"
            );
        }
        16 | 24 => {
            let alg = if want.len() == 16 {
                EncryptionAlgorithm::A128Gcm
            } else {
                EncryptionAlgorithm::A192Gcm
            };
            let e = co.encrypt(&target, None, alg, data, None).await?;
            let sealed = [e.value.0.as_slice(), &e.tag.clone().expect("tag").0].concat();
            let iv = e.iv.clone().expect("iv").0;
            let opened = gcm(want, false, &iv, b"", &sealed);
            assert_eq!(
                opened.ok(),
                Some(data.to_vec()),
                "{target}: the node's key is the one derived locally"
            );
        }
        n => panic!("no check for a {n}-byte key"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Key management.
// ---------------------------------------------------------------------------

async fn management(node: &TestNode) -> anyhow::Result<()> {
    use SignatureAlgorithm::*;
    let co = node.officer().await?;
    let cu = node.user().await?;
    let base = node.base_url();

    // List paging: 30 keys in pages of 5 reach every key exactly once.
    let mut live = BTreeSet::new();
    for i in 0..30 {
        let name = format!("page-{i:02}");
        co.create_key(&name, &KeyCreateParameters::oct(128)).await?;
        live.insert(name);
    }
    let mut pages = vec![co.list_keys_page(None, Some(5)).await?];
    while let Some(link) = pages.last().and_then(|p| p.next_link.clone()) {
        assert!(
            link.starts_with(&format!("{base}/keys?")),
            "nextLink {link}"
        );
        assert!(pages.len() < 10, "paging does not end");
        pages.push(co.list_keys_page(Some(&link), None).await?);
    }
    let sizes: Vec<usize> = pages.iter().map(|p| p.value.len()).collect();
    assert_eq!(sizes, [5; 6], "30 keys in pages of 5");
    let paged: Vec<String> = pages
        .iter()
        .flat_map(|p| p.value.iter())
        .map(|i| listed_name(&base, &i.kid))
        .collect();
    assert_eq!(paged.len(), 30);
    assert_eq!(
        paged.iter().cloned().collect::<BTreeSet<_>>(),
        live,
        "pages hold every key once"
    );
    for item in pages.iter().flat_map(|p| p.value.iter()) {
        assert_eq!(item.attributes.enabled, Some(true));
    }
    let first = co.list_keys_page(None, None).await?;
    assert_eq!(first.value.len(), 25, "the default page is 25");
    assert!(first.next_link.is_some(), "more than one default page");
    assert_eq!(
        names(&base, &co.list_keys().await?),
        live,
        "list_keys follows nextLink"
    );
    assert_code(
        co.list_keys_page(None, Some(26)).await,
        ErrorCode::BadParameter,
    );
    assert_eq!(
        names(&base, &cu.list_keys().await?),
        live,
        "a crypto user lists keys"
    );

    // Get, current and by version.
    let tags: Tags = BTreeMap::from([
        ("team".into(), "core".into()),
        ("env".into(), "test".into()),
    ]);
    let created = co
        .create_key(
            "life",
            &KeyCreateParameters {
                tags: Some(tags.clone()),
                ..KeyCreateParameters::rsa(2048)
            },
        )
        .await?;
    live.insert("life".into());
    let kid1 = kid_of(&created);
    let v1 = version_of(node, "life", &kid1);
    assert_eq!(created.tags, Some(tags.clone()));
    let pk1 = Public::from_jwk(&created.key);
    assert_eq!(
        co.get_key("life", None).await?,
        created,
        "get of the current version"
    );
    assert_eq!(
        co.get_key("life", Some(&v1)).await?,
        created,
        "get by version"
    );
    assert_eq!(
        cu.get_key("life", None).await?,
        created,
        "a crypto user reads keys"
    );
    assert_code(
        co.get_key("life", Some("0123456789abcdef0123456789abcdef"))
            .await,
        ErrorCode::KeyNotFound,
    );
    assert_code(
        co.get_key("life", Some("not-a-version")).await,
        ErrorCode::KeyNotFound,
    );
    assert_code(
        co.get_key("no-such-key", None).await,
        ErrorCode::KeyNotFound,
    );
    assert_code(
        co.sign("no-such-key", None, Rs256, &tbs(Rs256, MSG)).await,
        ErrorCode::KeyNotFound,
    );

    // Rotate: a new version with new material; the old one still works.
    let rotated = co.rotate_key("life").await?;
    let kid2 = kid_of(&rotated);
    let v2 = version_of(node, "life", &kid2);
    assert_ne!(v1, v2);
    assert_ne!(rotated.key.n, created.key.n, "rotation makes new material");
    assert_eq!(rotated.key.e, created.key.e);
    assert_eq!(rotated.key.kty, Some(KeyType::RsaHsm));
    assert_eq!(
        rotated.key.key_ops, created.key.key_ops,
        "rotation keeps key_ops"
    );
    assert_eq!(rotated.tags, Some(tags.clone()), "rotation keeps tags");
    let pk2 = Public::from_jwk(&rotated.key);
    assert_eq!(
        co.get_key("life", None).await?,
        rotated,
        "the current version is the new one"
    );
    assert_eq!(
        co.get_key("life", Some(&v1)).await?,
        created,
        "the old version is unchanged"
    );
    assert_eq!(
        version_set(&co, "life").await?,
        BTreeSet::from([kid1.clone(), kid2.clone()])
    );
    let d = tbs(Rs256, MSG);
    let s1 = co.sign("life", Some(&v1), Rs256, &d).await?;
    assert_eq!(s1.kid, kid1);
    assert!(
        pk1.verifies(Rs256, &d, &s1.value.0),
        "the old version signs with the old key"
    );
    assert!(!pk2.verifies(Rs256, &d, &s1.value.0));
    assert!(co.verify("life", Some(&v1), Rs256, &d, &s1.value.0).await?);
    assert!(
        !co.verify("life", None, Rs256, &d, &s1.value.0).await?,
        "the new version is another key"
    );
    let s2 = co.sign("life", None, Ps256, &tbs(Ps256, MSG)).await?;
    assert_eq!(s2.kid, kid2);
    assert!(pk2.verifies(Ps256, &tbs(Ps256, MSG), &s2.value.0));
    assert_code(co.rotate_key("no-such-key").await, ErrorCode::KeyNotFound);

    // Update: disable and re-enable the current version; tags are replaced.
    let off = KeyAttributes {
        enabled: Some(false),
        ..Default::default()
    };
    let on = KeyAttributes {
        enabled: Some(true),
        ..Default::default()
    };
    let u = co
        .update_key("life", None, &update(Some(off.clone()), None, None))
        .await?;
    assert_eq!(kid_of(&u), kid2);
    assert_eq!(u.attributes.enabled, Some(false));
    assert_eq!(u.key.n, rotated.key.n);
    assert_eq!(
        co.get_key("life", None).await?.attributes.enabled,
        Some(false)
    );
    assert_code(
        co.sign("life", None, Rs256, &d).await,
        ErrorCode::KeyDisabled,
    );
    assert_code(
        cu.sign("life", Some(&v2), Rs256, &d).await,
        ErrorCode::KeyDisabled,
    );
    let still = co.sign("life", Some(&v1), Rs256, &d).await?;
    assert!(
        pk1.verifies(Rs256, &d, &still.value.0),
        "disabling v2 leaves v1 usable"
    );
    let u = co
        .update_key("life", None, &update(Some(on.clone()), None, None))
        .await?;
    assert_eq!(u.attributes.enabled, Some(true));
    let s = co.sign("life", None, Rs256, &d).await?;
    assert!(pk2.verifies(Rs256, &d, &s.value.0), "re-enabled");
    let new_tags: Tags = BTreeMap::from([("owner".into(), "ops".into())]);
    let u = co
        .update_key("life", None, &update(None, Some(new_tags.clone()), None))
        .await?;
    assert_eq!(
        u.tags,
        Some(new_tags.clone()),
        "tags are replaced, not merged"
    );
    assert_eq!(co.get_key("life", None).await?.tags, Some(new_tags.clone()));
    let u = co
        .update_key("life", None, &update(Some(on.clone()), None, None))
        .await?;
    assert_eq!(
        u.tags,
        Some(new_tags.clone()),
        "an update without tags keeps them"
    );
    assert_eq!(
        co.get_key("life", Some(&v1)).await?.tags,
        Some(tags.clone()),
        "v1 keeps its own tags"
    );
    // key_ops narrow what a key does.
    let u = co
        .update_key(
            "life",
            None,
            &update(None, None, Some(vec![KeyOperation::Verify])),
        )
        .await?;
    assert_eq!(u.key.key_ops, Some(vec![KeyOperation::Verify]));
    assert_code(
        co.sign("life", None, Rs256, &d).await,
        ErrorCode::OperationNotPermitted,
    );
    assert!(co.verify("life", None, Rs256, &d, &s.value.0).await?);
    let ops = vec![KeyOperation::Sign, KeyOperation::Verify];
    let u = co
        .update_key("life", None, &update(None, None, Some(ops.clone())))
        .await?;
    assert_eq!(u.key.key_ops, Some(ops));
    co.sign("life", None, Rs256, &d).await?;
    assert_code(
        cu.update_key("life", None, &update(Some(off), None, None))
            .await,
        ErrorCode::Forbidden,
    );
    assert_code(cu.delete_key("life").await, ErrorCode::Forbidden);
    assert_code(cu.rotate_key("life").await, ErrorCode::Forbidden);
    assert_code(cu.backup_key("life").await, ErrorCode::Forbidden);
    let current = co.get_key("life", None).await?;

    // Delete: gone from use and from the list, kept as deleted, name held.
    let del = co.delete_key("life").await?;
    live.remove("life");
    assert_eq!(del.bundle.key.kid.as_deref(), Some(kid2.as_str()));
    assert_eq!(del.bundle.key.n, rotated.key.n);
    assert_eq!(
        del.recovery_id.as_deref(),
        Some(format!("{base}/deletedkeys/life").as_str())
    );
    let deleted_at = del.deleted_date.expect("deletedDate");
    let days = del
        .bundle
        .attributes
        .recoverable_days
        .expect("recoverableDays");
    assert_eq!(
        del.scheduled_purge_date,
        Some(deleted_at + days * 86_400),
        "purge date = deleted + recoverable days"
    );
    assert_code(co.get_key("life", None).await, ErrorCode::KeyNotFound);
    assert_code(co.get_key("life", Some(&v1)).await, ErrorCode::KeyNotFound);
    assert_code(
        co.sign("life", None, Rs256, &d).await,
        ErrorCode::KeyNotFound,
    );
    assert_code(co.list_versions("life").await, ErrorCode::KeyNotFound);
    assert_code(co.delete_key("life").await, ErrorCode::KeyNotFound);
    let got = co.get_deleted("life").await?;
    assert_eq!(got, del, "get_deleted answers what delete did");
    let listed = co.list_deleted().await?;
    assert_eq!(listed.len(), 1, "one deleted key");
    assert_eq!(listed[0].item.kid, format!("{base}/keys/life"));
    assert_eq!(listed[0].recovery_id, del.recovery_id);
    assert_eq!(listed[0].deleted_date, Some(deleted_at));
    assert_eq!(
        names(&base, &co.list_keys().await?),
        live,
        "a deleted key is not listed"
    );
    assert_code(
        co.create_key("life", &KeyCreateParameters::ec(Curve::P256))
            .await,
        ErrorCode::Conflict,
    );
    assert_code(
        co.import_key("life", &import_params(oct_jwk(&[1u8; 32])))
            .await,
        ErrorCode::Conflict,
    );

    // Recover: usable again, both versions, same material.
    let rec = co.recover_deleted("life").await?;
    live.insert("life".into());
    assert_eq!(rec, current, "recover answers the key as it was");
    assert_eq!(co.get_key("life", None).await?, current);
    assert_eq!(
        version_set(&co, "life").await?,
        BTreeSet::from([kid1.clone(), kid2.clone()])
    );
    let s = co.sign("life", Some(&v1), Rs256, &d).await?;
    assert!(pk1.verifies(Rs256, &d, &s.value.0), "recovered v1 signs");
    let s = co.sign("life", None, Rs256, &d).await?;
    assert!(pk2.verifies(Rs256, &d, &s.value.0), "recovered v2 signs");
    assert_code(co.get_deleted("life").await, ErrorCode::DeletedKeyNotFound);
    assert_code(
        co.recover_deleted("life").await,
        ErrorCode::DeletedKeyNotFound,
    );
    assert_code(
        co.purge_deleted("life").await,
        ErrorCode::DeletedKeyNotFound,
    );
    assert!(co.list_deleted().await?.is_empty());

    // Backup, then purge, then restore: the original material, versions,
    // tags and kids come back.
    let blob = co.backup_key("life").await?;
    assert!(!blob.is_empty());
    assert_code(co.restore_key(&blob).await, ErrorCode::Conflict);
    let mut corrupt = blob.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x01;
    assert_code(co.restore_key(&corrupt).await, ErrorCode::InvalidBackup);
    assert_code(
        co.restore_key(b"not a backup").await,
        ErrorCode::InvalidBackup,
    );
    co.delete_key("life").await?;
    live.remove("life");
    assert_code(co.restore_key(&blob).await, ErrorCode::Conflict);
    co.purge_deleted("life").await?;
    assert_code(co.get_deleted("life").await, ErrorCode::DeletedKeyNotFound);
    assert_code(co.get_key("life", None).await, ErrorCode::KeyNotFound);
    assert_code(
        co.purge_deleted("life").await,
        ErrorCode::DeletedKeyNotFound,
    );
    assert!(co.list_deleted().await?.is_empty());
    let restored = co.restore_key(&blob).await?;
    live.insert("life".into());
    assert_eq!(restored, current, "the restored key is the backed-up one");
    assert_eq!(
        version_set(&co, "life").await?,
        BTreeSet::from([kid1.clone(), kid2.clone()])
    );
    assert_eq!(co.get_key("life", Some(&v1)).await?.key.n, created.key.n);
    assert_eq!(
        co.get_key("life", Some(&v1)).await?.tags,
        Some(tags.clone())
    );
    for (v, alg, public) in [(&v1, Rs256, &pk1), (&v2, Ps256, &pk2)] {
        let dg = tbs(alg, MSG);
        let s = co.sign("life", Some(v), alg, &dg).await?;
        assert!(
            public.verifies(alg, &dg, &s.value.0),
            "restored {v} verifies with the ORIGINAL public key"
        );
    }
    assert_code(co.restore_key(&blob).await, ErrorCode::Conflict);

    // Delete + purge frees the name for a new key.
    let gone = co
        .create_key("gone", &KeyCreateParameters::ec(Curve::P256))
        .await?;
    co.delete_key("gone").await?;
    co.purge_deleted("gone").await?;
    assert_code(co.get_deleted("gone").await, ErrorCode::DeletedKeyNotFound);
    assert_code(co.get_key("gone", None).await, ErrorCode::KeyNotFound);
    assert!(co.list_deleted().await?.is_empty());
    let again = co
        .create_key("gone", &KeyCreateParameters::ec(Curve::P256))
        .await?;
    live.insert("gone".into());
    assert_ne!(kid_of(&again), kid_of(&gone));
    assert_ne!(again.key.x, gone.key.x, "a new key, not the purged one");
    assert_eq!(
        version_set(&co, "gone").await?,
        BTreeSet::from([kid_of(&again)]),
        "no version survives a purge"
    );

    // A create under a live name adds a version.
    let v3 = co
        .create_key("gone", &KeyCreateParameters::ec(Curve::P256))
        .await?;
    assert_eq!(
        version_set(&co, "gone").await?,
        BTreeSet::from([kid_of(&again), kid_of(&v3)])
    );

    assert_eq!(names(&base, &co.list_keys().await?), live, "the final list");
    Ok(())
}

fn update(
    attributes: Option<KeyAttributes>,
    tags: Option<Tags>,
    key_ops: Option<Vec<KeyOperation>>,
) -> KeyUpdateParameters {
    KeyUpdateParameters {
        key_ops,
        attributes,
        tags,
        release_policy: None,
    }
}

/// The name in a list item's kid (`{base}/keys/{name}`, no version).
#[track_caller]
fn listed_name(base: &str, kid: &str) -> String {
    let prefix = format!("{base}/keys/");
    let name = kid
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("list kid {kid} is not under {prefix}"));
    assert!(
        hsm_api::is_valid_key_name(name),
        "list kid {kid} names no key"
    );
    name.to_string()
}

fn names(base: &str, items: &[hsm_api::KeyItem]) -> BTreeSet<String> {
    let v: Vec<String> = items.iter().map(|i| listed_name(base, &i.kid)).collect();
    let set: BTreeSet<String> = v.iter().cloned().collect();
    assert_eq!(set.len(), v.len(), "a key is listed twice: {v:?}");
    set
}

async fn version_set(co: &Client, name: &str) -> anyhow::Result<BTreeSet<String>> {
    let items = co.list_versions(name).await?;
    let set: BTreeSet<String> = items.iter().map(|i| i.kid.clone()).collect();
    assert_eq!(set.len(), items.len(), "a version is listed twice");
    Ok(set)
}

// ---------------------------------------------------------------------------
// Shared checks and independent implementations.
// ---------------------------------------------------------------------------

/// Signs `msg` (its digest; the message itself for EdDSA) with the version
/// `kid` names, checks the signature with RustCrypto, that the node verifies
/// it, and that neither accepts a tampered signature or another message.
async fn sign_checked(
    node: &TestNode,
    c: &Client,
    kid: &str,
    alg: SignatureAlgorithm,
    msg: &[u8],
    public: &Public,
    sig_len: usize,
) -> anyhow::Result<Vec<u8>> {
    let name = kid_name(node, kid);
    let version = version_of(node, &name, kid);
    let data = tbs(alg, msg);
    let r = c.sign(&name, Some(&version), alg, &data).await?;
    assert_eq!(r.kid, kid, "{alg}: kid of the answer");
    let sig = r.value.0;
    assert_eq!(sig.len(), sig_len, "{alg}: signature length");
    assert!(
        public.verifies(alg, &data, &sig),
        "{alg}: RustCrypto rejects the node's signature by {name}"
    );
    assert!(
        c.verify(&name, Some(&version), alg, &data, &sig).await?,
        "{alg}: the node rejects its own signature"
    );
    assert!(
        c.verify(&name, None, alg, &data, &sig).await?,
        "{alg}: verify on the current version"
    );
    let mut bad = sig.clone();
    bad[sig_len / 2 - 1] ^= 0x01;
    assert!(
        !public.verifies(alg, &data, &bad),
        "{alg}: RustCrypto accepts a tampered signature"
    );
    assert!(
        !c.verify(&name, Some(&version), alg, &data, &bad).await?,
        "{alg}: node accepts a tampered signature"
    );
    let other = tbs(alg, b"another message");
    assert!(
        !c.verify(&name, Some(&version), alg, &other, &sig).await?,
        "{alg}: node accepts another message"
    );
    Ok(sig)
}

/// A public key from a JWK, for verifying signatures independently.
enum Public {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Public {
    #[track_caller]
    fn from_jwk(jwk: &JsonWebKey) -> Public {
        match jwk.kty.map(KeyType::family) {
            Some(KeyFamily::Rsa) => {
                let n = BigUint::from_bytes_be(&field(&jwk.n, "n"));
                let e = BigUint::from_bytes_be(&field(&jwk.e, "e"));
                Public::Rsa(RsaPublicKey::new(n, e).expect("an RSA public key"))
            }
            Some(KeyFamily::Ec) => {
                let sec1 = ec_point(jwk);
                match jwk.crv {
                    Some(Curve::P256) => Public::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-256 point"),
                    ),
                    Some(Curve::P384) => Public::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-384 point"),
                    ),
                    Some(Curve::P521) => Public::P521(
                        p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-521 point"),
                    ),
                    other => panic!("EC key on {other:?}"),
                }
            }
            Some(KeyFamily::Okp) => {
                assert_eq!(jwk.crv, Some(Curve::Ed25519), "only Ed25519 keys sign");
                let x: [u8; 32] = field(&jwk.x, "x")
                    .try_into()
                    .expect("Ed25519 x is 32 bytes");
                Public::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x).expect("an Ed25519 point"),
                )
            }
            other => panic!("no public key for kty {other:?}"),
        }
    }

    /// Whether `sig` is a valid signature over `data` (the digest; the
    /// message for EdDSA).
    fn verifies(&self, alg: SignatureAlgorithm, data: &[u8], sig: &[u8]) -> bool {
        use SignatureAlgorithm::*;
        match (self, alg) {
            (Public::Rsa(k), Rs256) => k.verify(Pkcs1v15Sign::new::<Sha256>(), data, sig).is_ok(),
            (Public::Rsa(k), Rs384) => k.verify(Pkcs1v15Sign::new::<Sha384>(), data, sig).is_ok(),
            (Public::Rsa(k), Rs512) => k.verify(Pkcs1v15Sign::new::<Sha512>(), data, sig).is_ok(),
            // PS*: salt as long as the digest, MGF1 with the same hash.
            (Public::Rsa(k), Ps256) => k
                .verify(Pss::new_with_salt::<Sha256>(32), data, sig)
                .is_ok(),
            (Public::Rsa(k), Ps384) => k
                .verify(Pss::new_with_salt::<Sha384>(48), data, sig)
                .is_ok(),
            (Public::Rsa(k), Ps512) => k
                .verify(Pss::new_with_salt::<Sha512>(64), data, sig)
                .is_ok(),
            (Public::P256(k), Es256) => p256::ecdsa::Signature::from_slice(sig)
                .and_then(|s| k.verify_prehash(data, &s))
                .is_ok(),
            (Public::P384(k), Es384) => p384::ecdsa::Signature::from_slice(sig)
                .and_then(|s| k.verify_prehash(data, &s))
                .is_ok(),
            (Public::P521(k), Es512) => p521::ecdsa::Signature::from_slice(sig)
                .and_then(|s| k.verify_prehash(data, &s))
                .is_ok(),
            (Public::Ed25519(k), EdDsa) => ed25519_dalek::Signature::from_slice(sig)
                .and_then(|s| k.verify_strict(data, &s))
                .is_ok(),
            _ => panic!("{alg} does not go with this key"),
        }
    }
}

/// What the node is asked to sign: the digest, or the message for EdDSA.
fn tbs(alg: SignatureAlgorithm, msg: &[u8]) -> Vec<u8> {
    match alg.digest_len() {
        Some(32) => Sha256::digest(msg).to_vec(),
        Some(48) => Sha384::digest(msg).to_vec(),
        Some(64) => Sha512::digest(msg).to_vec(),
        Some(n) => panic!("no {n}-byte digest"),
        None => msg.to_vec(),
    }
}

fn oaep(alg: EncryptionAlgorithm) -> Oaep {
    match alg {
        // RSA-OAEP is SHA-1 for the label hash and MGF1 alike.
        EncryptionAlgorithm::RsaOaep => Oaep::new::<sha1::Sha1>(),
        EncryptionAlgorithm::RsaOaep256 => Oaep::new::<Sha256>(),
        other => panic!("{other} is not RSA"),
    }
}

type Aes192Gcm = aes_gcm::AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

/// AES-GCM with a 96-bit iv; sealed text is ciphertext ‖ tag.
fn gcm(
    key: &[u8],
    seal: bool,
    iv: &[u8],
    aad: &[u8],
    data: &[u8],
) -> Result<Vec<u8>, aes_gcm::Error> {
    let iv: [u8; 12] = iv.try_into().expect("a 96-bit iv");
    let nonce = &aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from(iv);
    let payload = Payload { msg: data, aad };
    macro_rules! run {
        ($c:ty) => {{
            let c = <$c>::new_from_slice(key).expect("AES key");
            if seal {
                c.encrypt(nonce, payload)
            } else {
                c.decrypt(nonce, payload)
            }
        }};
    }
    match key.len() {
        16 => run!(aes_gcm::Aes128Gcm),
        24 => run!(Aes192Gcm),
        32 => run!(aes_gcm::Aes256Gcm),
        n => panic!("no AES-{}", n * 8),
    }
}

/// AES key wrap (RFC 3394) or with padding (RFC 5649).
fn aes_kw(kek: &[u8], pad: bool, data: &[u8]) -> Vec<u8> {
    macro_rules! run {
        ($k:ty) => {{
            let k = <$k>::try_from(kek).expect("KEK");
            if pad {
                k.wrap_with_padding_vec(data)
            } else {
                k.wrap_vec(data)
            }
            .expect("aes-kw wraps")
        }};
    }
    match kek.len() {
        16 => run!(aes_kw::KekAes128),
        24 => run!(aes_kw::KekAes192),
        32 => run!(aes_kw::KekAes256),
        n => panic!("no AES-{}", n * 8),
    }
}

/// HMAC over the concatenation of `parts`.
fn hmac(alg: MacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    macro_rules! run {
        ($d:ty) => {{
            let mut m = <Hmac<$d> as Mac>::new_from_slice(key).expect("HMAC takes any key");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }};
    }
    match alg {
        MacAlgorithm::Hs256 => run!(Sha256),
        MacAlgorithm::Hs384 => run!(Sha384),
        MacAlgorithm::Hs512 => run!(Sha512),
    }
}

/// NIST SP 800-108 KDF in counter mode: K(i) = PRF(key, [i]₃₂ ‖ info) for
/// i = 1, 2, …, concatenated and cut to `len` bytes.
fn kbkdf(prf: MacAlgorithm, key: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i: u32 = 1;
    while out.len() < len {
        out.extend(hmac(prf, key, &[&i.to_be_bytes()[..], info]));
        i += 1;
    }
    out.truncate(len);
    out
}

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    OsRng.fill_bytes(&mut v);
    v
}

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

/// Asserts an error with exactly this code and its status.
#[track_caller]
fn assert_code<T: std::fmt::Debug>(r: Result<T, ClientError>, want: ErrorCode) {
    match r {
        Ok(v) => panic!("expected {want}, got success: {v:?}"),
        Err(e) => {
            assert_eq!(e.code(), Some(want), "expected {want}, got: {e}");
            assert_eq!(e.status(), Some(want.status()), "status of {want}: {e}");
        }
    }
}

#[track_caller]
fn field(f: &Option<B64>, what: &str) -> Vec<u8> {
    f.as_ref()
        .unwrap_or_else(|| panic!("the JWK has no `{what}`"))
        .0
        .clone()
}

#[track_caller]
fn kid_of(b: &KeyBundle) -> String {
    b.key.kid.clone().expect("the bundle's key has a kid")
}

/// Checks `kid` is `{base}/keys/{name}/{32 hex}` and returns the version.
#[track_caller]
fn version_of(node: &TestNode, name: &str, kid: &str) -> String {
    let prefix = format!("{}/keys/{name}/", node.base_url());
    let v = kid
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("kid {kid} does not start with {prefix}"));
    assert!(
        is_valid_version(v),
        "kid {kid}: version `{v}` is not 32 lowercase hex"
    );
    v.to_string()
}

/// The key name in a versioned kid.
#[track_caller]
fn kid_name(node: &TestNode, kid: &str) -> String {
    let prefix = format!("{}/keys/", node.base_url());
    let rest = kid
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("kid {kid} does not start with {prefix}"));
    let (name, _) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("kid {kid} has no version"));
    name.to_string()
}

/// A node never hands out private or secret key members.
#[track_caller]
fn assert_public_only(jwk: &JsonWebKey) {
    let private = [
        ("d", &jwk.d),
        ("p", &jwk.p),
        ("q", &jwk.q),
        ("dp", &jwk.dp),
        ("dq", &jwk.dq),
        ("qi", &jwk.qi),
        ("k", &jwk.k),
        ("key_hsm", &jwk.key_hsm),
    ];
    for (what, f) in private {
        assert!(f.is_none(), "the node returned the private member `{what}`");
    }
}

/// The uncompressed SEC1 point of an EC JWK, checking full-width coordinates.
#[track_caller]
fn ec_point(jwk: &JsonWebKey) -> Vec<u8> {
    let crv = jwk.crv.expect("EC JWK has crv");
    let (x, y) = (field(&jwk.x, "x"), field(&jwk.y, "y"));
    assert_eq!(
        (x.len(), y.len()),
        (crv.field_len(), crv.field_len()),
        "{crv} coordinates are full width"
    );
    [&[4u8][..], &x, &y].concat()
}

/// A peer's public EC JWK from its uncompressed SEC1 point.
#[track_caller]
fn ec_peer(crv: Curve, sec1: &[u8]) -> JsonWebKey {
    let n = crv.field_len();
    assert_eq!(sec1.len(), 1 + 2 * n, "uncompressed {crv} point");
    JsonWebKey {
        kty: Some(KeyType::Ec),
        crv: Some(crv),
        x: Some(B64(sec1[1..=n].to_vec())),
        y: Some(B64(sec1[1 + n..].to_vec())),
        ..Default::default()
    }
}

fn oct_jwk(k: &[u8]) -> JsonWebKey {
    JsonWebKey {
        kty: Some(KeyType::Oct),
        k: Some(B64(k.to_vec())),
        ..Default::default()
    }
}

fn import_params(key: JsonWebKey) -> KeyImportParameters {
    KeyImportParameters {
        key,
        ..Default::default()
    }
}

fn params(alg: EncryptionAlgorithm, value: &[u8]) -> KeyOperationsParameters {
    KeyOperationsParameters {
        alg,
        value: value.into(),
        iv: None,
        aad: None,
        tag: None,
    }
}

fn gcm_params(
    alg: EncryptionAlgorithm,
    value: &[u8],
    iv: Option<B64>,
    aad: Option<&[u8]>,
    tag: Option<B64>,
) -> KeyOperationsParameters {
    KeyOperationsParameters {
        alg,
        value: value.into(),
        iv,
        aad: aad.map(Into::into),
        tag,
    }
}

fn derive_params(
    alg: DeriveAlgorithm,
    target: &str,
    peer: Option<&JsonWebKey>,
    info: Option<&[u8]>,
    key_size: Option<u32>,
) -> KeyDeriveParameters {
    KeyDeriveParameters {
        alg,
        target: target.into(),
        peer: peer.cloned(),
        info: info.map(Into::into),
        key_size,
        key_ops: None,
        attributes: None,
        tags: None,
    }
}
