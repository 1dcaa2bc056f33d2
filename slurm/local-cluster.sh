#!/usr/bin/env bash
# A real single-node SLURM cluster on 127.0.0.1, for tests and demos.
#
#   slurm/local-cluster.sh start DIR   # install (Debian, as root) if missing, configure, start
#   slurm/local-cluster.sh stop DIR    # cancel jobs, stop slurmd, slurmctld, munged by PID
#
# After start, point the clients at it:  export SLURM_CONF=DIR/slurm.conf
# Exit 3 when it cannot run here (not root, no apt-get): callers skip with the reason printed;
# exit 1 when it should have run and did not.
set -euo pipefail
cmd=${1:?usage: local-cluster.sh start|stop DIR}
dir=${2:?usage: local-cluster.sh start|stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

need() { echo "local-cluster: $*" >&2; exit 3; }   # cannot run here: callers skip
fail() { echo "local-cluster: $*" >&2; exit 1; }   # should run here but did not

stop_pid() {  # stop a daemon by the PID it recorded, waiting for it to go
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

if [ "$cmd" = stop ]; then
  export SLURM_CONF="$dir/slurm.conf"
  if [ -f "$dir/slurmctld.pid" ] && command -v scancel >/dev/null; then
    scancel --full --quiet --user root 2>/dev/null || true   # running jobs outlive the daemons otherwise
    sleep 1
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  [ -f "$dir/munge_dir" ] && rm -rf "$(cat "$dir/munge_dir")"
  exit 0
fi
[ "$cmd" = start ] || need "unknown command $cmd (start|stop)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || need "slurm-wlm and munge are not installed, and installing them needs root"
  command -v apt-get >/dev/null || need "slurm-wlm and munge are not installed, and there is no apt-get"
  echo "local-cluster: installing slurm-wlm and munge" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
     slurm-wlm munge) >"$dir/apt.log" 2>&1 || fail "apt-get install slurm-wlm munge failed (see $dir/apt.log)"
fi
[ "$(id -u)" = 0 ] || need "the daemons run as root here (SlurmUser=root); run as root"

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(free -m | awk '/^Mem:/{print $2}') * 9 / 10 ))
mkdir -p "$dir/state" "$dir/spool"
# munged runs as the munge user: its socket lives in a directory that user can reach.
munge_dir=$(mktemp -d /tmp/llmeval-munge.XXXXXX)
chmod 755 "$munge_dir"; chown munge:munge "$munge_dir"
echo "$munge_dir" >"$dir/munge_dir"
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
cat >"$dir/slurm.conf" <<CONF
ClusterName=llmeval-local
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_dir/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"

runuser -u munge -- /usr/sbin/munged --force --socket="$munge_dir/munge.socket" \
  --pid-file="$munge_dir/munged.pid" --log-file="$munge_dir/munged.log" \
  || fail "munged did not start (see $munge_dir/munged.log)"
cp "$munge_dir/munged.pid" "$dir/munged.pid"
/usr/sbin/slurmctld -f "$dir/slurm.conf" || fail "slurmctld did not start (see $dir/slurmctld.log)"
/usr/sbin/slurmd -f "$dir/slurm.conf" || fail "slurmd did not start (see $dir/slurmd.log)"
for _ in $(seq 100); do
  state=$(sinfo -h -o %t 2>/dev/null | head -1 || true)
  case "$state" in idle*|mix*|alloc*) echo "local-cluster: up ($host, $cpus CPUs, ${mem} MB), SLURM_CONF=$SLURM_CONF" >&2; exit 0;; esac
  sleep 0.2
done
fail "the node did not become idle (state: ${state:-none}; see $dir/slurmctld.log, $dir/slurmd.log)"
