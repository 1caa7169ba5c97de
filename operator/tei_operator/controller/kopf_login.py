"""kopf's login: the operator's own credentials (kube_credentials.py) handed to kopf's watches and patches."""

from __future__ import annotations

import kopf

from ..kube_credentials import Credentials


def connection_info(creds: Credentials) -> kopf.ConnectionInfo:
    """`creds` as kopf's ConnectionInfo, without an expiration: kopf logs in again when the API server refuses its
    credentials (401), and the login handler then fetches fresh ones (runner.py). An expiration would make kopf drop
    its connection pool when it passes, ending every watch, which kopf then starts again with a LIST of the whole
    kind: every minute for the in-cluster token. (kubernetes_asyncio's login, used before, gave none either.) kopf
    has no setting for a kubeconfig's tls-server-name: with one, its requests check the certificate against the
    server's host name."""
    scheme = token = username = password = None
    if creds.token:
        scheme, token = "Bearer", creds.token
    elif creds.username is not None or creds.password is not None:
        username, password = creds.username or "", creds.password or ""
    return kopf.ConnectionInfo(
        server=creds.server,
        ca_path=creds.ca_path, ca_data=creds.ca_data,
        insecure=creds.insecure,
        scheme=scheme, token=token, username=username, password=password,
        certificate_path=creds.cert_path, certificate_data=creds.cert_data,
        private_key_path=creds.key_path, private_key_data=creds.key_data,
        default_namespace=creds.namespace,
        proxy_url=creds.proxy_url,
    )
