#!/usr/bin/env python3
# capi-pair.py MANAGER_CMD... -- WORKER_CMD...: runs a manager and a worker over a fresh
# memfd and two eventfds (no VM, no device), each given `--fd SHM:LEN:WAKE:RING` as its last
# arguments; exits 0 if both do. For the C samples (and any program taking --fd). The memfd
# is 1 MiB, or CAPI_PAIR_LEN bytes.
import os
import subprocess
import sys

LEN = int(os.environ.get("CAPI_PAIR_LEN", 1 << 20))
args = sys.argv[1:]
if "--" not in args:
    sys.exit("usage: capi-pair.py MANAGER_CMD... -- WORKER_CMD...")
cut = args.index("--")
manager, worker = args[:cut], args[cut + 1:]
shm = os.memfd_create("sivshm-pair", 0)
os.ftruncate(shm, LEN)
to_manager, to_worker = os.eventfd(0), os.eventfd(0)
fds = (shm, to_manager, to_worker)
w = subprocess.Popen(worker + ["--fd", f"{shm}:{LEN}:{to_worker}:{to_manager}"], pass_fds=fds)
m = subprocess.Popen(manager + ["--fd", f"{shm}:{LEN}:{to_manager}:{to_worker}"], pass_fds=fds)
rm, rw = m.wait(timeout=300), w.wait(timeout=300)
print(f"capi-pair: manager exited {rm}, worker {rw}")
sys.exit(0 if rm == 0 and rw == 0 else 1)
