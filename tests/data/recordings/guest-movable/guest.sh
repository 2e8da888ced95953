out=$1
for i in 1 2 3 4; do
  sync; echo 3 > /proc/sys/vm/drop_caches
  cmaprof record --probes page_alloc,cma,migrate -i 2 -o "$out/iter-$i" -- sh "$out/iter.sh" 2>"$out/record-$i.err"
  echo "$i $?" >>"$out/status"
  cat /sys/kernel/debug/cma/reserved/used >>"$out/used-after"
done
