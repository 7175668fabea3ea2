//! Nodes as group members: clone blobs between real nodes over mTLS,
//! conflicts and foreign domains refused, nothing the proxy could see holds
//! key bytes, inventories compare in one call and locate a difference by
//! its bucket, and members converge whatever the order of changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::*;
use hsm_tests::token_members::software_only;
use hsm_tests::{reconcile, TestNode};

fn name_of(kid: &str) -> String {
    kid.rsplit('/').next().unwrap().to_string()
}

/// Every rendering of `bytes` a careless blob could carry.
fn renderings(bytes: &[u8]) -> Vec<String> {
    use base64::Engine;
    vec![
        hsm_api::b64::encode(bytes),
        base64::engine::general_purpose::STANDARD.encode(bytes),
        hex::encode(bytes),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_clones_between_members_and_works_there() {
    let nodes = TestNode::group(2).await.unwrap();
    let a = nodes[0].officer().await.unwrap();
    let b = nodes[1].login(Role::Replication).await.unwrap();
    let b_co = nodes[1].officer().await.unwrap();

    let creates = [
        ("rsa", KeyCreateParameters::rsa(2048)),
        ("p256", KeyCreateParameters::ec(Curve::P256)),
        ("p384", KeyCreateParameters::ec(Curve::P384)),
        ("p521", KeyCreateParameters::ec(Curve::P521)),
        ("ed", KeyCreateParameters::okp(Curve::Ed25519)),
        ("x", KeyCreateParameters::okp(Curve::X25519)),
        ("aes", KeyCreateParameters::oct(256)),
        ("hmac", KeyCreateParameters::oct(512)),
    ];
    // Token members hold no OKP keys: they answer NotSupported, naming
    // the mechanism, and the rest of the test goes on without them.
    let creates: Vec<_> = if software_only() {
        creates.to_vec()
    } else {
        for (name, p) in creates.iter().filter(|(_, p)| p.kty == KeyType::OkpHsm) {
            match a.create_key(name, p).await {
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                }) => {
                    assert_eq!((status, code.as_str()), (400, "NotSupported"), "{message}");
                    assert!(message.contains("CKM_EC_"), "{message}");
                }
                other => panic!("{name} on a token member: {other:?}"),
            }
        }
        creates
            .into_iter()
            .filter(|(_, p)| p.kty != KeyType::OkpHsm)
            .collect()
    };
    for (name, p) in &creates {
        a.create_key(name, p).await.unwrap();
    }
    // A key whose material the test knows, to look for it in the blob.
    let known: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let import = KeyImportParameters {
        key: JsonWebKey {
            kty: Some(KeyType::Oct),
            k: Some(known.clone().into()),
            ..Default::default()
        },
        ..Default::default()
    };
    a.import_key("known", &import).await.unwrap();

    let a_repl = nodes[0].login(Role::Replication).await.unwrap();
    for name in creates.iter().map(|(n, _)| *n).chain(["known"]) {
        let blob = a_repl.clone_export(name).await.unwrap();
        assert_eq!(blob.name, name);
        let text = serde_json::to_string(&blob).unwrap();
        if name == "known" {
            for r in renderings(&known) {
                assert!(
                    !text.contains(&r),
                    "clone blob carries the key bytes in clear ({r})"
                );
            }
        }
        let r = b.clone_import(&blob).await.unwrap();
        assert_eq!(r.outcome, CloneOutcome::Applied, "{name}");
        assert_eq!(r.digest, blob.digest);
        assert_eq!(r.generation, blob.generation);
        // Idempotent: the same blob again changes nothing and succeeds.
        let again = b.clone_import(&blob).await.unwrap();
        assert_eq!(again.outcome, CloneOutcome::Unchanged, "{name}");
        // The clone shows the same public key and version.
        let ka = a.get_key(name, None).await.unwrap();
        let kb = b_co.get_key(name, None).await.unwrap();
        assert_eq!(
            name_of(&ka.key.kid.clone().unwrap()),
            name_of(&kb.key.kid.clone().unwrap())
        );
        assert_eq!(
            (ka.key.n, ka.key.x, ka.key.y),
            (kb.key.n, kb.key.x, kb.key.y),
            "{name}"
        );
    }

    // The clones work on B, and agree with A.
    let d32 = [7u8; 32];
    for (name, alg, digest) in [
        ("rsa", SignatureAlgorithm::Ps256, &d32[..]),
        ("p256", SignatureAlgorithm::Es256, &d32[..]),
        ("p384", SignatureAlgorithm::Es384, &[7u8; 48][..]),
        ("p521", SignatureAlgorithm::Es512, &[7u8; 64][..]),
        ("ed", SignatureAlgorithm::EdDsa, b"a message"),
    ]
    .into_iter()
    .filter(|(name, ..)| creates.iter().any(|(n, _)| n == name))
    {
        let sig = b_co.sign(name, None, alg, digest).await.unwrap();
        assert!(
            a.verify(name, None, alg, digest, &sig.value.0)
                .await
                .unwrap(),
            "{name}"
        );
    }
    for name in ["aes", "known"] {
        let e = b_co
            .encrypt(
                name,
                None,
                EncryptionAlgorithm::A256Gcm,
                b"clone me",
                Some(b"ad"),
            )
            .await
            .unwrap();
        let p = KeyOperationsParameters {
            alg: EncryptionAlgorithm::A256Gcm,
            value: e.value,
            iv: e.iv,
            aad: e.aad,
            tag: e.tag,
        };
        let back = a.crypt(name, None, KeyOp::Decrypt, &p).await.unwrap();
        assert_eq!(back.value.0, b"clone me");
    }
    let mac_a = a
        .mac("hmac", None, MacAlgorithm::Hs512, b"m")
        .await
        .unwrap();
    let mac_b = b_co
        .mac("hmac", None, MacAlgorithm::Hs512, b"m")
        .await
        .unwrap();
    assert_eq!(mac_a.value, mac_b.value);

    // The replication credential moves blobs and does nothing else.
    let e = b
        .sign("p256", None, SignatureAlgorithm::Es256, &d32)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let e = nodes[1]
        .user()
        .await
        .unwrap()
        .clone_export("p256")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));

    // Equal members compare equal in one call, in a small answer.
    let sa = a.inventory().await.unwrap();
    let sb = b.inventory().await.unwrap();
    assert_eq!(sa, sb);
    assert_eq!(sa.count, creates.len() as u64 + 1);
    let (_, body) = b
        .raw(http::Method::GET, "/inventory", None, Default::default())
        .await
        .unwrap();
    assert!(body.len() < 1024, "summary answer is {} bytes", body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_differing_object_is_found_through_its_bucket_alone() {
    let nodes = TestNode::group(2).await.unwrap();
    let a = nodes[0].officer().await.unwrap();
    let b = nodes[1].officer().await.unwrap();
    for i in 0..40 {
        a.create_key(&format!("k{i}"), &KeyCreateParameters::oct(128))
            .await
            .unwrap();
    }
    assert!(reconcile(&[a.clone(), b.clone()]).await.unwrap() >= 40);
    assert_eq!(a.inventory().await.unwrap(), b.inventory().await.unwrap());

    // One attribute change on A.
    let upd = KeyUpdateParameters {
        tags: Some([("t".into(), "v".into())].into()),
        ..Default::default()
    };
    a.update_key("k17", None, &upd).await.unwrap();
    assert_ne!(
        a.inventory().await.unwrap().summary,
        b.inventory().await.unwrap().summary
    );
    let ba = a.inventory_buckets().await.unwrap().buckets;
    let bb = b.inventory_buckets().await.unwrap().buckets;
    let differing: Vec<u8> = ba
        .iter()
        .zip(&bb)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.bucket)
        .collect();
    assert_eq!(ba.len(), bb.len());
    assert_eq!(differing.len(), 1, "exactly one bucket differs");
    let ea = a.inventory_bucket(differing[0]).await.unwrap();
    let eb = b.inventory_bucket(differing[0]).await.unwrap();
    let changed: Vec<&InventoryItem> = ea.iter().filter(|e| !eb.contains(e)).collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].name, "k17");
    assert!(changed[0].generation > eb.iter().find(|e| e.name == "k17").unwrap().generation);

    // Within the bucket, exactly the slice of k17 differs, and listing that
    // slice alone finds it.
    let (sa, sb) = (
        a.inventory_slices(differing[0]).await.unwrap(),
        b.inventory_slices(differing[0]).await.unwrap(),
    );
    assert_eq!(sa.slices.len(), 16 * SLICES);
    let slices: Vec<u8> = (0..=255u8)
        .filter(|&s| sa.slice(s) != sb.slice(s))
        .collect();
    let k17 = hsm_node::store::slice_of("k17");
    assert_eq!(slices, [k17], "exactly the slice of k17 differs");
    let la = a.inventory_slice(differing[0], k17).await.unwrap();
    let lb = b.inventory_slice(differing[0], k17).await.unwrap();
    assert!(la.contains(changed[0]) && !lb.contains(changed[0]));
    assert!(la
        .iter()
        .chain(&lb)
        .all(|e| hsm_node::store::slice_of(&e.name) == k17
            && hsm_node::store::bucket_of(&e.name) == differing[0]));
    // A bucket or slice out of range is no path.
    let e = a
        .raw(
            http::Method::GET,
            "/inventory/buckets/3/slices/256",
            None,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(e.0, http::StatusCode::NOT_FOUND);

    // Reconciling copies exactly that object, and the tag arrives.
    assert_eq!(reconcile(&[a.clone(), b.clone()]).await.unwrap(), 1);
    assert_eq!(
        b.get_key("k17", None).await.unwrap().tags,
        Some([("t".into(), "v".into())].into())
    );
    assert_eq!(a.inventory().await.unwrap(), b.inventory().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_domains_and_conflicting_versions_are_refused() {
    let nodes = TestNode::group(2).await.unwrap();
    let outsider = TestNode::start().await.unwrap(); // a domain of its own
    let a = nodes[0].officer().await.unwrap();
    let b = nodes[1].officer().await.unwrap();
    let o = outsider.officer().await.unwrap();
    a.create_key("k", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let blob = a.clone_export("k").await.unwrap();

    let e = o.clone_import(&blob).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidClone), "{e}");
    assert!(e.to_string().contains("another cloning domain"), "{e}");
    assert_eq!(o.inventory().await.unwrap().count, 0);

    // Altered metadata breaks the seal.
    let mut altered = blob.clone();
    altered.generation += 1;
    assert_eq!(
        b.clone_import(&altered).await.unwrap_err().code(),
        Some(ErrorCode::InvalidClone)
    );
    let mut altered = blob.clone();
    altered.sealed.0[20] ^= 1;
    assert_eq!(
        b.clone_import(&altered).await.unwrap_err().code(),
        Some(ErrorCode::InvalidClone)
    );

    // Same name and version with other key material: a blob sealed with the
    // domain secret by an insider (the test holds the domain file).
    b.clone_import(&blob).await.unwrap();
    let before = b.inventory().await.unwrap();
    let forged = forge_conflicting_blob(&nodes[0], &blob);
    let e = b.clone_import(&forged).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict), "{e}");
    assert_eq!(e.status(), Some(409));
    assert_eq!(
        b.inventory().await.unwrap(),
        before,
        "a refused clone changed the member"
    );
    assert!(
        nodes[1].log().contains("clone refused: conflict"),
        "{}",
        nodes[1].log()
    );
}

