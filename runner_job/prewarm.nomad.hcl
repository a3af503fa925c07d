# Prewarm one runner pool: keep its images on every node a runner of the pool may be placed on.
#
# A system job: one allocation on every eligible node (same datacenters, node pool and
# constraints as the pool's runner job), including nodes that join later. Each task runs one of
# the pool's images doing nothing (sleep), so the task driver pulls the image when the job is
# deployed and keeps it: the docker driver deletes an image a few minutes after the last task
# using it has stopped (plugin "docker" gc.image_delay, 3m by default), so an image pulled by a
# task that exits at once would be gone again before most first jobs arrive. See README.md,
# "Prewarm", for why this is not a sysbatch job, what it costs and when it pays.
#
# It holds no credential: no template, no Nomad Variable, no network, nothing in its env.
#
# Run by hand from this directory:
#   nomad job run -var-file=prewarm.vars.hcl prewarm.nomad.hcl

variable "job_name" {
  description = "Nomad job id of this pool's prewarm job (github-prewarm-<pool> in the stacks; outside the github-runner- prefix of the runner jobs)."
  type        = string
  default     = "github-prewarm-default"
}

variable "namespace" {
  description = "Nomad namespace: the runner jobs' own."
  type        = string
  default     = "github-runners"
}

variable "datacenters" {
  description = "Datacenters of the pool's runners."
  type        = list(string)
  default     = ["*"]
}

variable "node_pool" {
  description = "Nomad node pool of the pool's runners."
  type        = string
  default     = "default"
}

variable "constraints" {
  description = "The pool's placement constraints, as in runner.nomad.hcl, so exactly the nodes that may run the pool's runners keep its images."
  type = list(object({
    attribute = string
    operator  = string
    value     = string
  }))
  default = []
}

variable "driver" {
  description = "Task driver of the pool's runners (docker or podman): the images must land in its image store."
  type        = string
  default     = "docker"
}

# The images, named as in runner.nomad.hcl and runner-dind.nomad.hcl. No default for the runner
# image, as there: any version written here would be refused by GitHub within weeks.
variable "runner_image" {
  description = "The pool's runner image, as its runner job has it (ghcr.io/actions/actions-runner:<version> or the pool's own)."
  type        = string
}

variable "helper_image" {
  description = "Image of the pool's register and deregister tasks."
  type        = string
  default     = "python:3.13.9-alpine3.22"
}

variable "docker_image" {
  description = "Image of the Docker daemon of a pool with docker = \"dind\", or \"\" for a pool without one."
  type        = string
  default     = ""
}

variable "image_pull_timeout" {
  description = "How long one pull may take (the docker driver's default is 5m, short for a runner image of several hundred MB on a home uplink)."
  type        = string
  default     = "30m"
}

locals {
  # Task name -> image: one task per image a runner of the pool starts ("" leaves one out).
  images = {
    for name, image in {
      runner = var.runner_image
      helper = var.helper_image
      docker = var.docker_image
    } : name => image if image != ""
  }
}

job "github-prewarm" {
  # Block labels cannot take variables; the id and name attributes can, and win over the label.
  id          = var.job_name
  name        = var.job_name
  namespace   = var.namespace
  type        = "system"
  datacenters = var.datacenters
  node_pool   = var.node_pool
  # Below the runners' 50 by more than 10: system jobs may preempt lower-priority allocations
  # (on by default), and this one must never preempt a runner.
  priority = 30

  dynamic "constraint" {
    for_each = var.constraints
    content {
      attribute = constraint.value.attribute
      operator  = constraint.value.operator
      value     = constraint.value.value
    }
  }

  group "prewarm" {
    # Nomad reserves ephemeral disk per allocation (300 MB by default); this one writes nothing.
    ephemeral_disk {
      size = 10
    }

    # A failed pull (registry down, rate limited) is tried again on the same node until it
    # works: mode "delay" waits out the interval instead of failing the allocation for good.
    restart {
      attempts = 3
      interval = "30m"
      delay    = "1m"
      mode     = "delay"
    }

    dynamic "task" {
      for_each = local.images
      labels   = [task.key]

      content {
        driver = var.driver

        config {
          image              = task.value
          image_pull_timeout = var.image_pull_timeout
          # The images' own entrypoints (a Docker daemon's, for a dind image) must not run.
          entrypoint   = ["sleep"]
          args         = ["2147483647"]
          network_mode = "none"
          # Nothing but sleep runs here; the walls cost nothing.
          privileged = false
          pids_limit = 8
        }

        # sleep as PID 1 ignores SIGTERM: do not wait the default 5s for it on every update.
        kill_timeout = "1s"

        resources {
          cpu    = 10
          memory = 16
        }
      }
    }
  }
}
