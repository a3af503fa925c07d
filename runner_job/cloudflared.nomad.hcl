# The Cloudflare Tunnel connector: the only way the dispatch Worker reaches the Nomad API.
#
# The tunnel is remotely managed (its ingress rules live at Cloudflare), so cloudflared needs
# nothing but the tunnel token, which it reads from a file rendered from a Nomad Variable that
# only this task can read. Two instances by default: a rolling update or a lost node never leaves
# the tunnel without a connector.
#
# Run by hand from this directory, after storing the token:
#   nomad var put -namespace github-runners nomad/jobs/cloudflared/cloudflared/cloudflared tunnel_token=...
#   nomad job run cloudflared.nomad.hcl

variable "job_name" {
  description = "Nomad job id; the tunnel token Variable lives at nomad/jobs/<job_name>/cloudflared/cloudflared."
  type        = string
  default     = "cloudflared"
}

variable "namespace" {
  description = "Nomad namespace of the job (the runner jobs' namespace)."
  type        = string
  default     = "github-runners"
}

variable "datacenters" {
  description = "Datacenters the connectors may be placed in."
  type        = list(string)
  default     = ["*"]
}

variable "node_pool" {
  description = "Nomad node pool the connectors are placed in."
  type        = string
  default     = "default"
}

variable "image" {
  description = "cloudflared image, pinned to a version (2025.4.0 or later: --token-file)."
  type        = string
  default     = "cloudflare/cloudflared:2025.11.1"
}

variable "count" {
  description = "Number of connectors; two or more let one restart without downtime."
  type        = number
  default     = 2
}

variable "cpu" {
  description = "CPU of each connector, in MHz."
  type        = number
  default     = 100
}

variable "memory" {
  description = "Memory of each connector, in MiB."
  type        = number
  default     = 128
}

variable "metrics_port" {
  description = "Port of the metrics and /ready endpoint on the node's loopback (127.0.0.1); 0 picks a free one per allocation, so several connectors can share a node."
  type        = number
  default     = 0
}

job "cloudflared" {
  # Block labels cannot take variables; the id and name attributes can, and win over the label.
  id          = var.job_name
  name        = var.job_name
  namespace   = var.namespace
  type        = "service"
  datacenters = var.datacenters
  node_pool   = var.node_pool

  group "cloudflared" {
    count = var.count

    # One connector at a time, and only once the new one reports ready: the tunnel keeps at
    # least count-1 connections through a rollout, and a bad version reverts by itself.
    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "3m"
      progress_deadline = "10m"
      auto_revert       = true
    }

    # Prefer different nodes, without making a single-node cluster unschedulable.
    spread {
      attribute = "$${node.unique.id}"
    }

    # A connector is a long-lived service: keep retrying in place rather than giving up.
    restart {
      attempts = 10
      interval = "30m"
      delay    = "15s"
      mode     = "delay"
    }

    network {
      port "metrics" {
        static = var.metrics_port
      }
    }

    service {
      provider = "nomad"
      name     = var.job_name
      port     = "metrics"
      # The metrics server listens on the node's loopback only (it also serves /debug/ pprof,
      # /config and /diag/*). A Nomad-provider check is run by the Nomad client itself, from the
      # node's network namespace, at the service's address: this custom address points it at
      # 127.0.0.1:<metrics port>, which it reaches because this task shares that namespace
      # (host networking). Without it the check would go to the node's advertised IP and fail.
      address = "127.0.0.1"

      # /ready answers 200 once the connector holds at least one connection to Cloudflare.
      check {
        name     = "ready"
        type     = "http"
        path     = "/ready"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "cloudflared" {
      driver = "docker"

      config {
        image = var.image
        # Host networking: the tunnel's ingress reaches the Nomad API on the node itself
        # (http://127.0.0.1:4646 by default). The metrics server binds the node's loopback
        # only, which no container on a bridge network (a runner) can reach: a container's
        # 127.0.0.1 is its own.
        network_mode = "host"
        privileged   = false
        args = [
          "tunnel", "--no-autoupdate",
          "--metrics", "127.0.0.1:${NOMAD_PORT_metrics}",
          "run", "--token-file", "${NOMAD_SECRETS_DIR}/tunnel_token",
        ]
      }

      # The token reaches this task only (nomad/jobs/<job>/<group>/<task> is readable by that
      # task alone), as a file in its private secrets dir, never in the jobspec, the arguments or
      # the environment. It is readable inside this container, where cloudflared (running as the
      # image's non-root user) is the only process; "end -" drops the trailing newline.
      # A rotated token must not restart every connector at once (noop): connections made with
      # the old token stay up, and a rolling `nomad job restart` picks the new one up.
      template {
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/${var.job_name}/cloudflared/cloudflared" }}{{ .tunnel_token }}{{ end -}}
        EOT
        destination = "secrets/tunnel_token"
        perms       = "0444"
        env         = false
        change_mode = "noop"
      }

      # cloudflared drains in-flight requests on SIGTERM; 30s is a client's default maximum.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
