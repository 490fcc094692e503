#!/usr/bin/env bash
# Slurm for real, on one Docker host: a controller (slurmctld) and two compute nodes (slurmd),
# Debian's Slurm with one munge key, plus PostgreSQL; a shared directory plays the cluster's
# shared filesystem (the checkout, the job logs). As user `rbo` on the controller it submits
# docker/slurm/robustbench.sbatch the way the README says and checks, with plain SQL and ps:
#   1. the quickstart over 2 nodes: every cell finished exactly once, cells on both nodes;
#   2. bad input (the loopback host, SQLite on node-local /tmp, a missing study file): each job
#      fails with exit status 2 and one error line, before Ray starts, writing nothing;
#   3. a second study, `scancel`led in the middle and resubmitted, then stopped with
#      `scancel --batch --signal=INT` (the driver hands its cells back) and resubmitted: every cell
#      exactly once, and the cells finished before each cancel kept (not trained again);
#   4. a job array of two one-node jobs on a third study: both train cells, each cell once;
#   after every job: no process of the job's user left on either node.
# Teardown (containers, network, scratch) runs in a trap, also on failure.
#
# Needs root Docker with a running daemon (debootstrap makes the base image when missing, as in
# run_cluster.sh). Opt-in: ROBUSTBENCH_CLUSTER=1 pytest tests/cluster, or run it directly.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/cluster/lib.sh

SLURM_IMAGE=${SLURM_IMAGE:-robustbench-opt-slurm:test}
PREFIX=${SLURM_TEST_PREFIX:-rbo-slurm-test}
NODES=(node1 node2)
STUDY=studies/quickstart.yaml
CANCELLED=quickstart-scancel
ARRAY=quickstart-array
JOB_TIMEOUT_S=${JOB_TIMEOUT_S:-1200}
USER_UID=1500 # the image's `rbo`

