#!/usr/bin/env bash
# A private single-node Slurm cluster on this machine (munged, slurmctld and
# slurmd from Debian's slurm-wlm and munge), for the e2e tests and for trying
# the templates in slurm/ without a real cluster.
#
#   slurm/local/cluster.sh start [--gpus N] [--owner PID]   prints the state dir
#   slurm/local/cluster.sh stop DIR                          cancels jobs, stops daemons, removes DIR
#   slurm/local/cluster.sh reap                              stops clusters whose owner died
#
# Everything lives in its own state directory under $QL_SLURM_ROOT
# (default /tmp/qlora-slurm): munge key and socket, slurm.conf, spool and
# state directories, pid files and logs. Nothing in /etc, /run or /var is
# used, so a system munged or slurmd (or a second test's cluster) does not
# collide with it: the ports are chosen free at start, and clients find the
# cluster through SLURM_CONF (source DIR/env). Daemons are stopped by their pid
# files; stray job processes by the SLURM_CONF in their environment.
#
# `start` records an owner process (--owner, default: the caller): `reap`, run
# by every start, stops a cluster whose owner has died (a test killed before
# its trap ran). Exit status: 0 ok; 77 when Slurm cannot run here (packages
# missing: slurm/local/install.sh; not root), with the reason on stderr; 1 a
# start that failed (the daemon logs are printed).
set -u

ROOT=${QL_SLURM_ROOT:-/tmp/qlora-slurm}
die77() { echo "cluster.sh: cannot run Slurm here: $*" >&2; exit 77; }
say() { echo "cluster.sh: $*" >&2; }

# Whether a process runs (a zombie left to an init that does not reap is gone).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Stops a process by pid file: SIGTERM, up to $2 s, then SIGKILL.
stop_pidfile() {
    local f=$1 t=${2:-10} pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null)
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    kill -TERM "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
    for _ in $(seq $((t * 10))); do
        alive "$pid" || { rm -f "$f"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$f"
}

# Pids of processes (other than this one and its ancestors) whose environment
# names this cluster: job scripts, srun, slurmstepd, the tasks.
cluster_pids() {
    local dir=$1 p env me=$BASHPID anc=" "
    while [ "$me" -gt 1 ] 2>/dev/null; do
        anc="$anc$me "
        me=$(awk '{print $4}' "/proc/$me/stat" 2>/dev/null) || break
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case $anc in *" $p "*) continue ;; esac
        env=$({ tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null) || continue
        if printf '%s\n' "$env" | grep -qxF -e "SLURM_CONF=$dir/slurm.conf" -e "QL_SLURM_DIR=$dir"; then
            echo "$p"
        fi
    done
}

cmd_stop() {
    local dir=${1:?usage: cluster.sh stop DIR} pids
    [ -f "$dir/slurm.conf" ] || [ -f "$dir/owner" ] || { say "stop: $dir is not a cluster"; return 1; }
    export SLURM_CONF=$dir/slurm.conf
    if [ -s "$dir/slurmctld.pid" ] && alive "$(cat "$dir/slurmctld.pid")"; then
        # cancel every job of this private cluster, then give them KillWait
        scancel --quiet --user="$(id -un)" 2>/dev/null
        for _ in $(seq 100); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_pidfile "$dir/slurmd.pid" 10
    stop_pidfile "$dir/slurmctld.pid" 10
    # slurmstepd and the tasks outlive slurmd: end what is left, by pid
    pids=$(cluster_pids "$dir")
    if [ -n "$pids" ]; then
        kill -TERM $pids 2>/dev/null
        sleep 1
        pids=$(cluster_pids "$dir")
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    fi
    stop_pidfile "$dir/munge/munged.pid" 5
    [ "${QL_SLURM_KEEP:-0}" = 1 ] || rm -rf "$dir"
    return 0
}

cmd_reap() {
    local d owner
    [ -d "$ROOT" ] || return 0
    for d in "$ROOT"/c.*; do
        [ -d "$d" ] || continue
        owner=$(cat "$d/owner" 2>/dev/null)
        case $owner in '' | *[!0-9]*) owner=0 ;; esac
        if [ "$owner" = 0 ] || ! alive "$owner"; then
            say "reaping the cluster $d (its owner $owner is gone)"
            QL_SLURM_KEEP=0 cmd_stop "$d" >/dev/null 2>&1
            rm -rf "$d"
        fi
    done
}

# Whether something listens on TCP port $1 (ss where iproute2 is installed,
# else a connection attempt).
port_used() {
    if command -v ss >/dev/null; then
        [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        port_used $p || { echo $p; return 0; }
    done
    return 1
}

# The node line slurmd reports for this machine, with RealMemory at 90 %.
node_line() {
    local host=$1 line mem
    line=$(slurmd -C 2>/dev/null | head -n1)
    case $line in
    NodeName=*CPUs=*)
        mem=$(echo "$line" | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
        line=$(echo "$line" | sed -e "s/^NodeName=[^ ]*/NodeName=$host/" -e 's/ *RealMemory=[0-9]*//')
        ;;
    *)
        mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
        line="NodeName=$host CPUs=$(nproc)"
        ;;
    esac
    echo "$line RealMemory=$(((${mem:-1000} * 9) / 10))"
}

