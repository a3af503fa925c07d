#!/bin/sh
# Stand-in for the docker library image's dockerd-entrypoint.sh: prints the command line it was
# given, one argument per line, and what the externals path shows (DOCKER_EXTERNALS_PATH), so a
# test can see what dind-daemon.sh prepared before it handed over.
for argument in "$@"; do
  printf 'arg: %s\n' "$argument"
done
for entry in "${DOCKER_EXTERNALS_PATH:?}"/*; do
  printf 'externals: %s\n' "${entry##*/}"
done