OUT=$(mktemp -d)    # scratch: build output, the munge key
SHARED=$(mktemp -d) # /shared on every container: the user's checkout and the job logs
POSTGRES_PASSWORD=$(secret 16)
STORAGE=postgresql+psycopg://robustbench:$POSTGRES_PASSWORD@postgres:5432/robustbench
mask() { sed -e "s/$POSTGRES_PASSWORD/<POSTGRES_PASSWORD>/g"; }
containers() { docker ps -aq --filter "label=rbo-slurm-test=$PREFIX"; }
teardown() {
  local rc=$? c
  if ((rc != 0)); then
    say "failed (exit $rc): controller and node logs, job output (password masked)"
    for c in ctld "${NODES[@]}"; do
      echo "--- $c"
      docker exec "$PREFIX-$c" sh -c 'tail -n 30 /var/log/slurm/*.log' 2>&1 | mask || true
    done
    tail -n 30 "$SHARED"/*.out 2>/dev/null | mask || true
  fi
  say "tear down"
  mapfile -t ids < <(containers)
  ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
  docker network rm "$PREFIX" >/dev/null 2>&1 || true
  rm -rf "$OUT" "$SHARED"
}
trap teardown EXIT

sql() { docker exec "$PREFIX-postgres" psql -U robustbench -d robustbench -v ON_ERROR_STOP=1 -Atc "$1"; }
# On the controller as the user (it doubles as the login node), in the shared checkout.
as_user() { docker exec -u rbo -w /shared "$PREFIX-ctld" "$@"; }
submit() { # submit STORAGE_URL SBATCH_AND_SCRIPT_ARGS...: prints the job id
  docker exec -u rbo -w /shared -e ROBUSTBENCH_STORAGE="$1" "$PREFIX-ctld" sbatch --parsable "${@:2}"
}
job_field() { as_user scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# Waits until job $1 has ended; prints its final state.
wait_job() {
  local state deadline=$((SECONDS + JOB_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    state=$(job_field "$1" JobState)
    case $state in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
        echo "$state"
        return
        ;;
    esac
    sleep 1
  done
  fail "job $1 still ${state:-unknown} after $JOB_TIMEOUT_S s"
}
# No process of the job's user on any node (Slurm ends a job's processes within KillWait).
check_no_processes() {
  local node left=""
  for _ in $(seq 90); do
    left=""
    for node in "${NODES[@]}"; do
      # ps exits 1 when no process matches
      left+=$(docker exec "$PREFIX-$node" ps -u rbo -o pid=,args= | sed "s/^/$node: /" || true)
    done
    [[ -z $left ]] && break
    sleep 1
  done
  [[ -z $left ]] || fail "after $1, processes left on the nodes:"$'\n'"$left"
  say "after $1: processes of user rbo left on ${NODES[*]}: none"
}
job_log() { echo "$SHARED/robustbench-$1.out"; }
cells_per_node() { hosts_of "$1" | sed 's/|/: /; s/$/ cells/' | paste -sd ',' | sed 's/,/, /g'; }

# --- images -----------------------------------------------------------------------------------
build_images
t0=$(now)
build -f tests/cluster/slurm.Dockerfile --build-arg ROBUSTBENCH_IMAGE="$ROBUSTBENCH_IMAGE" -t "$SLURM_IMAGE" tests/cluster
say "Slurm image build $(since "$t0") s (on the project image), $(image_size "$SLURM_IMAGE")"

# --- the cluster ------------------------------------------------------------------------------
docker network create --label "rbo-slurm-test=$PREFIX" "$PREFIX" >/dev/null
mkdir "$OUT/munge"
head -c 1024 /dev/urandom >"$OUT/munge/munge.key"
cp -r studies "$SHARED/studies"
cp docker/slurm/robustbench.sbatch "$SHARED/"
chown -R "$USER_UID:$USER_UID" "$SHARED"
common=(--label "rbo-slurm-test=$PREFIX" --network "$PREFIX")
slurm=("${common[@]}" --init -v "$OUT/munge:/run/munge-key:ro" -v "$SHARED:/shared")
docker run -d "${common[@]}" --name "$PREFIX-postgres" --network-alias postgres \
  -e POSTGRES_USER=robustbench -e POSTGRES_DB=robustbench -e POSTGRES_PASSWORD="$POSTGRES_PASSWORD" \
  "$PG_IMAGE" >/dev/null
docker run -d "${slurm[@]}" --name "$PREFIX-ctld" --hostname slurmctld --network-alias slurmctld \
  "$SLURM_IMAGE" slurmctld >/dev/null
for node in "${NODES[@]}"; do
  docker run -d "${slurm[@]}" --name "$PREFIX-$node" --hostname "$node" --network-alias "$node" \
    --shm-size=1g "$SLURM_IMAGE" slurmd >/dev/null
done
idle=""
for _ in $(seq 90); do
  idle=$(as_user sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | paste -sd ' ') || true
  [[ $idle == "${NODES[*]}" ]] && break
  sleep 2
done
[[ $idle == "${NODES[*]}" ]] || fail "Slurm nodes idle: '$idle', want '${NODES[*]}'"
for _ in $(seq 60); do
  docker exec "$PREFIX-postgres" pg_isready -q -U robustbench -d robustbench && break
  sleep 1
done
say "up: slurmctld, slurmd on ${NODES[*]} (munge), PostgreSQL; $(as_user sinfo --version)"
cells=$(docker exec "$PREFIX-ctld" python -c "from robustbench_opt.spec import load_study; print(len(load_study('$STUDY').cells()))")

# --- 1. the quickstart over two nodes ---------------------------------------------------------
say "sbatch --nodes=2 --cpus-per-task=2 robustbench.sbatch $STUDY"
t0=$(now)
job=$(submit "$STORAGE" --nodes=2 --cpus-per-task=2 robustbench.sbatch "$STUDY")
state=$(wait_job "$job")
wall=$(since "$t0")
[[ $state == COMPLETED && $(job_field "$job" ExitCode) == 0:0 ]] ||
  { mask <"$(job_log "$job")"; fail "job $job ended $state, exit $(job_field "$job" ExitCode)"; }
say "job $job: $state in $wall s from sbatch (Slurm RunTime $(job_field "$job" RunTime)); its log, last lines:"
grep -E '^\[robustbench.sbatch|^Ray:|^job check|^trained' "$(job_log "$job")" | mask
check_exactly_once quickstart "$cells"
hosts=$(hosts_of quickstart)
say "cells per node: $(cells_per_node quickstart)"
for node in "${NODES[@]}"; do
  grep -q "^$node|" <<<"$hosts" || fail "no cell of quickstart ran on $node"
done
check_no_processes "job $job"
for node in "${NODES[@]}"; do
  left=$(docker exec "$PREFIX-$node" sh -c 'ls -d /tmp/rbo-ray-* 2>/dev/null' || true)
  [[ -z $left ]] || fail "Ray's temp dir left on $node: $left"
done
say "Ray's node-local temp dirs removed on ${NODES[*]}"

# --- 2. bad input: one line, exit 2, before Ray starts ----------------------------------------
bad_job() { # bad_job WHAT STORAGE STUDY_FILE
  local what=$1 id state lines
  id=$(submit "$2" --nodes=2 --cpus-per-task=2 robustbench.sbatch "$3" --study-name bad-input)
  state=$(wait_job "$id")
  [[ $state == FAILED && $(job_field "$id" ExitCode) == 2:0 ]] ||
    { mask <"$(job_log "$id")"; fail "$what: job $id ended $state, exit $(job_field "$id" ExitCode); want FAILED, 2:0"; }
  lines=$(grep -c . "$(job_log "$id")" || true)
  ((lines == 1)) || { mask <"$(job_log "$id")"; fail "$what: job $id printed $lines lines, want one error line"; }
  grep -q '^error: ' "$(job_log "$id")" || fail "$what: job $id's line is not an error line"
  say "$what: job $id exit 2: $(mask <"$(job_log "$id")")"
}
bad_job "storage on the loopback host" \
  "postgresql+psycopg://robustbench:$POSTGRES_PASSWORD@127.0.0.1:5432/robustbench" "$STUDY"
bad_job "SQLite under node-local /tmp on 2 nodes" "sqlite:////tmp/rbo-bad.db" "$STUDY"
bad_job "a study file missing on the compute nodes" "$STORAGE" studies/missing.yaml
[[ -z $(sql "SELECT count(*) FROM rbo_cell WHERE study = 'bad-input' HAVING count(*) > 0") ]] ||
  fail "a bad-input job wrote cells"
docker exec "$PREFIX-node1" test ! -e /tmp/rbo-bad.db || fail "the SQLite job created /tmp/rbo-bad.db"
say "bad input: nothing written, no Ray started"

# --- 3. scancel in the middle, resubmit; again with SIGINT; resubmit --------------------------
finished_cells() { sql "SELECT count(*) FROM rbo_cell WHERE study = '$1' AND state IN ('done', 'diverged')"; }
finished_trials() { # cell:trial of the finished cells of study $1, sorted
  sql "SELECT cell_id || ':' || optuna_trial_id FROM rbo_cell
       WHERE study = '$1' AND state IN ('done', 'diverged') ORDER BY 1"
}
# Waits until study $1 has at least $2 finished cells while job $3 runs.
wait_cells() {
  local got
  for _ in $(seq "$JOB_TIMEOUT_S"); do
    got=$(finished_cells "$1" 2>/dev/null || echo 0)
    ((got >= $2)) && return
    [[ $(job_field "$3" JobState) =~ ^(RUNNING|PENDING)$ ]] ||
      { mask <"$(job_log "$3")"; fail "job $3 ended before it could be cancelled"; }
    sleep 1
  done
  fail "study $1 has $got finished cells, want $2"
}
# What the database holds for study $1 right after a cancel: states and claimed cells.
after_cancel() {
  local counts claimed
  counts=$(sql "SELECT state || ' ' || count(*) FROM rbo_cell WHERE study = '$1' GROUP BY state ORDER BY 1" | paste -sd ',' | sed 's/,/, /g')
  claimed=$(sql "SELECT count(*) FROM rbo_cell WHERE study = '$1' AND claim_run IS NOT NULL")
  echo "$counts; cells still claimed: $claimed"
}
run_study() { submit "$STORAGE" --nodes=2 --cpus-per-task=2 robustbench.sbatch "$STUDY" --study-name "$1"; }

say "second study $CANCELLED: scancel, resubmit, scancel --batch --signal=INT, resubmit"
t0=$(now)
job=$(run_study "$CANCELLED")
wait_cells "$CANCELLED" 5 "$job"
kept=$(finished_trials "$CANCELLED")
as_user scancel "$job"
state=$(wait_job "$job")
[[ $state == CANCELLED ]] || fail "job $job ended $state after scancel, want CANCELLED"
say "scancel $job with $(wc -l <<<"$kept") of $cells cells finished: $(after_cancel "$CANCELLED")"
check_no_processes "scancel of job $job"

job=$(run_study "$CANCELLED")
wait_cells "$CANCELLED" $(($(wc -l <<<"$kept") + 5)) "$job"
as_user scancel --batch --signal=INT "$job"
state=$(wait_job "$job")
[[ $state == FAILED && $(job_field "$job" ExitCode) == 1:0 ]] ||
  { mask <"$(job_log "$job")"; fail "job $job ended $state, exit $(job_field "$job" ExitCode) after SIGINT; want FAILED, 1:0"; }
grep -q 'stopped early by Ctrl-C' "$(job_log "$job")" || fail "job $job's driver did not stop as on Ctrl-C"
released=$(after_cancel "$CANCELLED")
[[ $released == *"cells still claimed: 0" ]] || fail "after SIGINT: $released; want no claimed cell"
kept=$(finished_trials "$CANCELLED")
say "resubmitted job $job, scancel --batch --signal=INT with $(wc -l <<<"$kept") cells finished: $released"
grep -E '^trained|stopped early' "$(job_log "$job")" | mask
check_no_processes "SIGINT to job $job"

job=$(run_study "$CANCELLED")
state=$(wait_job "$job")
[[ $state == COMPLETED && $(job_field "$job" ExitCode) == 0:0 ]] ||
  { mask <"$(job_log "$job")"; fail "resubmitted job $job ended $state, exit $(job_field "$job" ExitCode)"; }
say "resubmitted job $job: $state (Slurm RunTime $(job_field "$job" RunTime)); $(since "$t0") s for the three jobs"
grep -E '^cells:|^trained' "$(job_log "$job")" | mask
check_exactly_once "$CANCELLED" "$cells"
lost=$(LC_ALL=C comm -23 <(echo "$kept") <(finished_trials "$CANCELLED"))
[[ -z $lost ]] || fail "cells finished before the cancels were trained again or lost: $lost"
say "the $(wc -l <<<"$kept") cells finished before the cancels kept their trials (none trained again)"
say "cells per node: $(cells_per_node "$CANCELLED")"
check_no_processes "job $job"

# --- 4. a job array: two one-node jobs share a study ------------------------------------------
say "third study $ARRAY: sbatch --array=0-1 --nodes=1 (two Ray clusters, one driver each)"
t0=$(now)
job=$(submit "$STORAGE" --array=0-1 --nodes=1 --cpus-per-task=2 robustbench.sbatch "$STUDY" --study-name "$ARRAY")
for task in 0 1; do
  state=$(wait_job "${job}_$task")
  [[ $state == COMPLETED && $(job_field "${job}_$task" ExitCode) == 0:0 ]] ||
    fail "array task ${job}_$task ended $state, exit $(job_field "${job}_$task" ExitCode)"
done
say "array job $job: both tasks COMPLETED in $(since "$t0") s"
check_exactly_once "$ARRAY" "$cells"
hosts=$(hosts_of "$ARRAY")
say "cells per node: $(cells_per_node "$ARRAY")"
for node in "${NODES[@]}"; do
  grep -q "^$node|" <<<"$hosts" || fail "no cell of $ARRAY ran on $node"
done
check_no_processes "array job $job"

# --- secrets ----------------------------------------------------------------------------------
for c in ctld "${NODES[@]}"; do
  docker exec "$PREFIX-$c" sh -c 'cat /var/log/slurm/*.log' >>"$OUT/logs.txt" 2>&1 || true
done
cat "$SHARED"/*.out >>"$OUT/logs.txt"
if grep -qF -- "$POSTGRES_PASSWORD" "$OUT/logs.txt"; then fail "the database password appears in a job log or a Slurm log"; fi
say "the database password appears in none of $(wc -l <"$OUT/logs.txt") lines of job and Slurm logs"
say "Slurm test passed"
