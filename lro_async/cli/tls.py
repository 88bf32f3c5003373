"""The ``--tls-*`` files, checked before they reach gRPC (which says only "Failed to bind").

Each file is read and loaded with the standard library's ``ssl`` first, so that a missing
file, a file that is not PEM, a key that does not match its certificate or a CA file
without certificates is one line naming the flag and the file, exit 2.
"""

from __future__ import annotations

import ssl

from .exits import EXIT_USAGE, CommandError

__all__ = ["PemFiles", "check_files", "read_pem"]


def read_pem(path: str, flag: str) -> bytes:
    """The contents of a PEM file named on the command line.

    :raises CommandError: (bad usage) if it cannot be read or holds no PEM block.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise CommandError(f"{flag} {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if b"-----BEGIN " not in data:
        raise CommandError(f"{flag} {path}: not a PEM file", EXIT_USAGE)
    return data


def _no_password() -> bytes:
    # Called only for an encrypted key: refuse rather than prompt on the terminal.
    raise CommandError("", EXIT_USAGE)


PemFiles = tuple[bytes | None, bytes | None, bytes | None]


def check_files(cert: str | None, key: str | None, ca: str | None, *, server: bool) -> PemFiles:
    """Read and check ``--tls-cert``, ``--tls-key`` and ``--tls-ca``: (cert, key, ca) bytes.

    :raises CommandError: (bad usage) naming the flag, the file and what is wrong with it.
    """
    if (cert is None) != (key is None):
        if server:
            raise CommandError("TLS needs both --tls-cert and --tls-key", EXIT_USAGE)
        raise CommandError("a client certificate needs both --tls-cert and --tls-key", EXIT_USAGE)
    if server and ca is not None and cert is None:
        raise CommandError("--tls-ca (mutual TLS) needs --tls-cert and --tls-key", EXIT_USAGE)
    cert_pem = read_pem(cert, "--tls-cert") if cert is not None else None
    key_pem = read_pem(key, "--tls-key") if key is not None else None
    ca_pem = read_pem(ca, "--tls-ca") if ca is not None else None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None and key is not None:
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except CommandError:
            raise CommandError(
                f"--tls-key {key}: the key is encrypted; give an unencrypted PEM key", EXIT_USAGE
            ) from None
        except ssl.SSLError as exc:
            raise CommandError(_cert_problem(cert, key, exc), EXIT_USAGE) from exc
        except OSError as exc:
            raise CommandError(f"--tls-cert {cert}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise CommandError(
                f"--tls-ca {ca}: not PEM CA certificates ({exc.reason or exc})"
                if isinstance(exc, ssl.SSLError)
                else f"--tls-ca {ca}: {exc.strerror or exc}",
                EXIT_USAGE,
            ) from exc
    return cert_pem, key_pem, ca_pem


def _cert_problem(cert: str, key: str, exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"--tls-key {key} is not the private key of --tls-cert {cert}"
    if exc.reason in ("NO_START_LINE", "BAD_BASE64_DECODE", "NO_CERTIFICATE_OR_CRL_FOUND"):
        return f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and key ({exc.reason})"
    return f"cannot use --tls-cert {cert} with --tls-key {key}: {exc.reason or exc}"
