//! Runs the `faena` CLI against a cluster, as a script would.

use serde_json::Value;

use crate::{Cluster, bin};

/// What one run printed and its exit code.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Stdout as JSON (`--json`); panics with the text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Panics unless it exited 0.
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "exit {}; stdout {} stderr {}", self.code, self.stdout, self.stderr);
        self
    }
}

/// Runs `faena` with `args` and `env` only (never a config file of this
/// machine's: HOME and XDG_CONFIG_HOME are the test's). Checks that the
/// API token `token` was printed nowhere.
pub async fn faena_env(c: &Cluster, token: &str, args: &[&str], env: &[(&str, String)]) -> Out {
    let home = c.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let out = tokio::process::Command::new(bin("faena"))
        .args(args)
        .env_remove("FAENA_URL")
        .env_remove("FAENA_API_TOKEN")
        .env_remove("FAENA_API_TOKEN_FILE")
        .env_remove("FAENA_CONFIG")
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("faena runs");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!out.stderr.contains(token) && !out.stdout.contains(token), "the CLI printed the token");
    out
}

/// Runs `faena` pointed at `c`'s master with the API token `token`.
pub async fn faena(c: &Cluster, token: &str, args: &[&str]) -> Out {
    let env = [("FAENA_URL", format!("http://{}", c.addrs.http)), ("FAENA_API_TOKEN", token.to_owned())];
    faena_env(c, token, args, &env).await
}
