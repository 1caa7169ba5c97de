"""kube_credentials: kubeconfig variants, exec plugins (a real script run per test), in-cluster with a rotating token,
and the error messages for what is missing or unsupported. Files live in tmp_path; nothing is mocked."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import ssl
import stat
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from tei_operator.controller.kopf_login import connection_info
from tei_operator.kube import KubeClient
from tei_operator.kube_credentials import (
    Credentials,
    CredentialsError,
    InClusterSource,
    KubeconfigSource,
    credential_source,
    kubeconfig_paths,
)
from tei_operator.kube_transport import ApiTransport


def write_config(path: Path, *, clusters=None, users=None, contexts=None, current="ctx") -> Path:
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": clusters if clusters is not None else [{"name": "c", "cluster": {"server": "https://k:6443"}}],
           "users": users if users is not None else [{"name": "u", "user": {"token": "tok"}}],
           "contexts": contexts if contexts is not None else [{"name": "ctx", "context": {"cluster": "c",
                                                                                          "user": "u"}}]}
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def user(**fields) -> list[dict]:
    return [{"name": "u", "user": fields}]


def self_signed(tmp_path: Path) -> tuple[bytes, bytes]:
    """A PEM certificate and key made here (cryptography is a test dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tester")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- kubeconfig -----------------------------------------------------------------------------------------------------

async def test_token_ca_data_namespace_and_insecure_are_read(tmp_path):
    cert, _ = self_signed(tmp_path)
    path = write_config(tmp_path / "config",
                        clusters=[{"name": "c", "cluster": {"server": "https://k:6443/",
                                                            "certificate-authority-data": b64(cert),
                                                            "tls-server-name": "api.internal"}}],
                        contexts=[{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "team"}}])
    creds = await KubeconfigSource([str(path)]).get()
    assert (creds.server, creds.token, creds.ca_data, creds.namespace, creds.tls_server_name, creds.insecure) == \
        ("https://k:6443", "tok", cert, "team", "api.internal", False)
    assert creds.authorization() == "Bearer tok"
    context = creds.ssl_context()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # the kubeconfig's CA, not the system's


async def test_relative_files_are_relative_to_their_kubeconfig_and_client_certificates_load(tmp_path, monkeypatch):
    cert, key = self_signed(tmp_path)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(cert)
    (tmp_path / "pki" / "me.crt").write_bytes(cert)
    (tmp_path / "pki" / "me.key").write_bytes(key)
    path = write_config(tmp_path / "config",
                        clusters=[{"name": "c", "cluster": {"server": "https://k", "certificate-authority": "pki/ca.crt",
                                                            "insecure-skip-tls-verify": True}}],
                        users=user(**{"client-certificate": "pki/me.crt", "client-key": "pki/me.key"}))
    monkeypatch.chdir("/")
    creds = await KubeconfigSource([str(path)]).get()
    assert creds.ca_path == str(tmp_path / "pki" / "ca.crt") and creds.cert_path == str(tmp_path / "pki" / "me.crt")
    assert creds.authorization() is None and creds.insecure
    assert creds.ssl_context().verify_mode == ssl.CERT_NONE  # and load_cert_chain accepted the pair

    inline = write_config(tmp_path / "inline", users=user(**{"client-certificate-data": b64(cert),
                                                             "client-key-data": b64(key)}))
    creds = await KubeconfigSource([str(inline)]).get()
    assert (creds.cert_data, creds.key_data) == (cert, key)
    assert isinstance(creds.ssl_context(), ssl.SSLContext)  # written to a private temporary file, loaded, removed


async def test_basic_auth(tmp_path):
    path = write_config(tmp_path / "config", users=user(username="ann", password="s3cret"))
    creds = await KubeconfigSource([str(path)]).get()
    assert creds.authorization() == "Basic " + b64(b"ann:s3cret")


def test_kubeconfig_list_first_file_wins_and_missing_files_are_skipped(tmp_path):
    first = write_config(tmp_path / "a", clusters=[{"name": "c", "cluster": {"server": "https://first"}}],
                         users=[], contexts=[], current="ctx")
    second = write_config(tmp_path / "b", clusters=[{"name": "c", "cluster": {"server": "https://second"}}],
                          current="other")
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])}
    paths = kubeconfig_paths(None, env)
    assert paths == [str(first), str(second)]
    source = credential_source(None, env)
    # current-context from the first file that sets it, the context and user from the second, cluster c from the first
    assert isinstance(source, KubeconfigSource) and source.context == "ctx" and source.server == "https://first"


