#!/usr/bin/env bash
# A throwaway single-node Ceph RADOS Gateway (S3) for tests, benchmarks and trying things out.
#
#   scripts/rgw.sh start DIR [PORT]   create a cluster under DIR (must not exist or be empty),
#                                      start ceph-mon, one ceph-osd and radosgw on 127.0.0.1:PORT
#                                      (default 7480), create the S3 user, wait until the gateway
#                                      answers, then print on stdout (shell-sourceable):
#                                        endpoint=http://127.0.0.1:PORT
#                                        access=...
#                                        secret=...
#                                        region=us-east-1
#                                        node_user=... node_access=... node_secret=...
#                                      (a second S3 user with no buckets of its own: the
#                                      "backup node" that tests restrict by bucket policies)
#   scripts/rgw.sh stop DIR           stop the daemons by their pid files and wait for them
#   scripts/rgw.sh purge DIR          stop, then delete DIR
#   scripts/rgw.sh env DIR            print the connection lines again
#
# Runs as root on Debian 12 with ceph-mon, ceph-osd, radosgw and ceph-common installed; needs
# no systemd, block device or kernel module. Everything (config, data, pid files, admin
# sockets, logs) stays inside DIR; daemons listen on 127.0.0.1 only. No cephx.
# The OSD is BlueStore on a sparse file (RGW_BLOCK_SIZE, default 20G; it only takes the
# space actually written). Progress and errors go to stderr; on failure the tails of the
# daemon logs are printed and the half-started daemons are stopped.
#
# Environment: RGW_ACCESS_KEY / RGW_SECRET_KEY, RGW_NODE_ACCESS_KEY / RGW_NODE_SECRET_KEY
# (defaults below), RGW_BLOCK_SIZE (20G),
# RGW_START_TIMEOUT (seconds for the whole start, default 120), RGW_WATCH_PID (start a
# watcher that purges DIR once that process is gone: the test runner's pid, so a killed
# run leaves no daemons behind).
set -euo pipefail
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"

ACCESS_KEY="${RGW_ACCESS_KEY:-ploopvault-test}"
SECRET_KEY="${RGW_SECRET_KEY:-ploopvault-test-secret}"
NODE_USER="ploopvault-node"
NODE_ACCESS_KEY="${RGW_NODE_ACCESS_KEY:-ploopvault-node}"
NODE_SECRET_KEY="${RGW_NODE_SECRET_KEY:-ploopvault-node-secret}"
BLOCK_SIZE="${RGW_BLOCK_SIZE:-20G}"
START_TIMEOUT="${RGW_START_TIMEOUT:-120}"
REGION="us-east-1"

log() { printf 'rgw.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if nothing listens on 127.0.0.1:$1 (nor on the wildcard address).
port_free() {
  local p=$1
  if port_open "$p"; then return 1; fi
  if command -v ss >/dev/null 2>&1; then
    # also catches listeners bound to another local address, e.g. 0.0.0.0 without a route
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then return 1; fi
  fi
  return 0
}

# A free port (and port+1 free too) in 20000-29999, randomised to avoid parallel runs colliding.
free_port_pair() {
  local i p
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 9999))
    if port_free "$p" && port_free $((p + 1)); then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Seconds since start as a decimal, for progress lines.
T0=$(date +%s%N)
elapsed() { local now; now=$(date +%s%N); printf '%d.%01d' $(((now - T0) / 1000000000)) $((((now - T0) / 100000000) % 10)); }

pid_of() { # DIR NAME -> pid or empty
  local f="$1/run/$2.pid"
  [[ -s "$f" ]] && tr -dc '0-9' <"$f" || true
}

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# pid of daemon NAME of DIR if it is running (and really is our daemon), else nothing
our_pid() { # DIR NAME
  local pid
  pid=$(pid_of "$1" "$2")
  [[ -n "$pid" ]] || return 0
  # a zombie or a recycled pid has another (or an empty) command line
  if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$1/ceph.conf"; then echo "$pid"; fi
}

