#!/usr/bin/env bash
# Runner task entry point: run the GitHub Actions runner for at most one job, then get out.
#
# 1. Read the just-in-time config the register task left in the allocation dir, and delete the
#    file before the runner starts, so workflow code never finds that copy on disk. (The runner
#    itself then writes the decoded config to /home/runner: .runner, .credentials,
#    .credentials_rsaparams, readable by the job, which runs as the same user.)
# 2. Start `run.sh --jitconfig <config>` and copy its output to ours, watching for the line the
#    runner prints when a job is assigned ("Running job: <name>").
# 3. End the runner cleanly when no job has started within the idle timeout (the job it was
#    started for was cancelled, or another runner took it), when a job has run longer than the
#    maximum, or when Nomad stops the task: SIGTERM to run.sh, which (the image sets
#    RUNNER_MANUALLY_TRAP_SIG=1) traps INT and TERM and forwards SIGINT to the listener's process
#    group; after a grace, SIGKILL to run.sh's process group. The listener's group is its own
#    (run.sh starts it under `set -m`): what survives ends with the container when this script,
#    its PID 1, exits.
#
# Exit status: the runner's own status when it ends by itself or Nomad stops it (7: GitHub
# refused the runner's version, with ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 set by
# the jobspec); 0 after an idle timeout (nothing went wrong: there was no work); 124 after the
# maximum job duration; 2 for a bad setting; 3 when there is no usable JIT config (see the
# register task's log).
#
# Settings (environment; the jobspec sets them, tests point them at a fake run.sh):
#   RUNNER_RUN_SH                path of run.sh                 (/home/runner/run.sh)
#   RUNNER_JITCONFIG_FILE        the hand-off file              ($NOMAD_ALLOC_DIR/runner-handoff/jitconfig)
#   RUNNER_IDLE_TIMEOUT_SECONDS  no job by then: stop           (600)
#   RUNNER_MAX_JOB_SECONDS       job running that long: stop    (21600)
#   RUNNER_STOP_GRACE_SECONDS    SIGTERM to SIGKILL             (25; below the task's kill_timeout)
#   RUNNER_POLL_SECONDS          how often the clocks are read  (1)
#
# Nomad renders this file as a Go template: it must never contain two opening braces in a row.
set -uo pipefail

run_sh="${RUNNER_RUN_SH:-/home/runner/run.sh}"
config_file="${RUNNER_JITCONFIG_FILE:-${NOMAD_ALLOC_DIR:-/alloc}/runner-handoff/jitconfig}"
idle_timeout="${RUNNER_IDLE_TIMEOUT_SECONDS:-600}"
max_job="${RUNNER_MAX_JOB_SECONDS:-21600}"
grace="${RUNNER_STOP_GRACE_SECONDS:-25}"
poll="${RUNNER_POLL_SECONDS:-1}"

log() {
  printf 'supervise: %s\n' "$*" >&2
}

