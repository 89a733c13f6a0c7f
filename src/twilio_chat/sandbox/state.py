"""The sandbox's Messages resource: state, Twilio's shapes and errors, and status callbacks.

Delivery rule (documented in docs/operations.md): a recipient whose number ends in 0000 or 0003
gets ``undelivered`` with 30003; one ending in 0004-0008 gets ``undelivered`` with 3000N.
Every other number goes ``queued`` → ``sent`` → ``delivered``.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import phonenumbers
import requests
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from twilio_chat.errors import N_, InvalidInput
from twilio_chat.sandbox.store import (
    SandboxFault,
    SandboxMessage,
    SandboxOptOut,
    SandboxStore,
    utcnow,
)
from twilio_chat.settings import Settings, is_e164
from twilio_chat.twilio.gateway import TwilioGateway
from twilio_chat.twilio.keywords import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS
from twilio_chat.twilio.segments import count_segments

log = logging.getLogger(__name__)
API_VERSION = "2010-04-01"
SANDBOX_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # when the sandbox's account and number "began"
FAILING_SUFFIXES = {
    "0000": 30003,
    "0003": 30003,
    "0004": 30004,
    "0005": 30005,
    "0006": 30006,
    "0007": 30007,
    "0008": 30008,
}
ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


class SandboxError(Exception):
    """An error the sandbox answers in Twilio's JSON shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """Return Twilio's error body."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def rfc2822(value: datetime | None) -> str | None:
    """Format a timestamp the way Twilio does."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def message_uri(account_sid: str, sid: str) -> str:
    """Return a message's URI relative to the API root."""
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"


def to_json(m: SandboxMessage) -> dict[str, Any]:
    """Render a sandbox message as Twilio's Message JSON."""
    uri = message_uri(m.account_sid, m.sid)
    return {
        "account_sid": m.account_sid,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": rfc2822(m.date_created),
        "date_sent": rfc2822(m.date_sent),
        "date_updated": rfc2822(m.date_updated),
        "direction": m.direction,
        "error_code": m.error_code,
        "error_message": m.error_message,
        "from": m.from_number,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": str(len(m.media_urls or [])),
        "num_segments": str(m.num_segments),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": m.to_number,
        "uri": uri,
    }


def new_sid(prefix: str) -> str:
    """Return a fresh Twilio-style SID."""
    return prefix + uuid.uuid4().hex


