// Java's SunPKCS11 provider against a PKCS#11 module: run by
// tests/pkcs11/interop.sh, which compiles it into its work directory.
//
//   java SignVerify SUNPKCS11_CONFIG PIN EC_LABEL AES_LABEL
//
// Prints one line per step, `RESULT<TAB>step<TAB>pass|fail<TAB>detail`, and
// carries on after a failed step. Signatures made through the token are
// verified with Java's default provider (SunEC), never with the token.

import java.nio.charset.StandardCharsets;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Provider;
import java.security.PublicKey;
import java.security.Security;
import java.security.Signature;
import java.security.cert.Certificate;
import java.security.spec.ECGenParameterSpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class SignVerify {
    interface Step {
        String run() throws Exception;
    }

    static boolean failed = false;

    static void step(String name, Step s) {
        String status;
        String detail;
        try {
            detail = s.run();
            status = "pass";
        } catch (Throwable e) {
            failed = true;
            status = "fail";
            StringBuilder b = new StringBuilder();
            for (Throwable c = e; c != null; c = c.getCause()) {
                if (b.length() > 0) {
                    b.append(" <- ");
                }
                b.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
            }
            detail = b.toString();
        }
        detail = detail.replace('\t', ' ').replace('\n', ' ');
        System.out.println("RESULT\t" + name + "\t" + status + "\t" + detail);
    }

    /** The public key re-made by the default provider: no token involved. */
    static PublicKey plain(PublicKey k) throws Exception {
        return KeyFactory.getInstance("EC", "SunEC")
                .generatePublic(new X509EncodedKeySpec(k.getEncoded()));
    }

    static String signAndVerify(Provider p11, PrivateKey priv, PublicKey pub) throws Exception {
        byte[] msg = ("SunPKCS11 interop " + System.nanoTime()).getBytes(StandardCharsets.UTF_8);
        Signature s = Signature.getInstance("SHA256withECDSA", p11);
        s.initSign(priv);
        s.update(msg);
        byte[] sig = s.sign();
        Signature v = Signature.getInstance("SHA256withECDSA", "SunEC");
        v.initVerify(plain(pub));
        v.update(msg);
        if (!v.verify(sig)) {
            throw new IllegalStateException("SunEC rejects the signature");
        }
        // A corrupted message must not verify.
        msg[0] ^= 1;
        v.initVerify(plain(pub));
        v.update(msg);
        if (v.verify(sig)) {
            throw new IllegalStateException("SunEC accepts a signature over another message");
        }
        return "SHA256withECDSA by " + s.getProvider().getName() + " (" + sig.length
                + "-byte DER), verified by SunEC";
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: SignVerify SUNPKCS11_CONFIG PIN EC_LABEL AES_LABEL");
            System.exit(2);
        }
        String config = args[0];
        char[] pin = args[1].toCharArray();
        String ecLabel = args[2];
        String aesLabel = args[3];

        Provider[] holder = new Provider[1];
        KeyStore[] ks = new KeyStore[1];
        step("java-login", () -> {
            Provider p = Security.getProvider("SunPKCS11").configure(config);
            Security.addProvider(p);
            holder[0] = p;
            KeyStore k = KeyStore.getInstance("PKCS11", p);
            k.load(null, pin);
            ks[0] = k;
            return p.getName() + " loaded, keystore opened with the PIN";
        });
        Provider p11 = holder[0];
        if (p11 == null || ks[0] == null) {
            System.exit(1);
        }
        KeyStore store = ks[0];

        List<String> aliases = new ArrayList<>(Collections.list(store.aliases()));
        Collections.sort(aliases);
        step("java-keystore-secret-key", () -> {
            if (!store.entryInstanceOf(aesLabel, KeyStore.SecretKeyEntry.class)) {
                throw new IllegalStateException(
                        aesLabel + " is not a SecretKeyEntry (aliases: " + aliases + ")");
            }
            return aliases.size() + " aliases, " + aesLabel + " SecretKeyEntry";
        });

        // SunPKCS11 shows a private key only with a certificate of its CKA_ID.
        step("java-keystore-private-key", () -> {
            if (!store.entryInstanceOf(ecLabel, KeyStore.PrivateKeyEntry.class)) {
                throw new IllegalStateException(
                        ecLabel + " is not a PrivateKeyEntry (aliases: " + aliases + ")");
            }
            return ecLabel + " PrivateKeyEntry";
        });

        step("java-sign-token-key", () -> {
            PrivateKey priv = (PrivateKey) store.getKey(ecLabel, null);
            if (priv == null) {
                throw new IllegalStateException("no private key " + ecLabel);
            }
            Certificate cert = store.getCertificate(ecLabel);
            if (cert == null) {
                throw new IllegalStateException("no certificate " + ecLabel);
            }
            return ecLabel + ": " + signAndVerify(p11, priv, cert.getPublicKey());
        });

        step("java-sign-session-key", () -> {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", p11);
            g.initialize(new ECGenParameterSpec("secp256r1"));
            KeyPair kp = g.generateKeyPair();
            return "P-256 session key pair generated on the token: "
                    + signAndVerify(p11, kp.getPrivate(), kp.getPublic());
        });

        System.exit(failed ? 1 : 0);
    }
}