async def test_token_file_is_read_again_when_it_rotates(tmp_path):
    (tmp_path / "token").write_text("one\n")
    path = write_config(tmp_path / "config", users=user(token="static", tokenFile="token"))
    source = KubeconfigSource([str(path)], reread_seconds=0)
    assert (await source.get()).token == "one"  # the file wins over token
    (tmp_path / "token").write_text("two")
    assert (await source.get()).token == "two"
    assert source.refreshable


# -- exec plugins ---------------------------------------------------------------------------------------------------

PLUGIN = """#!{python}
import json, os, sys
log = {log!r}
with open(log, "a") as out:
    out.write(json.dumps({{"info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]), "args": sys.argv[1:],
                          "env": os.environ.get("PLUGIN_ENV")}}) + "\\n")
runs = sum(1 for _ in open(log))
status = {{"token": "exec-token-%d" % runs}}
expiry = os.environ.get("EXPIRY")
if expiry:
    status["expirationTimestamp"] = expiry
if os.environ.get("CERT"):
    status = {{"clientCertificateData": open(os.environ["CERT"]).read(), "clientKeyData": open(os.environ["KEY"]).read()}}
if os.environ.get("FAIL"):
    sys.stderr.write("no credentials for you\\n")
    sys.exit(3)
print(os.environ.get("RAW") or json.dumps({{"apiVersion": os.environ.get("ANSWER_VERSION", sys.argv[1]),
                                            "kind": "ExecCredential", "status": status}}))
"""


