//! Token members (issue 18): a mixed group — two members whose keys live
//! in SoftHSM2 tokens and one software member, one cloning domain — behind
//! the proxy. Keys made through the proxy, on a token member or on the
//! software one, are held by every member and sign there, checked by
//! independent code; on a token member no key byte is in the database and
//! the token refuses to give the private key out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::token_members::{pkcs11_tool, token_files};
use hsm_tests::{held_by_every_member, ProxyOptions, TestNode, TestProxy};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn p256_key(jwk: &JsonWebKey) -> p256::ecdsa::VerifyingKey {
    let (x, y) = (jwk.x.as_ref().unwrap(), jwk.y.as_ref().unwrap());
    let point = p256::EncodedPoint::from_affine_coordinates(
        x.0.as_slice().into(),
        y.0.as_slice().into(),
        false,
    );
    p256::ecdsa::VerifyingKey::from_encoded_point(&point).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_group_of_token_and_software_members_serves_one_partition() {
    // node0 and node2 on tokens, node1 software (`token_members`).
    std::env::set_var("HSM_TEST_TOKEN_MEMBERS", "mixed");
    let nodes = TestNode::group(3).await.unwrap();
    assert!(token_files(&nodes[0].dir).conf.exists());
    assert!(!token_files(&nodes[1].dir).conf.exists());
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    let co = proxy.login(Role::CryptoOfficer).await.unwrap();
    let digest = Sha256::digest(b"token members").to_vec();
    let mut names = Vec::new();
    for i in 0..6 {
        let name = format!("ec-{i}");
        let k = co
            .create_key(&name, &KeyCreateParameters::ec(Curve::P256))
            .await
            .unwrap();
        let vk = p256_key(&k.key);
        let sig = co
            .sign(&name, None, SignatureAlgorithm::Es256, &digest)
            .await
            .unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&sig.value.0).unwrap();
        vk.verify_prehash(&digest, &sig).unwrap();
        names.push((name, vk));
    }
    co.create_key("rsa", &KeyCreateParameters::rsa(2048))
        .await
        .unwrap();
    co.create_key("aes", &KeyCreateParameters::oct(256))
        .await
        .unwrap();
    let all: Vec<String> = names
        .iter()
        .map(|(n, _)| n.clone())
        .chain(["rsa".to_string(), "aes".to_string()])
        .collect();
    let members: Vec<Client> = futures_all(&nodes).await;
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    held_by_every_member(&nodes, &refs, Duration::from_secs(20))
        .await
        .unwrap();
    // Every member signs with every EC key, whichever kind made it.
    for (m, node) in members.iter().zip(&nodes) {
        for (name, vk) in &names {
            let sig = m.sign(name, None, SignatureAlgorithm::Es256, &digest).await;
            let sig =
                sig.unwrap_or_else(|e| panic!("{name} on {}: {e}\n{}", node.addr, node.log()));
            let sig = p256::ecdsa::Signature::from_slice(&sig.value.0).unwrap();
            vk.verify_prehash(&digest, &sig).unwrap();
        }
        // AES-GCM round trip on each member.
        let e = m
            .encrypt("aes", None, EncryptionAlgorithm::A256Gcm, b"secret", None)
            .await
            .unwrap();
        let p = KeyOperationsParameters {
            alg: EncryptionAlgorithm::A256Gcm,
            value: e.value.clone(),
            iv: e.iv.clone(),
            aad: None,
            tag: e.tag.clone(),
        };
        let d = m.crypt("aes", None, KeyOp::Decrypt, &p).await.unwrap();
        assert_eq!(d.value.0, b"secret");
    }
    // The token holds the keys as sensitive objects: every private and
    // secret key the listing shows is sensitive, and the secret key's value
    // cannot be read (pkcs11-tool reads no private key at all).
    for kind in ["privkey", "secrkey"] {
        let (ok, list) = pkcs11_tool(&nodes[0].dir, &["--list-objects", "--type", kind]).unwrap();
        assert!(ok, "{list}");
        let access: Vec<&str> = list
            .lines()
            .filter(|l| l.trim().starts_with("Access:"))
            .collect();
        assert!(!access.is_empty(), "{kind}: {list}");
        for a in &access {
            assert!(a.contains("sensitive"), "{kind} not sensitive: {a}\n{list}");
        }
    }
    let (_, list) = pkcs11_tool(&nodes[0].dir, &["--list-objects", "--type", "secrkey"]).unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ID:"))
        .map(|s| s.trim().to_string())
        .collect();
    assert!(!ids.is_empty(), "{list}");
    for id in &ids {
        let (read, text) = pkcs11_tool(
            &nodes[0].dir,
            &["--read-object", "--type", "secrkey", "--id", id],
        )
        .unwrap();
        assert!(!read, "a sensitive secret key was read: {text}");
    }
    drop(proxy);
    // The token member's database holds no key bytes: every version is a
    // token object with nothing sealed.
    let mut nodes = nodes;
    nodes[0].kill();
    let store = hsm_node::store::Store::open(&nodes[0].dir.join("data.redb")).unwrap();
    for name in &all {
        let obj = store.object("p1", name).unwrap();
        assert!(!obj.versions.is_empty(), "{name}");
        for (v, r) in &obj.versions {
            assert!(r.sealed.0.is_empty(), "{name}/{v} has sealed bytes");
            assert!(r.token.is_some(), "{name}/{v} has no token object");
        }
    }
}

async fn futures_all(nodes: &[TestNode]) -> Vec<Client> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.officer().await.unwrap());
    }
    out
}
