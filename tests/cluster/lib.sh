# Sourced by tests/cluster/run_cluster.sh and run_slurm.sh (from the repository root): messages,
# timing, secrets, and the images, built from a local Debian base made here with debootstrap
# when missing (no Docker Hub). Defines nothing that runs by itself.
# shellcheck shell=bash

BASE_IMAGE=${BASE_IMAGE:-robustbench-debian:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export ROBUSTBENCH_IMAGE=${ROBUSTBENCH_IMAGE:-robustbench-opt:cluster-test}
PG_IMAGE=robustbench-opt-test-postgres:latest # named in tests/cluster/compose.test.yaml

say() { echo "== $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
free_port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
secret() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
image_size() { python3 -c "print(f'{int(\"$(docker image inspect -f '{{.Size}}' "$1")\") / 1e9:.2f} GB')"; }

# Every cell of study $1 ($2 cells) is finished exactly once (`sql QUERY` is the caller's psql): one rbo_cell row per cell, done or
# diverged, and exactly one COMPLETE Optuna trial per cell, the one the row points to.
check_exactly_once() {
  local study=$1 cells=$2 got
  got=$(sql "SELECT count(*), count(DISTINCT cell_id), count(*) FILTER (WHERE state IN ('done', 'diverged'))
             FROM rbo_cell WHERE study = '$study'")
  [[ $got == "$cells|$cells|$cells" ]] || fail "$study: rbo_cell rows|distinct cells|finished = $got, want $cells each"
  got=$(sql "SELECT count(*), count(DISTINCT a.value_json), count(*) FILTER (WHERE c.optuna_trial_id = t.trial_id)
             FROM trials t JOIN studies s USING (study_id)
             JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'cell_id'
             JOIN rbo_cell c ON c.study = s.study_name AND a.value_json = '\"' || c.cell_id || '\"'
             WHERE s.study_name = '$study' AND t.state = 'COMPLETE'")
  [[ $got == "$cells|$cells|$cells" ]] || fail "$study: COMPLETE trials|distinct cells|linked = $got, want $cells each"
  say "$study: $cells cells, each finished exactly once (rbo_cell and Optuna trials)"
}

# Which container trained how many cells of study $1 (from each trial's record).
hosts_of() {
  sql "SELECT record_json::json ->> 'host', count(*) FROM rbo_cell WHERE study = '$1' GROUP BY 1 ORDER BY 1"
}

# docker build, quiet; its output is shown only when it fails. $OUT is the caller's scratch dir.
build() { docker build -q "$@" >"$OUT/build.txt" 2>&1 || { cat "$OUT/build.txt"; fail "docker build $*"; }; }

# The Debian base (when missing), the project image and the test's PostgreSQL image.
build_images() {
  local t0 root
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE: debootstrap bookworm from $DEBIAN_MIRROR"
    t0=$(now)
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
    # The base trusts what this machine trusts (pip in the build may pass a TLS proxy); minbase
    # has no /etc/ssl, so the directory is made here.
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/host-ca-certificates.crt"
    tar -C "$root" -c . | docker import -c "ENV PIP_CERT=/etc/ssl/host-ca-certificates.crt" - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
    say "base image $(since "$t0") s, $(image_size "$BASE_IMAGE")"
  fi
  say "build $ROBUSTBENCH_IMAGE from $BASE_IMAGE"
  t0=$(now)
  build -f docker/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$ROBUSTBENCH_IMAGE" .
  say "image build $(since "$t0") s (a rebuild reuses cached layers), $(image_size "$ROBUSTBENCH_IMAGE")"
  t0=$(now)
  build -f tests/cluster/postgres.Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$PG_IMAGE" tests/cluster
  say "PostgreSQL image $(since "$t0") s, $(image_size "$PG_IMAGE")"
}
