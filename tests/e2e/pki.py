"""A throw-away federation PKI for tests: a CA, the aggregator's certificate, one per site.

Made with the same openssl commands docs/deployment.md gives (EC P-256 keys: quick to make).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def pair(self, name: str) -> tuple[str, str]:
        return str(self.cert(name)), str(self.key(name))


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make test certificates")
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"openssl {' '.join(args)} failed: {done.stderr}"


def make_ca(folder: Path, name: str = "ca") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        *("req", "-x509", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2"),
        *("-subj", f"/CN=fedloom test {name}", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        cwd=folder,
    )
    return folder / f"{name}.pem"


def sign(folder: Path, name: str, extensions: str, ca: str = "ca", common_name: str | None = None) -> None:
    """``name``.key and ``name``.pem signed by ``ca`` (CN = ``common_name`` or ``name``)."""
    (folder / f"{name}.ext").write_text(
        extensions + "\nbasicConstraints = critical, CA:FALSE\nsubjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    _openssl(
        "req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name or name}", cwd=folder
    )
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial"),
        *("-out", f"{name}.pem", "-days", "2", "-sha256", "-extfile", f"{name}.ext"),
        cwd=folder,
    )


def server_cert(folder: Path, name: str = "server") -> None:
    sign(folder, name, "subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth")


def site_cert(folder: Path, site: str, ca: str = "ca", file_name: str | None = None) -> None:
    extensions = f"subjectAltName = DNS:{site}\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth"
    sign(folder, file_name or site, extensions, ca=ca, common_name=site)


def make_pki(folder: Path, sites: tuple[str, ...]) -> Pki:
    ca = make_ca(folder)
    server_cert(folder)
    for site in sites:
        site_cert(folder, site)
    return Pki(folder, ca)
