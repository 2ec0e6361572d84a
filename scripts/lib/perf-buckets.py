"""Sums `perf report --no-children --sort comm,sym -g none` lines (stdin) by
thread and by part of the master, and prints the largest shares."""
import collections
import re
import sys

PARTS = [
    ("kernel (syscalls, TCP, scheduling, page cache)", r"\[k\]"),
    ("gRPC and HTTP (h2, hyper, tonic, tower, axum)", r"h2::|hyper::|tonic::|tower::|axum::|http::|MasterServer|httparse"),
    ("SQLite", r"sqlite3|rusqlite|pcache|Btree|Vdbe|wal[A-Z]"),
    ("the store crate", r"faena_store"),
    ("engine, queue, scheduler", r"faena_engine::"),
    ("MQTT (rumqttc, rumqttd, the guard)", r"rumqtt|faena_common::broker|faena_master::broker|faena_master::mqtt"),
    ("allocator (mimalloc)", r"\bmi_|_mi_"),
    ("memcpy, memmove, memcmp", r"memmove|memcpy|memset|memcmp"),
    ("JSON", r"serde_json|serde::"),
    ("tokio", r"tokio::"),
    ("bytes", r"bytes::"),
    ("share verification", r"faena_verify::"),
    ("the rest of the master", r"faena_"),
]

shares = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+(.*)", line)
    if not m:
        continue
    share, thread, sym = float(m.group(1)), m.group(2), m.group(3)
    part = next((name for name, rx in PARTS if re.search(rx, sym)), "other (libc, unresolved)")
    shares[(thread, part)] += share
for (thread, part), share in shares.most_common(20):
    print(f"{share:6.2f} %  {thread:<16} {part}")
