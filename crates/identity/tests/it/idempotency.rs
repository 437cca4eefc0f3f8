//! Creates with a request_id happen once; the same id with another request is refused;
//! an admin cannot take away their own role.

use crm_kit::ErrorCode;
use crm_proto::identity as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{authed, refused, spawn_app};

#[tokio::test]
async fn a_request_id_creates_once_and_refuses_another_request() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let req = |name: &str| pb::CreateTeamRequest {
        name: name.into(),
        request_id: "create-sales-team".into(),
    };
    let first = c
        .create_team(authed(a.token(), req("Sales")))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    let again = c
        .create_team(authed(a.token(), req("Sales")))
        .await
        .unwrap()
        .into_inner()
        .team
        .unwrap();
    assert_eq!(again.id, first.id);
    let e = refused(
        c.create_team(authed(a.token(), req("Support"))).await,
        Code::InvalidArgument,
    );
    assert_eq!(e.code, ErrorCode::IdempotencyKeyReused);
    let teams = c
        .list_teams(authed(a.token(), pb::ListTeamsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .teams;
    assert_eq!(teams.len(), 1, "one team, not two");
}

#[tokio::test]
async fn an_admin_cannot_change_their_own_role() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let me = c
        .get_me(authed(a.token(), pb::GetMeRequest {}))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let e = refused(
        c.update_user(authed(
            a.token(),
            pb::UpdateUserRequest {
                id: me.id.clone(),
                update_mask: Some(FieldMask {
                    paths: vec!["role".into()],
                }),
                role: "read_only".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(e.code, ErrorCode::RuleViolation);
    let still = c
        .get_user(authed(a.token(), pb::GetUserRequest { id: me.id }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(still.role, "admin");
}
