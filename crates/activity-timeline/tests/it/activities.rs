//! Activities through the gateway: create, read, change, delete, restore, lists, tasks,
//! permissions and bad input.

use chrono::{Duration as Days, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{bad_request, problem, s, spawn};

fn at(d: chrono::DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test]
async fn activities_are_created_changed_deleted_and_restored() {
    let st = spawn().await;
    let admin = st.signup().await;
    let account = st
        .create(&admin, "/accounts", json!({"name": "Acme"}))
        .await;
    let account_id = s(&account, "id");
    let when = at(Utc::now() - Days::days(1));
    let res = st
        .post(
            &admin,
            "/activities",
            json!({"subjectType": "account", "subjectId": account_id, "activityType": "meeting",
                   "body": "Kick-off", "occurredAt": when}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let a: Value = res.json().await.expect("json");
    let id = s(&a, "id");
    assert_eq!(a["occurredAt"], when.as_str());
    assert_eq!(a["ownerUserId"], admin.id.as_str());
    assert_eq!(
        a["assigneeUserId"],
        Value::Null,
        "only tasks default an assignee"
    );
    let got = st.get_json(&admin, &format!("/activities/{id}")).await;
    assert_eq!(got["body"], "Kick-off");

    let res = st
        .patch(
            &admin,
            &format!("/activities/{id}"),
            json!({"body": "Kick-off, part 2"}),
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    let res = st
        .patch(
            &admin,
            &format!("/activities/{id}"),
            json!({"body": "stale"}),
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("patch");
    problem(res, 412, "PRECONDITION_FAILED").await;
    let res = st
        .patch(
            &admin,
            &format!("/activities/{id}"),
            json!({"dueAt": at(Utc::now())}),
        )
        .send()
        .await
        .expect("patch");
    bad_request(res, "dueAt").await;

    let list = st
        .get_json(
            &admin,
            &format!("/activities?subjectType=account&subjectId={account_id}"),
        )
        .await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["body"], "Kick-off, part 2");
    let none = st.get_json(&admin, "/activities?activityType=call").await;
    assert_eq!(none["items"], json!([]));

    let res = st
        .delete(&admin, &format!("/activities/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), 204);
    let res = st
        .get(&admin, &format!("/activities/{id}"))
        .send()
        .await
        .expect("get");
    problem(res, 404, "NOT_FOUND").await;
    let res = st
        .post(&admin, &format!("/activities/{id}/restore"), json!({}))
        .send()
        .await
        .expect("restore");
    assert_eq!(res.status(), 200);
    let back = st.get_json(&admin, &format!("/activities/{id}")).await;
    assert_eq!(back["version"], 4);

    // Each change is an event on the account's timeline.
    let entries = st
        .timeline_until(
            &admin,
            &format!("/accounts/{account_id}/timeline"),
            "every activity event",
            |e| {
                ["logged", "updated", "deleted", "restored"]
                    .iter()
                    .all(|action| {
                        e.iter()
                            .any(|e| e["entityType"] == "activity" && e["action"] == *action)
                    })
            },
        )
        .await;
    let acts: Vec<&str> = entries
        .iter()
        .filter(|e| e["entityType"] == "activity")
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(acts.len(), 4, "each change once: {entries:#?}");
}

#[tokio::test]
async fn open_and_overdue_tasks_are_listed_by_due_time_and_completing_emits_an_event() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let contact = st
        .create(
            &rep,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await;
    let contact_id = s(&contact, "id");
    let task = |due: Option<String>, body: &str| {
        let mut b = json!({"subjectType": "contact", "subjectId": contact_id, "activityType": "task", "body": body});
        if let Some(d) = due {
            b["dueAt"] = Value::String(d);
        }
        b
    };
    let late = st
        .create(
            &rep,
            "/activities",
            task(Some(at(Utc::now() - Days::days(2))), "late"),
        )
        .await;
    let later = st
        .create(
            &rep,
            "/activities",
            task(Some(at(Utc::now() - Days::days(1))), "later"),
        )
        .await;
    let soon = st
        .create(
            &rep,
            "/activities",
            task(Some(at(Utc::now() + Days::days(1))), "soon"),
        )
        .await;
    let undated = st.create(&rep, "/activities", task(None, "someday")).await;
    assert_eq!(
        late["assigneeUserId"],
        rep.id.as_str(),
        "tasks default to the caller"
    );
    // Someone else's task is not "mine".
    st.create(&admin, "/activities", task(None, "the admin's"))
        .await;

    let bodies = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|t| s(t, "body"))
            .collect()
    };
    let open = st
        .get_json(&rep, "/tasks?assigneeUserId=me&state=open")
        .await;
    assert_eq!(bodies(&open), ["late", "later", "soon", "someday"]);
    // Paging crosses the tasks without a due time.
    let first = st.get_json(&rep, "/tasks?state=open&limit=3").await;
    assert_eq!(bodies(&first), ["late", "later", "soon"]);
    let rest = st
        .get_json(
            &rep,
            &format!(
                "/tasks?state=open&limit=3&cursor={}",
                s(&first, "nextCursor")
            ),
        )
        .await;
    assert_eq!(bodies(&rest), ["someday"]);
    assert_eq!(rest["nextCursor"], Value::Null);
    let overdue = st
        .get_json(&rep, "/tasks?assigneeUserId=me&state=overdue")
        .await;
    assert_eq!(bodies(&overdue), ["late", "later"]);

    // Completing by PATCH and by the complete action.
    let res = st
        .patch(
            &rep,
            &format!("/activities/{}", s(&late, "id")),
            json!({"completedAt": at(Utc::now())}),
        )
        .send()
        .await
        .expect("patch");
    assert_eq!(res.status(), 200);
    let res = st
        .post(
            &rep,
            &format!("/activities/{}/complete", s(&later, "id")),
            json!({}),
        )
        .send()
        .await
        .expect("complete");
    assert_eq!(res.status(), 200);
    let done: Value = res.json().await.expect("json");
    assert!(done["completedAt"].is_string());
    let overdue = st.get_json(&rep, "/tasks?state=overdue").await;
    assert_eq!(overdue["items"], json!([]));
    let open = st.get_json(&rep, "/tasks").await;
    assert_eq!(bodies(&open), ["soon", "someday"]);
    let _ = (soon, undated);

    let entries = st
        .timeline_until(
            &admin,
            &format!("/contacts/{contact_id}/timeline"),
            "both completions and the admin's activity",
            |e| {
                e.iter()
                    .filter(|e| e["eventType"] == "task.completed")
                    .count()
                    == 2
                    && e.iter().any(|e| e["after"]["body"] == "the admin's")
            },
        )
        .await;
    assert!(entries.iter().any(|e| e["eventType"] == "task.completed"
        && e["entityId"] == s(&late, "id").as_str()));
    // The rep sees only their own activities on the timeline: the admin's is projected by
    // now (the wait above), and not shown to the rep.
    let theirs = st
        .timeline(&rep, &format!("/contacts/{contact_id}/timeline"))
        .await;
    assert!(
        !theirs.iter().any(|e| e["after"]["body"] == "the admin's"),
        "{theirs:#?}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let st = spawn().await;
    let admin = st.signup().await;
    let other = st.signup().await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace"}),
        )
        .await;
    let id = s(&contact, "id");
    let theirs = st
        .create(
            &other,
            "/contacts",
            json!({"firstName": "Alan", "lastName": "Turing"}),
        )
        .await;
    let post = |body: Value| st.post(&admin, "/activities", body).send();
    bad_request(
        post(json!({"subjectType": "planet", "subjectId": id, "activityType": "call"}))
            .await
            .expect("post"),
        "subjectType",
    )
    .await;
    bad_request(
        post(json!({"subjectType": "contact", "subjectId": s(&theirs, "id"), "activityType": "call"}))
            .await
            .expect("post"),
        "subjectId",
    )
    .await;
    bad_request(
        post(
            json!({"subjectType": "contact", "subjectId": Uuid::now_v7(), "activityType": "call"}),
        )
        .await
        .expect("post"),
        "subjectId",
    )
    .await;
    bad_request(
        post(json!({"subjectType": "lead", "subjectId": Uuid::now_v7(), "activityType": "call"}))
            .await
            .expect("post"),
        "subjectId",
    )
    .await;
    bad_request(
        post(json!({"subjectType": "contact", "subjectId": id, "activityType": "task", "dueAt": "tomorrow"}))
            .await
            .expect("post"),
        "dueAt",
    )
    .await;
    bad_request(
        post(json!({"subjectType": "contact", "subjectId": id, "activityType": "fax"}))
            .await
            .expect("post"),
        "activityType",
    )
    .await;
    bad_request(
        post(json!({"subjectType": "contact", "subjectId": id, "activityType": "note", "dueAt": at(Utc::now())}))
            .await
            .expect("post"),
        "dueAt",
    )
    .await;
    for q in ["limit=0", "limit=201", "limit=x"] {
        let res = st
            .get(&admin, &format!("/contacts/{id}/timeline?{q}"))
            .send()
            .await
            .expect("get");
        bad_request(res, "limit").await;
        let res = st
            .get(&admin, &format!("/activities?{q}"))
            .send()
            .await
            .expect("get");
        bad_request(res, "limit").await;
    }
    let res = st
        .get(&admin, "/tasks?state=later")
        .send()
        .await
        .expect("get");
    bad_request(res, "state").await;
    let res = st
        .get(&admin, "/audit-log?from=yesterday")
        .send()
        .await
        .expect("get");
    bad_request(res, "from").await;
    let res = st
        .get(&admin, "/audit-log?actorId=someone")
        .send()
        .await
        .expect("get");
    bad_request(res, "actorId").await;
    // Nothing was created by any of it.
    let list = st.get_json(&admin, "/activities").await;
    assert_eq!(list["items"], json!([]));

    // A lead of pipeline is a valid subject.
    let lead = st
        .create(
            &admin,
            "/leads",
            json!({"firstName": "Grace", "lastName": "Hopper", "status": "new"}),
        )
        .await;
    let lead = s(&lead, "id");
    st.create(
        &admin,
        "/activities",
        json!({"subjectType": "lead", "subjectId": lead, "activityType": "email"}),
    )
    .await;
}

#[tokio::test]
async fn roles_limit_what_activities_a_user_reaches() {
    let st = spawn().await;
    let admin = st.signup().await;
    let rep = st.user(&admin, "sales_rep").await;
    let viewer = st.user(&admin, "read_only").await;
    let contact = st
        .create(
            &admin,
            "/contacts",
            json!({"firstName": "Ada", "lastName": "Lovelace", "ownerUserId": rep.id}),
        )
        .await;
    let id = s(&contact, "id");
    let mine = st
        .create(
            &rep,
            "/activities",
            json!({"subjectType": "contact", "subjectId": id, "activityType": "note", "body": "rep's"}),
        )
        .await;
    let admins = st
        .create(
            &admin,
            "/activities",
            json!({"subjectType": "contact", "subjectId": id, "activityType": "note", "body": "admin's"}),
        )
        .await;
    // Scope own: the admin's note is not found for the rep.
    let res = st
        .get(&rep, &format!("/activities/{}", s(&admins, "id")))
        .send()
        .await
        .expect("get");
    problem(res, 404, "NOT_FOUND").await;
    let list = st.get_json(&rep, "/activities").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["id"], mine["id"]);
    // The rep may not assign a task to someone else.
    let res = st
        .post(
            &rep,
            "/activities",
            json!({"subjectType": "contact", "subjectId": id, "activityType": "task", "assigneeUserId": admin.id}),
        )
        .send()
        .await
        .expect("post");
    problem(res, 403, "PERMISSION_DENIED").await;
    // Read only: reads everything, changes nothing.
    let all = st.get_json(&viewer, "/activities").await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    let res = st
        .patch(
            &viewer,
            &format!("/activities/{}", s(&mine, "id")),
            json!({"body": "x"}),
        )
        .send()
        .await
        .expect("patch");
    problem(res, 403, "PERMISSION_DENIED").await;
    let res = st
        .post(
            &viewer,
            "/activities",
            json!({"subjectType": "contact", "subjectId": id, "activityType": "note"}),
        )
        .send()
        .await
        .expect("post");
    problem(res, 403, "PERMISSION_DENIED").await;
}
