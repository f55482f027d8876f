#!/usr/bin/env bash
# Starts a throwaway sshd on 127.0.0.1 for the ssh benchmark; installs openssh-server if missing.
#
#   bench/setup_sshd.sh DIR [PORT [MAX_STARTUPS]]
#
# Everything lives in DIR: host key, client key, authorized_keys, sshd_config, pid file and the
# VERBOSE log the benchmark counts sessions in. Session limits are sshd's defaults
# (MaxStartups 10:30:100, MaxSessions 10): the benchmark is about what they do. With
# MAX_STARTUPS (`1000`), that many connections may be starting at once, none dropped early: the
# direct case at its full cost. (MaxSessions limits sessions within one connection; each ssh
# here has its own connection, so it stays at its default.)
# On success prints `KEY=VALUE` lines (PID, PORT, KEY, LOG, USER); stop it with `kill PID`.
set -euo pipefail

dir=${1:?usage: setup_sshd.sh DIR [PORT]}
port=${2:-22022}
max_startups=${3:-}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

sshd=$(command -v sshd || true)
[ -n "$sshd" ] || [ ! -x /usr/sbin/sshd ] || sshd=/usr/sbin/sshd
if [ -z "$sshd" ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "sshd is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq openssh-server openssh-client >&2
  sshd=/usr/sbin/sshd
fi
command -v ssh >/dev/null || { echo "ssh (the client) is not installed" >&2; exit 2; }

# sshd's privilege separation needs this directory; the package's init script normally makes it.
mkdir -p /run/sshd && chmod 0755 /run/sshd

[ -f "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
[ -f "$dir/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$dir/client_ed25519"
cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
chmod 0600 "$dir/authorized_keys" "$dir/host_ed25519" "$dir/client_ed25519"

user=$(id -un)
cat > "$dir/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $user
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
LogLevel VERBOSE
# Debian's bash reads ~/.bashrc for ssh commands unless SHLVL says it is nested; a heavy
# .bashrc (pyenv init, which rehashes under a lock) would dominate the cost of a session and
# make the figures depend on this machine's root account rather than on ssh.
SetEnv SHLVL=1
CONFIG
if [ -n "$max_startups" ]; then
  echo "MaxStartups $max_startups" >> "$dir/sshd_config"
  # OpenSSH 9.8+ also penalises a source whose connections fail: not what is measured here.
  if "$sshd" -T -f "$dir/sshd_config" 2>/dev/null | grep -qi '^persourcepenalties'; then
    echo "PerSourcePenalties no" >> "$dir/sshd_config"
  fi
fi

rm -f "$dir/sshd.pid"
"$sshd" -t -f "$dir/sshd_config"
"$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in $(seq 1 100); do
  [ -s "$dir/sshd.pid" ] && break
  sleep 0.05
done
[ -s "$dir/sshd.pid" ] || { echo "sshd did not start; see $dir/sshd.log" >&2; exit 1; }

echo "PID=$(cat "$dir/sshd.pid")"
echo "PORT=$port"
echo "KEY=$dir/client_ed25519"
echo "LOG=$dir/sshd.log"
echo "USER=$user"
