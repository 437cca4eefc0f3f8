use serde_json::{Value, json};

use crate::helpers::{problem, spawn};

#[tokio::test]
async fn another_tenants_ids_are_not_found() {
    let s = spawn().await;
    let a = s.signup().await;
    let b = s.signup().await;
    let team: Value = s
        .post(&a, "/teams", json!({"name": "Sales"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap();

    problem(
        s.get(&b, &format!("/users/{}", a.user_id))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        s.patch(
            &b,
            &format!("/users/{}", a.user_id),
            json!({"name": "pwned"}),
        )
        .send()
        .await
        .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        s.get(&b, &format!("/teams/{team_id}"))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        s.post(
            &b,
            &format!("/teams/{team_id}/members/{}", b.user_id),
            json!({}),
        )
        .send()
        .await
        .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    // A malformed id is as unknown as a foreign one.
    problem(
        s.get(&b, "/users/not-a-uuid").send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;

    let users: Value = s
        .get(&b, "/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        users["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != a.user_id.as_str())
    );
    let me: Value = s.get(&a, "/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["user"]["name"], "Ada", "A's user is unchanged");
}
