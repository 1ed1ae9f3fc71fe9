# Word counts over generated text, on two threads: dicts, strings, lists, a lock.
import threading, collections
def work(seed, out):
    words = ["w%d" % ((seed * 7919 + i * 104729) % 5000) for i in range(3000)]
    counts = collections.Counter(words)
    out.append(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
results = []
threads = [threading.Thread(target=work, args=(s, results)) for s in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(len(results), sum(len(r) for r in results))
