//! `TokenVerifier::verify` per call, with the keys cached and with a fresh verifier that
//! reads identity's key store in PostgreSQL, beside a bare `jsonwebtoken::decode`.
//!
//! `cargo run -p crm-bench --release --bin token_verify`

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{Samples, Scratch, machine_line, rate, ratio, us};
use crm_identity::keys::KeyStore;
use crm_kit::{
    TokenVerifier,
    auth::{ACCESS_TOKEN_TYP, AccessClaims, JwksSource},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::SecretBox;
use uuid::Uuid;

const ISSUER: &str = "crm-identity";
const AUDIENCE: &str = "crm-api";

#[derive(Parser, Debug)]
#[command(about = "TokenVerifier::verify, cached and uncached, beside a bare jsonwebtoken::decode")]
struct Args {
    /// Calls per round on the baseline and the cached path.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls per round with a fresh verifier (each one reads the keys from PostgreSQL).
    #[arg(long, default_value_t = 500)]
    uncached_calls: usize,
    /// Rounds; the paths take turns in each, so changes in machine load hit them alike.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Stop measuring after this many seconds, whatever is left.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Baseline,
    Cached,
    Uncached,
}

impl Path {
    const ALL: [Path; 3] = [Path::Baseline, Path::Cached, Path::Uncached];

    fn label(self) -> &'static str {
        match self {
            Path::Baseline => "baseline: bare `jsonwebtoken::decode`, key in hand",
            Path::Cached => "`TokenVerifier::verify`, keys cached",
            Path::Uncached => "`TokenVerifier::verify`, fresh verifier (JWKS from PostgreSQL)",
        }
    }
}

/// Everything a measured call needs, built once.
struct Fixture {
    token: String,
    key: DecodingKey,
    validation: Validation,
    source: Arc<dyn JwksSource>,
    cached: TokenVerifier,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    let scratch = Scratch::create("token").await?;
    let outcome = tokio::select! {
        r = run(&scratch, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.cleanup().await;
    outcome
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let db = scratch.runtime_db(4).await?;
    let mut kek = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut kek);
    let keys = KeyStore::new(db, SecretBox::new(Box::new(kek)));
    keys.ensure_current()
        .await
        .context("creating a signing key")?;
    let fixture = fixture(&keys).await?;

    let mut samples = [Samples::default(), Samples::default(), Samples::default()];
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    'rounds: for round in 0..args.rounds {
        for i in 0..Path::ALL.len() {
            // Rotate who goes first so no path always runs right after another.
            let path = Path::ALL[(round + i) % Path::ALL.len()];
            let calls = match path {
                Path::Uncached => args.uncached_calls,
                _ => args.calls,
            };
            let s = measure(&fixture, path, calls, deadline).await?;
            samples[path as usize].merge(s);
            if Instant::now() >= deadline {
                eprintln!("note: stopped after {} s (--max-secs)", args.max_secs);
                break 'rounds;
            }
        }
    }
    print_table(&samples);
    Ok(())
}

/// Signs a token as identity does and checks that every path accepts it.
async fn fixture(keys: &KeyStore) -> anyhow::Result<Fixture> {
    let signing = keys.current().await.context("reading the signing key")?;
    let public = keys.public_keys().await.context("reading the JWKS")?;
    let jwk = public
        .iter()
        .find(|k| k.kid == signing.kid)
        .context("the current key is not in the JWKS")?;
    let key = DecodingKey::from_ed_components(&jwk.x).context("decoding the public key")?;
    let token = sign(&signing.kid, &signing.key)?;

    // The verifier's own settings, so the baseline validates exactly the same claims.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.leeway = 30;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
    jsonwebtoken::decode::<AccessClaims>(&token, &key, &validation)
        .context("the baseline refuses the token")?;

    let source: Arc<dyn JwksSource> = Arc::new(keys.clone());
    let cached = TokenVerifier::new(source.clone(), ISSUER, AUDIENCE);
    cached
        .verify(&token)
        .await
        .context("the verifier refuses the token")?;
    Ok(Fixture {
        token,
        key,
        validation,
        source,
        cached,
    })
}

/// An access token shaped like the ones identity issues at login.
fn sign(kid: &str, key: &EncodingKey) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = AccessClaims {
        iss: ISSUER.into(),
        sub: Uuid::now_v7().to_string(),
        aud: AUDIENCE.into(),
        // Long enough that no token expires during a run.
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: Uuid::now_v7().to_string(),
        tid: Uuid::now_v7().to_string(),
        roles: vec!["sales_rep".into()],
        teams: vec![Uuid::now_v7().to_string()],
        client_id: None,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, key).context("signing the token")
}

async fn measure(
    f: &Fixture,
    path: Path,
    calls: usize,
    deadline: Instant,
) -> anyhow::Result<Samples> {
    let mut s = Samples::default();
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        match path {
            Path::Baseline => {
                let data = jsonwebtoken::decode::<AccessClaims>(&f.token, &f.key, &f.validation)
                    .context("baseline decode")?;
                black_box(data);
            }
            Path::Cached => {
                let caller = f.cached.verify(&f.token).await.context("cached verify")?;
                black_box(caller);
            }
            Path::Uncached => {
                let verifier = TokenVerifier::new(f.source.clone(), ISSUER, AUDIENCE);
                let caller = verifier.verify(&f.token).await.context("uncached verify")?;
                black_box(caller);
            }
        }
        let now = Instant::now();
        s.record(now - t, 1);
        if now >= deadline {
            break;
        }
    }
    s.add_wall(start.elapsed());
    Ok(s)
}

fn print_table(samples: &[Samples; 3]) {
    let base = samples[Path::Baseline as usize].summary();
    println!("{}", machine_line());
    println!();
    println!(
        "| path | calls | ops/s | p50 µs | p95 µs | p99 µs | ops/s ÷ baseline | p50 ÷ baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for path in Path::ALL {
        let s = samples[path as usize].summary();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            path.label(),
            s.samples,
            rate(s.per_sec),
            us(s.p50),
            us(s.p95),
            us(s.p99),
            ratio(s.per_sec, base.per_sec),
            ratio(s.p50.as_secs_f64(), base.p50.as_secs_f64()),
        );
    }
}