FAULT_TEXTS = {
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def _take_fault(session: Session) -> SandboxError | None:
    """Use up one injected fault, oldest first, and return the error it makes; None if none."""
    fault = session.scalar(
        select(SandboxFault).where(SandboxFault.remaining > 0).order_by(SandboxFault.id).limit(1)
    )
    if fault is None:
        return None
    fault.remaining -= 1
    code, text = FAULT_TEXTS.get(fault.status_code, (fault.error_code or 20001, "Injected error"))
    return SandboxError(fault.status_code, fault.error_code or code, text)


Steps = list[tuple[str, int | None]]  # status callbacks still to fire: (status, error code)
_HTTP: tuple[int, requests.Session] | None = None  # this process's, for status callbacks
_HTTP_LOCK = threading.Lock()


def _callback_http() -> requests.Session:
    """Return this process's HTTP session for status callbacks, made on first use.

    Callbacks go straight to the app, as Twilio's do: no proxy or .netrc from the environment,
    no redirect followed. One session keeps its connections to the app alive between
    callbacks, as Twilio's servers do; a forked process makes its own.
    """
    global _HTTP
    with _HTTP_LOCK:
        if _HTTP is None or _HTTP[0] != os.getpid():
            http = requests.Session()
            http.trust_env = False
            _HTTP = (os.getpid(), http)
        return _HTTP[1]


@dataclass
class Sandbox:
    """The emulator's operations, over its own store."""

    store: SandboxStore
    settings: Settings
    gateway: TwilioGateway

    # REST resource --------------------------------------------------------------------
    def create(self, form: Mapping[str, str], media_urls: list[str]) -> dict[str, Any]:
        """Create an outbound message as Twilio does, then fire its status callbacks."""
        received = utcnow()  # date_created: when the call came in, not when the lock was free
        to = (form.get("To") or "").strip()
        from_ = (form.get("From") or "").strip() or None
        service = (form.get("MessagingServiceSid") or "").strip() or None
        body = form.get("Body") or ""
        content_sid = (form.get("ContentSid") or "").strip() or None
        callback = (form.get("StatusCallback") or "").strip() or None
        if not to:
            raise SandboxError(400, 21604, "A 'To' phone number is required.")
        if not is_e164(to):
            raise SandboxError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service:
            raise SandboxError(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls and not content_sid:
            raise SandboxError(400, 21602, "Message body is required.")
        if len(body) > 1600:
            raise SandboxError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        # One write transaction: an injected fault is used up (and committed) or the message
        # is stored, never both.
        with self.store.session() as session:
            refusal = _take_fault(session)
            if refusal is None:
                senders = [s for s in (from_, service) if s]
                opted_out = session.scalar(
                    select(SandboxOptOut.id)
                    .where(SandboxOptOut.number == to, SandboxOptOut.sender.in_(senders))
                    .limit(1)
                )
                if opted_out is not None:
                    raise SandboxError(400, 21610, "Attempt to send to unsubscribed recipient")
                message = SandboxMessage(
                    sid=new_sid("MM" if media_urls else "SM"),
                    account_sid=self.settings.account_sid,
                    messaging_service_sid=service,
                    from_number=from_ or self.settings.default_from,
                    to_number=to,
                    body=body,
                    media_urls=media_urls,
                    status="accepted" if service and not from_ else "queued",
                    direction="outbound-api",
                    num_segments=max(count_segments(body).segments, 1),
                    status_callback=callback,
                    content_sid=content_sid,
                    date_created=received,
                    date_updated=received,
                )
                session.add(message)
                session.flush()
                answer = to_json(message)
        if refusal is not None:
            raise refusal
        self._start_callbacks(message.sid, callback, to, answer["status"])
        return answer

    def inject_fault(self, status_code: int, count: int = 1, error_code: int | None = None) -> None:
        """Make the sandbox answer its next `count` create calls with this HTTP status and code."""
        if status_code not in (400, 429, 500, 503):
            raise InvalidInput("status must be 400, 429, 500 or 503", field="Status")
        if status_code == 400 and not error_code:
            raise InvalidInput("a 400 fault needs a Twilio error code", field="Code")
        if not 1 <= count <= 1000:
            raise InvalidInput("count must be between 1 and 1000", field="Count")
        with self.store.session() as session:
            session.add(
                SandboxFault(status_code=status_code, error_code=error_code, remaining=count)
            )

    def fetch(self, sid: str) -> dict[str, Any]:
        """Return one message."""
        with self.store.read() as session:
            return to_json(self._get(session, sid))

    def update(self, sid: str, form: Mapping[str, str]) -> dict[str, Any]:
        """Redact (Body="") or cancel (Status=canceled) a message."""
        with self.store.session() as session:
            message = self._get(session, sid)
            if "Body" in form:
                if form["Body"] != "":
                    raise SandboxError(
                        400, 20001, "A message's Body can only be redacted (set to empty)."
                    )
                message.body = ""
            if form.get("Status"):
                if form["Status"] != "canceled" or message.status != "scheduled":
                    raise SandboxError(400, 20001, "Only a scheduled message can be canceled.")
                message.status = "canceled"
            message.date_updated = utcnow()
            return to_json(message)

    def delete(self, sid: str) -> None:
        """Delete a message."""
        with self.store.session() as session:
            session.delete(self._get(session, sid))

    def list_messages(self, args: Mapping[str, str], base_path: str) -> dict[str, Any]:
        """Return one page of messages, newest first, in Twilio's paging envelope."""
        try:
            page_size = int(args.get("PageSize") or 50)
            page = int(args.get("Page") or 0)
        except ValueError:
            raise SandboxError(400, 20001, "PageSize and Page must be integers") from None
        if not 1 <= page_size <= 1000:
            raise SandboxError(400, 20001, "PageSize must be between 1 and 1000")
        query = select(SandboxMessage).where(
            SandboxMessage.account_sid == self.settings.account_sid
        )
        if args.get("To"):
            query = query.where(SandboxMessage.to_number == args["To"])
        if args.get("From"):
            query = query.where(SandboxMessage.from_number == args["From"])
        sent = SandboxMessage.date_sent
        if args.get("DateSent"):
            day = _parse_day(args["DateSent"])
            query = query.where(sent >= day, sent < day + timedelta(days=1))
        if args.get("DateSent<"):
            query = query.where(sent <= _parse_when(args["DateSent<"]))
        if args.get("DateSent>"):
            query = query.where(sent >= _parse_when(args["DateSent>"]))
        token = args.get("PageToken") or ""
        if token.startswith("PA") and token[2:].isdigit():
            query = query.where(SandboxMessage.id < int(token[2:]))
        query = query.order_by(SandboxMessage.id.desc()).limit(page_size + 1)
        with self.store.read() as session:
            rows = list(session.scalars(query))
        has_more = len(rows) > page_size
        rows = rows[:page_size]
        filters = {
            k: args[k] for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if args.get(k)
        }
        first_uri = _uri(base_path, {**filters, "PageSize": str(page_size), "Page": "0"})
        next_uri = None
        if has_more:
            next_uri = _uri(
                base_path,
                {
                    **filters,
                    "PageSize": str(page_size),
                    "Page": str(page + 1),
                    "PageToken": f"PA{rows[-1].id}",
                },
            )
        return {
            "messages": [to_json(m) for m in rows],
            "end": page * page_size + len(rows) - 1 if rows else 0,
            "first_page_uri": first_uri,
            "next_page_uri": next_uri,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": page * page_size,
            "uri": _uri(base_path, {**args}),
        }

    def _get(self, session: Session, sid: str) -> SandboxMessage:
        message = session.scalar(
            select(SandboxMessage).where(
                SandboxMessage.sid == sid, SandboxMessage.account_sid == self.settings.account_sid
            )
        )
        if message is None:
            raise SandboxError(
                404,
                20404,
                f"The requested resource {message_uri(self.settings.account_sid, sid)} "
                "was not found",
            )
        return message

    # Account, phone numbers, Messaging Service (read-only, for `twilio-chat doctor`) ------
    def account(self) -> dict[str, Any]:
        """Return the sandbox's account in Twilio's Account JSON."""
        sid = self.settings.account_sid
        uri = f"/{API_VERSION}/Accounts/{sid}.json"
        return {
            "auth_token": self.settings.auth_token,  # Twilio returns it to its own holder
            "date_created": rfc2822(SANDBOX_EPOCH),
            "date_updated": rfc2822(SANDBOX_EPOCH),
            "friendly_name": "Sandbox",
            "owner_account_sid": sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": {
                "messages": uri.replace(".json", "/Messages.json"),
                "incoming_phone_numbers": uri.replace(".json", "/IncomingPhoneNumbers.json"),
            },
            "type": "Full",
            "uri": uri,
        }

    def number_json(self) -> dict[str, Any] | None:
        """Return the sandbox's one phone number (our default From) as an IncomingPhoneNumber."""
        number = self.settings.default_from
        if not number:
            return None
        sid = "PN" + hashlib.sha256(number.encode()).hexdigest()[:32]
        account = self.settings.account_sid
        return {
            "account_sid": account,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "capabilities": {"voice": False, "sms": True, "mms": True, "fax": False},
            "date_created": rfc2822(SANDBOX_EPOCH),
            "date_updated": rfc2822(SANDBOX_EPOCH),
            "friendly_name": number,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": number,
            "sid": sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": f"{self.settings.base_url}/twilio/inbound",
            "status": "in-use",
            "status_callback": "",
            "status_callback_method": "POST",
            "trunk_sid": None,
            "type": "local",
            "uri": f"/{API_VERSION}/Accounts/{account}/IncomingPhoneNumbers/{sid}.json",
            "voice_application_sid": "",
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": "",
            "voice_method": "POST",
            "voice_url": "",
        }

    def list_numbers(self, args: Mapping[str, str], base_path: str) -> dict[str, Any]:
        """List the account's phone numbers (filter `PhoneNumber`: partial, `*` any digit)."""
        try:
            page_size = int(args.get("PageSize") or 50)
        except ValueError:
            raise SandboxError(400, 20001, "PageSize must be an integer") from None
        if not 1 <= page_size <= 1000:
            raise SandboxError(400, 20001, "PageSize must be between 1 and 1000")
        number = self.number_json()
        numbers = [number] if number else []
        wanted = args.get("PhoneNumber")
        if wanted:
            pattern = re.escape(wanted).replace(r"\*", r"\d")
            numbers = [n for n in numbers if re.search(pattern, n["phone_number"])]
        filters = {k: args[k] for k in ("PhoneNumber", "FriendlyName") if args.get(k)}
        return {
            "end": max(len(numbers) - 1, 0),
            "first_page_uri": _uri(base_path, {**filters, "PageSize": str(page_size), "Page": "0"}),
            "incoming_phone_numbers": numbers,
            "next_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": 0,
            "uri": _uri(base_path, {**args}),
        }

    def messaging_service(self, sid: str) -> dict[str, Any]:
        """Return the configured Messaging Service (TWILIO_MESSAGING_SERVICE_SID); 404 otherwise."""
        if sid != self.settings.twilio_messaging_service_sid:
            raise SandboxError(404, 20404, f"The requested resource /Services/{sid} was not found")
        url = f"https://messaging.twilio.com/v1/Services/{sid}"
        return {
            "account_sid": self.settings.account_sid,
            "area_code_geomatch": True,
            "date_created": SANDBOX_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "date_updated": SANDBOX_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fallback_method": "POST",
            "fallback_to_long_code": True,
            "fallback_url": None,
            "friendly_name": "Sandbox Messaging Service",
            "inbound_method": "POST",
            "inbound_request_url": f"{self.settings.base_url}/twilio/inbound",
            "links": {"phone_numbers": f"{url}/PhoneNumbers"},
            "mms_converter": True,
            "scan_message_content": "inherit",
            "sid": sid,
            "smart_encoding": True,
            "status_callback": None,
            "sticky_sender": True,
            "synchronous_validation": True,
            "url": url,
            "us_app_to_person_registered": False,
            "use_inbound_webhook_on_number": False,
            "usecase": "undeclared",
            "validity_period": 14400,
        }

    # Status callbacks ---------------------------------------------------------------
    def _start_callbacks(self, sid: str, url: str | None, to: str, initial: str) -> None:
        steps: Steps = []
        if initial == "accepted":
            steps.append(("queued", None))
        steps.append(("sent", None))
        failing = FAILING_SUFFIXES.get(to[-4:])
        steps.append(("undelivered", failing) if failing else ("delivered", None))
        self._next_callback(sid, url, steps)

    def _next_callback(self, sid: str, url: str | None, steps: Steps) -> None:
        """Fire the first of `steps` after SANDBOX_CALLBACK_DELAY, on a timer thread of its own.

        Each step starts the next only once it is done, so a message's callbacks arrive in
        order, and the create call that started them never waits. The threads are named
        ``sandbox-…`` (tests wait for them by that name).
        """
        if not steps:
            return
        delay = self.settings.sandbox_callback_delay
        timer = threading.Timer(delay, self._callback, (sid, url, steps))
        timer.name = f"sandbox-callback-{sid}-{steps[0][0]}"
        timer.daemon = True  # a pending callback never holds up the process's exit
        timer.start()

    def _callback(self, sid: str, url: str | None, steps: Steps) -> None:
        """Move a message to its next status and post that status callback (in order)."""
        status, error = steps[0]
        try:
            with self.store.session() as session:
                message = session.scalar(select(SandboxMessage).where(SandboxMessage.sid == sid))
                if message is None:
                    return  # deleted meanwhile: Twilio says no more about it
                now = utcnow()
                message.status = status
                message.date_updated = now
                if status == "sent":
                    message.date_sent = now
                if error:
                    message.error_code = error
                    message.error_message = ERROR_MESSAGES.get(error)
                form = {
                    "MessageSid": sid,
                    "SmsSid": sid,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "AccountSid": message.account_sid,
                    "From": message.from_number or "",
                    "To": message.to_number,
                    "ApiVersion": API_VERSION,
                }
                if message.messaging_service_sid:
                    form["MessagingServiceSid"] = message.messaging_service_sid
                if error:
                    form["ErrorCode"] = str(error)
            if url:
                self._post_signed(url, form, _callback_http())
        except Exception:
            log.exception("sandbox: status callbacks for %s stopped", sid)
            return
        self._next_callback(sid, url, steps[1:])

    def _post_signed(
        self, url: str, form: dict[str, str], http: requests.Session | None = None
    ) -> int:
        """Post a form signed with the account's auth token, as Twilio signs its webhooks."""
        headers = {"X-Twilio-Signature": self.gateway.sign(url, form)}
        if http is None:  # the phone simulator
            return requests.post(url, data=form, headers=headers, timeout=15).status_code
        answer = http.post(url, data=form, headers=headers, timeout=15, allow_redirects=False)
        return answer.status_code

    # Phone simulator ---------------------------------------------------------------
    def simulate_inbound(
        self, from_: str, body: str, media_urls: list[str] | None = None, to: str | None = None
    ) -> dict[str, Any]:
        """Text the app from a simulated handset: a signed inbound webhook exactly as Twilio's."""
        media_urls = media_urls or []
        to = to or self.settings.default_from or ""
        if not is_e164(from_):
            raise InvalidInput(
                N_("%(number)s is not a possible phone number in E.164 form like +15551234567."),
                field="from",
                number=repr(from_),
            )
        if not is_e164(to):
            raise InvalidInput(
                N_("%(number)s is not a possible phone number in E.164 form like +15551234567."),
                field="to",
                number=repr(to),
            )
        if not body and not media_urls:
            raise InvalidInput(N_("Write a message or add media."), field="body")
        if len(body) > 1600:
            raise InvalidInput(
                N_("The message is %(length)d characters; the limit is %(limit)d."),
                field="body",
                length=len(body),
                limit=1600,
            )
        for url in media_urls:
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(
                    N_("Each media URL must start with http:// or https:// (got %(url)s)."),
                    field="media_urls",
                    url=repr(url),
                )
        service = self.settings.twilio_messaging_service_sid
        sid = new_sid("MM" if media_urls else "SM")
        word = body.strip().upper()
        with self.store.session() as session:
            session.add(
                SandboxMessage(
                    sid=sid,
                    account_sid=self.settings.account_sid,
                    messaging_service_sid=service,
                    from_number=from_,
                    to_number=to,
                    body=body,
                    media_urls=media_urls,
                    status="received",
                    direction="inbound",
                    num_segments=max(count_segments(body).segments, 1),
                    date_sent=utcnow(),
                )
            )
            senders = [s for s in (to, service) if s]
            if word in OPT_OUT_KEYWORDS:
                for sender in senders:
                    exists = session.scalar(
                        select(SandboxOptOut.id).where(
                            SandboxOptOut.sender == sender, SandboxOptOut.number == from_
                        )
                    )
                    if exists is None:
                        session.add(SandboxOptOut(sender=sender, number=from_))
            elif word in OPT_IN_KEYWORDS:
                session.execute(
                    delete(SandboxOptOut).where(
                        SandboxOptOut.number == from_, SandboxOptOut.sender.in_(senders)
                    )
                )
        form = inbound_form(self.settings.account_sid, sid, from_, to, body, media_urls, service)
        url = f"{self.settings.base_url}/twilio/inbound"
        status = self._post_signed(url, form)
        return {"sid": sid, "from": from_, "to": to, "body": body, "webhook_status": status}


def inbound_form(
    account_sid: str,
    sid: str,
    from_: str,
    to: str,
    body: str,
    media_urls: list[str],
    service_sid: str | None = None,
) -> dict[str, str]:
    """Build the form Twilio posts to an inbound-message webhook."""
    form = {
        "ToCountry": _region(to),
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media_urls)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": _region(from_),
        "To": to,
        "ToZip": "",
        "NumSegments": str(max(count_segments(body).segments, 1)),
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if service_sid:
        form["MessagingServiceSid"] = service_sid
    for i, url in enumerate(media_urls):
        form[f"MediaUrl{i}"] = url
        form[f"MediaContentType{i}"] = mimetypes.guess_type(url)[0] or "image/jpeg"
    return form


def _region(number: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or ""
    except phonenumbers.NumberParseException:
        return ""


def _parse_day(value: str) -> datetime:
    try:
        d = date.fromisoformat(value[:10])
    except ValueError:
        raise SandboxError(400, 20001, f"Invalid DateSent {value!r}") from None
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _parse_when(value: str) -> datetime:
    try:
        if len(value) == 10:
            return _parse_day(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SandboxError(400, 20001, f"Invalid date {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _uri(base_path: str, params: Mapping[str, str]) -> str:
    query = urlencode(params)
    return f"{base_path}?{query}" if query else base_path
