//! The PKCS#11 module (`libhsm_pkcs11.so`) driven through the `cryptoki`
//! crate (a Cryptoki consumer written by others): an application signing
//! in a loop sees no error while a member is killed; object handles stay
//! the same across a proxy restart and a new `C_Initialize`; an SP 800-108
//! derivation made through the module gives the key the partition's own
//! KBKDF gives for the same fixed input; multi-part AES-GCM counts equal
//! parts each once; AES-GCM encryption needs `gcm_iv_write_back`;
//! `C_Logout` logs out of the proxy and `C_Login` works again after it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::kbkdf::{
    KbkdfCounterFormat, KbkdfDkmLengthFormat, KbkdfDkmLengthMethod, KbkdfParams, PrfDataParam,
    PrfDataParamType,
};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use hsm_api::{DeriveAlgorithm, EncryptionAlgorithm, KeyDeriveParameters, KeyOp, Role};
use hsm_tests::token_members::software_only;
use hsm_tests::{ProxyOptions, TestNode, TestProxy, CO_PASSWORD};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn module_path() -> std::path::PathBuf {
    let p = hsm_tests::bin_dir().join("libhsm_pkcs11.so");
    assert!(
        p.exists(),
        "{} is missing: cargo build --workspace",
        p.display()
    );
    p
}

/// Points the module at `proxy` (a config file named by HSM_PKCS11_CONF),
/// loads and initialises it.
fn load(proxy: &TestProxy, dir: &std::path::Path) -> Pkcs11 {
    load_with(proxy, dir, "gcm_iv_write_back = true\n")
}

/// [`load`] with other configuration lines.
fn load_with(proxy: &TestProxy, dir: &std::path::Path, extra: &str) -> Pkcs11 {
    let conf = dir.join("pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            "url = \"{}\"\nca = \"{}\"\nretry_ms = 20000\n{extra}",
            proxy.url,
            proxy.ca.display()
        ),
    )
    .unwrap();
    std::env::set_var("HSM_PKCS11_CONF", &conf);
    let p = Pkcs11::new(module_path()).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    p
}

fn session(p: &Pkcs11, login: bool) -> Session {
    let slot = p.get_slots_with_token().unwrap()[0];
    let s = p.open_rw_session(slot).unwrap();
    if login {
        s.login(UserType::User, Some(&AuthPin::new(CO_PASSWORD.into())))
            .unwrap();
    }
    s
}

fn ec_pair(s: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::Token(true),
            Attribute::EcParams(p256),
            Attribute::Label(label.into()),
        ],
        &[
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Label(label.into()),
            Attribute::Id(vec![7, 7]),
        ],
    )
    .unwrap()
}

