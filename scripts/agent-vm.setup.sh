#!/bin/bash
# corral's in-VM bootstrap: non-interactive apt and the few packages provisioning needs.
#
# Lima runs it as root on every boot (the `system` provision step of the rendered
# templates/lima/agent.yaml.j2). Run it again by hand, as the login user, with:
#   limactl shell NAME bash -l < scripts/agent-vm.setup.sh
# A second run changes nothing. Everything else is the pyinfra roles' job (deploy/roles):
# they need only sh and sudo in the guest; python3 is already in every cloud image Lima
# boots (cloud-init is written in it) and is not installed here.
#
# Lima reads provisioning scripts as Go templates: keep double braces out of this file.
set -eux -o pipefail

# Packages the first `vm.provision` needs before its own roles run: sudo for pyinfra's
# privileged operations, ca-certificates to reach HTTPS package sources.
PACKAGES=(ca-certificates sudo)
# How long to wait for cloud-init or unattended-upgrades to release apt's locks.
LOCK_WAIT_SECONDS=600
# Written last; the template's readiness probe waits for it.
DONE_STAMP=/run/corral/agent-vm.setup.done

# Root for the real work: Lima runs this as root; by hand it runs as the login user.
# Every command's stdin is /dev/null: by hand, bash reads this script from stdin.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo -n)
fi
as_root() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a "$@" </dev/null
}
# Write text (argument 2) to a root-owned file (argument 1).
write_as_root() {
  "${SUDO[@]}" tee "$1" >/dev/null <<<"$2"
}

# Never ask a question: no debconf dialogs, and needrestart (Ubuntu) restarts services
# itself instead of prompting. The file is rewritten only when its content differs.
NEEDRESTART_CONF=/etc/needrestart/conf.d/50-corral.conf
NEEDRESTART_WANTED="# Written by corral's agent-vm.setup.sh: never prompt, restart services.
\$nrconf{restart} = 'a';"
if [ -d /etc/needrestart/conf.d ] \
  && [ "$(cat "$NEEDRESTART_CONF" 2>/dev/null || true)" != "$NEEDRESTART_WANTED" ]; then
  write_as_root "$NEEDRESTART_CONF" "$NEEDRESTART_WANTED"
fi

# Install only what is missing: a second run touches neither apt's lists nor dpkg.
missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  # At first boot cloud-init or unattended-upgrades may hold apt's and dpkg's locks for
  # minutes: try again every 5 seconds, for at most LOCK_WAIT_SECONDS in all.
  deadline=$((SECONDS + LOCK_WAIT_SECONDS))
  until as_root apt-get -o DPkg::Lock::Timeout=60 update; do
    [ "$SECONDS" -lt "$deadline" ] || exit 1
    sleep 5
  done
  until as_root apt-get -o DPkg::Lock::Timeout=60 install -y --no-install-recommends \
    "${missing[@]}"; do
    [ "$SECONDS" -lt "$deadline" ] || exit 1
    sleep 5
  done
fi

# Tell the readiness probe that this boot's bootstrap is done (/run is emptied at boot).
as_root mkdir -p "$(dirname "$DONE_STAMP")"
as_root touch "$DONE_STAMP"
