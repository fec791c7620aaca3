"""The subcommands' layer: one module per `appliance <command>` (registered by cli.py) and
what they share (`common`).

`run` hands the config to `appliance.wiring`, the one module that builds the real parts.
The adapters and the daemon import neither these, the wiring nor the CLI; `make lint`
checks that with import-linter (the contracts in pyproject.toml). `python -m appliance.daemon` (the
daemon's own entry point) is the one module below that reaches up, to `commands.daemon`.
"""