for setting in RUNNER_IDLE_TIMEOUT_SECONDS:"$idle_timeout" RUNNER_MAX_JOB_SECONDS:"$max_job" \
  RUNNER_STOP_GRACE_SECONDS:"$grace" RUNNER_POLL_SECONDS:"$poll"; do
  if ! [[ ${setting#*:} =~ ^[0-9]+$ ]] || ((${setting#*:} == 0)); then
    log "bad setting: ${setting%%:*} must be a positive whole number of seconds, got '${setting#*:}'"
    exit 2
  fi
done

if [[ ! -f $config_file ]]; then
  log "no JIT config at $config_file: the register task did not hand one over (see its log)"
  exit 3
fi
jitconfig="$(<"$config_file")"
# Fail closed: the hand-off file left on disk would be readable by the job's code (and usable
# while the runner is still waiting for its job).
if ! rm -f -- "$config_file"; then
  log "cannot delete $config_file after reading it; refusing to start the runner"
  exit 3
fi
if [[ -z $jitconfig ]]; then
  log "the JIT config at $config_file was empty"
  exit 3
fi

# The runner's output comes through a FIFO so that this shell can read it line by line with a
# timeout, and still be the runner's parent (to wait for its exit status).
fifo_dir="$(mktemp -d)"
mkfifo "$fifo_dir/output"

stop_requested=""
# As PID 1 of the container this shell ignores SIGTERM unless it traps it.
trap 'stop_requested=1' TERM INT

# Job control puts run.sh and everything it starts in a process group of its own, which a forced
# stop can kill as a whole.
set -m
"$run_sh" --jitconfig "$jitconfig" >"$fifo_dir/output" 2>&1 &
runner_pid=$!
set +m
unset jitconfig
exec 3<"$fifo_dir/output"
rm -rf -- "$fifo_dir"
log "runner started (pid $runner_pid); idle timeout ${idle_timeout}s, maximum job ${max_job}s"

started=$SECONDS
job_started=""
outcome=""
stop_at=""
killed=""
pending=""
exited_at=""

begin_stop() {
  outcome="$1"
  log "$2: stopping the runner"
  kill -TERM "$runner_pid" 2>/dev/null
  stop_at=$((SECONDS + grace))
}

watch_line() {
  case "$1" in
    *"Running job: "*)
      if [[ -z $job_started ]]; then
        job_started=$SECONDS
        log "a job started; it may run for ${max_job}s"
      fi
      ;;
  esac
}

while true; do
  if IFS= read -r -t "$poll" line <&3; then
    line="$pending$line"
    pending=""
    printf '%s\n' "$line"
    watch_line "$line"
  elif (($? > 128)); then
    # Timed out (or a signal arrived): keep any partial line for the next read.
    pending="$pending$line"
  else
    # End of output: the runner and everything it started have closed it.
    if [[ -n $pending$line ]]; then
      printf '%s\n' "$pending$line"
    fi
    break
  fi

  if [[ -z $outcome ]]; then
    if [[ -n $stop_requested ]]; then
      begin_stop nomad "Nomad is stopping the task"
    elif [[ -z $job_started ]] && ((SECONDS - started >= idle_timeout)); then
      begin_stop idle "no job started within ${idle_timeout}s"
    elif [[ -n $job_started ]] && ((SECONDS - job_started >= max_job)); then
      begin_stop max "the job has run for ${max_job}s, the maximum"
    fi
  elif [[ -z $killed ]] && ((SECONDS >= stop_at)); then
    log "the runner did not stop within ${grace}s: killing it"
    kill -KILL -- "-$runner_pid" 2>/dev/null || kill -KILL "$runner_pid" 2>/dev/null
    killed=1
  fi

  # run.sh may have exited while something it started still holds the output open.
  if [[ -z $exited_at ]] && ! kill -0 "$runner_pid" 2>/dev/null; then
    exited_at=$SECONDS
  elif [[ -n $exited_at ]] && ((SECONDS - exited_at > poll)); then
    break
  fi
done

# A signal arriving now interrupts `wait` early; wait again while the runner still lives.
while true; do
  wait "$runner_pid"
  status=$?
  if ((status > 128)) && kill -0 "$runner_pid" 2>/dev/null; then
    if [[ -n $stop_requested && -z $outcome ]]; then
      begin_stop nomad "Nomad is stopping the task"
    fi
    continue
  fi
  break
done
exec 3<&-

case "$outcome" in
  idle)
    log "runner ended after the idle timeout (its status $status); no job ran"
    exit 0
    ;;
  max)
    log "runner ended after the maximum job duration (its status $status)"
    exit 124
    ;;
  *)
    if ((status == 7)); then
      # Runner.Listener's "version deprecated" code: GitHub will give this runner no job.
      log "GitHub refused this runner version (status 7): deploy the nomad stack so the pool" \
        "runs the newest actions/runner release, or raise the pinned images.runner"
    else
      log "runner exited with status $status"
    fi
    exit "$status"
    ;;
esac
