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

# Checks bench $1's ROUNDS ($2) and REQUESTS ($3): numbers, at least one
# round and 1,000 requests; exits 2 otherwise.
check_rounds_requests() {
  case "$2$3" in
    '' | *[!0-9]*) echo "$1: rounds and requests are numbers (see --help)" >&2; exit 2 ;;
  esac
  if [ "$2" -lt 1 ] || [ "$3" -lt 1000 ]; then
    echo "$1: at least 1 round and 1,000 requests" >&2
    exit 2
  fi
}

# Waits up to 60 s for process $1 to print its FAENA_READY line into log
# $2; exits 1 with the log when it dies first, or saying "$3 did not start".
wait_ready() {
  for _ in $(seq 600); do
    grep -q FAENA_READY "$2" && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "$3 did not start" >&2
  exit 1
}
