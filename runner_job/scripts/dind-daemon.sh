#!/bin/sh
# Docker daemon task of a Docker-in-Docker pool (runner-dind.nomad.hcl), run by the docker
# library image's dind variant (Alpine, POSIX sh): prepare what the runner's containers share
# with this daemon, then start dockerd through the image's own entrypoint.
#
# 1. Create the directory the runner task copies its externals into (owned by the runner user,
#    RUNNER_UID) and bind it at /home/runner/externals here, where `container:` jobs mount it
#    from (-v /home/runner/externals:/__e). The workspace (/home/runner/_work) is already
#    mounted at the same path in both tasks by the jobspec.
# 2. exec dockerd-entrypoint.sh dockerd ...: the entrypoint adds nothing to an explicit dockerd
#    command line except its init process and cgroup preparation. The API listens on
#    /var/run/docker.sock inside this container (which container: jobs and Docker actions get
#    mounted) and on tcp://127.0.0.1:2375, the allocation's loopback, which only this group's
#    tasks share: TLS is off there on purpose (--tls=false says so, or dockerd would refuse
#    an unauthenticated TCP listener in a future release).
#
# Settings (environment, set by the jobspec):
#   DOCKER_EXTERNALS_SHARE  the directory shared with the runner task (required)
#   RUNNER_UID              the runner user's uid and gid (1001 in the official image)
#   REGISTRY_MIRROR         a pull-through cache for Docker Hub, or empty
#   DOCKER_EXTERNALS_PATH   where container: jobs look for the externals (/home/runner/externals)
#
# Nomad renders this file as a Go template: it must never contain two opening braces in a row.
set -eu

share="${DOCKER_EXTERNALS_SHARE:?set DOCKER_EXTERNALS_SHARE to the directory shared with the runner task}"
uid="${RUNNER_UID:-1001}"
target="${DOCKER_EXTERNALS_PATH:-/home/runner/externals}"

mkdir -p "$share" "$target"
chown "$uid:$uid" "$share"
# -o bind: the image's mount is BusyBox's, which takes the option in this form too.
mount -o bind "$share" "$target"

set -- dockerd \
  --host=unix:///var/run/docker.sock \
  --host=tcp://127.0.0.1:2375 \
  --tls=false \
  --shutdown-timeout=20
if [ -n "${REGISTRY_MIRROR:-}" ]; then
  set -- "$@" "--registry-mirror=$REGISTRY_MIRROR"
fi
echo "dind-daemon: starting $*" >&2
exec dockerd-entrypoint.sh "$@"
