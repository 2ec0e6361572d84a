//! Who may read and write which topics on the embedded broker — the same
//! rules as the stack's Mosquitto: the workers' roles the master makes
//! there ([`super::dynsec`]) and the observers' ACL (`mosquitto/acl-observer.in`).

/// What a connected client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The master's own account: everything under the prefix.
    Master,
    /// Worker `id`: its own work units, control and status; the master's
    /// status; the live configuration; log lines.
    Worker(String),
    /// No account (`mosquitto_sub`, `monitor.sh`): status, the live
    /// configuration and logs, read only.
    Observer,
}

#[derive(Debug, Clone)]
pub struct Acl {
    prefix: String,
}

impl Acl {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// The levels of `topic` under the prefix; None when it is not under it.
    fn under<'a>(&self, topic: &'a str) -> Option<Vec<&'a str>> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        Some(rest.split('/').collect())
    }

    /// Whether `role` may receive a message published on `topic`.
    pub fn can_read(&self, role: &Role, topic: &str) -> bool {
        if topic.starts_with("$SYS/") {
            return *role != Role::Master;
        }
        let Some(levels) = self.under(topic) else { return false };
        match (role, levels.as_slice()) {
            (Role::Master, _) => true,
            (_, ["master", "status"] | ["config"] | ["logs"]) => true,
            (Role::Worker(me), ["workers", w, "jobs" | "control"]) => w == me,
            (_, ["workers", _, "status"]) => *role == Role::Observer,
            _ => false,
        }
    }

    /// Whether a subscription to `filter` can deliver `role` anything: it
    /// must overlap a topic the role may read. (What it delivers is still
    /// checked message by message.)
    pub fn can_subscribe(&self, role: &Role, filter: &str) -> bool {
        if *role == Role::Master {
            return true;
        }
        let p = self.prefix.as_str();
        let mut readable =
            vec![format!("{p}/master/status"), format!("{p}/config"), format!("{p}/logs"), "$SYS/#".to_owned()];
        match role {
            Role::Worker(me) => {
                readable.push(format!("{p}/workers/{me}/jobs"));
                readable.push(format!("{p}/workers/{me}/control"));
            }
            Role::Observer => readable.push(format!("{p}/workers/+/status")),
            Role::Master => {}
        }
        let filter: Vec<&str> = filter.split('/').collect();
        readable.iter().any(|r| overlaps(&filter, &r.split('/').collect::<Vec<_>>()))
    }

    /// Whether `role` may publish on `topic` (a last will included).
    pub fn can_write(&self, role: &Role, topic: &str) -> bool {
        let Some(levels) = self.under(topic) else { return false };
        match (role, levels.as_slice()) {
            (Role::Master, _) => true,
            (Role::Worker(_), ["logs"]) => true,
            (Role::Worker(me), ["workers", w, "status"]) => w == me,
            _ => false,
        }
    }
}

/// Whether two topic filters can match a common topic.
fn overlaps(a: &[&str], b: &[&str]) -> bool {
    match (a.split_first(), b.split_first()) {
        (Some((&"#", _)), _) | (_, Some((&"#", _))) => true,
        (None, None) => true,
        (None, _) | (_, None) => false,
        (Some((x, a)), Some((y, b))) => (*x == "+" || *y == "+" || x == y) && overlaps(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_reads_and_writes_only_its_own() {
        let acl = Acl::new("faena");
        let (master, w1, observer) = (Role::Master, Role::Worker("w1".into()), Role::Observer);
        for t in ["faena/workers/w2/jobs", "faena/workers/w1/control", "faena/master/status", "faena/logs"] {
            assert!(acl.can_read(&master, t) && acl.can_write(&master, t), "{t}");
        }
        assert!(acl.can_read(&w1, "faena/workers/w1/jobs") && acl.can_read(&w1, "faena/workers/w1/control"));
        assert!(!acl.can_read(&w1, "faena/workers/w2/jobs"), "another worker's units");
        assert!(!acl.can_read(&w1, "faena/workers/w2/status"));
        assert!(acl.can_read(&w1, "faena/master/status") && acl.can_read(&w1, "faena/logs"));
        assert!(acl.can_read(&w1, "faena/config") && acl.can_read(&observer, "faena/config"));
        assert!(!acl.can_write(&w1, "faena/config") && !acl.can_write(&observer, "faena/config"), "the master's alone");
        assert!(acl.can_write(&w1, "faena/workers/w1/status") && acl.can_write(&w1, "faena/logs"));
        assert!(!acl.can_write(&w1, "faena/workers/w2/status"), "another's status");
        assert!(!acl.can_write(&w1, "faena/workers/w1/jobs") && !acl.can_write(&w1, "faena/master/status"));
        assert!(acl.can_read(&observer, "faena/workers/w1/status") && acl.can_read(&observer, "faena/logs"));
        assert!(acl.can_read(&observer, "faena/master/status") && acl.can_read(&observer, "$SYS/broker/uptime"));
        for t in ["faena/workers/w1/jobs", "faena/workers/w1/control", "faena/workers/w1/status/x", "other/topic"] {
            assert!(!acl.can_read(&observer, t), "{t}");
        }
        for t in ["faena/workers/w1/status", "faena/logs", "faena/workers/w1/control", "x"] {
            assert!(!acl.can_write(&observer, t), "observers publish nothing: {t}");
        }
        assert!(!acl.can_write(&w1, "faenax/logs") && !acl.can_read(&w1, "faena"), "the prefix is a whole level");
    }

    #[test]
    fn subscriptions_must_overlap_what_the_role_reads() {
        let acl = Acl::new("faena");
        let (w1, observer) = (Role::Worker("w1".into()), Role::Observer);
        for ok in ["faena/#", "#", "faena/+/status", "faena/workers/+/status", "faena/logs"] {
            assert!(acl.can_subscribe(&observer, ok), "{ok}");
        }
        for refused in ["faena/workers/w1/jobs", "faena/workers/+/control", "faena/junk", "other/#"] {
            assert!(!acl.can_subscribe(&observer, refused), "{refused}");
        }
        assert!(acl.can_subscribe(&w1, "faena/workers/w1/jobs") && acl.can_subscribe(&w1, "faena/workers/+/jobs"));
        assert!(!acl.can_subscribe(&w1, "faena/workers/w2/jobs") && !acl.can_subscribe(&w1, "faena/workers/+/status"));
        assert!(acl.can_subscribe(&Role::Master, "anything/at/all"));
    }
}
