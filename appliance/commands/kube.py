"""`appliance kubeconfig`: mint a kubeconfig for LB hosts from the appliance's
ServiceAccount (deploy/rbac.yaml).

Run it where you have an admin kubeconfig. The token comes from a TokenRequest (bound,
expiring after `--duration`) or, with `--secret`, from the long-lived token Secret that
deploy/rbac.yaml creates. The result names the same server and CA as the admin
kubeconfig, carries only that token, and is written with mode 0600.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # aiohttp costs a tenth of a second: only `appliance kubeconfig` needs it
    from appliance.kube.api import Connection, KubeApi

EXIT_FAILED, EXIT_USAGE = 1, 2
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    """Add `kubeconfig` to the `appliance` command's subparsers."""
    p = subparsers.add_parser(
        "kubeconfig", help="mint a kubeconfig for LB hosts from the appliance ServiceAccount"
    )
    p.add_argument(
        "--admin-kubeconfig",
        default=os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")),
        help="a kubeconfig allowed to create tokens (default: $KUBECONFIG or ~/.kube/config)",
    )
    p.add_argument("--context", help="its context (default: the current one)")
    p.add_argument("--namespace", "-n", default="appliance-system")
    p.add_argument("--service-account", default="appliance")
    p.add_argument(
        "--duration", default="8760h", help="token lifetime: 3600, 90m, 24h, 365d (TokenRequest)"
    )
    p.add_argument("--secret", help="read the token of this long-lived token Secret instead")
    p.add_argument("--server", help="the API server URL LB hosts use (default: the admin's)")
    p.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_kubeconfig)


def parse_duration(text: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if not m or int(m.group(1)) == 0:
        raise CommandError(f"--duration {text!r}: expected like 3600, 90m, 24h or 365d", EXIT_USAGE)
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 600:
        raise CommandError(f"--duration {text!r}: the API server's minimum is 10m", EXIT_USAGE)
    return seconds


def ca_pem(conn: Connection) -> str | None:
    if conn.ca_data:
        return conn.ca_data
    if conn.ca_file:
        try:
            return Path(conn.ca_file).read_text()
        except OSError as e:
            raise CommandError(f"cannot read the CA {conn.ca_file}: {e.strerror or e}") from e
    return None


def render_kubeconfig(server: str, ca: str | None, token: str, namespace: str, user: str) -> str:
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "appliance",
                "context": {"cluster": "cluster", "user": user, "namespace": namespace},
            }
        ],
        "current-context": "appliance",
    }
    text: str = yaml.safe_dump(doc, sort_keys=False)
    return text


async def mint_token(
    api: KubeApi, namespace: str, account: str, seconds: int, secret: str | None
) -> tuple[str, str | None]:
    """(token, CA PEM from the Secret if any)."""
    from appliance.kube.api import ApiError  # deferred: aiohttp, as at the top

    try:
        if secret:
            s = await api.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}")
            data = s.get("data") or {}
            if "token" not in data:
                raise CommandError(
                    f"secret {namespace}/{secret} has no token (yet): is it of type "
                    "kubernetes.io/service-account-token for "
                    f"{account}?"
                )
            token = base64.b64decode(data["token"]).decode()
            ca = base64.b64decode(data["ca.crt"]).decode() if data.get("ca.crt") else None
            return token, ca
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        answer = await api.request("POST", path, body)
    except ApiError as e:
        raise CommandError(f"cannot get a token for {namespace}/{account}: {e}") from e
    minted = (answer.get("status") or {}).get("token")
    if not isinstance(minted, str) or not minted:
        raise CommandError("the API server answered the TokenRequest without a token")
    return minted, None


async def _run(args: argparse.Namespace) -> str:
    # Deferred: aiohttp, as at the top.
    from appliance.kube.api import KubeApi, KubeConfigError, from_kubeconfig

    try:
        conn = from_kubeconfig(args.admin_kubeconfig, args.context)
    except KubeConfigError as e:
        raise CommandError(str(e), EXIT_USAGE) from e
    seconds = parse_duration(args.duration)
    async with KubeApi(conn) as api:
        token, secret_ca = await mint_token(
            api, args.namespace, args.service_account, seconds, args.secret
        )
    ca = ca_pem(conn) or secret_ca
    user = f"system:serviceaccount:{args.namespace}:{args.service_account}"
    return render_kubeconfig(args.server or conn.server, ca, token, args.namespace, user)


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    try:
        text = asyncio.run(_run(args))
        if args.output == "-":
            sys.stdout.write(text)
        else:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(args.output, 0o600)  # an existing file keeps its mode on open
    except CommandError as e:
        print(f"appliance kubeconfig: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"appliance kubeconfig: {args.output}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILED
    return 0
