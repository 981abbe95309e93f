"""The admin status page: a JupyterHub service (started by the hub, JupyterHub OAuth) with one row per
tunnel: user, job, node, agent connected since, streams, bytes, resumptions, last error.

In ``jupyterhub_config.py``::

    from batchtunnel.status import status_service
    service, role = status_service(broker_api_url="unix:/run/batchtunnel/api.sock",
                                   broker_admin_token_file="/var/lib/batchtunnel/admin.token")
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)

Only users granted ``access:services!service=batchtunnel-status`` reach it (admins have
``access:services``); everyone else gets 403. It appears in the hub's Services menu.
"""

from .service import SERVICE_NAME, status_service

__all__ = ["SERVICE_NAME", "status_service"]
