"""Everything on the wire to model servers: clients, open-loop load, shadow probes."""
