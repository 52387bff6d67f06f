# Shared settings and helpers for the testbed scripts. Sourced, not run.
# shellcheck shell=bash disable=SC2034 # settings for the scripts that source it
set -euo pipefail

# The daemons these scripts start must not keep the caller's files open (a
# lock the caller holds, say, would be held for as long as the testbed runs):
# drop every descriptor inherited above stderr (255 is the running script).
for _fd in "/proc/$$/fd/"*; do
  _fd=${_fd##*/}
  case $_fd in 0|1|2|255) ;; *) eval "exec $_fd>&-" 2>/dev/null || true ;; esac
done
unset _fd

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$TESTBED_DIR")
# The cached Debian roots and guest image live outside the git tree so every
# clone (and CI) reuses them.
CACHE_DIR=${CONDOR_CLOUD_TESTBED_CACHE:-/var/cache/condor-cloud-testbed}
# The test guest: one directory per version of its sources (build-guest*,
# guest/), so checkouts with different guests, side by side in two slots, do
# not rebuild each other's image under their tests.
GUEST_DIR=$CACHE_DIR/guest-$(cat "$TESTBED_DIR/build-guest" "$TESTBED_DIR/build-guest-in-root" "$TESTBED_DIR"/guest/* \
  | sha256sum | cut -c1-16)
# Which HTCondor the hosts run: 23 (Debian 13's condor 23.9, the default and what
# CI runs) or 25 (Debian unstable's condor 25.x). Each has its own cached root
# and its own runtime state.
CONDOR_SERIES=${CONDOR_SERIES:-23}
case $CONDOR_SERIES in
  23) DEBIAN_SUITE=trixie ROOT_DIR=$CACHE_DIR/root STATE_NAME=.testbed ;;
  25) DEBIAN_SUITE=sid ROOT_DIR=$CACHE_DIR/root-25 STATE_NAME=.testbed-25 ;;
  *) printf '[testbed] error: CONDOR_SERIES=%s: use 23 or 25\n' "$CONDOR_SERIES" >&2; exit 1 ;;
esac
DEBIAN_DIR=$CACHE_DIR/debian
# Runtime state of one checkout's testbed: pidfiles, overlays, logs, sockets.
STATE_DIR=${CONDOR_CLOUD_TESTBED_STATE:-$REPO_DIR/$STATE_NAME}

# The pool's UID_DOMAIN, and the DNS domain of its hosts.
UID_DOMAIN=cloud.testbed

# The testbed LAN: 198.18.0.0/15 is reserved for network tests (RFC 2544) and
# lives only inside the namespaces below.
LAN_PREFIX=198.18.0
# Network namespace names are machine-wide. Each running testbed takes a slot
# whose prefix names its namespaces, so testbeds of different checkouts can run
# side by side in different slots: CONDOR_CLOUD_TESTBED_SLOT asks for one (0 by
# default); the scripts otherwise use the slot this checkout's testbed runs in.
RUNNING_SLOT=$(cat "$STATE_DIR/slot" 2>/dev/null || true)
TESTBED_SLOT=${CONDOR_CLOUD_TESTBED_SLOT:-${RUNNING_SLOT:-0}}
case $TESTBED_SLOT in
  0) NETNS_PREFIX=cc- ;;
  [1-9]) NETNS_PREFIX=cc$TESTBED_SLOT- ;;
  *) printf '[testbed] error: CONDOR_CLOUD_TESTBED_SLOT=%s: use 0 to 9\n' "$TESTBED_SLOT" >&2; exit 1 ;;
esac
LAN_NETNS=${NETNS_PREFIX}lan
LAN_BRIDGE=lan0
LAN_ADDR=$LAN_PREFIX.1
# Every instance has a new MAC, so every launch takes a lease: short leases
# (dnsmasq's shortest; guests renew every minute) give the addresses of
# ended guests back before a test run or a bench burst uses up the range.
DHCP_FIRST=$LAN_PREFIX.100
DHCP_LAST=$LAN_PREFIX.250
DHCP_RANGE="$DHCP_FIRST,$DHCP_LAST,255.255.255.0,2m"
# name:address:role  (role: master | node | client)
HOSTS=(
  "master:$LAN_PREFIX.2:master"
  "node1:$LAN_PREFIX.3:node"
  "client:$LAN_PREFIX.9:client"
)
MASTER_ADDR=$LAN_PREFIX.2
# The API's users on the testbed and in make demo: an admin and an ordinary user
# (their passwords are made once per testbed, in secrets/).
API_ADMIN="admin"
# The API's port on the master (and on localhost in make demo).
API_PORT=3002
API_USER2=alice
# One testbed per slot; this file names the checkout whose testbed owns it.
OWNER_FILE=/run/condor-cloud-testbed.owner
[ "$TESTBED_SLOT" = 0 ] || OWNER_FILE=/run/condor-cloud-testbed.$TESTBED_SLOT.owner

# The state directory of another checkout whose testbed is running here, if any
# (a testbed whose processes are all gone, say after a reboot, does not count).
other_owner() {
  local owner pidfile
  owner=$(cat "$OWNER_FILE" 2>/dev/null || true)
  [ -n "$owner" ] && [ "$owner" != "$STATE_DIR" ] || return 0
  for pidfile in "$owner"/hosts/*/keeper.pid; do
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "$owner"; return 0; fi
  done
}

