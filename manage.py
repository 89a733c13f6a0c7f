"""The CLI under its old name: `python manage.py …` is `twilio-chat …`."""

from twilio_chat.cli import main

if __name__ == "__main__":
    main()
