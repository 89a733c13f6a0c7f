"""`python -m twilio_chat …` is `twilio-chat …` (for an install without its console script)."""

from twilio_chat.cli import main

if __name__ == "__main__":
    main()
