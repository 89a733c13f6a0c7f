"""Record inbound and outbound messages, status transitions, the opt-out ledger, and send().

- `shared`: the tables, keywords, status order, conversations' summaries and opt-out ledger
  that the three paths below share.
- `inbound`: a webhook's form read into `InboundFields` and stored once per MessageSid, with
  its reply job (the hot path: Core statements on the driver's cursor, a batch at a time).
- `status`: delivery status callbacks, which move a status forward and never back.
- `outbound`: `send()`, which validates a request, writes the row, calls Twilio once and
  records what it answered.

Callers import from the package; the modules are how it is read.
"""

from twilio_chat.messaging.inbound import (
    InboundFields,
    InboundResult,
    changes_opt_outs,
    inbound_fields,
    parse_media,
    record_inbound,
    store_inbound,
    store_inbound_batch,
    store_plain_batch,
)
from twilio_chat.messaging.outbound import (
    HUMAN_SOURCES,
    Sender,
    SendRequest,
    mark_read,
    send,
    validate_send,
)
from twilio_chat.messaging.shared import (
    MAX_BODY,
    MAX_MEDIA,
    MESSAGES,
    STATUS_RANK,
    advance_status,
    get_or_create_contact,
    is_opted_out,
    keyword_of,
    moves_forward,
    set_opt_out,
    touch_contact,
)
from twilio_chat.messaging.status import record_status
from twilio_chat.twilio.keywords import HELP_KEYWORDS, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS

__all__ = [
    "HELP_KEYWORDS",
    "HUMAN_SOURCES",
    "MAX_BODY",
    "MAX_MEDIA",
    "MESSAGES",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "STATUS_RANK",
    "InboundFields",
    "InboundResult",
    "SendRequest",
    "Sender",
    "advance_status",
    "changes_opt_outs",
    "get_or_create_contact",
    "inbound_fields",
    "is_opted_out",
    "keyword_of",
    "mark_read",
    "moves_forward",
    "parse_media",
    "record_inbound",
    "record_status",
    "send",
    "set_opt_out",
    "store_inbound",
    "store_inbound_batch",
    "store_plain_batch",
    "touch_contact",
    "validate_send",
]
