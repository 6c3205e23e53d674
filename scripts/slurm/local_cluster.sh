#!/usr/bin/env bash
# scripts/slurm/local_cluster.sh start|stop|status
#
# A single-node SLURM cluster on this machine, for the tests marked `slurm` and for trying the
# job scripts: installs Debian's slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf
# (this host from `hostname -s`, its CPUs from nproc, 90% of its memory), starts munged,
# slurmctld and slurmd, and waits until the node is idle. Idempotent; `stop` tears it down.
# Needs root (or sudo) for the packages and the daemons.
set -euo pipefail
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; }

write_config() {
  local cpus memory
  cpus=$(nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))
  $SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  $SUDO tee "$CONF" >/dev/null <<CONFIG
# written by scripts/slurm/local_cluster.sh
ClusterName=runner-local
SlurmctldHost=${HOST}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
NodeName=${HOST} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONFIG
}

start_munge() {
  if ! pgrep -x munged >/dev/null; then
    [ -s /etc/munge/munge.key ] || { $SUDO mkdir -p /etc/munge
      $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    $SUDO chown munge:munge /etc/munge/munge.key && $SUDO chmod 400 /etc/munge/munge.key
    $SUDO mkdir -p /run/munge /var/lib/munge /var/log/munge
    $SUDO chown munge:munge /run/munge /var/lib/munge /var/log/munge
    $SUDO runuser -u munge -- /usr/sbin/munged
  fi
}

wait_idle() {
  for _ in $(seq 1 60); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    case "$state" in
      idle*|mixed*|allocated*) return 0 ;;
      down*|drain*) $SUDO scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  echo "the node did not become idle (state: ${state:-unknown}); see /var/log/slurm/" >&2
  return 1
}

case "${1:-}" in
  start)
    if ! installed; then
      $SUDO apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq slurm-wlm munge >&2
    fi
    [ -f "$CONF" ] && grep -q "local_cluster.sh" "$CONF" && grep -q "SlurmctldHost=${HOST}$" "$CONF" || write_config
    start_munge
    pgrep -x slurmctld >/dev/null || $SUDO slurmctld
    pgrep -x slurmd >/dev/null || $SUDO slurmd
    wait_idle
    sinfo
    ;;
  stop)
    $SUDO pkill -x slurmd || true
    $SUDO pkill -x slurmctld || true
    $SUDO pkill -x munged || true
    ;;
  status)
    sinfo && squeue
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
