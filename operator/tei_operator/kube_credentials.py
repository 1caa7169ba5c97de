"""Where the operator's credentials for the API server come from: a kubeconfig or the in-cluster service account.

Read here rather than by a Kubernetes client library: the operator sends its requests with aiohttp (kube_transport.py)
and needs only the credentials, and kubernetes_asyncio, which read them before, imported its ~860 generated modules
with them (~38 MiB of the operator's memory, and kopf imports whichever client is installed).

What is read, as kubectl reads it:

- **kubeconfig**: an explicit path, else the files in $KUBECONFIG (separated by ':'; missing ones skipped; for a
  cluster, user or context named in several files, and for current-context, the first file that has it wins), else
  ~/.kube/config. The current context's cluster (`server`, `certificate-authority` / `-data`,
  `insecure-skip-tls-verify`, `tls-server-name`, `proxy-url`) and user (`client-certificate` / `-data`,
  `client-key` / `-data`, `token`, `tokenFile` (re-read every minute), `username` / `password`, `exec`). Relative
  paths are relative to the file that holds them.
- **exec credential plugins** (client.authentication.k8s.io/v1 and v1beta1): `command`, `args`, `env`,
  `provideClusterInfo`; the plugin gets KUBERNETES_EXEC_INFO and its ExecCredential (a token, or a client certificate
  and key) is kept until its `expirationTimestamp`, or until the API server answers 401.
- **in cluster**: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT (an IPv6 host in brackets), the service account's
  token (re-read every minute: the kubelet rotates it), CA and namespace files.

Anything else a kubeconfig can say that changes who the operator is or how it connects (`auth-provider`,
impersonation) fails at start-up with an error naming the field, never silently.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import datetime as dt
import json
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import yaml

TOKEN_REREAD_SECONDS = 60.0  # a token file (in-cluster, tokenFile) is read again after this long
EXEC_TIMEOUT_SECONDS = 60.0  # an exec plugin that has not answered by then failed
EXPIRY_MARGIN_SECONDS = 10.0  # an exec credential is renewed this long before it expires
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_KUBECONFIG = "~/.kube/config"

class CredentialsError(Exception):
    """The credentials could not be read: the message names the file and field, and what would be accepted."""

@dataclasses.dataclass(frozen=True)
class Credentials:
    """What one request needs: where, how TLS is checked, who the client is. PEM data as bytes; `expires` (UTC) is
    when a fresh copy must be fetched (None: valid until the API server refuses it)."""

    server: str
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    cert_path: str | None = None
    cert_data: bytes | None = None
    key_path: str | None = None
    key_data: bytes | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    namespace: str | None = None
    expires: dt.datetime | None = None

    def authorization(self) -> str | None:
        """The Authorization header's value, if any."""
        if self.token:
            return f"Bearer {self.token}"
        if self.username is not None or self.password is not None:
            pair = f"{self.username or ''}:{self.password or ''}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None

    def tls_identity(self) -> tuple[Any, ...]:
        """What the TLS context is built from: a new one is needed when this changes (an exec plugin's certificate)."""
        return (self.server.startswith("https:"), self.ca_path, self.ca_data, self.insecure, self.cert_path,
                self.cert_data, self.key_path, self.key_data)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context for aiohttp (False: plain HTTP)."""
        if not self.server.startswith("https:"):
            return False
        context = ssl.create_default_context(cafile=self.ca_path,
                                             cadata=self.ca_data.decode("ascii") if self.ca_data else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_path or self.cert_data:
            _load_client_certificate(context, self)
        return context

def _load_client_certificate(context: ssl.SSLContext, creds: Credentials) -> None:
    # ssl loads a certificate chain from files only: data is written to a private directory, loaded, removed.
    with tempfile.TemporaryDirectory(prefix="tei-operator-tls-") as directory:
        def path_of(path: str | None, data: bytes | None, name: str) -> str | None:
            if data is None:
                return path
            target = os.path.join(directory, name)
            with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(data)
            return target

        cert = path_of(creds.cert_path, creds.cert_data, "cert.pem")
        key = path_of(creds.key_path, creds.key_data, "key.pem")
        context.load_cert_chain(cert, keyfile=key)

class CredentialSource:
    """Hands out `Credentials`, fetching a fresh copy when the held one is stale. `refreshable`: a 401 may be cured by
    `invalidate()` and one more try (a token file or an exec plugin may have a newer credential)."""

    refreshable = False

    def __init__(self) -> None:
        self._held: Credentials | None = None
        self._held_at = 0.0
        self._pending: asyncio.Task | None = None

    @property
    def server(self) -> str:
        raise NotImplementedError

    def _fresh(self, creds: Credentials, age: float) -> bool:
        return True

    async def _fetch(self) -> Credentials:
        raise NotImplementedError

    def invalidate(self) -> None:
        """Drop the held credentials: the next `get` fetches them again."""
        self._held = None

    async def get(self) -> Credentials:
        """The current credentials. Concurrent callers share one fetch (one exec plugin run, not one each)."""
        held = self._held
        if held is not None and self._fresh(held, time.monotonic() - self._held_at):
            return held
        loop = asyncio.get_running_loop()
        task = self._pending
        if task is None or task.get_loop() is not loop:
            task = self._pending = loop.create_task(self._fetch())
        try:
            creds = await asyncio.shield(task)
        finally:
            if self._pending is task and task.done():
                self._pending = None
        if self._held is not creds:
            self._held, self._held_at = creds, time.monotonic()
        return creds

class StaticSource(CredentialSource):
    """Fixed credentials (a test server, a local `kubectl proxy`)."""

    def __init__(self, creds: Credentials) -> None:
        super().__init__()
        self._creds = creds

    @property
    def server(self) -> str:
        return self._creds.server

    async def _fetch(self) -> Credentials:
        return self._creds

def _read_token(path: str, field: str) -> str:
    try:
        with open(path, encoding="utf-8") as source:
            token = source.read().strip()
    except OSError as exc:
        raise CredentialsError(f"{field}: cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise CredentialsError(f"{field}: the token file {path} is empty")
    return token

class InClusterSource(CredentialSource):
    """The pod's service account. The token file is read again every `reread_seconds` (the kubelet rotates it)."""

    refreshable = True

    def __init__(self, environ: Mapping[str, str] | None = None, *, directory: str = SERVICE_ACCOUNT_DIR,
                 reread_seconds: float = TOKEN_REREAD_SECONDS) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise CredentialsError("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both "
                                   "be set (they are in a pod); outside a cluster give a kubeconfig ($KUBECONFIG or "
                                   "~/.kube/config)")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        self.token_path = os.path.join(directory, "token")
        self.ca_path = os.path.join(directory, "ca.crt")
        if not os.path.isfile(self.ca_path):
            raise CredentialsError(f"in-cluster: the service account's CA file {self.ca_path} is missing "
                                   "(is automountServiceAccountToken off?)")
        _read_token(self.token_path, "in-cluster service account token")  # fail at start-up, not at first request
        try:
            with open(os.path.join(directory, "namespace"), encoding="utf-8") as source:
                self.namespace: str | None = source.read().strip() or None
        except OSError:
            self.namespace = None
        self._server = f"https://{host}:{port}"
        self.reread_seconds = reread_seconds

    @property
    def server(self) -> str:
        return self._server

    def _fresh(self, creds: Credentials, age: float) -> bool:
        return age < self.reread_seconds

    async def _fetch(self) -> Credentials:
        token = _read_token(self.token_path, "in-cluster service account token")
        expires = _utcnow() + dt.timedelta(seconds=self.reread_seconds)
        return Credentials(server=self._server, ca_path=self.ca_path, token=token, namespace=self.namespace,
                           expires=expires)

