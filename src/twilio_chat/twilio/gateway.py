"""The only module that talks to Twilio, through the official `twilio` SDK.

In sandbox mode the same SDK talks over real HTTP to the app's built-in emulator
(``TWILIO_API_BASE_URL``), so every code path is the real one.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from flask import Flask, current_app
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from twilio_chat.settings import Settings
from twilio_chat.telemetry.metrics import TWILIO_SECONDS
from twilio_chat.twilio.errors import describe_error

HTTP_TIMEOUT_SECONDS = 15
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
RETRYABLE_CODES = frozenset({20429, 20500, 20503})

# The SDK logs every request and response at INFO, about ten lines per call: noise in the app's
# logs and, formatted as JSON and scrubbed of secrets, a measurable cost on every send. Its
# warnings still come through.
SDK_LOG = logging.getLogger("twilio_chat.twilio_sdk")
SDK_LOG.setLevel(logging.WARNING)


class TwilioError(Exception):
    """Twilio refused or could not be reached; carries Twilio's code and HTTP status."""

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    @property
    def retryable(self) -> bool:
        """Tell whether trying again later may succeed (429, 5xx, no connection)."""
        if self.status is None:
            return True
        return self.status == 429 or self.status >= 500 or self.code in RETRYABLE_CODES

    @property
    def not_found(self) -> bool:
        """Tell whether Twilio said the resource does not exist."""
        return self.status == 404 or self.code == 20404


class MediaRefused(Exception):
    """A media URL the proxy will not fetch or pass on; `status` is the HTTP answer to give."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


MEDIA_TYPES = ("image/", "audio/", "video/", "application/pdf")
MEDIA_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class RemoteMessage:
    """A message as Twilio describes it."""

    sid: str
    account_sid: str | None
    messaging_service_sid: str | None
    from_: str | None
    to: str | None
    body: str
    status: str
    direction: str
    num_segments: int
    num_media: int
    error_code: int | None
    error_message: str | None
    date_created: datetime | None
    date_sent: datetime | None


@dataclass(frozen=True)
class RemoteAccount:
    """The Twilio account the credentials belong to."""

    sid: str
    friendly_name: str
    status: str  # active | suspended | closed
    type: str  # Trial | Full


@dataclass(frozen=True)
class RemoteNumber:
    """One of the account's phone numbers (an IncomingPhoneNumber) and its messaging webhooks."""

    sid: str
    phone_number: str
    sms_url: str
    sms_method: str
    status_callback: str


@dataclass(frozen=True)
class RemoteService:
    """A Messaging Service and where it sends inbound messages and status callbacks."""

    sid: str
    friendly_name: str
    inbound_request_url: str
    inbound_method: str
    status_callback: str
    use_inbound_webhook_on_number: bool


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _remote(m: Any) -> RemoteMessage:
    return RemoteMessage(
        sid=m.sid,
        account_sid=m.account_sid,
        messaging_service_sid=m.messaging_service_sid,
        from_=m.from_,
        to=m.to,
        body=m.body or "",
        status=str(m.status),
        direction=str(m.direction),
        num_segments=_int(m.num_segments) or 1,
        num_media=_int(m.num_media),
        error_code=int(m.error_code) if m.error_code not in (None, "") else None,
        error_message=m.error_message,
        date_created=m.date_created,
        date_sent=m.date_sent,
    )


def _error(exc: Exception) -> TwilioError:
    if isinstance(exc, TwilioRestException):
        text = _ANSI.sub("", exc.msg or "").strip() or describe_error(exc.code)
        return TwilioError(text, code=exc.code, status=exc.status)
    # Connection errors: say what kind without echoing URLs that might carry credentials.
    return TwilioError(f"could not reach Twilio ({type(exc).__name__})")


