"""The "reply" task: answer one inbound text, as decided by the policy, through send()."""

from __future__ import annotations

import logging

from twilio_chat.db.models import Message
from twilio_chat.jobs.queue import ClaimedJob
from twilio_chat.jobs.tasks import Context, PermanentJobError, Tasks
from twilio_chat.messaging import SendRequest, send
from twilio_chat.replies import ai, policy

log = logging.getLogger(__name__)
TASKS = Tasks()


@TASKS.job("reply")
def reply(ctx: Context, job: ClaimedJob) -> None:
    """Answer the inbound message `job.payload["message_id"]`, once, if someone must."""
    message_id = job.payload.get("message_id")
    if not isinstance(message_id, int):
        raise PermanentJobError("reply job without a message id")
    with ctx.db.read() as session:
        message = session.get(Message, message_id)
        if message is None or message.sid is None:
            return  # deleted since: nothing to answer
        decision = policy.decide(session, ctx.settings, message)
        turns = []
        if decision.ai is not None:
            turns = ai.build_prompt(
                decision.ai.system_prompt,
                ai.history(session, message, decision.ai.history_limit),
            )
        to, sid = message.contact_number, message.sid
    if decision.mode == "none":
        log.info("inbound text %s left unanswered: %s", sid, decision.reason)
        return
    text = decision.text
    if decision.ai is not None:
        try:
            answer = ai.complete(decision.ai, turns, ctx.settings.ai_timeout_seconds)
            text = ai.trim_to_segments(answer, decision.ai.max_segments)
        except ai.AIError as exc:
            if not decision.ai.fallback_text:
                raise PermanentJobError(f"AI reply failed: {exc.message}") from None
            log.warning("AI reply to %s failed (%s); sending the fallback", sid, exc.message)
            text = decision.ai.fallback_text
    if not text:
        return
    # The AI call may have taken long: the job must still be ours, with a lease long enough
    # for the Twilio call, so a worker that stalled never sends beside its successor.
    if not ctx.still_ours(job):
        log.warning("job %s: lease lost before sending; another worker has it", job.id)
        return
    send(
        ctx.db,
        ctx.gateway,
        ctx.settings,
        SendRequest(
            to=to,
            body=text,
            source=decision.mode,
            reply_to_sid=sid,
            final_try=job.attempt >= job.max_attempts,
        ),
    )
