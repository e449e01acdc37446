#!/bin/sh
# devpki-ca postinst: the system user, /etc/devpki; never starts the CA by
# itself (it has no CA until an operator runs 'ca init').
set -e
if [ "$1" = configure ]; then
	if ! getent passwd devpki-ca >/dev/null; then
		adduser --system --group --home /var/lib/devpki-ca --no-create-home \
			--shell /usr/sbin/nologin --gecos "devpki certificate authority" devpki-ca >/dev/null
	fi
	install -d -m 0750 -o root -g devpki-ca /etc/devpki
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
		# An upgrade restarts a CA that was running; a first install starts nothing.
		if [ -n "$2" ]; then
			systemctl try-restart devpki-ca.service >/dev/null || true
		fi
	fi
	if [ -z "$2" ]; then
		echo "devpki-ca: create the CA (see /usr/share/doc/devpki-ca/README.md, 'Operate it'), then: systemctl enable --now devpki-ca"
	fi
fi
exit 0
