"""Record inbound and outbound messages, status transitions, the opt-out ledger, and send().

- `shared`: the tables, keywords, status order, conversations' summaries, the opt-out ledger,
  and who may be answered at all, which the paths below share.
- `inbound`: a webhook's form read into `InboundFields` and stored once per MessageSid, with
  its reply job, in one transaction (`store_inbound_many`; `store_inbound` for one).
- `status`: delivery status callbacks, which move a status forward and never back.
- `outbound`: `send()`, which validates a request, writes the row, calls Twilio once and
  records what it answered.
- `sync`: catching up with Twilio's own list of messages after downtime.

Callers import from the package; the modules are how it is read.
"""

from twilio_chat.messaging.inbound import (
    InboundFields,
    InboundResult,
    inbound_fields,
    parse_media,
    record_inbound,
    store_inbound,
    store_inbound_many,
)
from twilio_chat.messaging.outbound import (
    HUMAN_SOURCES,
    Sender,
    SendRequest,
    mark_read,
    retry,
    send,
    validate_send,
)
from twilio_chat.messaging.shared import (
    MAX_BODY,
    MAX_MEDIA,
    MESSAGES,
    STATUS_RANK,
    Inbound,
    advance_status,
    count_on_conversation,
    get_or_create_contact,
    is_opted_out,
    keyword_of,
    moves_forward,
    opt_out_senders,
    reason_not_to_answer,
    set_opt_out,
)
from twilio_chat.messaging.status import callback_status, record_status
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
    "Inbound",
    "InboundFields",
    "InboundResult",
    "SendRequest",
    "Sender",
    "advance_status",
    "callback_status",
    "count_on_conversation",
    "get_or_create_contact",
    "inbound_fields",
    "is_opted_out",
    "keyword_of",
    "mark_read",
    "moves_forward",
    "opt_out_senders",
    "parse_media",
    "reason_not_to_answer",
    "record_inbound",
    "record_status",
    "retry",
    "send",
    "set_opt_out",
    "store_inbound",
    "store_inbound_many",
    "validate_send",
]
