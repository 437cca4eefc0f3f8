//! Argon2id password hashing off the async runtime, with bounded concurrency.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// OWASP's Argon2id minimum: 19 MiB, 2 iterations, 1 lane.
pub const MEMORY_KIB: u32 = 19_456;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    /// The stored hash uses other parameters and should be replaced.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords on the blocking pool, a few at a time.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    params: Params,
    dummy: Arc<String>,
}

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(params: Params, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(hasher(params)
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

impl Passwords {
    /// A hasher at the OWASP parameters, running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        // Verifying unknown accounts against this hash makes them cost the same as known ones.
        let dummy = hash_blocking(params.clone(), "not-a-real-password-for-timing")
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes a password.
    pub async fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        let _permit = self.permits.acquire().await?;
        let params = self.params.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(params, pw.expose_secret()))
            .await?
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))
    }

    /// Verifies a password; with no stored hash it verifies against a dummy and fails.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> anyhow::Result<Verified> {
        let _permit = self.permits.acquire().await?;
        let known = stored.is_some();
        let stored = stored.unwrap_or(&self.dummy).to_owned();
        let pw = password.clone();
        let want = self.params.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Verified {
                    ok: false,
                    needs_rehash: false,
                };
            };
            let ok = Argon2::default()
                .verify_password(pw.expose_secret().as_bytes(), &parsed)
                .is_ok()
                && known;
            let current = parsed.algorithm.as_str() == "argon2id"
                && Params::try_from(&parsed).is_ok_and(|p| {
                    p.m_cost() >= want.m_cost()
                        && p.t_cost() >= want.t_cost()
                        && p.p_cost() >= want.p_cost()
                });
            Verified {
                ok,
                needs_rehash: ok && !current,
            }
        })
        .await
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_old_parameters_need_rehash() {
        let p = Passwords::new(2).unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let h = p.hash(&pw).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            p.verify(&pw, Some(&h)).await.unwrap(),
            Verified {
                ok: true,
                needs_rehash: false
            }
        );
        let wrong = SecretString::from("wrong password here");
        assert!(!p.verify(&wrong, Some(&h)).await.unwrap().ok);
        assert!(!p.verify(&pw, None).await.unwrap().ok);

        let weak = hash_blocking(
            Params::new(8, 1, 1, None).unwrap(),
            "correct horse battery staple",
        )
        .unwrap();
        assert_eq!(
            p.verify(&pw, Some(&weak)).await.unwrap(),
            Verified {
                ok: true,
                needs_rehash: true
            }
        );
    }
}
