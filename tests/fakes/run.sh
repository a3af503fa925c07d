#!/usr/bin/env bash
# Stand-in for the official runner's run.sh: prints the real runner's log lines on cue.
#
# FAKE_RUNNER_SCENARIO  job  : a job is assigned, runs FAKE_JOB_SECONDS, succeeds, runner exits
#                       idle : listens for jobs until signalled
#                       long : a job is assigned and runs until signalled
#                       split: like job, but the "Running job" line arrives in two writes 1.5s apart
#                       refused: GitHub refuses the runner's version at its first poll; run.sh
#                              then exits 7 when ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE
#                              is 1, else 0 (actions/runner run.sh and run-helper.sh.template)
# FAKE_JOB_DELAY        seconds between "Listening for Jobs" and "Running job" (0.2)
# FAKE_JOB_SECONDS      how long the job runs in the "job" scenario (0.3)
# FAKE_EXIT_CODE        status when the runner ends by itself (0)
# FAKE_TERM_EXIT_CODE   status after SIGTERM (0, like the real listener when idle)
# FAKE_IGNORE_TERM      1: ignore SIGTERM, so only SIGKILL ends it
# FAKE_RECORD           file to record the pid, the arguments, and whether the JIT config file
#                       still existed when the runner started (RUNNER_JITCONFIG_FILE)
set -uo pipefail

scenario="${FAKE_RUNNER_SCENARIO:-job}"

stamp() {
  date -u '+%Y-%m-%d %H:%M:%SZ'
}

pause() {
  # In the background and waited for, so that a trapped signal is handled at once.
  sleep "$1" &
  wait "$!"
}

if [[ -n ${FAKE_RECORD:-} ]]; then
  {
    echo "pid: $$"
    printf 'args:'
    printf ' %s' "$@"
    printf '\n'
    if [[ -e ${RUNNER_JITCONFIG_FILE:-/nonexistent} ]]; then
      echo "config file: present"
    else
      echo "config file: absent"
    fi
  } >"$FAKE_RECORD"
fi

if [[ ${FAKE_IGNORE_TERM:-0} == 1 ]]; then
  trap '' TERM
else
  trap 'echo "$(stamp): Exiting..."; exit "${FAKE_TERM_EXIT_CODE:-0}"' TERM
fi

echo "√ Connected to GitHub"
echo
echo "Current runner version: '2.329.0'"
echo "$(stamp): Listening for Jobs"

case "$scenario" in
  job)
    pause "${FAKE_JOB_DELAY:-0.2}"
    echo "$(stamp): Running job: build"
    pause "${FAKE_JOB_SECONDS:-0.3}"
    echo "$(stamp): Job build completed with result: Succeeded"
    exit "${FAKE_EXIT_CODE:-0}"
    ;;
  split)
    printf '%s: Running jo' "$(stamp)"
    pause 1.5
    echo "b: build"
    pause "${FAKE_JOB_SECONDS:-0.3}"
    echo "$(stamp): Job build completed with result: Succeeded"
    exit "${FAKE_EXIT_CODE:-0}"
    ;;
  idle)
    while true; do pause 1; done
    ;;
  refused)
    echo "$(stamp): An error occurred: the runner version is deprecated (stand-in wording)"
    if [[ ${ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE:-} == 1 ]]; then
      exit 7
    fi
    exit 0
    ;;
  long)
    pause "${FAKE_JOB_DELAY:-0.2}"
    echo "$(stamp): Running job: build"
    while true; do pause 1; done
    ;;
  *)
    echo "unknown FAKE_RUNNER_SCENARIO: $scenario" >&2
    exit 64
    ;;
esac
