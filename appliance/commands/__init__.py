"""The subcommands' layer: what every `appliance <command>` shares (`common`).

Nothing below it (the adapters, the daemon) imports it or the CLI; `make lint` checks
that with import-linter (the contracts in pyproject.toml).
"""
