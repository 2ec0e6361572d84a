//! The master's web side: the page and its assets are served, and the
//! Socket.IO sessions behave (driven by the real socket.io client the page
//! uses, from `web/tests/sockets.mjs`).
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::{Cluster, FakeAi, MasterOpts, local_model, repo, run_node};
use reqwest::StatusCode;

/// A master serving the page (with `master` settings), and one worker that
/// has Gemini (the fake) and `extra`.
async fn web_cluster_with(fake: &FakeAi, master: &[(&str, &str)], extra: &[(&str, &str)]) -> Cluster {
    let web = repo().join("web");
    let mut settings = vec![
        ("FAENA_WEB_DIR".into(), web.display().to_string()),
        // The mining panel shows a Stratum miner (browser.mjs logs one in).
        ("FAENA_STRATUM_ADDR".into(), "127.0.0.1:0".into()),
    ];
    settings.extend(master.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let opts = MasterOpts { extra: settings, ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    let base = fake.gemini_base();
    let mut env = vec![("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", "worker-key")];
    env.extend_from_slice(extra);
    c.add_worker_with("ai", 1, &env).await;
    c.wait_workers(1).await;
    c
}

#[test]
fn the_page_uses_exactly_the_events_of_the_contract() {
    let app = std::fs::read_to_string(repo().join("web/app.js")).expect("web/app.js");
    let start = app.find("const EV = {").expect("the page's event table");
    let table = &app[start..start + app[start..].find("};").expect("its end")];
    let mut names: Vec<&str> = table.split('"').skip(1).step_by(2).collect();
    names.sort_unstable();
    let mut contract = faena_proto::sio::ALL_EVENTS.to_vec();
    contract.sort_unstable();
    assert_eq!(names, contract, "web/app.js and proto/src/sio.rs disagree");
}

#[tokio::test]
async fn sessions_stream_answers_keep_history_and_never_mix() {
    let fake = FakeAi::start().await;
    let limits = [
        ("FAENA_WEB_SESSIONS_PER_ADDRESS", "40"),
        ("FAENA_WEB_JOBS_PER_MINUTE", "3"),
        ("FAENA_WEB_SESSION_IDLE_SECS", "1"),
    ];
    let c = web_cluster_with(&fake, &limits, &[]).await;

    // The page and the Socket.IO client are served (no CDN).
    let page = c.api.text("/").await;
    assert!(page.contains("<title>Faena</title>") && page.contains("/vendor/socket.io.min.js"), "{page}");
    let client = faena_testkit::http().get(c.api.url("/vendor/socket.io.min.js")).send().await.expect("client");
    assert_eq!(client.status(), StatusCode::OK);
    assert_eq!(c.api.get("/api/nothing").await.0, StatusCode::NOT_FOUND);

    run_node(&c, "sockets.mjs", &[]).await;

    // The second question had the first as context; the keyed one used the session's key.
    let requests = fake.requests().await;
    let second = requests.iter().find(|r| r.body.to_string().contains("\"second\"")).expect("the second question");
    assert_eq!(second.body["contents"].as_array().map(Vec::len), Some(3), "{}", second.body);
    let keyed = requests.iter().find(|r| r.body.to_string().contains("keyed question")).expect("the keyed question");
    assert_eq!(keyed.headers.get("x-goog-api-key").map(String::as_str), Some("session-own-key"));
    assert!(!c.master_log().contains("session-own-key"), "the key went into the log");
}

/// With `FAENA_API_TOKEN`, REST needs `Authorization: Bearer` and sockets
/// need `auth.token`; the page asks for it; health, metrics, the page's files
/// and the workers' gRPC side are unaffected.
#[tokio::test]
async fn an_api_token_guards_rest_and_the_page() {
    const TOKEN: &str = "api-token-for-the-test";
    let fake = FakeAi::start().await;
    let web = repo().join("web");
    let extra =
        vec![("FAENA_WEB_DIR".to_owned(), web.display().to_string()), ("FAENA_API_TOKEN".to_owned(), TOKEN.to_owned())];
    let mut c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    let open = c.api.clone();
    c.api = faena_testkit::Api::with_token(&c.addrs.http, TOKEN);
    c.add_worker_with("ai", 1, &[("GEMINI_BASE_URL", fake.gemini_base().as_str())]).await;
    c.wait_workers(1).await;

    for path in ["/api/workers", "/api/jobs/01a1fdd1-bba8-701a-9f14-01f9748e8110", "/api/nothing"] {
        let resp = faena_testkit::http().get(open.url(path)).send().await.expect("GET");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        let body: serde_json::Value = resp.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let wrong = faena_testkit::Api::with_token(&c.addrs.http, "not-the-token");
    let (status, body) = wrong.post("/api/jobs", &serde_json::json!({"kind": "noop", "params": {}})).await;
    assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::UNAUTHORIZED, Some("wrong API token")));
    let id = c.api.submit_ok("noop", serde_json::json!({"payload": "with the token"}), None).await;
    assert_eq!(c.api.wait_final(&id).await["result"]["payload"], "with the token");
    for path in ["/healthz", "/metrics", "/", "/vendor/socket.io.min.js"] {
        assert_eq!(open.get(path).await.0, StatusCode::OK, "{path} stays open");
    }
    assert!(!c.master_log().contains(TOKEN), "the token went into the log");

    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    run_node(&c, "access.mjs", &[TOKEN, &shots.display().to_string()]).await;
}

#[tokio::test]
async fn the_page_works_in_a_real_browser() {
    let fake = FakeAi::start().await;
    // One AI slot, so questions queue and their positions count down; the
    // script asks more than the 10 questions a minute one address may.
    let master = [("FAENA_WEB_ASKS_PER_MINUTE", "100")];
    let c = web_cluster_with(&fake, &master, &[("FAENA_AI_SLOTS", "1"), ("FAENA_RANDOMX_THREADS", "1")]).await;
    // Screenshots are test artifacts: under target/, never committed.
    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    let fake_url = format!("http://{}", fake.addr);
    // A node for the mining panel: a daemon source the page shows, and
    // work for the Stratum miner the script logs in.
    let node = Monerod::start(c.dir.path(), 100).await;
    let stratum = c.addrs.stratum.clone().expect("the Stratum server listens");
    let args = [shots.display().to_string(), fake_url, node.url.clone(), WALLET.to_owned(), stratum];
    run_node(&c, "browser.mjs", &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(shots.join("answer.png").exists() && shots.join("mining.png").exists());
}

#[tokio::test]
async fn other_sites_pages_cannot_drive_a_local_master() {
    let extra = vec![("FAENA_ALLOWED_ORIGINS".into(), "https://ops.example.org".into())];
    let c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    let http = faena_testkit::http();
    let jobs = c.api.url("/api/jobs");
    let body = r#"{"kind": "noop", "params": {"payload": "from a page"}}"#;
    let post = |origin: Option<&str>, content_type: &str| {
        let mut req = http.post(&jobs).header("content-type", content_type).body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    // What any page can make a browser send: a simple text/plain POST.
    let r = post(Some("http://evil.example"), "text/plain").await.expect("POST");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: serde_json::Value = r.json().await.expect("JSON error");
    assert_eq!(e["error"]["code"], "forbidden_origin", "{e}");
    assert_eq!(
        post(Some("http://evil.example"), "application/json").await.expect("POST").status(),
        StatusCode::FORBIDDEN
    );
    let r = post(None, "text/plain").await.expect("POST");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "a body must say it is JSON");
    // The page's own origin, a listed one, and tools that send none: accepted.
    let own = format!("http://{}", c.addrs.http);
    for origin in [Some(own.as_str()), Some("https://ops.example.org"), None] {
        let r = post(origin, "application/json; charset=utf-8").await.expect("POST");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{origin:?}");
    }
    // Socket.IO: another site's page cannot even open the session.
    let sio = c.api.url("/socket.io/?EIO=4&transport=polling");
    let r = http.get(&sio).header("origin", "http://evil.example").send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http.get(&sio).header("origin", &own).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::OK, "the page's own Socket.IO handshake");
    assert!(c.master_log().contains("refused a request from another site"));

    // DNS rebinding: a page whose name now resolves here is same-origin
    // with itself (Origin and Host agree); the host name gives it away.
    let port = c.addrs.http.rsplit(':').next().expect("a port");
    let rebound = format!("evil.example:{port}");
    let r = http
        .post(&jobs)
        .header("host", &rebound)
        .header("origin", format!("http://{rebound}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let e: serde_json::Value = r.json().await.expect("JSON error");
    assert_eq!(e["error"]["code"], "forbidden_host", "{e}");
    let r = http.get(&sio).header("host", &rebound).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "nor its Socket.IO handshake");
}

/// The same attack in chromium, its resolver pointed here for two names:
/// one is refused, the one in FAENA_ALLOWED_HOSTS is served (`web/tests/rebind.mjs`).
#[tokio::test]
async fn a_rebound_host_name_gets_nothing_in_a_real_browser() {
    let web = repo().join("web");
    let extra =
        vec![("FAENA_WEB_DIR".into(), web.display().to_string()), ("FAENA_ALLOWED_HOSTS".into(), "faena.test".into())];
    let c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    faena_testkit::run_node(&c, "rebind.mjs", &[]).await;
}

/// No AI key anywhere: in chromium, a question asked while no AI worker is
/// online says why it waits; once a worker with the local model joins, the
/// same question is answered by it and the page says so (`web/tests/local.mjs`).
#[tokio::test]
async fn the_page_answers_from_the_local_model_and_says_why_a_question_waits() {
    use tokio::io::AsyncBufReadExt;
    let web = repo().join("web");
    let opts = MasterOpts { extra: vec![("FAENA_WEB_DIR".into(), web.display().to_string())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("plain", 1).await;
    c.wait_workers(1).await;
    let model = local_model().display().to_string();
    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    let mut node = tokio::process::Command::new("node")
        .arg(repo().join("web/tests/local.mjs"))
        .arg(format!("http://{}", c.addrs.http))
        .arg(&shots)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test.sh installs it and chromium)");
    let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
    let mut said = Vec::new();
    let finished = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "NEED-WORKER" {
                c.add_worker_with("local", 1, &[("FAENA_LOCAL_MODEL", model.as_str())]).await;
            }
            said.push(line);
        }
        node.wait().await
    })
    .await;
    let status = finished.expect("local.mjs finishes in 5 minutes").expect("exit status");
    assert!(status.success() && said.iter().any(|l| l == "OK"), "local.mjs: {said:?} (its stderr is above)");
    assert!(shots.join("local-waiting.png").exists() && shots.join("local-answer.png").exists());
}