def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)

# -- kubeconfig ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Entry:
    """A named cluster, user or context, with the file it came from (its relative paths are relative to it)."""

    body: Mapping[str, Any]
    path: str

    def resolve(self, value: str | None) -> str | None:
        if not value:
            return None
        value = os.path.expanduser(value)
        return value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(self.path)), value)

@dataclasses.dataclass
class Kubeconfig:
    """The merged kubeconfig files: the first file to name a cluster, user or context, or to set current-context,
    wins (kubectl's rule)."""

    paths: list[str]
    clusters: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    users: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    contexts: dict[str, _Entry] = dataclasses.field(default_factory=dict)
    current_context: str | None = None
    current_context_file: str | None = None

def kubeconfig_paths(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """The kubeconfig files to read, in order: `explicit` (must exist), else the existing files of $KUBECONFIG,
    else ~/.kube/config if it exists; [] when there is none (then only in-cluster credentials are left)."""
    env = os.environ if environ is None else environ
    if explicit:
        if not os.path.isfile(explicit):
            raise CredentialsError(f"kubeconfig {explicit} does not exist")
        return [explicit]
    listed = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p]
    if listed:
        found = [p for p in dict.fromkeys(listed) if os.path.isfile(os.path.expanduser(p))]
        if not found:
            raise CredentialsError(f"KUBECONFIG={env['KUBECONFIG']}: none of these files exists")
        return [os.path.expanduser(p) for p in found]
    default = os.path.expanduser(DEFAULT_KUBECONFIG)
    return [default] if os.path.isfile(default) else []