# Stop daemons NAME... of DIR: SIGTERM, wait up to 15 s, then SIGKILL.
stop_group() { # DIR NAME...
  local dir=$1 name pid i left
  shift
  for name in "$@"; do
    pid=$(our_pid "$dir" "$name")
    [[ -z "$pid" ]] || kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 200; i++)); do
    left=()
    for name in "$@"; do
      pid=$(our_pid "$dir" "$name")
      [[ -z "$pid" ]] || left+=("$name:$pid")
    done
    [[ ${#left[@]} -gt 0 ]] || return 0
    if ((i == 150)); then
      log "still running after 15 s, killing: ${left[*]}"
      for name in "${left[@]}"; do kill -KILL "${name#*:}" 2>/dev/null || true; done
    fi
    sleep 0.1
  done
  die "still running after SIGKILL: ${left[*]}"
}

# One after the other, each in well under a second: the gateway (it hangs in its
# shutdown when the OSD is already gone), the OSD (it tells the monitor it goes down and
# waits 5 s for an answer if the monitor is already gone), the monitor.
stop_daemons() { # DIR
  local watcher
  watcher=$(pid_of "$1" watch)
  # the watcher, unless it is this very process (it exec()s "rgw.sh purge DIR")
  if [[ -n "$watcher" && "$watcher" != "$$" ]] && { tr '\0' ' ' <"/proc/$watcher/cmdline"; } 2>/dev/null | grep -qF -- "rgw-watch"; then
    kill -TERM "$watcher" 2>/dev/null || true
  fi
  stop_group "$1" client.rgw.a
  stop_group "$1" osd.0
  stop_group "$1" mon.a
}

print_env() { # DIR
  local dir=$1
  [[ -s "$dir/connection" ]] || die "$dir/connection missing: was the gateway started with '$0 start $dir'?"
  cat "$dir/connection"
}

show_logs() { # DIR
  local dir=$1 f
  for f in "$dir"/log/*.log "$dir"/log/*.out; do
    [[ -s "$f" ]] || continue
    log "---- last lines of $f ----"
    tail -n 25 "$f" >&2 || true
  done
}

start() { # DIR PORT
  local dir=$1 port=$2
  [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "invalid port '$port'"
  [[ $(id -u) == 0 ]] || die "must run as root (ceph daemons); current uid $(id -u)"
  local bin
  for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool ceph-authtool; do
    command -v "$bin" >/dev/null 2>&1 || die "$bin not found: install the Debian packages ceph-mon ceph-osd radosgw ceph-common"
  done
  if [[ -e "$dir" ]] && [[ -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
    die "$dir exists and is not empty (stop and remove it first: $0 purge $dir)"
  fi
  port_free "$port" || die "port $port on 127.0.0.1 is already in use; pass another PORT"
  local monport
  monport=$(free_port_pair) || die "no free port pair for ceph-mon in 20000-29999"

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)
  mkdir -p "$dir/run" "$dir/log" "$dir/mon" "$dir/osd/ceph-0" "$dir/rgw/ceph-rgw.a"
  # from here on, a failure stops whatever was started and shows the logs
  STARTING_DIR=$dir
  trap 'rc=$?; if [[ $rc != 0 ]]; then log "start failed after $(elapsed) s"; show_logs "$STARTING_DIR"; stop_daemons "$STARTING_DIR" || true; fi' EXIT

  local fsid osd_uuid conf="$dir/ceph.conf"
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$conf" <<EOF
# throwaway single-node cluster written by scripts/rgw.sh; everything lives in $dir
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$monport,v1:127.0.0.1:$((monport + 1))]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
run dir = $dir/run
log file = $dir/log/\$name.log
keyring = $dir/keyring
mon data = $dir/mon/\$cluster-\$id
osd data = $dir/osd/\$cluster-\$id
rgw data = $dir/rgw/\$cluster-\$id
crash dir = $dir/crash
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# a single monitor needs no batching of map updates: without this every pool/OSD map
# change waits the default 1 s, and a start makes about 15 of them
paxos propose interval = 0.02
paxos min wait = 0.01

[mon]
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
mon cluster log file = $dir/log/cluster.log
mon osd full ratio = 0.97
mon osd backfillfull ratio = 0.95
mon osd nearfull ratio = 0.9

[osd]
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
osd objectstore = bluestore
bluestore block path = $dir/osd/\$cluster-\$id.block
bluestore block create = true
bluestore block size = $BLOCK_SIZE
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mkfs = false
bluestore fsck on mount = false
bluestore fsck on umount = false
osd memory target = 1073741824
osd crush update on start = true

[client.rgw.a]
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
auth client required = none
ms mon client mode = crc
rgw frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
  # the connection lines, written early so 'env' works; printed at the end
  cat >"$dir/connection" <<EOF
endpoint=http://127.0.0.1:$port
access=$ACCESS_KEY
secret=$SECRET_KEY
region=$REGION
node_user=$NODE_USER
node_access=$NODE_ACCESS_KEY
node_secret=$NODE_SECRET_KEY
EOF

  local deadline=$(($(date +%s) + START_TIMEOUT))
  # sets REM to the seconds left, or fails the start
  remaining() { REM=$((deadline - $(date +%s))); ((REM > 0)) || die "timed out after ${START_TIMEOUT} s (RGW_START_TIMEOUT)"; }

  # monitor
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$monport,v1:127.0.0.1:$((monport + 1))]" "$dir/monmap" >/dev/null 2>"$dir/log/monmaptool.out" \
    || die "monmaptool failed: $(cat "$dir/log/monmaptool.out")"
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring" >"$dir/log/mon-mkfs.out" 2>&1 \
    || die "ceph-mon --mkfs failed"
  ceph-mon -c "$conf" -i a >"$dir/log/mon.out" 2>&1 || die "ceph-mon did not start"
  log "ceph-mon on 127.0.0.1:$monport started ($(elapsed) s)"

  # OSD: register it (also waits for the monitor to answer), then create and start it
  local osd_id
  remaining
  osd_id=$(timeout "$REM" ceph -c "$conf" --connect-timeout "$REM" osd new "$osd_uuid" 2>"$dir/log/osd-new.out") \
    || die "'ceph osd new' failed (monitor not answering?): $(tail -n 3 "$dir/log/osd-new.out")"
  [[ "$osd_id" == 0 ]] || die "expected OSD id 0, got '$osd_id'"
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" --no-mon-config >"$dir/log/osd-mkfs.out" 2>&1 \
    || die "ceph-osd --mkfs failed"
  ceph-osd -c "$conf" -i 0 >"$dir/log/osd.out" 2>&1 || die "ceph-osd did not start"
  log "ceph-osd started ($(elapsed) s)"

  # gateway and user; radosgw-admin creates the pools it needs, as does radosgw
  radosgw -c "$conf" -n client.rgw.a >"$dir/log/rgw.out" 2>&1 || die "radosgw did not start"
  remaining
  timeout "$REM" radosgw-admin -c "$conf" user create --uid=ploopvault-test --display-name="ploopvault test" \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$dir/log/user-create.out" 2>&1 \
    || die "radosgw-admin user create failed: $(tail -n 3 "$dir/log/user-create.out")"
  timeout "$REM" radosgw-admin -c "$conf" user create --uid="$NODE_USER" --display-name="ploopvault node (restricted by bucket policies)" \
    --access-key="$NODE_ACCESS_KEY" --secret-key="$NODE_SECRET_KEY" >"$dir/log/node-user-create.out" 2>&1 \
    || die "radosgw-admin user create (node) failed: $(tail -n 3 "$dir/log/node-user-create.out")"
  log "S3 users created ($(elapsed) s)"

  # wait until the gateway answers HTTP
  local pid
  while :; do
    pid=$(pid_of "$dir" client.rgw.a)
    if [[ -n "$pid" ]] && ! alive "$pid"; then die "radosgw exited during start"; fi
    if port_open "$port" && http_answers "$port"; then break; fi
    remaining
    sleep 0.2
  done
  log "gateway answers on http://127.0.0.1:$port ($(elapsed) s)"
  if [[ -n "${RGW_WATCH_PID:-}" ]]; then
    # own session, no inherited stdout/stderr (a caller reading our output must see EOF)
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; exec bash "$2" purge "$3"' \
      rgw-watch "$RGW_WATCH_PID" "$SELF" "$dir" </dev/null >>"$dir/log/watch.out" 2>&1 &
    echo $! >"$dir/run/watch.pid"
  fi
  trap - EXIT
  print_env "$dir"
}

# True if an HTTP request to 127.0.0.1:$1 gets a status line back.
http_answers() {
  local line=""
  exec 4<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&4
  IFS= read -r -t 3 line <&4 || true
  exec 4<&- 4>&-
  [[ "$line" == HTTP/* ]]
}

cmd="${1:-}"
case "$cmd" in
  start)
    [[ $# -ge 2 && $# -le 3 ]] || usage
    start "$2" "${3:-7480}"
    ;;
  stop)
    [[ $# -eq 2 ]] || usage
    [[ -d "$2" ]] || die "$2 does not exist"
    stop_daemons "$(cd "$2" && pwd -P)"
    ;;
  purge)
    [[ $# -eq 2 ]] || usage
    if [[ -d "$2" ]]; then
      d=$(cd "$2" && pwd -P)
      # delete only what this script created: a marked ceph.conf, or nothing but its skeleton
      if ! grep -qs "^# throwaway single-node cluster written by scripts/rgw.sh" "$d/ceph.conf"; then
        for f in "$d"/* "$d"/.[!.]*; do
          [[ -e "$f" ]] || continue
          case "${f##*/}" in run | log | mon | osd | rgw) ;; *) die "$d does not look like a directory made by '$0 start'; not deleting it" ;; esac
        done
      fi
      stop_daemons "$d"
      rm -rf -- "$d"
    fi
    ;;
  env)
    [[ $# -eq 2 ]] || usage
    print_env "$2"
    ;;
  *) usage ;;
esac
