# From a system-wide scheduler trace taken while scripts/profile.sh ran (MODE=none, 2,000/s):
#   perf record -e sched:sched_switch -e sched:sched_process_exec -g -a -o sched.data -- sleep 60
#   perf script -i sched.data -F comm,tid,cpu,time,event,trace,ip,sym > sched2.txt
# The measured phase starts at the exec of the load tool's --on-measure-start hook (/usr/bin/sh).
import re,sys,collections
hook=float(sys.argv[1]); at=float(sys.argv[2])/1000; span=float(sys.argv[3])/1000
blks=open('sched2.txt').read().split('\n\n')
t0=hook+at-0.02; t1=hook+at+span
prev={}
out=[]
for b in blks:
    ls=b.strip().split('\n')
    if not ls: continue
    m=re.match(r'^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+): (.*)$',ls[0])
    if not m: continue
    comm,tid,cpu,t,e,tr=m.groups(); t=float(t)
    if e!='sched_switch' or cpu!='000': continue
    mm=re.search(r'prev_comm=(.+?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.+?) next_pid=(\d+)',tr)
    if t0<=t<=t1:
        st=[l.split()[1] for l in ls[1:] if len(l.split())>1]
        why=[x for x in st if not x.startswith(('schedule','__schedule','io_schedule'))][:3]
        out.append((t,mm.group(1),mm.group(2),mm.group(3),mm.group(4),why))
last=None
for t,pc,pp,ps,nc,why in out:
    dur=(t-last)*1000 if last else 0
    last=t
    if dur>1.0 or ps=='D':
        print('%7.2f ran %5.2f ms %-16s/%s left %s %s -> %s'%((t-hook-at)*1000,dur,pc[:16],pp,ps,'<'.join(why) if ps not in('R','R+') else '',nc[:16]))
