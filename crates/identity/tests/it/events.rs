//! Committed changes reach the bus as CloudEvents; refused ones publish nothing.

use crm_proto::identity as pb;
use tonic::Code;

use crate::helpers::{authed, next_event, refused, spawn_app_with_bus};

#[tokio::test]
async fn a_created_user_is_published_and_a_refused_one_is_not() {
    let app = spawn_app_with_bus().await;
    let probe = app.probe("#").await;
    let a = app.sign_up().await;
    let mut c = app.client();

    let mut types = Vec::new();
    for _ in 0..2 {
        let (key, event) = next_event(&probe).await;
        assert_eq!(event["type"], key.as_str(), "routing key is the type");
        types.push(key);
    }
    types.sort();
    assert_eq!(types, ["tenant.created", "user.created"]);

    let email = format!("new.hire@{}.example.com", a.slug());
    let user = app.create_user(a.token(), &email, "sales_rep", None).await;
    let (key, event) = next_event(&probe).await;
    assert_eq!(key, "user.created");
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["source"], "crm/identity");
    assert_eq!(event["subject"], user.id.as_str());
    assert_eq!(event["tenantid"], a.tenant.id.as_str());
    assert_eq!(event["actorid"], a.user.id.as_str());
    assert_eq!(event["data"]["entityType"], "user");
    assert_eq!(event["data"]["entityId"], user.id.as_str());
    assert_eq!(event["data"]["after"]["email"], email.as_str());
    assert_eq!(event["data"]["after"]["role"], "sales_rep");
    assert!(event["data"]["before"].is_null());
    assert!(
        !event.to_string().contains("argon2"),
        "no password hash on the bus: {event}"
    );

    let bad = format!("not-an-email.{}", a.slug());
    refused(
        c.create_user(authed(
            a.token(),
            pb::CreateUserRequest {
                email: bad.clone(),
                role: "sales_rep".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::InvalidArgument,
    );
    // The relay publishes in commit order: the next event after a marker change is the
    // marker itself only if the refused call published nothing.
    let team = c
        .create_team(authed(
            a.token(),
            pb::CreateTeamRequest {
                name: "Marker".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create team")
        .into_inner()
        .team
        .expect("team");
    let (key, event) = next_event(&probe).await;
    assert_eq!(key, "team.created", "{event}");
    assert_eq!(event["subject"], team.id.as_str());
    assert_eq!(
        app.admin_count(
            "SELECT count(*) FROM identity.outbox WHERE payload::text LIKE $1",
            vec![format!("%{bad}%").into()]
        )
        .await,
        0
    );
}