host_field() { # host_field "name:addr:role" N
  local IFS=:
  # shellcheck disable=SC2206
  local parts=($1)
  echo "${parts[$2]}"
}

netns_of() { echo "$NETNS_PREFIX$1"; }
node_state() { echo "$STATE_DIR/hosts/$1"; }
keeper_pid() { cat "$(node_state "$1")/keeper.pid" 2>/dev/null; }

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

require_root() { [ "$(id -u)" = 0 ] || die "run as root (the testbed creates namespaces and mounts)"; }

# A zombie has exited (its parent just has not reaped it yet).
pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

pid_gone() { ! pid_alive "$1"; }

# Run CMD every STEP seconds until it succeeds; give up when it fails with a
# status other than 1 (nothing more to wait for) or after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1)) step=$2 rc
  shift 2
  while :; do
    rc=0; "$@" || rc=$?
    [ "$rc" = 0 ] && return 0
    { [ "$rc" = 1 ] && [ "$SECONDS" -lt "$deadline" ]; } || return 1
    sleep "$step"
  done
}

# The Debian mirror the host itself uses.
debian_mirror() {
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  [ -n "$uri" ] || uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
  [ -n "$uri" ] || die "cannot find a Debian mirror in the host's apt sources"
  echo "$uri"
}

# Run a command chrooted in DIR with /proc, /sys and /dev mounted in a private
# mount namespace, so nothing stays mounted when it ends.
in_chroot() {
  local dir=$1; shift
  # shellcheck disable=SC2016 # the inner shell expands it
  unshare --mount --propagation private -- bash -euc '
    dir=$1; shift
    mount -t proc proc "$dir/proc"
    mount --rbind /sys "$dir/sys"
    mount --rbind /dev "$dir/dev"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    exec chroot "$dir" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"
  ' in_chroot "$dir" "$@"
}

# Signal PID, wait up to SECONDS for it to exit, then SIGKILL it.
stop_pid() {
  local pid=$1 sig=$2 seconds=$3
  pid_alive "$pid" || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  wait_until "$seconds" 0.1 pid_gone "$pid" && return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait_until 5 0.1 pid_gone "$pid" || true
}

# The command prefix that runs a command inside host NAME: its network,
# mount and UTS namespaces, chrooted into its root, with a clean environment.
# (Exec'd directly, so a background job's $! is the command's own pid.)
host_prefix() {
  local name=$1
  local pid; pid=$(keeper_pid "$name") || die "host $name is not up (make testbed-up)"
  pid_alive "$pid" || die "host $name is not up (make testbed-up)"
  HOST_PREFIX=(nsenter -t "$pid" -m -u -n -- chroot "$(node_state "$name")/root"
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
    TERM="${TERM:-dumb}" LANG=C.UTF-8)
}

in_host() {
  host_prefix "$1"; shift
  "${HOST_PREFIX[@]}" "$@"
}

# The master's systemd (testbed/systemd) runs in this cgroup, below this
# machine's cgroup2 hierarchy.
SYSTEMD_CGROUP=condor-cloud-testbed-$TESTBED_SLOT

# The PID here of the master's systemd, if it runs: the one in its pidfile,
# if that process is PID 1 of its namespace in SYSTEMD_CGROUP (not a
# stranger that got the number after a reboot or a crash).
master_systemd_pid() {
  local pid; pid=$(cat "$(node_state master)/systemd.pid" 2>/dev/null) || return 1
  pid_alive "$pid" && grep -Eq "/$SYSTEMD_CGROUP(/init\.scope)?\$" "/proc/$pid/cgroup" 2>/dev/null \
    && grep -Eq '^NSpid:.*[[:space:]]1$' "/proc/$pid/status" && echo "$pid"
}

# Run a command in the master's systemd: its PID, mount, network and UTS
# namespaces and root, with a clean environment.
in_systemd() {
  local pid; pid=$(master_systemd_pid) || die "the master's systemd is not running (testbed/systemd start)"
  nsenter -t "$pid" -m -p -u -n -r -w -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# The PID here of PID INNER of the PID namespace of process NS_PID.
pid_outside() {
  local ns p; ns=$(readlink "/proc/$1/ns/pid") || return 1
  while read -r p; do
    [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" = "$ns" ] && { echo "$p"; return 0; }
  done < <(grep -s '^NSpid:' /proc/[0-9]*/status | awk -v inner="$2" 'NF > 2 && $NF == inner { split($1, f, "/"); print f[3] }')
  return 1
}

# Host NAME's root directory as seen from outside its mount namespace.
host_root() { echo "/proc/$(keeper_pid "$1")/root$(node_state "$1")/root"; }

# The git tree object of the checkout's working tree as it is (less what git
# ignores), made with a scratch index (the real one is untouched): what
# packaging/build packs, and so what names a build.
working_tree_id() {
  local scratch; scratch=$(mktemp -d)
  GIT_INDEX_FILE=$scratch/index git -C "$REPO_DIR" add -A \
    && GIT_INDEX_FILE=$scratch/index git -C "$REPO_DIR" write-tree
  local rc=$?
  rm -rf "$scratch"
  return $rc
}
