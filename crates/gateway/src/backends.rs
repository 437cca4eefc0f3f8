//! The services behind the gateway, per cell, and the per-request context sent along with
//! every gRPC call (the caller's token, request id, trace context, deadline).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use crm_kit::{ApiError, Caller, TenantId};
use crm_proto::{
    accounts::accounts_service_client::AccountsServiceClient,
    identity::identity_service_client::IdentityServiceClient,
    pipeline::pipeline_service_client::PipelineServiceClient,
    search::search_service_client::SearchServiceClient,
    timeline::timeline_service_client::TimelineServiceClient,
    webhooks::webhook_service_client::WebhookServiceClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::{config::GatewaySettings, error::GwError};

/// The clients of one cell.
#[derive(Clone)]
pub struct Cell {
    pub identity: IdentityServiceClient<Channel>,
    pub accounts: AccountsServiceClient<Channel>,
    pub webhooks: WebhookServiceClient<Channel>,
    pub search: SearchServiceClient<Channel>,
    pub pipeline: PipelineServiceClient<Channel>,
    pub timeline: TimelineServiceClient<Channel>,
}

/// Every cell, and which tenant lives where.
#[derive(Clone)]
pub struct Backends {
    cells: Arc<HashMap<String, Cell>>,
    tenant_cells: Arc<HashMap<TenantId, String>>,
    timeout: Duration,
}

fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

impl Backends {
    /// Lazily connected clients for every configured cell.
    pub fn new(settings: &GatewaySettings) -> anyhow::Result<Self> {
        let mut cells = HashMap::new();
        for (name, urls) in &settings.cells {
            cells.insert(
                name.clone(),
                Cell {
                    identity: IdentityServiceClient::new(channel(
                        &urls.identity,
                        settings.request_timeout,
                    )?),
                    accounts: AccountsServiceClient::new(channel(
                        &urls.accounts,
                        settings.request_timeout,
                    )?),
                    webhooks: WebhookServiceClient::new(channel(
                        &urls.webhooks,
                        settings.request_timeout,
                    )?),
                    search: SearchServiceClient::new(channel(
                        &urls.search,
                        settings.request_timeout,
                    )?),
                    pipeline: PipelineServiceClient::new(channel(
                        &urls.pipeline,
                        settings.request_timeout,
                    )?),
                    timeline: TimelineServiceClient::new(channel(
                        &urls.timeline,
                        settings.request_timeout,
                    )?),
                },
            );
        }
        Ok(Self {
            cells: Arc::new(cells),
            tenant_cells: Arc::new(settings.tenant_cells.clone()),
            timeout: settings.request_timeout,
        })
    }

    /// The cell that serves a tenant; calls made before a tenant is known (sign-up, login,
    /// tokens) go to the default cell, whose identity service is the directory of tenants.
    pub fn cell(&self, tenant: Option<TenantId>) -> Result<&Cell, GwError> {
        let name = tenant
            .and_then(|t| self.tenant_cells.get(&t))
            .map(String::as_str)
            .unwrap_or("default");
        self.cells
            .get(name)
            .ok_or_else(|| ApiError::internal(format!("no cell named {name}")).into())
    }

    /// A client of identity in the tenant's cell (the directory cell when no tenant is known).
    pub fn identity(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<IdentityServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.identity.clone())
    }

    /// A client of accounts-contacts in the tenant's cell.
    pub fn accounts(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<AccountsServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.accounts.clone())
    }

    /// A client of the webhook service in the tenant's cell (the default cell when no
    /// tenant is known: inbound webhooks).
    pub fn webhooks(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<WebhookServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.webhooks.clone())
    }

    /// A client of search in the tenant's cell.
    pub fn search(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<SearchServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.search.clone())
    }

    /// A client of the pipeline service in the tenant's cell.
    pub fn pipeline(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<PipelineServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.pipeline.clone())
    }

    /// A client of the activity and timeline service in the tenant's cell.
    pub fn timeline(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<TimelineServiceClient<Channel>, GwError> {
        Ok(self.cell(tenant)?.timeline.clone())
    }

    /// Builds a gRPC request carrying the context of the REST request.
    pub fn request<T>(&self, ctx: &Ctx, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.timeout);
        if let Some(c) = &ctx.caller
            && let Ok(v) = format!("Bearer {}", c.token).parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        if let Ok(v) = ctx.request_id.parse() {
            req.metadata_mut().insert("x-request-id", v);
        }
        crm_kit::telemetry::inject_context(&mut req);
        req
    }
}

/// What a handler knows of the request beyond its body.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub caller: Option<Caller>,
    pub request_id: String,
    pub client_address: String,
}

impl Ctx {
    /// The authenticated caller; routes behind the auth layer always have one.
    pub fn caller(&self) -> Result<&Caller, GwError> {
        self.caller
            .as_ref()
            .ok_or_else(|| ApiError::unauthenticated("authentication required").into())
    }

    /// The caller's tenant, if authenticated.
    pub fn tenant(&self) -> Option<TenantId> {
        self.caller.as_ref().map(|c| c.tenant)
    }
}

/// The client address as seen by the gateway.
#[derive(Clone, Debug)]
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = GwError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            caller: parts.extensions.get::<Caller>().cloned(),
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            client_address: parts
                .extensions
                .get::<ClientAddress>()
                .map(|a| a.0.clone())
                .unwrap_or_default(),
        })
    }
}