async fn group() -> (Vec<TestNode>, TestProxy) {
    let nodes = TestNode::group(3).await.unwrap();
    let proxy = TestProxy::start(&nodes, ProxyOptions::default())
        .await
        .unwrap();
    proxy
        .wait_healthy(3, Duration::from_secs(30))
        .await
        .unwrap();
    (nodes, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_signing_in_a_loop_sees_no_error_when_a_member_is_killed() {
    let (mut nodes, proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    let p11 = Arc::new(load(&proxy, dir.path()));
    let s = session(&p11, true);
    let (public, private) = ec_pair(&s, "p11-failover");

    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..2u8 {
        let (p11, stop, signed) = (p11.clone(), stop.clone(), signed.clone());
        workers.push(std::thread::spawn(move || {
            // Sessions share the application's login.
            let s = session(&p11, false);
            let mut errors = Vec::new();
            let mut worst = Duration::ZERO;
            let mut i = 0u32;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let digest = [w, (i >> 8) as u8, i as u8, 0x5a].repeat(8);
                let t = Instant::now();
                match s.sign(&Mechanism::Ecdsa, private, &digest) {
                    Ok(sig) => {
                        if sig.len() != 64 {
                            errors.push(format!("signature of {} bytes", sig.len()));
                        }
                        signed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
                worst = worst.max(t.elapsed());
                i += 1;
            }
            (errors, worst)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = signed.load(Ordering::Relaxed);
    nodes[0].kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut worst = Duration::ZERO;
    for w in workers {
        let (errors, wst) = w.join().unwrap();
        assert!(errors.is_empty(), "signing failed: {errors:?}");
        worst = worst.max(wst);
    }
    let total = signed.load(Ordering::Relaxed);
    println!("pkcs11 failover: {total} signatures, {before} before the kill, worst {worst:?}");
    assert!(before > 0 && total > before + 10, "{before} then {total}");

    // A signature made after the kill verifies through the module.
    let digest = [9u8; 32];
    let sig = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    s.verify(&Mechanism::Ecdsa, public, &digest, &sig).unwrap();
    let mut bad = sig.clone();
    bad[10] ^= 1;
    let err = s
        .verify(&Mechanism::Ecdsa, public, &digest, &bad)
        .unwrap_err();
    assert!(format!("{err:?}").contains("SignatureInvalid"), "{err:?}");
}

/// `C_Logout` logs out of the proxy (its token ends there, and the
/// private key needs a login again); a later `C_Login` works, and so does
/// closing the last session, which logs out too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_logout_ends_the_proxy_token_and_c_login_works_again() {
    let (_nodes, proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    let p11 = load(&proxy, dir.path());
    let s = session(&p11, true);
    let (public, private) = ec_pair(&s, "p11-logout");
    let digest = [5u8; 32];
    s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    let logouts = || {
        proxy
            .metric(
                "hsm_proxy_requests_total",
                &[("op", "logout"), ("outcome", "ok")],
            )
            .unwrap()
    };
    assert_eq!(logouts(), 0.0);

    s.logout().unwrap();
    assert_eq!(logouts(), 1.0, "C_Logout logged out of the proxy");
    let err = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap_err();
    assert!(format!("{err:?}").contains("UserNotLoggedIn"), "{err:?}");

    s.login(UserType::User, Some(&AuthPin::new(CO_PASSWORD.into())))
        .unwrap();
    let sig = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    s.verify(&Mechanism::Ecdsa, public, &digest, &sig).unwrap();
    drop(s);
    assert_eq!(logouts(), 2.0, "closing the last session logged out");
    let s = session(&p11, true);
    s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_are_the_same_after_a_proxy_restart_and_a_new_initialize() {
    let (_nodes, mut proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    let p11 = load(&proxy, dir.path());
    let s = session(&p11, true);
    let (public, private) = ec_pair(&s, "p11-stable");
    let slot = s.get_session_info().unwrap().slot_id();
    let serial = p11
        .get_token_info(slot)
        .unwrap()
        .serial_number()
        .to_string();
    drop(s);
    p11.finalize().unwrap();

    proxy.crash_and_restart(3).await.unwrap();
    let p11 = load(&proxy, dir.path());
    let s = session(&p11, true);
    // The old handle works before any search.
    let digest = [3u8; 32];
    let sig = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
    s.verify(&Mechanism::Ecdsa, public, &digest, &sig).unwrap();
    // A search by label finds the same handles.
    let found = s
        .find_objects(&[Attribute::Label(b"p11-stable".to_vec())])
        .unwrap();
    assert!(
        found.contains(&private) && found.contains(&public),
        "{found:?}"
    );
    let by_id = s
        .find_objects(&[
            Attribute::Id(vec![7, 7]),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ])
        .unwrap();
    assert_eq!(by_id, vec![private]);
    // The slot id and serial are the same; only the URL changed, and the
    // serial is derived from it unless configured, so compare slot ids.
    let slots = p11.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0], slot);
    assert_eq!(serial.len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sp800_108_derivation_gives_the_key_the_partitions_kbkdf_gives() {
    let (_nodes, proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    let p11 = load(&proxy, dir.path());
    let s = session(&p11, true);
    let base = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(true),
                Attribute::ValueLen(32.into()),
                Attribute::Derive(true),
                Attribute::Label(b"p11-kdk".to_vec()),
            ],
        )
        .unwrap();
    let counter = KbkdfCounterFormat::new(
        cryptoki::mechanism::kbkdf::Endianness::Big,
        NonZeroUsize::new(32).unwrap(),
    );
    let dkm = KbkdfDkmLengthFormat::new(
        KbkdfDkmLengthMethod::SumOfKeys,
        cryptoki::mechanism::kbkdf::Endianness::Big,
        NonZeroUsize::new(32).unwrap(),
    );
    let data = [
        PrfDataParam::new(PrfDataParamType::IterationVariable(Some(&counter))),
        PrfDataParam::new(PrfDataParamType::ByteArray(b"label")),
        PrfDataParam::new(PrfDataParamType::ByteArray(&[0])),
        PrfDataParam::new(PrfDataParamType::ByteArray(b"context")),
        PrfDataParam::new(PrfDataParamType::DkmLength(&dkm)),
    ];
    let params = KbkdfParams::new(MechanismType::SHA256_HMAC, &data, None);
    let derived = s.derive_key(
        &Mechanism::KbkdfCounter(params),
        base,
        &[
            Attribute::Token(true),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(b"p11-derived".to_vec()),
        ],
    );
    if !software_only() {
        // Token members do not derive (docs/MEMBERS.md): refused, not done.
        assert!(derived.is_err(), "a token member derived: {derived:?}");
        return;
    }
    let derived = derived.unwrap();

    // The same derivation straight through the proxy's API.
    let api = proxy.login(Role::CryptoOfficer).await.unwrap();
    let mut info = b"label\0context".to_vec();
    info.extend_from_slice(&256u32.to_be_bytes());
    api.derive(
        "p11-kdk",
        None,
        &KeyDeriveParameters {
            alg: DeriveAlgorithm::KbkdfHmacSha256,
            target: "api-derived".into(),
            peer: None,
            info: Some(info.into()),
            key_size: Some(256),
            key_ops: None,
            attributes: None,
            tags: None,
        },
    )
    .await
    .unwrap();

    // Sealed with the module's derived key (the partition chooses the IV
    // and writes it into the caller's buffer), opened with the API's.
    let mut iv = [0u8; 12];
    let aad = b"aad";
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            derived,
            b"the same key",
        )
        .unwrap();
    assert_ne!(iv, [0u8; 12], "the IV was not written back");
    let (body, tag) = ct.split_at(ct.len() - 16);
    let opened = api
        .crypt(
            "api-derived",
            None,
            KeyOp::Decrypt,
            &hsm_api::KeyOperationsParameters {
                alg: EncryptionAlgorithm::A256Gcm,
                value: body.to_vec().into(),
                iv: Some(iv.to_vec().into()),
                aad: Some(aad.to_vec().into()),
                tag: Some(tag.to_vec().into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(opened.value.0, b"the same key".to_vec());
    // And the module decrypts its own ciphertext with the IV it was given.
    let pt = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into()).unwrap()),
            derived,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, b"the same key".to_vec());
}

fn aes_key(s: &Session, label: &str) -> ObjectHandle {
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::ValueLen(32.into()),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_part_gcm_gathers_equal_parts_each_once() {
    let (_nodes, proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    let p11 = load(&proxy, dir.path());
    let s = session(&p11, true);
    let key = aes_key(&s, "p11-gcm-parts");
    // cryptoki asks each update's length with a NULL buffer first, then
    // passes an empty one: two equal parts must both be encrypted.
    let part = [0u8; 4096];
    let mut iv = [0u8; 12];
    s.encrypt_init(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
        key,
    )
    .unwrap();
    let mut ct = s.encrypt_update(&part).unwrap();
    ct.extend(s.encrypt_update(&part).unwrap());
    ct.extend(s.encrypt_final().unwrap());
    assert_eq!(ct.len(), 2 * part.len() + 16);
    let pt = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
            key,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, [part, part].concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcm_encryption_is_refused_unless_the_iv_may_be_written_back() {
    let (_nodes, proxy) = group().await;
    let dir = tempfile::tempdir().unwrap();
    // The default configuration: no write-back.
    let p11 = load_with(&proxy, dir.path(), "");
    let s = session(&p11, true);
    let key = aes_key(&s, "p11-gcm-default");
    let mut iv = [0u8; 12];
    let err = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
            key,
            b"x",
        )
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("MechanismParamInvalid"),
        "{err:?}"
    );
    // Decryption needs no write-back: a ciphertext made through the API
    // (IV chosen by the partition) opens through the module.
    let api = proxy.login(Role::CryptoOfficer).await.unwrap();
    let sealed = api
        .encrypt(
            "p11-gcm-default",
            None,
            EncryptionAlgorithm::A256Gcm,
            b"opened here",
            None,
        )
        .await
        .unwrap();
    let mut iv = sealed.iv.unwrap().0;
    let mut ct = sealed.value.0;
    ct.extend(sealed.tag.unwrap().0);
    let pt = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"", 128.into()).unwrap()),
            key,
            &ct,
        )
        .unwrap();
    assert_eq!(pt, b"opened here".to_vec());
}
