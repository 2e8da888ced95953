out=$1
sync; echo 3 > /proc/sys/vm/drop_caches
cmaprof record --probes page_alloc,cma,migrate -i 2 -o "$out/iter-2" -- sh "$out/iter.sh" 2>"$out/record-2.err"
echo "2 $?" >>"$out/status"
