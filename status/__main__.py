"""``python -m batchtunnel.status``: run by JupyterHub as a managed service."""

from .app import main

main()
