//! The `faena` CLI against a live cluster: every command, its `--json`
//! output parsed here, and the exit codes a script branches on.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::cli::{self, Out};
use faena_testkit::custom::Scripted;
use faena_testkit::{Cluster, FakeAi, MasterOpts, bin};
use serde_json::{Value, json};

const API_TOKEN: &str = "cli-test-api-token";

async fn faena_env(c: &Cluster, args: &[&str], env: &[(&str, String)]) -> Out {
    cli::faena_env(c, API_TOKEN, args, env).await
}

async fn faena(c: &Cluster, args: &[&str]) -> Out {
    cli::faena(c, API_TOKEN, args).await
}

fn ok(out: &Out) {
    out.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_with_json_and_exit_codes() {
    let fake = FakeAi::start().await;
    let mut c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    let gemini = fake.gemini_base();
    c.add_worker_with("w1", 2, &[("GEMINI_BASE_URL", gemini.as_str()), ("GEMINI_API_KEY", "k")]).await;
    c.wait_workers(1).await;

    // workers
    let out = faena(&c, &["workers", "--json"]).await;
    ok(&out);
    assert_eq!(out.json()["workers"][0]["id"], "w1");
    let out = faena(&c, &["workers"]).await;
    ok(&out);
    assert!(out.stdout.starts_with("ID") && out.stdout.contains("w1"), "{}", out.stdout);

    // submit --wait --json: the finished job; without --wait: its id.
    let out =
        faena(&c, &["submit", "noop", "--params", r#"{"payload":"hi"}"#, "--priority", "high", "--wait", "--json"])
            .await;
    ok(&out);
    let job = out.json();
    assert_eq!(
        (job["state"].as_str(), &job["result"], job["priority"].as_str()),
        (Some("succeeded"), &json!({"payload": "hi"}), Some("high"))
    );
    let file = c.dir.path().join("params.json");
    std::fs::write(&file, r#"{"payload": [1, 2]}"#).expect("params file");
    let out = faena(&c, &["submit", "noop", "--params", &format!("@{}", file.display())]).await;
    ok(&out);
    let id = out.stdout.trim().to_owned();
    c.api.wait_final(&id).await;

    // get, watch (NDJSON, last event final)
    let out = faena(&c, &["get", &id, "--json"]).await;
    ok(&out);
    assert_eq!(out.json()["result"], json!({"payload": [1, 2]}));
    let out = faena(&c, &["get", &id]).await;
    ok(&out);
    assert!(out.stdout.contains("succeeded") && out.stdout.contains("result"), "{}", out.stdout);
    let out = faena(&c, &["watch", &id, "--json"]).await;
    ok(&out);
    let last: Value = serde_json::from_str(out.stdout.lines().last().expect("a line")).expect("NDJSON");
    assert_eq!(last["event"], "succeeded", "{}", out.stdout);

    // cancel, then watch exits 7; cancel again is refused (4).
    let out = faena(&c, &["submit", "noop", "--params", r#"{"delay_ms": 3600000}"#, "--json"]).await;
    ok(&out);
    let long = out.json()["id"].as_str().expect("id").to_owned();
    c.api.wait_running(&long).await;
    ok(&faena(&c, &["cancel", &long]).await);
    assert_eq!(faena(&c, &["watch", &long]).await.code, 7);
    let again = faena(&c, &["cancel", &long, "--json"]).await;
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert_eq!(again.json()["error"]["exit"], 4);

    // list with filters, as JSON and as a table
    let out = faena(&c, &["list", "--kind", "noop", "--state", "cancelled", "--json"]).await;
    ok(&out);
    let ids: Vec<Value> = out.json()["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].clone()).collect();
    assert_eq!(ids, vec![json!(long)]);
    let out = faena(&c, &["list", "--limit", "1"]).await;
    ok(&out);
    assert!(out.stdout.lines().count() == 2 && out.stderr.contains("--cursor"), "{} {}", out.stdout, out.stderr);

    // ask: the answer streams to stdout
    let out = faena(&c, &["ask", "how are you", "--provider", "gemini"]).await;
    ok(&out);
    assert_eq!(out.stdout.trim(), "You said: how are you");
    let out = faena(&c, &["ask", "again", "--json"]).await;
    ok(&out);
    assert_eq!(out.json()["result"]["text"], "You said: again");

    // mine: a short range at a low difficulty, waited for
    let blob = "00".repeat(76);
    let args =
        ["mine", "--key", "6b", "--blob", &blob, "--difficulty", "10", "--nonce-count", "64", "--wait", "--json"];
    let out = faena(&c, &args).await;
    ok(&out);
    let mined = out.json();
    assert_eq!(mined["state"], "succeeded", "{mined}");
    assert!(mined["result"]["shares"].as_array().is_some_and(|s| !s.is_empty()), "{mined}");

    // A job that fails: exit 1 (a custom kind, failed by its worker).
    let mut w = Scripted::start(&c, "scripted", &["x.fails"], 1).await;
    let waiting = tokio::spawn({
        let args = ["submit", "x.fails", "--wait"].map(str::to_owned);
        let env = [("FAENA_URL", format!("http://{}", c.addrs.http)), ("FAENA_API_TOKEN", API_TOKEN.to_owned())];
        let bin = bin("faena");
        let home = c.dir.path().join("home");
        async move {
            tokio::process::Command::new(bin)
                .args(args)
                .envs(env)
                .env("HOME", home)
                .env_remove("FAENA_CONFIG")
                .output()
                .await
        }
    });
    let unit = w.next_unit().await;
    w.fail(&unit, "it had to fail", false).await.expect("failure accepted");
    let out = waiting.await.expect("task").expect("faena runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it had to fail"));

    // Errors a script can tell apart.
    let unknown = "0190a6b2-0000-7000-8000-000000000000";
    assert_eq!(faena(&c, &["get", unknown]).await.code, 3);
    assert_eq!(faena(&c, &["submit", "x.Bad"]).await.code, 2);
    assert_eq!(faena(&c, &["submit", "noop", "--params", "{bad"]).await.code, 2);
    assert_eq!(faena(&c, &["submit", "noop", "--priority", "urgent"]).await.code, 2);
    let wrong = faena_env(
        &c,
        &["workers"],
        &[("FAENA_URL", format!("http://{}", c.addrs.http)), ("FAENA_API_TOKEN", "nope".into())],
    )
    .await;
    assert_eq!(wrong.code, 5, "{}", wrong.stderr);
    let port = faena_testkit::free_port();
    let down = faena_env(&c, &["workers"], &[("FAENA_URL", format!("http://127.0.0.1:{port}"))]).await;
    assert_eq!(down.code, 6, "{}", down.stderr);

    // The config file: url and token_file, read when no flag or variable says otherwise.
    let token_file = c.dir.path().join("token");
    std::fs::write(&token_file, format!("{API_TOKEN}\n")).expect("token file");
    let config = c.dir.path().join("home/.config/faena");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(
        config.join("config.toml"),
        format!("url = \"http://{}\"\ntoken_file = \"{}\"\n", c.addrs.http, token_file.display()),
    )
    .expect("config file");
    let out = faena_env(&c, &["workers", "--json"], &[]).await;
    ok(&out);
    assert_eq!(out.json()["workers"].as_array().map(Vec::len), Some(2));
    let flag = faena_env(&c, &["workers", "--token", "nope"], &[]).await;
    assert_eq!(flag.code, 5, "a flag wins over the file");
    assert!(flag.stderr.contains("warning: --token shows in `ps`"), "the flag is warned about: {}", flag.stderr);
    assert!(!out.stderr.contains("warning"), "a token file is not: {}", out.stderr);

    // Completions for the shells clap knows.
    for shell in ["bash", "zsh", "fish"] {
        let out = faena_env(&c, &["completions", shell], &[]).await;
        ok(&out);
        assert!(out.stdout.contains("faena") && out.stdout.contains("submit"), "{shell}");
    }
}

/// Delays, uniqueness, groups and schedules from the command line.
#[tokio::test]
async fn submit_options_schedules_and_groups() {
    let c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    let args = ["submit", "noop", "--in", "1h", "--unique", "nightly", "--unique-for", "2h", "--group", "team-a"];
    let first = faena(&c, &args).await;
    ok(&first);
    let id = first.stdout.trim().to_owned();
    let again = faena(&c, &args).await;
    ok(&again);
    assert_eq!(again.stdout.trim(), id, "a duplicate answers with the first job");
    assert!(again.stderr.contains("duplicate"), "{}", again.stderr);
    let job = faena(&c, &["get", &id, "--json"]).await.json();
    assert_eq!((job["state"].as_str(), job["options"]["group"].as_str()), (Some("scheduled"), Some("team-a")), "{job}");
    let shown = faena(&c, &["get", &id]).await;
    assert!(shown.stdout.contains("run at") && shown.stdout.contains("team-a"), "{}", shown.stdout);
    let child = faena(&c, &["submit", "noop", "--after", &id, "--timeout", "30s", "--retries", "3", "--json"]).await;
    assert_eq!(child.json()["state"], "waiting");
    let bad = faena(&c, &["submit", "noop", "--in", "soon"]).await;
    assert_ne!(bad.code, 0, "{}", bad.stderr);

    ok(&faena(&c, &["groups", "set", "team-a", "--max-running", "2", "--rate", "10/s"]).await);
    let groups = faena(&c, &["groups", "list", "--json"]).await.json();
    let team = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == "team-a").cloned().unwrap();
    assert_eq!((team["max_running"].as_u64(), team["jobs"].as_u64()), (Some(2), Some(1)), "{team}");
    let table = faena(&c, &["groups", "list"]).await;
    assert!(table.stdout.starts_with("GROUP") && table.stdout.contains("10/s"), "{}", table.stdout);
    let refused = faena(&c, &["groups", "set", "team-a", "--rate", "0/s"]).await;
    assert!(refused.code != 0 && refused.stderr.contains("never run"), "{}", refused.stderr);
    ok(&faena(&c, &["groups", "clear", "team-a"]).await);

    let add = ["schedules", "add", "daily", "--cron", "0 6 * * *", "--kind", "noop", "--timezone", "Europe/Madrid"];
    ok(&faena(&c, &add).await);
    let listed = faena(&c, &["schedules", "list"]).await;
    assert!(listed.stdout.starts_with("NAME") && listed.stdout.contains("Europe/Madrid"), "{}", listed.stdout);
    let set = faena(&c, &["schedules", "set", "daily", "--overlap", "allow", "--json"]).await;
    assert_eq!(set.json()["overlap"], "allow");
    let never = faena(&c, &["schedules", "add", "never", "--cron", "0 0 31 2 *", "--kind", "noop"]).await;
    assert!(never.code != 0 && never.stderr.contains("never fires"), "{}", never.stderr);
    ok(&faena(&c, &["schedules", "delete", "daily"]).await);
    assert_eq!(faena(&c, &["schedules", "list", "--json"]).await.json()["schedules"], json!([]));
}

#[tokio::test]
async fn keys_for_ai_clients() {
    let c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    let made =
        faena(&c, &["keys", "create", "--name", "team-a", "--tokens-per-day", "1000", "--models", "local,gemini"])
            .await;
    ok(&made);
    let key = made.stdout.trim();
    assert!(key.starts_with("fk-") && made.stderr.contains("shown this once"), "{} {}", made.stdout, made.stderr);
    let table = faena(&c, &["keys", "list"]).await;
    assert!(table.stdout.starts_with("NAME") && table.stdout.contains("local,gemini"), "{}", table.stdout);
    assert!(!table.stdout.contains(key), "the key is shown once");
    let again = faena(&c, &["keys", "create", "--name", "team-a"]).await;
    assert!(again.code != 0 && again.stderr.contains("exists"), "{}", again.stderr);
    ok(&faena(&c, &["keys", "revoke", "team-a"]).await);
    let listed = faena(&c, &["keys", "list", "--json"]).await.json();
    assert!(listed["keys"][0]["revoked_at"].is_string(), "{listed}");
}

/// `faena store copy` onto more files: a stopped master's one-file store
/// copied into a new store of four shards; the master started on it (its
/// data directory swapped for the new one, as docs/store.md says) serves
/// the same jobs and takes new ones.
#[tokio::test]
async fn store_copy_moves_a_stopped_masters_store_onto_four_files() {
    let mut c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let ids = c.api.run_noops(20).await;
    c.master().terminate().await;

    let data = c.dir.path().join("data");
    let new = c.dir.path().join("data.new");
    std::fs::create_dir_all(&new).expect("dir");
    let (from, to) =
        (format!("sqlite:{}", data.join("faena.db").display()), format!("sqlite:{}", new.join("faena.db").display()));
    let out = faena_env(&c, &["--json", "store", "copy", "--from", &from, "--to", &to, "--shards", "4"], &[]).await;
    ok(&out);
    let report = out.json();
    assert_eq!((report["whole"].as_bool(), report["target"]["jobs"].as_u64()), (Some(true), Some(20)), "{report}");
    assert!(new.join("faena.3.db").is_file(), "four files");
    let again = faena_env(&c, &["store", "copy", "--from", &from, "--to", &to], &[]).await;
    assert!(again.code != 0 && again.stderr.contains("exists"), "not over a store: {}", again.stderr);
    let nine = faena_env(&c, &["store", "copy", "--from", &from, "--to", &to, "--shards", "9"], &[]).await;
    assert_eq!(nine.code, 2, "{}", nine.stderr);

    let token = data.join("cluster-token");
    if token.is_file() {
        std::fs::copy(&token, new.join("cluster-token")).expect("copies the token");
    }
    std::fs::rename(&data, c.dir.path().join("data.old")).expect("moves");
    std::fs::rename(&new, &data).expect("moves");
    c.restart_master().await;
    let job = c.api.job(&ids[7]).await;
    assert_eq!((job["state"].as_str(), job["result"]["payload"].as_i64()), (Some("succeeded"), Some(7)), "{job}");
    let next = c.api.submit_ok("noop", json!({}), None).await;
    assert_eq!(c.api.wait_final(&next).await["state"], "succeeded");
    let (_, page) = c.api.get("/api/jobs?limit=21").await;
    let listed: Vec<&str> = page["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["id"].as_str()).collect();
    let mut want: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    want.insert(0, &next);
    assert_eq!(listed, want, "the copied jobs in their order, the new one ahead");
}
