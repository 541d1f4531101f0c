#!/usr/bin/env bash
# A one-machine loraplex cluster: N replicas of `loraplex serve` on loopback ports, and HAProxy in front on
# --port, routing each adapter's requests to the replica that already holds it (deploy/haproxy/haproxy.cfg.in).
#
#   scripts/cluster.sh up --replicas N --port P [options] -- SERVE_ARGS...
#   scripts/cluster.sh status [--dir D]
#   scripts/cluster.sh down [--dir D]
#
# up options:
#   --dir D             state folder: pids, ports, logs, the generated haproxy.cfg (default: .cluster)
#   --balance B         affinity (consistent hash on the body's "model", bounded load; the default) | roundrobin
#   --balance-factor F  affinity's bound: no replica holds more than F% of the average requests in flight (250;
#                       looser than a web cache's 125-200 because a replica batches, so holding more costs it
#                       little, while a spilled request costs the next replica an adapter load)
#   --bin PATH          the loraplex binary (default: build/loraplex, else loraplex on PATH)
#   --timeout S         seconds to wait for the replicas and the proxy to become healthy (120)
# SERVE_ARGS are `loraplex serve`'s (the model folder first); --port, --host, --replica-id and
# --overload-status are the script's. Replica i gets --replica-id r<i> (its x-loraplex-replica header) and
# --overload-status 503 (HAProxy 2.6 replays 503 on another replica; it cannot replay 429).
# `down` sends SIGTERM to the proxy and then the replicas (each drains its requests), SIGKILL after 60 s.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "cluster.sh: $*" >&2; exit 1; }

cmd="${1:-}"
[ -n "$cmd" ] || die "usage: cluster.sh up|down|status [options] (see the script's header)"
shift
replicas=""; port=""; dir="$ROOT/.cluster"; balance=affinity; factor=250; bin=""; timeout=120
serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) replicas="${2:?}"; shift 2 ;;
    --port) port="${2:?}"; shift 2 ;;
    --dir) dir="${2:?}"; shift 2 ;;
    --balance) balance="${2:?}"; shift 2 ;;
    --balance-factor) factor="${2:?}"; shift 2 ;;
    --bin) bin="${2:?}"; shift 2 ;;
    --timeout) timeout="${2:?}"; shift 2 ;;
    --) shift; serve_args=("$@"); break ;;
    *) die "unknown option '$1' (serve's arguments go after --)" ;;
  esac
done

alive() { kill -0 "$1" 2>/dev/null; }

# GET PATH on a loopback port with bash's /dev/tcp (no curl needed); prints the status code, 000 on failure.
http_status() {
  local port="$1" path="$2" line=""
  if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    IFS= read -r -t 5 line <&3 || true
    exec 3<&- 3>&-
  fi
  [[ "$line" =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]] && echo "${BASH_REMATCH[1]}" || echo 000
}

stop_all() {  # pids in the order given: SIGTERM each, wait, SIGKILL what is left
  local pids=("$@") deadline=$((SECONDS + 60))
  for p in "${pids[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    while alive "$p" && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if alive "$p"; then echo "cluster.sh: pid $p did not stop in 60 s: SIGKILL" >&2; kill -KILL "$p" 2>/dev/null || true; fi
  done
}

down() {
  [ -f "$dir/pids" ] || { echo "cluster.sh: no cluster in $dir"; return 0; }
  local pids=()
  # haproxy first (no new requests reach the replicas), then the replicas together (they drain in parallel).
  while read -r role _ pid _; do [ "$role" = proxy ] && pids+=("$pid"); done < "$dir/pids"
  stop_all "${pids[@]}"
  pids=()
  while read -r role _ pid _; do [ "$role" = replica ] && pids+=("$pid"); done < "$dir/pids"
  stop_all "${pids[@]}"
  rm -f "$dir/pids"
  echo "cluster.sh: stopped (logs in $dir)"
}

status() {
  [ -f "$dir/pids" ] || { echo "no cluster in $dir"; return 1; }
  local rc=0
  while read -r role name pid p; do
    local state=dead code
    if alive "$pid"; then code=$(http_status "$p" /health); state="up, /health $code"; else rc=1; fi
    printf '%-8s %-4s pid %-8s port %-6s %s\n' "$role" "$name" "$pid" "$p" "$state"
  done < "$dir/pids"
  return $rc
}

