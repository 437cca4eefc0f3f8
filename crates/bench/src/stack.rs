//! An in-process stack for the benchmarks that go through the gateway: identity,
//! accounts-contacts and pipeline, the service under test, and a gateway in front, each on
//! ports 0 and all on one runtime pool of a [`Scratch`] database, with the rate limits
//! raised so they are counted but never refuse.

use std::collections::HashMap;

use anyhow::Context as _;
use crm_kit::{Cache, Config, Db, TenantId};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Scratch;

const NO_LIMIT: &str = "10000000";

/// What runs beside identity, accounts-contacts, pipeline and the gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct Services {
    /// accounts-contacts publishes its events (through the relay and RabbitMQ).
    pub accounts_events: bool,
    /// activity-timeline, consuming events.
    pub timeline: bool,
    /// search, consuming events.
    pub search: bool,
}

/// A running stack; everything stops when `cancel` fires.
pub struct Stack {
    /// The gateway's REST base, `http://…/api/v1`.
    pub base: String,
    /// The runtime pool the services share.
    pub db: Db,
}

/// A tenant signed up through the gateway, and its admin.
pub struct SignedUp {
    pub token: String,
    pub tenant: TenantId,
    pub admin: Uuid,
}

impl Stack {
    /// Signs a new tenant (a random slug) up through the gateway, its admin
    /// `admin@bench.test` with `password`.
    pub async fn signup(&self, http: &reqwest::Client, password: &str) -> anyhow::Result<SignedUp> {
        let slug = format!("b-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let signed: Value = http
            .post(format!("{}/auth/signup", self.base))
            .json(&json!({"tenantName": "Bench", "tenantSlug": slug, "email": "admin@bench.test", "password": password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(SignedUp {
            token: signed["accessToken"].as_str().context("token")?.to_owned(),
            tenant: signed["tenant"]["id"]
                .as_str()
                .context("tenant")?
                .parse()
                .map_err(|_| anyhow::anyhow!("tenant id"))?,
            admin: Uuid::parse_str(signed["user"]["id"].as_str().context("user")?)?,
        })
    }
}

fn port_vars(service: &str) -> [(String, String); 2] {
    [
        (format!("CRM_{service}_GRPC_PORT"), "0".to_owned()),
        (format!("CRM_{service}_HTTP_PORT"), "0".to_owned()),
    ]
}

impl Scratch {
    /// Builds and starts the stack on a runtime pool of `pool` connections.
    pub async fn stack(
        &self,
        with: Services,
        pool: u32,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Stack> {
        let mut env: HashMap<String, String> = HashMap::from([
            ("DATABASE_URL".into(), self.runtime_url.clone()),
            ("CRM_DATABASE_ADMIN_URL".into(), self.admin_url.clone()),
            ("REDIS_URL".into(), self.redis_url.clone()),
            ("CRM_GATEWAY_HTTP_PORT".into(), "0".into()),
            ("CRM_RATE_LIMIT_PER_TENANT".into(), NO_LIMIT.into()),
            ("CRM_RATE_LIMIT_PER_CLIENT".into(), NO_LIMIT.into()),
            ("CRM_RATE_LIMIT_ANONYMOUS".into(), NO_LIMIT.into()),
        ]);
        for service in [
            "IDENTITY",
            "ACCOUNTS_CONTACTS",
            "PIPELINE",
            "ACTIVITY_TIMELINE",
            "SEARCH",
        ] {
            env.extend(port_vars(service));
        }
        let bus = |on: bool| on.then(|| self.bus.clone());
        let config = Config::from_map(&env)?;
        let db = self.runtime_db(pool).await?;
        let cache = Cache::connect(&self.redis_url)
            .await
            .context("connecting to Redis: is it running?")?;
        let identity = crm_identity::Application::build(
            &config,
            crm_identity::Deps {
                db: db.clone(),
                cache: cache.clone(),
                bus: None,
            },
        )
        .await
        .context("building the identity service")?;
        env.insert(
            "CRM_IDENTITY_URL".into(),
            format!("http://{}", identity.grpc_addr()?),
        );
        tokio::spawn(identity.run_until_stopped(cancel.clone()));
        let config = Config::from_map(&env)?;
        let accounts = crm_accounts_contacts::Application::build(
            &config,
            crm_accounts_contacts::Deps {
                db: db.clone(),
                bus: bus(with.accounts_events),
            },
        )
        .await
        .context("building the accounts-contacts service")?;
        env.insert(
            "CRM_ACCOUNTS_CONTACTS_URL".into(),
            format!("http://{}", accounts.grpc_addr()?),
        );
        tokio::spawn(accounts.run_until_stopped(cancel.clone()));
        let pipeline = crm_pipeline::Application::build(
            &config,
            &crm_pipeline::Settings::from_map(&env)?,
            crm_pipeline::Deps {
                db: db.clone(),
                bus: None,
            },
        )
        .await
        .context("building the pipeline service")?;
        env.insert(
            "CRM_PIPELINE_URL".into(),
            format!("http://{}", pipeline.grpc_addr()?),
        );
        tokio::spawn(pipeline.run_until_stopped(cancel.clone()));
        if with.timeline {
            self.consumer("activity-timeline");
            let timeline = crm_activity_timeline::Application::build(
                &config,
                &crm_activity_timeline::Settings::from_map(&env)?,
                crm_activity_timeline::Deps {
                    db: db.clone(),
                    bus: bus(true),
                },
            )
            .await
            .context("building the activity-timeline service")?;
            env.insert(
                "CRM_ACTIVITY_TIMELINE_URL".into(),
                format!("http://{}", timeline.grpc_addr()?),
            );
            tokio::spawn(timeline.run_until_stopped(cancel.clone()));
        }
        if with.search {
            self.consumer("search");
            let search = crm_search::Application::build(
                &config,
                &crm_search::app::Settings::from_map(&env)?,
                crm_search::Deps {
                    db: db.clone(),
                    bus: bus(true),
                },
            )
            .await
            .context("building the search service")?;
            env.insert(
                "CRM_SEARCH_URL".into(),
                format!("http://{}", search.grpc_addr()?),
            );
            tokio::spawn(search.run_until_stopped(cancel.clone()));
        }
        let gw_settings = crm_gateway::GatewaySettings::from_map(&env, &config.identity_url)?;
        let gateway = crm_gateway::Application::build(&config, gw_settings, cache)
            .await
            .context("building the gateway")?;
        let base = format!("http://{}/api/v1", gateway.addr()?);
        tokio::spawn(gateway.run_until_stopped(cancel.clone()));
        Ok(Stack { base, db })
    }
}
