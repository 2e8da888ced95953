# one iteration's workload: ext4 metadata churn on a loop device (buffer heads:
# GFP_NOFS|__GFP_MOVABLE, no __GFP_HIGHMEM), anonymous memory held, then 20 cma_alloc()
# calls of 1021 pages through debugfs while memory is full, then everything released.
set -e
dbg=/sys/kernel/debug/cma/reserved
mkdir -p /tmp/mnt
truncate -s 160M /tmp/fs.img
mkfs.ext4 -q -F /tmp/fs.img
mount -o loop /tmp/fs.img /tmp/mnt
python3 - <<'PY'
import mmap, os, time
for d in range(16):
    os.makedirs(f"/tmp/mnt/d{d}")
    for f in range(150):
        with open(f"/tmp/mnt/d{d}/f{f}", "wb") as fh:
            fh.write(b"y" * 3000)
os.sync()
m = mmap.mmap(-1, 1100 << 20)
for off in range(0, 1100 << 20, 4096):
    m[off] = 1
# walk the metadata again while memory is full (buffer heads re-read under pressure)
for d in range(16):
    os.listdir(f"/tmp/mnt/d{d}")
for i in range(20):
    with open("/sys/kernel/debug/cma/reserved/alloc", "w") as f:
        try:
            f.write("1021")
        except OSError:
            pass
    time.sleep(0.2)
m.close()
PY
used=$(cat $dbg/used)
echo $used > $dbg/free || true
umount /tmp/mnt
rm -f /tmp/fs.img
