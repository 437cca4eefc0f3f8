//! Roles decide what a caller may do, and a role change applies at once.

use crm_proto::identity as pb;
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{PASSWORD, authed, refused, spawn_app};

/// The scope a permission set grants for an action on an object type, if any.
fn scope(p: &pb::EffectivePermissions, object_type: &str, action: &str) -> Option<pb::Scope> {
    p.permissions
        .iter()
        .filter(|g| g.object_type == object_type && g.action == action)
        .filter_map(|g| pb::Scope::try_from(g.scope).ok())
        .max_by_key(|s| *s as i32)
}

#[tokio::test]
async fn a_sales_rep_is_limited_and_a_role_change_applies_at_once() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let mut c = app.client();
    let rep = app
        .create_user(
            a.token(),
            &format!("rep@{}.example.com", a.slug()),
            "sales_rep",
            Some(PASSWORD),
        )
        .await;
    let rt = app
        .login(a.slug(), &rep.email, PASSWORD)
        .await
        .expect("the rep logs in")
        .access_token;

    refused(
        c.create_user(authed(
            &rt,
            pb::CreateUserRequest {
                email: format!("friend@{}.example.com", a.slug()),
                role: "admin".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );
    refused(
        c.list_security_events(authed(&rt, pb::ListSecurityEventsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
    refused(
        c.update_user(authed(
            &rt,
            pb::UpdateUserRequest {
                id: rep.id.clone(),
                update_mask: Some(FieldMask {
                    paths: vec!["role".into()],
                }),
                role: "admin".into(),
                ..Default::default()
            },
        ))
        .await,
        Code::PermissionDenied,
    );

    let me = c
        .get_me(authed(&rt, pb::GetMeRequest {}))
        .await
        .expect("get me")
        .into_inner();
    assert_eq!(me.user.expect("user").role, "sales_rep");
    let perms = me.permissions.expect("permissions");
    assert_eq!(perms.role, "sales_rep");
    assert_eq!(scope(&perms, "contact", "read"), Some(pb::Scope::Own));
    assert_eq!(scope(&perms, "contact", "export"), None);

    let updated = c
        .update_user(authed(
            a.token(),
            pb::UpdateUserRequest {
                id: rep.id.clone(),
                update_mask: Some(FieldMask {
                    paths: vec!["role".into()],
                }),
                role: "sales_manager".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("the admin changes the role")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(updated.role, "sales_manager");

    let events = c
        .list_security_events(authed(
            a.token(),
            pb::ListSecurityEventsRequest {
                kind: "user.role_changed".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("admin lists security events")
        .into_inner()
        .security_events;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.subject_id, rep.id);
    assert_eq!(event.actor_id, a.user.id);
    let detail: serde_json::Value = serde_json::from_str(&event.detail_json).expect("json");
    assert_eq!(detail["before"], "sales_rep");
    assert_eq!(detail["after"], "sales_manager");

    // The rep's token still names the old role; what it may do comes from the new one.
    let own = c
        .get_effective_permissions(authed(&rt, pb::GetEffectivePermissionsRequest::default()))
        .await
        .expect("own permissions")
        .into_inner()
        .permissions
        .expect("permissions");
    assert_eq!(own.role, "sales_manager");
    assert_eq!(scope(&own, "contact", "read"), Some(pb::Scope::All));
    assert_eq!(scope(&own, "contact", "export"), Some(pb::Scope::All));
    let seen_by_admin = c
        .get_effective_permissions(authed(
            a.token(),
            pb::GetEffectivePermissionsRequest {
                user_id: rep.id.clone(),
            },
        ))
        .await
        .expect("the admin reads the rep's permissions")
        .into_inner()
        .permissions
        .expect("permissions");
    assert_eq!(seen_by_admin.role, "sales_manager");
    assert_eq!(seen_by_admin.permissions, own.permissions);
    refused(
        c.list_security_events(authed(&rt, pb::ListSecurityEventsRequest::default()))
            .await,
        Code::PermissionDenied,
    );
}
