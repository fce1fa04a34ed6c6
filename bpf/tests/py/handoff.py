"""Eight threads handing one lock around with bare acquire()/release() (bpf/tests/pystack.rs).

Prints "ready", waits for a line, starts its threads and prints "started", waits for a line
(the test registers the threads), runs ROUNDS iterations per thread, then prints one JSON line
{"addr_obj": id(lock), "tids": [...]} and waits for stdin to close."""
import json
import sys
import threading

rounds = int(sys.argv[1])
lock = threading.Lock()
begin = threading.Event()
tids = []


def work(n):
    x = 0
    for i in range(n):
        x += i
    return x


def release_site(lock):
    lock.release()


def worker():
    tids.append(threading.get_native_id())
    begin.wait()
    for _ in range(rounds):
        lock.acquire()
        work(20000)
        release_site(lock)
        work(500)


print("ready", flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads:
    t.start()
while len(tids) < 8:
    pass
print("started", flush=True)
sys.stdin.readline()
begin.set()
for t in threads:
    t.join()
print(json.dumps({"addr_obj": id(lock), "tids": tids}), flush=True)
sys.stdin.readline()
