"""Start the server (as before): `python run.py` is `twilio-chat run`."""

from twilio_chat.cli import main

if __name__ == "__main__":
    main(["run"])
