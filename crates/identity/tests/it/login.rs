//! Login tells an attacker nothing about which accounts exist, and repeated failures make
//! one account wait without locking out anyone else.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crm_kit::{ApiError, ErrorCode};
use crm_proto::identity as pb;
use prost_types::FieldMask;
use tonic::{Code, Status};

use crate::helpers::{PASSWORD, TestApp, authed, spawn_app, unique_slug};

const WRONG: &str = "not the right password";

/// A failed login, with what a caller can observe of it.
#[track_caller]
fn failure(res: Result<pb::TokenPair, Status>, what: &str) -> Status {
    match res {
        Ok(_) => panic!("{what}: login succeeded"),
        Err(s) => s,
    }
}

async fn fail_login(app: &TestApp, slug: &str, email: &str) {
    let s = failure(app.login(slug, email, WRONG).await, "wrong password");
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
}

fn subsec_millis() -> u64 {
    u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_millis(),
    )
}

/// Sleeps until `millis` past the next whole wall-clock second (or this one, if still ahead).
async fn until_subsec(millis: u64) {
    let now = subsec_millis();
    let wait = if now < millis {
        millis - now
    } else {
        1000 - now + millis
    };
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test]
async fn unknown_accounts_and_wrong_passwords_get_the_same_answer() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let no_password = app
        .create_user(
            a.token(),
            &format!("nopass@{}.example.com", a.slug()),
            "sales_rep",
            None,
        )
        .await;
    let disabled = app
        .create_user(
            a.token(),
            &format!("gone@{}.example.com", a.slug()),
            "sales_rep",
            Some(PASSWORD),
        )
        .await;
    app.client()
        .update_user(authed(
            a.token(),
            pb::UpdateUserRequest {
                id: disabled.id.clone(),
                update_mask: Some(FieldMask {
                    paths: vec!["disabled".into()],
                }),
                disabled: true,
                ..Default::default()
            },
        ))
        .await
        .expect("disable user");

    let nobody = format!("nobody@{}.example.com", a.slug());
    let elsewhere = unique_slug();
    let attempts = [
        ("wrong password", a.slug(), a.email.as_str(), WRONG),
        ("unknown e-mail", a.slug(), nobody.as_str(), PASSWORD),
        (
            "unknown tenant",
            elsewhere.as_str(),
            a.email.as_str(),
            PASSWORD,
        ),
        (
            "user without a password",
            a.slug(),
            no_password.email.as_str(),
            PASSWORD,
        ),
        ("disabled user", a.slug(), disabled.email.as_str(), PASSWORD),
    ];
    let mut answers = Vec::new();
    for (what, slug, email, password) in attempts {
        let s = failure(app.login(slug, email, password).await, what);
        assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
        let e = ApiError::from_status(&s);
        assert!(e.fields.is_empty(), "{what}: names fields {:?}", e.fields);
        answers.push((
            what,
            (
                s.code(),
                s.message().to_owned(),
                s.details().to_vec(),
                e.code,
                e.retry_after,
                e.metadata,
            ),
        ));
    }
    let (_, first) = &answers[0];
    for (what, answer) in &answers[1..] {
        assert_eq!(
            answer, first,
            "{what} answers differently from a wrong password"
        );
    }
    app.login(a.slug(), &a.email, PASSWORD)
        .await
        .expect("the right password still works");
}

#[tokio::test]
async fn repeated_failures_make_one_account_wait_and_leave_others_alone() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    let other = app
        .create_user(
            a.token(),
            &format!("other@{}.example.com", a.slug()),
            "sales_rep",
            Some(PASSWORD),
        )
        .await;
    for _ in 0..4 {
        fail_login(&app, a.slug(), &a.email).await;
    }
    // The service counts the wait in whole wall-clock seconds; failing at the top of a
    // second keeps the next attempt inside the first one-second wait.
    until_subsec(5).await;
    fail_login(&app, a.slug(), &a.email).await;

    let s = failure(
        app.login(a.slug(), &a.email, PASSWORD).await,
        "the right password during the wait",
    );
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let e = ApiError::from_status(&s);
    assert_eq!(e.code, ErrorCode::RateLimited);
    let wait = e.retry_after.expect("a retry delay");
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(15 * 60),
        "{wait:?}"
    );
    app.login(a.slug(), &other.email, PASSWORD)
        .await
        .expect("another account of the tenant is unaffected");
}

/// After the fifth failure the account waits one second: an attempt half a second later
/// must still be refused, wherever the failure fell within a wall-clock second.
#[tokio::test]
async fn the_first_wait_lasts_a_whole_second() {
    let app = spawn_app().await;
    let a = app.sign_up().await;
    for _ in 0..4 {
        fail_login(&app, a.slug(), &a.email).await;
    }
    until_subsec(500).await;
    let failed_at = Instant::now();
    fail_login(&app, a.slug(), &a.email).await;
    if subsec_millis() >= 500 {
        // Still in the same second: try again just after the next one starts.
        until_subsec(20).await;
    }
    let since = failed_at.elapsed();
    assert!(
        since < Duration::from_millis(950),
        "set-up too slow: {since:?}"
    );
    let res = app
        .login(a.slug(), &a.email, PASSWORD)
        .await
        .map(|_| "logged in");
    assert!(
        matches!(&res, Err(s) if s.code() == Code::ResourceExhausted),
        "{since:?} after the fifth failure the account should still wait, got {res:?}"
    );
}
