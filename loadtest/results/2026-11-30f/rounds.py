# Every round of a bench.sh RESULTS folder's targeted entries: python3 rounds.py DIR
import json,glob,sys
d=sys.argv[1]
names=sorted(set(f.split('/')[-1].rsplit('-r',1)[0] for f in glob.glob(d+'/*-r*.json')))
for name in names:
    print(name)
    for f in sorted(glob.glob(f'{d}/{name}-r*.json')):
        r=json.load(open(f)); R=r['results']; L=R.get('latency',{}); s=R.get('slowest_by_send_time',{}).get('max_ms',[])
        if 'latency' not in R or 'sent' not in R: continue  # targeted entries only
        acked=R.get('sent',{}).get('acked',0) or 1
        print('   p50 %.2f p90 %.2f p99 %.2f p999 %.1f max %.1f win>10 %d cpu/ev %.0f rate %.0f'%(L.get('p50_ms',0),L.get('p90_ms',0),L.get('p99_ms',0),L.get('p999_ms',0),L.get('max_ms',0),sum(x>10 for x in s),R['cpu'].get('herald_cpu_secs',0)*1e6/acked, R.get('delivered_per_s',0)))