up() {
  [[ "$replicas" =~ ^[1-9][0-9]*$ ]] || die "--replicas N (N >= 1) is required"
  [[ "$port" =~ ^[1-9][0-9]*$ ]] || die "--port P is required"
  [[ "$factor" =~ ^[0-9]+$ ]] && [ "$factor" -gt 100 ] || die "--balance-factor must be an integer > 100"
  [ ${#serve_args[@]} -gt 0 ] || die "give serve's arguments after --, the model folder first"
  for a in "${serve_args[@]}"; do
    case "$a" in --port|--port=*|--host|--host=*|--replica-id|--replica-id=*|--overload-status|--overload-status=*)
      die "$a is set by cluster.sh; leave it out of the serve arguments" ;;
    esac
  done
  if [ -z "$bin" ]; then
    if [ -x "$ROOT/build/loraplex" ]; then bin="$ROOT/build/loraplex"; else bin="$(command -v loraplex || true)"; fi
  fi
  [ -n "$bin" ] && [ -x "$bin" ] || die "no loraplex binary (build it, or pass --bin)"
  command -v haproxy >/dev/null || die "haproxy is not installed (scripts/deps.sh installs it)"
  local balance_lines
  case "$balance" in
    affinity) balance_lines="    balance hash req.body,json_query('\$.model')
    hash-type consistent
    hash-balance-factor $factor" ;;
    roundrobin) balance_lines="    balance roundrobin" ;;
    *) die "--balance must be affinity or roundrobin" ;;
  esac
  if [ -f "$dir/pids" ]; then
    while read -r _ _ pid _; do alive "$pid" && die "a cluster is running from $dir (cluster.sh down first)"; done < "$dir/pids"
  fi
  mkdir -p "$dir"
  : > "$dir/pids"
  # From here on a failure stops what was started.
  trap 'echo "cluster.sh: start failed; stopping what started" >&2; down >/dev/null' ERR

  # The replicas pick free ports themselves (--port 0) and say which in their first log line.
  local pids=() ports=()
  for ((i = 0; i < replicas; i++)); do
    "$bin" serve "${serve_args[@]}" --host 127.0.0.1 --port 0 --replica-id "r$i" --overload-status 503 \
      < /dev/null > "$dir/replica-$i.log" 2>&1 &
    pids+=($!)
  done
  local deadline=$((SECONDS + timeout))
  for ((i = 0; i < replicas; i++)); do
    local p=""
    while [ -z "$p" ]; do
      p=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$dir/replica-$i.log" 2>/dev/null | head -1 | sed 's/.*://' || true)
      [ -n "$p" ] && break
      alive "${pids[$i]}" || { tail -5 "$dir/replica-$i.log" >&2; false; }
      [ $SECONDS -lt $deadline ] || { echo "cluster.sh: replica $i did not bind in ${timeout} s" >&2; false; }
      sleep 0.05
    done
    ports+=("$p")
    echo "replica r$i ${pids[$i]} $p" >> "$dir/pids"
  done
  for ((i = 0; i < replicas; i++)); do
    until [ "$(http_status "${ports[$i]}" /health)" = 200 ]; do
      alive "${pids[$i]}" || { tail -5 "$dir/replica-$i.log" >&2; false; }
      [ $SECONDS -lt $deadline ] || { echo "cluster.sh: replica $i not healthy in ${timeout} s" >&2; false; }
      sleep 0.1
    done
  done

  # The proxy's configuration: the template with this cluster's port, balance and servers.
  local servers=""
  for ((i = 0; i < replicas; i++)); do servers+="    server r$i 127.0.0.1:${ports[$i]}"$'\n'; done
  awk -v port="$port" -v dir="$dir" -v balance="$balance_lines" -v servers="${servers%$'\n'}" '
    /^@BALANCE@$/ { print balance; next }
    /^@SERVERS@$/ { print servers; next }
    { gsub(/@PORT@/, port); gsub(/@DIR@/, dir); print }' "$ROOT/deploy/haproxy/haproxy.cfg.in" > "$dir/haproxy.cfg"
  haproxy -c -q -f "$dir/haproxy.cfg" || { echo "cluster.sh: haproxy rejects $dir/haproxy.cfg" >&2; false; }
  haproxy -db -f "$dir/haproxy.cfg" < /dev/null > "$dir/haproxy.log" 2>&1 &
  local hp=$!
  echo "proxy - $hp $port" >> "$dir/pids"
  until [ "$(http_status "$port" /health)" = 200 ]; do
    alive "$hp" || { tail -5 "$dir/haproxy.log" >&2; false; }
    [ $SECONDS -lt $deadline ] || { echo "cluster.sh: the proxy did not answer in ${timeout} s" >&2; false; }
    sleep 0.05
  done
  trap - ERR
  echo "cluster.sh: $replicas replicas ($balance) behind http://127.0.0.1:$port (state and logs: $dir)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "unknown command '$cmd' (up, down, status)" ;;
esac
