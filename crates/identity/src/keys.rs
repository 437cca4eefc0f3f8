//! Token signing keys: Ed25519, stored encrypted with the key-encryption key, rotated on demand.
//! The JWKS publishes the current and the previous key so tokens signed before a rotation
//! stay valid until they expire.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use crm_kit::{Db, auth::PublicJwk};
use jsonwebtoken::EncodingKey;
use rand::RngCore;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, TransactionTrait};
use secrecy::{ExposeSecret, SecretBox};
use tokio::sync::RwLock;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// How often a replica re-reads the keys, to pick up a rotation made elsewhere.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// The key that signs new tokens.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub key: EncodingKey,
}

#[derive(FromQueryResult)]
struct KeyRow {
    kid: String,
    public_x: String,
    private_enc: Vec<u8>,
    nonce: Vec<u8>,
    status: String,
}

struct Loaded {
    current: Option<SigningKey>,
    public: Vec<PublicJwk>,
    at: Instant,
}

/// Reads, creates and rotates signing keys.
#[derive(Clone)]
pub struct KeyStore {
    db: Db,
    kek: Arc<SecretBox<[u8; 32]>>,
    loaded: Arc<RwLock<Loaded>>,
}

/// Key store failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    #[error("signing key {0} cannot be decrypted: wrong CRM_KEY_ENCRYPTION_KEY?")]
    Decrypt(String),
    #[error("no current signing key")]
    NoCurrentKey,
}

fn new_kid() -> String {
    let mut b = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

impl KeyStore {
    /// A store over the identity schema.
    pub fn new(db: Db, kek: SecretBox<[u8; 32]>) -> Self {
        Self {
            db,
            kek: Arc::new(kek),
            loaded: Arc::new(RwLock::new(Loaded {
                current: None,
                public: Vec::new(),
                at: Instant::now(),
            })),
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.kek.expose_secret().into())
    }

    /// Creates a key when there is none; safe when several replicas start at once.
    pub async fn ensure_current(&self) -> Result<(), KeyError> {
        let tx = self.db.conn().begin().await?;
        tx.execute_unprepared("SELECT pg_advisory_xact_lock(hashtext('identity.signing_keys'))")
            .await?;
        let exists = tx
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT 1 AS one FROM identity.signing_keys WHERE status = 'current'",
            ))
            .await?
            .is_some();
        if !exists {
            self.insert_new(&tx).await?;
        }
        tx.commit().await?;
        self.reload().await
    }

    async fn insert_new<C: ConnectionTrait>(&self, conn: &C) -> Result<String, KeyError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let kid = new_kid();
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let enc = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &seed,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Decrypt(kid.clone()))?;
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO identity.signing_keys (kid, alg, public_x, private_enc, nonce, status) \
             VALUES ($1, 'EdDSA', $2, $3, $4, 'current')",
            [
                kid.clone().into(),
                URL_SAFE_NO_PAD.encode(public).into(),
                enc.into(),
                nonce.to_vec().into(),
            ],
        ))
        .await?;
        tracing::info!(kid = %kid, "signing key created");
        Ok(kid)
    }

    /// Makes a new current key; the old one stays in the JWKS as previous, older ones retire.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        let tx = self.db.conn().begin().await?;
        tx.execute_unprepared("SELECT pg_advisory_xact_lock(hashtext('identity.signing_keys'))")
            .await?;
        tx.execute_unprepared(
            "UPDATE identity.signing_keys SET status = 'retired', retired_at = now() WHERE status = 'previous'",
        )
        .await?;
        tx.execute_unprepared(
            "UPDATE identity.signing_keys SET status = 'previous' WHERE status = 'current'",
        )
        .await?;
        let kid = self.insert_new(&tx).await?;
        tx.commit().await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Re-reads the keys from the database.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let rows = KeyRow::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            "SELECT kid, public_x, private_enc, nonce, status FROM identity.signing_keys \
             WHERE status IN ('current', 'previous') ORDER BY created_at DESC",
        ))
        .all(self.db.conn())
        .await?;
        let mut current = None;
        let mut public = Vec::new();
        for r in rows {
            if r.status == "current" {
                let nonce: [u8; 12] = r
                    .nonce
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Decrypt(r.kid.clone()))?;
                let seed = self
                    .cipher()
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: &r.private_enc,
                            aad: r.kid.as_bytes(),
                        },
                    )
                    .map_err(|_| KeyError::Decrypt(r.kid.clone()))?;
                let mut der = PKCS8_ED25519_PREFIX.to_vec();
                der.extend_from_slice(&seed);
                current = Some(SigningKey {
                    kid: r.kid.clone(),
                    key: EncodingKey::from_ed_der(&der),
                });
            }
            public.push(PublicJwk {
                kid: r.kid,
                x: r.public_x,
            });
        }
        let mut l = self.loaded.write().await;
        l.current = current;
        l.public = public;
        l.at = Instant::now();
        Ok(())
    }

    async fn fresh(&self) -> Result<(), KeyError> {
        let stale = {
            let l = self.loaded.read().await;
            l.current.is_none() || l.at.elapsed() > RELOAD_EVERY
        };
        if stale {
            self.reload().await?;
        }
        Ok(())
    }

    /// The key that signs new tokens.
    pub async fn current(&self) -> Result<SigningKey, KeyError> {
        self.fresh().await?;
        self.loaded
            .read()
            .await
            .current
            .clone()
            .ok_or(KeyError::NoCurrentKey)
    }

    /// The public keys to publish: current and previous, read afresh so that a rotation made by
    /// any replica is published by every replica at once (clients cache the JWKS anyway).
    pub async fn public_keys(&self) -> Result<Vec<PublicJwk>, KeyError> {
        self.reload().await?;
        Ok(self.loaded.read().await.public.clone())
    }
}

/// Identity verifies its own tokens from its own key store, without a network hop.
#[async_trait::async_trait]
impl crm_kit::auth::JwksSource for KeyStore {
    async fn fetch(&self) -> anyhow::Result<Vec<PublicJwk>> {
        self.reload().await?;
        Ok(self.loaded.read().await.public.clone())
    }
}
