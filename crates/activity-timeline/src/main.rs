//! The activity and timeline service as its own deployment.

use anyhow::Context;
use crm_bus::BusConfig;
use crm_kit::{Config, Db, server};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let _telemetry = crm_kit::telemetry::init("activity-timeline", &config)?;
    let settings = crm_activity_timeline::Settings::from_env()?;
    let db = Db::connect(
        config.database_url.expose_secret(),
        config.db_max_connections,
    )
    .await
    .context("cannot connect to PostgreSQL (DATABASE_URL)")?;
    db.check_runtime_role().await?;
    let bus = BusConfig::new(config.amqp_url.expose_secret(), config.bus_prefix.clone());
    let app = crm_activity_timeline::Application::build(
        &config,
        &settings,
        crm_activity_timeline::Deps { db, bus: Some(bus) },
    )
    .await?;
    tracing::info!(grpc = %app.grpc_addr()?, http = %app.http_addr()?, "activity-timeline listening");
    let cancel = CancellationToken::new();
    server::cancel_on_signals(cancel.clone());
    app.run_until_stopped(cancel).await
}
