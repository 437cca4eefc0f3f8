//! What operators and other services rely on: the JWKS over HTTP, liveness, readiness,
//! metrics, gRPC health and reflection.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use crm_proto::identity as pb;
use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{channel, http_get, spawn_app, spawn_app_with_bus};

#[tokio::test]
async fn http_serves_the_jwks_health_and_metrics() {
    let app = spawn_app_with_bus().await;

    let (status, body) = http_get(&app.http, "/.well-known/jwks.json").await;
    assert_eq!(status, 200, "{body}");
    let jwks: serde_json::Value = serde_json::from_str(&body).expect("jwks is json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty(), "{jwks}");
    for k in keys {
        assert_eq!(
            (&k["kty"], &k["crv"], &k["alg"], &k["use"]),
            (
                &serde_json::json!("OKP"),
                &serde_json::json!("Ed25519"),
                &serde_json::json!("EdDSA"),
                &serde_json::json!("sig")
            ),
            "{k}"
        );
        let x = URL_SAFE_NO_PAD
            .decode(k["x"].as_str().expect("x"))
            .expect("x is base64url");
        assert_eq!(x.len(), 32, "an Ed25519 public key");
    }
    let grpc_keys = app
        .client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("jwks over grpc")
        .into_inner()
        .keys;
    let kids: Vec<&str> = keys.iter().filter_map(|k| k["kid"].as_str()).collect();
    let grpc_kids: Vec<&str> = grpc_keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, grpc_kids);

    assert_eq!(http_get(&app.http, "/livez").await.0, 200);
    let (status, body) = http_get(&app.http, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    // Scrape once first: the process-wide recorder is installed by the first scrape.
    http_get(&app.http, "/metrics").await;
    app.client()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("a counted grpc call");
    let (status, body) = http_get(&app.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("crm_grpc_requests_total"), "{body}");
}

#[tokio::test]
async fn grpc_health_and_reflection_report_the_service() {
    let app = spawn_app().await;
    let ch = channel(app.grpc_addr).await;
    let mut health = HealthClient::new(ch.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "crm.identity.v1.IdentityService".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let unknown = health
        .check(HealthCheckRequest {
            service: "crm.nothing.v1.NothingService".into(),
        })
        .await
        .expect_err("an unknown service has no health");
    assert_eq!(unknown.code(), Code::NotFound);

    let mut reflection = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .next()
        .await
        .expect("a reflection response")
        .expect("reflection succeeds");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"crm.identity.v1.IdentityService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}
