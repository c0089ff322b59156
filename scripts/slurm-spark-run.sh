#!/usr/bin/env bash
# Run one command on a transient Spark standalone cluster inside this Slurm allocation.
#
#   sbatch --nodes=4 --cpus-per-task=16 --mem=64G --time=04:00:00 \
#     scripts/slurm-spark-run.sh /opt/federation/.venv/bin/federation node run-once --config node.yaml
#
# Starts a Spark master on the allocation's first node and one worker per node (srun, one task
# per node), exports FEDERATION_SPARK_MASTER=spark://MASTER:PORT so the node run's Hail session
# uses that cluster instead of node.yaml's master, runs the command, and stops the cluster when
# the command ends (or the job is cancelled). Exits with the command's status.
#
# Spark comes from the pyspark wheel of the federation environment (the Spark Hail runs on).
# Environment (all optional):
#   FEDERATION_PYTHON    the environment's python (default: python beside the command, or python3)
#   SPARK_LOCAL_IP       address Spark binds on each node (default: the node's hostname address)
#   SPARK_MASTER_PORT    master port (default 7077); SPARK_MASTER_WEBUI_PORT (default 8080)
#   SPARK_WORKER_CORES   cores per worker (default SLURM_CPUS_PER_TASK or SLURM_CPUS_ON_NODE)
#   SPARK_WORKER_MEMORY  memory per worker, e.g. 48g (default: SLURM_MEM_PER_NODE MB less 4g)
#   SPARK_WORK_ROOT      logs and executor directories (default: $TMPDIR/spark-$SLURM_JOB_ID)
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: sbatch [options] $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [[ -z "${SLURM_JOB_ID:-}" ]]; then
  echo "$0: not inside a Slurm allocation (SLURM_JOB_ID unset); submit it with sbatch" >&2
  exit 2
fi

python=${FEDERATION_PYTHON:-$(dirname "$1")/python}
[[ -x "$python" ]] || python=python3
spark_home=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
master_host=${SPARK_LOCAL_IP:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
master_port=${SPARK_MASTER_PORT:-7077}
webui_port=${SPARK_MASTER_WEBUI_PORT:-8080}
cores=${SPARK_WORKER_CORES:-${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}}
if [[ -n "${SPARK_WORKER_MEMORY:-}" ]]; then
  memory=$SPARK_WORKER_MEMORY
elif [[ -n "${SLURM_MEM_PER_NODE:-}" && "$SLURM_MEM_PER_NODE" -gt 6144 ]]; then
  memory=$((SLURM_MEM_PER_NODE - 4096))m   # leave room for the Hail driver on the first node
else
  memory=2g
fi
work=${SPARK_WORK_ROOT:-${TMPDIR:-/tmp}/spark-$SLURM_JOB_ID}
mkdir -p "$work"
export SPARK_HOME=$spark_home SPARK_LOG_DIR=$work SPARK_NO_DAEMONIZE=1
master_url="spark://$master_host:$master_port"
nodes=${SLURM_JOB_NUM_NODES:-1}

pids=()
stop_cluster() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_cluster EXIT

# The web UI serves the status read below; it binds SPARK_LOCAL_IP when that is set.
"$spark_home/bin/spark-class" org.apache.spark.deploy.master.Master \
  --host "$master_host" --port "$master_port" --webui-port "$webui_port" >"$work/master.log" 2>&1 &
pids+=($!)
srun --overlap --nodes="$nodes" --ntasks-per-node=1 --kill-on-bad-exit=0 \
  "$spark_home/bin/spark-class" org.apache.spark.deploy.worker.Worker \
  --cores "$cores" --memory "$memory" --work-dir "$work/worker" "$master_url" \
  >"$work/workers.log" 2>&1 &
pids+=($!)

# Wait (up to 5 minutes) until every node's worker has registered with the master.
"$python" - "$master_host" "$webui_port" "$nodes" <<'PY'
import json, sys, time, urllib.request
host, port, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/json/", timeout=5) as answer:
            workers = json.load(answer).get("workers", [])
        if sum(worker["state"] == "ALIVE" for worker in workers) >= wanted:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit(f"spark cluster: fewer than {wanted} workers registered after 300 s; see logs")
PY
echo "spark cluster $master_url: $nodes worker(s), $cores cores and $memory each (logs: $work)"

export FEDERATION_SPARK_MASTER=$master_url
status=0
"$@" || status=$?
exit "$status"
