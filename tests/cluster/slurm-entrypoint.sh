#!/bin/sh
# A Slurm container of the test: munged with the key the test made (mounted at
# /run/munge-key/munge.key), then `slurmctld` or `slurmd` (this container's host name is its
# node name) in the foreground.
set -eu
install -o munge -g munge -m 400 /run/munge-key/munge.key /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
runuser -u munge -- /usr/sbin/munged
case "$1" in
  slurmctld) exec /usr/sbin/slurmctld -D -i ;;
  slurmd) exec /usr/sbin/slurmd -D -N "$(hostname -s)" ;;
  *) echo "usage: slurm-entrypoint.sh slurmctld|slurmd" >&2; exit 2 ;;
esac
