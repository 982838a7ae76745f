# Per `perf trace` output file: the inbox writer's fdatasync latencies (the herald-sqlite thread with the most
# syncs on one descriptor) and the other Herald threads' syncs. Usage: python3 syncdist.py pt-*.txt
import re,sys
for fn in sys.argv[1:]:
    rows=[];start={}
    rx1=re.compile(r'^\s*([\d.]+) \(\s*([\d.]+) ms\): (\S+?)/(\d+) (\w+)\((?:fd: (\d+))?')
    rx2=re.compile(r'^\s*([\d.]+) \(\s+\): (\S+?)/(\d+) (\w+)\((?:fd: (\d+))?')
    rx3=re.compile(r'^\s*([\d.]+) \(\s*([\d.]+) ms\): (\S+?)/(\d+)\s+\.\.\. \[continued\]: (\w+)\(')
    for line in open(fn):
        m=rx3.match(line)
        if m:
            t,d,c,tid,sc=m.groups(); rows.append((float(t),float(d),c,tid,sc,start.pop(tid,-1))); continue
        m=rx1.match(line)
        if m:
            t,d,c,tid,sc,fd=m.groups(); rows.append((float(t),float(d),c,tid,sc,int(fd or -1))); continue
        m=rx2.match(line)
        if m:
            t,c,tid,sc,fd=m.groups(); start[tid]=int(fd or -1)
    # writer = herald-sqlite thread with most fdatasync on one fd
    import collections
    cnt=collections.Counter((r[3],r[5]) for r in rows if r[2].startswith('herald-sqlite') and r[4]=='fdatasync')
    (wt,wfd),n=cnt.most_common(1)[0]
    ds=sorted(r[1] for r in rows if r[3]==wt and r[5]==wfd and r[4]=='fdatasync')
    n=len(ds)
    others=collections.Counter((r[2],r[4]) for r in rows if r[3]!=wt and r[4] in('fdatasync','fsync') and 'herald' in r[2])
    print('%s: writer syncs %d p50 %.3f p99 %.3f p999 %.3f max %.2f; ms in syncs>5ms %.0f; other herald syncs %s'%(fn,n,ds[n//2],ds[int(n*.99)],ds[int(n*.999)],ds[-1],sum(d for d in ds if d>5),dict(others)))
