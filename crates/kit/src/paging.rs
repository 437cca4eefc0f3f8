//! Opaque page tokens: signed, and bound to the tenant and the query that produced them.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{
    error::{ApiError, ApiResult, ErrorCode, FieldViolation},
    ids::TenantId,
};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 200;

/// Signs and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

/// Validates a page size: 0 means the default, above the maximum or negative is refused.
pub fn page_size(raw: i32, field: &str) -> ApiResult<u64> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > 0 && (n as u64) <= MAX_PAGE_SIZE => Ok(n as u64),
        _ => Err(ApiError::invalid(
            field,
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        )),
    }
}

impl PageTokens {
    /// Derives the signing key from a secret (e.g. the key-encryption key).
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("hmac accepts keys of any length");
        mac.update(b"crm page tokens v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("hmac accepts keys of any length")
    }

    fn fingerprint(tenant: TenantId, query: &str) -> String {
        let mut h = Sha256::new();
        h.update(tenant.to_string());
        h.update([0]);
        h.update(query);
        URL_SAFE_NO_PAD.encode(&h.finalize()[..12])
    }

    /// A token that resumes after `position` for this tenant and query.
    pub fn encode(&self, tenant: TenantId, query: &str, position: &str) -> String {
        let body = format!(
            "{}.{}",
            Self::fingerprint(tenant, query),
            URL_SAFE_NO_PAD.encode(position)
        );
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The position of a token; empty means the first page.
    pub fn decode(
        &self,
        token: &str,
        tenant: TenantId,
        query: &str,
        field: &str,
    ) -> ApiResult<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            ApiError::new(ErrorCode::InvalidCursor, format!("{field}: {why}")).with_fields(vec![
                FieldViolation {
                    field: field.to_owned(),
                    message: why.to_owned(),
                },
            ])
        };
        let mut parts = token.rsplitn(2, '.');
        let (Some(sig), Some(body)) = (parts.next(), parts.next()) else {
            return Err(bad("malformed cursor"));
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| bad("malformed cursor"))?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| bad("cursor was tampered with"))?;
        let (fp, pos) = body
            .split_once('.')
            .ok_or_else(|| bad("malformed cursor"))?;
        if fp != Self::fingerprint(tenant, query) {
            return Err(bad("cursor belongs to another query"));
        }
        let pos = URL_SAFE_NO_PAD
            .decode(pos)
            .map_err(|_| bad("malformed cursor"))?;
        String::from_utf8(pos)
            .map(Some)
            .map_err(|_| bad("malformed cursor"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_and_signed() {
        let p = PageTokens::derive(b"secret");
        let t1 = TenantId::new();
        let t2 = TenantId::new();
        let tok = p.encode(t1, "users", "abc");
        assert_eq!(
            p.decode(&tok, t1, "users", "page_token")
                .unwrap()
                .as_deref(),
            Some("abc")
        );
        assert_eq!(
            p.decode(&tok, t2, "users", "page_token").unwrap_err().code,
            ErrorCode::InvalidCursor
        );
        assert!(p.decode(&tok, t1, "teams", "page_token").is_err());
        let mut tampered = tok.clone();
        tampered.replace_range(0..1, if tok.starts_with('A') { "B" } else { "A" });
        assert!(p.decode(&tampered, t1, "users", "page_token").is_err());
        assert_eq!(p.decode("", t1, "users", "page_token").unwrap(), None);
        assert!(page_size(0, "page_size").is_ok());
        assert!(page_size(201, "page_size").is_err());
        assert!(page_size(-1, "page_size").is_err());
    }
}
