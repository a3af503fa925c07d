# One Docker-in-Docker runner pool: runner.nomad.hcl plus a Docker daemon of the allocation's own,
# so that services:, container: jobs, Docker container actions and docker build work.
#
# Each dispatch becomes one allocation with four tasks:
#   register   (prestart)          mints a just-in-time runner config with the GitHub credential;
#   docker     (prestart sidecar)  the allocation's Docker daemon: the only privileged task;
#   runner     (main)              waits for the daemon, then runs the official runner for at most
#                                  one job, with no credential, talking to that daemon only;
#   deregister (poststop)          deletes the runner from GitHub if it is still registered.
# Nomad stops the daemon after the runner (sidecars are killed last) and before deregister runs;
# a daemon that dies fails the allocation, which stops the runner.
#
# Everything else is runner.nomad.hcl's, and a test holds the two files together.
#
# Run by hand from this directory (on clients whose docker plugin sets allow_privileged = true):
#   nomad job run -var-file=pool.vars.hcl runner-dind.nomad.hcl
# See README.md for every variable, the security trade-off and the model.

variable "job_name" {
  description = "Nomad job id of this pool's parameterized job; the credential Variables live under nomad/jobs/<job_name>/."
  type        = string
  default     = "github-runner-default"
}

variable "namespace" {
  description = "Nomad namespace of the runner jobs; the dispatch token may dispatch any parameterized job in it, so keep it dedicated."
  type        = string
  default     = "github-runners"
}

variable "datacenters" {
  description = "Datacenters the runners may be placed in."
  type        = list(string)
  default     = ["*"]
}

variable "node_pool" {
  description = "Nomad node pool the runners are placed in; a pool of their own keeps workflow code off the nodes that run cloudflared and other services."
  type        = string
  default     = "default"
}

variable "pool" {
  description = "Name of the runner pool; part of each runner's name, and what the handler sends as meta runner_pool."
  type        = string
  default     = "default"
}

variable "runner_labels" {
  description = "Labels the runner registers with (1 to 100); a job runs on it when all of the job's runs-on labels are among them."
  type        = list(string)
  default     = ["self-hosted", "linux", "x64"]
}

variable "runner_group_id" {
  description = "GitHub runner group id the runners join (1 is the Default group)."
  type        = number
  default     = 1
}

# No default: any version written here would be refused by GitHub within weeks (a runner must
# install each new actions/runner release within 30 days of its publication).
variable "runner_image" {
  description = "Image of the runner task: the official GitHub Actions runner at a current release, ghcr.io/actions/actions-runner:<version> (the newest is at https://github.com/actions/runner/releases/latest)."
  type        = string
}

variable "helper_image" {
  description = "Image that runs the register and deregister scripts (Python 3 standard library only; with github_auth = \"app\" also the openssl CLI, e.g. python:3.13.9-slim-trixie), pinned to a version."
  type        = string
  default     = "python:3.13.9-alpine3.22"
}

variable "driver" {
  description = "Task driver of every task: docker only, the one driver whose privileged mode the daemon task needs (and whose allow_privileged client setting guards it)."
  type        = string
  default     = "docker"

  validation {
    condition     = var.driver == "docker"
    error_message = "A Docker-in-Docker pool runs on the docker driver only."
  }
}

variable "docker_image" {
  description = "Image of the allocation's Docker daemon (the docker library image's dind variant), pinned to a version."
  type        = string
  default     = "docker:29.7.2-dind"
}

variable "docker_cpu" {
  description = "CPU of the Docker daemon task, in MHz: every container a job starts runs inside it."
  type        = number
  default     = 1000
}

variable "docker_memory" {
  description = "Memory of the Docker daemon task, in MiB: every container a job starts runs inside it."
  type        = number
  default     = 2048
}

variable "registry_mirror" {
  description = "Pull-through cache for Docker Hub images the daemon pulls (an http(s) URL), or \"\" for none."
  type        = string
  default     = ""
}

variable "docker_wait_seconds" {
  description = "How long the runner task waits for the daemon to answer before it gives up (the allocation fails, deregister runs)."
  type        = number
  default     = 60
}

variable "cpu" {
  description = "CPU of the runner task, in MHz."
  type        = number
  default     = 2000
}

variable "memory" {
  description = "Memory of the runner task, in MiB."
  type        = number
  default     = 4096
}

variable "pids_limit" {
  description = "Most processes and threads the runner task may hold at once (a fork bomb stops there, not at the node's limit)."
  type        = number
  default     = 4096
}

variable "disk" {
  description = "Disk the allocation reserves on its node, in MiB (ephemeral_disk): Nomad places a runner only where this much is free and counts it against the node. Nomad does not enforce it; see README.md for the node-side quota."
  type        = number
  default     = 10240
}

