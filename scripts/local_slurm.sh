#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, to test cluster submission for real.
#   bash scripts/local_slurm.sh install   # Debian packages (root)
#   bash scripts/local_slurm.sh start     # munged, slurmctld, slurmd on 127.0.0.1
#   bash scripts/local_slurm.sh stop
# Settings follow what works in a container without cgroups (no accounting: the profile
# must use `slurm-status-command: squeue`; MinJobAge keeps finished jobs in `scontrol show
# job` for an hour, for tests/test_slurm.py to read). A fake GPU (gres gpu:1 on /dev/null) lets
# `gpu: 1` requests be scheduled.
set -euo pipefail
STATE=${SLURM_TEST_STATE:-/tmp/cmta-slurm}

install() {
    command -v slurmctld >/dev/null && return 0
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

start() {
    host=$(hostname)
    mem=$(awk '/MemAvailable/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cpus=$(nproc)
    mkdir -p "$STATE"/{spool,state,log} /etc/slurm /run/munge
    cat > /etc/slurm/slurm.conf <<CONF
ClusterName=cmta-test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MinJobAge=3600
ReturnToService=2
GresTypes=gpu
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=${host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=${host} MaxTime=INFINITE State=UP
CONF
    cat > /etc/slurm/gres.conf <<CONF
AutoDetect=off
NodeName=${host} Name=gpu File=/dev/null
CONF
    chown munge:munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 30); do
        if sinfo -h -o %t 2>/dev/null | grep -q idle; then
            sinfo
            return 0
        fi
        sleep 1
    done
    echo "local SLURM did not come up; see $STATE/log" >&2
    return 1
}

stop() {
    for pid in "$STATE"/slurmd.pid "$STATE"/slurmctld.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    pkill -x munged 2>/dev/null || true
    # the files start wrote: with a slurm.conf naming a controller that is down, every
    # `scontrol show config` waits 9 s, and the SLURM executor plugin runs that command at
    # every Snakemake start (its squeue/sacct choice), local runs included
    rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf
}

"${1:?usage: local_slurm.sh install|start|stop}"
