#!/usr/bin/env bash
# Start (or stop) a single-node Slurm cluster on localhost for the tests, as root.
# Usage: cluster.sh start DIR | cluster.sh stop DIR. Prints the slurm.conf path on start.
# Needs Debian's slurm-wlm and munge (.ci/run installs them).
set -euo pipefail
action=$1
dir=$(realpath -m "$2")
if [ "$action" = stop ]; then
    pkill -f -- "-f $dir/slurm.conf" 2>/dev/null || true   # both daemons were started with -f
    [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$dir/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
    exit 0
fi
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
node=$(slurmd -C | head -1 | sed 's/ UpTime.*//')   # NodeName=<host> CPUs=... RealMemory=...
host=$(echo "$node" | sed 's/NodeName=\([^ ]*\).*/\1/')
cat > "$dir/slurm.conf" <<CONF
ClusterName=maskpipe
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
ReturnToService=2
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
# srun inside batch jobs looks for the default path, whatever SLURM_CONF said at submission: link
# it there, unless this machine already has a Slurm config of its own (then the test skips).
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ]; then
    ln -s "$dir/slurm.conf" /etc/slurm/slurm.conf
elif [ "$(readlink /etc/slurm/slurm.conf)" != "$dir/slurm.conf" ]; then
    echo "/etc/slurm/slurm.conf exists: not starting a test cluster over a real one" >&2
    exit 1
fi
mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
pgrep -x munged >/dev/null || munged --force
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
echo "slurm did not come up; see $dir/*.log" >&2
exit 1
