//! A real broker outage on the local RabbitMQ node, for tests that show nothing committed is
//! lost while the broker is down: `rabbitmqctl stop_app`, then `start_app`. Every
//! connection to the node drops, so only a test binary of its own may use it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether the node's application is running.
pub fn broker_running() -> bool {
    Command::new("rabbitmq-diagnostics")
        .args(["-q", "check_running"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The broker stopped until [`Outage::end`]; dropping it (a failed test) starts the broker
/// again, so nothing after it is left without one.
#[must_use = "the broker stays down until the outage ends"]
pub struct Outage {
    ended: bool,
}

impl Outage {
    /// Stops the node's application: every client connection drops.
    pub async fn begin() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
            .await
            .context("stop_app task")??;
        Ok(Self { ended: false })
    }

    /// Starts the application again and waits (up to a minute) until it answers.
    pub async fn end(mut self) -> anyhow::Result<()> {
        self.ended = true;
        tokio::task::spawn_blocking(|| rabbitmqctl(&["start_app"]))
            .await
            .context("start_app task")??;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !tokio::task::spawn_blocking(broker_running)
            .await
            .unwrap_or(false)
        {
            if Instant::now() > deadline {
                bail!("RabbitMQ is not running a minute after start_app");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.ended && !broker_running() {
            let _ = rabbitmqctl(&["start_app"]);
        }
    }
}
