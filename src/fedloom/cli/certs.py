"""``fedloom certs``: a private CA and the certificates a mutual-TLS federation needs.

    fedloom certs ca     --dir pki                                  # ca.pem, ca.key
    fedloom certs server --dir pki --host agg.example.org --host 10.0.0.5   # server.pem, server.key
    fedloom certs site   --dir pki site-a site-b                    # site-a.pem, site-a.key, ...

It runs the ``openssl`` command (the same steps docs/deployment.md spells out), so
fedloom needs no cryptography library: the files are plain PEM, EC P-256 keys, readable
by any TLS stack. A site certificate carries the site's name as subject CN and DNS
subjectAltName, which is what the aggregator binds to the agent's ``--name``; the
server certificate names every ``--host`` agents put in ``--server``. Keys are written
with mode 0600; an existing file is never replaced (``--force`` to do so).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fedloom.cli.output import print_help
from fedloom.core.errors import ConfigError, FedloomError

SITE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
_LEAF = "basicConstraints = critical, CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs ca``, ``certs server`` and ``certs site`` to the ``fedloom`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", required=True, metavar="DIR", help="where the CA and the certificates are kept")
    common.add_argument("--days", type=int, metavar="N", help="validity in days (CA: 3650, others: 825)")
    common.add_argument("--force", action="store_true", help="replace files that exist")
    parser = subparsers.add_parser(
        "certs",
        help="make a private CA, the aggregator's certificate and one certificate per site (mutual TLS)",
        description="Make the PEM files of a mutual-TLS federation with the openssl command.",
    )
    parser.set_defaults(func=lambda _args: print_help(parser))
    actions = parser.add_subparsers(dest="certs_action", metavar="ACTION")
    ca = actions.add_parser("ca", parents=[common], help="a new CA: ca.pem (give to everyone), ca.key (keep offline)")
    ca.add_argument("--name", default="fedloom private CA", help="the CA's subject CN")
    ca.set_defaults(func=run_ca)
    server = actions.add_parser("server", parents=[common], help="the aggregator's certificate, signed by the CA")
    server.add_argument("--host", action="append", required=True, help="a DNS name or IP agents connect to; repeat")
    server.add_argument("--name", default="server", help="file name stem (default: server)")
    server.set_defaults(func=run_server)
    site = actions.add_parser("site", parents=[common], help="one client certificate per site, signed by the CA")
    site.add_argument("names", nargs="+", metavar="NAME", help="the site's agent name (its fedloom agent --name)")
    site.set_defaults(func=run_site)


def run_ca(args: argparse.Namespace) -> int:
    folder = _folder(args.dir)
    _free(folder, ["ca.pem", "ca.key"], args.force)
    _openssl(
        *("req", "-x509", *_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(args.days or 3650)),
        *("-subj", f"/CN={_subject(args.name)}", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign", "-addext", "subjectKeyIdentifier=hash"),
        cwd=folder,
    )
    print(f"CA: {folder / 'ca.pem'} (give it to the aggregator and every site); key: {folder / 'ca.key'} (keep safe)")
    return 0


def run_server(args: argparse.Namespace) -> int:
    folder = _folder(args.dir, need_ca=True)
    names = ", ".join(_alt_name(host) for host in args.host)
    _sign(folder, args.name, args.host[0], f"subjectAltName = {names}\nextendedKeyUsage = serverAuth\n", args)
    print(f"server: {folder / (args.name + '.pem')} and {folder / (args.name + '.key')} for {names}")
    return 0


def run_site(args: argparse.Namespace) -> int:
    folder = _folder(args.dir, need_ca=True)
    for name in args.names:
        if not SITE_NAME.fullmatch(name):
            raise ConfigError(f"site name {name!r} must be 1-64 characters of A-Z a-z 0-9 . _ - (the agent's --name)")
    for name in args.names:
        usage = f"subjectAltName = DNS:{name}\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n"
        _sign(folder, name, name, usage, args)
        print(f"site {name}: {folder / (name + '.pem')} and {folder / (name + '.key')} (give both to that site only)")
    return 0


# --------------------------------------------------------------------- pieces


def _folder(path: str, need_ca: bool = False) -> Path:
    folder = Path(path)
    if need_ca and not ((folder / "ca.pem").is_file() and (folder / "ca.key").is_file()):
        raise ConfigError(f"no CA in {str(folder)!r}: make it first with `fedloom certs ca --dir {path}`")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"--dir {path!r} cannot be created: {exc}") from None
    return folder


def _free(folder: Path, files: Sequence[str], force: bool) -> None:
    taken = [name for name in files if (folder / name).exists()]
    if taken and not force:
        raise ConfigError(f"{', '.join(taken)} already exist(s) in {str(folder)!r}: pass --force to replace")


def _subject(name: str) -> str:
    if not name or any(c in name for c in "/=\\\n"):
        raise ConfigError(f"the name {name!r} must be non-empty and hold no '/', '=', '\\\\' or newline")
    return name


def _alt_name(host: str) -> str:
    try:
        return f"IP:{ipaddress.ip_address(host)}"
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})", host):
            raise ConfigError(f"--host {host!r} is neither an IP address nor a DNS name") from None
        return f"DNS:{host}"


def _sign(folder: Path, stem: str, common_name: str, extensions: str, args: argparse.Namespace) -> None:
    """``stem``.key and ``stem``.pem, signed by the CA in ``folder``; the request never touches the disk there."""
    _free(folder, [f"{stem}.pem", f"{stem}.key"], args.force)
    with tempfile.TemporaryDirectory(prefix="fedloom-certs-") as scratch:
        work = Path(scratch)
        (work / "ext").write_text(extensions + _LEAF)
        key = str((folder / f"{stem}.key").resolve())
        _openssl("req", *_KEY, "-keyout", key, "-out", "csr", "-subj", f"/CN={_subject(common_name)}", cwd=work)
        _openssl(
            *("x509", "-req", "-in", "csr", "-CA", str((folder / "ca.pem").resolve())),
            *("-CAkey", str((folder / "ca.key").resolve()), "-CAcreateserial", "-CAserial", "serial"),
            *("-out", str((folder / f"{stem}.pem").resolve()), "-days", str(args.days or 825), "-sha256"),
            *("-extfile", "ext"),
            cwd=work,
        )


def _openssl(*arguments: str, cwd: Path) -> None:
    """Run ``openssl ARGUMENTS`` with a private umask (keys are born 0600); its error becomes ours."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError(
            "fedloom certs needs the openssl command (e.g. apt install openssl); or make the files with the"
            " openssl commands in docs/deployment.md on a machine that has it"
        )
    done = subprocess.run(  # noqa: S603 - a fixed program with our own arguments
        [openssl, *arguments], cwd=cwd, capture_output=True, text=True, check=False, umask=0o077
    )
    if done.returncode != 0:
        raise FedloomError(f"openssl {arguments[0]} failed: {done.stderr.strip()[-500:]}")
