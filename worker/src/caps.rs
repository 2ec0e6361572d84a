//! What this machine offers: cores, memory, AES-NI, huge pages.

/// Memory limit in bytes: the cgroup limit if one is set, else physical memory.
pub fn memory_bytes() -> u64 {
    // A container's limit: cgroup v2, else v1 (which reads as a huge number when unlimited).
    let limit = |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u64>().ok());
    let cgroup = limit("/sys/fs/cgroup/memory.max").or_else(|| limit("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    let physical = meminfo("MemTotal:").map(|kib| kib * 1024);
    match (cgroup, physical) {
        (Some(c), Some(p)) => c.min(p),
        (c, p) => c.or(p).unwrap_or(0),
    }
}

pub fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

pub fn aes_ni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when reserved huge pages are free to use.
pub fn huge_pages() -> bool {
    huge_pages_free_bytes() > 0
}

/// Bytes of free reserved huge pages (`HugePages_Free` × `Hugepagesize`).
pub fn huge_pages_free_bytes() -> u64 {
    let free = meminfo("HugePages_Free:").unwrap_or(0);
    let size_kib = meminfo("Hugepagesize:").unwrap_or(2048);
    free * size_kib * 1024
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_machine() {
        assert!(super::cores() >= 1);
        assert!(super::memory_bytes() > 0);
        assert!(!super::hostname().is_empty());
    }
}
