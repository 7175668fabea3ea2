//! Published test vectors, checked exactly.
//!
//! - RFC 3394 section 4 (all six AES key wrap examples) and RFC 5649
//!   section 6 (both AES key wrap with padding examples), through
//!   `LoadedKey::wrap` / `unwrap` with oct keys imported from the KEK.
//! - NIST CAVP SP 800-108 "KDF in Counter Mode" vectors (KDFCTR_gen.rsp,
//!   CAVS 14.4), sections [PRF=HMAC_SHA256|384|512] [CTRLOCATION=BEFORE_FIXED]
//!   [RLEN=32_BITS], COUNT=0, 10, 20 and 30 of each (L = 128, 256, 160, 320
//!   bits). The FixedInputData is passed as `info` unchanged.

use super::crosscheck::kbkdf_reference;
use super::*;
use hsm_api::DeriveAlgorithm;

/// (section, KEK, key data, ciphertext) from RFC 3394 section 4.
const RFC3394: [(&str, &str, &str, &str); 6] = [
    (
        "4.1 128-bit KEK, 128 bits of key data",
        "000102030405060708090A0B0C0D0E0F",
        "00112233445566778899AABBCCDDEEFF",
        "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5",
    ),
    (
        "4.2 192-bit KEK, 128 bits of key data",
        "000102030405060708090A0B0C0D0E0F1011121314151617",
        "00112233445566778899AABBCCDDEEFF",
        "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D",
    ),
    (
        "4.3 256-bit KEK, 128 bits of key data",
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF",
        "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7",
    ),
    (
        "4.4 192-bit KEK, 192 bits of key data",
        "000102030405060708090A0B0C0D0E0F1011121314151617",
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2",
    ),
    (
        "4.5 256-bit KEK, 192 bits of key data",
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF0001020304050607",
        "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1",
    ),
    (
        "4.6 256-bit KEK, 256 bits of key data",
        "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
        "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
        "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21",
    ),
];

/// (description, KEK, key, wrapped) from RFC 5649 section 6 (192-bit KEK).
const RFC5649: [(&str, &str, &str, &str); 2] = [
    (
        "20 octets of key",
        "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8",
        "c37b7e6492584340 bed1220780894115 5068f738",
        "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a",
    ),
    (
        "7 octets of key",
        "5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8",
        "466f7250617369",
        "afbeb0f07dfbf541 9200f2ccb50bb24f",
    ),
];

fn kw_alg(kek_len: usize, padded: bool) -> EncryptionAlgorithm {
    use EncryptionAlgorithm::*;
    match (kek_len, padded) {
        (16, false) => A128Kw,
        (24, false) => A192Kw,
        (32, false) => A256Kw,
        (16, true) => A128Kwp,
        (24, true) => A192Kwp,
        _ => A256Kwp,
    }
}

#[test]
fn rfc3394_section_4_vectors() {
    for (name, kek, data, wrapped) in RFC3394 {
        let (kek, data, wrapped) = (hex(kek), hex(data), hex(wrapped));
        let k = oct(&kek);
        let alg = kw_alg(kek.len(), false);
        assert_eq!(
            k.wrap(alg, &data).unwrap(),
            wrapped,
            "wrap, RFC 3394 {name}"
        );
        assert_eq!(
            k.unwrap(alg, &wrapped).unwrap().as_slice(),
            data.as_slice(),
            "unwrap, RFC 3394 {name}"
        );
        let mut bad = wrapped.clone();
        bad[8] ^= 0x01;
        assert_eq!(
            code(k.unwrap(alg, &bad)),
            ErrorCode::DecryptionFailed,
            "{name}"
        );
    }
}