/// A blob for `orig`'s name and version holding a different P-256 key,
/// sealed correctly under the group's domain, with a higher generation.
fn forge_conflicting_blob(node: &TestNode, orig: &CloneBlob) -> CloneBlob {
    use hsm_node::crypto::{seal, KeyMaterial, KeySpec};
    use hsm_node::domain::Domain;
    use hsm_node::store::{object_digest, NameRecord, VersionRecord};
    let secret = std::fs::read(node.root.path().join("domain.secret")).unwrap();
    let domain = Domain::from_secret(&secret).unwrap();
    let m = KeyMaterial::generate(&KeySpec::Ec(Curve::P256)).unwrap();
    let orig_version = orig_version_of(node, &orig.name);
    let bytes = m.to_bytes();
    let content = serde_json::json!({
        "versions": [{
            "version": orig_version, "key_ops": ["sign", "verify"], "enabled": true,
            "nbf": null, "exp": null, "created": 1, "updated": 1, "tags": null,
            "material": hsm_api::b64::encode(&bytes), "stamp": 5, "attr_stamp": 5,
        }],
        "deleted": null, "purged": null,
    });
    let rec = VersionRecord {
        public_jwk: m.public_jwk(),
        key_ops: vec![KeyOperation::Sign, KeyOperation::Verify],
        enabled: true,
        nbf: None,
        exp: None,
        created: 1,
        updated: 1,
        tags: None,
        sealed: B64::default(),
        token: None,
        material_digest: domain.material_digest(&bytes).unwrap(),
        request: None,
        stamp: 5,
        attr_stamp: 5,
        pending_until: None,
    };
    let nr = NameRecord {
        versions: vec![orig_version.clone()],
        ..Default::default()
    };
    let digest = object_digest(&orig.name, &nr, &[(orig_version, rec)].into());
    // Format 2 (the material in the clear inside the seal), which members
    // still read: the forger needs no domain wrapping key for it.
    let mut blob = CloneBlob {
        format: "hsm-node-clone/2".into(),
        domain: orig.domain.clone(),
        name: orig.name.clone(),
        generation: orig.generation + 1,
        digest,
        version: None,
        sealed: B64::default(),
    };
    let aad = format!(
        "{}\0{}\0{}\0{}\0{}",
        blob.format, blob.domain, blob.name, blob.generation, blob.digest
    );
    let key = domain.purpose_key("clone v1").unwrap();
    blob.sealed = seal(&key, aad.as_bytes(), &serde_json::to_vec(&content).unwrap())
        .unwrap()
        .into();
    blob
}

