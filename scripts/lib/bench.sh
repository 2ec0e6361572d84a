# shellcheck shell=bash
# Shared by the bench scripts: small measuring helpers.

# A free TCP port on loopback (the kernel's pick; free when this returns).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A process's CPU so far, user and system, in clock ticks (1/100 s).
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# The median of the numbers, one a line, in the files named (or stdin).
median() {
  sort -n "$@" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
