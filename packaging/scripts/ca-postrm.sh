#!/bin/sh
# The CA's data (/etc/devpki, /var/lib/devpki-ca: keys, registry, audit log)
# and its user are kept even on purge: a CA is not re-created by reinstalling.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -f /etc/systemd/system/multi-user.target.wants/devpki-ca.service
	echo "devpki-ca: purged; the CA's keys and registry in /etc/devpki and /var/lib/devpki-ca are kept (remove them yourself)"
fi
exit 0