write_conf() {
    local dir=$1 host=$2 ctld_port=$3 d_port=$4 gpus=$5 gres=""
    if [ "$gpus" -gt 0 ]; then
        # count-only GPUs (no device files): lets the templates' --gpus-per-node
        # be scheduled on a machine without GPUs
        gres=" Gres=gpu:$gpus"
        # (Slurm drops a GPU without a device File: links to /dev/null stand in)
        for i in $(seq 0 $((gpus - 1))); do ln -s /dev/null "$dir/gpu$i"; done
        echo "NodeName=$host Name=gpu File=$dir/gpu[0-$((gpus - 1))]" >"$dir/gres.conf"
    fi
    cat >"$dir/slurm.conf" <<EOF
# written by slurm/local/cluster.sh for a private single-node test cluster
ClusterName=ql$(basename "$dir" | tr -dc 'a-z0-9' | tail -c 8)
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.sock
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobRequeue=1
MailProg=/bin/true
GresTypes=gpu
PlugStackConfig=$dir/plugstack.conf
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=30
MinJobAge=600
Waittime=0
$(node_line "$host")$gres State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$dir/plugstack.conf"
}

wait_for() { # seconds, command...
    local t=$1
    shift
    for _ in $(seq $((t * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

node_idle() { [ "$(sinfo -h -N -o %t 2>/dev/null | head -n1)" = idle ]; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_failed() {
    local dir=$1 f
    say "start failed: $2"
    for f in "$dir"/log/*.log "$dir"/munge/munged.log; do
        [ -s "$f" ] && { echo "---- $f" >&2; tail -n 20 "$f" >&2; }
    done
    cmd_stop "$dir" >/dev/null 2>&1
    exit 1
}

cmd_start() {
    local gpus=0 owner=$PPID dir host ctld_port d_port
    while [ $# -gt 0 ]; do
        case $1 in
        --gpus) gpus=$2; shift 2 ;;
        --owner) owner=$2; shift 2 ;;
        *) echo "cluster.sh start: unknown option $1" >&2; exit 2 ;;
        esac
    done
    for b in munged munge unmunge slurmctld slurmd sbatch srun scontrol squeue sinfo scancel; do
        command -v $b >/dev/null || die77 "$b not found (slurm/local/install.sh installs slurm-wlm and munge)"
    done
    [ "$(id -u)" = 0 ] || die77 "the test cluster runs its daemons as root (SlurmUser=root); this is uid $(id -u)"
    cmd_reap
    mkdir -p "$ROOT" && chmod 0755 "$ROOT" || die77 "cannot create $ROOT"
    dir=$(mktemp -d "$ROOT/c.XXXXXX") || die77 "cannot create a state directory in $ROOT"
    echo "$owner" >"$dir/owner"
    mkdir -p -m 0700 "$dir/munge" "$dir/ctld" "$dir/spool" "$dir/log"
    export QL_SLURM_DIR=$dir SLURM_CONF=$dir/slurm.conf
    host=$(hostname -s)

    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
    munged --force --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" 2>>"$dir/munge/munged.log" ||
        start_failed "$dir" "munged did not start"
    wait_for 10 sh -c "munge -n -S '$dir/munge/munge.sock' | unmunge -S '$dir/munge/munge.sock'" ||
        start_failed "$dir" "munge does not answer on $dir/munge/munge.sock"

    for _ in 1 2 3; do
        ctld_port=$(free_port) && d_port=$(free_port) || start_failed "$dir" "no free TCP port"
        [ "$ctld_port" = "$d_port" ] && continue
        write_conf "$dir" "$host" "$ctld_port" "$d_port" "$gpus"
        slurmctld -f "$dir/slurm.conf" -i 2>>"$dir/log/slurmctld.err"
        wait_for 20 ctld_up && break
        stop_pidfile "$dir/slurmctld.pid" 5
        grep -qi 'address already in use' "$dir/log/slurmctld.log" 2>/dev/null ||
            start_failed "$dir" "slurmctld did not come up"
        say "port $ctld_port in use, trying others"
    done
    ctld_up || start_failed "$dir" "slurmctld did not come up"
    slurmd -f "$dir/slurm.conf" -N "$host" 2>>"$dir/log/slurmd.err" ||
        start_failed "$dir" "slurmd did not start"
    wait_for 30 node_idle || {
        # ReturnToService=2 brings a node back when it registers; a node left
        # DOWN by an earlier state file still needs resuming
        scontrol update nodename="$host" state=resume >/dev/null 2>&1
        wait_for 20 node_idle
    } || start_failed "$dir" "node $host is not idle: $(sinfo -h -N -o '%t %E' 2>&1)"
    echo "export SLURM_CONF=$dir/slurm.conf" >"$dir/env"
    echo "$dir"
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
reap) cmd_reap ;;
*) echo "usage: cluster.sh start [--gpus N] [--owner PID] | stop DIR | reap" >&2; exit 2 ;;
esac
