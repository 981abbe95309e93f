"""batchtunnel: notebooks on batch clusters whose compute nodes accept no inbound connections.

The import package's parts, following the data path::

    batchtunnel.broker   next to the hub: agent endpoint, hub-side ports, REST API
    batchtunnel.session  asyncio glue shared by broker and agent: streams <-> local sockets
    batchtunnel.wire     the tunnel protocol, sans I/O
    batchtunnel.agent    inside the batch job: dials out, serves the notebook port
    batchtunnel.spawner  JupyterHub spawners
    batchtunnel.client   the hub side's client of the broker: admin API, the connect step
    batchtunnel.certs    CA and certificates
    batchtunnel.cli      the ``batchtunnel`` command

The repository root is this package: each folder above is one of its subpackages (pyproject.toml,
``package-dir``), so a relative import names the folder it reaches (``from ..wire import Settings``).
"""

__version__ = "0.1.0"
