"""The agent, inside the batch job: dials out to the broker and serves the notebook's port.

Runtime needs: websockets and the standard library only. Its modules, in the order a job uses them:

    config.py          AgentConfig and its check (light: no asyncio, no TLS)
    supervisor.py      the job's command beside the agent: started first, signals forwarded
    proxy.py           which HTTP proxy, if any, to dial through (sans I/O)
    dialer.py          Agent: dial, serve the session, reconnect with backoff
    proxy_connect.py   the CONNECT through that proxy
    check.py           ``batchtunnel agent --check``

This package imports none of them: ``batchtunnel agent -- COMMAND`` starts the command before it
loads the ones that need asyncio.
"""