class TwilioGateway:
    """Send, fetch, list, redact and delete messages through the twilio SDK."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()
        # Checks and signs webhooks. The sandbox's auth token is derived (an HMAC) each time it
        # is asked for, and every webhook asked.
        self._validator = RequestValidator(settings.auth_token)

    @property
    def client(self) -> Client:
        """Return the SDK client, built on first use and pointed at the configured API base."""
        with self._lock:
            if self._client is None:
                http = TwilioHttpClient(timeout=HTTP_TIMEOUT_SECONDS, logger=SDK_LOG)
                if self.settings.sandbox and http.session is not None:
                    # The sandbox is this app, on our own address: no proxy or .netrc from the
                    # environment applies, and looking them up on every call costs time.
                    http.session.trust_env = False
                client = Client(
                    self.settings.account_sid, self.settings.auth_token, http_client=http
                )
                # TWILIO_EDGE/TWILIO_REGION would rewrite the host name: settings decide.
                client.edge = None
                client.region = None
                if self.settings.api_base_url:
                    client.api.base_url = self.settings.api_base_url
                    if self.settings.sandbox:
                        # The sandbox serves messaging.twilio.com's paths under /messaging.
                        client.messaging.base_url = f"{self.settings.api_base_url}/messaging"
                self._client = client
            return self._client

    def send(
        self,
        *,
        to: str,
        status_callback: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        body: str | None = None,
        media_urls: list[str] | None = None,
        content_sid: str | None = None,
    ) -> RemoteMessage:
        """Create a message at Twilio and return what Twilio answered."""
        kwargs: dict[str, Any] = {"to": to, "status_callback": status_callback}
        if messaging_service_sid:
            kwargs["messaging_service_sid"] = messaging_service_sid
        else:
            kwargs["from_"] = from_
        if body:
            kwargs["body"] = body
        if media_urls:
            kwargs["media_url"] = media_urls
        if content_sid:
            kwargs["content_sid"] = content_sid
        try:
            with TWILIO_SECONDS.labels("send").time():
                return _remote(self.client.messages.create(**kwargs))
        except Exception as exc:  # TwilioRestException, or requests' connection errors
            raise _error(exc) from None

    def fetch(self, sid: str) -> RemoteMessage:
        """Fetch one message from Twilio."""
        try:
            with TWILIO_SECONDS.labels("fetch").time():
                return _remote(self.client.messages(sid).fetch())
        except Exception as exc:
            raise _error(exc) from None

    def iter_messages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent: datetime | None = None,
        date_sent_before: datetime | None = None,
        date_sent_after: datetime | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> Iterator[RemoteMessage]:
        """Page through Twilio's message list, newest first."""
        kwargs: dict[str, Any] = {"limit": limit, "page_size": page_size}
        for key, value in (
            ("to", to),
            ("from_", from_),
            ("date_sent", date_sent),
            ("date_sent_before", date_sent_before),
            ("date_sent_after", date_sent_after),
        ):
            if value is not None:
                kwargs[key] = value
        try:
            for m in self.client.messages.stream(**kwargs):
                yield _remote(m)
        except Exception as exc:
            raise _error(exc) from None

    def redact(self, sid: str) -> RemoteMessage:
        """Erase a message's body at Twilio (update with Body="")."""
        try:
            with TWILIO_SECONDS.labels("redact").time():
                return _remote(self.client.messages(sid).update(body=""))
        except Exception as exc:
            raise _error(exc) from None

    def delete(self, sid: str) -> None:
        """Delete a message at Twilio."""
        try:
            with TWILIO_SECONDS.labels("delete").time():
                self.client.messages(sid).delete()
        except Exception as exc:
            raise _error(exc) from None

    def fetch_account(self) -> RemoteAccount:
        """Fetch the account the credentials belong to (proves they work)."""
        try:
            a = self.client.api.v2010.accounts(self.settings.account_sid).fetch()
        except Exception as exc:
            raise _error(exc) from None
        return RemoteAccount(
            sid=str(a.sid or ""),
            friendly_name=str(a.friendly_name or ""),
            status=str(a.status or ""),
            type=str(a.type or ""),
        )

    def find_number(self, phone_number: str) -> RemoteNumber | None:
        """Return the account's IncomingPhoneNumber for this E.164 number, or None."""
        try:
            # Twilio's PhoneNumber filter also matches partial numbers: keep the exact one.
            found = self.client.api.v2010.accounts(
                self.settings.account_sid
            ).incoming_phone_numbers.list(phone_number=phone_number, limit=50)
        except Exception as exc:
            raise _error(exc) from None
        for n in found:
            if n.phone_number == phone_number:
                return RemoteNumber(
                    sid=str(n.sid or ""),
                    phone_number=str(n.phone_number),
                    sms_url=str(n.sms_url or ""),
                    sms_method=str(n.sms_method or "POST").upper(),
                    status_callback=str(n.status_callback or ""),
                )
        return None

    def fetch_messaging_service(self, sid: str) -> RemoteService:
        """Fetch a Messaging Service (messaging.twilio.com/v1/Services/{sid})."""
        try:
            s = self.client.messaging.v1.services(sid).fetch()
        except Exception as exc:
            raise _error(exc) from None
        return RemoteService(
            sid=str(s.sid or ""),
            friendly_name=str(s.friendly_name or ""),
            inbound_request_url=str(s.inbound_request_url or ""),
            inbound_method=str(s.inbound_method or "POST").upper(),
            status_callback=str(s.status_callback or ""),
            use_inbound_webhook_on_number=bool(s.use_inbound_webhook_on_number),
        )

    def media_allowed(self, url: str) -> bool:
        """Tell whether a media URL is Twilio's (https, a Twilio host) or the sandbox's."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.username or parts.password:
            return False
        if parts.scheme == "https" and (
            host == "api.twilio.com" or host.endswith((".twilio.com", ".twiliocdn.com"))
        ):
            return True
        sandbox = self.settings.api_base_url if self.settings.sandbox else None
        return bool(sandbox) and url.startswith(f"{sandbox}/") and ".." not in parts.path

    def fetch_media(self, url: str) -> tuple[str, bytes]:
        """Fetch an MMS attachment with the account's credentials; only from Twilio's hosts."""
        if not self.media_allowed(url):
            raise MediaRefused(403, "only Twilio's media URLs are fetched")
        try:
            answer = requests.get(
                url,
                auth=(self.settings.account_sid, self.settings.auth_token),
                timeout=HTTP_TIMEOUT_SECONDS,
                stream=True,
                allow_redirects=False,
            )
            # Twilio answers a media URL with a redirect to a signed, credential-free CDN URL.
            hops = 0
            while answer.is_redirect and hops < 3:
                target = urljoin(url, answer.headers.get("Location", ""))
                answer.close()
                if not self.media_allowed(target) and not _is_signed_cdn(target):
                    raise MediaRefused(403, "the media redirect leaves Twilio")
                answer = requests.get(
                    target, timeout=HTTP_TIMEOUT_SECONDS, stream=True, allow_redirects=False
                )
                hops += 1
            with answer:
                if answer.status_code != 200:
                    raise MediaRefused(502, f"Twilio answered {answer.status_code} for the media")
                content_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
                if not content_type.startswith(MEDIA_TYPES):
                    raise MediaRefused(415, "only images, audio, video and PDF are shown")
                body = answer.raw.read(MEDIA_MAX_BYTES + 1, decode_content=True)
        except requests.RequestException:
            raise MediaRefused(502, "could not fetch the media from Twilio") from None
        if len(body) > MEDIA_MAX_BYTES:
            raise MediaRefused(413, "the media is larger than 10 MiB")
        return content_type, body

    def validate_signature(self, url: str, params: Any, signature: str) -> bool:
        """Check an X-Twilio-Signature over the public URL and the POST parameters.

        The URL exactly as Twilio called it is tried first (one HMAC, the usual case); only a
        mismatch goes on to the SDK's full check, which also tries the URL with and without
        its port, as Twilio may sign either.
        """
        validator = self._validator
        if isinstance(params, Mapping):
            params = _SignedParams.of(params)
        if hmac.compare_digest(str(validator.compute_signature(url, params)), signature):
            return True
        return bool(validator.validate(url, params, signature))

    def sign(self, url: str, params: dict[str, str]) -> str:
        """Compute the X-Twilio-Signature Twilio would send for this URL and form."""
        return str(self._validator.compute_signature(url, params))


class _SignedParams(dict[str, list[str]]):
    """POST parameters as the SDK's validator reads them: every value of each name, by `getall`.

    The validator asks each parameter for `getall` first; a werkzeug MultiDict has none, so it
    would raise and catch an AttributeError for every parameter of every webhook.
    """

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> _SignedParams:
        """Collect every value of each parameter (a MultiDict's repeats included)."""
        lists = getattr(params, "lists", None)
        if callable(lists):
            return cls(lists())  # a form's values are text already
        return cls((name, [str(value)]) for name, value in params.items())

    def getall(self, name: str) -> list[str]:
        """Return every value of one parameter."""
        return self[name]


def _is_signed_cdn(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (
        host.endswith(".twiliocdn.com") or host.endswith(".amazonaws.com")
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Attach a gateway (no client is built until first use)."""
    app.extensions["twilio"] = TwilioGateway(settings)


def get_gateway(app: Flask | None = None) -> TwilioGateway:
    """Return the app's Twilio gateway."""
    gateway: TwilioGateway = (app or current_app).extensions["twilio"]
    return gateway
