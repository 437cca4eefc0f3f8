//! The gateway as its own deployment.

use anyhow::Context;
use crm_kit::{Cache, Config, server};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = crm_kit::telemetry::init("gateway", &config)?;
    let settings = crm_gateway::GatewaySettings::from_env(&config.identity_url)?;
    let cache = Cache::connect(config.redis_url.expose_secret())
        .await
        .context("cannot connect to Redis (REDIS_URL)")?;
    let app = crm_gateway::Application::build(&config, settings, cache).await?;
    tracing::info!(addr = %app.addr()?, "gateway listening");
    let cancel = CancellationToken::new();
    server::cancel_on_signals(cancel.clone());
    app.run_until_stopped(cancel).await
}
