"""A lab namespace that behaves like a Kubernetes node running kube-proxy.

    ip netns exec aanlab-node-1 python -m appliance.lab.node --node node-1 --manifests DIR

From the manifests folder (read with the appliance's own FilesSource, polled every 50 ms):
- pods (`pods.py`): each endpoint address the EndpointSlices place on this node is added to
  `lo` and answers on its ports with `<pod-name> <node-name>`;
- NodePorts (`kubeproxy.py`): one nftables table, `inet lab-kube-proxy`, replaced whole on
  each change; pods of other nodes are reached by `<pod>/32 via <node address>` routes;
- kube-proxy's health endpoints (`healthz.py`): `:10256/healthz`, `/livez`, and every Local
  Service's healthCheckNodePort.

Prints `ready` on stdout once the first state is applied, then nothing more there; one line
per change goes to stderr (`node-1: pod echo-6f7b8c9d4e-a up 198.18.64.12 tcp/8080 udp/7`).
A bad edit of the manifests keeps the last good objects (FilesSource) and logs the refusal.

Signals: SIGUSR1 toggles "node being deleted" (what kube-proxy reports when the node has a
deletionTimestamp or the autoscaler's ToBeDeletedByClusterAutoscaler taint: `/healthz` 503
with `"nodeEligible": false`; `/livez`, the healthCheckNodePorts and the NodePorts carry on);
SIGUSR2 makes the node eligible again. SIGTERM/SIGINT: delete the table, the routes and the
pod addresses this process added, close every socket, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance.cluster.files import FilesSource
from appliance.lab import healthz, httpd, kubeproxy, netops, pods
from appliance.model import ClusterState

log = logging.getLogger("appliance.lab.node")
POLL_INTERVAL = 0.05


class Node:
    def __init__(self, node: str, folder: Path, interval: float = POLL_INTERVAL) -> None:
        self.node = node
        self.folder = folder
        self.interval = interval
        self.source = FilesSource(folder)
        self.pod_names = pods.PodNames(folder)
        self.nft = netops.Nft()
        self.links = netops.Links()
        self.listeners = pods.Listeners(node)
        self.proxy = healthz.ProxyHealth(kubeproxy.FAMILIES)
        self.services = healthz.ServiceHealth(self.proxy)
        self.pods: dict[str, pods.Pod] = {}
        self.added: set[str] = set()  # pod addresses this process put on lo
        self.routes: dict[str, str] = {}  # routes this process added: pod -> via
        self.ruleset = ""  # the table as last applied
        self.node_ports: dict[tuple[str, str, int], str] = {}
        self.refused: set[str] = set()
        self.last_error = ""
        self.stop = asyncio.Event()

    def say(self, line: str) -> None:
        log.info("%s: %s", self.node, line, extra={"node": self.node})

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self._eligibility, "SIGUSR1", None)
        loop.add_signal_handler(signal.SIGUSR2, self._eligibility, "SIGUSR2", True)
        server: asyncio.Server | None = None
        try:
            await self.links.start()  # also sets lo up
            for line in netops.forwarding():  # NodePort traffic to other nodes' pods is routed
                self.say(line)
            server = await httpd.listen(self.proxy.handle, None, healthz.HEALTHZ_PORT)
            if not await self.reconcile(await asyncio.to_thread(self.source.load)):
                self.say("the first state could not be applied; giving up")
                return 1
            print("ready", flush=True)
            dirty = False
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.interval)
                if self.stop.is_set():
                    break
                state = await asyncio.to_thread(self.source.poll)
                if state is None and dirty:
                    state = self.source.state
                if state is not None:
                    dirty = not await self.reconcile(state)
            return 0
        finally:
            if server is not None:
                server.close()
            await self.cleanup()

    def _eligibility(self, signame: str, eligible: bool | None) -> None:
        self.proxy.node_eligible = not self.proxy.node_eligible if eligible is None else eligible
        if self.proxy.node_eligible:
            self.say(f"{signame}: kube-proxy healthy again: /healthz answers 200")
        else:
            self.say(
                f"{signame}: kube-proxy down (node being deleted): "
                "/healthz answers 503, nodeEligible false"
            )

    # --- one state -------------------------------------------------------------------------

    async def reconcile(self, state: ClusterState) -> bool:
        """Make the namespace match the state; False if any part failed (retried later)."""
        try:
            ok = await self._reconcile(state)
        except Exception as e:  # a bug must not leave the node half done and silent
            ok = self._failed(f"reconcile: {type(e).__name__}: {e}")
        if ok:
            self.proxy.updated()
            self.last_error = ""
        else:
            self.proxy.failed()
        return ok

    def _failed(self, error: str) -> bool:
        """Log an error once (a retry that fails alike stays quiet); False."""
        if error != self.last_error:
            self.say(error)
        self.last_error = error
        return False

    async def _reconcile(self, state: ClusterState) -> bool:
        """Pods and routes first, then the rules, then the pods that left: traffic always
        has somewhere to go. Health checks drop a count at once and raise it last, so an LB
        drains a node early and sends it new traffic only once the node is ready for it."""
        self._refusals(state)
        names = await asyncio.to_thread(self.pod_names.read)
        known = state.nodes.get(self.node)
        own = {a.address for a in known.addresses} if known is not None else set()
        want = pods.local_pods(state, self.node, names)
        plan = kubeproxy.plan(state, self.node)
        self.proxy.families = plan.families
        ok = True
        served = self.services.ports
        drained = {
            port: dataclasses.replace(hp, local_endpoints=min(hp.local_endpoints, n))
            for port, hp in plan.health.items()
            if port in served and hp.local_endpoints < (n := served[port].local_endpoints)
        }
        for line in await self.services.sync({**self.services.ports, **drained}):
            self.say(line)
        for address, pod in want.items():  # new pods: the address first, then the sockets
            if self.pods.get(address) == pod:
                continue
            if address in self.pods:
                self.listeners.close(address)
            elif address not in own:  # a hostNetwork pod uses the node's address
                if error := await self.links.address("add", address):
                    ok = self._failed(error)
                self.added.add(address)
            for failure in await self.listeners.open(pod):
                ok = self._failed(f"pod {pod.name}: cannot listen on {failure}")
            self.pods[address] = pod
            self.say(f"pod {pod.name} up {address} {pod.port_list()}".rstrip())
        for address, via in sorted(plan.routes.items()):
            if self.routes.get(address) != via:
                if error := await self.links.route("replace", address, via):
                    ok = self._failed(error)
                    continue
                self.routes[address] = via
                self.say(f"route {netops.host(address)} via {via}")
        ok &= await self._rules(plan)
        for line in await self.services.sync(plan.health):
            self.say(line)
        for address in [a for a in self.routes if a not in plan.routes]:
            await self.links.route("del", address)
            del self.routes[address]
            self.say(f"route {netops.host(address)} removed")
        for address in [a for a in self.pods if a not in want]:
            pod = self.pods.pop(address)
            self.listeners.close(address)
            if address in self.added:
                await self.links.address("del", address)
                self.added.discard(address)
            self.say(f"pod {pod.name} down {address}")
        return ok

    async def _rules(self, plan: kubeproxy.Plan) -> bool:
        text = kubeproxy.ruleset(plan)
        if text == self.ruleset:
            return True
        if error := await self.nft.run(text):
            return self._failed(f"nft: {error}")
        self.ruleset = text
        now: dict[tuple[str, str, int], str] = {
            (np.family, np.protocol, np.node_port): np.describe() for np in plan.node_ports
        }
        for key, line in sorted(now.items()):
            if self.node_ports.get(key) != line:
                self.say(line)
        for key in sorted(set(self.node_ports) - set(now)):
            self.say(f"nodeport {key[1].lower()}/{key[2]} {key[0]} removed")
        self.node_ports = now
        return True

    def _refusals(self, state: ClusterState) -> None:
        """One line for each object the manifests newly refuse (a bad edit keeps the last
        good version in force, FilesSource says so in the reason)."""
        now = {str(r) for r in state.refused}
        for line in sorted(now - self.refused):
            self.say(f"manifests: {line}")
        self.refused = now

    # --- the end ------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Remove what this process added: the table, the routes, the sockets, the addresses."""
        self.services.close()
        if self.ruleset and (error := await self.nft.run(f"delete table inet {kubeproxy.TABLE}")):
            self.say(f"nft delete table: {error}")
        self.ruleset = ""
        self.nft.close()
        for address in list(self.routes):
            if error := await self.links.route("del", address):
                self.say(error)
        self.routes.clear()
        self.listeners.close_all()
        for address in sorted(self.added):
            if error := await self.links.address("del", address):
                self.say(error)
        self.added.clear()
        self.links.close()
        self.say("stopped: table, routes and pod addresses removed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.lab.node",
        description="A lab namespace as a Kubernetes node: pods, kube-proxy's NodePorts "
        "(nftables) and health endpoints, from a folder of manifests.",
    )
    parser.add_argument("--node", required=True, help="this node's name in the manifests")
    parser.add_argument("--manifests", required=True, type=Path, help="the manifests folder")
    parser.add_argument(
        "--interval", type=float, default=POLL_INTERVAL, help="seconds between two polls"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    node = Node(args.node, args.manifests, args.interval)
    try:
        return asyncio.run(node.run())
    except OSError as e:  # :10256 taken, say
        print(f"{args.node}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