variable "runner_sudo" {
  description = "\"image\": the runner image's own sudo rules (passwordless in the official image); \"none\": the runner task runs as runner:runner, without the image's supplementary groups, and with no-new-privileges, so sudo and every other setuid program cannot raise privileges."
  type        = string
  default     = "image"

  validation {
    condition     = contains(["image", "none"], var.runner_sudo)
    error_message = "The runner_sudo variable must be \"image\" or \"none\"."
  }
}

variable "constraints" {
  description = "Extra placement constraints, e.g. [{ attribute = \"$${attr.cpu.arch}\", operator = \"=\", value = \"arm64\" }]."
  type = list(object({
    attribute = string
    operator  = string
    value     = string
  }))
  default = []
}

variable "idle_timeout_seconds" {
  description = "The runner is ended cleanly when no job has started on it within this many seconds (the job it was started for was cancelled or taken by another runner)."
  type        = number
  default     = 600
}

variable "max_job_seconds" {
  description = "A job still running this many seconds after it started is stopped."
  type        = number
  default     = 21600
}

variable "github_api_url" {
  description = "GitHub REST API base URL (https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server)."
  type        = string
  default     = "https://api.github.com"
}

variable "github_auth" {
  description = "How the register and deregister tasks authenticate: \"token\" (item github_token of their Nomad Variables) or \"app\" (item github_app_private_key: a GitHub App's PEM key, from which each task mints an installation token when it starts; the image needs the openssl CLI)."
  type        = string
  default     = "token"

  validation {
    condition     = contains(["token", "app"], var.github_auth)
    error_message = "The github_auth variable must be \"token\" or \"app\"."
  }
}

variable "github_app_id" {
  description = "The GitHub App's id (github_auth = \"app\"); not a secret."
  type        = string
  default     = ""
}

variable "github_app_installation_id" {
  description = "The App's installation id on the owner (github_auth = \"app\"); not a secret."
  type        = string
  default     = ""
}

variable "runner_scope" {
  description = "\"repository\": runners registered on the job's repository; \"organization\": on the organization github_owner, in runner group runner_group_id."
  type        = string
  default     = "repository"

  validation {
    condition     = contains(["repository", "organization"], var.runner_scope)
    error_message = "The runner_scope variable must be \"repository\" or \"organization\"."
  }
}

variable "github_owner" {
  description = "The organization whose runners the job registers (runner_scope = \"organization\"); every dispatched repository must belong to it."
  type        = string
  default     = ""
}

variable "scripts_dir" {
  description = "Directory holding the task scripts (register.py, deregister.py, github_api.py, supervise.sh, dind-runner.sh, dind-daemon.sh); a relative path starts at the current working directory, not at the jobspec's."
  type        = string
  default     = "scripts"
}