def plugin(tmp_path: Path, api_version: str = "client.authentication.k8s.io/v1", provide_cluster_info: bool = False,
           **env: str) -> tuple[Path, Path]:
    log = tmp_path / "runs.log"
    script = tmp_path / "bin" / "get-token"
    script.parent.mkdir(exist_ok=True)
    script.write_text(PLUGIN.format(python=sys.executable, log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    exec_spec = {"apiVersion": api_version, "command": "bin/get-token", "args": [api_version],
                 "env": [{"name": "PLUGIN_ENV", "value": "from-kubeconfig"},
                         *({"name": k, "value": v} for k, v in env.items())],
                 "provideClusterInfo": provide_cluster_info, "interactiveMode": "IfAvailable"}
    path = write_config(tmp_path / "config", users=user(exec=exec_spec))
    return path, log


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
async def test_exec_plugin_runs_once_for_concurrent_callers_and_is_cached_until_expiry(tmp_path, api_version):
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path, log = plugin(tmp_path, api_version, provide_cluster_info=True, EXPIRY=later)
    source = KubeconfigSource([str(path)])
    got = await asyncio.gather(*(source.get() for _ in range(5)))
    assert {c.token for c in got} == {"exec-token-1"} and len(runs(log)) == 1
    assert got[0].expires == dt.datetime.fromisoformat(later.replace("Z", "+00:00"))
    assert (await source.get()).token == "exec-token-1" and len(runs(log)) == 1  # cached
    first = runs(log)[0]
    assert first["args"] == [api_version] and first["env"] == "from-kubeconfig"
    assert first["info"] == {"apiVersion": api_version, "kind": "ExecCredential",
                             "spec": {"interactive": False,
                                      "cluster": {"server": "https://k:6443", "insecure-skip-tls-verify": False}}}
    source.invalidate()  # what a 401 does
    assert (await source.get()).token == "exec-token-2"


async def test_exec_credential_about_to_expire_is_fetched_again(tmp_path):
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).isoformat()
    path, log = plugin(tmp_path, EXPIRY=soon)
    source = KubeconfigSource([str(path)])
    assert (await source.get()).token == "exec-token-1"
    assert (await source.get()).token == "exec-token-2"  # within the renewal margin
    assert "cluster" not in runs(log)[0]["info"]["spec"]  # provideClusterInfo off


async def test_exec_plugin_client_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    path, _ = plugin(tmp_path, CERT=str(tmp_path / "c.pem"), KEY=str(tmp_path / "k.pem"))
    creds = await KubeconfigSource([str(path)]).get()
    assert (creds.cert_data, creds.key_data, creds.token) == (cert, key, None)
    assert isinstance(creds.ssl_context(), ssl.SSLContext)


@pytest.mark.parametrize(("env", "message"), [
    ({"FAIL": "1"}, "exited with status 3: no credentials for you"),
    ({"RAW": "not json"}, "printed no JSON ExecCredential"),
    ({"RAW": '{"kind": "Other"}'}, "kind must be ExecCredential"),
    ({"ANSWER_VERSION": "client.authentication.k8s.io/v1beta1"}, "answered apiVersion"),
    ({"RAW": '{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {}}'},
     "neither status.token nor status.clientCertificateData"),
    ({"EXPIRY": "tomorrow"}, "status.expirationTimestamp 'tomorrow' is not an RFC 3339 time"),
])
async def test_exec_plugin_failures_name_the_kubeconfig_entry(tmp_path, env, message):
    path, _ = plugin(tmp_path, **env)
    with pytest.raises(CredentialsError) as caught:
        await KubeconfigSource([str(path)]).get()
    assert "users[name=u].user.exec" in str(caught.value) and message in str(caught.value)


async def test_exec_command_that_does_not_exist(tmp_path):
    path = write_config(tmp_path / "config", users=user(exec={"apiVersion": "client.authentication.k8s.io/v1",
                                                              "command": "no-such-plugin-here"}))
    with pytest.raises(CredentialsError, match=r"exec.command 'no-such-plugin-here' could not be started"):
        await KubeconfigSource([str(path)]).get()


# -- in cluster -----------------------------------------------------------------------------------------------------

def service_account(tmp_path: Path, token: str = "sa-1") -> Path:
    directory = tmp_path / "sa"
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(self_signed(tmp_path)[0])
    (directory / "namespace").write_text("ops\n")
    return directory


async def test_in_cluster_reads_the_rotating_token_and_brackets_ipv6(tmp_path):
    directory = service_account(tmp_path)
    source = InClusterSource({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                             directory=str(directory), reread_seconds=0)
    first = await source.get()
    assert (first.server, first.token, first.namespace, first.ca_path) == \
        ("https://[fd00::1]:443", "sa-1", "ops", str(directory / "ca.crt"))
    assert first.expires is not None and first.expires > dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    (directory / "token").write_text("sa-2")  # the kubelet rotated it
    assert (await source.get()).token == "sa-2"
    held = InClusterSource({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                           directory=str(directory))
    assert (await held.get()).server == "https://10.0.0.1:443"
    (directory / "token").write_text("sa-3")
    assert (await held.get()).token == "sa-2"  # read again only after a minute


def test_without_kubeconfig_the_service_account_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    source = credential_source(None, env, service_account_dir=str(service_account(tmp_path)))
    assert isinstance(source, InClusterSource)


def test_in_cluster_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(CredentialsError, match=r"no kubeconfig \(\$KUBECONFIG is unset and ~/.kube/config does not "
                                               r"exist\) and not in a cluster \(KUBERNETES_SERVICE_HOST is unset\)"):
        credential_source(None, {})
    with pytest.raises(CredentialsError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both"):
        InClusterSource({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, directory=str(tmp_path))
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(CredentialsError, match="CA file .*ca.crt is missing"):
        InClusterSource(env, directory=str(tmp_path))
    directory = service_account(tmp_path)
    (directory / "token").write_text("")
    with pytest.raises(CredentialsError, match="the token file .*token is empty"):
        InClusterSource(env, directory=str(directory))


# -- errors ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "message"), [
    (dict(users=user(**{"auth-provider": {"name": "gcp"}})),
     r"users\[name=u\].user.auth-provider is not supported \(.*\): use an exec credential plugin"),
    (dict(users=user(**{"as": "admin"})), r"users\[name=u\].user.as \(impersonation\) is not supported"),
    (dict(current=None), "current-context is not set"),
    (dict(current="elsewhere"), "current-context 'elsewhere' names no entry of contexts \\(known: ctx\\)"),
    (dict(contexts=[{"name": "ctx", "context": {"cluster": "nope", "user": "u"}}]),
     r"contexts\[name=ctx\].context.cluster 'nope' names no entry of clusters \(known: c\)"),
    (dict(contexts=[{"name": "ctx", "context": {"user": "u"}}]), r"contexts\[name=ctx\].context.cluster is missing"),
    (dict(contexts=[{"name": "ctx", "context": {"cluster": "c", "user": "who"}}]),
     r"context.user 'who' names no entry of users \(known: u\)"),
    (dict(clusters=[{"name": "c", "cluster": {}}]), r"clusters\[name=c\].cluster.server is missing"),
    (dict(clusters=[{"name": "c", "cluster": {"server": "https://k", "certificate-authority": "gone.crt"}}]),
     r"clusters\[name=c\].cluster.certificate-authority: file .*gone.crt does not exist"),
    (dict(clusters=[{"name": "c", "cluster": {"server": "https://k", "certificate-authority-data": "%%%"}}]),
     r"certificate-authority-data is not valid base64"),
    (dict(users=user(**{"client-certificate-data": b64(b"x")})),
     r"users\[name=u\].user has client-certificate but no client-key"),
    (dict(users=user(exec={"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"})),
     r"exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported: use one of "
     r"client.authentication.k8s.io/v1, client.authentication.k8s.io/v1beta1"),
    (dict(users=user(exec={"apiVersion": "client.authentication.k8s.io/v1"})), r"exec.command is missing"),
    (dict(users=user(exec={"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                           "interactiveMode": "Always"})), "interactiveMode is Always: the operator has no terminal"),
    (dict(users=user(tokenFile="absent-token")), r"tokenFile: cannot read the token file .*absent-token"),
])
def test_kubeconfig_errors_name_the_field(tmp_path, config, message):
    path = write_config(tmp_path / "config", **config)
    with pytest.raises(CredentialsError, match=message) as caught:
        credential_source(str(path), {})
    assert str(path) in str(caught.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(CredentialsError, match="kubeconfig .*nowhere does not exist"):
        credential_source(str(tmp_path / "nowhere"), {})
    with pytest.raises(CredentialsError, match="none of these files exists"):
        credential_source(None, {"KUBECONFIG": str(tmp_path / "a") + os.pathsep + str(tmp_path / "b")})
    (tmp_path / "bad").write_text("clusters: [\n")
    with pytest.raises(CredentialsError, match="bad: not valid YAML"):
        credential_source(str(tmp_path / "bad"), {})
    (tmp_path / "list").write_text("- 1\n")
    with pytest.raises(CredentialsError, match="expected a mapping"):
        credential_source(str(tmp_path / "list"), {})


# -- the transport and kopf's login ---------------------------------------------------------------------------------

async def test_a_401_fetches_the_credentials_again_and_retries_once(tmp_path):
    """The API server has moved on to a rotated token: the transport re-reads the token file instead of failing."""
    accepted = {"Bearer old"}
    seen: list[str | None] = []

    async def namespace(request: web.Request) -> web.Response:
        nonlocal accepted
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") not in accepted:
            return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "ns"}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", namespace)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
    (tmp_path / "token").write_text("old")
    path = write_config(tmp_path / "config", clusters=[{"name": "c", "cluster": {"server": url}}],
                        users=user(tokenFile="token"))
    kube = KubeClient(ApiTransport(KubeconfigSource([str(path)])), timeout=5)  # re-read only after a minute
    try:
        assert (await kube.request("GET", "/api/v1/namespaces/ns"))["metadata"]["name"] == "ns"
        (tmp_path / "token").write_text("new")
        accepted = {"Bearer new"}  # the server moved on
        seen.clear()
        answer = await kube.request("GET", "/api/v1/namespaces/ns")
        assert answer["metadata"]["name"] == "ns" and seen == ["Bearer old", "Bearer new"]
        accepted.clear()
        seen.clear()
        with pytest.raises(Exception, match="401"):
            await kube.request("GET", "/api/v1/namespaces/ns")
        assert seen == ["Bearer new", "Bearer new"]  # one retry, not a loop
    finally:
        await kube.close()
        await runner.cleanup()


def test_connection_info_for_kopf():
    creds = Credentials(server="https://k", ca_data=b"-----BEGIN CERTIFICATE-----\n", token="t", namespace="ns",
                        expires=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    info = connection_info(creds)
    assert (info.server, info.scheme, info.token, info.ca_data, info.default_namespace) == \
        ("https://k", "Bearer", "t", creds.ca_data, "ns")
    assert info.expiration is None  # kopf would end every watch (and re-LIST) when it passed: 401 renews instead
    assert info.as_http_headers() == {"Authorization": "Bearer t"}
    basic = connection_info(Credentials(server="https://k", username="a", password="b"))
    assert (basic.username, basic.password, basic.token) == ("a", "b", None)
