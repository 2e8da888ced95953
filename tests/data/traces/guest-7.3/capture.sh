#!/bin/sh
# Runs inside a CMA guest (6.1, 6.12, 7.3): one workload window captured at the same time by a
# tracefs instance (trace text), trace-cmd (top-level buffer) and perf (perf events),
# all three on CLOCK_MONOTONIC.
set -u
out=$1
T=/sys/kernel/tracing
[ -d $T/events ] || T=/sys/kernel/debug/tracing
dbg=/sys/kernel/debug/cma/reserved
cd /tmp
mkdir -p $out/formats/events $out/proc $out/cma/reserved
for f in $T/events/kmem/*/format $T/events/cma/*/format $T/events/migrate/*/format; do
    rel=${f#$T/events/}; mkdir -p $out/formats/events/$(dirname $rel); cat $f > $out/formats/events/$rel
done
cat /proc/zoneinfo > $out/proc/zoneinfo
cat /proc/pagetypeinfo > $out/proc/pagetypeinfo
cat $dbg/base_pfn > $out/cma/reserved/base_pfn; cat $dbg/count > $out/cma/reserved/count
echo "$(date +%T) fill" >> $out/status
# fill memory (untraced) so that movable pages sit in CMA pageblocks
python3 -c '
import mmap, signal
m = mmap.mmap(-1, 1300 << 20)
chunk = b"\1" * (1 << 20)
for _ in range(1300):
    m.write(chunk)
open("/tmp/fill.ready", "w").close()
signal.pause()
' &
fillpid=$!
while [ ! -e /tmp/fill.ready ]; do sleep 0.5; done
echo "$(date +%T) filled" >> $out/status
# bulk-allocator calls (pgalloc_* counted without mm_page_alloc): a kretprobe, tracefs only
# the bulk allocator's name by presence: __alloc_pages_bulk (5.13..6.9),
# alloc_pages_bulk_noprof (6.10+)
bulk=$(awk '$3 == "alloc_pages_bulk_noprof" || $3 == "__alloc_pages_bulk" {print $3; exit}' /proc/kallsyms)
echo "bulk $bulk" >> $out/status
echo "r:h6bulk $bulk nr=\$retval" >> $T/kprobe_events
I=$T/instances/raw
mkdir $I
echo mono > $I/trace_clock
echo 16384 > $I/buffer_size_kb
echo 1 > $I/events/kmem/mm_page_alloc/enable
echo 1 > $I/events/cma/enable
echo 1 > $I/events/migrate/mm_migrate_pages/enable
echo 1 > $I/events/kprobes/h6bulk/enable
echo 0 > $I/tracing_on
echo > $I/trace
waitstop='while [ ! -e /tmp/stop ]; do sleep 0.2; done'
trace-cmd record -C mono -b 16384 -e kmem:mm_page_alloc -e cma -e migrate:mm_migrate_pages \
    -o /tmp/trace.dat sh -c "$waitstop" > $out/trace-cmd-record.log 2>&1 &
tcpid=$!
mkfifo /tmp/perfctl /tmp/perfack
perf record -a -B -N -k CLOCK_MONOTONIC -m 16M -D -1 --control fifo:/tmp/perfctl,/tmp/perfack \
    -e kmem:mm_page_alloc -e 'cma:*' -e migrate:mm_migrate_pages \
    -o /tmp/perf.data -- sh -c "$waitstop" > $out/perf-record.log 2>&1 &
perfpid=$!
# perf: enabled, and acknowledged; trace-cmd: its events on in the top-level buffer
exec 5>/tmp/perfctl
echo enable >&5
read ack < /tmp/perfack
echo "$(date +%T) perf $ack" >> $out/status
until [ "$(cat $T/events/kmem/mm_page_alloc/enable)" = 1 ] && [ "$(cat $T/tracing_on)" = 1 ]; do sleep 0.5; done
sleep 3
echo "$(date +%T) window" >> $out/status
# the window: /proc/vmstat read by shell builtins into files opened before it (no fork)
exec 3>/tmp/vmstat.before 4>/tmp/vmstat.after
while IFS= read -r l; do echo "$l"; done < /proc/vmstat >&3
echo 1 > $I/tracing_on
for i in 1 2 3 4 5 6 7; do echo 23 > $dbg/alloc; done
echo 70000 > $dbg/alloc 2>/dev/null
echo 4096 > $dbg/alloc
dd if=/dev/zero of=/tmp/small bs=64k count=64 2>/dev/null
cat /tmp/small > /dev/null
echo 23 > $dbg/free
echo 0 > $I/tracing_on
while IFS= read -r l; do echo "$l"; done < /proc/vmstat >&4
exec 3>&- 4>&-
cp /tmp/vmstat.before /tmp/vmstat.after $out/proc/
echo "$(date +%T) window end" >> $out/status
sleep 1
touch /tmp/stop
wait $tcpid; echo "trace-cmd rc $?" >> $out/status
wait $perfpid; echo "perf rc $?" >> $out/status
cat $I/trace > $out/tracefs.trace
cat $I/per_cpu/cpu0/stats > $out/tracefs.stats0; cat $I/per_cpu/cpu1/stats > $out/tracefs.stats1
kill $fillpid
echo "$(date +%T) report" >> $out/status
trace-cmd report -i /tmp/trace.dat > $out/trace-cmd.report 2> $out/trace-cmd-report.log
echo "report rc $?" >> $out/status
perf script -i /tmp/perf.data > $out/perf.script 2> $out/perf-script.log
echo "script rc $?" >> $out/status
ls -la /tmp/trace.dat /tmp/perf.data >> $out/status
echo "$(date +%T) done" >> $out/status
