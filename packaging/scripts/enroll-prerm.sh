#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop devpki-enroll.service >/dev/null 2>&1 || true
fi
exit 0
