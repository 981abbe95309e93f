"""The `batchtunnel` command: one entry point (`main.py`), one module per subcommand (`cmd_*.py`), shared
option handling (`options.py`: flags, `BATCHTUNNEL_*` variables, TOML file)."""
