#!/usr/bin/env bash
# The cluster for real, on one Docker host: builds the images, starts docker/compose.yaml
# (PostgreSQL, a Ray head, two CPU workers, optuna-dashboard, each in its own container), runs
# the quickstart from the head container, checks the results with plain SQL, the worker hosts,
# optuna-dashboard's API and the secrets, kills a worker in the middle of a second study and
# checks that the run retries the lost cells itself and lands every cell exactly once, then tears
# everything down (also on failure).
#
# Needs root-less or root Docker with a running daemon and docker-compose >= 1.29 (or
# `docker compose`). The images build from a local Debian base (BASE_IMAGE, default
# robustbench-debian:bookworm), made with debootstrap when missing (tests/cluster/lib.sh): no
# Docker Hub needed.
# Secrets and ports come from the environment when set, else fresh random ones / free ports.
set -euo pipefail
cd "$(dirname "$0")/../.."

source tests/cluster/lib.sh
PROJECT=${CLUSTER_PROJECT:-rbo-cluster-test}
STUDY=studies/quickstart.yaml
SECOND=quickstart-worker-killed

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
COMPOSE+=(-p "$PROJECT" -f docker/compose.yaml -f tests/cluster/compose.test.yaml --profile cpu)
compose() { "${COMPOSE[@]}" "$@"; }

export POSTGRES_PASSWORD=${POSTGRES_PASSWORD:-$(secret 16)} RAY_AUTH_TOKEN=${RAY_AUTH_TOKEN:-$(secret 32)}
export POSTGRES_PORT=${POSTGRES_PORT:-$(free_port)} RAY_GCS_PORT=${RAY_GCS_PORT:-$(free_port)}
export RAY_DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-$(free_port)} RAY_CLIENT_PORT=${RAY_CLIENT_PORT:-$(free_port)}
export OPTUNA_DASHBOARD_PORT=${OPTUNA_DASHBOARD_PORT:-$(free_port)} RAY_SHM_SIZE=${RAY_SHM_SIZE:-1gb}

OUT=$(mktemp -d)  # run outputs and compose logs, checked for the secrets
# Prints stdin with the secrets masked (the checks below still read the raw files).
mask() { sed -e "s/$POSTGRES_PASSWORD/<POSTGRES_PASSWORD>/g" -e "s/$RAY_AUTH_TOKEN/<RAY_AUTH_TOKEN>/g"; }
teardown() {
  local rc=$?
  if ((rc != 0)); then
    say "failed (exit $rc): last log lines, secrets masked"
    compose logs --no-color --tail=40 2>&1 | mask || true
  fi
  say "tear down"
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap teardown EXIT

sql() { compose exec -T postgres psql -U robustbench -d robustbench -v ON_ERROR_STOP=1 -Atc "$1"; }
on_head() { compose exec -T ray-head "$@"; }
container() { compose ps -q "$1" | sed -n "${2:-1}p"; }
hostname_of() { docker inspect -f '{{.Config.Hostname}}' "$1"; }

# --- images -----------------------------------------------------------------------------------
build_images

# --- the stack --------------------------------------------------------------------------------
say "up: postgres, ray-head, 2 x ray-cpu-worker, optuna-dashboard (project $PROJECT)"
compose up -d --no-build --scale ray-worker=0 --scale ray-cpu-worker=2 >/dev/null 2>&1 ||
  { compose up -d --no-build --scale ray-worker=0 --scale ray-cpu-worker=2; fail "compose up"; }
for service in postgres ray-head ray-cpu-worker optuna-dashboard; do
  [[ -n $(container "$service") ]] || fail "no $service container"
done
for port in $(docker ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Ports}}' |
  tr ',' '\n' | grep -- '->' | sed 's/->.*//'); do
  [[ $port == 127.0.0.1:* ]] || fail "port published beyond 127.0.0.1: $port"
done
say "published ports all on 127.0.0.1"

nodes=0
for _ in $(seq 90); do
  nodes=$(on_head python -c "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))" 2>/dev/null | tail -n 1) || true
  [[ $nodes == 3 ]] && break
  sleep 2
done
[[ $nodes == 3 ]] || fail "the Ray cluster has $nodes live nodes, want 3 (head and 2 workers)"
say "Ray: head + 2 workers joined with the token"

