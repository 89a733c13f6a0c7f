"""The WSGI app for servers such as gunicorn: `gunicorn twilio_chat.wsgi:app`."""

from twilio_chat import create_app

app = create_app()
