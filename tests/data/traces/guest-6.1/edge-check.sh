#!/bin/sh
# Edge cost of the capture window of tests/data/traces: an empty window, read the same way.
set -u
out=$1
T=/sys/kernel/tracing
cd /tmp
echo 'r:h6bulk __alloc_pages_bulk nr=$retval' >> $T/kprobe_events
I=$T/instances/raw
mkdir $I
echo mono > $I/trace_clock
echo 1 > $I/events/kmem/mm_page_alloc/enable
echo 1 > $I/events/kprobes/h6bulk/enable
echo 0 > $I/tracing_on
for n in 1 2 3 4 5; do
    echo > $I/trace
    exec 3>/tmp/vmstat.before.$n 4>/tmp/vmstat.after.$n
    sleep 1
    while IFS= read -r l; do echo "$l"; done < /proc/vmstat >&3
    echo 1 > $I/tracing_on
    echo 0 > $I/tracing_on
    while IFS= read -r l; do echo "$l"; done < /proc/vmstat >&4
    exec 3>&- 4>&-
    cat $I/trace > $out/trace.$n
    b=$(grep '^pgalloc_dma32 ' /tmp/vmstat.before.$n | cut -d' ' -f2)
    a=$(grep '^pgalloc_dma32 ' /tmp/vmstat.after.$n | cut -d' ' -f2)
    echo "window $n: pgalloc_dma32 delta $((a - b)), mm_page_alloc events $(grep -c mm_page_alloc $out/trace.$n), bulk $(grep -c h6bulk $out/trace.$n)" >> $out/result
done