job "github-runner" {
  # Block labels cannot take variables; the id and name attributes can, and win over the label.
  id          = var.job_name
  name        = var.job_name
  namespace   = var.namespace
  type        = "batch"
  datacenters = var.datacenters
  node_pool   = var.node_pool

  # Only the dispatch Worker starts runners. Meta is readable by anyone with read-job in the
  # namespace, so it carries identifiers only; the payload is refused outright.
  parameterized {
    payload       = "forbidden"
    meta_required = ["github_repository", "github_job_id", "github_run_id", "runner_pool"]
  }

  # Only nodes whose docker plugin allows privileged containers (allow_privileged = true, which
  # the driver fingerprints): elsewhere the daemon task would fail at start.
  constraint {
    attribute = "$${attr.driver.docker.privileged.enabled}"
    value     = "true"
  }

  # Only cgroup v2 nodes, and the runner in a cgroup namespace of its own (cgroupns below): the
  # runner refuses container: jobs and services: when /proc/1/cgroup shows ":/docker/"
  # (actions/runner ContainerOperationProvider.AssertCompatibleOS), which is what a cgroup v1
  # node, or v2 with the host's cgroup namespace, shows inside a Docker container.
  constraint {
    attribute = "$${attr.os.cgroups.version}"
    value     = "2"
  }

  dynamic "constraint" {
    for_each = var.constraints
    content {
      attribute = constraint.value.attribute
      operator  = constraint.value.operator
      value     = constraint.value.value
    }
  }

  group "runner" {
    count = 1

    # One dispatch, one attempt. A retried allocation would mint a second runner for the same
    # GitHub job (and might run a job twice); a failure is better surfaced than repeated.
    restart {
      attempts = 0
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    # A network namespace of the allocation's own (Nomad's bridge, through CNI): its tasks share
    # it with each other and nothing else, and reach the internet (GitHub) through the node's NAT.
    # Traffic to the node itself and to link-local/metadata addresses is dropped by the node's
    # firewall (runner_job/node/runner-firewall.nft, see README.md), not by anything here.
    network {
      mode = "bridge"
    }

    # Placement, not enforcement: Nomad puts the runner only on a node with this much free disk
    # and counts it against the node; the hard cap is the container runtime's quota (README.md).
    # Here the allocation directory also holds the workspace and the daemon's images, layers and
    # containers, all of which go when Nomad collects the allocation.
    ephemeral_disk {
      size = var.disk
    }

    task "register" {
      driver = var.driver

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      config {
        image        = var.helper_image
        command      = "python3"
        args         = ["${NOMAD_TASK_DIR}/register.py"]
        privileged   = false
        pids_limit   = 256
        security_opt = ["no-new-privileges"]
      }

      env {
        GITHUB_API_URL      = var.github_api_url
        GITHUB_REPOSITORY   = "${NOMAD_META_github_repository}"
        GITHUB_AUTH         = var.github_auth
        GITHUB_TOKEN_FILE   = "${NOMAD_SECRETS_DIR}/github_token"
        GITHUB_APP_KEY_FILE = "${NOMAD_SECRETS_DIR}/github_app_key"
        GITHUB_APP_ID       = var.github_app_id
        GITHUB_APP_INSTALLATION_ID = var.github_app_installation_id
        RUNNER_SCOPE        = var.runner_scope
        GITHUB_OWNER        = var.github_owner
        CREDENTIAL_VARIABLE = "nomad/jobs/${var.job_name}/runner/register"
        RUNNER_POOL         = var.pool
        RUNNER_GROUP_ID     = var.runner_group_id
        RUNNER_LABELS       = jsonencode(var.runner_labels)
        RUNNER_HANDOFF_DIR  = "${NOMAD_ALLOC_DIR}/runner-handoff"
      }

      template {
        data        = file("${var.scripts_dir}/github_api.py")
        destination = "local/github_api.py"
      }

      template {
        data        = file("${var.scripts_dir}/register.py")
        destination = "local/register.py"
      }

      # The credential reaches this task only: a task may read nomad/jobs/<job>/<group>/<task> of
      # its own task, so the runner task cannot read it. It is rendered into this task's secrets/
      # (not the environment), and a rotation must not restart anything (noop). It is the token,
      # or the GitHub App's key, which stays in this file (openssl reads it there to sign the
      # JWT): the installation token minted from it lives in the task's memory only.
      template {
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/${var.job_name}/runner/register" }}{{ .${var.github_auth == "app" ? "github_app_private_key" : "github_token"} }}{{ end }}
        EOT
        destination = var.github_auth == "app" ? "secrets/github_app_key" : "secrets/github_token"
        perms       = "0400"
        env         = false
        change_mode = "noop"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }

    # The allocation's Docker daemon. Privileged (dockerd needs it to make containers), so this
    # is the one task with that power; the runner reaches it only over the allocation's loopback
    # (tcp://127.0.0.1:2375, the network namespace this group's tasks share and nothing else
    # does), never a daemon of the node. Its storage (/var/lib/docker) is this task's own local/
    # directory, so nothing one job built or pulled outlives the allocation, and no anonymous
    # volume is left on the node for the image's VOLUME.
    task "docker" {
      driver = var.driver

      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        image      = var.docker_image
        entrypoint = ["/bin/sh", "${NOMAD_TASK_DIR}/dind-daemon.sh"]
        privileged = true
        pids_limit = var.pids_limit
        # The workspace at the runner's path: container: jobs and actions get -v
        # /home/runner/_work:/__w, which this daemon resolves in its own filesystem.
        volumes = [
          "../alloc/data:/home/runner/_work",
          "local/docker:/var/lib/docker",
        ]
      }

      env {
        DOCKER_EXTERNALS_SHARE = "${NOMAD_ALLOC_DIR}/tmp/runner-externals"
        RUNNER_UID             = 1001
        REGISTRY_MIRROR        = var.registry_mirror
      }

      template {
        data        = file("${var.scripts_dir}/dind-daemon.sh")
        destination = "local/dind-daemon.sh"
        perms       = "0755"
      }

      # dockerd stops its containers on SIGTERM (--shutdown-timeout 20s), within the 30s a
      # client allows by default.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = var.docker_cpu
        memory = var.docker_memory
      }
    }

    task "runner" {
      driver = var.driver

      # Without sudo: the explicit group drops the image's supplementary groups (the official
      # image grants passwordless sudo to group "sudo"), and no-new-privileges keeps any setuid
      # program, sudo included, from raising privileges. "" keeps the image's own user.
      user = var.runner_sudo == "none" ? "runner:runner" : ""

      # The walls around workflow code: never privileged, a process limit, its own network
      # (the group's bridge), no Docker socket of the node.
      config {
        image        = var.runner_image
        command      = "/bin/bash"
        args         = ["${NOMAD_TASK_DIR}/dind-runner.sh"]
        privileged   = false
        pids_limit   = var.pids_limit
        security_opt = var.runner_sudo == "none" ? ["no-new-privileges"] : []
        cgroupns     = "private"
        # The work folder (_work in the JIT config) on the allocation's shared data dir, mounted
        # at the same path in the daemon task.
        volumes = ["../alloc/data:/home/runner/_work"]
      }

      # Settings only: no credential, no template reading a Nomad Variable. The JIT config is
      # read from the hand-off directory and deleted before the runner starts.
      env {
        RUNNER_RUN_SH               = "/home/runner/run.sh"
        RUNNER_JITCONFIG_FILE       = "${NOMAD_ALLOC_DIR}/runner-handoff/jitconfig"
        RUNNER_IDLE_TIMEOUT_SECONDS = var.idle_timeout_seconds
        RUNNER_MAX_JOB_SECONDS      = var.max_job_seconds
        RUNNER_STOP_GRACE_SECONDS   = 25
        # A runner whose version GitHub refuses exits 7 instead of 0 (actions/runner run.sh and
        # Runner.Listener), so the allocation fails visibly instead of looking like a clean end.
        ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE = "1"
        # The allocation's daemon, and nothing else: the docker CLI in workflow steps uses it.
        DOCKER_HOST                = "tcp://127.0.0.1:2375"
        RUNNER_DOCKER_WAIT_SECONDS = var.docker_wait_seconds
        RUNNER_EXTERNALS_SHARE     = "${NOMAD_ALLOC_DIR}/tmp/runner-externals"
        RUNNER_SUPERVISOR          = "${NOMAD_TASK_DIR}/supervise.sh"
      }

      template {
        data        = file("${var.scripts_dir}/supervise.sh")
        destination = "local/supervise.sh"
        perms       = "0755"
      }

      template {
        data        = file("${var.scripts_dir}/dind-runner.sh")
        destination = "local/dind-runner.sh"
        perms       = "0755"
      }

      # SIGTERM is what run.sh forwards to the runner listener (the image sets
      # RUNNER_MANUALLY_TRAP_SIG=1), which then cancels a running job and reports it to GitHub.
      # 30s is the most a client allows by default (client max_kill_timeout); the supervisor's
      # own grace (25s) stays below it so it can still force the runner down and report the
      # exit code before Nomad kills the task.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }

    task "deregister" {
      driver = var.driver

      # Runs after the runner task has exited, whatever the reason (job done, idle timeout,
      # crash, or the runner never started), so cleanup never depends on the runner.
      lifecycle {
        hook    = "poststop"
        sidecar = false
      }

      config {
        image        = var.helper_image
        command      = "python3"
        args         = ["${NOMAD_TASK_DIR}/deregister.py"]
        privileged   = false
        pids_limit   = 256
        security_opt = ["no-new-privileges"]
      }

      env {
        GITHUB_API_URL      = var.github_api_url
        GITHUB_REPOSITORY   = "${NOMAD_META_github_repository}"
        GITHUB_AUTH         = var.github_auth
        GITHUB_TOKEN_FILE   = "${NOMAD_SECRETS_DIR}/github_token"
        GITHUB_APP_KEY_FILE = "${NOMAD_SECRETS_DIR}/github_app_key"
        GITHUB_APP_ID       = var.github_app_id
        GITHUB_APP_INSTALLATION_ID = var.github_app_installation_id
        RUNNER_SCOPE        = var.runner_scope
        GITHUB_OWNER        = var.github_owner
        CREDENTIAL_VARIABLE = "nomad/jobs/${var.job_name}/runner/deregister"
        RUNNER_POOL         = var.pool
        RUNNER_HANDOFF_DIR  = "${NOMAD_ALLOC_DIR}/runner-handoff"
      }

      template {
        data        = file("${var.scripts_dir}/github_api.py")
        destination = "local/github_api.py"
      }

      template {
        data        = file("${var.scripts_dir}/deregister.py")
        destination = "local/deregister.py"
      }

      template {
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/${var.job_name}/runner/deregister" }}{{ .${var.github_auth == "app" ? "github_app_private_key" : "github_token"} }}{{ end }}
        EOT
        destination = var.github_auth == "app" ? "secrets/github_app_key" : "secrets/github_token"
        perms       = "0400"
        env         = false
        change_mode = "noop"
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
