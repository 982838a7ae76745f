#!/bin/sh
# every 0.5 s: time, Dirty kB, Writeback kB, pgpgout (kB written since boot)
while :; do
  printf '%s %s %s %s\n' "$(date +%H:%M:%S.%N | cut -c1-12)" \
    "$(awk '/^Dirty:/{print $2}' /proc/meminfo)" "$(awk '/^Writeback:/{print $2}' /proc/meminfo)" \
    "$(awk '/^pgpgout/{print $2}' /proc/vmstat)"
  sleep 0.5
done
