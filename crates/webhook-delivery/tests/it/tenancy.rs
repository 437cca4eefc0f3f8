//! Another tenant never sees an endpoint, secret or delivery; bad input names its field.

use serde_json::{Value, json};

use crate::helpers::{eventually, fields, problem, spawn};

#[tokio::test]
async fn another_tenant_sees_nothing() {
    let app = spawn().await;
    let a = app.signup().await;
    let b = app.signup().await;
    let (endpoint, _) = app
        .endpoint(&a, &app.receiver.url("tenant-a", "200"), &["team.created"])
        .await;
    app.endpoint(&b, &app.receiver.url("tenant-b", "200"), &[])
        .await;
    app.team(&a, "Only For A").await;
    let d = eventually("tenant a's endpoint gets its event", || async {
        app.deliveries(&a, &endpoint)
            .await
            .into_iter()
            .find(|d| d["status"] == "succeeded")
    })
    .await;
    let delivery = d["id"].as_str().expect("id").to_owned();

    let list: Value = app
        .get(&b, "/webhooks/endpoints")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "b sees only its own endpoint");
    assert_ne!(items[0]["id"], endpoint.as_str());
    assert!(items[0].get("secret").is_none(), "secrets are never listed");

    for res in [
        app.get(&b, &format!("/webhooks/endpoints/{endpoint}"))
            .send()
            .await,
        app.patch(
            &b,
            &format!("/webhooks/endpoints/{endpoint}"),
            json!({"description": "mine"}),
        )
        .send()
        .await,
        app.post(
            &b,
            &format!("/webhooks/endpoints/{endpoint}/rotate-secret"),
            json!({}),
        )
        .send()
        .await,
        app.get(&b, &format!("/webhooks/endpoints/{endpoint}/deliveries"))
            .send()
            .await,
        app.post(
            &b,
            &format!("/webhooks/endpoints/{endpoint}/recover"),
            json!({"since": "2020-01-01T00:00:00Z"}),
        )
        .send()
        .await,
        app.post(
            &b,
            &format!("/webhooks/deliveries/{delivery}/retry"),
            json!({}),
        )
        .send()
        .await,
        app.delete(&b, &format!("/webhooks/endpoints/{endpoint}"))
            .send()
            .await,
    ] {
        problem(res.expect("request"), 404, "NOT_FOUND").await;
    }
    // Tenant a's event never reached tenant b's catch-all endpoint.
    assert!(
        app.receiver
            .hits("tenant-b")
            .iter()
            .all(|h| !String::from_utf8_lossy(&h.body).contains("Only For A"))
    );
    // And a's endpoint is still there, untouched.
    let e: Value = app
        .get(&a, &format!("/webhooks/endpoints/{endpoint}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(e["description"], "");
    assert_eq!(e["version"], 1);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let app = spawn().await;
    let t = app.signup().await;
    let types: Value = app
        .get(&t, "/webhooks/event-types")
        .send()
        .await
        .expect("types")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = types["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"contact.created") && names.contains(&"user.created"));

    for (body, field) in [
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "ftp://example.com/x"}), "url"),
        (
            json!({"url": "https://example.com/x", "eventTypes": ["contact.created", "nope.nope"]}),
            "eventTypes[1]",
        ),
        (
            json!({"url": "https://example.com/x", "eventTypes": ["user.created", "user.created"]}),
            "eventTypes[1]",
        ),
        (
            json!({"url": "https://example.com/x", "description": "x".repeat(501)}),
            "description",
        ),
        (json!({"url": 5}), "url"),
    ] {
        let res = app
            .post(&t, "/webhooks/endpoints", body.clone())
            .send()
            .await
            .expect("create");
        let p = problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(fields(&p), [field], "{body}");
    }
    let (endpoint, _) = app
        .endpoint(&t, "https://example.com/hook", &["contact.created"])
        .await;
    let res = app
        .patch(
            &t,
            &format!("/webhooks/endpoints/{endpoint}"),
            json!({"eventTypes": ["bogus"]}),
        )
        .send()
        .await
        .expect("patch");
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["eventTypes[0]"]
    );
    let res = app
        .patch(&t, &format!("/webhooks/endpoints/{endpoint}"), json!({}))
        .send()
        .await
        .expect("patch");
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["body"]
    );
    let res = app
        .post(
            &t,
            &format!("/webhooks/endpoints/{endpoint}/recover"),
            json!({"since": "yesterday"}),
        )
        .send()
        .await
        .expect("recover");
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["since"]
    );
    let res = app
        .get(
            &t,
            &format!("/webhooks/endpoints/{endpoint}/deliveries?status=bogus"),
        )
        .send()
        .await
        .expect("deliveries");
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["status"]
    );
    let res = app
        .post(
            &t,
            "/webhooks/inbound-sources",
            json!({"name": "Form", "kind": "fax"}),
        )
        .send()
        .await
        .expect("source");
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["kind"]
    );

    // A stale If-Match is refused; the right one works and bumps the version.
    let res = app
        .patch(
            &t,
            &format!("/webhooks/endpoints/{endpoint}"),
            json!({"description": "x"}),
        )
        .header("if-match", "\"7\"")
        .send()
        .await
        .expect("patch");
    problem(res, 412, "PRECONDITION_FAILED").await;
    let res = app
        .patch(
            &t,
            &format!("/webhooks/endpoints/{endpoint}"),
            json!({"description": "Orders", "eventTypes": []}),
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let e: Value = res.json().await.expect("json");
    assert_eq!(e["description"], "Orders");
    assert_eq!(e["eventTypes"], json!([]));
    let res = app
        .delete(&t, &format!("/webhooks/endpoints/{endpoint}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status().as_u16(), 204);
    let res = app
        .get(&t, &format!("/webhooks/endpoints/{endpoint}"))
        .send()
        .await
        .expect("get");
    problem(res, 404, "NOT_FOUND").await;
}
