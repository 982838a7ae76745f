# From a system-wide scheduler trace taken while scripts/profile.sh ran (MODE=none, 2,000/s):
#   perf record -e sched:sched_switch -e sched:sched_process_exec -g -a -o sched.data -- sleep 60
#   perf script -i sched.data -F comm,tid,cpu,time,event,trace,ip,sym > sched2.txt
# The measured phase starts at the exec of the load tool's --on-measure-start hook (/usr/bin/sh).
import re,json,collections,sys
lines=open(sys.argv[3] if len(sys.argv)>3 else 'sched2.txt').read().splitlines()
rep=sys.argv[1]; hook_after=float(sys.argv[2]) if len(sys.argv)>2 else 0
rx=re.compile(r'^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+): (.*)$')
ev=[];hook=None
for l in lines:
    m=rx.match(l)
    if not m: continue
    comm,tid,cpu,t,e,tr=m.groups()
    ev.append((float(t),int(cpu),comm,int(tid),e,tr))
    if e=='sched_process_exec' and 'filename=/usr/bin/sh' in tr and hook is None and float(t)>hook_after:
        hook=float(t)
print('hook',hook)
runs=[];cur=None
for t,cpu,comm,tid,e,tr in ev:
    if cpu!=0 or e!='sched_switch': continue
    m=re.search(r'prev_comm=(.+?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.+?) next_pid=(\d+)',tr)
    pc,pp,ps,nc,npid=m.groups()
    if cur: runs.append((cur[0],t,cur[1],cur[2],ps))
    cur=(t,nc,int(npid))
m=json.load(open(rep))['results']['slowest_by_send_time']['max_ms']
for i,x in enumerate(m):
    if x<15: continue
    t0=hook+i/10-0.04; t1=hook+i/10+0.14
    print('--- bucket',i*100,'max %.0f'%x)
    agg=collections.Counter()
    for a,b,c,p,ps in runs:
        if b>=t0 and a<=t1:
            agg[c]+=min(b,t1)-max(a,t0)
            if b-a>0.002 and c!='swapper/0': print('   long run %.1f ms %s at %+.1f ms (left %s)'%((b-a)*1000,c,(a-hook-i/10)*1000,ps))
    print('   ', ', '.join('%s %.1f'%(k,v*1000) for k,v in agg.most_common(8)))
