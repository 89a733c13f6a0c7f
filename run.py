"""Start the server: `python run.py [--host H] [--port P] [--no-worker]` is `twilio-chat run …`."""

import sys

from twilio_chat.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