def read_kubeconfig(paths: list[str]) -> Kubeconfig:
    merged = Kubeconfig(paths=list(paths))
    for path in paths:
        try:
            with open(path, encoding="utf-8") as source:
                doc = yaml.safe_load(source) or {}
        except OSError as exc:
            raise CredentialsError(f"kubeconfig {path}: cannot read it: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise CredentialsError(f"kubeconfig {path}: not valid YAML: {exc}") from exc
        if not isinstance(doc, Mapping):
            raise CredentialsError(f"kubeconfig {path}: expected a mapping (apiVersion: v1, kind: Config), "
                                   f"got {type(doc).__name__}")
        for section, field in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            entries = doc.get(section) or []
            if not isinstance(entries, list):
                raise CredentialsError(f"kubeconfig {path}: {section} must be a list of entries with name and "
                                       f"{field}")
            held: dict[str, _Entry] = getattr(merged, section)
            for index, entry in enumerate(entries):
                if not isinstance(entry, Mapping) or not entry.get("name"):
                    raise CredentialsError(f"kubeconfig {path}: {section}[{index}].name is missing")
                body = entry.get(field) or {}
                if not isinstance(body, Mapping):
                    raise CredentialsError(f"kubeconfig {path}: {section}[name={entry['name']}].{field} must be a "
                                           "mapping")
                held.setdefault(str(entry["name"]), _Entry(body, path))
        if merged.current_context is None and doc.get("current-context"):
            merged.current_context, merged.current_context_file = str(doc["current-context"]), path
    return merged

def _b64(entry: _Entry, where: str, key: str) -> bytes | None:
    raw = entry.body.get(key)
    if not raw:
        return None
    try:
        return base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CredentialsError(f"kubeconfig {entry.path}: {where}.{key} is not valid base64") from exc

def _file(entry: _Entry, where: str, key: str) -> str | None:
    path = entry.resolve(entry.body.get(key))
    if path is not None and not os.path.isfile(path):
        raise CredentialsError(f"kubeconfig {entry.path}: {where}.{key}: file {path} does not exist")
    return path

_UNSUPPORTED_USER_FIELDS = {
    "auth-provider": "is not supported (the legacy in-tree auth providers were removed from kubectl too): use an "
                     "exec credential plugin (users[].user.exec), e.g. gke-gcloud-auth-plugin, kubelogin or "
                     "aws eks get-token",
    "as": "(impersonation) is not supported: give the operator its own credentials",
    "as-uid": "(impersonation) is not supported: give the operator its own credentials",
    "as-groups": "(impersonation) is not supported: give the operator its own credentials",
    "as-user-extra": "(impersonation) is not supported: give the operator its own credentials",
}

@dataclasses.dataclass(frozen=True)
class ExecPlugin:
    """users[].user.exec of a kubeconfig."""

    api_version: str
    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    provide_cluster_info: bool
    where: str  # for messages: "kubeconfig PATH: users[name=NAME].user.exec"

def _exec_plugin(entry: _Entry, where: str) -> ExecPlugin:
    spec = entry.body["exec"]
    at = f"kubeconfig {entry.path}: {where}.exec"
    if not isinstance(spec, Mapping):
        raise CredentialsError(f"{at} must be a mapping with apiVersion and command")
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise CredentialsError(f"{at}.apiVersion {api_version!r} is not supported: use one of "
                               + ", ".join(EXEC_API_VERSIONS))
    command = spec.get("command")
    if not command:
        raise CredentialsError(f"{at}.command is missing")
    command = str(command)
    if os.sep in command and not os.path.isabs(command):
        command = entry.resolve(command) or command  # relative to the kubeconfig, as kubectl does
    if spec.get("interactiveMode") == "Always":
        raise CredentialsError(f"{at}.interactiveMode is Always: the operator has no terminal; use a plugin that "
                               "runs with IfAvailable or Never")
    env = []
    for index, item in enumerate(spec.get("env") or []):
        if not isinstance(item, Mapping) or not item.get("name"):
            raise CredentialsError(f"{at}.env[{index}].name is missing")
        env.append((str(item["name"]), str(item.get("value") or "")))
    return ExecPlugin(str(api_version), command, tuple(str(a) for a in spec.get("args") or []), tuple(env),
                      bool(spec.get("provideClusterInfo")), at)

class KubeconfigSource(CredentialSource):
    """The current context of a kubeconfig (see the module's docstring). Everything is checked when it is built, so
    a broken kubeconfig fails at start-up; a token file and an exec plugin are read when credentials are needed."""

    def __init__(self, paths: list[str], *, reread_seconds: float = TOKEN_REREAD_SECONDS,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.reread_seconds = reread_seconds
        self._environ = os.environ if environ is None else environ
        config = read_kubeconfig(paths)
        files = ", ".join(paths)
        name = config.current_context
        if not name:
            raise CredentialsError(f"kubeconfig {files}: current-context is not set (kubectl config use-context "
                                   "NAME)")
        context = config.contexts.get(name)
        if context is None:
            raise CredentialsError(f"kubeconfig {config.current_context_file}: current-context {name!r} names no "
                                   f"entry of contexts (known: {', '.join(sorted(config.contexts)) or 'none'})")
        at = f"kubeconfig {context.path}: contexts[name={name}].context"
        cluster_name, user_name = context.body.get("cluster"), context.body.get("user")
        if not cluster_name:
            raise CredentialsError(f"{at}.cluster is missing")
        cluster = config.clusters.get(str(cluster_name))
        if cluster is None:
            raise CredentialsError(f"{at}.cluster {cluster_name!r} names no entry of clusters (known: "
                                   f"{', '.join(sorted(config.clusters)) or 'none'})")
        user = config.users.get(str(user_name)) if user_name else _Entry({}, context.path)
        if user is None:
            raise CredentialsError(f"{at}.user {user_name!r} names no entry of users (known: "
                                   f"{', '.join(sorted(config.users)) or 'none'})")
        cw, uw = f"clusters[name={cluster_name}].cluster", f"users[name={user_name}].user"
        server = cluster.body.get("server")
        if not server:
            raise CredentialsError(f"kubeconfig {cluster.path}: {cw}.server is missing")
        for field, why in _UNSUPPORTED_USER_FIELDS.items():
            if user.body.get(field):
                raise CredentialsError(f"kubeconfig {user.path}: {uw}.{field} {why}")
        ca_data, ca_path = _b64(cluster, cw, "certificate-authority-data"), None
        if ca_data is None:
            ca_path = _file(cluster, cw, "certificate-authority")
        cert_data, cert_path = _b64(user, uw, "client-certificate-data"), None
        if cert_data is None:
            cert_path = _file(user, uw, "client-certificate")
        key_data, key_path = _b64(user, uw, "client-key-data"), None
        if key_data is None:
            key_path = _file(user, uw, "client-key")
        if bool(cert_data or cert_path) != bool(key_data or key_path):
            have, missing = ("client-certificate", "client-key") if cert_data or cert_path else \
                ("client-key", "client-certificate")
            raise CredentialsError(f"kubeconfig {user.path}: {uw} has {have} but no {missing} (or {missing}-data)")
        self.token_file = user.resolve(user.body.get("tokenFile"))
        if self.token_file:
            _read_token(self.token_file, f"kubeconfig {user.path}: {uw}.tokenFile")
        self.exec = _exec_plugin(user, uw) if user.body.get("exec") else None
        self.refreshable = bool(self.token_file or self.exec)
        self._base = Credentials(
            server=str(server).rstrip("/"), ca_path=ca_path, ca_data=ca_data,
            insecure=bool(cluster.body.get("insecure-skip-tls-verify")),
            tls_server_name=cluster.body.get("tls-server-name") or None,
            proxy_url=cluster.body.get("proxy-url") or None,
            cert_path=cert_path, cert_data=cert_data, key_path=key_path, key_data=key_data,
            token=str(user.body["token"]) if user.body.get("token") else None,
            username=user.body.get("username"), password=user.body.get("password"),
            namespace=context.body.get("namespace") or None)
        self.context = name

    @property
    def server(self) -> str:
        return self._base.server

    def _fresh(self, creds: Credentials, age: float) -> bool:
        if self.exec is not None:
            return creds.expires is None or \
                (creds.expires - _utcnow()).total_seconds() > EXPIRY_MARGIN_SECONDS
        if self.token_file:
            return age < self.reread_seconds
        return True

    async def _fetch(self) -> Credentials:
        if self.exec is not None:
            return await run_exec_plugin(self.exec, self._base, self._environ)
        if self.token_file:
            token = _read_token(self.token_file, f"kubeconfig tokenFile {self.token_file}")
            return dataclasses.replace(self._base, token=token,
                                       expires=_utcnow() + dt.timedelta(seconds=self.reread_seconds))
        return self._base

def _exec_info(plugin: ExecPlugin, base: Credentials) -> str:
    spec: dict[str, Any] = {"interactive": False}
    if plugin.provide_cluster_info:
        cluster: dict[str, Any] = {"server": base.server, "insecure-skip-tls-verify": base.insecure}
        ca = base.ca_data
        if ca is None and base.ca_path:
            with open(base.ca_path, "rb") as source:
                ca = source.read()
        if ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode("ascii")
        if base.tls_server_name:
            cluster["tls-server-name"] = base.tls_server_name
        if base.proxy_url:
            cluster["proxy-url"] = base.proxy_url
        spec["cluster"] = cluster
    return json.dumps({"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": spec})

def _parse_time(value: str, where: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CredentialsError(f"{where}: status.expirationTimestamp {value!r} is not an RFC 3339 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)

async def run_exec_plugin(plugin: ExecPlugin, base: Credentials, environ: Mapping[str, str],
                          timeout: float = EXEC_TIMEOUT_SECONDS) -> Credentials:
    """Run the plugin once; its ExecCredential's token or client certificate on top of `base`."""
    env = {**environ, **dict(plugin.env), "KUBERNETES_EXEC_INFO": _exec_info(plugin, base)}
    try:
        proc = await asyncio.create_subprocess_exec(plugin.command, *plugin.args, env=env,
                                                    stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise CredentialsError(f"{plugin.where}.command {plugin.command!r} could not be started: "
                               f"{exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialsError(f"{plugin.where}: {plugin.command} gave no credential within {timeout:g} s") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-400:]
        raise CredentialsError(f"{plugin.where}: {plugin.command} exited with status {proc.returncode}"
                               + (f": {tail}" if tail else ""))
    try:
        answer = json.loads(out)
    except ValueError as exc:
        raise CredentialsError(f"{plugin.where}: {plugin.command} printed no JSON ExecCredential") from exc
    if not isinstance(answer, Mapping) or answer.get("kind") != "ExecCredential":
        raise CredentialsError(f"{plugin.where}: {plugin.command} printed no ExecCredential (kind must be "
                               "ExecCredential)")
    if answer.get("apiVersion") != plugin.api_version:
        raise CredentialsError(f"{plugin.where}: {plugin.command} answered apiVersion {answer.get('apiVersion')!r}, "
                               f"the kubeconfig asked for {plugin.api_version}")
    status = answer.get("status") or {}
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not token and not (cert and key):
        raise CredentialsError(f"{plugin.where}: {plugin.command}'s ExecCredential has neither status.token nor "
                               "status.clientCertificateData with status.clientKeyData")
    expires = status.get("expirationTimestamp")
    creds = dataclasses.replace(
        base, token=token or base.token,
        expires=_parse_time(str(expires), plugin.where) if expires else None)
    if cert and key:
        creds = dataclasses.replace(creds, cert_path=None, key_path=None, cert_data=str(cert).encode(),
                                    key_data=str(key).encode())
    return creds

def credential_source(kubeconfig: str | None = None, environ: Mapping[str, str] | None = None,
                      service_account_dir: str = SERVICE_ACCOUNT_DIR) -> CredentialSource:
    """The credentials to use: an explicit kubeconfig, else $KUBECONFIG or ~/.kube/config, else the in-cluster
    service account. Reads and checks the files now (call it at start-up): a broken kubeconfig fails here."""
    env = os.environ if environ is None else environ
    paths = kubeconfig_paths(kubeconfig, env)
    if paths:
        return KubeconfigSource(paths, environ=env)
    if not env.get("KUBERNETES_SERVICE_HOST"):
        raise CredentialsError("No credentials for the API server: no kubeconfig ($KUBECONFIG is unset and "
                               f"{DEFAULT_KUBECONFIG} does not exist) and not in a cluster "
                               "(KUBERNETES_SERVICE_HOST is unset)")
    return InClusterSource(env, directory=service_account_dir)
