//! Durability: a node SIGKILLed at any moment while keys are being created
//! restarts with every acknowledged key present and usable, and no key
//! half-made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hsm_api::{Curve, EncryptionAlgorithm, KeyCreateParameters, SignatureAlgorithm};
use hsm_tests::TestNode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROUNDS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_creates_loses_no_acknowledged_key() {
    let mut node = TestNode::start().await.unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut attempted = 0usize;

    for round in 0..ROUNDS {
        let co = node.officer().await.unwrap();
        // Four writers create keys until the node dies under them.
        let mut writers = Vec::new();
        for w in 0..4 {
            let co = co.clone();
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let mut tried = 0usize;
                for i in 0..10_000 {
                    let name = format!("r{round}-w{w}-k{i}");
                    let params = if i % 2 == 0 {
                        KeyCreateParameters::oct(256)
                    } else {
                        KeyCreateParameters::ec(Curve::P256)
                    };
                    tried += 1;
                    match co.create_key(&name, &params).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Err(_) => return tried, // the node is gone
                    }
                }
                tried
            }));
        }
        // Kill at a moment that varies from round to round.
        tokio::time::sleep(Duration::from_millis(150 + 70 * round as u64)).await;
        node.kill();
        for w in writers {
            attempted += tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .unwrap()
                .unwrap();
        }
        node.run().await.unwrap();

        // Every acknowledged key is there and works.
        let co = node.officer().await.unwrap();
        let listed: BTreeSet<String> = co
            .list_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid.rsplit('/').next().unwrap().to_string())
            .collect();
        let acked_now = acked.lock().unwrap().clone();
        let missing: Vec<_> = acked_now.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged keys lost: {missing:?}"
        );

        // Any key present (acknowledged or caught in flight) is whole: it
        // loads, decrypts its material and performs.
        for name in &listed {
            let b = co.get_key(name, None).await.unwrap();
            if b.key.crv == Some(Curve::P256) {
                let s = co
                    .sign(name, None, SignatureAlgorithm::Es256, &[3u8; 32])
                    .await
                    .unwrap();
                assert!(co
                    .verify(
                        name,
                        None,
                        SignatureAlgorithm::Es256,
                        &[3u8; 32],
                        &s.value.0
                    )
                    .await
                    .unwrap());
            } else {
                let e = co
                    .encrypt(name, None, EncryptionAlgorithm::A256Gcm, b"x", None)
                    .await
                    .unwrap();
                assert_eq!(e.value.0.len(), 1, "{name}");
            }
        }
    }
    let acked = acked.lock().unwrap().len();
    assert!(
        acked > ROUNDS * 4,
        "too few keys were created to prove anything: {acked}"
    );
    eprintln!("{ROUNDS} SIGKILLs, {attempted} creates attempted, {acked} acknowledged, 0 lost");
}
