"""The `web` section: the status page's listen address and basic auth."""

from __future__ import annotations

import os
import stat

from appliance.config.checker import Checker, found, join_key, resolve
from appliance.config.types import WebConfig
from appliance.config.values import parse_listen

MAX_PASSWORD_FILE = 4096


def _read_password(c: Checker, path: str, file_text: str) -> str | None:
    where = resolve(c, file_text)
    try:
        st = os.stat(where)
        if not stat.S_ISREG(st.st_mode):
            c.err(path, f"{where!r} is not a regular file")
            return None
        if st.st_size > MAX_PASSWORD_FILE:
            c.err(path, f"{where!r} is too large for a password file")
            return None
        with open(where, "rb") as f:
            raw = f.read(MAX_PASSWORD_FILE + 1)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        c.err(path, f"cannot read {where!r}: {reason}")
        return None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        c.err(path, f"{where!r} is not UTF-8 text")
        return None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password or "\n" in password:
        c.err(path, f"{where!r} must hold the password on one line")
        return None
    return password


def read_web(c: Checker, value: object) -> WebConfig:
    path = "web"
    d = c.mapping(value, path, ("listen", "basic_auth"))
    listen = WebConfig().listen
    if "listen" in d:
        v = d["listen"]
        if not isinstance(v, str):
            c.err(join_key(path, "listen"), f"must be host:port, got {found(v)}")
        else:
            hp, problem = parse_listen(v)
            if hp is None:
                c.err(join_key(path, "listen"), problem or "invalid")
            else:
                listen = hp
    ap = join_key(path, "basic_auth")
    a = c.mapping(d.get("basic_auth"), ap, ("username", "password", "password_file"))
    username = c.string(
        a,
        "username",
        ap,
        None,
        check=lambda s: "must not contain ':' (HTTP basic auth splits on it)" if ":" in s else None,
    )
    password = c.string(a, "password", ap, None)
    password_file = c.string(a, "password_file", ap, None)
    if "password" in a and "password_file" in a:
        c.err(ap, "set password or password_file, not both")
        password = None
    elif password_file is not None:
        password = _read_password(c, join_key(ap, "password_file"), password_file)
    has_pass = "password" in a or "password_file" in a
    if "username" in a and not has_pass:
        c.err(ap, "username needs password or password_file")
    elif has_pass and "username" not in a:
        c.err(ap, "password needs username")
    if username is None or password is None:
        username = password = None
    return WebConfig(listen=listen, username=username, password=password)
