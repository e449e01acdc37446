#!/bin/sh
# The device's identity (/var/lib/devpki-enroll) and its user are kept even
# on purge: a reinstall must not force a re-enrollment.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -f /etc/systemd/system/multi-user.target.wants/devpki-enroll.service
fi
exit 0
