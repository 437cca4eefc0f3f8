use std::{process::Stdio, time::Duration};

use reqwest::StatusCode;

use crate::helpers::{Options, problem, spawn_with};

#[tokio::test]
async fn over_the_limit_is_a_429_with_retry_after() {
    let s = spawn_with(Options {
        extra_env: vec![
            ("CRM_RATE_LIMIT_PER_CLIENT", "5".into()),
            ("CRM_RATE_LIMIT_WINDOW_SECS", "60".into()),
        ],
        ..Options::default()
    })
    .await;
    let t = s.signup().await;
    for i in 0..5 {
        let res = s.get(&t, "/me").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
        assert!(
            res.headers()["ratelimit-policy"]
                .to_str()
                .unwrap()
                .contains("\"client\";q=5;w=60")
        );
        assert!(
            res.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .contains(&format!("r={}", 4 - i))
        );
    }
    let res = s.get(&t, "/me").send().await.unwrap();
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    problem(res, 429, "RATE_LIMITED").await;
}

/// Starts a private Redis on a free port, so the test can stop it.
fn private_redis() -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    (child, port)
}

#[tokio::test]
async fn keeps_serving_with_a_local_limiter_when_redis_is_down() {
    let (mut redis, port) = private_redis();
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..50 {
        if crm_kit::Cache::connect(&url).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = spawn_with(Options {
        redis_url: url,
        extra_env: vec![
            ("CRM_RATE_LIMIT_PER_CLIENT", "4".into()),
            ("CRM_RATE_LIMIT_WINDOW_SECS", "60".into()),
        ],
    })
    .await;
    let t = s.signup().await;
    assert_eq!(
        s.get(&t, "/me").send().await.unwrap().status(),
        StatusCode::OK
    );
    redis.kill().unwrap();
    redis.wait().unwrap();
    // Still served, and still limited, by the gateway's own counters.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(s.get(&t, "/me").send().await.unwrap().status());
    }
    assert_eq!(statuses[0], StatusCode::OK, "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
