"""Turns hub, HTTP and disk failures into DownloadFailed / DiskFull errors that name the URL, the
cause and the fix."""

from __future__ import annotations

import errno
from typing import Any
from urllib.parse import urlsplit

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from engine.errors import DiskFull, DownloadFailed, IngotError

TOKEN_HINT = (
    "set HF_TOKEN to a token from https://huggingface.co/settings/tokens "
    "(or run `hf auth login`, formerly `huggingface-cli login`)"
)
NETWORK_HINT = (
    "Check that this machine is online, that a proxy is configured if you need one "
    "(HTTPS_PROXY / NO_PROXY), and that HF_ENDPOINT points at a reachable hub ({endpoint}). "
    "The download resumes where it stopped."
)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: network hiccups, timeouts, truncated bodies, 429 and 5xx."""
    if isinstance(exc, OfflineModeIsEnabled | httpx2.ProxyError | httpx2.UnsupportedProtocol):
        return False
    if isinstance(exc, httpx2.ConnectError):
        # Refused connections and unknown hosts do not heal in seconds; resets and TLS hiccups may.
        text = str(exc).lower()
        return not any(s in text for s in ("refused", "name or service", "nodename", "resolution"))
    if isinstance(exc, httpx2.TransportError | TruncatedBody):
        return True
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return False


class TruncatedBody(Exception):
    """The server closed the body before all advertised bytes arrived."""


def describe(
    exc: BaseException,
    *,
    url: str,
    repo: str,
    revision: str,
    endpoint: str,
    path: str | None = None,
) -> IngotError:
    """The user-facing error for `exc`, raised while fetching `url` (of `path`, if a file)."""
    if isinstance(exc, IngotError):
        return exc
    what = f"{path} of {repo}" if path else repo
    data: dict[str, Any] = {"url": url, "repo": repo, "revision": revision}
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"The disk filled up while writing {what}: {exc.strerror}.",
            hint="Free some space, or move the model cache to a larger disk with "
            "`ingot cache cd <folder>`; the download resumes where it stopped.",
            **data,
        )
    if isinstance(exc, HfHubHTTPError):
        return _describe_http(exc, what=what, url=url, repo=repo, revision=revision, data=data)
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadFailed(
            f"Cannot download {what} from {url}: HF_HUB_OFFLINE is set, so huggingface_hub "
            "refuses network access.",
            hint="Unset HF_HUB_OFFLINE (or set it to 0) to allow downloads.",
            **data,
        )
    if isinstance(exc, HFValidationError):
        return DownloadFailed(
            f"'{repo}' is not a valid Hugging Face model id: {exc}",
            hint="Use the form `namespace/name`, as shown on https://huggingface.co.",
            **data,
        )
    if isinstance(exc, httpx2.HTTPError | httpx2.InvalidURL | TruncatedBody):
        return _describe_transport(exc, what=what, url=url, endpoint=endpoint, data=data)
    if isinstance(exc, OSError):
        return DownloadFailed(
            f"Cannot write {exc.filename or what}: {exc.strerror or exc}.",
            hint="Check that the model cache folder is writable, or move it with "
            "`ingot cache cd <folder>`.",
            **data,
        )
    if isinstance(exc, ValueError | KeyError | TypeError):
        # A captive portal or a misconfigured mirror answers 200 with something that is not the hub API.
        return DownloadFailed(
            f"{urlsplit(url).netloc} did not answer like a Hugging Face hub for {url} "
            f"({type(exc).__name__}: {exc}).",
            hint="Check HF_ENDPOINT and your proxy: something between you and the hub answers "
            "in its place (a captive portal or login page?).",
            **data,
        )
    return DownloadFailed(f"Downloading {what} from {url} failed: {exc}", **data)


def _describe_http(
    exc: HfHubHTTPError,
    *,
    what: str,
    url: str,
    repo: str,
    revision: str,
    data: dict[str, Any],
) -> DownloadFailed:
    status = exc.response.status_code
    url = str(exc.response.url) or url
    data = {**data, "url": url, "status": status}
    server = f" The hub says: {exc.server_message.strip()}" if exc.server_message else ""
    page = f"https://huggingface.co/{repo}"
    authenticated = "authorization" in exc.response.request.headers
    if isinstance(exc, GatedRepoError):
        return DownloadFailed(
            f"{repo} is a gated model and the hub refused {url} (HTTP {status}): "
            f"{'your token has no access to it' if authenticated else 'no token was sent'}."
            f"{server}",
            hint=f"Accept the license at {page} with your account, then {TOKEN_HINT}, and retry.",
            **data,
        )
    if isinstance(exc, RevisionNotFoundError):
        return DownloadFailed(
            f"Revision '{revision}' of {repo} does not exist ({url}, HTTP {status}).{server}",
            hint=f"Check the revision (a branch, tag or commit listed at {page}/tree/main) "
            "in the catalog entry or registration.",
            **data,
        )
    if isinstance(exc, RemoteEntryNotFoundError):
        return DownloadFailed(
            f"{what} is missing at revision '{revision}' ({url}, HTTP {status}).{server}",
            hint="The repository changed since the catalog entry was written: check the model id, "
            "revision and subfolder.",
            **data,
        )
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadFailed(
            f"Model repository {repo} was not found ({url}, HTTP {status}).{server}",
            hint=f"Check the model id (it should open at {page}). If the repository is private "
            f"or gated, {TOKEN_HINT}.",
            **data,
        )
    if status in (401, 403):
        return DownloadFailed(
            f"The hub refused access to {url} (HTTP {status}).{server}",
            hint=f"If {repo} is private or gated, accept its terms at {page} and {TOKEN_HINT}; "
            "if you already did, check that the token has read access.",
            **data,
        )
    if status == 429:
        return DownloadFailed(
            f"The hub is rate-limiting downloads from {url} (HTTP 429).{server}",
            hint=f"Wait a few minutes and retry; signed-in downloads get higher limits ({TOKEN_HINT}).",
            **data,
        )
    if status >= 500:
        return DownloadFailed(
            f"The hub failed to serve {url} (HTTP {status}).{server}",
            hint="The hub (or the mirror in HF_ENDPOINT) is having trouble: retry later; "
            "the download resumes where it stopped.",
            **data,
        )
    return DownloadFailed(
        f"The hub answered HTTP {status} for {url}.{server}",
        hint="Check the model id, revision and HF_ENDPOINT.",
        **data,
    )


def _describe_transport(
    exc: BaseException, *, what: str, url: str, endpoint: str, data: dict[str, Any]
) -> DownloadFailed:
    host = urlsplit(url).netloc
    cause = (str(exc) or type(exc).__name__).rstrip(".")
    low = cause.lower()
    hint = NETWORK_HINT.format(endpoint=endpoint)
    if isinstance(exc, TruncatedBody):
        msg = (
            f"The connection to {host} kept dropping while downloading {what} from {url}: {cause}."
        )
    elif isinstance(exc, httpx2.ProxyError):
        msg = f"The proxy failed to reach {url}: {cause}."
        hint = "Check HTTPS_PROXY / HTTP_PROXY / NO_PROXY (and the proxy's credentials)."
    elif isinstance(exc, httpx2.TimeoutException):
        msg = f"Timed out talking to {host} while downloading {what} from {url}."
        hint += " On a slow link, raise HF_HUB_DOWNLOAD_TIMEOUT (seconds)."
    elif "certificate" in low or "ssl" in low or "tls" in low:
        msg = f"The TLS connection to {host} failed for {url}: {cause}."
        hint = (
            "A proxy or firewall may be intercepting TLS: point SSL_CERT_FILE at your "
            "organisation's CA bundle, or check the system clock."
        )
    elif any(s in low for s in ("name or service", "nodename", "resolution", "getaddrinfo")):
        msg = f"Cannot resolve the host {host} for {url}: {cause}."
    elif "refused" in low:
        msg = f"Connection refused by {host} for {url}: nothing is listening there."
    elif isinstance(exc, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
        msg = f"Cannot download from {url}: {cause}."
        hint = "HF_ENDPOINT must be an http(s) URL such as https://huggingface.co."
    else:
        msg = f"The connection to {host} failed while downloading {what} from {url}: {cause}."
    return DownloadFailed(msg, hint=hint, **data)