fn orig_version_of(node: &TestNode, name: &str) -> String {
    // The version is in the node's kid; read it back over the API.
    let rt = tokio::runtime::Handle::current();
    let c = tokio::task::block_in_place(|| rt.block_on(node.officer())).unwrap();
    let k = tokio::task::block_in_place(|| rt.block_on(c.get_key(name, None))).unwrap();
    name_of(&k.key.kid.unwrap())
}

/// A member's generation of `name` (0 when unknown there).
async fn generation_of(m: &Client, name: &str) -> u64 {
    let entries = m
        .inventory_bucket(hsm_node::store::bucket_of(name))
        .await
        .unwrap();
    entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.generation)
        .unwrap_or(0)
}

/// A small deterministic generator, so a failing sequence is reproducible
/// from the seed printed with it.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_converge_whatever_the_order_and_deleted_keys_stay_deleted() {
    let nodes = TestNode::group(3).await.unwrap();
    let members: Vec<Client> = {
        let mut v = Vec::new();
        for n in &nodes {
            v.push(n.officer().await.unwrap());
        }
        v
    };
    for seed in [
        0x9e37_79b9_7f4a_7c15_u64,
        0x1234_5678_9abc_def1,
        0x0bad_cafe_f00d_0001,
    ] {
        let mut rng = Rng(seed);
        let names: Vec<String> = (0..12)
            .map(|i| format!("s{:x}-{i}", seed & 0xfff))
            .collect();
        // Random operations, each on a random member, with reconciliation
        // only now and then: members see the changes in different orders.
        for step in 0..150 {
            let m = &members[rng.below(members.len() as u64) as usize];
            let name = &names[rng.below(names.len() as u64) as usize];
            match rng.below(6) {
                0 | 1 => {
                    let _ = m.create_key(name, &KeyCreateParameters::oct(128)).await;
                }
                2 => {
                    let _ = m.delete_key(name).await;
                }
                3 => {
                    let _ = m.recover_deleted(name).await;
                }
                4 => {
                    let _ = m.purge_deleted(name).await;
                }
                _ => {
                    let tags = [("step".to_string(), step.to_string())].into();
                    let upd = KeyUpdateParameters {
                        tags: Some(tags),
                        ..Default::default()
                    };
                    let _ = m.update_key(name, None, &upd).await;
                }
            }
            if rng.below(10) == 0 {
                reconcile(&members)
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
            }
            // Blobs also arrive out of order: copy a random member's state to
            // another whether it is newer or not. A member's generation of a
            // name never goes back, and a blob merged once changes nothing
            // the second time (the merge is idempotent).
            if rng.below(3) == 0 {
                let from = &members[rng.below(members.len() as u64) as usize];
                let to = &members[rng.below(members.len() as u64) as usize];
                if let Ok(blob) = from.clone_export(name).await {
                    let before = generation_of(to, name).await;
                    let r = to.clone_import(&blob).await.unwrap();
                    assert!(
                        r.generation >= before,
                        "seed {seed:#x} step {step}: generation went back"
                    );
                    assert!(r.holds, "seed {seed:#x} step {step}: {r:?}");
                    let again = to.clone_import(&blob).await.unwrap();
                    assert_eq!(
                        again.outcome,
                        CloneOutcome::Unchanged,
                        "seed {seed:#x} step {step}"
                    );
                    assert_eq!(again.digest, r.digest, "seed {seed:#x} step {step}");
                }
            }
        }
        // Which names end deleted or purged on the member holding the
        // newest state, before the final reconcile.
        let mut newest: std::collections::BTreeMap<String, (u64, String, bool)> =
            Default::default();
        for m in &members {
            for bucket in m.inventory_buckets().await.unwrap().buckets {
                for e in m.inventory_bucket(bucket.bucket).await.unwrap() {
                    let gone = e.deleted || e.tombstone;
                    let cur = newest
                        .entry(e.name.clone())
                        .or_insert((0, String::new(), false));
                    if (e.generation, e.digest.clone()) > (cur.0, cur.1.clone()) {
                        *cur = (e.generation, e.digest, gone);
                    }
                }
            }
        }
        reconcile(&members)
            .await
            .unwrap_or_else(|e| panic!("seed {seed:#x}: {e}"));
        let first = members[0].inventory().await.unwrap();
        for m in &members[1..] {
            assert_eq!(
                m.inventory().await.unwrap(),
                first,
                "seed {seed:#x}: members differ after reconcile"
            );
        }
        for (name, (_, _, gone)) in newest {
            let live = members[0].get_key(&name, None).await.is_ok();
            if gone {
                for m in &members {
                    assert!(
                        m.get_key(&name, None).await.is_err(),
                        "seed {seed:#x}: deleted key {name} came back"
                    );
                }
            }
            let live_everywhere = {
                let mut all = true;
                for m in &members {
                    all &= m.get_key(&name, None).await.is_ok() == live;
                }
                all
            };
            assert!(
                live_everywhere,
                "seed {seed:#x}: {name} differs in liveness"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_member_cannot_bring_a_purged_key_back() {
    let mut nodes = TestNode::group(2).await.unwrap();
    let a = nodes[0].officer().await.unwrap();
    a.create_key("doomed", &KeyCreateParameters::ec(Curve::P256))
        .await
        .unwrap();
    let b = nodes[1].officer().await.unwrap();
    reconcile(&[a.clone(), b.clone()]).await.unwrap();
    assert!(b.get_key("doomed", None).await.is_ok());

    // B is away while the key is deleted and purged on A.
    nodes[1].kill();
    a.delete_key("doomed").await.unwrap();
    a.purge_deleted("doomed").await.unwrap();
    nodes[1].run().await.unwrap();
    let b = nodes[1].officer().await.unwrap();
    assert!(
        b.get_key("doomed", None).await.is_ok(),
        "B is stale, as intended"
    );

    // B's stale copy offered to A changes nothing: the purge covers every
    // version it carries, and the delete register is newer.
    let stale = b.clone_export("doomed").await.unwrap();
    let r = a.clone_import(&stale).await.unwrap();
    assert_eq!(r.outcome, CloneOutcome::Unchanged);
    assert_eq!(
        a.get_key("doomed", None).await.unwrap_err().code(),
        Some(ErrorCode::KeyNotFound)
    );

    // Resync in either direction: the tombstone wins.
    reconcile(&[b.clone(), a.clone()]).await.unwrap();
    for m in [&a, &b] {
        let e = m.get_key("doomed", None).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::KeyNotFound));
    }
    assert_eq!(a.inventory().await.unwrap(), b.inventory().await.unwrap());
    let entries = a
        .inventory_bucket(hsm_node::store::bucket_of("doomed"))
        .await
        .unwrap();
    assert!(entries.iter().any(|e| e.name == "doomed" && e.tombstone));
}
