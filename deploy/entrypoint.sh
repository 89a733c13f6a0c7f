#!/bin/sh
# The Docker image's web server: apply migrations and create the first admin, then serve with
# gunicorn. Other commands replace it, e.g. `docker compose run --rm web twilio-chat doctor`.
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)

# SQLite: say plainly when the data folder (a bind mount in docker-compose.yml) is not ours.
if [ -z "${DATABASE_URL:-}" ]; then
    data_dir=$(dirname -- "${DB_PATH:-data/app.db}")
    if [ -d "$data_dir" ] && [ ! -w "$data_dir" ]; then
        echo "error: $data_dir is not writable by uid $(id -u); on the host:" \
            "sudo chown -R $(id -u):$(id -g) ./data" >&2
        exit 1
    fi
fi

twilio-chat prepare
exec gunicorn --config "$root/gunicorn.conf.py" twilio_chat.wsgi:app
