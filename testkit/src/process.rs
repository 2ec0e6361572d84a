//! One child process: started with its stderr in a log file, ready once it
//! prints `FAENA_READY {json}` on stdout, killed when dropped.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::WAIT;

#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The JSON of its READY line (addresses, ids).
    pub ready: Value,
}

impl Proc {
    pub async fn spawn(bin: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> Self {
        let child = Self::spawn_raw(bin, args, env, log);
        let mut child = child;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix(faena_proto::READY_PREFIX) {
                    return serde_json::from_str::<Value>(json).ok();
                }
            }
            None
        })
        .await;
        let Ok(Some(ready)) = ready else {
            let _ = child.start_kill();
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{} did not become ready; its log:\n{tail}", bin.display());
        };
        Self { child, ready }
    }

    /// Starts without waiting for READY (for processes expected to fail).
    pub fn spawn_raw(bin: &Path, args: &[&str], env: &[(String, String)], log: &Path) -> Child {
        let stderr = std::fs::File::create(log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("FAENA_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, as Docker sends; waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), "TERM");
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits after SIGTERM").expect("wait")
    }

    pub async fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

pub fn signal(pid: i32, sig: &str) {
    if pid > 0 {
        let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
    }
}

/// User + system CPU time of process `pid` so far, in seconds (from `/proc`).
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds (user + system) of each thread of process `pid` so far, by
/// thread name (`/proc/<pid>/task/*/stat`), with how many threads share
/// the name: tokio's workers are one entry.
pub fn thread_cpu(pid: i32) -> std::collections::BTreeMap<String, (f64, usize)> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some((head, after)), Some(open)) = (stat.rsplit_once(')'), stat.find('(')) else { continue };
        let name = head.get(open + 1..).unwrap_or_default().to_owned();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let e: &mut (f64, usize) = by_name.entry(name).or_default();
        e.0 += (ticks(11) + ticks(12)) / 100.0;
        e.1 += 1;
    }
    by_name
}

/// Resident memory of process `pid` now, in MiB (from `/proc`).
pub fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}