#[test]
fn rfc5649_section_6_vectors() {
    for (name, kek, data, wrapped) in RFC5649 {
        let (kek, data, wrapped) = (hex(kek), hex(data), hex(wrapped));
        let k = oct(&kek);
        let alg = kw_alg(kek.len(), true);
        assert_eq!(alg, EncryptionAlgorithm::A192Kwp);
        assert_eq!(
            k.wrap(alg, &data).unwrap(),
            wrapped,
            "wrap, RFC 5649 {name}"
        );
        assert_eq!(
            k.unwrap(alg, &wrapped).unwrap().as_slice(),
            data.as_slice(),
            "unwrap, RFC 5649 {name}"
        );
        let mut bad = wrapped.clone();
        bad[wrapped.len() - 1] ^= 0x01;
        assert_eq!(
            code(k.unwrap(alg, &bad)),
            ErrorCode::DecryptionFailed,
            "{name}"
        );
    }
}

/// (PRF, COUNT, L in bits, KI, FixedInputData, KO) from KDFCTR_gen.rsp.
const KBKDF_CAVP: [(DeriveAlgorithm, u32, usize, &str, &str, &str); 12] = {
    use DeriveAlgorithm::{
        KbkdfHmacSha256 as S256, KbkdfHmacSha384 as S384, KbkdfHmacSha512 as S512,
    };
    [
        (
            S256,
            0,
            128,
            "dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0",
            "01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b8\
             64a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
            "10621342bfb0fd40046c0e29f2cfdbf0",
        ),
        (
            S256,
            10,
            256,
            "e204d6d466aad507ffaf6d6dab0a5b26152c9e21e764370464e360c8fbc765c6",
            "7b03b98d9f94b899e591f3ef264b71b193fba7043c7e953cde23bc5384bc1a62\
             93580115fae3495fd845dadbd02bd6455cf48d0f62b33e62364a3a80",
            "770dfab6a6a4a4bee0257ff335213f78d8287b4fd537d5c1fffa956910e7c779",
        ),
        (
            S256,
            20,
            160,
            "dc60338d884eecb72975c603c27b360605011756c697c4fc388f5176ef81efb1",
            "44d7aa08feba26093c14979c122c2437c3117b63b78841cd10a4bc5ed55c5658\
             6ad8986d55307dca1d198edcffbc516a8fbe6152aa428cdd800c062d",
            "29ac07dccf1f28d506cd623e6e3fc2fa255bd60b",
        ),
        (
            S256,
            30,
            320,
            "c4bedbddb66493e7c7259a3bbbc25f8c7e0ca7fe284d92d431d9cd99a0d214ac",
            "1c69c54766791e315c2cc5c47ecd3ffab87d0d273dd920e70955814c220eacac\
             e6a5946542da3dfe24ff626b4897898cafb7db83bdff3c14fa46fd4b",
            "1da47638d6c9c4d04d74d4640bbd42ab814d9e8cc22f4326695239f96b0693f1\
             2d0dd1152cf44430",
        ),
        (
            S384,
            0,
            128,
            "216ed044769c4c3908188ece61601af8819c30f501d12995df608e06f5e0e607\
             ab54f542ee2da41906dfdb4971f20f9d",
            "638e9506a2c7be69ea346b84629a010c0e225b7548f508162c89f29c1ddbfd70\
             472c2b58e7dc8aa6a5b06602f1c8ed4948cda79c62708218e26ac0e2",
            "d4b144bb40c7cabed13963d7d4318e72",
        ),
        (
            S384,
            10,
            256,
            "8fca201473433f2dc8f6ae51e48de1a5654ce687e711d2d65f0dc5da6fee9a6a\
             3db9d8535d3e4455ab53d35850c88272",
            "195bd88aa2d4211912334fe2fd9bd24522f7d9fb08e04747609bc34f2538089a\
             9d28bbc70b2e1336c3643753cec6e5cd3f246caa915e3c3a6b94d3b6",
            "f51ac86b0f462388d189ed0197ef99c2ff3a65816d8442e5ea304397b98dd11f",
        ),
        (
            S384,
            20,
            160,
            "bc3157b8932e88d1b1cf8e4622137010a242d3527b1d23d6d9c0db9cc9edfc20\
             e5135de823977bf4defafae44d6cdab6",
            "b42a8e43cc2d4e5c69ee5e4f6b19ff6b8071d26bab4dfe45650b92b1f47652d2\
             5162d4b61441d8448c54918ae568ae2fb53091c624dbfffacee51d88",
            "91314bdf542162031643247d6507838eaba50f1a",
        ),
        (
            S384,
            30,
            320,
            "582f968a54b8797b9ea8c655b42e397adb73d773b1984b1e1c429cd597b8015d\
             2f91d59e4136a9d523bf6491a4733c7a",
            "e6d3c193eff34e34f8b7b00e66565aeb01f63206bb27e27aa281592afc06ae1e\
             c5b7eb97a39684ce773d7c3528f2667c1f5d428406e78ce4cf39f652",
            "691726c111e5030b5f9657069107861ecc18bc5835a814c3d2e5092c901cb1fb\
             6c1a7cd3eb0be2a7",
        ),
        (
            S512,
            0,
            128,
            "dd5dbd45593ee2ac139748e7645b450f223d2ff297b73fd71cbcebe71d41653c\
             950b88500de5322d99ef18dfdd30428294c4b3094f4c954334e593bd982ec614",
            "b50b0c963c6b3034b8cf19cd3f5c4ebe4f4985af0c03e575db62e6fdf1ecfe4f\
             28b95d7ce16df85843246e1557ce95bb26cc9a21974bbd2eb69e8355",
            "e5993bf9bd2aa1c45746042e12598155",
        ),
        (
            S512,
            10,
            256,
            "5be2bf7f5e2527e15fe65cde4507d98ba55457006867de9e4f36645bcff4ca38\
             754f92898b1c5544718102593b8c26d45d1fceaea27d97ede9de8b9ebfe88093",
            "004b13c1f628cb7a00d9498937bf437b71fe196cc916c47d298fa296c6b86188\
             073543bbc66b7535eb17b5cf43c37944b6ca1225298a9e563413e5bb",
            "cee0c11be2d8110b808f738523e718447d785878bbb783fb081a055160590072",
        ),
        (
            S512,
            20,
            160,
            "9dd03864a31aa4156ca7a12000f541680ce0a5f4775eef1088ac13368200b447\
             a78d0bf14416a1d583c54b0f11200ff4a8983dd775ce9c0302d262483e300ae6",
            "037369f142d669fca9e87e9f37ae8f2c8d506b753fdfe8a3b72f75cac1c50fa1\
             f8620883b8dcb8dcc67adcc95e70aa624adb9fe1b2cb396692b0d2e8",
            "96e8d1bc01dc95c0bf42c3c38fc54c090373ced4",
        ),
        (
            S512,
            30,
            320,
            "a9f4a2c5af839867f5db5a1e520ab3cca72a166ca60de512fd7fe7e64cf94f92\
             cf1d8b636175f293e003275e021018c3f0ede495997a505ec9a2afeb0495be57",
            "8e9db3335779db688bcfe096668d9c3bc64e193e3529c430e68d09d56c837dd6\
             c0f94678f121a68ee1feea4735da85a49d34a5290aa39f7b40de435f",
            "6db880daac98b078ee389a2164252ded61322d661e2b49247ea921e544675d8f\
             17af2bf66dd40d81",
        ),
    ]
};

#[test]
fn nist_cavp_kbkdf_counter_mode_vectors() {
    for (alg, count, l_bits, ki, fixed, ko) in KBKDF_CAVP {
        let (ki, fixed, ko) = (hex(ki), hex(fixed), hex(ko));
        assert_eq!(fixed.len(), 60);
        assert_eq!(ko.len() * 8, l_bits);
        let ours = kbkdf(alg, &ki, &fixed, l_bits / 8).unwrap();
        assert_eq!(ours.as_slice(), ko.as_slice(), "{alg} COUNT={count}");
        // The independent implementation agrees with the vector too.
        assert_eq!(
            kbkdf_reference(alg, &ki, &fixed, l_bits / 8),
            ko,
            "reference {alg} COUNT={count}"
        );
        // And through a loaded oct key when KI is an oct key size.
        if [32, 48, 64].contains(&ki.len()) {
            let k = oct(&ki);
            assert_eq!(
                k.kbkdf(alg, &fixed, l_bits / 8).unwrap().as_slice(),
                ko.as_slice()
            );
        }
    }
}
