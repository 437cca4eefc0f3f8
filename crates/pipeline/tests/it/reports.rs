//! The pipeline report against figures computed by hand on a small fixture.

use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use crate::helpers::{fields, problem, s, spawn};

#[tokio::test]
async fn report_figures_match_hand_computed_numbers() {
    let st = spawn().await;
    let admin = st.signup().await;
    let today_before = Utc::now().date_naive();
    let account = st.account(&admin, "Fixture").await;
    let opp = |name: &str,
               stage: &str,
               amount: Option<i64>,
               currency: Option<&str>,
               close: Option<&str>| {
        let mut b = json!({"accountId": account, "name": name, "stage": stage});
        if let Some(a) = amount {
            b["amountCents"] = json!(a);
        }
        if let Some(c) = currency {
            b["currency"] = json!(c);
        }
        if let Some(c) = close {
            b["closeDate"] = json!(c);
        }
        b
    };
    for body in [
        opp(
            "A",
            "proposal",
            Some(10_000),
            Some("USD"),
            Some("2027-01-15"),
        ),
        opp(
            "B",
            "proposal",
            Some(3_333),
            Some("USD"),
            Some("2027-01-20"),
        ),
        opp(
            "C",
            "proposal",
            Some(5_000),
            Some("EUR"),
            Some("2027-02-10"),
        ),
        opp(
            "D",
            "negotiation",
            Some(20_000),
            Some("USD"),
            Some("2027-02-28"),
        ),
        opp(
            "E",
            "closed_won",
            Some(7_000),
            Some("USD"),
            Some("2027-01-31"),
        ),
        opp("G", "prospecting", None, None, Some("2027-01-05")),
        opp(
            "H",
            "proposal",
            Some(99_999),
            Some("USD"),
            Some("2028-01-01"),
        ),
        opp("I", "proposal", Some(55_555), Some("USD"), None),
    ] {
        st.opportunity(&admin, body).await;
    }
    let f = st
        .opportunity(
            &admin,
            opp(
                "F",
                "negotiation",
                Some(1_000),
                Some("USD"),
                Some("2027-03-01"),
            ),
        )
        .await;
    let res = st
        .move_stage(
            &admin,
            &s(&f, "id"),
            json!({"stage": "closed_lost", "lostReason": "price"}),
        )
        .await;
    assert_eq!(res.status(), 200);

    let res = st
        .get(&admin, "/reports/pipeline?from=2027-01-01&to=2027-12-31")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    let today_after = Utc::now().date_naive();
    let stage = |key: &str| {
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .cloned()
            .unwrap()
    };
    let amt = |c: &str, n: i64, a: i64, w: i64| json!({"currency": c, "count": n, "amountCents": a, "weightedAmountCents": w});
    assert_eq!(stage("prospecting")["count"], 1);
    assert_eq!(stage("prospecting")["amounts"], json!([]));
    assert_eq!(stage("qualification")["count"], 0);
    assert_eq!(stage("proposal")["count"], 3);
    // 13,333 × 50% = 6,666.5, rounded half up.
    assert_eq!(
        stage("proposal")["amounts"],
        json!([amt("EUR", 1, 5_000, 2_500), amt("USD", 2, 13_333, 6_667)])
    );
    assert_eq!(
        stage("negotiation")["amounts"],
        json!([amt("USD", 1, 20_000, 15_000)])
    );
    assert_eq!(
        stage("closed_won")["amounts"],
        json!([amt("USD", 1, 7_000, 7_000)])
    );
    assert_eq!(
        stage("closed_lost")["amounts"],
        json!([amt("USD", 1, 1_000, 0)])
    );
    assert_eq!(r["wonCount"], 1);
    assert_eq!(r["lostCount"], 1);
    assert_eq!(r["winRate"], 0.5);
    let won_close = NaiveDate::from_ymd_opt(2027, 1, 31).unwrap();
    let days = r["averageDaysToClose"].as_f64().unwrap();
    assert!(
        [today_before, today_after]
            .iter()
            .any(|t| (won_close - *t).num_days() as f64 == days),
        "{days}"
    );
    assert_eq!(
        r["forecast"],
        json!([
            {"month": "2027-01", "count": 3, "amounts": [amt("USD", 2, 13_333, 6_667)]},
            {"month": "2027-02", "count": 2, "amounts": [amt("EUR", 1, 5_000, 2_500), amt("USD", 1, 20_000, 15_000)]},
        ])
    );
    assert_eq!(r["amountsHidden"], false);

    // The owner filter and the date range narrow it.
    let res = st
        .get(
            &admin,
            &format!(
                "/reports/pipeline?from=2027-02-01&to=2027-02-28&ownerUserId={}",
                admin.id
            ),
        )
        .send()
        .await
        .unwrap();
    let r: Value = res.json().await.unwrap();
    let total: i64 = r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 2);
    assert_eq!(r["winRate"], Value::Null);

    // Bad ranges name their parameter.
    for (q, field) in [
        ("from=2027-01-01", "to"),
        ("from=2027-13-01&to=2027-12-31", "from"),
        ("from=2027-02-01&to=2027-01-01", "to"),
    ] {
        let res = st
            .get(&admin, &format!("/reports/pipeline?{q}"))
            .send()
            .await
            .unwrap();
        let p = problem(res, 400, "VALIDATION_FAILED").await;
        assert_eq!(fields(&p), [field], "{q}");
    }
}
