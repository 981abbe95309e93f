"""The compose demo's JupyterHub: SlurmTunnelSpawner, the proxy and the broker in their own containers.

Secrets come from /secrets (the init service makes them); the hub's database and cookie secret live
in /srv/jupyterhub (a volume), so a restarted hub container finds its users' servers again.
"""

from pathlib import Path

from batchtunnel.status import status_service

c = get_config()  # type: ignore[name-defined]  # noqa: F821

DEMO_USERS = ["demo1", "demo2"]  # Unix users of every image (docker/Dockerfile); demo1 is the admin


def secret(name: str) -> str:
    return (Path("/secrets") / name).read_text().strip()


# The hub listens for the proxy (its default target) and the broker (the jobs' hub API calls).
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = "http://hub:8081"
# The proxy is a service of its own, so a hub restart drops no connection through it; the users'
# servers outlive the hub process.
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://proxy:8001"
c.ConfigurableHTTPProxy.auth_token = secret("proxy.token")
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/cookie_secret"

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = secret("password")
c.SharedPasswordAuthenticator.admin_password = secret("admin-password")  # the admin logs in with this one
c.Authenticator.allowed_users = set(DEMO_USERS)
c.Authenticator.admin_users = {"demo1"}

# The login page: news and known issues from docker/hub/templates/login.html (mounted, edit and reload).
c.JupyterHub.template_paths = ["/srv/templates"]
c.JupyterHub.template_vars = {"demo_users": DEMO_USERS}

# The admin status page (Services menu): one row per tunnel. The proxy reaches it at hub:8082.
service, role = status_service(broker_api_url="http://broker:8766", broker_admin_token_file="/secrets/admin.token",
                               port=8082)
service["url"] = "http://hub:8082"
c.JupyterHub.services = [service]
c.JupyterHub.load_roles = [role]

c.JupyterHub.spawner_class = "slurm-tunnel"
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.SlurmTunnelSpawner.req_srun = ""
c.SlurmTunnelSpawner.broker_url = "wss://broker:8765/agent"
c.SlurmTunnelSpawner.broker_api_url = "http://broker:8766"
c.SlurmTunnelSpawner.broker_admin_token_file = "/secrets/admin.token"
c.SlurmTunnelSpawner.broker_ca_file = "/secrets/ca.pem"
c.SlurmTunnelSpawner.hub_api_via_tunnel = True  # the nodes reach nothing but the broker's port
# The broker is another container: it exposes each notebook on all its addresses, the proxy
# reaches it as broker:PORT.
c.SlurmTunnelSpawner.connect_to_job_cmd = (
    "/opt/hub/bin/batchtunnel connect --tunnel {tunnel_id} --host 0.0.0.0 --port {port} --rport {rport}"
    " --keep-exposure"
)
c.SlurmTunnelSpawner.connect_ip = "broker"
# The jobs' Python environment on the nodes (docker/Dockerfile, stage "node").
c.SlurmTunnelSpawner.agent_cmd = ["/opt/jobenv/bin/batchtunnel", "agent"]
c.SlurmTunnelSpawner.batchspawner_singleuser_cmd = "/opt/jobenv/bin/batchspawner-singleuser"
c.SlurmTunnelSpawner.cmd = ["/opt/jobenv/bin/jupyterhub-singleuser"]
c.SlurmTunnelSpawner.options_cores_max = 2
c.SlurmTunnelSpawner.options_memory_max_gb = 2
c.SlurmTunnelSpawner.options_runtime_max_minutes = 240
c.SlurmTunnelSpawner.options_partitions = ["debug"]
c.SlurmTunnelSpawner.options_environments = {"Python (job environment)": ""}
