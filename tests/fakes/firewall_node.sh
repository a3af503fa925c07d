#!/usr/bin/env bash
# A Nomad client node in miniature, inside the network namespace this script is started in
# (`unshare -n`), to try runner_job/node/runner-firewall.nft on real packets.
#
#   node        bridge "nomad" 172.26.64.1/20 (Nomad's defaults), a LAN interface 10.0.0.5/24
#               towards "outside", a listener on 0.0.0.0:4646 (the Nomad API), IP forwarding on
#   allocation  its own namespace on the bridge, 172.26.64.2, default route via the node
#   outside     a namespace routed through the node: 169.254.169.254 (cloud metadata) and
#               198.51.100.10 (the internet, i.e. GitHub), each with a listener on port 80
#
# Usage: firewall_node.sh RULES_FILE|none
# Prints one line per probe, "<name> open" or "<name> closed", from inside the allocation
# (and one from the node towards the allocation), then exits 0; any setup failure exits 1.
set -euo pipefail

rules="${1:?usage: firewall_node.sh RULES_FILE|none}"
pids=()
cleanup() {
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# A namespace of its own: a sleeping process holds it, nsenter joins it.
new_namespace() {
  unshare -n sleep 120 &
  pids+=("$!")
  sleep 0.1
}

listen() {
  # listen PID_OR_SELF ADDRESS PORT
  local target="$1" address="$2" port="$3"
  local server="import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('$address', $port))
s.listen()
while True:
    c, _ = s.accept()
    c.close()"
  if [[ $target == self ]]; then
    python3 -c "$server" &
  else
    nsenter -t "$target" -n python3 -c "$server" &
  fi
  pids+=("$!")
}

probe() {
  # probe NAME PID ADDRESS PORT: can a TCP connection be made from the namespace of PID?
  local name="$1" target="$2" address="$3" port="$4"
  if nsenter -t "$target" -n python3 -c "import socket
socket.create_connection(('$address', $port), timeout=1).close()" 2>/dev/null; then
    echo "$name open"
  else
    echo "$name closed"
  fi
}

ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
ip link add nomad type bridge
ip addr add 172.26.64.1/20 dev nomad
ip link set nomad up

new_namespace
alloc="${pids[-1]}"
ip link add veth-alloc type veth peer name eth0-alloc
ip link set veth-alloc master nomad up
ip link set eth0-alloc netns "$alloc"
nsenter -t "$alloc" -n sh -c '
  ip link set lo up
  ip link set eth0-alloc name eth0
  ip addr add 172.26.64.2/20 dev eth0
  ip link set eth0 up
  ip route add default via 172.26.64.1'

new_namespace
outside="${pids[-1]}"
ip link add lan0 type veth peer name eth0-out
ip addr add 10.0.0.5/24 dev lan0
ip link set lan0 up
ip route add 169.254.169.254/32 via 10.0.0.2
ip route add 198.51.100.0/24 via 10.0.0.2
ip link set eth0-out netns "$outside"
nsenter -t "$outside" -n sh -c '
  ip link set lo up
  ip addr add 10.0.0.2/24 dev eth0-out
  ip addr add 169.254.169.254/32 dev lo
  ip addr add 198.51.100.10/24 dev lo
  ip link set eth0-out up
  ip route add 172.26.64.0/20 via 10.0.0.5'

listen self 0.0.0.0 4646
listen "$outside" 169.254.169.254 80
listen "$outside" 198.51.100.10 80
listen "$alloc" 172.26.64.2 8080
sleep 0.5

if [[ $rules != none ]]; then
  nft -f "$rules"
fi

node="$$"
probe node-api-on-bridge-address "$alloc" 172.26.64.1 4646
probe node-api-on-lan-address "$alloc" 10.0.0.5 4646
probe metadata "$alloc" 169.254.169.254 80
probe internet "$alloc" 198.51.100.10 80
probe node-to-allocation "$node" 172.26.64.2 8080
