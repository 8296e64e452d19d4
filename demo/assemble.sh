#!/usr/bin/env bash
# Copies the demo page and the @presence/client ES modules it imports into
# DESTDIR, ready to be served as presence.static_dir:
#   demo/assemble.sh DESTDIR
set -euo pipefail

dest=${1:?usage: demo/assemble.sh DESTDIR}
here=$(cd "$(dirname "$0")" && pwd)
client_src="$here/../clients/js/src"

mkdir -p "$dest/client"
cp "$here/index.html" "$here/app.js" "$here/style.css" "$dest/"
cp "$client_src"/*.js "$dest/client/"
# The server reads the files as the database's OS user.
chmod -R a+rX "$dest"
