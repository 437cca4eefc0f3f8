//! Secrets and signatures: `whsec_` secrets encrypted at rest, and Standard Webhooks
//! signatures (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`).

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use uuid::Uuid;

/// The prefix of every secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// Encrypts and decrypts secrets under a key derived from the key-encryption key, distinct
/// from every other use of it.
#[derive(Clone)]
pub struct SecretCipher {
    key: std::sync::Arc<SecretBox<[u8; 32]>>,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCipher")
    }
}

/// A secret that could not be decrypted (wrong key-encryption key, tampered row).
#[derive(Debug, thiserror::Error)]
#[error("cannot decrypt webhook secret of {0}")]
pub struct DecryptError(pub Uuid);

/// A stored secret: ciphertext and nonce.
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl SecretCipher {
    /// Derives the webhook key from the key-encryption key.
    pub fn derive(kek: &[u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(kek).expect("hmac takes any key");
        mac.update(b"crm webhook secrets v1");
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            key: std::sync::Arc::new(SecretBox::new(Box::new(key))),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.expose_secret().into())
    }

    /// Encrypts a secret; `owner` (the endpoint or source id) is bound as associated data,
    /// so a ciphertext copied to another row does not decrypt.
    pub fn seal(&self, owner: Uuid, secret: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret,
                    aad: owner.as_bytes(),
                },
            )
            .unwrap_or_default();
        Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
        }
    }

    /// Decrypts a secret sealed for `owner`.
    pub fn open(
        &self,
        owner: Uuid,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| DecryptError(owner))?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: owner.as_bytes(),
                },
            )
            .map_err(|_| DecryptError(owner))
    }
}

/// New random key bytes.
pub fn new_key() -> Vec<u8> {
    let mut b = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The `whsec_` form of key bytes, as shown to users.
pub fn display_secret(key: &[u8]) -> SecretString {
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// One `v1,<base64>` signature.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    SigningKey::new(key).sign(id, timestamp, body)
}

/// A signing key whose HMAC state (the padded key blocks) is computed once: each signature
/// then starts from a copy instead of hashing the key again.
#[derive(Clone)]
pub struct SigningKey(Hmac<Sha256>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey")
    }
}

impl SigningKey {
    /// Prepares `key` for signing.
    pub fn new(key: &[u8]) -> Self {
        Self(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key"))
    }

    /// One `v1,<base64>` signature of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// Why an inbound webhook was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing webhook-id, webhook-timestamp or webhook-signature")]
    MissingHeaders,
    #[error("webhook-timestamp is not a Unix time")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from now")]
    StaleTimestamp,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a Standard Webhooks signature header (space-separated `v1,<base64>` entries)
/// against the exact body bytes, with a timestamp at most `tolerance_secs` from `now`.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    if id.is_empty() || timestamp.is_empty() || signatures.is_empty() {
        return Err(VerifyError::MissingHeaders);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if (now - ts).abs() > tolerance_secs {
        return Err(VerifyError::StaleTimestamp);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    for entry in signatures.split_whitespace() {
        let Some(("v1", sig)) = entry.split_once(',') else {
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            continue;
        };
        if mac.clone().verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(
            verify(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &format!("v0,xx {sig}"),
                body,
                1614265330,
                300
            )
            .is_ok()
        );
        assert_eq!(
            verify(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &sig,
                body,
                1614265330 + 301,
                300
            ),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            verify(&key, "msg_other", "1614265330", &sig, body, 1614265330, 300),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn sealed_secrets_open_only_for_their_owner() {
        let c = SecretCipher::derive(&[7u8; 32]);
        let owner = Uuid::now_v7();
        let key = new_key();
        let sealed = c.seal(owner, &key);
        assert_eq!(
            c.open(owner, &sealed.ciphertext, &sealed.nonce).unwrap(),
            key
        );
        assert!(
            c.open(Uuid::now_v7(), &sealed.ciphertext, &sealed.nonce)
                .is_err()
        );
        assert!(
            SecretCipher::derive(&[8u8; 32])
                .open(owner, &sealed.ciphertext, &sealed.nonce)
                .is_err()
        );
        assert!(display_secret(&key).expose_secret().starts_with("whsec_"));
        assert!(key.len() >= 24);
    }
}
