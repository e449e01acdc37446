#!/bin/sh
# devpki-enroll postinst: the system user (in the group tss, which owns
# /dev/tpmrm0); never starts the agent by itself (it needs the CA's URL,
# fingerprint and a proof in /etc/devpki/enroll.env first).
set -e
if [ "$1" = configure ]; then
	getent group tss >/dev/null || addgroup --system tss >/dev/null
	if ! getent passwd devpki-enroll >/dev/null; then
		adduser --system --group --home /var/lib/devpki-enroll --no-create-home \
			--shell /usr/sbin/nologin --gecos "devpki device agent" devpki-enroll >/dev/null
	fi
	adduser devpki-enroll tss >/dev/null
	[ -d /etc/devpki ] || install -d -m 0755 /etc/devpki
	chown root:devpki-enroll /etc/devpki/enroll.env
	chmod 0640 /etc/devpki/enroll.env
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			systemctl try-restart devpki-enroll.service >/dev/null || true
		fi
	fi
	if [ -z "$2" ]; then
		echo "devpki-enroll: fill in /etc/devpki/enroll.env, then: systemctl enable --now devpki-enroll"
	fi
fi
exit 0
