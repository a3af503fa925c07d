#!/usr/bin/env bash
# Runner task entry point of a Docker-in-Docker pool (runner-dind.nomad.hcl): make sure the
# allocation's Docker daemon answers, share the runner's externals with it, then hand over to
# supervise.sh, which starts the runner. No job can start before the daemon answers, because the
# runner does not exist until then.
#
# 1. Ask the daemon at DOCKER_HOST (tcp://HOST:PORT, the allocation's loopback) for GET /_ping,
#    which a Docker daemon answers 200 "OK" once it serves its API, every poll interval, each try
#    bounded, until RUNNER_DOCKER_WAIT_SECONDS have passed. Nomad starts this task as soon as the
#    daemon's container has started, not when dockerd is ready: hence the wait.
# 2. Copy the runner's externals (the Node.js builds JavaScript actions run on) into the shared
#    directory the daemon task mounts at /home/runner/externals: container: jobs mount
#    /home/runner/externals from the daemon's view of the filesystem.
# 3. exec supervise.sh (same environment; it reads and deletes the JIT config).
#
# Exit status: supervise.sh's, once it runs; 2 for a bad setting; 4 when the daemon never
# answered in time (the JIT config stays for the deregister task to remove: no runner ever ran);
# 5 when the externals cannot be shared; 143 when Nomad stops the task during the wait.
#
# Settings (environment; the jobspec sets them, tests point them at stand-ins):
#   DOCKER_HOST                  the daemon                      (tcp://127.0.0.1:2375)
#   RUNNER_DOCKER_WAIT_SECONDS   give up after                   (60)
#   RUNNER_DOCKER_PROBE_SECONDS  bound of one /_ping             (2)
#   RUNNER_POLL_SECONDS          pause between tries             (1)
#   RUNNER_EXTERNALS_DIR         the runner's externals          (/home/runner/externals)
#   RUNNER_EXTERNALS_SHARE       the directory shared with the daemon (required)
#   RUNNER_SUPERVISOR            supervise.sh                    ($NOMAD_TASK_DIR/supervise.sh)
#
# Nomad renders this file as a Go template: it must never contain two opening braces in a row.
set -uo pipefail

docker_host="${DOCKER_HOST:-tcp://127.0.0.1:2375}"
wait_seconds="${RUNNER_DOCKER_WAIT_SECONDS:-60}"
probe_seconds="${RUNNER_DOCKER_PROBE_SECONDS:-2}"
poll="${RUNNER_POLL_SECONDS:-1}"
externals="${RUNNER_EXTERNALS_DIR:-/home/runner/externals}"
share="${RUNNER_EXTERNALS_SHARE:-}"
supervisor="${RUNNER_SUPERVISOR:-${NOMAD_TASK_DIR:-/local}/supervise.sh}"

log() {
  printf 'dind-runner: %s\n' "$*" >&2
}

for setting in RUNNER_DOCKER_WAIT_SECONDS:"$wait_seconds" \
  RUNNER_DOCKER_PROBE_SECONDS:"$probe_seconds" RUNNER_POLL_SECONDS:"$poll"; do
  if ! [[ ${setting#*:} =~ ^[0-9]+$ ]] || ((${setting#*:} == 0)); then
    log "bad setting: ${setting%%:*} must be a positive whole number of seconds, got '${setting#*:}'"
    exit 2
  fi
done
if ! [[ $docker_host =~ ^tcp://[A-Za-z0-9.:-]+:[0-9]+$ ]]; then
  log "bad setting: DOCKER_HOST must be tcp://HOST:PORT (the allocation's daemon), got '$docker_host'"
  exit 2
fi
if [[ -z $share ]]; then
  log "bad setting: RUNNER_EXTERNALS_SHARE (the directory shared with the daemon) is not set"
  exit 2
fi
ping_url="http://${docker_host#tcp://}/_ping"

# As PID 1 of the container this shell ignores SIGTERM unless it traps it.
trap 'log "Nomad is stopping the task; the runner was never started"; exit 143' TERM INT

started=$SECONDS
# SECONDS counts whole seconds of the clock, not of the shell: it can tick a moment after the
# start. One more second makes the wait at least wait_seconds long (at most one second more).
deadline=$((SECONDS + wait_seconds + 1))
until answer="$(curl --silent --max-time "$probe_seconds" "$ping_url" 2>/dev/null)" &&
  [[ $answer == OK ]]; do
  if ((SECONDS >= deadline)); then
    log "the Docker daemon at $docker_host did not answer within ${wait_seconds}s (see the docker task's log); not starting the runner"
    exit 4
  fi
  # In the background and waited for, so that a stop from Nomad is handled at once.
  sleep "$poll" &
  wait "$!"
done
log "the Docker daemon at $docker_host answered after $((SECONDS - started))s"

# Modes, times and symlinks as they are; no ownership (the runner may not own the image's group).
if ! cp -R -P --preserve=mode,timestamps -- "$externals/." "$share/"; then
  log "cannot copy $externals into $share (the directory the docker task shares); not starting the runner"
  exit 5
fi

trap - TERM INT
exec /bin/bash "$supervisor"
