# smoke_lib.sh: what smoke.sh and smoke_net.sh share, sourced by both.

# wait_workers TAG LOG_PATTERN PID...: waits for each worker's PID (rank r
# is the r-th); for each that failed prints "TAG: worker r failed:" and the
# last 20 lines of its log (LOG_PATTERN with %d for r). Exits 1 if any
# failed, once all are waited for.
wait_workers() {
  local tag=$1 pattern=$2 status=0 r=0 pid
  shift 2
  for pid in "$@"; do
    if ! wait "$pid"; then
      echo "$tag: worker $r failed:"
      # shellcheck disable=SC2059 # the pattern is the caller's format
      tail -n 20 "$(printf "$pattern" "$r")"
      status=1
    fi
    r=$((r + 1))
  done
  [ "$status" -eq 0 ] || exit 1
}

# stop_servers TAG LOG_PATTERN PID...: sends SIGTERM to each server's PID
# (index i is the i-th), as the kubelet does, and waits for each: one that
# does not exit 0 is named ("TAG: server i did not exit 0 on SIGTERM:")
# with the last 10 lines of its log (LOG_PATTERN with %d for i), and the
# script exits 1.
stop_servers() {
  local tag=$1 pattern=$2 i=0 pid
  shift 2
  for pid in "$@"; do kill -TERM "$pid"; done
  for pid in "$@"; do
    if ! wait "$pid"; then
      echo "$tag: server $i did not exit 0 on SIGTERM:"
      # shellcheck disable=SC2059 # the pattern is the caller's format
      tail -n 10 "$(printf "$pattern" "$i")"
      exit 1
    fi
    i=$((i + 1))
  done
}
