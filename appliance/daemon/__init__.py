"""The appliance daemon: one process per LB host that wires the flow together.

    source -> Planner.plan -> dataplane.apply, speaker.set_vips, dns.update, status write-back

`loop.Daemon` is the level-triggered loop; `parts` builds the real adapters from a config;
`command` is `appliance run` and `appliance status`.
"""
