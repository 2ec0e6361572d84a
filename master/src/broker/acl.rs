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
}
