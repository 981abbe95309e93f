"""batchtunnel: notebooks on batch clusters whose compute nodes accept no inbound connections.

The import package's parts, following the data path::

    batchtunnel.broker   next to the hub: agent endpoint, hub-side ports, REST API
    batchtunnel.session  asyncio glue shared by broker and agent: streams <-> local sockets
    batchtunnel.wire     the tunnel protocol, sans I/O
    batchtunnel.agent    inside the batch job: dials out, serves the notebook port
    batchtunnel.spawner  JupyterHub spawners
    batchtunnel.certs    CA and certificates

This root package (folder ``cli/``) holds the ``batchtunnel`` command.
"""

__version__ = "0.1.0"