head=$(hostname_of "$(container ray-head)")
worker1=$(hostname_of "$(container ray-cpu-worker 1)")
worker2=$(hostname_of "$(container ray-cpu-worker 2)")
for c in "$(container ray-head)" "$(container ray-cpu-worker 1)" "$(container ray-cpu-worker 2)"; do
  mounts=$(docker inspect -f '{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}' "$c")
  for m in "$PWD/studies:/work/studies" "$PWD/data:/work/data"; do
    [[ " $mounts " == *" $m "* ]] || fail "$(docker inspect -f '{{.Name}}' "$c") lacks the mount $m"
  done
done
say "./studies and ./data mounted at /work/studies and /work/data on the head and both workers"
cells=$(on_head python -c "from robustbench_opt.spec import load_study; print(len(load_study('$STUDY').cells()))")

# --- the quickstart through the stack ---------------------------------------------------------
say "run $STUDY on the cluster, from the head container, into PostgreSQL"
t0=$(now)
on_head robustbench-opt run "$STUDY" --address auto >"$OUT/run1.txt" 2>&1 ||
  { mask <"$OUT/run1.txt"; fail "robustbench-opt run exited non-zero"; }
say "quickstart: $cells cells in $(since "$t0") s wall"
tail -n 12 "$OUT/run1.txt" | mask
check_exactly_once quickstart "$cells"
hosts=$(hosts_of quickstart)
echo "$hosts" | sed "s/^$head|/head    $head|/; s/^$worker1|/worker1 $worker1|/; s/^$worker2|/worker2 $worker2|/"
while IFS='|' read -r host _; do
  [[ $host == "$head" || $host == "$worker1" || $host == "$worker2" ]] || fail "cell trained on unknown host $host"
done <<<"$hosts"
grep -Eq "^($worker1|$worker2)\|" <<<"$hosts" || fail "no cell ran on a worker container"
say "cells ran on the worker containers"

url=http://127.0.0.1:$OPTUNA_DASHBOARD_PORT/api/studies
python3 - "$url" <<'EOF' || fail "optuna-dashboard does not list the quickstart study"
import json, sys, time, urllib.request

for _ in range(30):
    try:
        studies = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["study_summaries"]
        break
    except OSError:
        time.sleep(2)
else:
    sys.exit(1)
names = {s["study_name"]: s for s in studies}
print(f"== optuna-dashboard {sys.argv[1]}: {sorted(names)}")
sys.exit(0 if "quickstart" in names else 1)
EOF

# --- a worker killed in the middle of a second study ------------------------------------------
say "second study $SECOND: kill worker 1 while it trains"
t0=$(now)
on_head robustbench-opt run "$STUDY" --study-name "$SECOND" --address auto >"$OUT/run2.txt" 2>&1 &
run_pid=$!
victim=$(container ray-cpu-worker 1)
killed=""
for _ in $(seq 300); do
  done_cells=$(sql "SELECT count(*) FROM rbo_cell WHERE study = '$SECOND' AND state IN ('done', 'diverged')" 2>/dev/null || echo 0)
  # Kill once a few cells are in and a trial actor runs on the victim.
  if ((done_cells >= 3)) && docker top "$victim" -eo pid,args 2>/dev/null | grep -q 'ray::ImplicitFunc'; then
    docker kill "$victim" >/dev/null
    killed=$done_cells
    break
  fi
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.5
done
[[ -n $killed ]] || fail "the second study ended before worker 1 could be killed mid-trial"
say "killed worker 1 ($worker1) with $killed/$cells cells done"
run2_rc=0
wait "$run_pid" || run2_rc=$?
tail -n 12 "$OUT/run2.txt" | mask
# The run retries the cells lost with the worker itself: one run, exit 0, nothing to rerun.
((run2_rc == 0)) || { mask <"$OUT/run2.txt" | tail -n 40; fail "the run with a killed worker exited $run2_rc; want it to retry the lost cells and finish"; }
say "the run finished in one go: the cells lost with worker 1 were retried on the survivors"
say "$SECOND: $(since "$t0") s wall, kill and retry included"
check_exactly_once "$SECOND" "$cells"
hosts_of "$SECOND" | sed "s/^$head|/head    $head|/; s/^$worker1|/worker1 $worker1|/; s/^$worker2|/worker2 $worker2|/"

# --- secrets never printed --------------------------------------------------------------------
compose logs --no-color >"$OUT/logs.txt" 2>&1
for name in POSTGRES_PASSWORD RAY_AUTH_TOKEN; do
  if grep -rqF -- "${!name}" "$OUT"; then fail "$name appears in the compose logs or the run output"; fi
done
say "neither secret appears in $(wc -l <"$OUT/logs.txt") lines of compose logs nor in the run output"
say "cluster test passed"
