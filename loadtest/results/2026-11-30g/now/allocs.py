# Allocations per event by calling function, from a callgrind profile (scripts/profile.sh MODE=callgrind):
# python3 allocs.py OUT/callgrind.out.measured EVENTS
import collections, re, sys
path, events = sys.argv[1], int(sys.argv[2])
names, by_caller = {}, collections.Counter()
fn = cfn = None
for line in open(path, errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        kind, i, name = m.groups()
        if name:
            names[i] = name.strip()
        if kind == "cfn":
            cfn = i
        else:
            fn = i
        continue
    if line.startswith("calls=") and cfn and re.match(r"mi_(malloc|realloc|zalloc)_aligned\b", names.get(cfn, "")):
        by_caller[names.get(fn, fn)] += int(line.split()[0][6:])
print(f"{sum(by_caller.values()) / events:.1f} allocations per event (Rust's, through mimalloc)")
for caller, n in by_caller.most_common(40):
    print(f"{n / events:7.2f}  {caller[:150]}")
