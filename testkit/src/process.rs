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
        // A bench's FAENA_STORE_WRITERS is for its PostgreSQL master only
        // (`bench::pg_writers`): a SQLite master refuses it.
        cmd.args(args)
            .env_remove("FAENA_LOG")
            .env_remove("FAENA_STORE_WRITERS")
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
        let _ = signal(self.pid(), "TERM");
        self.wait_exit().await
    }

    /// Waits for the exit of a process told to stop (bounded by `WAIT`),
    /// sending nothing: a second SIGTERM may end one that is exiting.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits after SIGTERM").expect("wait")
    }

    pub async fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Sends `sig` (`TERM`, `STOP`…) to process `pid`: whether it was sent
/// (not when the process is gone or `kill` could not run).
pub fn signal(pid: i32, sig: &str) -> bool {
    pid > 0
        && std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success())
}

/// User + system CPU time of process `pid` so far, in seconds (from `/proc`).
pub fn cpu_seconds(pid: i32) -> f64 {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// User + system CPU time of the calling thread so far, in seconds: read
/// by the thread itself, where a thread that has ended leaves `/proc`.
pub fn this_thread_cpu() -> f64 {
    stat_cpu(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

/// User + system CPU seconds in a `/proc` `stat` line (0 where it does
/// not parse).
fn stat_cpu(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces) start after ')'.
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// What the threads of one name have spent so far.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ThreadTimes {
    /// CPU seconds, user and system (`stat`).
    pub cpu: f64,
    /// Seconds runnable but waiting for a core (`schedstat`; 0 where the
    /// kernel keeps none): a thread that waits about as long as it runs
    /// is held back by the cores, not by its work.
    pub waited: f64,
    /// How many threads have the name.
    pub threads: usize,
}

/// [`ThreadTimes`] of each thread of process `pid` so far, by thread name
/// (`/proc/<pid>/task/*`): tokio's workers are one entry.
pub fn thread_cpu(pid: i32) -> std::collections::BTreeMap<String, ThreadTimes> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some((head, _)), Some(open)) = (stat.rsplit_once(')'), stat.find('(')) else { continue };
        let name = head.get(open + 1..).unwrap_or_default().to_owned();
        let e: &mut ThreadTimes = by_name.entry(name).or_default();
        e.cpu += stat_cpu(&stat);
        e.waited += run_queue_wait(&std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default());
        e.threads += 1;
    }
    by_name
}

/// The seconds a thread waited on a run queue, from its `schedstat` (on
/// the CPU, waiting, time slices; nanoseconds); 0 where it has none.
fn run_queue_wait(schedstat: &str) -> f64 {
    schedstat.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).map_or(0.0, |ns| ns / 1e9)
}

/// Seconds all cores of the machine have been idle so far (`/proc/stat`:
/// idle and iowait, at 100 ticks a second; 0 where it does not parse).
pub fn machine_idle() -> f64 {
    idle_seconds(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

fn idle_seconds(stat: &str) -> f64 {
    let cpu = stat.lines().find(|l| l.starts_with("cpu ")).unwrap_or_default();
    let ticks: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait ...
    (ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0)) / 100.0
}

/// Resident memory of process `pid` now, in MiB (from `/proc`).
pub fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kb.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_idle_time_is_idle_and_iowait() {
        let stat = "cpu  100 5 50 1200 30 0 7 0 0 0\ncpu0 50 2 25 600 15 0 3 0 0 0\n";
        assert_eq!(idle_seconds(stat), 12.3);
        assert_eq!(idle_seconds("garbage"), 0.0);
    }

    #[test]
    fn a_threads_run_queue_wait_is_read_from_its_schedstat() {
        assert_eq!(run_queue_wait("1500000000 250000000 42\n"), 0.25);
        assert_eq!(run_queue_wait(""), 0.0);
        assert_eq!(run_queue_wait("12"), 0.0);
        // This thread's own: there, or 0 where the kernel keeps none.
        let own = thread_cpu(std::process::id() as i32);
        assert!(own.values().all(|t| t.threads > 0 && t.cpu >= 0.0 && t.waited >= 0.0));
        assert!(own.values().map(|t| t.threads).sum::<usize>() >= 1);
    }

    #[test]
    fn cpu_seconds_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";
        assert_eq!(stat_cpu(stat), 3.0);
        assert_eq!(stat_cpu(""), 0.0);
        assert!(this_thread_cpu() >= 0.0);
    }
}
