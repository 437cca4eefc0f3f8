//! Stage moves through the gateway: each transition rule, stage history, pipeline edits that
//! keep records valid, and bulk moves.

use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

async fn rule(res: reqwest::Response, rule: &str) -> Value {
    let p = problem(res, 422, "RULE_VIOLATION").await;
    assert_eq!(p["rule"], rule, "{p}");
    assert_eq!(fields(&p), ["stage"]);
    p
}

#[tokio::test]
async fn every_rule_is_enforced_and_named() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let manager = st.user(&admin, "sales_manager").await;
    let account = st.account(&rep, "Initech").await;
    let o = st
        .opportunity(&rep, json!({"accountId": account, "name": "Initech deal"}))
        .await;
    let id = s(&o, "id");

    // Won needs amount and close date.
    rule(
        st.move_stage(&rep, &id, json!({"stage": "closed_won"}))
            .await,
        "required_fields",
    )
    .await;
    // Lost needs a reason.
    rule(
        st.move_stage(&rep, &id, json!({"stage": "closed_lost"}))
            .await,
        "required_fields",
    )
    .await;
    // Unknown stage is bad input.
    let res = st.move_stage(&rep, &id, json!({"stage": "nowhere"})).await;
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["stage"]
    );

    let res = st
        .patch(
            &rep,
            &format!("/opportunities/{id}"),
            json!({"amountCents": 5000, "currency": "USD", "closeDate": "2026-03-01"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = st.move_stage(&rep, &id, json!({"stage": "proposal"})).await;
    assert_eq!(res.status(), 200);
    let res = st
        .move_stage(&rep, &id, json!({"stage": "closed_won"}))
        .await;
    assert_eq!(res.status(), 200);

    // Leaving won needs a manager.
    rule(
        st.move_stage(&rep, &id, json!({"stage": "negotiation"}))
            .await,
        "manager_required",
    )
    .await;
    let res = st
        .move_stage(&manager, &id, json!({"stage": "negotiation"}))
        .await;
    assert_eq!(res.status(), 200);

    // The history has every move, with who and how long.
    let h: Value = st
        .get(&rep, &format!("/opportunities/{id}/stage-history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let moves: Vec<(Value, Value)> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["fromStage"].clone(), m["toStage"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (Value::Null, json!("prospecting")),
            (json!("prospecting"), json!("proposal")),
            (json!("proposal"), json!("closed_won")),
            (json!("closed_won"), json!("negotiation")),
        ]
    );
    assert_eq!(h["items"][3]["actorId"], manager.id.as_str());
    assert!(h["items"][1]["secondsInPreviousStage"].as_i64().unwrap() >= 0);

    let events = st.events().await;
    let changed: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "opportunity.stage_changed")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(changed.len(), 3);
    assert_eq!(changed[0]["data"]["before"]["stage"], "prospecting");
    assert_eq!(changed[0]["data"]["after"]["stage"], "proposal");
    assert_eq!(changed[0]["data"]["after"]["accountId"], account.as_str());
    assert!(events.iter().any(|(t, _)| t == "opportunity.won"));
}

#[tokio::test]
async fn pipeline_edits_keep_records_valid() {
    let st = spawn().await;
    let admin = st.signup().await;
    let p = st.default_pipeline(&admin, "deal").await;
    let pid = s(&p, "id");
    let account = st.account(&admin, "Umbrella").await;
    let o = st
        .opportunity(
            &admin,
            json!({"accountId": account, "name": "Umbrella deal", "stage": "qualification"}),
        )
        .await;
    let id = s(&o, "id");
    let mut stages: Vec<Value> = p["stages"].as_array().unwrap().clone();

    // A stage with records in it cannot vanish.
    let without: Vec<Value> = stages
        .iter()
        .filter(|s| s["key"] != "qualification")
        .cloned()
        .collect();
    let res = st
        .patch(
            &admin,
            &format!("/pipelines/{pid}"),
            json!({"stages": without}),
        )
        .send()
        .await
        .unwrap();
    let pr = problem(res, 422, "RULE_VIOLATION").await;
    assert_eq!(pr["rule"], "stage_in_use");

    // Retire it, rename another, add one and require a field; reorder.
    for st_ in stages.iter_mut() {
        if st_["key"] == "qualification" {
            st_["retired"] = json!(true);
        }
        if st_["key"] == "proposal" {
            st_["name"] = json!("Quote sent");
            st_["requiredFields"] = json!(["closeDate"]);
        }
    }
    stages.insert(
        1,
        json!({"key": "demo", "name": "Demo", "probability": 20, "kind": "open"}),
    );
    let res = st
        .patch(
            &admin,
            &format!("/pipelines/{pid}"),
            json!({"stages": stages, "allowedTransitions": {"demo": ["proposal"]}}),
        )
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["stages"][1]["key"], "demo");
    assert_eq!(b["version"], 2);

    // The record in the retired stage is still valid and may leave it.
    let res = st
        .get(&admin, &format!("/opportunities/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["stage"], "qualification");
    // Nothing new moves into the retired stage.
    let o2 = st
        .opportunity(&admin, json!({"accountId": account, "name": "Second"}))
        .await;
    let id2 = s(&o2, "id");
    rule(
        st.move_stage(&admin, &id2, json!({"stage": "qualification"}))
            .await,
        "retired_stage",
    )
    .await;
    // A stage's own required fields.
    rule(
        st.move_stage(&admin, &id, json!({"stage": "proposal"}))
            .await,
        "required_fields",
    )
    .await;
    // Allowed transitions.
    assert_eq!(
        st.move_stage(&admin, &id2, json!({"stage": "demo"}))
            .await
            .status(),
        200
    );
    rule(
        st.move_stage(&admin, &id2, json!({"stage": "negotiation"}))
            .await,
        "allowed_transitions",
    )
    .await;
    assert!(
        st.events()
            .await
            .iter()
            .any(|(t, _)| t == "pipeline.updated")
    );
}

#[tokio::test]
async fn bulk_moves_check_each_record() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let account = st.account(&admin, "Hooli").await;
    let ready = st
        .opportunity(&admin, json!({"accountId": account, "name": "Ready", "amountCents": 100, "currency": "USD", "closeDate": "2026-01-31"}))
        .await;
    let bare = st
        .opportunity(&admin, json!({"accountId": account, "name": "Bare"}))
        .await;
    let missing = uuid::Uuid::now_v7().to_string();
    let res = st
        .post(
            &admin,
            "/opportunities/bulk",
            json!({"action": "move_stage", "ids": [s(&ready, "id"), s(&bare, "id"), missing], "stage": "closed_won"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    let statuses: Vec<(&str, Option<&str>)> = b["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["rule"].as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("ok", None),
            ("RULE_VIOLATION", Some("required_fields")),
            ("NOT_FOUND", None)
        ]
    );
    let res = st
        .post(
            &admin,
            "/opportunities/bulk",
            json!({"action": "assign_owner", "ids": [s(&bare, "id")], "ownerUserId": rep.id}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(st.all(&rep, "/opportunities").await.len(), 1);
    assert!(
        st.events()
            .await
            .iter()
            .any(|(t, _)| t == "opportunity.owner_changed")
    );
    let res = st
        .get(&admin, "/security-events?kind=opportunity.bulk_move_stage")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b: Value = res.json().await.unwrap();
    assert_eq!(b["items"].as_array().unwrap().len(), 1, "{b}");
    let res = st
        .post(
            &admin,
            "/opportunities/bulk",
            json!({"action": "explode", "ids": [s(&bare, "id")]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(res, 400, "VALIDATION_FAILED").await),
        ["action"]
    );
}
